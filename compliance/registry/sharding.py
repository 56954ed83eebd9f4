"""Sharded fine-tuning and exact erasure as registry services (Django side; the torch part is the
pure unlearning_worker.sharded). Called by the GPU worker's task (unlearning_worker.sharding), the
exact path of a job (unlearning_worker.execution), `manage.py train_sharded|shard_replay` and the demo.

    sharded_train(model, corpus_version, recipe)   fine-tune the model's active version as K shard
                                                   adapters; register and activate the merged version
    exact_erase(job, rows, corpus_versions, out)   retrain only the shards holding the job's records,
                                                   from the slice before the first one, on the erased
                                                   corpus version; returns the proof for the certificate
    shard_replay(version, shard)                   retrain a shard from the recipe and compare bits

Adapters and slice checkpoints live in ARTIFACT_ROOT/shards (content-addressed, shared by versions).
The proof holds hashes only: record commitments (SHA-256 of id and text), tree heads, adapter hashes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from compliance.audit.services import audit_append
from compliance.registry import artifacts
from compliance.registry import selectors as registry_selectors
from compliance.registry import services as registry_services
from compliance.registry.erasure import _identify
from compliance.registry.models import AIModel, Corpus, CorpusVersion, ForgetItem, ModelVersion
from proofs.datacommit import record_commitment

logger = logging.getLogger(__name__)


class ShardedTrainingError(Exception):
    """Bad input for sharded training or exact erasure; the message names no personal data."""


def training_device() -> str:
    """Where new sharded fine-tunes train (settings.UNLEARNING_DEVICE; auto: a GPU when there is one)."""
    wanted = str(settings.UNLEARNING_DEVICE or "auto")
    if wanted != "auto":
        return wanted
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def manifest_device(manifest: Any) -> str:
    """The device a sharded version was trained on: its shards are retrained and replayed there, since
    floating-point results differ between a CPU and a GPU (the manifest's machine names the GPU)."""
    return "cuda" if "/" in str(manifest.environment.get("machine", "")) else "cpu"


def shard_store() -> Any:
    from unlearning_worker.sharded.train import AdapterStore

    return AdapterStore(artifacts.artifact_root() / "shards")


def corpus_records(version: CorpusVersion, *, group_field: str = "") -> list[Any]:
    """Every record of a corpus version as (id, text, group). Exact erasure needs ids that survive a new
    version: the corpus must be JSON lines with an id field. `group_field` names the field whose value
    places records together (a record without it is placed by its id)."""
    from unlearning_worker.sharded.train import Record

    corpus = version.corpus
    if corpus.format != Corpus.Format.JSONL or not corpus.id_field:
        raise ShardedTrainingError(f"{corpus.name} has no id field: sharded training needs stable record ids")
    source = artifacts.within_root(Path(version.path))
    artifacts.verify_tree(source, version.sha256)
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    records = []
    for file in files:
        with file.open("rb") as fh:
            for line_number, raw in enumerate(fh, start=1):
                record_id, record = _identify(raw, file.name, line_number, corpus)
                if record_id is None or record is None:
                    continue
                text = record.get(corpus.text_field)
                group = record.get(group_field) if group_field else None
                if isinstance(text, str) and text:
                    records.append(Record(record_id, text, str(group) if group not in (None, "") else ""))
    if not records:
        raise ShardedTrainingError(f"{version} holds no record with a text")
    return records


def _training_info(manifest: Any, corpus_version: CorpusVersion) -> dict[str, Any]:
    return {
        "kind": registry_selectors.SHARDED_KIND, "corpus": corpus_version.corpus_id, "corpus_version": corpus_version.id,
        "recipe_sha256": manifest.recipe.sha256(), "shards": manifest.recipe.shards, "slices": manifest.recipe.slices,
        "combine": manifest.recipe.combine,
    }


def sharded_train(
    *, model: AIModel, corpus_version: CorpusVersion, recipe: Any, actor: str = "system",
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> ModelVersion:
    """Fine-tune the model's active version on `corpus_version` as K shard adapters (recipe), write the
    merged model as a new version (parent: the base) and activate it."""
    from unlearning_worker.sharded.train import train_sharded, write_model

    base = registry_selectors.active_version(model=model)
    if base is None:
        raise ShardedTrainingError(f"{model.name} has no active version to fine-tune")
    if registry_selectors.sharded_training(version=base) is not None:
        raise ShardedTrainingError(f"{base} is already a sharded fine-tune; fine-tune its parent instead")
    base_dir = artifacts.within_root(Path(base.path))
    artifacts.verify_tree(base_dir, base.sha256)
    records = corpus_records(corpus_version, group_field=recipe.group_field)
    started = time.perf_counter()
    manifest = train_sharded(base_dir, records, recipe, shard_store(), base_sha256=base.sha256,
                             corpus_sha256=corpus_version.sha256, progress=progress, device=training_device())
    out_dir = artifacts.artifact_root() / "models" / model.name / f"sharded-{uuid.uuid4().hex[:12]}"
    write_model(base_dir, manifest, shard_store(), out_dir)
    seconds = time.perf_counter() - started
    sha256 = artifacts.tree_sha256(out_dir)
    with transaction.atomic():
        version = registry_services.model_version_register_candidate(
            model=model, parent=base, path=out_dir, sha256=sha256, trained_on=[*base.trained_on.all(), corpus_version],
            actor=actor,
        )
        version.training = _training_info(manifest, corpus_version)
        version.save(update_fields=["training"])
        audit_append(
            event_type="registry.model_sharded_trained", actor=actor, outcome="ok",
            artefacts={"weights_sha256": sha256, "recipe_sha256": manifest.recipe.sha256(),
                       "corpus_sha256": corpus_version.sha256, "base_sha256": base.sha256},
            details={"model": model.name, "version": version.number, "shards": manifest.recipe.shards,
                     "slices": manifest.recipe.slices, "seconds": round(seconds)},
        )
        registry_services.model_version_activate(version=version, actor=actor)
    version.refresh_from_db()
    return version


def shards_base(version: ModelVersion) -> ModelVersion | None:
    """The version the shard adapters sit on: the first ancestor that is not a sharded fine-tune (an
    exact erasure's parent is the previous sharded version)."""
    parent = version.parent
    while parent is not None and registry_selectors.sharded_training(version=parent) is not None:
        parent = parent.parent
    return parent


def _sharded(version: ModelVersion) -> tuple[dict[str, Any], Any, Path]:
    """(training record, manifest, base directory) of a sharded version, each checked: the registration
    names this manifest, the files hash to what the registry holds, the adapters' base is registered."""
    from unlearning_worker.sharded.train import Manifest

    training = registry_selectors.sharded_training(version=version)
    if training is None:
        raise ShardedTrainingError(f"{version} is not a sharded fine-tune")
    model_dir = artifacts.within_root(Path(version.path))
    artifacts.verify_tree(model_dir, version.sha256)
    manifest = Manifest.read(model_dir)
    if manifest is None or manifest.recipe.sha256() != training["recipe_sha256"]:
        raise ShardedTrainingError(f"{version} has no sharding manifest matching its registration")
    base = shards_base(version)
    if base is None or base.sha256 != manifest.base_sha256:
        raise ShardedTrainingError(f"the model {version} was fine-tuned from is not registered")
    base_dir = artifacts.within_root(Path(base.path))
    artifacts.verify_tree(base_dir, base.sha256)
    return training, manifest, base_dir


# --- exact erasure ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExactResult:
    training: dict[str, Any]
    proof: dict[str, Any]
    retrained_slices: int
    seconds: float


def exact_erase(
    *, base: ModelVersion, rows: Iterable[ForgetItem], corpus_versions: Iterable[CorpusVersion], out_dir: Path,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> ExactResult:
    """Retrain the shards that held `rows` on the erased corpus version and write the merged model to
    out_dir. The proof: corpus hashes before and after, the recipe hash, for each shard its data tree
    head, adapter and checkpoints before and after (reused shards keep theirs), and for each located
    record of the sharded corpus an absence proof against the tree head of the shard it was placed in."""
    from unlearning_worker.sharded.train import layout, retrain_without, shard_data, write_model

    training, old, parent_dir = _sharded(base)
    corpus_id = training["corpus"]
    before = CorpusVersion.objects.get(pk=training["corpus_version"])
    after = next((cv for cv in corpus_versions if cv.corpus_id == corpus_id), None)
    if after is None:  # an earlier attempt or job already erased these records from the corpus
        after = registry_selectors.current_corpus_version(corpus=before.corpus)
    assert after is not None
    removed = []
    for row in rows:
        if row.corpus_version.corpus_id != corpus_id:
            continue
        text = row.text()
        if text:
            removed.append((row.record_id, record_commitment(row.record_id, text)))
    records = corpus_records(after, group_field=old.recipe.group_field)
    new, plan, seconds = retrain_without(parent_dir, old, records, shard_store(), base_sha256=old.base_sha256,
                                         corpus_sha256=after.sha256, progress=progress, device=manifest_device(old))
    write_model(parent_dir, new, shard_store(), out_dir)
    data = [shard_data(slices) for slices in layout(new.recipe, records)]
    absences = []
    for _record_id, commitment in removed:  # absent from every shard, not only from the one it was placed in
        if any(commitment in d for d in data):
            raise ShardedTrainingError("a located record is still in the training data of the new version")
        absences.append({"commitment": commitment.hex(),
                         "shards": [d.absence_proof(commitment)["neighbours"] for d in data]})
    shards = []
    for index, (o, n) in enumerate(zip(old.shards, new.shards, strict=True)):
        shards.append({
            "index": index, "retrained_from_slice": plan.first_changed[index],
            "before": {"records": o["records"], "data_root": o["data_root"], "adapter": o["adapter"]},
            "after": {"records": n["records"], "data_root": n["data_root"], "adapter": n["adapter"],
                      "checkpoints": n["checkpoints"]},
        })
    retrained = sum(old.recipe.slices - s for s in plan.first_changed if s is not None)
    proof = {
        "method": registry_selectors.EXACT_METHOD, "format": "exact-shard-proof/v1",
        "recipe_sha256": new.recipe.sha256(), "recipe": new.recipe.to_dict(),
        "base_sha256": old.base_sha256, "environment": new.environment,
        "corpus_before_sha256": before.sha256, "corpus_after_sha256": after.sha256,
        "shards": shards, "removed": absences, "retrained_slices": retrained,
        "total_slices": old.recipe.shards * old.recipe.slices, "train_seconds": round(seconds, 3),
    }
    return ExactResult(training=_training_info(new, after), proof=proof, retrained_slices=retrained, seconds=seconds)



# --- replay ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayResult:
    shard: int
    expected: list[str]  # checkpoint hashes in the manifest, slice by slice
    actual: list[str]  # what retraining from the recipe gave
    seconds: float

    @property
    def identical(self) -> bool:
        return self.expected == self.actual


def shard_replay(*, version: ModelVersion, shard: int) -> ReplayResult:
    """Retrain one shard of a sharded version from scratch, from its recipe and its training corpus
    version, into a scratch store, and compare every slice checkpoint with the published one (bits)."""
    import tempfile

    from unlearning_worker.sharded.train import AdapterStore, layout, train_shard

    training, manifest, base_dir = _sharded(version)
    if not 0 <= shard < manifest.recipe.shards:
        raise ShardedTrainingError(f"shard must be in 0..{manifest.recipe.shards - 1}")
    corpus_version = CorpusVersion.objects.get(pk=training["corpus_version"])
    if corpus_version.sha256 != manifest.corpus_sha256:
        raise ShardedTrainingError("the training corpus version does not match the manifest")
    slices = layout(manifest.recipe, corpus_records(corpus_version, group_field=manifest.recipe.group_field))[shard]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shard-replay-") as scratch:
        actual = train_shard(base_dir, manifest.recipe, shard, slices, AdapterStore(Path(scratch)),
                             device=manifest_device(manifest))
    return ReplayResult(shard, list(manifest.shards[shard]["checkpoints"]), actual, time.perf_counter() - started)
