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
destruction date plus that (recorded on the purged request).

`Pkcs11KeyStore` keeps each data key as an object in a PKCS#11 token (an HSM, a cloud HSM's PKCS#11
library, or SoftHSM, which the tests run against): the production choice for more than one host, with
the token's own storage, access control and backups.

No Django here: the store is given its path and key-encryption keys.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from compliance.common import crypto


class KeyMissing(LookupError):
    """The store has no record of this key (a different store, or a restored copy older than the key)."""


class KeyStoreBusy(RuntimeError):
    """A destroyed key's bytes could not be flushed out of the store's log yet."""


class KeyStore(Protocol):
    def create(self, key_id: str) -> None: ...
    def put(self, key_id: str, data_key: bytes) -> None: ...
    def key(self, key_id: str) -> bytes: ...
    def destroy(self, key_id: str) -> None: ...
    def rewrap(self) -> int: ...


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
                self._ready = True
            for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                if path.exists():
                    path.chmod(0o600)
            yield conn
        finally:
            conn.close()

    def create(self, key_id: str) -> None:
        self._insert(key_id, crypto.new_wrapped_data_key(self._keks[self._current], key_id))

    def put(self, key_id: str, data_key: bytes) -> None:
        """Store an existing data key (moving keys in from elsewhere)."""
        self._insert(key_id, crypto.wrap_data_key(self._keks[self._current], key_id, data_key))

    def _insert(self, key_id: str, wrapped: bytes) -> None:
        # A key id is stored once: a second insert (a rerun of keystore_migrate) changes nothing, and
        # never brings a destroyed key back.
        with self._db() as db:
            db.execute(
                "INSERT INTO data_keys (key_id, wrapped, kek_id, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (key_id) DO NOTHING",
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
        """Destroy the key; raise KeyMissing if this store never held it (a wrong KEYSTORE_PATH must not
        look like a successful erasure). Destroying it again is a no-op (its tombstone stays)."""
        now = datetime.now(UTC).isoformat()
        with self._db() as db:
            known = db.execute("SELECT 1 FROM data_keys WHERE key_id = ?", (key_id,)).fetchall()
            if not known:
                raise KeyMissing(f"data key {key_id} is not in the key store at {self.path}; nothing was destroyed")
            db.execute("UPDATE data_keys SET wrapped = NULL, destroyed_at = ? WHERE key_id = ? AND wrapped IS NOT NULL",
                       (now, key_id))
            # The old row's bytes are zeroed in the database file (secure_delete) once the write-ahead
            # log has been copied back and truncated; a reader can delay that, so retry, then fail loudly
            # (the purge then rolls back and its next run destroys again).
            for attempt in range(20):
                busy, _log, _done = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
                if not busy:
                    return
                time.sleep(0.05 * (attempt + 1))
        raise KeyStoreBusy(f"the key store at {self.path} could not checkpoint its log; retry the purge")

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


class Pkcs11KeyStore:
    """Data keys as objects in a PKCS#11 token: a hardware security module, a cloud HSM behind its
    PKCS#11 library, or SoftHSM (tested here). Each data key is one AES-256 secret-key object labelled by
    its id; destroying it is C_DestroyObject in the token, whose storage and backups the HSM's operator
    runs apart from the application database. The key-encryption key of the local store is not used:
    the token protects its objects (PIN, and the HSM's own key hierarchy).
    """

    # A PKCS#11 login belongs to the whole process: one thread's logout would hide the token's objects
    # from another thread's session (and a second login fails). One operation at a time per process.
    _lock = threading.Lock()

    def __init__(self, library: str, token_label: str, pin: str) -> None:
        self.library, self.token_label, self._pin = library, token_label, pin
        self.path = f"pkcs11:{token_label}"

    @contextmanager
    def _session(self) -> Iterator[Any]:
        import pkcs11

        with self._lock:
            token = pkcs11.lib(self.library).get_token(token_label=self.token_label)
            with token.open(user_pin=self._pin, rw=True) as session:
                yield session

    @staticmethod
    def _template(key_id: str) -> dict[Any, Any]:
        from pkcs11 import Attribute, KeyType, ObjectClass

        return {
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES, Attribute.LABEL: key_id,
            Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False,
        }

    def create(self, key_id: str) -> None:
        import secrets

        self.put(key_id, secrets.token_bytes(32))

    def put(self, key_id: str, data_key: bytes) -> None:
        from pkcs11 import Attribute, ObjectClass

        with self._session() as session:
            if list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: key_id})):
                return  # stored once: a rerun changes nothing
            session.create_object({**self._template(key_id), Attribute.VALUE: bytes(data_key)})

    def key(self, key_id: str) -> bytes:
        from pkcs11 import Attribute, ObjectClass

        with self._session() as session:
            found = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: key_id}))
            if not found:
                raise KeyMissing(f"data key {key_id} is not in the PKCS#11 token {self.token_label}")
            return bytes(found[0][Attribute.VALUE])

    def destroy(self, key_id: str) -> None:
        from pkcs11 import Attribute, ObjectClass

        with self._session() as session:
            found = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: key_id}))
            if not found:
                raise KeyMissing(f"data key {key_id} is not in the PKCS#11 token {self.token_label}; nothing was destroyed")
            for key in found:
                key.destroy()

    def rewrap(self) -> int:
        return 0  # the token protects its objects itself: nothing is wrapped by FIELD_ENCRYPTION_KEY
