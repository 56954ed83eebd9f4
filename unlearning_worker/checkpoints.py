"""What a run writes: resumable checkpoints (bound to the spec and the data by a fingerprint) and the
output directory with its manifest and weight hashes, each written atomically."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from unlearning_worker.data import ForgetItem, RetainItem
from unlearning_worker.files import write_atomic
from unlearning_worker.modeling import (
    is_checkpointing,
    set_checkpointing,
)

MANIFEST_FILE = "unlearning_manifest.json"


def data_fingerprint(model_dir: Path, forget: list[ForgetItem], retain: list[RetainItem],
                     relearning: Sequence[str] = (), read: Sequence[Any] = ()) -> str:
    """Identifies the inputs a checkpoint belongs to (hash only: no PII is stored with it). `read`: what
    the in-run utility checks read, JSON-serialisable (the engine passes the retain items whose
    perplexity they read, engine.utility_indices, and the retain probes whose answers they read, the
    verdict's question about a seeded set of people or those items replayed): the checkpoint's history
    and its last good step were read over them, so a checkpoint whose checks read other items or other
    people (written by code that chose them otherwise) does not resume; the run starts again instead."""
    digest = hashlib.sha256()
    for name in sorted(p.name for p in model_dir.iterdir() if p.is_file()):
        stat = (model_dir / name).stat()
        digest.update(f"{name}:{stat.st_size}".encode())
    digest.update((model_dir / "config.json").read_bytes() if (model_dir / "config.json").exists() else b"")
    for item in forget:
        digest.update(json.dumps([item.subject_key, item.prompt, item.completion, item.pii_spans, item.pri]).encode())
    for r in retain:
        digest.update(json.dumps([r.prompt, r.completion, r.pii_spans, r.subject_key, r.subject_name]).encode())
    if relearning:  # the in-loop attacker's texts, one by one (a run without them keeps its earlier fingerprint)
        digest.update(b"relearning")
        for text in relearning:
            digest.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    digest.update(b"read" + json.dumps(list(read)).encode())
    return digest.hexdigest()


def atomic_torch_save(obj: Any, path: Path) -> None:
    write_atomic(path, lambda fh: torch.save(obj, fh))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_output(
    model: Any, tokenizer: Any, out_dir: Path, manifest: dict[str, Any], *, state_dict: dict[str, Any] | None = None
) -> dict[str, str]:
    """Write to a temporary sibling, fsync, hash, then rename: out_dir is complete or absent. `state_dict`:
    the weights to write when the model's own are sharded (unlearning_worker.distributed)."""
    # ".tmp-" like compliance.registry.artifacts: its sweep removes what a killed writer left behind
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        to_save = model
        if hasattr(model, "merge_and_unload"):  # LoRA: ship a plain model any consumer can load
            to_save = copy.deepcopy(model).merge_and_unload()
        if is_checkpointing(to_save):
            set_checkpointing(to_save, on=False)
        to_save.config.use_cache = True
        to_save.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        hashes = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest | {"files_sha256": hashes}, indent=2, sort_keys=True))
        for path in tmp.iterdir():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
        os.rename(tmp, out_dir)  # fails (and we clean up) if out_dir appeared meanwhile
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(out_dir.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return hashes
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(path: Path | None, spec_hash: str, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint to resume from, if it belongs to this spec and these inputs."""
    if path is None or not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written atomically
    if state.get("spec_hash") != spec_hash or state.get("fingerprint") != fingerprint:
        return None
    return state
