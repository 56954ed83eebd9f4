"""Envelope encryption of personal data at rest, with crypto-shredding.

Each erasure request gets its own random 256-bit data key. Personal fields (the subject's
identifiers, located record texts) are sealed with AES-256-GCM under that key, with associated
data that binds each ciphertext to its row and field, so a ciphertext copied to another row does
not decrypt. The data key itself is stored wrapped (AES-GCM) under the master key
`FIELD_ENCRYPTION_KEY`, which lives in the environment or a secret file, never in the database, and the
wrapped key lives in the key store (compliance.common.keystore), not in the application database.

Purging a request destroys its data key in the key store: every ciphertext sealed under it becomes
unreadable, in the database and in every database backup. Copies of the key store itself keep the key
until they expire (KEYSTORE_BACKUP_RETENTION_DAYS).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12
_VERSION = b"\x01"


class DataKeyDestroyed(RuntimeError):
    """The data key was shredded: the personal data sealed under it is gone for good."""


@lru_cache(maxsize=4)
def _master(master_secret: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"compliance-field-encryption", info=b"master-v1").derive(
        master_secret.encode("utf-8")
    )
    return AESGCM(key)


def new_wrapped_data_key(master_secret: str, key_id: str) -> bytes:
    """A fresh data key, returned wrapped under the master key (bound to key_id)."""
    return wrap_data_key(master_secret, key_id, AESGCM.generate_key(bit_length=256))


def wrap_data_key(master_secret: str, key_id: str, data_key: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return _VERSION + nonce + _master(master_secret).encrypt(nonce, data_key, key_id.encode())


def unwrap_data_key(master_secret: str, key_id: str, wrapped: bytes) -> bytes:
    if not wrapped:
        raise DataKeyDestroyed(f"data key {key_id} has been destroyed")
    if wrapped[:1] != _VERSION:
        raise ValueError("unknown wrapped-key version")
    nonce, body = wrapped[1 : 1 + _NONCE_BYTES], wrapped[1 + _NONCE_BYTES :]
    return _master(master_secret).decrypt(nonce, body, key_id.encode())


def seal(data_key: bytes, plaintext: bytes, aad: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return _VERSION + nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad.encode())


def open_sealed(data_key: bytes, blob: bytes, aad: str) -> bytes:
    if blob[:1] != _VERSION:
        raise ValueError("unknown ciphertext version")
    nonce, body = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
    return AESGCM(data_key).decrypt(nonce, body, aad.encode())


def seal_json(data_key: bytes, value: Any, aad: str) -> bytes:
    return seal(data_key, json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8"), aad)


def open_json(data_key: bytes, blob: bytes, aad: str) -> Any:
    return json.loads(open_sealed(data_key, bytes(blob), aad).decode("utf-8"))
