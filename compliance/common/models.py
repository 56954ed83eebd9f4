"""Per-request data keys (see compliance.common.crypto)."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from compliance.common import crypto


class DataKey(models.Model):
    """A wrapped AES-256 data key. Destroying it shreds every ciphertext sealed under it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wrapped = models.BinaryField(editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    destroyed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "data key"

    def __str__(self) -> str:
        return f"data key {self.id}{' (destroyed)' if self.destroyed_at else ''}"

    @classmethod
    def create(cls) -> DataKey:
        key_id = uuid.uuid4()
        return cls.objects.create(id=key_id, wrapped=crypto.new_wrapped_data_key(settings.FIELD_ENCRYPTION_KEY, str(key_id)))

    def _key(self) -> bytes:
        return crypto.unwrap_data_key(settings.FIELD_ENCRYPTION_KEY, str(self.id), bytes(self.wrapped))

    def seal_json(self, value: Any, *, aad: str) -> bytes:
        return crypto.seal_json(self._key(), value, aad)

    def open_json(self, blob: bytes, *, aad: str) -> Any:
        return crypto.open_json(self._key(), bytes(blob), aad)

    def destroy(self) -> None:
        """Crypto-shred: overwrite the wrapped key. Irreversible by design."""
        self.wrapped = b""
        self.destroyed_at = timezone.now()
        self.save(update_fields=["wrapped", "destroyed_at"])
