"""The demo's registration: the synthetic demo corpus and the small model trained on it, registered
like any user's model and corpus ("demo-model" v1 active, trained on "demo-corpus" v1).

The model is trained once and cached under DATA_DIR/demo-cache (keyed by its config), so a second
call reuses it. The evaluation set (retain people's facts, never-trained holdout texts and general
texts, and never-seen control people with records of their own) is written next to it; verification
needs it for the utility attack and compares the subjects with its control people.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from compliance.registry import artifacts
from compliance.registry import services as registry_services
from compliance.registry.models import AIModel, Corpus, CorpusVersion, ModelVersion


@dataclass(frozen=True)
class DemoRegistration:
    model_version: ModelVersion
    corpus_version: CorpusVersion
    created: bool


def write_corpus_jsonl(corpus: Any, path: Path) -> None:
    """One JSON object per record: record_id, person_id, kind, text (the registry's id/text fields)."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for record in corpus.records:
            row = {"record_id": record.record_id, "person_id": record.person_id, "kind": record.kind, "text": record.text}
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


# never-seen people the demo's eval set holds out for the verdict's control: the shipped verification
# policy's control_people (the verdict reads at most that many of them)
DEMO_CONTROL_PEOPLE = 20


def eval_set_document(corpus: Any, *, retain_people: int, control_people: int = DEMO_CONTROL_PEOPLE) -> dict[str, Any]:
    from unlearning_worker.demo.corpus import ATTRIBUTE_LABELS, bio_record, qa_record

    retain = []
    for person in corpus.people[:retain_people]:
        records = corpus.records_of([person.person_id])
        retain.append(
            {
                "key": person.person_id,
                "name": person.name,
                "values": {a: person.attribute(a) for a in ATTRIBUTE_LABELS},
                "texts": [r.text for r in records],
            }
        )
    holdout: list[str] = []
    for person in corpus.holdout_people:
        holdout.append(bio_record(person, 0).text)
        holdout.extend(qa_record(person, a).text for a in list(ATTRIBUTE_LABELS)[:2])
    general = [r.text for r in corpus.records if r.kind == "general"]
    # the never-seen control of the adaptive attacks: people generated alike and never trained on
    # with records of the forms a subject has (a biography and a question per attribute): membership
    # inference reads from them how much one person's records vary, at a subject's number of records
    controls = [
        {"key": f"control-{person.person_id}", "name": person.name, "values": {a: person.attribute(a) for a in ATTRIBUTE_LABELS},
         "texts": [bio_record(person, i).text, *(qa_record(person, a).text for a in ATTRIBUTE_LABELS)]}
        for i, person in enumerate(corpus.holdout_people[:control_people])
    ]
    return {"schema": registry_services.EVAL_SET_SCHEMA, "retain": retain, "holdout_texts": holdout,
            "general_texts": general, "controls": controls}


def register_demo(
    *,
    config: Any = None,
    model_name: str = "demo-model",
    corpus_name: str = "demo-corpus",
    cache_dir: Path | None = None,
    retain_people: int = 40,
    actor: str = "system",
    progress: Any = None,
    sharded: Any = None,
) -> DemoRegistration:
    """Train (or reuse) the demo model and register it with its corpus; idempotent.

    `sharded` (a ShardRecipe): the exact-erasure variant. The registered base is a demo model trained on
    *other* fictitious people (it knows the formats, not the corpus's people), and the corpus's people
    are then learnt by a sharded fine-tune (compliance.registry.sharding), which becomes the active version.
    """
    from dataclasses import replace

    from unlearning_worker.demo.trainer import DemoModelConfig, train_demo_model

    existing = AIModel.objects.filter(name=model_name).first()
    corpus = Corpus.objects.filter(name=corpus_name).first()
    if existing is not None and corpus is not None:
        version = existing.active_version()
        first = corpus.versions.order_by("number").first()
        if version is not None and first is not None:
            return DemoRegistration(model_version=version, corpus_version=first, created=False)

    config = config or DemoModelConfig()
    cache = Path(cache_dir or Path(settings.DATA_DIR) / "demo-cache")
    base_config = replace(config, seed=config.seed + 1000) if sharded is not None else config
    model_dir = train_demo_model(base_config, cache_dir=cache, progress=progress)
    demo_corpus = config.corpus()
    with tempfile.TemporaryDirectory(dir=artifacts.artifact_root()) as scratch:
        jsonl = Path(scratch) / "demo-corpus.jsonl"
        write_corpus_jsonl(demo_corpus, jsonl)
        eval_path = Path(scratch) / "eval-set.json"
        eval_path.write_text(json.dumps(eval_set_document(demo_corpus, retain_people=retain_people), sort_keys=True))
        with transaction.atomic():
            corpus_version = registry_services.corpus_register(
                name=corpus_name, source=jsonl, format=Corpus.Format.JSONL, text_field="text", id_field="record_id",
                description="Synthetic people and filler text the demo model memorised.", actor=actor,
            )
            version = registry_services.model_register(
                name=model_name, source_dir=model_dir, trained_on=[] if sharded is not None else [corpus_version],
                description="Small causal LM trained on the demo corpus.", actor=actor,
            )
            registry_services.model_eval_set_attach(model=version.model, source=eval_path)
    if sharded is not None:
        from compliance.registry.sharding import sharded_train

        version = sharded_train(model=version.model, corpus_version=corpus_version, recipe=sharded, actor=actor)
    return DemoRegistration(model_version=version, corpus_version=corpus_version, created=True)

