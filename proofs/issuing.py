"""Building a certificate from plain data (the Django side supplies it) and signing it.

    build_certificate_payload(...)       the payload of proofs.envelope's schema, validated
    issue_certificate(payload, signers)  its canonical bytes in a signed DSSE envelope (proofs.dsse)

Floats become exact decimal text (`decimal_text`): canonical JSON carries none.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from proofs.canonical import (
    canonical_json_document,
    rfc3339_utc,
)
from proofs.dsse import (
    envelope_bytes,
    sign_envelope,
)
from proofs.envelope import COMPARISON_FIGURES, SCHEMA_VERSION, CertificateError, validate_certificate_payload
from proofs.keys import (
    KeyRing,
    Signer,
    b64encode,
)


def _ts(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return rfc3339_utc(value)


def decimal_text(value: float | int | str) -> str:
    """A measured value as the decimal string the schema carries (shortest round-trip repr)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not math.isfinite(float(value)):
        raise CertificateError("measured values must be finite numbers")
    return repr(float(value)) if isinstance(value, float) else str(value)


def audit_leaf_entry(index: int, leaf_bytes: bytes, proof: Sequence[bytes]) -> dict[str, Any]:
    """One `audit.leaves` item from the stored leaf bytes and its inclusion proof."""
    return {
        "index": index,
        "leaf_b64": b64encode(bytes(leaf_bytes)),
        "proof": [b64encode(bytes(p)) for p in proof],
    }


def _with_decimals(row: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """`row` with its measured values under `keys` as decimal strings (None stays null)."""
    return {**row, **{k: decimal_text(row[k]) for k in keys if row.get(k) is not None}}


def _exact_part(exact: Any) -> Any:
    return exact_proof_text(exact) if isinstance(exact, Mapping) else exact


def _threat_model_text(threat_model: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison figures as decimal strings, rows sorted by attack."""
    rows = [_with_decimals(row, COMPARISON_FIGURES) for row in threat_model.get("never_seen_comparison", [])]
    return {**threat_model, "never_seen_comparison": sorted(rows, key=lambda row: str(row.get("attack")))}


def exact_proof_text(proof: Mapping[str, Any]) -> dict[str, Any]:
    """A stored exact proof (UnlearningJob.exact_proof) in the certificate's v3 shape; idempotent.

    `recipe.lr` and `train_seconds` become decimal strings (shortest round-trip repr, which `float()`
    reads back to the hashed number), `removed` is sorted by commitment. Nothing else changes: every
    other recipe value is hashed as it is. The input is not modified.
    """
    document = copy.deepcopy(dict(proof))
    recipe = document.get("recipe")
    if isinstance(recipe, dict):
        if isinstance(recipe.get("lr"), int | float) and not isinstance(recipe.get("lr"), bool):
            recipe["lr"] = decimal_text(float(recipe["lr"]))
        if isinstance(recipe.get("lora_target_modules"), tuple):
            recipe["lora_target_modules"] = list(recipe["lora_target_modules"])
    if isinstance(document.get("train_seconds"), int | float) and not isinstance(
        document.get("train_seconds"), bool
    ):
        document["train_seconds"] = decimal_text(document["train_seconds"])
    if isinstance(document.get("removed"), list):
        document["removed"] = sorted(
            document["removed"], key=lambda row: str(row.get("commitment")) if isinstance(row, dict) else ""
        )
    return document


def build_certificate_payload(
    *,
    certificate_id: str,
    issued_at: datetime | str,
    organisation: str,
    log_origin: str,
    request: Mapping[str, str | None],
    timeline: Mapping[str, datetime | str | None],
    models: Sequence[Mapping[str, Any]],
    corpora: Sequence[Mapping[str, Any]],
    unlearning: Mapping[str, Any],
    verification: Mapping[str, Any],
    leaves: Sequence[Mapping[str, Any]],
    checkpoint: str,
    keyring: KeyRing,
    retention: Mapping[str, str],
) -> dict[str, Any]:
    """Assemble and validate a v4 payload; datetimes become RFC 3339 strings, floats decimal strings.

    `unlearning` holds method, spec_sha256, steps, stop_reason and optionally `exact`: the stored exact
    proof (see `exact_proof_text`) or None (absent: None, an approximate erasure). `verification`
    holds verdict, decided_by, summary rows (a row's `before` may be None) and `threat_model` (its
    `never_seen_comparison` a list of rows with an `attack` each).
    `leaves` are `audit_leaf_entry(...)` dicts; `keyring` is the log's published key list.
    Raises CertificateError naming the offending path.
    """
    verification_part: dict[str, Any] = {
        **verification,
        "summary": [
            _with_decimals(row, ("before", "after", "threshold")) for row in verification.get("summary", [])
        ],
    }
    if isinstance(verification.get("threat_model"), Mapping):
        verification_part["threat_model"] = _threat_model_text(verification["threat_model"])
    payload: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "certificate_id": certificate_id,
        "issued_at": _ts(issued_at),
        "issuer": {"organisation": organisation, "log_origin": log_origin},
        "request": dict(request),
        "timeline": {key: _ts(value) for key, value in timeline.items()},
        "models": [dict(m) for m in models],
        "corpora": [dict(c) for c in corpora],
        "unlearning": {**unlearning, "exact": _exact_part(unlearning.get("exact"))},
        "verification": verification_part,
        "retention": dict(retention),
        "audit": {
            "leaves": sorted((dict(leaf) for leaf in leaves), key=lambda leaf: leaf["index"]),
            "checkpoint": checkpoint,
            "public_keys": keyring.to_json()["keys"],
        },
    }
    validate_certificate_payload(payload)
    try:
        canonical_json_document(payload)
    except ValueError as exc:
        raise CertificateError(str(exc)) from None
    return payload


def certificate_payload_bytes(payload: Mapping[str, Any]) -> bytes:
    """The signed bytes of a payload (validated first)."""
    validate_certificate_payload(dict(payload))
    return canonical_json_document(dict(payload))


def issue_certificate(payload: Mapping[str, Any], signers: Signer | Sequence[Signer]) -> bytes:
    """Validate, canonicalise, sign: the certificate file bytes (the DSSE envelope JSON)."""
    return envelope_bytes(sign_envelope(certificate_payload_bytes(payload), signers))


def published_key_ring(payload: Mapping[str, Any]) -> KeyRing:
    """The key list a certificate carries (untrusted until matched against a pinned ring)."""
    return KeyRing.from_json(list(payload["audit"]["public_keys"]))


def recipe_sha256(recipe: Mapping[str, Any]) -> str:
    """The recipe hash of a certificate's `exact.recipe`, as the worker computes it (ShardRecipe.sha256):
    SHA-256 of json.dumps(recipe, sort_keys=True, separators=(",", ":")) with `lr` as the float its
    text spells (the other values are hashed as carried)."""
    hashed = {**recipe, "lr": float(recipe["lr"])}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


