"""The routed sharded model (combine "route", unlearning_worker.routed) under the attack suite: it loads
from its directory like any model, a one-shard routed model computes exactly what its shard computes, the
route is the shard under which the input is most likely, and every attack family, relearning and
quantization included, runs on it and catches planted secrets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from unlearning_worker.routed import ADAPTERS_DIR, MANIFEST_NAME, RoutedCausalLM, is_routed, load_routed
from unlearning_worker.threads import torch_threads
from unlearning_worker.verify import run_verification
from unlearning_worker.verify.lm import load_model

RANK = 4


def _adapter(model_dir: Path, scale: float, seed: int) -> dict[str, torch.Tensor]:
    """A LoRA state dict for every attention/MLP layer of the tiny GPT-2; scale 0 leaves the model as it is."""
    from safetensors.torch import load_file

    weights = load_file(model_dir / "model.safetensors")
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, weight in weights.items():
        if name.endswith(("attn.c_attn.weight", "mlp.c_fc.weight")):
            module = name.removesuffix(".weight")
            fan_in, fan_out = weight.shape  # Conv1D: (in, out)
            state[f"base_model.model.{module}.lora_A.weight"] = torch.randn(RANK, fan_in, generator=generator)
            state[f"base_model.model.{module}.lora_B.weight"] = scale * torch.randn(fan_out, RANK, generator=generator)
    return state


def routed_dir(base: Path, out: Path, scales: list[float]) -> Path:
    from safetensors.torch import save_file

    shutil.copytree(base, out)
    (out / ADAPTERS_DIR).mkdir()
    for index, scale in enumerate(scales):
        save_file(_adapter(base, scale, seed=index), out / ADAPTERS_DIR / f"{index}.safetensors")
    recipe = {"combine": "route", "shards": len(scales), "lora_rank": RANK, "lora_alpha": RANK}
    (out / MANIFEST_NAME).write_text(json.dumps({"format": "sharded-lora/v1", "recipe": recipe}))
    return out


def test_a_routed_directory_loads_as_a_routed_model_and_a_plain_one_does_not(world: Any, tmp_path: Path) -> None:
    path = routed_dir(world.trained_dir, tmp_path / "routed", [0.0, 0.0])
    assert is_routed(path) and not is_routed(world.trained_dir)
    assert isinstance(load_model(path).model, RoutedCausalLM)
    assert not isinstance(load_model(world.trained_dir).model, RoutedCausalLM)
    with pytest.raises(ValueError, match="not a routed"):
        load_routed(world.trained_dir)


def test_one_shard_computes_what_its_model_computes(world: Any, tmp_path: Path) -> None:
    path = routed_dir(world.trained_dir, tmp_path / "one", [0.0])
    routed, plain = load_model(path), load_model(world.trained_dir)
    ids = routed.tokenizer(world.holdout_texts[:3], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = routed.model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits
        b = plain.model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits
    assert torch.equal(a, b)


def test_each_sequence_is_served_by_the_shard_that_finds_it_most_likely(world: Any, tmp_path: Path) -> None:
    # shard 0: the trained model as it is; shard 1: the same with its layers scrambled (finds text unlikely)
    path = routed_dir(world.trained_dir, tmp_path / "two", [0.0, 0.5])
    lm = load_model(path)
    ids = lm.tokenizer(world.holdout_texts[:4], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = lm.model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"], use_cache=True)
        first = lm.model.shards[0](input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits
    assert out.past_key_values.routes.tolist() == [0, 0, 0, 0]
    assert torch.equal(out.logits, first)


def test_candidates_of_several_prompts_share_a_routed_cache_and_score_as_each_prompt_alone(
    world: Any, tmp_path: Path
) -> None:
    """The rank check's shared passes (whitebox._sequence_scores_cached: prompts left-padded together,
    each candidate row reading its own prompt's cache) on a routed model: the cache keeps each prompt's
    shard for its candidates (RoutedCache.batch_select_indices), so the scores are the routed model's
    own, prompt by prompt, with no fallback to whole sequences."""
    from unlearning_worker.verify.attacks.whitebox import _sequence_scores_cached
    from unlearning_worker.verify.lm import encode

    lm = load_model(routed_dir(world.trained_dir, tmp_path / "two", [0.0, 0.5]))
    requests = [(encode(lm, text[:40]), [encode(lm, " " + v) for v in ("Ada", "12 High Street", "x")])
                for text in world.holdout_texts[:3]]
    together = _sequence_scores_cached(lm, requests, 4)
    alone = [_sequence_scores_cached(lm, [request], 64)[0] for request in requests]
    for got, want in zip(together, alone, strict=True):
        assert got == pytest.approx(want, abs=1e-3)


def test_every_attack_family_runs_on_a_routed_model_and_catches_the_planted_secrets(world: Any, tmp_path: Path) -> None:
    path = routed_dir(world.trained_dir, tmp_path / "leaky", [0.0, 0.5])
    with torch_threads(1):
        report = run_verification(model_dir=path, base_model_dir=world.untrained_dir, subjects=world.subjects,
                                  retain=world.retain, holdout_texts=world.holdout_texts,
                                  general_texts=world.general_texts, policy=world.policy, controls=world.controls)
    assert {"relearning", "quantization", "logit_lens", "candidate_rank", "direct_probe"} <= set(report.attacks)
    errors = {name: a.error for name, a in report.attacks.items() if a.error}
    assert not errors, errors
    assert not report.verdict.passed  # the routed model serves the trained shard: the secrets are there
