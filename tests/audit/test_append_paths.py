"""audit_append's two paths: one PostgreSQL statement (compliance/audit/pgappend.py) and the ORM.

The statement must build exactly the tree the Python reference builds (every node, the frontier, the
root at every size), must be what PostgreSQL actually runs, and must write nothing when the head is
missing or its frontier is not valid, leaving the ORM path to create or repair the head. On SQLite
the same tests run against the ORM path alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.db import IntegrityError, connection, transaction

from compliance.audit import services
from compliance.audit.models import AuditHead, AuditLeaf, AuditNode
from compliance.audit.services import audit_append
from compliance.audit.verify import audit_verify
from proofs import merkle

ROOT = Path(__file__).resolve().parents[2]
on_postgres = pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="needs PostgreSQL")

pytestmark = pytest.mark.django_db


def _append(i: int = 0) -> AuditLeaf:
    return audit_append(event_type="test.event", actor="system", outcome="ok", request_id=uuid.uuid4(), details={"i": i})


def reference_frontier(tree: merkle.CompactRange) -> bytes:
    return b"".join(bytes([level]) + node for level, node in tree.frontier())


def test_every_size_has_the_reference_nodes_frontier_and_root() -> None:
    reference = merkle.CompactRange()
    expected_nodes: dict[tuple[int, int], bytes] = {}
    for i in range(70):  # carries up to level 6
        leaf = _append(i)
        assert leaf.seq == i
        for level, index, node in reference.append(merkle.leaf_hash(bytes(leaf.leaf_bytes)))[1:]:
            expected_nodes[(level, index)] = node
        head = AuditHead.objects.get(id=1)
        assert (head.size, bytes(head.frontier)) == (i + 1, reference_frontier(reference))
        assert services.tree_root()[1] == reference.root()
    stored = {(level, index): bytes(node) for level, index, node in AuditNode.objects.values_list("level", "index", "hash")}
    assert stored == expected_nodes
    assert audit_verify().ok


def test_the_returned_leaf_is_the_stored_row() -> None:
    _append()
    leaf = audit_append(
        event_type="test.event", actor="user:7", outcome="ok", request_id=uuid.uuid4(), subject_ref="ab" * 16, details={"n": 3}
    )
    row = AuditLeaf.objects.get(seq=leaf.seq)
    assert leaf.seq == 1 and not leaf._state.adding
    assert (bytes(row.leaf_bytes), bytes(row.leaf_hash), row.event_type, str(row.request_id), row.created_at) == (
        bytes(leaf.leaf_bytes),
        bytes(leaf.leaf_hash),
        leaf.event_type,
        str(leaf.request_id),
        leaf.created_at,
    )
    assert bytes(row.leaf_hash) == merkle.leaf_hash(bytes(row.leaf_bytes))


@on_postgres
def test_on_postgresql_an_append_is_one_statement(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    _append()  # creates the head (ORM path)
    with django_assert_num_queries(1):
        _append(1)
    with django_assert_num_queries(1):
        leaf = _append(2)
    assert leaf.seq == 2 and AuditNode.objects.filter(level=1, index=0).exists()


def test_a_head_without_frontier_is_rebuilt_and_the_next_append_continues_the_tree() -> None:
    for i in range(11):
        _append(i)
    AuditHead.objects.filter(id=1).update(frontier=b"")  # a head written before migration 0003
    assert _append(11).seq == 11
    head = AuditHead.objects.get(id=1)
    assert head.size == 12 and len(bytes(head.frontier)) == 33 * 2  # 12 = 8 + 4
    assert _append(12).seq == 12
    report = audit_verify()
    assert report.ok, report.problems


def test_a_frontier_that_does_not_fit_the_size_writes_nothing_wrong() -> None:
    for i in range(6):
        _append(i)
    head = AuditHead.objects.get(id=1)
    frontier = bytearray(bytes(head.frontier))
    frontier[0] = 7  # 6 = 4 + 2: the first entry must be level 2
    AuditHead.objects.filter(id=1).update(frontier=bytes(frontier))
    assert _append(6).seq == 6
    assert AuditLeaf.objects.count() == 7
    report = audit_verify()
    assert report.ok, report.problems


def test_a_failed_append_writes_nothing_and_takes_the_callers_change_with_it() -> None:
    first = _append()
    head_before = AuditHead.objects.get(id=1)
    # A stray row where the next leaf goes: the append's insert must fail.
    AuditLeaf.objects.create(seq=1, leaf_bytes=b"{}", leaf_hash=merkle.leaf_hash(b"{}"), event_type="stray.row", created_at=first.created_at)
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditNode.objects.create(level=30, index=0, hash=b"\0" * 32)  # the caller's own write
        _append(1)
    head = AuditHead.objects.get(id=1)
    assert (head.size, bytes(head.frontier)) == (head_before.size, bytes(head_before.frontier))
    assert not AuditNode.objects.filter(level=30).exists()


@pytest.mark.django_db(transaction=True)
@on_postgres
def test_a_caller_killed_while_holding_the_head_lock_loses_only_its_unacknowledged_event() -> None:
    for i in range(3):
        _append(i)  # committed: acknowledged
    script = (
        "import django, sys, time, uuid; django.setup()\n"
        "from django.db import transaction\n"
        "from compliance.audit.services import audit_append\n"
        "with transaction.atomic():\n"
        "    audit_append(event_type='test.killed', actor='system', outcome='ok', request_id=uuid.uuid4())\n"
        "    print('appended', flush=True)\n"
        "    time.sleep(120)\n"
    )
    database = connection.settings_dict["NAME"]
    env = dict(os.environ, DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}", DJANGO_SETTINGS_MODULE="compliance.settings")
    caller = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert caller.stdout is not None and caller.stdout.readline().strip() == "appended"
    finally:
        caller.kill()  # dies holding the head lock, before its commit
        caller.wait(timeout=30)
    # The database ends the dead caller's transaction: its lock goes, its event was never acknowledged.
    assert _append(3).seq == 3
    assert list(AuditLeaf.objects.values_list("event_type", flat=True)) == ["test.event"] * 4
    report = audit_verify()
    assert report.ok, report.problems
