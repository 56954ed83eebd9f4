from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from compliance.common import validation
from compliance.erasure.models import ErasureRequest, Ground, RefusalCode


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not know: a typo must not be silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


def _django(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except DjangoValidationError as exc:
        raise serializers.ValidationError(exc.messages) from exc


class ErasureRequestCreateSerializer(StrictSerializer):
    full_name = serializers.CharField(max_length=validation.MAX_NAME)
    email = serializers.EmailField(max_length=validation.MAX_EMAIL)
    phone = serializers.CharField(max_length=validation.MAX_PHONE, required=False, allow_blank=True, default="")
    other_identifiers = serializers.ListField(
        child=serializers.CharField(max_length=validation.MAX_IDENTIFIER_LEN), required=False, default=list,
        max_length=validation.MAX_IDENTIFIERS,
    )
    details = serializers.CharField(max_length=validation.MAX_DETAILS, required=False, allow_blank=True, default="")
    ground = serializers.ChoiceField(choices=Ground.choices)

    def validate_full_name(self, value: str) -> str:
        return str(_django(validation.clean_text, value, field="full_name", max_length=validation.MAX_NAME, required=True))

    def validate_phone(self, value: str) -> str:
        return str(_django(validation.clean_phone, value))

    def validate_other_identifiers(self, value: list[str]) -> list[str]:
        return list(_django(validation.clean_identifiers, value))

    def validate_details(self, value: str) -> str:
        return str(
            _django(validation.clean_text, value, field="details", max_length=validation.MAX_DETAILS, required=False, multiline=True)
        )


class ErasureRequestSerializer(serializers.ModelSerializer):
    effective_due = serializers.DateField(read_only=True)
    assignee = serializers.SerializerMethodField()

    class Meta:
        model = ErasureRequest
        fields = [
            "id", "reference", "status", "channel", "ground", "subject_ref", "received_at", "due_at", "extended_due_at",
            "effective_due", "decision", "legal_code", "decided_at", "completed_at", "pri_score", "pri_tier", "assignee",
        ]
        read_only_fields = fields

    def get_assignee(self, obj: ErasureRequest) -> str | None:
        return obj.assignee.get_username() if obj.assignee else None


class ApproveSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class RefuseSerializer(StrictSerializer):
    legal_code = serializers.ChoiceField(choices=RefusalCode.choices)
    reason = serializers.CharField(max_length=4000)


class ExtendSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=4000)


class SubmitResponseSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    reference = serializers.CharField()
    status = serializers.CharField()
    created = serializers.BooleanField()
