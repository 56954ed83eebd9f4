"""Tampering with the audit log as a database administrator would, and `audit_verify` catching it.

Every attack goes around the application: the append-only triggers are dropped (a superuser can),
rows are edited, deleted or inserted with SQL or querysets, and where the attacker would cover their
tracks they recompute every leaf hash, cached node and the head's frontier with the project's own
hashing. What they cannot do is sign: the key and the record of the newest signed checkpoint live
outside the database. Each test names the attack and checks that the report says what and where.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from compliance.audit import signing
from compliance.audit.models import AuditCheckpoint, AuditHead, AuditLeaf, AuditNode
from compliance.audit.services import (
    AuditLogTampered,
    audit_append,
    checkpoint_create,
    checkpoint_parse_trusted,
)
from compliance.audit.triggers import drop_sql
from compliance.audit.verify import audit_verify
from proofs import canonical, merkle

ROOT = Path(__file__).resolve().parents[2]
on_postgres = pytest.mark.skipif(
    "os.environ.get('DATABASE_URL', '').startswith('postgres') is False", reason="needs PostgreSQL"
)

pytestmark = pytest.mark.django_db


# --- the honest service -------------------------------------------------------------------------------


def _append(n: int) -> None:
    for i in range(n):
        audit_append(event_type="test.event", actor="system", outcome="ok", request_id=uuid.uuid4(), details={"i": i})


@pytest.fixture
def sign(django_capture_on_commit_callbacks: Callable) -> Callable[[], AuditCheckpoint]:
    """checkpoint_create with its after-commit step run (the record of the newest signed checkpoint)."""

    def _sign() -> AuditCheckpoint:
        with django_capture_on_commit_callbacks(execute=True):
            created = checkpoint_create()
        assert created is not None
        return created

    return _sign


def _log(sign: Callable[[], AuditCheckpoint], *sizes: int) -> list[AuditCheckpoint]:
    """A log with a checkpoint at each of `sizes`."""
    checkpoints = []
    for size in sizes:
        _append(size - AuditLeaf.objects.count())
        checkpoints.append(sign())
    return checkpoints


# --- the administrator ----------------------------------------------------------------------------------


def _drop_triggers() -> None:
    """What a superuser can do; the test's transaction rolls it back."""
    with connection.cursor() as cursor:
        for drop in drop_sql(connection.vendor):
            cursor.execute(drop)


def _sql(statement: str, params: list | None = None) -> None:
    _drop_triggers()
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def _forge_leaf(seq: int) -> bytes:
    """Valid canonical bytes for leaf `seq` saying something else, with its hash stored to match."""
    document = canonical.parse_canonical(bytes(AuditLeaf.objects.get(seq=seq).leaf_bytes))
    document["outcome"] = "refused"
    forged = canonical.canonical_bytes(document)
    _sql("UPDATE audit_auditleaf SET leaf_bytes = %s, leaf_hash = %s WHERE seq = %s", [forged, merkle.leaf_hash(forged), seq])
    return forged


def _rebuild_tree() -> None:
    """Cover the tracks: recompute every cached node and the head (size, frontier) from the leaves."""
    tree = merkle.CompactRange()
    nodes = []
    for raw in AuditLeaf.objects.order_by("seq").values_list("leaf_bytes", flat=True):
        nodes += [AuditNode(level=level, index=index, hash=node) for level, index, node in tree.append(merkle.leaf_hash(bytes(raw)))[1:]]
    _sql("DELETE FROM audit_auditnode")
    AuditNode.objects.bulk_create(nodes)
    AuditHead.objects.filter(id=1).update(
        size=tree.size, frontier=b"".join(bytes([level]) + node for level, node in tree.frontier())
    )


def _problems(report: object) -> str:
    return "\n".join(report.problems)  # type: ignore[attr-defined]


# --- the tests ------------------------------------------------------------------------------------------


def test_an_untouched_log_verifies(sign: Callable[[], AuditCheckpoint]) -> None:
    checkpoints = _log(sign, 3, 7, 12)
    _append(2)  # a tail not yet under a checkpoint is not a failure
    report = audit_verify()
    assert report.ok, report.problems
    assert (report.leaves, report.checkpoints, report.unsigned_tail) == (14, 3, 2)
    assert [cp.previous_size for cp in checkpoints] == [0, 3, 7]
    assert signing.read_signed_head() == checkpoints[-1].note
    call_command("audit_verify")


def test_editing_the_last_leaf_and_recomputing_its_hashes_is_detected(sign: Callable) -> None:
    first, second = _log(sign, 5, 10)
    _forge_leaf(9)
    _rebuild_tree()
    report = audit_verify()
    assert not report.ok
    assert f"checkpoint at size 10 (id {second.id}): signed root does not match the leaves; the edit is in leaves 5-9" in _problems(report)
    assert report.first_bad_checkpoint == second.id and report.first_bad_seq == 5
    assert "refused" not in _problems(report)  # messages name positions, never leaf contents


def test_deleting_tail_leaves_and_decrementing_the_head_is_detected(sign: Callable) -> None:
    (checkpoint,) = _log(sign, 10)
    _sql("DELETE FROM audit_auditleaf WHERE seq >= 8")
    _rebuild_tree()
    report = audit_verify()
    assert f"checkpoint at size 10 (id {checkpoint.id}) covers leaves 8-9, which are gone" in _problems(report)
    assert report.first_bad_seq == 8 and report.first_bad_checkpoint == checkpoint.id


def test_deleting_the_tree_nodes_then_editing_a_leaf_is_detected(sign: Callable) -> None:
    first, second = _log(sign, 4, 8)
    _sql("DELETE FROM audit_auditnode")
    _forge_leaf(5)
    report = audit_verify()
    problems = _problems(report)
    assert "cached node level 1 index 0 (leaves 0-1) is missing: nodes were deleted" in problems
    assert "node cache: 0 cached nodes for a log of 8 leaves, expected 7" in problems
    assert f"checkpoint at size 8 (id {second.id}): signed root does not match the leaves; the edit is in leaves 4-7" in problems
    assert report.first_bad_seq == 4


def test_deleting_every_checkpoint_then_editing_is_detected(sign: Callable) -> None:
    _log(sign, 4, 8)
    _sql("DELETE FROM audit_auditcheckpoint")
    _forge_leaf(2)
    _rebuild_tree()
    report = audit_verify()
    problems = _problems(report)
    assert "the newest checkpoint recorded outside the database (size 8): signed root does not match the leaves; the edit is in leaves 0-7" in problems
    assert "the newest checkpoint recorded outside the database (size 8) is not in the database" in problems
    # and the signer will not bless the rewritten log with a fresh checkpoint
    _append(1)
    with pytest.raises(AuditLogTampered, match="size 8.*is not in the database"):
        checkpoint_create()


def test_deleting_a_checkpoint_row_is_detected(sign: Callable) -> None:
    first, middle, last = _log(sign, 3, 6, 9)
    _sql("DELETE FROM audit_auditcheckpoint WHERE id = %s", [middle.id])
    report = audit_verify()
    assert (
        f"checkpoint at size 9 (id {last.id}) was signed after a checkpoint at size 6, but the row before it is the "
        f"checkpoint at size 3 (id {first.id}): checkpoint rows were deleted"
    ) in _problems(report)
    assert report.first_bad_checkpoint == last.id


def test_editing_a_middle_leaf_with_rehash_is_detected(sign: Callable) -> None:
    first, second, third = _log(sign, 4, 8, 12)
    _forge_leaf(5)
    _rebuild_tree()
    report = audit_verify()
    problems = _problems(report)
    assert f"checkpoint at size 8 (id {second.id}): signed root does not match the leaves; the edit is in leaves 4-7" in problems
    assert f"checkpoint at size 4 (id {first.id})" not in problems  # the leaves before the edit still verify
    assert report.first_bad_checkpoint == second.id and report.first_bad_seq == 4


def test_swapping_two_leaves_is_detected(sign: Callable) -> None:
    first, second = _log(sign, 4, 8)
    rows = {seq: (bytes(raw), bytes(h), rid) for seq, raw, h, rid in AuditLeaf.objects.filter(seq__in=[1, 6]).values_list("seq", "leaf_bytes", "leaf_hash", "request_id")}
    _drop_triggers()
    for seq, other in ((1, 6), (6, 1)):
        raw, leaf_hash, request_id = rows[other]
        AuditLeaf.objects.filter(seq=seq).update(leaf_bytes=raw, leaf_hash=leaf_hash, request_id=request_id)
    _rebuild_tree()
    report = audit_verify()
    assert f"checkpoint at size 4 (id {first.id}): signed root does not match the leaves; the edit is in leaves 0-3" in _problems(report)
    assert report.first_bad_checkpoint == first.id and report.first_bad_seq == 0


def test_replaying_an_old_checkpoint_as_the_newest_is_detected(sign: Callable) -> None:
    first, second, third = _log(sign, 3, 6, 9)
    # re-insert the first checkpoint after the others (it then has the largest id)
    _sql("DELETE FROM audit_auditcheckpoint WHERE id = %s", [first.id])
    replayed = AuditCheckpoint.objects.create(
        size=first.size, root=first.root, note=first.note, created_at=first.created_at,
        previous_size=first.previous_size, consistency_proof=first.consistency_proof,
    )
    report = audit_verify()
    problems = _problems(report)
    assert (
        f"checkpoint at size 3 (id {replayed.id}) was inserted after the checkpoint at size 9 (id {third.id}): "
        "sizes only grow, so an older checkpoint was replayed or re-inserted"
    ) in problems
    assert f"checkpoint at size 6 (id {second.id}) was signed after a checkpoint at size 3, but no checkpoint row precedes it" in problems


def test_a_fork_two_checkpoints_of_one_size_with_different_roots_is_detected(sign: Callable, tmp_path: Path) -> None:
    """The operator rewrites the log and gets it signed again at the same size (here: the record
    outside the database is moved aside, as a second instance of the service would not have it).
    The checkpoint published before the rewrite shows the fork."""
    (published,) = _log(sign, 8)
    published_note = published.note
    _sql("DELETE FROM audit_auditcheckpoint")
    _forge_leaf(5)
    _rebuild_tree()
    Path(settings.AUDIT_SIGNED_HEAD_FILE).unlink()
    forked = sign()
    assert forked.size == published.size and bytes(forked.root) != bytes(published.root)
    report = audit_verify(against=checkpoint_parse_trusted(published_note))
    problems = _problems(report)
    assert (
        f"the supplied checkpoint at size 8 and the checkpoint at size 8 (id {forked.id}) sign the same size with "
        "different roots: the log forked"
    ) in problems
    assert "the supplied checkpoint at size 8: signed root does not match the leaves; the edit is in leaves 0-7" in problems


@on_postgres
def test_two_checkpoint_rows_of_one_size_with_different_roots_are_a_fork(sign: Callable) -> None:
    (published,) = _log(sign, 8)
    _forge_leaf(5)
    _rebuild_tree()
    _sql("ALTER TABLE audit_auditcheckpoint DROP CONSTRAINT audit_auditcheckpoint_size_key")
    Path(settings.AUDIT_SIGNED_HEAD_FILE).unlink()
    _sql("DELETE FROM audit_auditcheckpoint")  # out of the signer's way, then back
    forked = sign()
    restored = AuditCheckpoint.objects.create(
        size=published.size, root=published.root, note=published.note, created_at=published.created_at,
        previous_size=published.previous_size, consistency_proof=published.consistency_proof,
    )
    report = audit_verify()
    assert (
        f"checkpoint at size 8 (id {forked.id}) and checkpoint at size 8 (id {restored.id}) sign the same size "
        "with different roots: the log forked"
    ) in _problems(report)


def test_deleting_the_newest_checkpoint_is_detected(sign: Callable) -> None:
    first, newest = _log(sign, 4, 8)
    _sql("DELETE FROM audit_auditcheckpoint WHERE id = %s", [newest.id])
    report = audit_verify()
    assert "the newest checkpoint recorded outside the database (size 8) is not in the database: checkpoint rows were deleted" in _problems(report)
    _append(1)
    with pytest.raises(AuditLogTampered):
        checkpoint_create()


def test_truncating_the_log_to_an_earlier_checkpoint_is_detected(sign: Callable) -> None:
    _log(sign, 4, 8, 12)
    newest = AuditCheckpoint.objects.get(size=12)
    _sql("DELETE FROM audit_auditcheckpoint WHERE size = 12")
    _sql("DELETE FROM audit_auditleaf WHERE seq >= 8")
    _rebuild_tree()
    report = audit_verify()
    problems = _problems(report)
    assert "the newest checkpoint recorded outside the database (size 12) covers leaves 8-11, which are gone" in problems
    # the same log checked against the checkpoint published at size 12, with no record at all
    Path(settings.AUDIT_SIGNED_HEAD_FILE).unlink()
    assert audit_verify().ok  # the database alone is self-consistent: that is why the record and --against exist
    report = audit_verify(against=checkpoint_parse_trusted(newest.note))
    assert "the supplied checkpoint at size 12 covers leaves 8-11, which are gone" in _problems(report)


# --- audit_verify --against --------------------------------------------------------------------------


def test_against_a_published_checkpoint(sign: Callable, tmp_path: Path) -> None:
    first, second = _log(sign, 5, 9)
    _append(3)
    published = tmp_path / "checkpoint.note"
    published.write_text(first.note, encoding="utf-8")
    call_command("audit_verify", "--against", str(published))
    _forge_leaf(2)
    _rebuild_tree()
    with pytest.raises(CommandError, match="first bad sequence number: 0"):
        call_command("audit_verify", "--against", str(published))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "no blank line"),
        (b"\xff\xfe not text", "not UTF-8"),
        (b"erasure.example.org/audit-log\n3\nAAAA\n\n\xe2\x80\x94 x AAAA\n", "not a valid signed checkpoint"),
    ],
)
def test_against_a_malformed_file_is_a_clear_error(tmp_path: Path, content: bytes, reason: str) -> None:
    bad = tmp_path / "bad.note"
    bad.write_bytes(content)
    with pytest.raises(CommandError, match=reason):
        call_command("audit_verify", "--against", str(bad))


def test_against_a_checkpoint_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    from proofs.checkpoint import sign_checkpoint
    from proofs.keys import Signer

    stranger = Signer.generate(signing.key_name())
    note = sign_checkpoint(settings.AUDIT_LOG_ORIGIN, 1, merkle.leaf_hash(b"x"), [stranger])
    path = tmp_path / "stranger.note"
    path.write_text(note, encoding="utf-8")
    with pytest.raises(CommandError, match="no signature by a trusted key"):
        call_command("audit_verify", "--against", str(path))
    with pytest.raises(CommandError, match="cannot read the file"):
        call_command("audit_verify", "--against", str(tmp_path / "missing.note"))


def test_against_a_malformed_file_exits_non_zero_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.note"
    bad.write_text("not a checkpoint\n", encoding="utf-8")
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="compliance.settings",
        COMPLIANCE_DATA_DIR=str(tmp_path / "data"),
        AUDIT_SIGNING_KEY_FILE=str(settings.AUDIT_SIGNING_KEY_FILE),
        AUDIT_KEYRING_FILE=str(settings.AUDIT_KEYRING_FILE),
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "audit_verify", "--against", str(bad)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "not a valid signed checkpoint of this log" in result.stderr


def test_checkpoints_signed_before_the_chain_existed_still_verify_and_the_chain_starts_from_them(sign: Callable) -> None:
    from django.utils import timezone

    from compliance.audit.services import tree_root
    from proofs.checkpoint import sign_checkpoint

    _append(4)
    size, root = tree_root()
    legacy_note = sign_checkpoint(settings.AUDIT_LOG_ORIGIN, size, root, signing.current_signers())  # no previous line
    legacy = AuditCheckpoint.objects.create(size=size, root=root, note=legacy_note, created_at=timezone.now())
    _append(3)
    chained = sign()
    assert (chained.previous_size, legacy.previous_size) == (4, None)
    report = audit_verify()
    assert report.ok, report.problems
    # the first link names the legacy checkpoint, so deleting it is still noticed
    _sql("DELETE FROM audit_auditcheckpoint WHERE id = %s", [legacy.id])
    assert "checkpoint rows were deleted" in _problems(audit_verify())
