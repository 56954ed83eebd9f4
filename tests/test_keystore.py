"""The key store: keys outside the application database, destruction that leaves no copy in the file,
rotation of the key-encryption key without downtime, and moving legacy keys out of the database."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from compliance.common import crypto
from compliance.common.keystore import KeyMissing, LocalKeyStore
from compliance.common.models import DataKey, key_store

KEK = "k" * 10 + "0123456789abcdefghijklmnopqrstuv"
NEW_KEK = "n" * 10 + "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def test_create_read_destroy(tmp_path: Path) -> None:
    store = LocalKeyStore(tmp_path / "keys.sqlite3", KEK)
    store.create("a")
    key = store.key("a")
    assert len(key) == 32 and store.key("a") == key
    store.destroy("a")
    with pytest.raises(crypto.DataKeyDestroyed):
        store.key("a")
    with pytest.raises(KeyMissing):
        store.key("never")
    with pytest.raises(KeyMissing, match="nothing was destroyed"):
        store.destroy("never")  # a store that never held the key must not look like an erasure
    store.destroy("a")  # again: a no-op, the tombstone stays
    with pytest.raises(crypto.DataKeyDestroyed):
        store.key("a")


def test_a_key_is_stored_once_and_a_destroyed_key_never_comes_back(tmp_path: Path) -> None:
    store = LocalKeyStore(tmp_path / "keys.sqlite3", KEK)
    store.put("a", b"\x01" * 32)
    store.put("a", b"\x02" * 32)
    assert store.key("a") == b"\x01" * 32
    store.destroy("a")
    store.put("a", b"\x03" * 32)  # a rerun of keystore_migrate after a purge
    with pytest.raises(crypto.DataKeyDestroyed):
        store.key("a")


def test_rotation_without_downtime(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite3"
    old = LocalKeyStore(path, KEK)
    old.create("a")
    key = old.key("a")
    # Step 1: the new key with the old one as previous: every key still reads.
    during = LocalKeyStore(path, NEW_KEK, previous=[KEK])
    assert during.key("a") == key
    during.create("b")
    # Step 2: rewrap; step 3: the old key removed.
    assert during.rewrap() == 1
    after = LocalKeyStore(path, NEW_KEK)
    assert after.key("a") == key and after.key("b") == during.key("b")
    with pytest.raises(KeyMissing, match="not configured"):
        LocalKeyStore(path, KEK).key("a")  # the old key alone no longer reads anything


def test_a_wrong_key_encryption_key_reads_nothing(tmp_path: Path) -> None:
    store = LocalKeyStore(tmp_path / "keys.sqlite3", KEK)
    store.create("a")
    with pytest.raises(KeyMissing):
        LocalKeyStore(tmp_path / "keys.sqlite3", NEW_KEK).key("a")


@pytest.mark.django_db
def test_legacy_keys_move_out_of_the_database(settings: Any) -> None:
    import uuid

    key_id = uuid.uuid4()
    legacy = DataKey.objects.create(id=key_id, wrapped=crypto.new_wrapped_data_key(settings.FIELD_ENCRYPTION_KEY, str(key_id)))
    sealed = legacy.seal_json({"x": 1}, aad="t")
    assert legacy.store == DataKey.Store.DATABASE
    call_command("keystore_migrate", stdout=io.StringIO())
    legacy.refresh_from_db()
    assert legacy.store == DataKey.Store.KEYSTORE and bytes(legacy.wrapped) == b""
    assert legacy.open_json(sealed, aad="t") == {"x": 1}
    assert len(key_store().key(str(key_id))) == 32


def test_a_key_created_after_a_read_is_visible_to_another_process_at_once(tmp_path: Path) -> None:
    """A cursor left unfinished by a read used to keep the connection's transaction open, so a key
    created next on the same connection stayed uncommitted and a worker process could not find it."""
    import subprocess
    import sys

    path = tmp_path / "keys.sqlite3"
    store = LocalKeyStore(path, KEK)
    store.create("first")
    store.key("first")  # a read on the connection
    store.create("second")  # then a write on the same connection
    code = (
        "import sys; from pathlib import Path; from compliance.common.keystore import LocalKeyStore;"
        f"print(len(LocalKeyStore(Path({str(path)!r}), {KEK!r}).key('second')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0 and result.stdout.strip() == "32", result.stderr[-2000:]
