"""Tiny demo models built from configs on the CPU, shared by the unlearning tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearning_worker.demo.corpus import DemoCorpus
from unlearning_worker.demo.trainer import DemoModelConfig, train_demo_model

# Small enough to train in seconds. It memorises no values, but it has learnt the record formats (digits
# follow "Answer:"), so every forget loss has a real probability mass to move.
TINY = DemoModelConfig(
    n_people=6, n_holdout=2, n_layer=2, n_head=2, n_embd=32, vocab_size=400, steps=150, batch_size=8, lr=1e-2,
    warmup_steps=5, n_positions=320,
)


@pytest.fixture(scope="session")
def tiny_corpus() -> DemoCorpus:
    return TINY.corpus()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo_model(TINY, cache_dir=tmp_path_factory.mktemp("demo-cache"))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    # tiny models on a shared 2-core machine: one intra-op thread is several times faster
    import torch

    torch.set_num_threads(1)
