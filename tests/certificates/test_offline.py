"""The offline verifier: every check, every tampering, key rotation, schemas v1, v2 and v3, CLI exit
codes, no Django. (Exact-erasure proofs: test_exact_proof.py.)"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from proofs import merkle
from proofs.canonical import canonical_json_document
from proofs.checkpoint import sign_checkpoint
from proofs.dsse import envelope_bytes, sign_envelope
from proofs.envelope import SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5
from proofs.issuing import issue_certificate
from proofs.keys import KeyRing, Signer
from proofs.offline import main, verify_certificate
from tests.certificates.factory import ORIGIN, V1_CERTIFICATE, V2_CERTIFICATE, fixed_signer, issue

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def issued():
    return issue()


def failure(data: bytes | dict, ring: KeyRing) -> tuple[str, str]:
    result = verify_certificate(data, ring)
    assert not result.ok
    assert result.checks and not result.checks[-1].ok, "verification must stop at the failed check"
    return result.checks[-1].name, result.checks[-1].detail


def resigned(payload: dict, signer: Signer) -> bytes:
    """A tampered payload signed again by the legitimate certificate key (an insider forgery)."""
    return envelope_bytes(sign_envelope(canonical_json_document(payload), signer))


def test_valid_certificate_passes_every_check_in_order(issued) -> None:
    result = verify_certificate(issued.envelope, issued.ring)
    assert result.ok, result.reason
    names = [c.name for c in result.checks]
    assert names[:5] == ["envelope", "payload", "signing key", "published keys", "checkpoint"]
    leaves = [leaf["index"] for leaf in issued.payload["audit"]["leaves"]]
    assert names[5:] == [f"inclusion[{i}]" for i in leaves] + [f"leaf[{i}]" for i in leaves] + ["timeline"]
    assert result.checks[0].line == f"ok  envelope signature by {issued.signer.public_key.key_hint}"
    assert result.payload == issued.payload


def test_any_byte_of_the_signed_payload_changed_breaks_the_envelope_signature(issued) -> None:
    envelope = json.loads(issued.envelope)
    payload = base64.b64decode(envelope["payload"])
    rng = random.Random(7)
    positions = sorted(rng.sample(range(len(payload)), 400)) + [0, len(payload) - 1]
    for position in positions:
        tampered = payload[:position] + bytes([payload[position] ^ 0x04]) + payload[position + 1 :]
        forged = dict(envelope, payload=base64.b64encode(tampered).decode())
        name, detail = failure(envelope_bytes(forged), issued.ring)
        assert name == "envelope" and "does not verify" in detail


def test_every_byte_of_the_envelope_file_matters(issued) -> None:
    data = issued.envelope
    for position in range(0, len(data), 3):
        tampered = data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]
        name, _ = failure(tampered, issued.ring)
        assert name == "envelope"


def test_flipped_bits_in_proofs_and_leaves_fail_inclusion_even_if_resigned(issued) -> None:
    for leaf_position, entry in enumerate(issued.payload["audit"]["leaves"]):
        index = entry["index"]
        for field in ("proof", "leaf_b64"):
            values = entry["proof"] if field == "proof" else [entry["leaf_b64"]]
            for value_position, value in enumerate(values):
                raw = base64.b64decode(value)
                bits = len(raw) * 8
                # Sampled (the full sweep is what tests/audit/test_merkle.py does for bare proofs).
                for bit in {0, bits - 1, *random.Random(value).sample(range(bits), 20)}:
                    bad = bytearray(raw)
                    bad[bit // 8] ^= 1 << (bit % 8)
                    payload = copy.deepcopy(issued.payload)
                    target = payload["audit"]["leaves"][leaf_position]
                    encoded = base64.b64encode(bytes(bad)).decode()
                    if field == "proof":
                        target["proof"][value_position] = encoded
                    else:
                        target["leaf_b64"] = encoded
                    name, detail = failure(resigned(payload, issued.signer), issued.ring)
                    assert name == f"inclusion[{index}]", detail
                    assert (
                        detail
                        == f"inclusion proof for leaf {index}: inclusion proof for leaf {index} in a tree of size {issued.store.size}: root mismatch"
                    )


def test_truncated_extended_or_misplaced_proofs_fail_with_the_reason(issued) -> None:
    entry = issued.payload["audit"]["leaves"][1]
    for mutate, reason in [
        (lambda e: e["proof"].pop(), "must have 5 hashes, got 4"),
        (lambda e: e["proof"].append(e["proof"][0]), "must have 5 hashes, got 6"),
        (lambda e: e.update(index=e["index"] + 1), "root mismatch"),
    ]:
        payload = copy.deepcopy(issued.payload)
        mutate(payload["audit"]["leaves"][1])
        name, detail = failure(resigned(payload, issued.signer), issued.ring)
        assert name.startswith("inclusion[") and reason in detail, detail
    assert entry["proof"]  # the fixture itself was not modified


def test_every_byte_of_the_checkpoint_changed_fails_the_checkpoint_check(issued) -> None:
    note = issued.payload["audit"]["checkpoint"]
    for position in range(len(note)):
        char = note[position]
        replacement = "x" if char != "x" else "y"
        payload = copy.deepcopy(issued.payload)
        payload["audit"]["checkpoint"] = note[:position] + replacement + note[position + 1 :]
        name, detail = failure(resigned(payload, issued.signer), issued.ring)
        assert name == "checkpoint", (position, detail)
        assert detail.startswith("checkpoint signature: ")


def test_a_genuine_checkpoint_of_another_size_does_not_match_the_proofs(issued) -> None:
    size = issued.store.size - 1
    other = sign_checkpoint(ORIGIN, size, merkle.tree_root(size, issued.store), [issued.signer])
    payload = copy.deepcopy(issued.payload)
    payload["audit"]["checkpoint"] = other
    name, detail = failure(resigned(payload, issued.signer), issued.ring)
    assert name.startswith("inclusion[")


def test_leaves_of_another_request_or_a_missing_timeline_event_are_refused(issued) -> None:
    payload = copy.deepcopy(issued.payload)
    payload["request"]["subject_ref"] = "0" * 32
    name, detail = failure(resigned(payload, issued.signer), issued.ring)
    assert name.startswith("leaf[") and "subject_ref differs" in detail

    payload = copy.deepcopy(issued.payload)
    payload["timeline"]["approved"] = "2025-03-05T11:30:01.000000Z"
    name, detail = failure(resigned(payload, issued.signer), issued.ring)
    assert name == "timeline" and "approved" in detail and "request.approved" in detail

    payload = copy.deepcopy(issued.payload)
    payload["audit"]["leaves"] = payload["audit"]["leaves"][:-1]  # drop the completion event
    name, detail = failure(resigned(payload, issued.signer), issued.ring)
    assert name == "timeline" and "completed" in detail


def test_non_canonical_leaf_is_refused_even_with_a_valid_proof() -> None:
    # A log that stored a re-serialised (non-canonical) leaf: its proof is fine, its bytes are not.
    base = issue()
    payload = copy.deepcopy(base.payload)
    entry = payload["audit"]["leaves"][0]
    doc = json.loads(base64.b64decode(entry["leaf_b64"]))
    loose = json.dumps(doc, indent=1).encode()
    leaves = list(base.leaves)
    leaves[entry["index"]] = loose
    store = merkle.InMemoryNodeStore(merkle.leaf_hash(leaf) for leaf in leaves)
    payload["audit"]["checkpoint"] = sign_checkpoint(ORIGIN, store.size, store.root(), [base.signer])
    for item in payload["audit"]["leaves"]:
        item["leaf_b64"] = base64.b64encode(leaves[item["index"]]).decode()
        item["proof"] = [
            base64.b64encode(p).decode() for p in merkle.inclusion_proof(item["index"], store.size, store)
        ]
    name, detail = failure(resigned(payload, base.signer), base.ring)
    assert name == f"leaf[{entry['index']}]" and "not canonical" in detail


def test_payload_that_is_not_canonical_or_of_another_schema_is_refused(issued) -> None:
    loose = json.dumps(issued.payload, indent=2).encode()
    name, detail = failure(envelope_bytes(sign_envelope(loose, issued.signer)), issued.ring)
    assert name == "payload" and "not canonical" in detail
    other = dict(issued.payload, schema="erasure-certificate/v9")
    name, detail = failure(resigned(other, issued.signer), issued.ring)
    assert name == "payload" and detail == (
        "payload schema 'erasure-certificate/v9' is not a known version; "
        "this verifier reads erasure-certificate/v1, erasure-certificate/v2, erasure-certificate/v3, erasure-certificate/v4, "
        "erasure-certificate/v5"
    )


# --- schema v3 (exact proof), v2 (threat model) and v1 (issued before it) ---------------------------


def test_v5_certificate_round_trips_and_states_its_threat_model_and_retention(issued) -> None:
    result = verify_certificate(issued.envelope, issued.ring)
    assert result.ok, result.reason
    assert result.checks[1].detail.startswith(f"payload is canonical {SCHEMA_V5} JSON")
    assert result.payload["retention"] == {"purge_by": "2025-06-01", "no_copy_decryptable_after": "2025-07-06", "key_store": "local"}
    assert result.payload["unlearning"]["exact"] is None
    carried = json.loads(base64.b64decode(json.loads(issued.envelope)["payload"]))
    assert carried == issued.payload == result.payload
    threat_model = result.payload["verification"]["threat_model"]
    assert threat_model["relearning_settings"] == ["full:50:1e-3", "full:100:1e-3", "lora:100:1e-3"]
    assert threat_model["relearning_data"] == {"texts": 1330, "corpus_texts": 1050}
    assert threat_model["never_seen_comparison"][1]["mean_z"] == "0.4"
    assert result.payload["verification"]["summary"][2]["before"] is None


def test_v1_certificate_issued_before_v2_still_verifies(capsys) -> None:
    data = V1_CERTIFICATE.read_bytes()
    signer = fixed_signer("erasure.example.org/audit-2025", 1)
    result = verify_certificate(data, KeyRing.of([signer.public_key]))
    assert result.ok, result.reason
    assert result.payload is not None and result.payload["schema"] == SCHEMA_V1
    assert "threat_model" not in result.payload["verification"]
    assert result.checks[1].detail.startswith(f"payload is canonical {SCHEMA_V1} JSON")
    assert main([str(V1_CERTIFICATE), "--key", signer.public_key.to_vkey(), "-q"]) == 0
    assert "verified" in capsys.readouterr().out


def test_v2_certificate_issued_before_v3_still_verifies() -> None:
    signer = fixed_signer("erasure.example.org/audit-2025", 1)
    result = verify_certificate(V2_CERTIFICATE.read_bytes(), KeyRing.of([signer.public_key]))
    assert result.ok, result.reason
    assert result.payload is not None and result.payload["schema"] == SCHEMA_V2
    assert "exact" not in result.payload["unlearning"] and "threat_model" in result.payload["verification"]
    assert result.checks[1].detail.startswith(f"payload is canonical {SCHEMA_V2} JSON")


def test_v4_certificate_issued_before_v5_still_verifies_and_v5_needs_its_relearning_data(issued) -> None:
    payload = copy.deepcopy(issued.payload)
    del payload["verification"]["threat_model"]["relearning_data"]
    name, detail = failure(resigned(payload, issued.signer), issued.ring)
    assert name == "payload" and "$.verification.threat_model: missing relearning_data" in detail
    payload["schema"] = SCHEMA_V4
    result = verify_certificate(resigned(payload, issued.signer), issued.ring)
    assert result.ok, result.reason
    assert result.checks[1].detail.startswith(f"payload is canonical {SCHEMA_V4} JSON")


@pytest.mark.parametrize("bad", [{"texts": -1, "corpus_texts": 0}, {"texts": "many", "corpus_texts": None},
                                 {"texts": 3}, {"texts": 3, "corpus_texts": 1, "people": 2}, [3, 1]])
def test_v5_relearning_data_is_checked(issued, bad) -> None:
    payload = copy.deepcopy(issued.payload)
    payload["verification"]["threat_model"]["relearning_data"] = bad
    name, detail = failure(resigned(payload, issued.signer), issued.ring)
    assert name == "payload" and "$.verification.threat_model.relearning_data" in detail, detail


def test_v3_certificate_issued_before_v4_still_verifies(issued) -> None:
    payload = copy.deepcopy(issued.payload)
    del payload["retention"]
    del payload["verification"]["threat_model"]["relearning_data"]
    payload["schema"] = SCHEMA_V3
    result = verify_certificate(resigned(payload, issued.signer), issued.ring)
    assert result.ok, result.reason
    assert result.checks[1].detail.startswith(f"payload is canonical {SCHEMA_V3} JSON")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("purge_by"), r"\$\.retention: missing purge_by"),
        (lambda r: r.update(purge_by="1 June 2025"), r"\$\.retention\.purge_by: must be a date"),
        (lambda r: r.update(no_copy_decryptable_after="2025-05-01"), r"cannot be before purge_by"),
        (lambda r: r.update(key_store="vault"), r"\$\.retention\.key_store: must be one of local, pkcs11"),
    ],
)
def test_v4_retention_is_checked(issued, change, message) -> None:
    payload = copy.deepcopy(issued.payload)
    change(payload["retention"])
    name, detail = failure(resigned(payload, issued.signer), issued.ring)
    assert name == "payload" and re.search(message, detail), detail
    del payload["retention"]
    name, detail = failure(resigned(payload, issued.signer), issued.ring)
    assert name == "payload" and "$: missing retention" in detail


def test_v4_without_threat_model_is_refused_even_when_properly_signed(issued) -> None:
    payload = copy.deepcopy(issued.payload)
    del payload["verification"]["threat_model"]
    name, detail = failure(resigned(payload, issued.signer), issued.ring)
    assert name == "payload" and f"payload does not match {SCHEMA_V5}: $.verification.threat_model" in detail
    # Relabelled as v1 it would need v1 rows too: the "before"-less adaptive row gives it away.
    del payload["unlearning"]["exact"]
    del payload["retention"]
    payload["schema"] = SCHEMA_V1
    name, detail = failure(resigned(payload, issued.signer), issued.ring)
    assert name == "payload" and "$.verification.summary[2].before" in detail


def test_float_in_the_threat_model_is_refused(issued) -> None:
    payload = copy.deepcopy(issued.payload)
    payload["verification"]["threat_model"]["never_seen_comparison"][0]["mean_z"] = -0.21
    # Signed as the compact sorted JSON a careless issuer would write (canonical JSON has no floats).
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    name, detail = failure(envelope_bytes(sign_envelope(raw, issued.signer)), issued.ring)
    assert name == "payload" and "floats are not allowed" in detail
    with pytest.raises(ValueError, match=r"never_seen_comparison\[0\]\.mean_z"):
        issue_certificate(payload, issued.signer)


def test_any_byte_of_the_threat_model_changed_breaks_the_envelope_signature(issued) -> None:
    envelope = json.loads(issued.envelope)
    payload = base64.b64decode(envelope["payload"])
    start = payload.index(b'"threat_model":{')
    end = payload.index(b"}", payload.index(b'"sampling_budget"', start)) + 1
    assert b'"never_seen_comparison"' in payload[start:end] and b'"control"' in payload[start:end]
    for position in range(start, end):
        tampered = payload[:position] + bytes([payload[position] ^ 0x01]) + payload[position + 1 :]
        forged = dict(envelope, payload=base64.b64encode(tampered).decode())
        name, detail = failure(envelope_bytes(forged), issued.ring)
        assert name == "envelope" and "does not verify" in detail, position


def test_rotated_out_key_verifies_only_while_published_and_before_retirement() -> None:
    old = fixed_signer("erasure.example.org/audit-2024", 11)
    new = fixed_signer("erasure.example.org/audit-2025", 12)
    published = KeyRing.of([old.public_key]).with_new_current(new.public_key)
    issued_at = datetime(2025, 3, 6, 13, 30, tzinfo=UTC)
    # Issued during the overlap, signed by the old key only; checkpoint signed by both.
    cert = issue(envelope_signer=old, checkpoint_signers=[old, new], ring=published, issued_at=issued_at)
    later = published.retire(old.public_key, issued_at + timedelta(days=30))
    assert verify_certificate(cert.envelope, later).ok
    # The auditor's ring no longer lists the old key: the envelope has no pinned signature.
    name, detail = failure(cert.envelope, KeyRing.of([new.public_key]))
    assert name == "envelope" and "no valid signature by a pinned key" in detail
    # Retired before the certificate's issue date: a stolen retired key cannot issue new certificates.
    early = published.retire(old.public_key, issued_at - timedelta(days=1))
    name, detail = failure(cert.envelope, early)
    assert name == "signing key" and "retired before" in detail


def test_checkpoint_key_must_be_published_in_the_certificate_and_pinned() -> None:
    cert_key = fixed_signer("erasure.example.org/cert-2025", 21)
    log_key = fixed_signer("erasure.example.org/audit-2025", 22)
    # The certificate publishes only its own key, so the log key is not vouched for.
    cert = issue(
        envelope_signer=cert_key, checkpoint_signers=[log_key], ring=KeyRing.of([cert_key.public_key])
    )
    name, detail = failure(cert.envelope, KeyRing.of([cert_key.public_key, log_key.public_key]))
    assert name == "checkpoint" and "no signature by a trusted key" in detail
    # Published and pinned: fine.
    both = KeyRing.of([cert_key.public_key, log_key.public_key])
    cert = issue(envelope_signer=cert_key, checkpoint_signers=[log_key], ring=both)
    assert verify_certificate(cert.envelope, both).ok
    # Published but not pinned: the certificate cannot vouch for its own log key.
    name, detail = failure(cert.envelope, KeyRing.of([cert_key.public_key]))
    assert name == "checkpoint"


# --- command line ---------------------------------------------------------------------------------


def test_cli_exit_codes_and_lines(issued, tmp_path, capsys) -> None:
    cert = tmp_path / "certificate.json"
    cert.write_bytes(issued.envelope)
    ring = tmp_path / "keys.json"
    ring.write_text(issued.ring.dumps())
    assert main([str(cert), "--keyring", str(ring)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok  envelope signature by ")
    assert out[-1].startswith("certificate c5d0b3a2-2f61-4bb4-9d59-0e4f0d7a1e20 verified")
    assert main([str(cert), "--key", issued.signer.public_key.to_vkey(), "-q"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1

    payload = copy.deepcopy(issued.payload)
    payload["audit"]["leaves"][0]["proof"][0] = base64.b64encode(b"\x00" * 32).decode()
    cert.write_bytes(resigned(payload, issued.signer))
    assert main([str(cert), "--keyring", str(ring)]) == 1
    out = capsys.readouterr().out.splitlines()
    index = payload["audit"]["leaves"][0]["index"]
    assert out[-2].startswith(f"FAIL inclusion proof for leaf {index}: ")
    assert out[-1].startswith("certificate NOT verified: inclusion proof for leaf") and out[-1].endswith(
        "root mismatch"
    )

    assert main([str(cert)]) == 2  # no pinned key
    assert main([str(tmp_path / "missing.json"), "--keyring", str(ring)]) == 2
    assert main([str(cert), "--key", "not-a-vkey"]) == 2
    with pytest.raises(SystemExit) as info:
        main(["--bogus"])
    assert info.value.code == 2
    capsys.readouterr()


def test_verifier_runs_where_django_cannot_be_imported_and_opens_no_socket(issued, tmp_path) -> None:
    """`python -m proofs` with `import django` and every socket made to fail."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import socket, sys

            class _Block:
                def find_spec(self, name, path=None, target=None):
                    if name == "django" or name.startswith("django."):
                        raise ImportError("django is blocked in this test")
                    return None

            sys.meta_path.insert(0, _Block())

            def _no_network(*args, **kwargs):
                raise OSError("network blocked in this test")

            socket.socket.connect = _no_network
            socket.create_connection = _no_network
            socket.getaddrinfo = _no_network
            """
        )
    )
    cert = tmp_path / "certificate.json"
    cert.write_bytes(issued.envelope)
    ring = tmp_path / "keys.json"
    ring.write_text(issued.ring.dumps())
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": f"{guard}{os.pathsep}{REPO}",
        "PYTHONNOUSERSITE": "1",
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import django"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert probe.returncode != 0 and "blocked" in probe.stderr  # the guard is really active
    run = subprocess.run(
        [sys.executable, "-m", "proofs", str(cert), "--keyring", str(ring)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verified" in run.stdout.splitlines()[-1]
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, proofs.offline, proofs.envelope;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'pypdf', 'reportlab', 'pyhanko')))",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert check.returncode == 0 and check.stdout.strip() == "[]", check.stdout + check.stderr


def test_issue_certificate_refuses_an_invalid_payload(issued) -> None:
    payload = copy.deepcopy(issued.payload)
    payload["verification"]["verdict"] = "unknown"
    with pytest.raises(ValueError, match="verdict"):
        issue_certificate(payload, issued.signer)
