"""DSSE envelope and the v1 payload schema."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from compliance.audit.keys import KeyRing, Signer
from compliance.certificates.envelope import (
    PAYLOAD_TYPE,
    CertificateError,
    EnvelopeError,
    certificate_payload_bytes,
    envelope_bytes,
    open_envelope,
    pae,
    sign_envelope,
    validate_certificate_payload,
    verify_envelope,
)
from tests.certificates.factory import issue

SIGNER = Signer.from_seed("cert-2025", b"\x07" * 32)
OTHER = Signer.from_seed("cert-2026", b"\x08" * 32)
RING = KeyRing.of([SIGNER.public_key])


def test_pae_matches_the_dsse_specification_example() -> None:
    # https://github.com/secure-systems-lab/dsse/blob/master/protocol.md (test vector)
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_sign_and_verify_round_trip() -> None:
    envelope = sign_envelope(b'{"a":1}', SIGNER)
    assert envelope["payloadType"] == PAYLOAD_TYPE
    assert envelope["signatures"][0]["keyid"] == SIGNER.public_key.key_hint
    assert verify_envelope(envelope_bytes(envelope), RING) == b'{"a":1}'
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    assert SIGNER.public_key.verify(signature, pae(PAYLOAD_TYPE, b'{"a":1}'))


def test_payload_type_is_signed_too() -> None:
    envelope = sign_envelope(b"{}", SIGNER, payload_type="application/other")
    with pytest.raises(EnvelopeError, match="payloadType"):
        verify_envelope(envelope, RING)
    envelope["payloadType"] = PAYLOAD_TYPE
    with pytest.raises(EnvelopeError, match="does not verify"):
        verify_envelope(envelope, RING)


def test_unpinned_signer_is_refused_and_overlap_signatures_work() -> None:
    with pytest.raises(EnvelopeError, match="no valid signature by a pinned key"):
        verify_envelope(sign_envelope(b"{}", OTHER), RING)
    both = sign_envelope(b"{}", [OTHER, SIGNER])
    assert [e.public_key for e in open_envelope(both, RING).signed_by] == [SIGNER.public_key]
    bare = sign_envelope(b"{}", SIGNER)
    del bare["signatures"][0]["keyid"]  # keyid is only a hint: every pinned key is tried
    assert verify_envelope(bare, RING) == b"{}"


def test_every_byte_of_the_envelope_file_matters() -> None:
    data = envelope_bytes(sign_envelope(b'{"request":"ER-1","verdict":"pass"}', SIGNER))
    for position in range(len(data)):
        for replacement in {data[position] ^ 0x01, data[position] ^ 0x20}:
            tampered = data[:position] + bytes([replacement]) + data[position + 1 :]
            with pytest.raises(EnvelopeError):
                verify_envelope(tampered, RING)


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda p: p.update(schema="erasure-certificate/v2"), r"\$\.schema"),
        (lambda p: p.pop("models"), r"\$: missing models"),
        (lambda p: p.update(extra="x"), r"\$: unexpected extra"),
        (lambda p: p["request"].update(reference=""), r"\$\.request\.reference"),
        (lambda p: p["timeline"].update(completed=None), r"\$\.timeline\.completed"),
        (lambda p: p["timeline"].update(received="2025-03-03T09:30:00+01:00"), r"\$\.timeline\.received"),
        (lambda p: p["models"][0]["after"].update(sha256="ABC"), r"\$\.models\[0\]\.after\.sha256"),
        (lambda p: p["corpora"][0].update(records_removed=-1), r"records_removed"),
        (lambda p: p["verification"].update(verdict="maybe"), r"verdict"),
        (lambda p: p["verification"]["summary"][0].update(after=0.1), r"summary\[0\]\.after"),
        (lambda p: p["verification"]["summary"][1].update(passed="yes"), r"summary\[1\]\.passed"),
        (lambda p: p["audit"].update(leaves=[]), r"\$\.audit\.leaves"),
        (lambda p: p["audit"]["leaves"][1].update(index=p["audit"]["leaves"][0]["index"]), "listed twice"),
        (lambda p: p["audit"]["leaves"][0]["proof"].append("AAAA"), r"proof\[\d+\]"),
        (lambda p: p["audit"]["public_keys"][0].update(status="revoked"), r"public_keys\[0\]"),
    ],
)
def test_schema_errors_name_the_path(mutate, path: str) -> None:
    payload = copy.deepcopy(issue().payload)
    mutate(payload)
    with pytest.raises(CertificateError, match=path):
        validate_certificate_payload(payload)


def test_payload_bytes_are_canonical_and_measurements_are_strings() -> None:
    payload = issue().payload
    raw = certificate_payload_bytes(payload)
    assert raw == json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert payload["verification"]["summary"][0]["before"] == "0.62"
