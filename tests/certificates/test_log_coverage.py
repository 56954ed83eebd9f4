"""No unprotected tail: a certificate's own issuance event ends up under a checkpoint a verifier can
fetch (signed right after issue, or by the beat task), and the certificate pages say which."""

# Fixtures are imported from tests.certificates.test_issue_helpers and named as test arguments.
# ruff: noqa: F811

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client, TestCase
from django.urls import reverse

from compliance.audit import signing
from compliance.audit.models import AuditCheckpoint, AuditLeaf
from compliance.audit.tasks import audit_checkpoint
from compliance.audit.verify import audit_verify
from compliance.certificates import services
from compliance.certificates.selectors import certificate_log_coverage
from compliance.erasure.services import status_token
from proofs import merkle
from proofs.checkpoint import parse_checkpoint, verify_checkpoint
from proofs.keys import KeyRing, generate_key
from proofs.offline import verify_certificate
from tests.certificates.test_issue_helpers import (  # noqa: F401 - fixtures
    ADA,
    BORIS,
    isolated_files,
    officer,
    verifying_request,
)

pytestmark = pytest.mark.django_db


def _issued_seq(request: Any) -> int:
    return AuditLeaf.objects.get(request_id=request.id, event_type="certificate.issued").seq


def _assert_every_event_verifies_over_http(request: Any) -> int:
    """Fetch the checkpoint and one inclusion proof per event of the request from the public API and
    verify them with the pure verifiers against the published keys; returns the checkpoint size."""
    client = Client()
    ring = KeyRing.from_json(client.get("/audit/keys/").content)
    checkpoint = verify_checkpoint(
        client.get("/api/v1/audit/checkpoint").content, ring.public_keys(), origin=settings.AUDIT_LOG_ORIGIN
    )
    events = list(AuditLeaf.objects.filter(request_id=request.id).order_by("seq").values_list("seq", "leaf_bytes", "event_type"))
    assert "certificate.issued" in {event_type for _, _, event_type in events}
    for seq, leaf_bytes, _ in events:
        assert seq < checkpoint.size
        body = client.get("/api/v1/audit/proof/inclusion", {"index": seq, "size": checkpoint.size}).json()
        proof = [base64.b64decode(value) for value in body["proof"]]
        merkle.verify_inclusion(merkle.leaf_hash(bytes(leaf_bytes)), seq, checkpoint.size, proof, checkpoint.root)
    return checkpoint.size


def test_checkpoint_task_after_issue_covers_the_issuance_event(officer: Any) -> None:
    request = verifying_request(ADA, officer)
    # Issue, but hold back what runs after commit (the on-demand checkpoint among it): the tail.
    with TestCase.captureOnCommitCallbacks(execute=False) as after_commit:
        certificate = services.certificate_issue(request=request, officer=officer)
    assert after_commit, "issuing enqueues work after commit"
    issued = _issued_seq(request)
    pending = certificate_log_coverage(certificate)
    assert not pending.covered and pending.issued_seq == issued
    assert AuditCheckpoint.objects.order_by("-size").first().size == issued  # the certificate's own checkpoint

    assert audit_checkpoint() == issued + 1  # what beat (or the enqueued run) does
    assert certificate_log_coverage(certificate).covered
    assert _assert_every_event_verifies_over_http(request) == issued + 1
    assert audit_checkpoint() is None  # nothing appended since: no new checkpoint
    assert audit_verify().ok


def test_issue_signs_a_checkpoint_over_its_own_event_after_commit(officer: Any) -> None:
    request = verifying_request(ADA, officer)
    with TestCase.captureOnCommitCallbacks(execute=True):
        certificate = services.certificate_issue(request=request, officer=officer)
    coverage = certificate_log_coverage(certificate)
    assert coverage.covered and coverage.checkpoint_size == _issued_seq(request) + 1
    _assert_every_event_verifies_over_http(request)
    # The certificate itself still verifies against its own (earlier) checkpoint.
    assert verify_certificate(bytes(certificate.envelope), signing.keyring()).ok


def test_certificate_pages_show_the_covering_checkpoint_or_that_it_is_pending(officer: Any) -> None:
    request = verifying_request(ADA, officer)
    with TestCase.captureOnCommitCallbacks(execute=False):
        services.certificate_issue(request=request, officer=officer)
    issued = _issued_seq(request)
    portal = Client()
    portal.force_login(officer)
    subject = Client()
    pages = (
        (portal, reverse("portal:detail", args=[request.reference])),
        (subject, reverse("public:status", args=[status_token(request)])),
    )
    for client, url in pages:
        page = client.get(url).content.decode()
        assert 'id="certificate-log" data-covered="false"' in page
        assert f"checkpoint pending. The certificate's issuance event (leaf {issued})" in page
        assert f"within {settings.AUDIT_CHECKPOINT_INTERVAL_S} seconds" in page
    audit_checkpoint()
    for client, url in pages:
        page = client.get(url).content.decode()
        assert 'id="certificate-log" data-covered="true"' in page
        assert f'<span id="certificate-log-size">{issued + 1}</span>' in page
        assert f"/api/v1/audit/proof/inclusion?index={issued}&amp;size={issued + 1}" in page
        snippet = re.search(r'<p [^>]*id="certificate-log".*?</p>', page, re.S)
        assert snippet is not None
        assert not [value for value in (ADA.email, ADA.full_name, ADA.phone, request.subject_ref) if value in snippet.group()]


def test_beat_signs_within_the_configured_interval() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]
    assert entry["task"] == "audit.checkpoint"
    assert entry["schedule"] == settings.AUDIT_CHECKPOINT_INTERVAL_S == 30  # the default
    assert entry["options"]["expires"] == settings.AUDIT_CHECKPOINT_INTERVAL_S


def test_certificate_signed_with_a_host_named_key_verifies_after_rotating_to_the_origin_name(
    officer: Any, isolated_files: Path
) -> None:
    # A deployment from before key name = origin: its only key is named by the origin's host.
    legacy_name = settings.AUDIT_LOG_ORIGIN.split("/")[0]
    private_text, vkey = generate_key(legacy_name)
    Path(settings.AUDIT_SIGNING_KEY_FILE).parent.mkdir(parents=True, exist_ok=True)
    Path(settings.AUDIT_SIGNING_KEY_FILE).write_text(private_text + "\n")
    Path(settings.AUDIT_KEYRING_FILE).write_text(KeyRing.of([vkey]).dumps())
    old = services.certificate_issue(request=verifying_request(ADA, officer), officer=officer)
    old_checkpoint = parse_checkpoint(AuditCheckpoint.objects.get(size=old.checkpoint_size).note)
    assert [s.name for s in old_checkpoint.signatures] == [legacy_name]

    call_command("audit_keygen", "--rotate")
    call_command("audit_keygen", "--retire", signing.keyring().entries[0].public_key.key_hint)
    assert [key.name for key in signing.keyring().current()] == [settings.AUDIT_LOG_ORIGIN]

    new = services.certificate_issue(request=verifying_request(BORIS, officer, ip="192.0.2.11"), officer=officer)
    new_checkpoint = parse_checkpoint(AuditCheckpoint.objects.get(size=new.checkpoint_size).note)
    assert [s.name for s in new_checkpoint.signatures] == [settings.AUDIT_LOG_ORIGIN]
    ring = signing.keyring()  # the retired key stays published
    for certificate in (old, new):
        result = verify_certificate(bytes(certificate.envelope), ring)
        assert result.ok, result.reason
    assert audit_verify().ok
