"""Sharded fine-tuning (SISA): one LoRA adapter per shard, trained slice by slice, bit-reproducible.

    train_sharded(base, records, recipe)      every shard from scratch -> manifest + merged model
    retrain_without(base, manifest, records)  only the shards whose data changed, each from the
                                              checkpoint of the slice before its first changed slice

Determinism. Within a shard, records are ordered by their commitment (never by file order), each
slice s trains on slices 0..s with a fresh AdamW at a constant learning rate, and every random draw
(LoRA initialisation, batch order per epoch) is seeded from (recipe seed, shard, slice, epoch). With
one intra-op thread and torch's deterministic algorithms, training the same data from the same
checkpoint gives the same bits; so resuming at slice j from the stored checkpoint of slice j-1 gives
exactly what training every slice from scratch on the same data gives. That is what makes erasure
*exact*: the retrained shard equals the shard that training without the erased records would produce.

Adapters and checkpoints live in a content-addressed store (file name = SHA-256 of the bytes, written
under a temporary name and renamed), so shards that hold none of the erased records are reused as
they are and nothing is ever overwritten.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from proofs.datacommit import SortedSet, record_commitment
from unlearning_worker.adapters import name_the_loss
from unlearning_worker.files import write_atomic
from unlearning_worker.routed import ADAPTERS_DIR, MANIFEST_NAME, add_lora_updates
from unlearning_worker.sharded.recipe import FORMAT, ShardRecipe
from unlearning_worker.threads import torch_threads

Progress = Callable[[dict[str, Any]], None]


class ShardingError(ValueError):
    """Bad input to sharded training (no records, a duplicate id, a manifest that does not match)."""


@dataclass(frozen=True)
class Record:
    record_id: str
    text: str
    group: str = ""  # the value of the recipe's group_field ("" : placed by record id)

    @property
    def placement_key(self) -> str:
        return self.group or self.record_id

    @property
    def commitment(self) -> bytes:
        return record_commitment(self.record_id, self.text)


# --- content-addressed store -----------------------------------------------------------------------


class AdapterStore:
    """Adapter and checkpoint tensors by the SHA-256 of their safetensors bytes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ShardingError("an adapter is named by a 64-digit lower-case hex SHA-256")
        return self.root / sha256[:2] / f"{sha256}.safetensors"

    def put(self, state: dict[str, torch.Tensor]) -> str:
        from safetensors.torch import save

        data = save({k: v.detach().to("cpu").contiguous() for k, v in sorted(state.items())})
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        if final.is_file():
            return sha
        final.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(final, lambda fh: fh.write(data))
        return sha

    def get(self, sha256: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load

        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ShardingError(f"adapter {sha256[:12]} is not in the store") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ShardingError(f"adapter {sha256[:12]} does not match its hash (tampered or corrupt)")
        return load(data)


# --- layout ----------------------------------------------------------------------------------------


def layout(recipe: ShardRecipe, records: Sequence[Record]) -> list[list[list[Record]]]:
    """shard -> slice -> records, each slice sorted by record commitment."""
    seen: set[str] = set()
    grid: list[list[list[Record]]] = [[[] for _ in range(recipe.slices)] for _ in range(recipe.shards)]
    for record in records:
        if record.record_id in seen:
            raise ShardingError("two records share an id: placement needs unique record ids")
        seen.add(record.record_id)
        shard, slice_ = recipe.place(record.placement_key)
        grid[shard][slice_].append(record)
    for shard_slices in grid:
        for slice_records in shard_slices:
            slice_records.sort(key=lambda r: r.commitment)
    return grid


def slice_roots(slices: Sequence[Sequence[Record]]) -> list[dict[str, Any]]:
    out = []
    for records in slices:
        committed = SortedSet.of(r.commitment for r in records)
        out.append({"size": committed.size, "root": committed.root().hex()})
    return out


def shard_data(slices: Sequence[Sequence[Record]]) -> SortedSet:
    return SortedSet.of(r.commitment for records in slices for r in records)


# --- training --------------------------------------------------------------------------------------


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Deterministic kernels (on CUDA, cuBLAS needs a fixed workspace) and a fixed intra-op thread count."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch_threads(threads):
            yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _load_base(base_dir: Path, device: str = "cpu") -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    model = name_the_loss(AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, dtype=torch.float32)).to(device)  # type: ignore[arg-type]
    model.config.use_cache = False
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def target_modules(model: Any, recipe: ShardRecipe) -> list[str]:
    from unlearning_worker.modeling import linear_module_names

    return list(recipe.lora_target_modules) or linear_module_names(model)


def _wrap(model: Any, recipe: ShardRecipe, shard: int) -> Any:
    from peft import LoraConfig

    from unlearning_worker.adapters import wrap_lora

    config = LoraConfig(
        r=recipe.lora_rank, lora_alpha=recipe.lora_alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
        target_modules=target_modules(model, recipe),
        fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2",
    )
    torch.manual_seed(recipe.unit_seed("init", shard))
    return wrap_lora(model, config)


def _lora_state(peft_model: Any) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def _encode(tokenizer: Any, records: Sequence[Record], max_length: int) -> list[list[int]]:
    out = []
    for record in records:
        ids = tokenizer(record.text)["input_ids"] + [tokenizer.eos_token_id]
        out.append(ids[:max_length])
    return out


def _collate(batch: Sequence[Sequence[int]], pad_id: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(list(seq))
        mask[row, : len(seq)] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, ids.masked_fill(mask == 0, -100)


def train_shard(
    base_dir: Path,
    recipe: ShardRecipe,
    shard: int,
    slices: Sequence[Sequence[Record]],
    store: AdapterStore,
    *,
    start_slice: int = 0,
    start_checkpoint: str | None = None,
    progress: Progress | None = None,
    device: str = "cpu",
) -> list[str]:
    """Train one shard's adapter over slices start_slice..S-1; returns the checkpoint hash after each.

    start_slice > 0 resumes from `start_checkpoint`, the stored adapter after slice start_slice - 1.
    Bits are reproducible on the same device type and library versions (the manifest records both); a
    GPU replay of a CPU-trained shard is not expected to match bit for bit.
    """
    if len(slices) != recipe.slices or not 0 <= start_slice < recipe.slices:
        raise ShardingError("slices and start_slice do not match the recipe")
    if (start_slice > 0) != (start_checkpoint is not None):
        raise ShardingError("a resumed shard starts from the checkpoint of the slice before it")
    from peft import set_peft_model_state_dict

    with deterministic(recipe.threads):
        model, tokenizer = _load_base(base_dir, device)
        model = _wrap(model, recipe, shard)
        if start_checkpoint is not None:
            set_peft_model_state_dict(model, {k: v.to(device) for k, v in store.get(start_checkpoint).items()})
        params = [p for p in model.parameters() if p.requires_grad]
        encoded = [_encode(tokenizer, records, recipe.max_length) for records in slices]
        checkpoints: list[str] = []
        model.train()
        for s in range(start_slice, recipe.slices):
            data = [ids for part in encoded[: s + 1] for ids in part]
            if data:
                optimiser = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0, betas=(0.9, 0.98))
                for epoch in range(recipe.epochs_per_slice):
                    order = list(range(len(data)))
                    random.Random(recipe.unit_seed("order", shard, s, epoch)).shuffle(order)
                    for start in range(0, len(order), recipe.batch_size):
                        ids, mask, labels = _collate([data[i] for i in order[start : start + recipe.batch_size]],
                                                     tokenizer.pad_token_id, device)
                        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(params, 1.0)
                        optimiser.step()
                        optimiser.zero_grad(set_to_none=True)
                if progress is not None:
                    progress({"phase": "shard", "shard": shard, "slice": s, "loss": float(loss.detach())})
            checkpoints.append(store.put(_lora_state(model)))
    return checkpoints


# --- combining and writing -------------------------------------------------------------------------


def merge_into(model: Any, recipe: ShardRecipe, adapters: Sequence[dict[str, torch.Tensor]]) -> Any:
    """Add the adapters' low-rank updates to the base weights, in shard order, in float32: all of them
    ("sum") or their average ("mean")."""
    scale = recipe.lora_alpha / recipe.lora_rank
    if recipe.combine == "mean":
        scale /= max(1, len(adapters))
    try:
        return add_lora_updates(model, adapters, scale)
    except ValueError as exc:
        raise ShardingError(str(exc)) from None


def environment(device: str = "cpu") -> dict[str, str]:
    import peft
    import transformers

    machine = platform.machine() if device == "cpu" else f"{platform.machine()}/{torch.cuda.get_device_name(0)}"
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "machine": machine}


@dataclass
class Manifest:
    """What a sharded model version is made of (`sharding.json` in its directory)."""

    recipe: ShardRecipe
    base_sha256: str
    shards: list[dict[str, Any]]
    environment: dict[str, str] = field(default_factory=environment)
    corpus_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "recipe": self.recipe.to_dict(), "recipe_sha256": self.recipe.sha256(),
            "base_sha256": self.base_sha256, "corpus_sha256": self.corpus_sha256,
            "environment": self.environment, "shards": self.shards,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise ShardingError(f"not a {FORMAT} manifest")
        recipe = ShardRecipe.from_dict(data["recipe"])
        if recipe.sha256() != data.get("recipe_sha256"):
            raise ShardingError("the manifest's recipe does not match its recipe hash")
        shards = list(data["shards"])
        if len(shards) != recipe.shards:
            raise ShardingError("the manifest lists a different number of shards than its recipe")
        return cls(recipe=recipe, base_sha256=str(data["base_sha256"]), shards=shards,
                   environment=dict(data.get("environment", {})), corpus_sha256=str(data.get("corpus_sha256", "")))

    @classmethod
    def read(cls, model_dir: Path) -> Manifest | None:
        path = Path(model_dir) / MANIFEST_NAME
        if not path.is_file():
            return None
        return cls.from_dict(json.loads(path.read_text()))

    def adapters(self) -> list[str]:
        return [s["checkpoints"][-1] for s in self.shards]


def _shard_entry(index: int, slices: Sequence[Sequence[Record]], checkpoints: list[str]) -> dict[str, Any]:
    data = shard_data(slices)
    return {
        "index": index, "records": data.size, "data_root": data.root().hex(), "slices": slice_roots(slices),
        "checkpoints": checkpoints, "adapter": checkpoints[-1],
    }


def write_model(base_dir: Path, manifest: Manifest, store: AdapterStore, out_dir: Path) -> Path:
    """Write the model and the manifest to out_dir atomically (never over an existing one): the base with
    the adapters merged in, or, for combine "route", the base with the adapters beside it."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ShardingError(f"{out_dir.name} exists: model versions are never overwritten")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out_dir.parent))
    try:
        with deterministic(manifest.recipe.threads):
            model, tokenizer = _load_base(base_dir)
            if manifest.recipe.combine == "route":  # the base as it is, each adapter beside it
                adapters = tmp / ADAPTERS_DIR
                adapters.mkdir()
                for index, sha in enumerate(manifest.adapters()):
                    store.get(sha)  # checks the hash
                    shutil.copyfile(store.path(sha), adapters / f"{index}.safetensors")
            else:
                merge_into(model, manifest.recipe, [store.get(sha) for sha in manifest.adapters()])
            model.config.use_cache = True
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                with path.open("rb") as fh:
                    os.fsync(fh.fileno())
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def train_sharded(
    base_dir: Path, records: Sequence[Record], recipe: ShardRecipe, store: AdapterStore, *,
    base_sha256: str, corpus_sha256: str = "", progress: Progress | None = None, device: str = "cpu",
) -> Manifest:
    """Train every shard from scratch; returns the manifest (write_model makes the model directory)."""
    if not records:
        raise ShardingError("no records to train on")
    if not recipe.assignment_key:
        raise ShardingError("the recipe has no assignment key (use ShardRecipe.fresh)")
    grid = layout(recipe, records)
    shards = []
    for index, slices in enumerate(grid):
        checkpoints = train_shard(base_dir, recipe, index, slices, store, progress=progress, device=device)
        shards.append(_shard_entry(index, slices, checkpoints))
    return Manifest(recipe=recipe, base_sha256=base_sha256, shards=shards, corpus_sha256=corpus_sha256,
                    environment=environment(device))


@dataclass(frozen=True)
class RetrainPlan:
    """Per shard: None (reused as is) or the first slice whose data changed."""

    first_changed: list[int | None]

    @property
    def affected(self) -> list[int]:
        return [i for i, s in enumerate(self.first_changed) if s is not None]


def plan_retrain(manifest: Manifest, records: Sequence[Record]) -> RetrainPlan:
    """Compare each slice's commitment root with the manifest's: the first differing slice per shard."""
    grid = layout(manifest.recipe, records)
    first: list[int | None] = []
    for entry, slices in zip(manifest.shards, grid, strict=True):
        changed = [i for i, (old, new) in enumerate(zip(entry["slices"], slice_roots(slices), strict=True)) if old != new]
        first.append(changed[0] if changed else None)
    return RetrainPlan(first)


def retrain_without(
    base_dir: Path, manifest: Manifest, records: Sequence[Record], store: AdapterStore, *,
    base_sha256: str, corpus_sha256: str = "", progress: Progress | None = None, device: str = "cpu",
) -> tuple[Manifest, RetrainPlan, float]:
    """The manifest of the sharded model trained on `records` (the corpus after erasure), computed by
    retraining only the changed shards from their last unchanged checkpoint. Returns (manifest, plan,
    training seconds)."""
    if base_sha256 != manifest.base_sha256:
        raise ShardingError("the base model is not the one the shards were trained on")
    if not records:
        raise ShardingError("no records left to train on")
    grid = layout(manifest.recipe, records)
    plan = plan_retrain(manifest, records)
    started = time.perf_counter()
    shards = []
    for index, (entry, slices) in enumerate(zip(manifest.shards, grid, strict=True)):
        first = plan.first_changed[index]
        if first is None:
            shards.append(dict(entry))
            continue
        kept = list(entry["checkpoints"][:first])
        resumed = train_shard(base_dir, manifest.recipe, index, slices, store, start_slice=first,
                              start_checkpoint=kept[-1] if kept else None, progress=progress, device=device)
        shards.append(_shard_entry(index, slices, kept + resumed))
    seconds = time.perf_counter() - started
    return (Manifest(recipe=manifest.recipe, base_sha256=base_sha256, shards=shards, corpus_sha256=corpus_sha256,
                     environment=environment(device)), plan, seconds)
