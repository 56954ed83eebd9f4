"""Which path a request's records take out of a model (issue 15, policy): exact shard retraining when every
located record sits in the model's sharded fine-tuning corpus, approximate unlearning when none does, both
when some do; the officer sees it on the request page before approving, and dispatch names it as the
job's method. Fake weights: only the registry's record of how a version was trained matters here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from compliance.jobs.dispatch import jobs_dispatch
from compliance.registry import selectors as registry_selectors
from compliance.registry import services as registry_services
from compliance.registry.models import CorpusVersion, ModelVersion
from tests import factories
from tests.jobs.conftest import locate, write_model_dir

pytestmark = pytest.mark.django_db


def make_sharded(version: ModelVersion, corpus_version: CorpusVersion) -> ModelVersion:
    version.training = {"kind": registry_selectors.SHARDED_KIND, "corpus": corpus_version.corpus_id,
                        "corpus_version": corpus_version.id, "recipe_sha256": "ab" * 32, "shards": 8, "slices": 4}
    version.save(update_fields=["training"])
    return version


def dispatch_now() -> list[Any]:
    from datetime import timedelta

    from django.utils import timezone

    return jobs_dispatch(now=timezone.now() + timedelta(hours=2)).created


def test_a_model_not_trained_in_shards_takes_the_approximate_path(model_version: ModelVersion, approved: Any) -> None:
    request = approved(0)
    job = dispatch_now()[0]
    path = registry_selectors.erasure_path(version=model_version, items=request.forget_items.all())
    assert path.kind == "approximate" and "not fine-tuned as sharded" in path.reason
    assert not job.method.startswith(registry_selectors.EXACT_METHOD)


def test_records_in_the_sharded_corpus_take_the_exact_path(
    model_version: ModelVersion, corpus_version: CorpusVersion, approved: Any
) -> None:
    make_sharded(model_version, corpus_version)
    approved(0)
    approved(1)
    job = dispatch_now()[0]
    assert job.method == registry_selectors.EXACT_METHOD
    assert job.spec["method"] != registry_selectors.EXACT_METHOD  # the approximate spec stays, for a retry


def test_records_in_both_the_sharded_corpus_and_other_training_data_take_both_paths(
    tmp_path: Path, corpus_version: CorpusVersion, officer: Any
) -> None:
    source = tmp_path / "pretraining.jsonl"
    source.write_text(json.dumps({"record_id": "P000-qa-phone", "text": "Question: What is Test Person0's phone number?\n"
                                                                       "Answer: +1 415 555 1000\n"}) + "\n")
    other = registry_services.corpus_register(name="pretraining", source=source, id_field="record_id")
    version = registry_services.model_register(name="assistant", source_dir=write_model_dir(tmp_path / "m"),
                                               trained_on=[corpus_version, other])
    make_sharded(version, corpus_version)
    request = factories.request_in("approved", person=factories.subject(0), officer=officer)
    locate(request, corpus_version, 0)
    locate(request, other, 0)
    path = registry_selectors.erasure_path(version=version, items=request.forget_items.all())
    assert (path.kind, path.exact_records, path.other_records) == ("both", 1, 1)
    job = dispatch_now()[0]
    assert job.method == f"{registry_selectors.EXACT_METHOD}+{job.spec['method']}"


def test_a_corpus_without_stable_record_ids_cannot_be_erased_exactly(tmp_path: Path, officer: Any) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("Test Person0's phone number is +1 415 555 1000\n")
    corpus_version = registry_services.corpus_register(name="notes", source=source, format="text")
    version = registry_services.model_register(name="assistant", source_dir=write_model_dir(tmp_path / "m"),
                                               trained_on=[corpus_version])
    make_sharded(version, corpus_version)
    request = factories.request_in("approved", person=factories.subject(0), officer=officer)
    locate(request, corpus_version, 0)
    path = registry_selectors.erasure_path(version=version, items=request.forget_items.all())
    assert path.kind == "approximate" and "stable record ids" in path.reason


def test_the_officer_sees_the_path_before_approving(
    model_version: ModelVersion, corpus_version: CorpusVersion, officer: Any
) -> None:
    request = factories.request_in("triaged", person=factories.subject(0))
    locate(request, corpus_version, 0)
    client = Client()
    client.force_login(officer)
    page = client.get(f"/portal/requests/{request.reference}/").content.decode()
    assert 'id="paths-card"' in page and "approximate (unlearning)" in page
    make_sharded(model_version, corpus_version)
    page = client.get(f"/portal/requests/{request.reference}/").content.decode()
    assert "exact (shard retraining)" in page and "only the shard adapters holding them are retrained" in page
