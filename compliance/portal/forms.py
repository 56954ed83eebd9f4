from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from compliance.erasure.models import RefusalCode, Status


class QueueFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "Any status"), *Status.choices], required=False)
    overdue = forms.BooleanField(required=False)
    due_soon = forms.BooleanField(required=False, label="Due in 7 days")
    assignee = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_active=True), required=False, empty_label="Anyone")
    reference = forms.CharField(required=False, max_length=20)


def _confirm(label: str) -> forms.BooleanField:
    """A required tick box: the decision cannot be undone, so the officer confirms it on the form
    itself (works without JavaScript; the server refuses the action without it)."""
    return forms.BooleanField(required=True, label=label, error_messages={"required": "Tick the confirmation box: this decision cannot be undone."})


class ApproveForm(forms.Form):
    reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    confirm = _confirm("I confirm the approval: the guard starts suppressing and unlearning is dispatched.")


class RefuseForm(forms.Form):
    legal_code = forms.ChoiceField(choices=[("", "Choose the legal basis"), *RefusalCode.choices])
    reason = forms.CharField(max_length=4000, widget=forms.Textarea(attrs={"rows": 3}), help_text="Sent to the data subject.")
    confirm = _confirm("I confirm the refusal: the subject is notified.")


class RetryForm(forms.Form):
    method = forms.ChoiceField(choices=[])

    def __init__(self, *args: object, methods: list[str], initial_method: str = "", **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        field = self.fields["method"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(m, m) for m in methods]
        field.initial = initial_method


class GuardOnlyForm(forms.Form):
    justification = forms.CharField(
        max_length=4000, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why the weights cannot be certified; sent to the data subject.",
    )
    confirm = _confirm("I confirm: close without a certificate; the guard keeps suppressing the data.")


class ExtendForm(forms.Form):
    reason = forms.CharField(max_length=4000, widget=forms.Textarea(attrs={"rows": 3}), help_text="Sent to the data subject.")


class AssignForm(forms.Form):
    assignee = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_active=True), required=False, empty_label="Nobody")
