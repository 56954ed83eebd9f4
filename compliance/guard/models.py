"""Suppression rules of the inference guard: keyed hashes only, never a plaintext identifier."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class SuppressionRule(models.Model):
    class Kind(models.TextChoices):
        NAME = "name", "Name form"
        NAME_LC = "name_lc", "Name form, any case (distinctive name)"
        EMAIL = "email", "E-mail"
        PHONE = "phone", "Phone number"
        IDENTIFIER = "identifier", "Other identifier"

    request = models.ForeignKey("erasure.ErasureRequest", on_delete=models.PROTECT, related_name="suppression_rules")
    subject_ref = models.CharField(max_length=32, db_index=True)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    digest = models.CharField(max_length=64, help_text="HMAC-SHA256 of the normalised identifier")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["subject_ref", "kind", "digest"], name="guard_rule_unique")]
        indexes = [models.Index(fields=["active", "id"], name="guard_active_id")]

    def __str__(self) -> str:
        return f"{self.kind} rule for {self.subject_ref[:8]}"


class GuardRulesVersion(models.Model):
    """Single row bumped whenever rules change, so every process refreshes its cache cheaply."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    version = models.PositiveBigIntegerField(default=0)
    changed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"guard rules version {self.version}"
