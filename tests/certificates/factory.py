"""Builds real, signed certificates over a real in-memory audit log (no Django, no mocks).

The leaves have the shape `compliance.audit.services.build_event` writes; other requests' events
are interleaved so that proofs are taken from the middle of a tree that is not a power of two.

`issue()` builds the current schema (v2). `V1_CERTIFICATE` is the certificate `issue()` produced
before v2 existed (same seeds, log and key), kept byte for byte: a v1 certificate in the field
must keep verifying.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from compliance.audit import merkle
from compliance.audit.canonical import canonical_bytes, rfc3339_utc
from compliance.audit.checkpoint import sign_checkpoint
from compliance.audit.keys import KeyRing, Signer
from compliance.certificates.envelope import (
    TIMELINE_EVENT_TYPES,
    audit_leaf_entry,
    build_certificate_payload,
    issue_certificate,
)

ORIGIN = "erasure.example.org/audit-log"
ORGANISATION = "Example Language Models GmbH"
REQUEST_ID = "0b6f7c1e-4a0e-4c53-9d0e-2f5a5d1b8c41"
SUBJECT_REF = "9f86d081884c7d659a2feaa0c55ad015"
T0 = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)
V1_CERTIFICATE = Path(__file__).parent / "data" / "certificate-v1.json"

# What the builder is given (floats, rows out of order); the payload holds decimal strings, sorted.
THREAT_MODEL: dict[str, Any] = {
    "families": ["candidate_rank", "direct_probe", "membership_inference", "quantization", "relearning"],
    "retries": 1,
    "sampling_budget": 20,
    "rank_candidates": 999,
    "relearning_settings": ["full:50:1e-3", "full:100:1e-3", "lora:100:1e-3"],
    "quantization_levels": ["int8", "int4"],
    "control": {"people": 10, "source": "held-out"},
    "never_seen_comparison": [
        {
            "attack": "relearning", "mean_z": 0.4, "control_mean_z": 0.05, "mean_z_band": 1.3,
            "rank1_share": 0.0, "control_rank1_share": 0.0, "top10_share": 0.1, "control_top10_share": 0.033,
        },
        {
            "attack": "candidate_rank", "mean_z": -0.21, "control_mean_z": 0.05, "mean_z_band": 1.3,
            "rank1_share": 0.0, "control_rank1_share": 0.0, "top10_share": 0.0, "control_top10_share": None,
        },
    ],
}  # fmt: skip
# What a report stored before the worker recorded a threat model (or a damaged one) certifies.
THREAT_MODEL_NOT_RECORDED: dict[str, Any] = {
    "families": [], "retries": 0, "sampling_budget": None, "rank_candidates": None, "relearning_settings": [],
    "quantization_levels": [], "control": {"people": 0, "source": "none"}, "never_seen_comparison": [],
}  # fmt: skip


def fixed_signer(name: str, seed_byte: int) -> Signer:
    return Signer.from_seed(name, bytes([seed_byte]) * 32)


def event(event_type: str, at: datetime, request_id: str, subject_ref: str, seq_hint: int) -> dict[str, Any]:
    return {
        "v": 1,
        "type": event_type,
        "actor": "user:7" if event_type == "request.approved" else "system",
        "outcome": "ok",
        "time": rfc3339_utc(at),
        "request_id": request_id,
        "subject_ref": subject_ref,
        "details": {"n": seq_hint},
    }


@dataclass
class Issued:
    payload: dict[str, Any]
    envelope: bytes
    store: merkle.InMemoryNodeStore
    leaves: list[bytes]
    signer: Signer
    ring: KeyRing


def make_log(
    noise_before: int = 9, noise_between: int = 3
) -> tuple[list[bytes], list[int], dict[str, datetime]]:
    """Leaf bytes of a log, the indexes of this request's leaves, and its timeline."""
    leaves: list[bytes] = []
    mine: list[int] = []
    timeline = {key: T0 + timedelta(days=i, hours=i) for i, key in enumerate(TIMELINE_EVENT_TYPES)}

    def noise(count: int) -> None:
        for _ in range(count):
            other = str(uuid.UUID(int=len(leaves) + 1))
            leaves.append(
                canonical_bytes(event("request.received", T0, other, f"{len(leaves):032x}", len(leaves)))
            )

    noise(noise_before)
    for key, event_type in TIMELINE_EVENT_TYPES.items():
        mine.append(len(leaves))
        leaves.append(canonical_bytes(event(event_type, timeline[key], REQUEST_ID, SUBJECT_REF, len(leaves))))
        noise(noise_between)
    return leaves, mine, timeline


def issue(
    *,
    envelope_signer: Signer | None = None,
    checkpoint_signers: list[Signer] | None = None,
    ring: KeyRing | None = None,
    issued_at: datetime | None = None,
    threat_model: dict[str, Any] | None = None,
    **log_options: int,
) -> Issued:
    signer = envelope_signer or fixed_signer("erasure.example.org/audit-2025", 1)
    ring = ring or KeyRing.of([signer.public_key])
    leaves, mine, timeline = make_log(**log_options)
    store = merkle.InMemoryNodeStore(merkle.leaf_hash(leaf) for leaf in leaves)
    size = store.size
    root = merkle.tree_root(size, store)
    note = sign_checkpoint(ORIGIN, size, root, checkpoint_signers or [signer])
    payload = build_certificate_payload(
        certificate_id="c5d0b3a2-2f61-4bb4-9d59-0e4f0d7a1e20",
        issued_at=issued_at or timeline["completed"] + timedelta(hours=1),
        organisation=ORGANISATION,
        log_origin=ORIGIN,
        request={
            "reference": "ER-2025-0042",
            "request_id": REQUEST_ID,
            "subject_ref": SUBJECT_REF,
            "ground": "art17-1a-no-longer-necessary",
            "decision": "erase",
            "legal_code": None,
        },
        timeline=timeline,
        models=[
            {
                "model": "support-assistant-7b",
                "before": {"version": "2025.02.1", "sha256": "a" * 64},
                "after": {"version": "2025.02.1-er42", "sha256": "b" * 64},
            }
        ],
        corpora=[
            {
                "corpus": "support-tickets",
                "before": {"version": "v17", "sha256": "c" * 64},
                "after": {"version": "v18", "sha256": "d" * 64},
                "records_removed": 14,
            }
        ],
        unlearning={
            "method": "gradient_difference",
            "spec_sha256": "e" * 64,
            "steps": 120,
            "stop_reason": "target_reached",
        },
        verification={
            "verdict": "pass",
            "decided_by": "user:7",
            "summary": [
                {
                    "attack": "verbatim_extraction",
                    "before": 0.62,
                    "after": 0.0,
                    "threshold": 0.05,
                    "passed": True,
                },
                {
                    "attack": "membership_inference_auc",
                    "before": 0.91,
                    "after": 0.52,
                    "threshold": 0.6,
                    "passed": True,
                },
                {  # an adaptive attack: never run on the base model, so no "before"
                    "attack": "relearning.rank1_share",
                    "before": None,
                    "after": 0.0,
                    "threshold": 0.05,
                    "passed": True,
                },
            ],
            "threat_model": copy.deepcopy(THREAT_MODEL if threat_model is None else threat_model),
        },
        leaves=[audit_leaf_entry(i, leaves[i], merkle.inclusion_proof(i, size, store)) for i in mine],
        checkpoint=note,
        keyring=ring,
    )
    return Issued(payload, issue_certificate(payload, signer), store, leaves, signer, ring)
