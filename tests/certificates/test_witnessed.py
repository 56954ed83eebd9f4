"""The service with a witness: every committed checkpoint cosigned, refusals alerted, certificates issued
only on a checkpoint cosigned by the quorum, and checked against the witness keys offline."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import TestCase

from compliance.audit import witnessing
from compliance.audit.models import AuditCheckpoint, AuditCosignature, AuditLeaf, AuditWitnessAlert
from compliance.audit.services import audit_append, checkpoint_create
from compliance.audit.tasks import audit_checkpoint
from compliance.certificates import services
from compliance.certificates.models import Certificate
from compliance.erasure.models import Status
from proofs import offline
from proofs.cosignature import WitnessKey, verify_cosignatures
from proofs.witness import LogState, StateStore, Witness, serve
from tests.certificates import test_issue_helpers
from tests.certificates.test_issue_helpers import ADA, verifying_request

# The helpers' fixtures (isolated_files is autouse: fresh keys and artifact root per test).
isolated_files = test_issue_helpers.isolated_files
officer = test_issue_helpers.officer

pytestmark = pytest.mark.django_db


class RunningWitness:
    def __init__(self, state: Path) -> None:
        from compliance.audit import signing

        signing.ensure_keys()
        self.key = WitnessKey.generate("witness.example.org/w1")
        self.store = StateStore(state)
        self.witness = Witness(self.key, [k.public_key for k in signing.current_signers()], self.store)
        self.server: Any = None
        self.port = 0

    def start(self) -> None:
        self.server = serve(self.witness, "127.0.0.1", self.port)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def running_witness(settings: Any, tmp_path: Path, isolated_files: Path) -> Iterator[RunningWitness]:
    w = RunningWitness(tmp_path / "witness-state")
    w.start()
    settings.AUDIT_WITNESSES = [(w.url, w.key.cosigner.to_vkey())]
    settings.AUDIT_WITNESS_QUORUM = 1
    settings.AUDIT_WITNESS_TIMEOUT_S = 2
    yield w
    w.stop()


def _events(n: int) -> None:
    for i in range(n):
        audit_append(event_type="test.event", actor="system", outcome="ok", details={"i": i})


def _checkpoint() -> AuditCheckpoint:
    with TestCase.captureOnCommitCallbacks(execute=True):
        created = checkpoint_create()
    assert created is not None
    return created


def test_every_committed_checkpoint_is_cosigned_oldest_first(running_witness: RunningWitness) -> None:
    sizes = []
    for n in (3, 2, 5):
        _events(n)
        sizes.append(_checkpoint().size)
    assert witnessing.witness_submit_pending() == {running_witness.key.cosigner.key_hint: 3}
    assert list(AuditCosignature.objects.values_list("checkpoint_size", flat=True)) == sizes
    for checkpoint in AuditCheckpoint.objects.all():
        assert witnessing.quorum_met(checkpoint)
        found = verify_cosignatures(witnessing.cosigned_note(checkpoint), [running_witness.key.cosigner])
        assert len(found) == 1
    assert witnessing.witness_submit_pending() == {running_witness.key.cosigner.key_hint: 0}  # nothing new


def test_the_checkpoint_task_signs_and_sends_to_the_witness(running_witness: RunningWitness) -> None:
    _events(4)
    with TestCase.captureOnCommitCallbacks(execute=True):
        size = audit_checkpoint()
    assert size == AuditLeaf.objects.count()
    assert AuditCosignature.objects.filter(checkpoint_size=size).exists()


def test_a_lost_cosignature_row_is_recovered_from_the_witness_size(running_witness: RunningWitness) -> None:
    _events(3)
    _checkpoint()
    witnessing.witness_submit_pending()
    AuditCosignature.objects.all().delete()  # our record is stale; the witness remembers size 3
    _events(2)
    latest = _checkpoint()
    # It is told "I hold 3", sends 3 again from there (cosigned again), then 5 with a proof from 3.
    assert witnessing.witness_submit_pending() == {running_witness.key.cosigner.key_hint: 2}
    assert sorted(AuditCosignature.objects.values_list("checkpoint_size", flat=True)) == [3, latest.size]
    assert not AuditWitnessAlert.objects.exists()


def test_an_unreachable_witness_is_retried_later_not_alerted(running_witness: RunningWitness) -> None:
    running_witness.stop()
    _events(2)
    checkpoint = _checkpoint()
    result = witnessing.witness_submit_pending()
    assert "unreachable" in str(result[running_witness.key.cosigner.key_hint])
    assert not witnessing.quorum_met(checkpoint) and not AuditWitnessAlert.objects.exists()
    running_witness.start()
    assert witnessing.witness_submit_pending() == {running_witness.key.cosigner.key_hint: 1}
    assert witnessing.quorum_met(checkpoint)


def test_a_fork_is_refused_by_the_witness_and_alerted(running_witness: RunningWitness) -> None:
    """The witness saw another root at our size (the database was rewritten behind its back)."""
    _events(4)
    checkpoint = _checkpoint()
    running_witness.store.put(LogState(checkpoint_origin(checkpoint), checkpoint.size, b"\x07" * 32, "forged\n"))
    witnessing.witness_submit_pending()
    alert = AuditWitnessAlert.objects.get()
    assert (alert.status, alert.checkpoint_size) == (409, checkpoint.size) and "forked" in alert.reason
    assert AuditLeaf.objects.filter(event_type="audit.witness_refused").count() == 1
    assert not witnessing.quorum_met(checkpoint)
    witnessing.witness_submit_pending()  # the next beat: refused again, but alerted once
    assert AuditWitnessAlert.objects.count() == 1
    assert AuditLeaf.objects.filter(event_type="audit.witness_refused").count() == 1


def checkpoint_origin(checkpoint: AuditCheckpoint) -> str:
    return checkpoint.note.split("\n", 1)[0]


def test_no_certificate_without_the_quorum_then_issued_once_the_witness_cosigns(
    running_witness: RunningWitness, officer: Any
) -> None:
    request = verifying_request(ADA, officer)
    running_witness.stop()
    with pytest.raises(services.CertificateAwaitingWitness, match="cosigned by 1 witness"):
        services.certificate_issue(request=request, officer=officer)
    request.refresh_from_db()
    assert request.status == Status.COMPLETED and not Certificate.objects.exists()

    running_witness.start()
    with TestCase.captureOnCommitCallbacks(execute=True):
        certificate = services.certificate_issue(request=request, officer=officer)
    envelope = bytes(certificate.envelope)
    from compliance.audit import signing

    ring = signing.keyring()
    cosigner = running_witness.key.cosigner
    assert offline.verify_certificate(envelope, ring, witnesses=[cosigner]).ok
    other = WitnessKey.generate("witness.example.org/w2").cosigner
    refused = offline.verify_certificate(envelope, ring, witnesses=[other])
    assert not refused.ok and "cosigned by 0 of the given witnesses" in refused.reason
    both = offline.verify_certificate(envelope, ring, witnesses=[cosigner, other])
    assert not both.ok and offline.verify_certificate(envelope, ring, witnesses=[cosigner, other], witness_quorum=1).ok
    payload = json.loads(bytes(certificate.payload))
    assert len(verify_cosignatures(payload["audit"]["checkpoint"], [cosigner])) == 1


def test_the_offline_verifier_command_checks_the_witnesses(running_witness: RunningWitness, officer: Any, tmp_path: Path,
                                                           capsys: Any) -> None:
    request = verifying_request(ADA, officer)
    with TestCase.captureOnCommitCallbacks(execute=True):
        certificate = services.certificate_issue(request=request, officer=officer)
    path = tmp_path / "certificate.json"
    path.write_bytes(bytes(certificate.envelope))
    from compliance.audit import signing

    ring_file = tmp_path / "ring.json"
    ring_file.write_text(json.dumps(signing.keyring().to_json()))
    vkey = running_witness.key.cosigner.to_vkey()
    assert offline.main([str(path), "--keyring", str(ring_file), "--witness", vkey]) == 0
    assert "checkpoint cosigned by witness.example.org/w1" in capsys.readouterr().out
    other = WitnessKey.generate("witness.example.org/w2").cosigner.to_vkey()
    assert offline.main([str(path), "--keyring", str(ring_file), "--witness", other]) == 1
    assert offline.main([str(path), "--keyring", str(ring_file), "--witness", "nonsense"]) == 2
    assert offline.main([str(path), "--keyring", str(ring_file), "--witness", vkey, "--witness-quorum", "2"]) == 2


def test_the_beat_issues_a_certificate_that_waited_for_the_witness(running_witness: RunningWitness, officer: Any) -> None:
    request = verifying_request(ADA, officer)
    running_witness.stop()
    with pytest.raises(services.CertificateAwaitingWitness):
        services.certificate_issue(request=request, officer=officer)
    assert services.certificates_issue_pending() == []  # still no quorum: nothing issued, nothing raised
    running_witness.start()
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert services.certificates_issue_pending() == [request.reference]
    certificate = Certificate.objects.get(request=request)
    assert certificate.issued_by == officer


def test_the_portal_audit_page_shows_the_witnesses_and_alerts(running_witness: RunningWitness, officer: Any, client: Any) -> None:
    _events(3)
    checkpoint = _checkpoint()
    witnessing.witness_submit_pending()
    client.force_login(officer)
    page = client.get("/portal/audit/").content.decode()
    assert running_witness.key.cosigner.key_hint in page and f"size {checkpoint.size}" in page
    assert "A witness refused" not in page
    _events(2)
    forked = _checkpoint()
    running_witness.store.put(LogState(checkpoint_origin(forked), forked.size, b"\x07" * 32, "forged\n"))
    witnessing.witness_submit_pending()
    page = client.get("/portal/audit/").content.decode()
    assert "A witness refused the log" in page and "HTTP 409" in page


def test_without_witnesses_the_portal_says_so(officer: Any, client: Any, settings: Any) -> None:
    settings.AUDIT_WITNESSES, settings.AUDIT_WITNESS_QUORUM = [], 0
    client.force_login(officer)
    assert "No witness is configured" in client.get("/portal/audit/").content.decode()


def test_the_public_checkpoint_carries_the_cosignatures(running_witness: RunningWitness, client: Any) -> None:
    _events(3)
    _checkpoint()
    witnessing.witness_submit_pending()
    note = client.get("/api/v1/audit/checkpoint").content.decode()
    assert len(verify_cosignatures(note, [running_witness.key.cosigner])) == 1


def test_the_witness_command_shows_status_and_resolves_an_alert(running_witness: RunningWitness) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    _events(3)
    checkpoint = _checkpoint()
    out = StringIO()
    call_command("audit_witness", stdout=out)
    assert "1 checkpoint(s) cosigned now" in out.getvalue() and f"newest cosigned size {checkpoint.size}" in out.getvalue()
    _events(1)
    forked = _checkpoint()
    running_witness.store.put(LogState(checkpoint_origin(forked), forked.size, b"\x07" * 32, "forged\n"))
    out = StringIO()
    call_command("audit_witness", stdout=out)
    alert = AuditWitnessAlert.objects.get()
    assert f"ALERT {alert.pk}" in out.getvalue()
    call_command("audit_witness", "--resolve", str(alert.pk), stdout=StringIO())
    assert witnessing.open_alerts() == []
    assert AuditLeaf.objects.filter(event_type="audit.witness_alert_resolved").count() == 1
    with pytest.raises(CommandError, match="no open witness alert"):
        call_command("audit_witness", "--resolve", str(alert.pk))
