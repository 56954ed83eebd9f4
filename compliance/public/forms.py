from __future__ import annotations

from typing import Any

from django import forms

from compliance.common import validation
from compliance.erasure.models import Ground


class ErasureRequestForm(forms.Form):
    full_name = forms.CharField(label="Full name", max_length=validation.MAX_NAME)
    email = forms.EmailField(label="E-mail address", max_length=validation.MAX_EMAIL)
    phone = forms.CharField(label="Phone number (optional)", required=False, max_length=validation.MAX_PHONE)
    other_identifiers = forms.CharField(
        label="Other identifiers (optional, one per line)",
        required=False,
        max_length=validation.MAX_IDENTIFIERS * (validation.MAX_IDENTIFIER_LEN + 2),
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="For example a username, a customer number or a previous address.",
    )
    details = forms.CharField(
        label="What data, and where did you see it? (optional)",
        required=False,
        max_length=validation.MAX_DETAILS,
        widget=forms.Textarea(attrs={"rows": 4}),
    )
    ground = forms.ChoiceField(label="Why should the data be erased?", choices=Ground.choices)
    confirm = forms.BooleanField(
        label="I am the person named above, or I am authorised to act for them.", required=True
    )

    def clean_full_name(self) -> str:
        return validation.clean_text(self.cleaned_data["full_name"], field="Full name", max_length=validation.MAX_NAME, required=True)

    def clean_phone(self) -> str:
        return validation.clean_phone(self.cleaned_data.get("phone", ""))

    def clean_other_identifiers(self) -> list[str]:
        raw = self.cleaned_data.get("other_identifiers", "")
        return validation.clean_identifiers(raw.splitlines())

    def clean_details(self) -> str:
        return validation.clean_text(
            self.cleaned_data.get("details", ""), field="Details", max_length=validation.MAX_DETAILS, required=False, multiline=True
        )

    def subject_data(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "full_name": data["full_name"],
            "email": data["email"],
            "phone": data["phone"],
            "other_identifiers": data["other_identifiers"],
            "details": data["details"],
        }
