"""The certificate payload's schema and its validation (pure: no Django). The payload is signed in
a DSSE envelope (proofs.dsse) and built from plain data by proofs.issuing.

Payload (schema "erasure-certificate/v3", issued now; v2 and v1 are still read),
serialised with `proofs.canonical.canonical_json_document` (sorted keys, no whitespace,
UTF-8; strings, integers, booleans, null, lists, objects; no floats). Every object has exactly the
keys below.

    {
      "schema": "erasure-certificate/v3",    # or "erasure-certificate/v2" or "/v1"
      "certificate_id": str,                 # opaque, e.g. a UUID
      "issued_at": str,                      # RFC 3339 UTC, e.g. "2025-03-01T10:00:00.000000Z"
      "issuer": {"organisation": str, "log_origin": str},   # log_origin = the checkpoint origin line
      "request": {"reference": str, "request_id": str, "subject_ref": str,
                  "ground": str, "decision": str, "legal_code": str | null},
      "timeline": {"received": ts, "verified": ts | null, "approved": ts | null, "completed": ts},
      "models": [{"model": str, "before": VERSION, "after": VERSION}],
      "corpora": [{"corpus": str, "before": VERSION, "after": VERSION, "records_removed": int >= 0}],
      "unlearning": {"method": str, "spec_sha256": HEX64, "steps": int >= 0, "stop_reason": str,
                     "exact": EXACT | null},                 # v3 only, required (null: approximate)
      "verification": {"verdict": "pass" | "fail", "decided_by": str,
                       "summary": [{"attack": str, "before": DEC | null, "after": DEC,
                                    "threshold": DEC, "passed": bool}],
                       "threat_model": THREAT_MODEL},                      # v2 and v3, required
      "audit": {"leaves": [{"index": int >= 0, "leaf_b64": B64, "proof": [B64, ...]}],   # >= 1 leaf
                "checkpoint": str,           # the signed note text, verbatim
                "public_keys": [{"vkey": str, "status": "current" | "retired",
                                 "retired_at": ts | null}]}                           # >= 1 key
    }
    THREAT_MODEL = {                         # what "erased" was measured against
      "families": [str, ...],                # attack families that ran, e.g. "relearning"
      "retries": int >= 0,                   # reruns at stronger settings while an attack passed
      "sampling_budget": int | null, "rank_candidates": int | null,   # null: that family did not run
      "relearning_settings": [str, ...],     # "mode:steps:learning-rate", e.g. "lora:100:1e-3"
      "quantization_levels": [str, ...],     # e.g. "int8"
      "relearning_data": {"texts": int | null, "corpus_texts": int | null},   # v5, required: what the
                                             # relearning attacker fine-tuned on (texts in all, and of them
                                             # from the training corpus); null: not recorded
      "control": {"people": int >= 0, "source": "held-out" | "generated" | "none"},
      "never_seen_comparison": [{"attack": str,                        # sorted by attack, unique
                                 "mean_z": DEC | null, "control_mean_z": DEC | null,
                                 "mean_z_band": DEC | null,
                                 "rank1_share": DEC | null, "control_rank1_share": DEC | null,
                                 "top10_share": DEC | null, "control_top10_share": DEC | null}]}
    EXACT = {                                # exact erasure by retraining shard adapters (SISA)
      "method": "exact-shard-retrain", "format": "exact-shard-proof/v1",
      "recipe_sha256": HEX64,                # SHA-256 of the recipe as the worker hashes it (below)
      "recipe": {"shards": int >= 1, "slices": int >= 1, "seed": int, "assignment_key": hex,
                 "lora_rank": int >= 1, "lora_alpha": int >= 1, "lora_target_modules": [str, ...],
                 "lr": FLOAT, "epochs_per_slice": int >= 1, "batch_size": int >= 1,
                 "max_length": int >= 1, "group_field": str, "combine": str, "threads": int >= 1,
                 "extra": {...}},
      "base_sha256": HEX64,                  # tree hash of the model the adapters sit on
      "environment": {"python": str, "torch": str, "transformers": str, "peft": str, "machine": str},
      "corpus_before_sha256": HEX64, "corpus_after_sha256": HEX64,
      "shards": [{"index": k,                # one per recipe shard, in order (index = position)
                  "retrained_from_slice": int >= 0 | null,                  # null: reused unchanged
                  "before": {"records": int >= 0, "data_root": HEX64, "adapter": HEX64},
                  "after": {"records": int >= 0, "data_root": HEX64, "adapter": HEX64,
                            "checkpoints": [HEX64, ...]}}],                   # one per slice
      "removed": [{"commitment": HEX64,      # sorted by commitment, unique
                   "shards": [[NEIGHBOUR, ...], ...]}],   # per shard, in order: 0..2 neighbours
      "retrained_slices": int >= 0, "total_slices": int >= 0, "train_seconds": DEC >= 0}
    NEIGHBOUR = {"index": int >= 0, "leaf": HEX64, "path": [HEX64, ...]}
    VERSION = {"version": str, "sha256": HEX64};  HEX64 = 64 lower-case hex digits;
    DEC = decimal number as a string ("0.031", "1e-05"): measured values are never JSON floats, so
    every verifier compares the exact signed digits; FLOAT = a DEC that is Python's shortest
    round-trip repr of a binary float ("0.003", "3e-05"); B64 = standard base64 with padding.

v1 differs from v2 only in `verification`: it has no `threat_model`, and every summary row's `before`
is a DEC. v2 lets `before` be null for checks of attacks that never run on the base model
(candidate_rank, relearning, quantization), so those checks are no longer left out. v3 adds
`unlearning.exact`: the proof of an exact erasure (`UnlearningJob.exact_proof`, written by
compliance.registry.sharding.exact_erase) or null. Its two floats are carried as text: the recipe's `lr`
as FLOAT, so that `float(lr)` gives back the number the worker hashed: `recipe_sha256` is
SHA-256(json.dumps(recipe with lr as that float, sort_keys=True, separators=(",", ":"))); and
`train_seconds` as DEC. `removed[i].shards[k]` is the `neighbours` list of
`proofs.datacommit.SortedSet.absence_proof` against shard k's after-tree head (records,
data_root). `unlearning.method` is the proof's method, alone or followed by "+<approximate method>"
(records also sat in other training data); with `exact` null it does not name the exact method. The
schema checks shapes and counts; what the proof proves is checked by `proofs.offline`.

Audit leaves are the canonical JSON written by `compliance.audit.services.build_event`: every leaf of
a certificate carries the certificate's `request_id` and `subject_ref`; the timeline is backed by
leaves whose `type` is the one `TIMELINE_EVENT_TYPES` names and whose `time` is the same instant.

Envelope (DSSE v1, https://github.com/secure-systems-lab/dsse): a JSON object
`{"payloadType": PAYLOAD_TYPE, "payload": base64(payload bytes), "signatures": [{"keyid", "sig"}]}`
where each `sig` is Ed25519 over PAE(payloadType, payload) and `keyid` is `<key name>+<hex key id>`
(the vkey prefix, an unauthenticated lookup hint). The envelope file is that object as compact
canonical JSON. Signing the PAE rather than the JSON means the signature never depends on how the
envelope itself is formatted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from proofs.canonical import (
    parse_rfc3339_utc,
)
from proofs.keys import (
    KeyFormatError,
    KeyRingEntry,
    PublicKey,
    b64decode_strict,
)

SCHEMA_V1 = "erasure-certificate/v1"
SCHEMA_V2 = "erasure-certificate/v2"
SCHEMA_V3 = "erasure-certificate/v3"
# v4: + `retention`, when the service's own copy of the person's data is destroyed and from which day no
# copy anywhere (database backups hold no key; key-store backups expire) can be decrypted.
SCHEMA_V4 = "erasure-certificate/v4"
# v5: + the threat model's `relearning_data`, how much text the relearning attacker held: the verdict
# of an attacker who fine-tunes on 40 people's records differs from one who holds the rest of the corpus.
SCHEMA_V5 = "erasure-certificate/v5"
SCHEMA_VERSION = SCHEMA_V5  # what new certificates are issued as
# Every schema a verifier reads: a certificate stays verifiable for as long as the log keeps it.
SCHEMA_VERSIONS = (SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5)
RETENTION_KEYS = ("purge_by", "no_copy_decryptable_after", "key_store")
KEY_STORES = ("local", "pkcs11")

THREAT_MODEL_KEYS = (
    "families", "retries", "sampling_budget", "rank_candidates", "relearning_settings",
    "quantization_levels", "control", "never_seen_comparison",
)  # fmt: skip
RELEARNING_DATA_KEYS = ("texts", "corpus_texts")  # v5
CONTROL_SOURCES = ("held-out", "generated", "none")  # "none": the report recorded no control
# Subject figures next to the never-seen control's (candidate_rank's metrics, unlearning_worker).
COMPARISON_FIGURES = (
    "mean_z", "control_mean_z", "mean_z_band", "rank1_share", "control_rank1_share", "top10_share",
    "control_top10_share",
)  # fmt: skip

# v3 `unlearning.exact`: the proof compliance.registry.sharding.exact_erase writes. The method name is
# compliance.registry.selectors.EXACT_METHOD (not imported: this module stays free of Django).
EXACT_METHOD = "exact-shard-retrain"
EXACT_FORMAT = "exact-shard-proof/v1"
EXACT_KEYS = (
    "method", "format", "recipe_sha256", "recipe", "base_sha256", "environment", "corpus_before_sha256",
    "corpus_after_sha256", "shards", "removed", "retrained_slices", "total_slices", "train_seconds",
)  # fmt: skip
# ShardRecipe.to_dict() (unlearning_worker/sharded/recipe.py). Exactly these: the recipe hash covers every
# field, so a recipe with a field this schema does not know cannot be certified without a new schema.
RECIPE_KEYS = (
    "shards", "slices", "seed", "assignment_key", "lora_rank", "lora_alpha", "lora_target_modules", "lr",
    "epochs_per_slice", "batch_size", "max_length", "group_field", "combine", "threads", "extra",
)  # fmt: skip
RECIPE_POSITIVE = (
    "shards",
    "slices",
    "lora_rank",
    "lora_alpha",
    "epochs_per_slice",
    "batch_size",
    "max_length",
    "threads",
)
ENVIRONMENT_KEYS = ("python", "torch", "transformers", "peft", "machine")

# Which audit event type backs each timeline entry (the lead's state machine emits these).
TIMELINE_EVENT_TYPES: dict[str, str] = {
    "received": "request.received",
    "verified": "request.verified",
    "approved": "request.approved",
    "completed": "request.completed",
}
TIMELINE_REQUIRED = ("received", "completed")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$")
_KEY_HEX = re.compile(r"^(?:[0-9a-fA-F]{2}){16,}$")  # ShardRecipe: hex, at least 16 bytes
MAX_TEXT = 512  # generous for codes, names and references; bounds what a PDF line must hold


class CertificateError(ValueError):
    """The certificate payload does not match its schema (v1 or v2); names the JSON path."""


# --- DSSE -----------------------------------------------------------------------------------------


# --- payload schema -------------------------------------------------------------------------------


def _fail(path: str, reason: str) -> CertificateError:
    return CertificateError(f"{path}: {reason}")


def _object(value: Any, path: str, keys: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "must be an object")
    missing = [k for k in keys if k not in value]
    extra = sorted(set(value) - set(keys))
    if missing:
        raise _fail(path, f"missing {', '.join(missing)}")
    if extra:
        raise _fail(path, f"unexpected {', '.join(extra)}")
    return value


def _text(value: Any, path: str, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise _fail(path, f"must be a non-empty string of at most {MAX_TEXT} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise _fail(path, "must not contain control characters")


def _count(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(path, "must be a non-negative integer")


def _timestamp(value: Any, path: str, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str) or not value.endswith("Z"):
        raise _fail(path, "must be an RFC 3339 UTC timestamp ending in Z")
    try:
        parse_rfc3339_utc(value)
    except ValueError as exc:
        raise _fail(path, str(exc)) from None


def _day(value: Any, path: str) -> date:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise _fail(path, "must be a date, YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise _fail(path, str(exc)) from None


def _retention(value: Any, path: str) -> None:
    retention = _object(value, path, RETENTION_KEYS)
    purge_by = _day(retention["purge_by"], f"{path}.purge_by")
    after = _day(retention["no_copy_decryptable_after"], f"{path}.no_copy_decryptable_after")
    if after < purge_by:
        raise _fail(f"{path}.no_copy_decryptable_after", "cannot be before purge_by")
    if retention["key_store"] not in KEY_STORES:
        raise _fail(f"{path}.key_store", f"must be one of {', '.join(KEY_STORES)}")


def _hex64(value: Any, path: str) -> None:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise _fail(path, "must be 64 lower-case hex digits (SHA-256)")


def _b64(value: Any, path: str) -> bytes:
    try:
        return b64decode_strict(value, path)
    except KeyFormatError:
        raise _fail(path, "must be canonical standard base64") from None


def _version(value: Any, path: str) -> None:
    _object(value, path, ("version", "sha256"))
    _text(value["version"], f"{path}.version")
    _hex64(value["sha256"], f"{path}.sha256")


def _list(value: Any, path: str, non_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(path, "must be a list")
    if non_empty and not value:
        raise _fail(path, "must not be empty")
    return value


def _decimal(value: Any, path: str, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str) or not _DECIMAL.match(value):
        raise _fail(path, "must be a decimal number written as a string" + (" or null" if nullable else ""))


def _nullable_count(value: Any, path: str) -> None:
    if value is not None:
        _count(value, path)


def _threat_model(value: Any, path: str, *, v5: bool = False) -> None:
    """v2 `verification.threat_model`: the attacker the verdict was measured against (v5: and the data
    its relearning attack held)."""
    model = _object(value, path, THREAT_MODEL_KEYS + (("relearning_data",) if v5 else ()))
    if v5:
        data = _object(model["relearning_data"], f"{path}.relearning_data", RELEARNING_DATA_KEYS)
        for key in RELEARNING_DATA_KEYS:
            _nullable_count(data[key], f"{path}.relearning_data.{key}")
    for key in ("families", "relearning_settings", "quantization_levels"):
        for i, item in enumerate(_list(model[key], f"{path}.{key}")):
            _text(item, f"{path}.{key}[{i}]")
    _count(model["retries"], f"{path}.retries")
    _nullable_count(model["sampling_budget"], f"{path}.sampling_budget")
    _nullable_count(model["rank_candidates"], f"{path}.rank_candidates")
    control = _object(model["control"], f"{path}.control", ("people", "source"))
    _count(control["people"], f"{path}.control.people")
    if control["source"] not in CONTROL_SOURCES:
        raise _fail(f"{path}.control.source", f"must be one of {', '.join(CONTROL_SOURCES)}")
    attacks: list[str] = []
    for i, item in enumerate(_list(model["never_seen_comparison"], f"{path}.never_seen_comparison")):
        row = f"{path}.never_seen_comparison[{i}]"
        _object(item, row, ("attack", *COMPARISON_FIGURES))
        _text(item["attack"], f"{row}.attack")
        for key in COMPARISON_FIGURES:
            _decimal(item[key], f"{row}.{key}", nullable=True)
        attacks.append(item["attack"])
    # One row per attack in a fixed order, so equal threat models are equal bytes.
    if attacks != sorted(set(attacks)):
        raise _fail(f"{path}.never_seen_comparison", "must be sorted by attack, one row per attack")


def _integer(value: Any, path: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise _fail(path, "must be an integer" + ("" if minimum is None else f" >= {minimum}"))
    return value


def _float_text(value: Any, path: str) -> float:
    """FLOAT: a decimal string that is the shortest round-trip repr of a finite binary float.

    One spelling per number ("0.003", never "0.0030"), and `float(text)` is exactly the float the
    worker hashed, which is what lets a verifier recompute the recipe hash from the signed text.
    """
    _decimal(value, path)
    number = float(value)
    if not math.isfinite(number) or repr(number) != value:
        raise _fail(path, "must be a float written as its shortest round-trip repr, e.g. '0.003' or '3e-05'")
    return number


def _recipe(value: Any, path: str) -> dict[str, Any]:
    """`exact.recipe`: ShardRecipe.to_dict() with `lr` as FLOAT."""
    recipe = _object(value, path, RECIPE_KEYS)
    for key in RECIPE_POSITIVE:
        _integer(recipe[key], f"{path}.{key}", minimum=1)
    _integer(recipe["seed"], f"{path}.seed")
    if not isinstance(recipe["assignment_key"], str) or not _KEY_HEX.match(recipe["assignment_key"]):
        raise _fail(f"{path}.assignment_key", "must be hex, at least 16 bytes")
    for i, module in enumerate(_list(recipe["lora_target_modules"], f"{path}.lora_target_modules")):
        _text(module, f"{path}.lora_target_modules[{i}]")
    if not 0.0 < _float_text(recipe["lr"], f"{path}.lr") < 1.0:
        raise _fail(f"{path}.lr", "must be in (0, 1)")
    if not isinstance(recipe["group_field"], str):  # "" (placed by record id) is allowed
        raise _fail(f"{path}.group_field", "must be a string")
    _text(recipe["combine"], f"{path}.combine")
    if not isinstance(recipe["extra"], dict):  # its values obey the canonical JSON rules (no floats)
        raise _fail(f"{path}.extra", "must be an object")
    return recipe


def _neighbours(value: Any, path: str) -> None:
    """One absence proof's neighbours (datacommit.SortedSet.absence_proof): none (empty tree), one or two."""
    if len(_list(value, path)) > 2:
        raise _fail(path, "an absence proof has at most two neighbouring leaves")
    for j, item in enumerate(value):
        row = f"{path}[{j}]"
        _object(item, row, ("index", "leaf", "path"))
        _count(item["index"], f"{row}.index")
        _hex64(item["leaf"], f"{row}.leaf")
        for h, node in enumerate(_list(item["path"], f"{row}.path")):
            _hex64(node, f"{row}.path[{h}]")


def _shard_side(value: Any, path: str, keys: Sequence[str]) -> dict[str, Any]:
    side = _object(value, path, keys)
    _count(side["records"], f"{path}.records")
    _hex64(side["data_root"], f"{path}.data_root")
    _hex64(side["adapter"], f"{path}.adapter")
    return side


def validate_exact_proof(value: Any, path: str = "$.unlearning.exact") -> None:
    """v3 `unlearning.exact` (not null): types, hashes and counts. Raises CertificateError naming the path.

    Counts that make the proof well-formed are checked here (one shard row per recipe shard, listed in
    order; one absence proof per shard for every removed record); whether the proof holds (recipe
    hash, absence, reuse, slice arithmetic, adapter files) is the offline verifier's job.
    """
    proof = _object(value, path, EXACT_KEYS)
    if proof["method"] != EXACT_METHOD:
        raise _fail(f"{path}.method", f"must be {EXACT_METHOD!r}")
    if proof["format"] != EXACT_FORMAT:
        raise _fail(f"{path}.format", f"must be {EXACT_FORMAT!r}")
    for key in ("recipe_sha256", "base_sha256", "corpus_before_sha256", "corpus_after_sha256"):
        _hex64(proof[key], f"{path}.{key}")
    recipe = _recipe(proof["recipe"], f"{path}.recipe")
    environment = _object(proof["environment"], f"{path}.environment", ENVIRONMENT_KEYS)
    for key in ENVIRONMENT_KEYS:
        _text(environment[key], f"{path}.environment.{key}")
    shards = _list(proof["shards"], f"{path}.shards")
    if len(shards) != recipe["shards"]:
        raise _fail(f"{path}.shards", f"lists {len(shards)} shards, the recipe has {recipe['shards']}")
    for k, shard in enumerate(shards):
        row = f"{path}.shards[{k}]"
        _object(shard, row, ("index", "retrained_from_slice", "before", "after"))
        if _integer(shard["index"], f"{row}.index") != k:
            raise _fail(f"{row}.index", f"must be {k}: shards are listed in order")
        _nullable_count(shard["retrained_from_slice"], f"{row}.retrained_from_slice")
        _shard_side(shard["before"], f"{row}.before", ("records", "data_root", "adapter"))
        after = _shard_side(
            shard["after"], f"{row}.after", ("records", "data_root", "adapter", "checkpoints")
        )
        for j, checkpoint in enumerate(
            _list(after["checkpoints"], f"{row}.after.checkpoints", non_empty=True)
        ):
            _hex64(checkpoint, f"{row}.after.checkpoints[{j}]")
    commitments: list[str] = []
    for i, item in enumerate(_list(proof["removed"], f"{path}.removed")):
        row = f"{path}.removed[{i}]"
        _object(item, row, ("commitment", "shards"))
        _hex64(item["commitment"], f"{row}.commitment")
        per_shard = _list(item["shards"], f"{row}.shards")
        if len(per_shard) != len(shards):
            raise _fail(
                f"{row}.shards",
                f"holds {len(per_shard)} absence proofs, one per shard ({len(shards)}) is needed",
            )
        for k, neighbours in enumerate(per_shard):
            _neighbours(neighbours, f"{row}.shards[{k}]")
        commitments.append(item["commitment"])
    # One row per record in a fixed order, so equal proofs are equal bytes.
    if commitments != sorted(set(commitments)):
        raise _fail(f"{path}.removed", "must be sorted by commitment, one row per commitment")
    _count(proof["retrained_slices"], f"{path}.retrained_slices")
    _count(proof["total_slices"], f"{path}.total_slices")
    _decimal(proof["train_seconds"], f"{path}.train_seconds")
    if proof["train_seconds"].startswith("-"):
        raise _fail(f"{path}.train_seconds", "must not be negative")


def _exact_method(unlearning: dict[str, Any]) -> None:
    """The stated method and the proof agree: exact alone or "exact+<approximate>" iff a proof is carried."""
    method, exact = unlearning["method"], unlearning["exact"]
    names_exact = method == EXACT_METHOD or method.startswith(f"{EXACT_METHOD}+")
    if exact is None and names_exact:
        raise _fail(
            "$.unlearning.exact", f"is null, but the method {method!r} is exact erasure: the proof is missing"
        )
    if exact is not None and not names_exact:
        raise _fail(
            "$.unlearning.method",
            f"must be {EXACT_METHOD!r} or {EXACT_METHOD}+<method> when an exact proof is carried",
        )


def validate_certificate_payload(payload: Any) -> None:
    """Raise CertificateError naming the first path that breaks the payload's schema (v1 to v5)."""
    top = (
        "schema", "certificate_id", "issued_at", "issuer", "request", "timeline", "models", "corpora",
        "unlearning", "verification", "audit",
    )  # fmt: skip
    if not isinstance(payload, dict):
        raise _fail("$", "must be an object")
    schema = payload.get("schema")
    if schema not in SCHEMA_VERSIONS:
        raise _fail(
            "$.schema", f"unknown schema version {schema!r}; this verifier reads {', '.join(SCHEMA_VERSIONS)}"
        )
    v2 = schema in (SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5)  # each version keeps every rule of the one before
    v3 = schema in (SCHEMA_V3, SCHEMA_V4, SCHEMA_V5)
    v4 = schema in (SCHEMA_V4, SCHEMA_V5)
    v5 = schema == SCHEMA_V5
    _object(payload, "$", top + (("retention",) if v4 else ()))
    if v4:
        _retention(payload["retention"], "$.retention")
    _text(payload["certificate_id"], "$.certificate_id")
    _timestamp(payload["issued_at"], "$.issued_at")
    issuer = _object(payload["issuer"], "$.issuer", ("organisation", "log_origin"))
    _text(issuer["organisation"], "$.issuer.organisation")
    _text(issuer["log_origin"], "$.issuer.log_origin")
    request = _object(
        payload["request"],
        "$.request",
        ("reference", "request_id", "subject_ref", "ground", "decision", "legal_code"),
    )
    for key in ("reference", "request_id", "subject_ref", "ground", "decision"):
        _text(request[key], f"$.request.{key}")
    _text(request["legal_code"], "$.request.legal_code", nullable=True)
    timeline = _object(payload["timeline"], "$.timeline", tuple(TIMELINE_EVENT_TYPES))
    for key in TIMELINE_EVENT_TYPES:
        _timestamp(timeline[key], f"$.timeline.{key}", nullable=key not in TIMELINE_REQUIRED)
    for i, item in enumerate(_list(payload["models"], "$.models")):
        path = f"$.models[{i}]"
        _object(item, path, ("model", "before", "after"))
        _text(item["model"], f"{path}.model")
        _version(item["before"], f"{path}.before")
        _version(item["after"], f"{path}.after")
    for i, item in enumerate(_list(payload["corpora"], "$.corpora")):
        path = f"$.corpora[{i}]"
        _object(item, path, ("corpus", "before", "after", "records_removed"))
        _text(item["corpus"], f"{path}.corpus")
        _version(item["before"], f"{path}.before")
        _version(item["after"], f"{path}.after")
        _count(item["records_removed"], f"{path}.records_removed")
    unlearning_keys = ("method", "spec_sha256", "steps", "stop_reason") + (("exact",) if v3 else ())
    unlearning = _object(payload["unlearning"], "$.unlearning", unlearning_keys)
    _text(unlearning["method"], "$.unlearning.method")
    _hex64(unlearning["spec_sha256"], "$.unlearning.spec_sha256")
    _count(unlearning["steps"], "$.unlearning.steps")
    _text(unlearning["stop_reason"], "$.unlearning.stop_reason")
    if v3:
        if unlearning["exact"] is not None:
            validate_exact_proof(unlearning["exact"])
        _exact_method(unlearning)
    if v2 and isinstance(payload["verification"], dict) and "threat_model" not in payload["verification"]:
        raise _fail(
            "$.verification.threat_model",
            f"is required in {schema} (what the verification was measured against)",
        )
    verification_keys = ("verdict", "decided_by", "summary") + (("threat_model",) if v2 else ())
    verification = _object(payload["verification"], "$.verification", verification_keys)
    if verification["verdict"] not in ("pass", "fail"):
        raise _fail("$.verification.verdict", "must be 'pass' or 'fail'")
    _text(verification["decided_by"], "$.verification.decided_by")
    for i, item in enumerate(_list(verification["summary"], "$.verification.summary")):
        path = f"$.verification.summary[{i}]"
        _object(item, path, ("attack", "before", "after", "threshold", "passed"))
        _text(item["attack"], f"{path}.attack")
        # v2: no "before" for checks of attacks that never run on the base model.
        _decimal(item["before"], f"{path}.before", nullable=v2)
        _decimal(item["after"], f"{path}.after")
        _decimal(item["threshold"], f"{path}.threshold")
        if not isinstance(item["passed"], bool):
            raise _fail(f"{path}.passed", "must be true or false")
    if v2:
        _threat_model(verification["threat_model"], "$.verification.threat_model", v5=v5)
    audit = _object(payload["audit"], "$.audit", ("leaves", "checkpoint", "public_keys"))
    seen: set[int] = set()
    for i, item in enumerate(_list(audit["leaves"], "$.audit.leaves", non_empty=True)):
        path = f"$.audit.leaves[{i}]"
        _object(item, path, ("index", "leaf_b64", "proof"))
        _count(item["index"], f"{path}.index")
        if item["index"] in seen:
            raise _fail(f"{path}.index", f"leaf {item['index']} is listed twice")
        seen.add(item["index"])
        _b64(item["leaf_b64"], f"{path}.leaf_b64")
        for j, node in enumerate(_list(item["proof"], f"{path}.proof")):
            if len(_b64(node, f"{path}.proof[{j}]")) != 32:
                raise _fail(f"{path}.proof[{j}]", "must be a 32-byte hash")
    if not isinstance(audit["checkpoint"], str) or not audit["checkpoint"]:
        raise _fail("$.audit.checkpoint", "must be the signed checkpoint note text")
    for i, item in enumerate(_list(audit["public_keys"], "$.audit.public_keys", non_empty=True)):
        path = f"$.audit.public_keys[{i}]"
        _object(item, path, ("vkey", "status", "retired_at"))
        try:
            KeyRingEntry.from_json(item)
        except KeyFormatError as exc:
            raise _fail(path, str(exc)) from None


__all__ = [
    "COMPARISON_FIGURES",
    "CONTROL_SOURCES",
    "ENVIRONMENT_KEYS",
    "EXACT_FORMAT",
    "EXACT_KEYS",
    "EXACT_METHOD",
    "RECIPE_KEYS",
    "RELEARNING_DATA_KEYS",
    "SCHEMA_V1",
    "SCHEMA_V2",
    "SCHEMA_V3",
    "SCHEMA_V4",
    "SCHEMA_V5",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "THREAT_MODEL_KEYS",
    "TIMELINE_EVENT_TYPES",
    "CertificateError",
    "PublicKey",
    "validate_certificate_payload",
    "validate_exact_proof",
]
