"""The audit log in the database: append, rollback, triggers, tamper detection, concurrency, privacy."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection, transaction

from compliance.audit import services, signing
from compliance.audit.models import AuditCheckpoint, AuditLeaf, AuditNode
from compliance.audit.services import UnsafeAuditValue, audit_append, checkpoint_create
from compliance.audit.triggers import drop_sql
from compliance.audit.verify import audit_verify
from proofs import merkle

ROOT = Path(__file__).resolve().parents[2]
needs_postgres = pytest.mark.skipif("os.environ.get('DATABASE_URL', '').startswith('postgres') is False")


def _append(n: int, **kwargs: object) -> list[AuditLeaf]:
    return [
        audit_append(event_type="test.event", actor="system", outcome="ok", request_id=uuid.uuid4(), details={"i": i}, **kwargs)
        for i in range(n)
    ]


@pytest.mark.django_db
def test_sequence_numbers_are_dense_from_zero_and_root_matches_naive() -> None:
    leaves = _append(13)
    assert [leaf.seq for leaf in leaves] == list(range(13))
    size, root = services.tree_root()
    assert size == 13
    assert root == merkle.root_of([merkle.leaf_hash(bytes(leaf.leaf_bytes)) for leaf in leaves])
    # every complete subtree of level >= 1 is cached: 13 leaves -> 6 + 3 + 1 nodes
    assert AuditNode.objects.count() == 10


@pytest.mark.django_db
def test_proofs_from_the_database_verify() -> None:
    leaves = _append(21)
    size, root = services.tree_root()
    for leaf in leaves:
        proof = services.inclusion_proof(leaf.seq, size)
        merkle.verify_inclusion(bytes(leaf.leaf_hash), leaf.seq, size, proof, root)
    _, root9 = services.tree_root(9)
    merkle.verify_consistency(9, size, services.consistency_proof(9, size), root9, root)


@pytest.mark.django_db
def test_append_rolls_back_with_the_caller() -> None:
    _append(2)
    with pytest.raises(RuntimeError), transaction.atomic():
        _append(3)
        raise RuntimeError("caller fails")
    assert AuditLeaf.objects.count() == 2 and services.log_size() == 2
    assert _append(1)[0].seq == 2  # no gap


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kwargs",
    [
        {"details": {"name": "Ada Quartermaine"}},
        {"details": {"email": "ada@example.com"}},
        {"details": {"phone": "020 7946 0018"}},
        {"details": {"flag": True}},
        {"subject_ref": "Ada"},
        {"artefacts": {"model": "not-a-hash"}},
    ],
)
def test_personal_data_cannot_enter_a_leaf(kwargs: dict) -> None:
    with pytest.raises(UnsafeAuditValue):
        audit_append(event_type="test.event", actor="system", outcome="ok", **kwargs)
    assert AuditLeaf.objects.count() == 0


@pytest.mark.django_db
def test_update_and_delete_are_refused_by_triggers() -> None:
    leaf = _append(1)[0]
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic():
        AuditLeaf.objects.filter(seq=leaf.seq).update(event_type="forged")
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic():
        AuditLeaf.objects.filter(seq=leaf.seq).delete()
    assert AuditLeaf.objects.get(seq=0).event_type == "test.event"


@pytest.mark.django_db
@needs_postgres
def test_triggers_hold_under_replica_role_and_truncate_is_refused() -> None:
    _append(2)
    checkpoint_create()  # a row in every table, so row triggers have something to guard
    with connection.cursor() as cursor:
        for statement in (
            "UPDATE audit_auditleaf SET event_type = 'forged'",
            "DELETE FROM audit_auditleaf",
            "TRUNCATE audit_auditleaf CASCADE",
            "UPDATE audit_auditcheckpoint SET note = 'x'",
        ):
            with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
                cursor.execute("SET LOCAL session_replication_role = replica")
                cursor.execute(statement)
    assert AuditLeaf.objects.count() == 2


@pytest.mark.django_db
def test_verify_names_the_first_edited_row_when_triggers_are_dropped() -> None:
    _append(10)
    checkpoint_create()
    assert audit_verify().ok
    with connection.cursor() as cursor:  # what a superuser could do
        for statement in drop_sql(connection.vendor):
            cursor.execute(statement)
        cursor.execute("UPDATE audit_auditleaf SET leaf_bytes = %s WHERE seq = 6", [b'{"forged":"1"}'])
    report = audit_verify()
    assert not report.ok and report.first_bad_seq == 6
    assert any("leaf 6" in p for p in report.problems)


@pytest.mark.django_db
def test_verify_detects_a_rewritten_leaf_with_matching_hash_via_checkpoint() -> None:
    _append(8)
    checkpoint_create()
    forged = b'{"actor":"system","outcome":"ok","time":"2026-01-01T00:00:00.000000Z","type":"test.event","v":1}'
    with connection.cursor() as cursor:
        for statement in drop_sql(connection.vendor):
            cursor.execute(statement)
        # rewrite bytes *and* hash consistently: only the cached nodes and the signed checkpoint catch it
        cursor.execute(
            "UPDATE audit_auditleaf SET leaf_bytes = %s, leaf_hash = %s, request_id = NULL WHERE seq = 3",
            [forged, merkle.leaf_hash(forged)],
        )
    report = audit_verify()
    assert not report.ok
    assert any("checkpoint at size 8" in p for p in report.problems)
    assert any("cached node" in p for p in report.problems)


@pytest.mark.django_db
def test_checkpoint_signature_and_key_rotation() -> None:
    _append(3)
    first = checkpoint_create()
    assert first is not None and first.note.count("\u2014 ") == 1
    assert checkpoint_create() is None  # nothing new to sign
    call_command("audit_keygen", "--rotate")
    _append(2)
    second = checkpoint_create()
    assert second is not None and second.note.count("\u2014 ") == 2  # both keys sign during the overlap
    old = signing.keyring().entries[0].public_key
    call_command("audit_keygen", "--retire", old.key_hint)
    _append(1)
    third = checkpoint_create()
    assert third is not None and third.note.count("\u2014 ") == 1
    assert len(signing.keyring().entries) == 2  # the retired key stays published
    assert audit_verify().ok


@pytest.mark.django_db
def test_checkpoint_signed_by_unknown_key_fails_verify(settings, tmp_path: Path) -> None:
    _append(2)
    checkpoint_create()
    settings.AUDIT_SIGNING_KEY_FILE = tmp_path / "other.key"
    settings.AUDIT_KEYRING_FILE = tmp_path / "other.json"
    report = audit_verify()
    assert not report.ok and any("checkpoint at size 2" in p for p in report.problems)


@pytest.mark.django_db
def test_audit_verify_command_exit_status() -> None:
    _append(3)
    call_command("audit_checkpoint")
    call_command("audit_verify")
    with connection.cursor() as cursor:
        for statement in drop_sql(connection.vendor):
            cursor.execute(statement)
        cursor.execute("DELETE FROM audit_auditleaf WHERE seq = 1")
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="first bad sequence number: 1"):
        call_command("audit_verify")


@pytest.mark.django_db(transaction=True)
@needs_postgres
def test_four_processes_appending_concurrently_give_dense_sequence() -> None:
    database = connection.settings_dict["NAME"]
    script = (
        "import django, uuid; django.setup()\n"
        "from django.db import transaction\n"
        "from compliance.audit.services import audit_append\n"
        "for i in range(500):\n"
        "    audit_append(event_type='test.concurrent', actor='system', outcome='ok', request_id=uuid.uuid4(), details={'i': i})\n"
    )
    env = dict(os.environ, DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}", DJANGO_SETTINGS_MODULE="compliance.settings")
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env) for _ in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    seqs = list(AuditLeaf.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(2000))
    checkpoint_create()
    report = audit_verify()
    assert report.ok, report.problems
    assert AuditCheckpoint.objects.get().size == 2000
