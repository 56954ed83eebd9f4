"""Where data keys live: outside the application database, so a database backup holds no key.

Crypto-shredding only works if destroying a key destroys every copy of it. A data key wrapped and stored
in the application database is copied into every database backup, and the master key that unwraps it
lives on: a backup taken before a purge decrypts the purged person's data after it. So each request's
data key lives in a key store with its own storage and its own backup policy; the application database
holds only ciphertext and the key's id.

`KeyStore` is the interface. `LocalKeyStore` is the implementation for the embedded default and a
single host: one SQLite file of its own (KEYSTORE_PATH), each data key wrapped under the key-encryption
key (FIELD_ENCRYPTION_KEY; previous ones in FIELD_ENCRYPTION_KEYS_PREVIOUS during a rotation). Destroying a
key deletes its row with SQLite's secure_delete on (freed pages are zeroed) and checkpoints the
write-ahead log, leaving a tombstone so that a read says "destroyed" rather than "missing". Copies of
the key store's file (its backups) keep a destroyed key until they expire: KEYSTORE_BACKUP_RETENTION_DAYS
is how long the operator keeps them, and the date after which no copy can decrypt the data is the
destruction date plus that (recorded on the purged request). A multi-host deployment points KEYSTORE at a
KMS-style store with the same interface (see the README's security section).

No Django here: the store is given its path and key-encryption keys.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from compliance.common import crypto


class KeyMissing(LookupError):
    """The store has no record of this key (a different store, or a restored copy older than the key)."""


class KeyStore(Protocol):
    def create(self, key_id: str) -> None: ...
    def key(self, key_id: str) -> bytes: ...
    def destroy(self, key_id: str) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    key_id TEXT PRIMARY KEY,
    wrapped BLOB,              -- NULL once destroyed (the tombstone keeps the id and the time)
    kek_id TEXT NOT NULL,      -- which key-encryption key wrapped it (rotation)
    created_at TEXT NOT NULL,
    destroyed_at TEXT
);
"""


def kek_id(kek: str) -> str:
    """A short public fingerprint of a key-encryption key (never the key)."""
    import hashlib

    return hashlib.sha256(b"kek-id:" + kek.encode("utf-8")).hexdigest()[:16]


class LocalKeyStore:
    def __init__(self, path: Path, kek: str, previous: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self._keks = {kek_id(k): k for k in (kek, *previous) if k}
        self._current = kek_id(kek)
        self._ready = False

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation, closed after it. A connection kept open per thread was seen
        to hide a key another process had just committed (a worker could not find the key of the request
        it was given); a fresh connection always reads the latest committed state, and opening a local
        SQLite file costs well under a millisecond."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            conn.execute("PRAGMA secure_delete=ON").fetchall()
            if not self._ready:
                conn.execute(_SCHEMA)
                self.path.chmod(0o600)
                self._ready = True
            yield conn
        finally:
            conn.close()

    def create(self, key_id: str) -> None:
        self._insert(key_id, crypto.new_wrapped_data_key(self._keks[self._current], key_id))

    def put(self, key_id: str, data_key: bytes) -> None:
        """Store an existing data key (moving keys in from elsewhere)."""
        self._insert(key_id, crypto.wrap_data_key(self._keks[self._current], key_id, data_key))

    def _insert(self, key_id: str, wrapped: bytes) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO data_keys (key_id, wrapped, kek_id, created_at) VALUES (?, ?, ?, ?)",
                (key_id, wrapped, self._current, datetime.now(UTC).isoformat()),
            )

    def key(self, key_id: str) -> bytes:
        with self._db() as db:
            rows = db.execute("SELECT wrapped, kek_id FROM data_keys WHERE key_id = ?", (key_id,)).fetchall()
        if not rows:
            raise KeyMissing(f"data key {key_id} is not in the key store at {self.path}")
        wrapped, wrapped_by = rows[0]
        if wrapped is None:
            raise crypto.DataKeyDestroyed(f"data key {key_id} has been destroyed")
        kek = self._keks.get(wrapped_by)
        if kek is None:
            raise KeyMissing(f"data key {key_id} is wrapped by key-encryption key {wrapped_by}, which is not configured")
        return crypto.unwrap_data_key(kek, key_id, bytes(wrapped))

    def destroy(self, key_id: str) -> None:
        now = datetime.now(UTC).isoformat()
        with self._db() as db:
            db.execute("UPDATE data_keys SET wrapped = NULL, destroyed_at = ? WHERE key_id = ? AND wrapped IS NOT NULL",
                       (now, key_id))
            db.execute("INSERT OR IGNORE INTO data_keys (key_id, wrapped, kek_id, created_at, destroyed_at) "
                       "VALUES (?, NULL, ?, ?, ?)", (key_id, self._current, now, now))
            # The old row's bytes are zeroed in the database file (secure_delete); the write-ahead log
            # still holds the page until a checkpoint copies it back and truncates the log.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def rewrap(self) -> int:
        """Wrap every live key under the current key-encryption key (after a rotation); returns how many
        were rewrapped. Keys wrapped by a previous key stay readable meanwhile, so this needs no downtime."""
        with self._db() as db:
            rows = db.execute("SELECT key_id FROM data_keys WHERE wrapped IS NOT NULL AND kek_id != ?", (self._current,)).fetchall()
        for (key_id,) in rows:
            wrapped = crypto.wrap_data_key(self._keks[self._current], key_id, self.key(key_id))
            with self._db() as db:
                db.execute("UPDATE data_keys SET wrapped = ?, kek_id = ? WHERE key_id = ? AND wrapped IS NOT NULL",
                           (wrapped, self._current, key_id))
        with self._db() as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return len(rows)
