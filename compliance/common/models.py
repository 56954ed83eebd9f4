"""Per-request data keys (see compliance.common.crypto)."""

from __future__ import annotations

import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from compliance.common import crypto, keystore


def key_store() -> keystore.KeyStore:
    """The configured key store (KEYSTORE_BACKEND: local, or pkcs11 for an HSM)."""
    if settings.KEYSTORE_BACKEND == "pkcs11":
        return _pkcs11_store(settings.KEYSTORE_PKCS11_LIBRARY, settings.KEYSTORE_PKCS11_TOKEN, settings.KEYSTORE_PKCS11_PIN)
    return _local_store(str(settings.KEYSTORE_PATH), settings.FIELD_ENCRYPTION_KEY, tuple(settings.FIELD_ENCRYPTION_KEYS_PREVIOUS))


@lru_cache(maxsize=8)
def _local_store(path: str, kek: str, previous: tuple[str, ...]) -> keystore.LocalKeyStore:
    return keystore.LocalKeyStore(Path(path), kek, previous)


@lru_cache(maxsize=4)
def _pkcs11_store(library: str, token: str, pin: str) -> keystore.Pkcs11KeyStore:
    return keystore.Pkcs11KeyStore(library, token, pin)


def _unwrap_legacy(key_id: str, wrapped: bytes) -> bytes:
    """A key wrapped in the database by an older version: by the current key-encryption key, or during a
    rotation by a previous one."""
    last: Exception | None = None
    for kek in (settings.FIELD_ENCRYPTION_KEY, *settings.FIELD_ENCRYPTION_KEYS_PREVIOUS):
        try:
            return crypto.unwrap_data_key(kek, key_id, wrapped)
        except crypto.DataKeyDestroyed:
            raise
        except Exception as exc:  # noqa: BLE001 - the wrong key-encryption key: try the next one
            last = exc
    raise keystore.KeyMissing(f"data key {key_id} is wrapped by a key-encryption key that is not configured") from last


class DataKey(models.Model):
    """A request's AES-256 data key: its id here, the key itself in the key store (outside this
    database, so database backups hold no key). Destroying it shreds every ciphertext sealed under it.

    Rows created before the key store have the key wrapped in `wrapped` (store "db"); `manage.py
    keystore_migrate` moves them into the store."""

    class Store(models.TextChoices):
        DATABASE = "db", "wrapped in the application database (before the key store)"
        KEYSTORE = "keystore", "in the key store"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wrapped = models.BinaryField(editable=False, blank=True, default=b"")
    store = models.CharField(max_length=16, choices=Store.choices, default=Store.DATABASE, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    destroyed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "data key"

    def __str__(self) -> str:
        return f"data key {self.id}{' (destroyed)' if self.destroyed_at else ''}"

    @classmethod
    def create(cls) -> DataKey:
        key_id = uuid.uuid4()
        key_store().create(str(key_id))  # first: a row never points at a key that was not stored
        return cls.objects.create(id=key_id, wrapped=b"", store=cls.Store.KEYSTORE)

    def _key(self) -> bytes:
        if self.destroyed_at is not None:
            raise crypto.DataKeyDestroyed(f"data key {self.id} has been destroyed")
        if self.store == self.Store.KEYSTORE:
            return key_store().key(str(self.id))
        return _unwrap_legacy(str(self.id), bytes(self.wrapped))

    def seal_json(self, value: Any, *, aad: str) -> bytes:
        return crypto.seal_json(self._key(), value, aad)

    def open_json(self, blob: bytes, *, aad: str) -> Any:
        return crypto.open_json(self._key(), bytes(blob), aad)

    def destroy(self) -> None:
        """Crypto-shred: destroy the key in the key store (and any legacy copy here). Irreversible by design.
        A store that never held the key raises KeyMissing: a misconfigured store must not look like an erasure."""
        if self.destroyed_at is not None:
            return
        if self.store == self.Store.KEYSTORE:
            key_store().destroy(str(self.id))
        self.wrapped = b""
        self.destroyed_at = timezone.now()
        self.save(update_fields=["wrapped", "destroyed_at"])

    def move_to_key_store(self) -> bool:
        """A legacy row's key into the key store; its wrapped copy here is blanked. False if nothing to do."""
        if self.store == self.Store.KEYSTORE or self.destroyed_at is not None or not self.wrapped:
            return False
        data_key = _unwrap_legacy(str(self.id), bytes(self.wrapped))
        key_store().put(str(self.id), data_key)
        self.wrapped = b""
        self.store = self.Store.KEYSTORE
        self.save(update_fields=["wrapped", "store"])
        return True


class PeriodicRun(models.Model):
    """The last run of each periodic (beat) task, for the portal's health page: a purge or reminder run
    that stopped happening is visible, not silent. Written after every run of a task named in
    CELERY_BEAT_SCHEDULE (compliance.common.periodic); holds counts and ids, never personal data."""

    task = models.CharField(max_length=100, primary_key=True)
    last_run_at = models.DateTimeField()
    last_state = models.CharField(max_length=16)
    last_summary = models.CharField(max_length=200, blank=True)
    runs = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.task} at {self.last_run_at:%Y-%m-%d %H:%M:%S} ({self.last_state})"
