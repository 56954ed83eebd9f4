"""Offline checks of an exact erasure's proof (certificate schema v3 and later): the recipe's hash,
the retrained and reused shards, every removed record's absence from every shard's commitment and,
given the files (--shards, --model-dir), the adapters and the model's sharding manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proofs.canonical import (
    loads_limited,
)
from proofs.checks import VerificationResult
from proofs.datacommit import CommitmentError, verify_absence
from proofs.envelope import (
    EXACT_METHOD,
)
from proofs.issuing import recipe_sha256

MANIFEST_NAME = "sharding.json"  # unlearning_worker.sharded.train.MANIFEST_NAME


def _short(digest: str) -> str:
    return f"{digest[:16]}\u2026"


def exact_checks(
    result: VerificationResult, passed: Any, failed: Any, *, shards: Path | None, model_dir: Path | None
) -> None:
    """9. The exact-erasure proof, on a payload the earlier checks authenticated and schema-checked."""
    payload = result.payload
    exact = payload["unlearning"].get("exact") if payload is not None else None
    if exact is None:
        if payload is not None and (shards is not None or model_dir is not None):
            option = "--shards" if shards is not None else "--model-dir"
            raise failed(
                "exact erasure",
                f"{option} was given, but the certificate states no exact erasure "
                f"(method {payload['unlearning']['method']}, schema {payload['schema']}): nothing to check it against",
            )
        return
    recipe = exact["recipe"]
    slices = recipe["slices"]
    rows = exact["shards"]  # one per recipe shard, index = position (schema)

    # The recipe is the one its hash names (the hash the model version and the audit log record).
    actual = recipe_sha256(recipe)
    if actual != exact["recipe_sha256"]:
        raise failed(
            "exact recipe",
            f"exact recipe: the recipe hashes to {_short(actual)}, not the stated recipe_sha256 "
            f"{_short(exact['recipe_sha256'])}",
        )
    passed(
        "exact recipe",
        f"exact recipe {_short(actual)}: {recipe['shards']} shards x {slices} slices, LoRA rank {recipe['lora_rank']}",
    )

    # Reused shards are unchanged; retrained ones restarted inside the recipe; adapters end the checkpoints.
    retrained = []
    for row in rows:
        k, start, before, after = row["index"], row["retrained_from_slice"], row["before"], row["after"]
        if start is None:
            for key in ("adapter", "data_root", "records"):
                if before[key] != after[key]:
                    raise failed(
                        "exact shards",
                        f"shard {k} is marked reused (retrained_from_slice null) but its {key} changed "
                        f"({_describe(before[key])} -> {_describe(after[key])})",
                    )
        elif start >= slices:
            raise failed(
                "exact shards",
                f"shard {k} was retrained from slice {start}, outside the recipe's slices 0..{slices - 1}",
            )
        else:
            retrained.append(row)
        if len(after["checkpoints"]) != slices:
            raise failed(
                "exact shards",
                f"shard {k} lists {len(after['checkpoints'])} checkpoints, the recipe has {slices} slices",
            )
        if after["checkpoints"][-1] != after["adapter"]:
            raise failed(
                "exact shards",
                f"shard {k}'s adapter {_short(after['adapter'])} is not its last slice checkpoint "
                f"{_short(after['checkpoints'][-1])}",
            )
    which = ", ".join(str(row["index"]) for row in retrained) or "none"
    plural = "s" if len(retrained) > 1 else ""
    passed(
        "exact shards",
        f"{len(retrained)} of {len(rows)} shards retrained (shard{plural} {which}), "
        f"{len(rows) - len(retrained)} reused unchanged; every adapter is its shard's last slice checkpoint",
    )

    # The slice arithmetic: retraining a shard from slice s redoes its slices s..S-1.
    expected = sum(slices - row["retrained_from_slice"] for row in retrained)
    if exact["retrained_slices"] != expected:
        raise failed(
            "exact slices",
            f"retrained_slices is {exact['retrained_slices']}, but the retrained shards account for {expected}",
        )
    if exact["total_slices"] != len(rows) * slices:
        raise failed(
            "exact slices",
            f"total_slices is {exact['total_slices']}, but the recipe makes {len(rows)} x {slices} = {len(rows) * slices}",
        )
    passed("exact slices", f"{expected} of {exact['total_slices']} slice trainings redone")

    # Every removed record is absent from the data every shard of the new version was trained on.
    for i, item in enumerate(exact["removed"]):
        commitment = item["commitment"]
        for row, neighbours in zip(rows, item["shards"], strict=True):
            try:
                verify_absence(
                    {"commitment": commitment, "neighbours": neighbours},
                    size=row["after"]["records"],
                    root_hex=row["after"]["data_root"],
                )
            except CommitmentError as exc:
                raise failed(
                    f"absence[{i}]",
                    f"removed record {i} (commitment {_short(commitment)}) is not proven absent from shard "
                    f"{row['index']}'s training data ({row['after']['records']} records, root "
                    f"{_short(row['after']['data_root'])}): {exc}",
                ) from None
        passed(
            f"absence[{i}]",
            f"removed record {i} (commitment {_short(commitment)}) is absent from the training data of all "
            f"{len(rows)} shards",
        )

    # The files: the adapters exist and are what the proof names; the model is built from them.
    if shards is not None:
        hashed: dict[str, str | None] = {}
        for row in rows:
            k, adapter = row["index"], row["after"]["adapter"]
            path = shards / adapter[:2] / f"{adapter}.safetensors"
            if adapter not in hashed:
                hashed[adapter] = _file_sha256(path)
            found = hashed[adapter]
            if found is None:
                raise failed(
                    f"adapter[{k}]",
                    f"shard {k}'s adapter {_short(adapter)} is not in the adapter store ({path})",
                )
            if found != adapter:
                raise failed(
                    f"adapter[{k}]",
                    f"shard {k}'s adapter file {path} hashes to {_short(found)}, not to its name: the file was altered",
                )
            passed(
                f"adapter[{k}]",
                f"shard {k}'s adapter {_short(adapter)} is in the store and hashes to its name",
            )
    if model_dir is not None:
        problem = _manifest_problem(model_dir, exact)
        if problem:
            method = payload["unlearning"]["method"] if payload is not None else EXACT_METHOD
            if method != EXACT_METHOD:  # exact, then approximate: the new version is not the sharded model
                problem += f" (with {method} the new version is the approximate method's output)"
            raise failed("model dir", f"model directory {model_dir}: {problem}")
        passed(
            "model dir",
            f"model directory {model_dir}: {MANIFEST_NAME} lists exactly the proof's {len(rows)} adapters",
        )
    result.summary += (
        f"; exact erasure: {len(exact['removed'])} removed records proven absent from all {len(rows)} shards"
    )


def _describe(value: Any) -> str:
    return _short(value) if isinstance(value, str) else str(value)


def _file_sha256(path: Path) -> str | None:
    """SHA-256 of a file's bytes, read in blocks (adapters are megabytes); None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _manifest_problem(model_dir: Path, exact: Mapping[str, Any]) -> str:
    """Why the model directory's sharding manifest does not match the proof ("" when it does)."""
    path = model_dir / MANIFEST_NAME
    try:
        manifest = loads_limited(path.read_bytes())
    except OSError:
        return f"no readable {MANIFEST_NAME}: not the directory of a sharded model version"
    except (ValueError, UnicodeDecodeError) as exc:  # malformed, or beyond the limits (JSONLimitError)
        return f"{MANIFEST_NAME} is not JSON ({exc})"
    listed = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(listed, list) or not all(isinstance(entry, dict) for entry in listed):
        return f"{MANIFEST_NAME} has no list of shards"
    for key in ("recipe_sha256", "base_sha256"):
        if manifest.get(key) != exact[key]:
            return (
                f"{MANIFEST_NAME} names {key} {_describe(manifest.get(key))}, the proof {_short(exact[key])}"
            )
    if len(listed) != len(exact["shards"]):
        return f"{MANIFEST_NAME} lists {len(listed)} shards, the proof {len(exact['shards'])}"
    for k, (entry, row) in enumerate(zip(listed, exact["shards"], strict=True)):
        if entry.get("adapter") != row["after"]["adapter"]:
            return (
                f"{MANIFEST_NAME} shard {k} adapter is {_describe(entry.get('adapter'))}, "
                f"the proof's {_short(row['after']['adapter'])}"
            )
        if entry.get("checkpoints") != row["after"]["checkpoints"]:
            return f"{MANIFEST_NAME} shard {k} checkpoints differ from the proof's"
    return ""


