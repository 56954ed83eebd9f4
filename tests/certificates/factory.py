"""Builds real, signed certificates over a real in-memory audit log (no Django, no mocks).

The leaves have the shape `compliance.audit.services.build_event` writes; other requests' events
are interleaved so that proofs are taken from the middle of a tree that is not a power of two.

`issue()` builds the current schema (v3; `exact=` adds an exact-erasure proof). `V1_CERTIFICATE`
and `V2_CERTIFICATE` are the certificates `issue()` produced before v2 and v3 existed (same seeds,
log and key), kept byte for byte: a certificate in the field must keep verifying.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from proofs import merkle
from proofs.canonical import canonical_bytes, rfc3339_utc
from proofs.checkpoint import sign_checkpoint
from proofs.datacommit import SortedSet
from proofs.envelope import TIMELINE_EVENT_TYPES
from proofs.issuing import audit_leaf_entry, build_certificate_payload, issue_certificate
from proofs.keys import KeyRing, Signer
from unlearning_worker.sharded.recipe import ShardRecipe  # pure: hashlib, hmac, json

ORIGIN = "erasure.example.org/audit-log"
ORGANISATION = "Example Language Models GmbH"
REQUEST_ID = "0b6f7c1e-4a0e-4c53-9d0e-2f5a5d1b8c41"
SUBJECT_REF = "9f86d081884c7d659a2feaa0c55ad015"
T0 = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)
V1_CERTIFICATE = Path(__file__).parent / "data" / "certificate-v1.json"
V2_CERTIFICATE = Path(__file__).parent / "data" / "certificate-v2.json"

# What the builder is given (floats, rows out of order); the payload holds decimal strings, sorted.
THREAT_MODEL: dict[str, Any] = {
    "families": ["candidate_rank", "direct_probe", "membership_inference", "quantization", "relearning"],
    "retries": 1,
    "sampling_budget": 20,
    "rank_candidates": 999,
    "relearning_settings": ["full:50:1e-3", "full:100:1e-3", "lora:100:1e-3"],
    "quantization_levels": ["int8", "int4"],
    "relearning_data": {"texts": 1330, "corpus_texts": 1050},
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
    "quantization_levels": [], "relearning_data": {"texts": None, "corpus_texts": None},
    "control": {"people": 0, "source": "none"}, "never_seen_comparison": [],
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
    method: str = "gradient_difference",
    exact: dict[str, Any] | None = None,
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
            "method": method,
            "spec_sha256": "e" * 64,
            "steps": 120,
            "stop_reason": "target_reached",
            "exact": copy.deepcopy(exact),
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
        retention={"purge_by": "2025-06-01", "no_copy_decryptable_after": "2025-07-06", "key_store": "local"},
    )
    return Issued(payload, issue_certificate(payload, signer), store, leaves, signer, ring)


# --- an exact erasure (sharded adapters), built with the pure library -------------------------------

EXACT_RECIPE = ShardRecipe(
    shards=3, slices=4, seed=7, assignment_key="5a" * 32, lora_rank=4, lora_alpha=8,
    lora_target_modules=("c_attn", "c_proj"), lr=3e-05, epochs_per_slice=2, batch_size=4, max_length=64,
)  # fmt: skip
EXACT_ENVIRONMENT = {
    "python": "3.12.3",
    "torch": "2.5.1",
    "transformers": "4.46.3",
    "peft": "0.13.2",
    "machine": "x86_64",
}
RESTARTS = (None, 2, 0)  # shard 0 reused; shard 1 restarts at slice 2, shard 2 at slice 0


@dataclass
class ExactWorld:
    """An exact erasure as the worker stores it (`UnlearningJob.exact_proof`, floats and all), with
    the adapter store it names and the sorted sets behind its tree heads."""

    proof: dict[str, Any]
    store: Path
    records: list[list[bytes]]  # per shard, the record commitments before the erasure
    after: list[SortedSet]  # per shard, the training data after the erasure
    removed: list[bytes]  # the subject's record commitments (shard 1 slice 2, shard 2 slice 0)

    def manifest(self) -> dict[str, Any]:
        """The new version's sharding.json (unlearning_worker.sharded.train.Manifest.to_dict)."""
        return {
            "format": "sharded-lora/v1", "recipe": EXACT_RECIPE.to_dict(), "recipe_sha256": EXACT_RECIPE.sha256(),
            "base_sha256": self.proof["base_sha256"], "corpus_sha256": self.proof["corpus_after_sha256"],
            "environment": EXACT_ENVIRONMENT,
            "shards": [
                {"index": row["index"], "records": row["after"]["records"], "data_root": row["after"]["data_root"],
                 "checkpoints": row["after"]["checkpoints"], "adapter": row["after"]["adapter"]}
                for row in self.proof["shards"]
            ],
        }  # fmt: skip

    def adapter_path(self, sha256: str) -> Path:
        return self.store / sha256[:2] / f"{sha256}.safetensors"


def put_adapter(store: Path, data: bytes) -> str:
    """Write bytes into a content-addressed store as AdapterStore does: <sha[:2]>/<sha>.safetensors."""
    sha256 = hashlib.sha256(data).hexdigest()
    path = store / sha256[:2] / f"{sha256}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha256


def exact_world(store: Path, seed: int = 15) -> ExactWorld:
    """K=3 shards of random 32-byte record commitments; two of the subject's records leave shards 1 and 2,
    which are retrained from the slice that held them; shard 0 is reused. Adapters are random bytes."""
    rng = random.Random(seed)
    slices = EXACT_RECIPE.slices
    records = [[rng.randbytes(32) for _ in range(count)] for count in (17, 20, 23)]
    removed = [records[1][5], records[2][0]]
    before = [SortedSet.of(shard) for shard in records]
    after = [SortedSet.of(c for c in shard if c not in removed) for shard in records]
    rows = []
    for k, start in enumerate(RESTARTS):
        old = [put_adapter(store, rng.randbytes(200 + 10 * s)) for s in range(slices)]
        new = (
            old
            if start is None
            else old[:start] + [put_adapter(store, rng.randbytes(300)) for _ in range(start, slices)]
        )
        rows.append({
            "index": k, "retrained_from_slice": start,
            "before": {"records": before[k].size, "data_root": before[k].root().hex(), "adapter": old[-1]},
            "after": {"records": after[k].size, "data_root": after[k].root().hex(), "adapter": new[-1], "checkpoints": new},
        })  # fmt: skip
    proof = {
        "method": "exact-shard-retrain", "format": "exact-shard-proof/v1",
        "recipe_sha256": EXACT_RECIPE.sha256(), "recipe": EXACT_RECIPE.to_dict(),
        "base_sha256": "1" * 64, "environment": dict(EXACT_ENVIRONMENT),
        "corpus_before_sha256": "c" * 64, "corpus_after_sha256": "d" * 64,
        "shards": rows,
        # in the order the worker found the records, not sorted: the certificate sorts them
        "removed": [{"commitment": c.hex(), "shards": [s.absence_proof(c)["neighbours"] for s in after]}
                    for c in sorted(removed, reverse=True)],
        "retrained_slices": sum(slices - s for s in RESTARTS if s is not None),
        "total_slices": EXACT_RECIPE.shards * slices, "train_seconds": 12.345,
    }  # fmt: skip
    # What the job row holds: the proof after a round trip through the JSONField.
    return ExactWorld(json.loads(json.dumps(proof)), store, records, after, removed)
