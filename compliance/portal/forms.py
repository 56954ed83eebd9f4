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


class ApproveForm(forms.Form):
    reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


class RefuseForm(forms.Form):
    legal_code = forms.ChoiceField(choices=[("", "Choose the legal basis"), *RefusalCode.choices])
    reason = forms.CharField(max_length=4000, widget=forms.Textarea(attrs={"rows": 3}), help_text="Sent to the data subject.")


class ExtendForm(forms.Form):
    reason = forms.CharField(max_length=4000, widget=forms.Textarea(attrs={"rows": 3}), help_text="Sent to the data subject.")


class AssignForm(forms.Form):
    assignee = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_active=True), required=False, empty_label="Nobody")
