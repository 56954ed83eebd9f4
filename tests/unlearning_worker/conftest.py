"""Tiny demo models built from configs on the CPU, shared by the unlearning tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearning_worker.demo.corpus import DemoCorpus
from unlearning_worker.demo.trainer import DemoModelConfig, train_demo_model

# Small enough to train in a couple of seconds; it does not memorise, which these tests do not need.
TINY = DemoModelConfig(
    n_people=6, n_holdout=2, n_layer=2, n_head=2, n_embd=32, vocab_size=400, steps=25, batch_size=8,
    warmup_steps=5, n_positions=320,
)


@pytest.fixture(scope="session")
def tiny_corpus() -> DemoCorpus:
    return TINY.corpus()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo_model(TINY, cache_dir=tmp_path_factory.mktemp("demo-cache"))
