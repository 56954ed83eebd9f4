"""Exact erasure through the service (issue 15): a sharded fine-tune of the tiny demo model is registered,
a person's request is approved, the job takes the exact path, retrains only the shards that held the
person's records, and the proof on the job shows them absent from every shard. Nothing is stubbed: the
embedded set-up runs the job and the attack suite in-process on the real model.
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from compliance.demo.registration import register_demo
from compliance.erasure import services as erasure_services
from compliance.erasure.models import Status
from compliance.jobs.models import JobStatus, UnlearningJob
from compliance.registry import artifacts
from compliance.registry import selectors as registry_selectors
from compliance.registry.models import CorpusVersion, ForgetItem, ModelVersion
from proofs.datacommit import verify_absence
from tests import factories
from tests.integration.conftest import DEMO_CONFIG, POLICY, SPEC
from tests.integration.test_worker import ENTITY_OF as ENTITY

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]



@pytest.fixture
def sharded(settings: Any, tmp_path: Path) -> Any:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    from unlearning_worker.demo.trainer import DemoModelConfig
    from unlearning_worker.sharded.recipe import ShardRecipe

    settings.JOB_BATCH_WAIT_S = 0
    settings.UNLEARNING_SPEC_DEFAULTS = SPEC
    settings.UNLEARNING_DEVICE = "cpu"
    settings.VERIFICATION_POLICY_FILE = str(POLICY)
    config = DemoModelConfig(**DEMO_CONFIG)
    import tempfile

    cache = Path(tempfile.gettempdir()) / "erasure-test-demo-cache"
    # 8 shards: a person's 7 records cannot reach every shard, whatever the (random) placement key
    recipe = ShardRecipe.fresh(shards=8, slices=2, epochs_per_slice=2, seed=1)
    registration = register_demo(config=config, cache_dir=cache, retain_people=4, model_name="shard-model",
                                 corpus_name="shard-corpus", sharded=recipe)
    return registration, config.corpus()


def approve(person: Any, corpus: Any, corpus_version: CorpusVersion) -> Any:
    request = factories.request_in(
        "triaged", person=erasure_services.SubjectInput(full_name=person.name, email=person.email, phone=person.phone)
    )
    for record in corpus.records_of([person.person_id]):
        item = ForgetItem(
            request=request, corpus_version=corpus_version, record_id=record.record_id, line_number=1, matched=["name"],
            pri_score=0.4, entities=[{"type": ENTITY[a], "start": s, "end": e, "score": 1.0} for s, e, a in record.pii_spans],
        )
        item.seal_text(record.text)
        item.save()
    erasure_services.erasure_request_approve(request=request, officer=factories.user("officer"), reason="consent withdrawn")
    request.refresh_from_db()
    return request


def test_a_request_in_the_sharded_corpus_is_erased_exactly_and_proven_absent(sharded: Any) -> None:
    registration, corpus = sharded
    version: ModelVersion = registration.model_version
    assert registry_selectors.sharded_training(version=version) is not None
    assert version.parent is not None and version.parent.training == {}  # the shards' base

    person = corpus.people[2]
    request = approve(person, corpus, registration.corpus_version)  # eager: dispatch, job and verification run here
    job = UnlearningJob.objects.get(requests=request)
    assert job.method == registry_selectors.EXACT_METHOD
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.stop_reason == registry_selectors.EXACT_METHOD
    request.refresh_from_db()
    assert request.status == Status.VERIFYING

    proof = job.exact_proof
    shards = proof["shards"]
    retrained = [s for s in shards if s["retrained_from_slice"] is not None]
    reused = [s for s in shards if s["retrained_from_slice"] is None]
    assert retrained and len(retrained) < len(shards)  # only the shards that held the person
    for shard in reused:
        assert shard["before"] == {k: shard["after"][k] for k in ("records", "data_root", "adapter")}
    for shard in retrained:
        assert shard["before"]["adapter"] != shard["after"]["adapter"]
        assert shard["after"]["records"] < shard["before"]["records"]
    assert len(proof["removed"]) == len(corpus.records_of([person.person_id]))
    for removed in proof["removed"]:
        for shard, neighbours in zip(shards, removed["shards"], strict=True):
            verify_absence({"commitment": removed["commitment"], "neighbours": neighbours},
                           size=shard["after"]["records"], root_hex=shard["after"]["data_root"])
    assert proof["retrained_slices"] == sum(2 - s["retrained_from_slice"] for s in retrained)

    # The new version stays a sharded fine-tune, on the erased corpus version: the next request is exact too.
    result = job.result_version
    assert result is not None
    training = registry_selectors.sharded_training(version=result)
    assert training is not None
    after = CorpusVersion.objects.get(pk=training["corpus_version"])
    assert after.parent_id == registration.corpus_version.id and after.sha256 == proof["corpus_after_sha256"]
    assert not any(r.person_id == person.person_id for r in corpus.records if r.record_id in _ids(after))

    # The officer's job page shows what was retrained and what was proven.
    from django.test import Client

    client = Client()
    client.force_login(factories.user("officer"))
    page = client.get(f"/portal/jobs/{job.id}/").content.decode()
    assert 'id="exact-card"' in page and f"{len(proof['removed'])} record(s), from every shard" in page

    # Replay: a retrained shard reproduces its published adapter bit for bit, from the recipe alone.
    out = StringIO()
    call_command("shard_replay", "shard-model", str(result.number), "--shard", str(retrained[0]["index"]), stdout=out)
    assert "identical" in out.getvalue()


def test_replay_refuses_a_version_that_is_not_sharded_and_reports_a_tampered_shard(sharded: Any) -> None:
    registration, corpus = sharded
    version: ModelVersion = registration.model_version
    with pytest.raises(CommandError, match="not a sharded fine-tune"):
        call_command("shard_replay", "shard-model", str(version.parent.number), stdout=StringIO())

    # A shard whose published checkpoints were not what its recipe gives: replay says so and fails.
    import json

    from compliance.registry.models import ModelVersion as MV

    model_dir = Path(version.path)
    manifest = json.loads((model_dir / "sharding.json").read_text())
    manifest["shards"][0]["checkpoints"][-1] = "0" * 64
    forged = artifacts.artifact_root() / "models" / "shard-model" / "forged"
    import shutil

    shutil.copytree(model_dir, forged)
    (forged / "sharding.json").write_text(json.dumps(manifest))
    forged_version = MV.objects.create(model=version.model, number=99, parent=version.parent, path=str(forged),
                                       sha256=artifacts.tree_sha256(forged), training=version.training)
    out = StringIO()
    with pytest.raises(CommandError, match="did not reproduce"):
        call_command("shard_replay", "shard-model", str(forged_version.number), "--shard", "0", stdout=out)
    assert "DIFFERS" in out.getvalue()


def _ids(version: CorpusVersion) -> set[str]:
    from compliance.registry.sharding import corpus_records

    return {r.record_id for r in corpus_records(version)}
