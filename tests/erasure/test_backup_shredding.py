"""Crypto-shredding survives backups: a copy of the database taken before a purge, restored after it,
does not decrypt the purged person's data, and still decrypts everyone else's.

The copy is a real one: the SQLite file copied with SQLite's online backup, or the PostgreSQL database
dumped with pg_dump and restored into a new database with pg_restore. It is read with plain SQL (no
Django model), as an attacker with a stolen backup and the service's master key would; the data keys it
needs are not in it, they are in the key store, where the purge destroyed this person's.
"""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from compliance.common import crypto
from compliance.common.keystore import KeyMissing
from compliance.common.models import DataKey, key_store
from compliance.erasure.models import ErasureRequest, Status
from compliance.erasure.services import erasure_request_purge
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = "SELECT r.id, r.data_key_id, r.identifiers_sealed, k.wrapped FROM erasure_erasurerequest r JOIN common_datakey k ON k.id = r.data_key_id"


class Backup:
    """A copy of the application database taken now, readable later."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.vendor = connection.vendor
        if self.vendor == "sqlite":
            self.path = tmp_path / "backup.sqlite3"
            with sqlite3.connect(self.path) as copy:
                connection.ensure_connection()
                connection.connection.backup(copy)  # type: ignore[union-attr]
        else:
            s = connection.settings_dict
            self.conninfo = {"host": s["HOST"] or "127.0.0.1", "port": str(s["PORT"] or 5432), "user": s["USER"]}
            self.dump = tmp_path / "backup.dump"
            subprocess.run(["pg_dump", "-Fc", "-h", self.conninfo["host"], "-p", self.conninfo["port"], "-U", self.conninfo["user"],
                            "-f", str(self.dump), s["NAME"]], check=True, capture_output=True, timeout=120)

    def restore_and_read(self) -> list[tuple[Any, ...]]:
        if self.vendor == "sqlite":
            with sqlite3.connect(self.path) as db:
                return db.execute(ROWS).fetchall()
        import psycopg

        name = f"restored_{secrets.token_hex(4)}"
        c = self.conninfo
        subprocess.run(["createdb", "-h", c["host"], "-p", c["port"], "-U", c["user"], name], check=True, capture_output=True)
        try:
            subprocess.run(["pg_restore", "--no-owner", "-h", c["host"], "-p", c["port"], "-U", c["user"], "-d", name, str(self.dump)],
                           check=True, capture_output=True, timeout=300)
            with psycopg.connect(host=c["host"], port=c["port"], user=c["user"], dbname=name) as db:
                return [(str(r[0]).replace("-", ""), str(r[1]).replace("-", ""), bytes(r[2]), bytes(r[3] or b"")) for r in db.execute(ROWS)]
        finally:
            subprocess.run(["dropdb", "--force", "-h", c["host"], "-p", c["port"], "-U", c["user"], name], capture_output=True)


def _open(row: tuple[Any, ...]) -> dict[str, Any]:
    """What an attacker with the backup and the service's keys does: find the key, open the identifiers."""
    request_id, key_id, sealed, wrapped = row
    assert not wrapped, "a data key is stored in the application database"
    data_key = key_store().key(str(uuid.UUID(str(key_id))))
    return crypto.open_json(data_key, bytes(sealed), aad=f"erasure_request:{uuid.UUID(str(request_id))}:identifiers")


def test_a_backup_taken_before_the_purge_does_not_decrypt_the_purged_person(tmp_path: Path, settings: Any) -> None:
    purged = factories.request_in(Status.REFUSED, person=factories.ADA)
    kept = factories.request_in(Status.TRIAGED, person=factories.subject(3))
    assert ErasureRequest.objects.get(pk=purged.pk).data_key.store == DataKey.Store.KEYSTORE

    backup = Backup(tmp_path)
    rows_before = {str(r[0]).replace("-", ""): r for r in backup.restore_and_read()}
    # The copy works as a backup should, before the purge: both people decrypt.
    assert _open(rows_before[purged.pk.hex])["email"] == factories.ADA.email
    assert _open(rows_before[kept.pk.hex])["full_name"] == factories.subject(3).full_name

    settings.KEYSTORE_BACKUP_RETENTION_DAYS = 35
    erasure_request_purge(request=purged)
    purged.refresh_from_db()
    assert purged.decision_reason == ""  # the refusal's free text may name the person
    assert purged.undecryptable_after is not None and (purged.undecryptable_after - purged.purged_at.date()).days == 35

    restored = {str(r[0]).replace("-", ""): r for r in backup.restore_and_read()}
    with pytest.raises(crypto.DataKeyDestroyed):
        _open(restored[purged.pk.hex])
    assert _open(restored[kept.pk.hex])["full_name"] == factories.subject(3).full_name
    # Nor does the copy hold the person's identifiers in any other readable form.
    for row in restored.values():
        assert factories.ADA.email.encode() not in bytes(row[2])


def test_the_key_store_file_keeps_no_destroyed_key(tmp_path: Path, settings: Any) -> None:
    request = factories.request_in(Status.REFUSED, person=factories.ADA)
    key_id = str(request.data_key_id)
    path = Path(settings.KEYSTORE_PATH)
    with sqlite3.connect(path) as db:
        (wrapped,) = db.execute("SELECT wrapped FROM data_keys WHERE key_id = ?", (key_id,)).fetchone()
    erasure_request_purge(request=request)
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert bytes(wrapped) not in raw  # zeroed in the file and out of the write-ahead log
    with pytest.raises(crypto.DataKeyDestroyed):
        key_store().key(key_id)


def test_a_key_store_without_the_key_says_so() -> None:
    with pytest.raises(KeyMissing):
        key_store().key("00000000-0000-0000-0000-000000000000")
