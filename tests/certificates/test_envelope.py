"""DSSE envelope and the payload schema (v3, and v2 and v1 as still read)."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from proofs.dsse import (
    PAYLOAD_TYPE,
    EnvelopeError,
    envelope_bytes,
    open_envelope,
    pae,
    sign_envelope,
    verify_envelope,
)
from proofs.envelope import (
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMA_V3,
    SCHEMA_V5,
    CertificateError,
    validate_certificate_payload,
)
from proofs.issuing import certificate_payload_bytes
from proofs.keys import KeyRing, Signer
from tests.certificates.factory import V1_CERTIFICATE, V2_CERTIFICATE, issue

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


def tm(payload: dict) -> dict:
    return payload["verification"]["threat_model"]


def seen(payload: dict) -> list:
    return tm(payload)["never_seen_comparison"]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda p: p.update(schema="erasure-certificate/v9"), r"\$\.schema: unknown schema version 'erasure"),
        (lambda p: p.pop("schema"), r"\$\.schema: unknown schema version None"),
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
        # v2: the threat model
        (lambda p: p["verification"].pop("threat_model"), r"\$\.verification\.threat_model: is required"),
        (
            lambda p: p["verification"].update(threat_model=[]),
            r"\$\.verification\.threat_model: must be an object",
        ),
        (lambda p: tm(p).pop("control"), r"threat_model: missing control"),
        (lambda p: tm(p).update(strength={}), r"threat_model: unexpected strength"),
        (lambda p: tm(p).update(families=[""]), r"threat_model\.families\[0\]"),
        (lambda p: tm(p).update(retries=-1), r"threat_model\.retries"),
        (lambda p: tm(p).update(retries=True), r"threat_model\.retries"),
        (lambda p: tm(p).update(sampling_budget=20.0), r"threat_model\.sampling_budget"),
        (lambda p: tm(p).update(rank_candidates="999"), r"threat_model\.rank_candidates"),
        (lambda p: tm(p).update(relearning_settings="full:50:1e-3"), r"relearning_settings"),
        (lambda p: tm(p)["quantization_levels"].append(4), r"quantization_levels\[2\]"),
        (lambda p: tm(p)["control"].update(people=-1), r"threat_model\.control\.people"),
        (lambda p: tm(p)["control"].update(source="random"), r"control\.source: must be one of"),
        (lambda p: seen(p)[0].update(mean_z=-0.21), r"never_seen_comparison\[0\]\.mean_z"),
        (lambda p: seen(p)[1].update(mean_z_band="wide"), r"never_seen_comparison\[1\]\.mean_z_band"),
        (lambda p: seen(p)[0].pop("top10_share"), r"never_seen_comparison\[0\]: missing top10_share"),
        (lambda p: seen(p).reverse(), r"must be sorted by attack"),
        (lambda p: seen(p)[1].update(attack="candidate_rank"), r"one row per attack"),
        (lambda p: p["verification"]["summary"][0].update(after=None), r"summary\[0\]\.after"),
        (lambda p: p["verification"]["summary"][0].update(before=0.62), r"summary\[0\]\.before"),
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
    assert payload["schema"] == SCHEMA_V5
    assert payload["unlearning"]["exact"] is None  # an approximate erasure
    assert payload["verification"]["summary"][0]["before"] == "0.62"
    assert payload["verification"]["summary"][2]["before"] is None  # adaptive attack: not run on the base


def test_threat_model_figures_are_decimal_strings_in_attack_order() -> None:
    threat_model = issue().payload["verification"]["threat_model"]
    assert [row["attack"] for row in threat_model["never_seen_comparison"]] == [
        "candidate_rank",
        "relearning",
    ]
    assert threat_model["never_seen_comparison"][0] == {
        "attack": "candidate_rank", "mean_z": "-0.21", "control_mean_z": "0.05", "mean_z_band": "1.3",
        "rank1_share": "0.0", "control_rank1_share": "0.0", "top10_share": "0.0", "control_top10_share": None,
    }  # fmt: skip
    assert threat_model["control"] == {"people": 10, "source": "held-out"}
    assert (threat_model["sampling_budget"], threat_model["rank_candidates"]) == (20, 999)


def test_v1_payload_is_still_valid_and_may_not_carry_v2_fields() -> None:
    envelope = json.loads(V1_CERTIFICATE.read_bytes())
    payload = json.loads(base64.b64decode(envelope["payload"]))
    assert payload["schema"] == SCHEMA_V1
    validate_certificate_payload(payload)
    with_threat_model = copy.deepcopy(payload)
    with_threat_model["verification"]["threat_model"] = issue().payload["verification"]["threat_model"]
    with pytest.raises(CertificateError, match=r"\$\.verification: unexpected threat_model"):
        validate_certificate_payload(with_threat_model)
    without_before = copy.deepcopy(payload)
    without_before["verification"]["summary"][0]["before"] = None  # v1 rows always had a "before"
    with pytest.raises(CertificateError, match=r"summary\[0\]\.before"):
        validate_certificate_payload(without_before)


def test_v2_payload_is_still_valid_and_may_not_carry_the_v3_exact_member() -> None:
    envelope = json.loads(V2_CERTIFICATE.read_bytes())
    payload = json.loads(base64.b64decode(envelope["payload"]))
    assert payload["schema"] == SCHEMA_V2
    validate_certificate_payload(payload)
    with_exact = copy.deepcopy(payload)
    with_exact["unlearning"]["exact"] = None
    with pytest.raises(CertificateError, match=r"\$\.unlearning: unexpected exact"):
        validate_certificate_payload(with_exact)
    # Relabelled as v3 it lacks the member v3 requires (null for an approximate erasure).
    payload["schema"] = SCHEMA_V3
    with pytest.raises(CertificateError, match=r"\$\.unlearning: missing exact"):
        validate_certificate_payload(payload)
