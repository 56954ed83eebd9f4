"""The recipe of a sharded fine-tune (SISA with one LoRA adapter per shard) and record placement.

A record's place is a keyed hash of its placement key: shard = h mod K, slice = (h div K) mod S. The
placement key is the record's group (the value of the recipe's `group_field`, e.g. the person or
conversation a record belongs to) or, without one, its id. Grouping puts all of one data subject's
records in one shard and one slice, so erasing them retrains one shard from one slice instead of
touching most shards. The key is part
of the recipe (random per training run, recorded), so placement is reproducible by anyone holding the
recipe and cannot be steered by whoever chooses record ids without it. Everything that determines the
adapters' bits is in the recipe, and its SHA-256 is what a certificate names.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

FORMAT = "sharded-lora/v1"
COMBINES = ("mean", "sum", "route")


def _plain_json(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    return value is None or isinstance(value, str | int | bool)


@dataclass(frozen=True)
class ShardRecipe:
    """Everything that determines the shard adapters, given the base model and the records."""

    shards: int = 8
    slices: int = 4
    seed: int = 0
    assignment_key: str = ""  # hex, 32 bytes; "" -> a fresh random key (see `fresh`)
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_target_modules: tuple[str, ...] = ()  # () : every linear / Conv1D layer of the blocks
    lr: float = 3e-3
    epochs_per_slice: int = 8  # passes over the data seen so far (slices 0..s) when training slice s
    batch_size: int = 16
    max_length: int = 256
    group_field: str = ""  # corpus field that places records together ("" : each record by its id)
    # How shard adapters make one model: "route" keeps them apart and serves each sequence from the shard
    # under which its input is most likely (unlearning_worker.sharded.routed; K forward passes); "mean"
    # adds the average of their low-rank updates to the base weights, "sum" adds them all (one plain
    # model directory). Measured (bench_sharded, docs/DESIGN-NOTES.md): only "route" keeps what the
    # fine-tune learned; "sum" wrecks the model and "mean" dilutes each shard's facts K-fold.
    combine: Literal["mean", "sum", "route"] = "route"
    threads: int = 1  # intra-op threads while training: bitwise results on CPU depend on it
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= 1024 or not 1 <= self.slices <= 256:
            raise ValueError("shards must be in 1..1024 and slices in 1..256")
        if self.assignment_key:
            try:
                key = bytes.fromhex(self.assignment_key)
            except ValueError as exc:
                raise ValueError("assignment_key must be hex") from exc
            if len(key) < 16:
                raise ValueError("assignment_key must be at least 16 bytes")
        if min(self.lora_rank, self.lora_alpha, self.epochs_per_slice, self.batch_size, self.max_length, self.threads) < 1:
            raise ValueError("lora_rank, lora_alpha, epochs_per_slice, batch_size, max_length and threads must be >= 1")
        if not 0.0 < self.lr < 1.0:
            raise ValueError("lr must be in (0, 1)")
        if not isinstance(self.group_field, str) or "\x00" in self.group_field or len(self.group_field) > 64:
            raise ValueError("group_field must be a field name (at most 64 characters)")
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {', '.join(COMBINES)}")
        if not _plain_json(self.extra):
            raise ValueError("extra holds strings, integers, booleans, lists and objects only (no floats: the recipe is "
                             "hashed and carried in certificates, whose canonical JSON has no floats)")
        if not isinstance(self.lora_target_modules, tuple) or not all(isinstance(m, str) and m for m in self.lora_target_modules):
            raise ValueError("lora_target_modules must be a tuple of module names")

    @classmethod
    def fresh(cls, **values: Any) -> ShardRecipe:
        """A recipe with a new random assignment key (unless one is given)."""
        values.setdefault("assignment_key", secrets.token_hex(32))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora_target_modules"] = list(self.lora_target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardRecipe:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown recipe field(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        if "lora_target_modules" in values:
            values["lora_target_modules"] = tuple(values["lora_target_modules"])
        return cls(**values)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def replace(self, **changes: Any) -> ShardRecipe:
        return replace(self, **changes)

    def place(self, record_id: str) -> tuple[int, int]:
        """(shard, slice) of a placement key (a record's group, or its id)."""
        if not self.assignment_key:
            raise ValueError("the recipe has no assignment key")
        digest = hmac.new(bytes.fromhex(self.assignment_key), record_id.encode("utf-8"), hashlib.sha256).digest()
        h = int.from_bytes(digest[:8], "big")
        return h % self.shards, (h // self.shards) % self.slices

    def unit_seed(self, *parts: object) -> int:
        """A 63-bit seed for one unit of work (e.g. ("init", shard) or ("slice", shard, slice, epoch))."""
        text = json.dumps([self.seed, *parts])
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
