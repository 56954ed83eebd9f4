"""Demo model trainer: Hugging Face directory, offline loading, content-hash cache, exclusions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.unlearning_worker.conftest import TINY
from unlearning_worker.demo.trainer import DemoModelConfig, cache_key, train_demo_model


def test_model_dir_loads_offline(tiny_model_dir: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "demo_manifest.json"):
        assert (tiny_model_dir / name).is_file()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    ids = tokenizer("Answer: 242-465-8376\n")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id  # prompts get BOS, as in training
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Answer: 242-465-8376\n"  # lossless byte-level
    enc = tokenizer(" 242-465-8376\n", add_special_tokens=False, return_offsets_mapping=True)
    assert enc["offset_mapping"][-1][1] == len(" 242-465-8376\n")  # offsets cover the text (span masks)
    assert model.config.vocab_size == len(tokenizer)


def test_cache_hit_returns_same_dir_without_training(tiny_model_dir: Path) -> None:
    calls: list[int] = []
    again = train_demo_model(TINY, cache_dir=tiny_model_dir.parent, progress=lambda s, n, loss: calls.append(s))
    assert again == tiny_model_dir
    assert calls == []
    assert not [p for p in tiny_model_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_cache_key_depends_on_config_and_exclusions() -> None:
    corpus = TINY.corpus()
    base = cache_key(TINY, corpus, frozenset())
    assert cache_key(replace(TINY, steps=26), corpus, frozenset()) != base
    assert cache_key(TINY, corpus, frozenset({"P000001"})) != base
    assert cache_key(replace(TINY, device="cuda", num_threads=2), corpus, frozenset()) == base


def test_exclusion_trains_without_the_people(tmp_path: Path) -> None:
    config = replace(TINY, steps=3)
    corpus = config.corpus()
    excluded = corpus.people[0]
    model_dir = train_demo_model(config, cache_dir=tmp_path, exclude_person_ids=frozenset({excluded.person_id}))
    vocab = AutoTokenizer.from_pretrained(model_dir).get_vocab()
    full = train_demo_model(config, cache_dir=tmp_path)
    assert model_dir != full
    # the excluded person's surname was only in their own records: the tokenizer never saw it whole
    assert "Ġ" + excluded.last_name not in vocab or excluded.last_name in {p.last_name for p in corpus.people[1:]}
    with pytest.raises(ValueError, match="not in the demo corpus"):
        train_demo_model(config, cache_dir=tmp_path, exclude_person_ids=frozenset({"P999999"}))


def test_failed_training_leaves_no_directory(tmp_path: Path) -> None:
    def explode(step: int, total: int, loss: float) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train_demo_model(replace(TINY, steps=2), cache_dir=tmp_path, progress=explode)
    assert list(tmp_path.iterdir()) == []


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="multiple of n_head"):
        DemoModelConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="arch"):
        DemoModelConfig(arch="rnn")  # type: ignore[arg-type]
