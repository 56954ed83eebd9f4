"""Input rules shared by the public form and the API serializer, so both refuse the same things."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

MAX_NAME = 200
MAX_EMAIL = 254
MAX_PHONE = 32
MAX_IDENTIFIERS = 10
MAX_IDENTIFIER_LEN = 100
MAX_DETAILS = 2000

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_PHONE = re.compile(r"^\+?[0-9()\s.\-]{7,32}$")


def clean_text(value: str, *, field: str, max_length: int, required: bool, multiline: bool = False) -> str:
    value = (value or "").strip()
    if required and not value:
        raise ValidationError(f"{field} is required.", code="required")
    if len(value) > max_length:
        raise ValidationError(f"{field} must be at most {max_length} characters.", code="max_length")
    if _CONTROL.search(value) or (not multiline and ("\n" in value or "\r" in value)):
        raise ValidationError(f"{field} contains characters that are not allowed.", code="invalid")
    return value


def clean_phone(value: str) -> str:
    value = clean_text(value, field="Phone", max_length=MAX_PHONE, required=False)
    if value and (not _PHONE.match(value) or sum(ch.isdigit() for ch in value) < 7):
        raise ValidationError("Phone must be a phone number (digits, spaces, +, -, . and parentheses).", code="invalid")
    return value


def clean_identifiers(values: list[str]) -> list[str]:
    cleaned = [clean_text(v, field="Identifier", max_length=MAX_IDENTIFIER_LEN, required=False) for v in values]
    cleaned = [v for v in cleaned if v]
    if len(cleaned) > MAX_IDENTIFIERS:
        raise ValidationError(f"At most {MAX_IDENTIFIERS} other identifiers.", code="max_items")
    return cleaned
