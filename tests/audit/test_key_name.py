"""C2SP: a log's checkpoint key is named by its origin. New keys are; keys named before (by the
origin's host) keep verifying what they signed, are flagged, and rotate to the origin name."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command

from compliance.audit import signing
from compliance.audit.models import AuditCheckpoint
from compliance.audit.services import audit_append, checkpoint_create
from compliance.audit.verify import audit_verify
from proofs.checkpoint import parse_checkpoint, verify_checkpoint
from proofs.keys import KeyRing, generate_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_keys(settings: Any, tmp_path: Path) -> Path:
    settings.AUDIT_SIGNING_KEY_FILE = tmp_path / "secrets" / "audit_signing.key"
    settings.AUDIT_KEYRING_FILE = tmp_path / "secrets" / "audit_keyring.json"
    return tmp_path


def _grow_and_sign(n: int = 3) -> list[str]:
    for i in range(n):
        audit_append(event_type="test.event", actor="system", outcome="ok", request_id=uuid.uuid4(), details={"i": i})
    created = checkpoint_create()
    assert created is not None
    return [signature.name for signature in parse_checkpoint(created.note).signatures]


def _keygen(*args: str) -> str:
    out = io.StringIO()
    call_command("audit_keygen", *args, stdout=out)
    return out.getvalue()


def test_new_keys_are_named_by_the_origin(own_keys: Path) -> None:
    signing.ensure_keys()
    assert [key.name for key in signing.keyring().current()] == [settings.AUDIT_LOG_ORIGIN]
    assert _grow_and_sign() == [settings.AUDIT_LOG_ORIGIN]
    note = AuditCheckpoint.objects.get().note
    # The signature line names the origin, exactly as the note's first line does.
    assert note.splitlines()[0] == settings.AUDIT_LOG_ORIGIN
    assert note.splitlines()[-1].startswith(f"\u2014 {settings.AUDIT_LOG_ORIGIN} ")
    report = audit_verify()
    assert report.ok and not [n for n in report.notes if "not named by the log origin" in n]


def test_host_named_key_keeps_verifying_is_flagged_and_rotates_to_the_origin_name(own_keys: Path) -> None:
    legacy_name = settings.AUDIT_LOG_ORIGIN.split("/")[0]
    private_text, vkey = generate_key(legacy_name)
    Path(settings.AUDIT_SIGNING_KEY_FILE).parent.mkdir(parents=True)
    Path(settings.AUDIT_SIGNING_KEY_FILE).write_text(private_text + "\n")
    Path(settings.AUDIT_KEYRING_FILE).write_text(KeyRing.of([vkey]).dumps())
    legacy_hint = signing.keyring().entries[0].public_key.key_hint

    assert _grow_and_sign() == [legacy_name]  # an existing key signs on until it is rotated
    report = audit_verify()
    assert report.ok
    assert any(f"current key {legacy_hint} is not named by the log origin" in n for n in report.notes)
    assert f"note: {legacy_hint} is not named by the log origin" in _keygen()

    _keygen("--rotate")  # the new key is named by the origin; both sign during the overlap
    assert _grow_and_sign() == [legacy_name, settings.AUDIT_LOG_ORIGIN]
    _keygen("--retire", legacy_hint)
    assert _grow_and_sign() == [settings.AUDIT_LOG_ORIGIN]
    assert "not named by the log origin" not in _keygen()

    # Every checkpoint of the chain still verifies with the published ring (the old key is retired,
    # not removed), and the full check passes with no key-name note left.
    ring = signing.keyring().public_keys()
    for row in AuditCheckpoint.objects.order_by("size"):
        verify_checkpoint(row.note, ring, origin=settings.AUDIT_LOG_ORIGIN)
    report = audit_verify()
    assert report.ok, report.problems
    assert not [n for n in report.notes if "not named by the log origin" in n]
