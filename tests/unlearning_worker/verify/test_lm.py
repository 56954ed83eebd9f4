"""The model operations the attacks share (unlearning_worker.verify.lm)."""

from __future__ import annotations

from typing import Any

from unlearning_worker.verify.lm import encode, encode_many, load_model


def test_encode_many_gives_each_texts_encode(world: Any) -> None:
    lm = load_model(world.trained_dir)
    texts = [*world.general_texts, *world.subjects[0].forget_texts, "", "é and ü."]
    assert encode_many(lm, texts) == [encode(lm, t) for t in texts]
    assert encode_many(lm, texts, special_tokens=True) == [encode(lm, t, special_tokens=True) for t in texts]
    assert encode_many(lm, []) == []
