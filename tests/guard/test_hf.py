"""The transformers hooks on a tiny GPT-2 built from a config, with a character-level tokenizer.

A forcing LogitsProcessor makes the model write a protected phone number, whatever its (random)
weights say; the guard must never let the complete value out.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessor, PreTrainedTokenizerFast

from compliance.guard.hf import GuardedStreamer, GuardLogitsProcessor, GuardStoppingCriteria, guarded_generate
from pii.guard import GuardPolicy
from pii.identifiers import SubjectIdentifiers
from pii.matcher import GuardIndex, rule_hashes
from pii.normalize import phone_digits

KEY = b"test-guard-key-0123456789abcdef"
SUBJECT_REF = "f" * 32
PROMPT = "Q: phone? A:"
TARGET = " Call +1 (202) 555-0143 now."


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    chars = [chr(c) for c in range(32, 127)]
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>", pad_token="<pad>")


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=96, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def index() -> GuardIndex:
    rules = rule_hashes(SubjectIdentifiers(full_name="Ada Quartermaine", phones=["202-555-0143"]), KEY)
    return GuardIndex.build([(SUBJECT_REF, r.kind, r.digest_hex) for r in rules], KEY)


class ForceText(LogitsProcessor):
    """Makes the model write `text` after the prompt, then EOS."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, text: str, prompt_length: int) -> None:
        self.ids = tokenizer(text)["input_ids"]
        self.prompt_length = prompt_length
        self.eos = tokenizer.eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length
        forced = self.ids[step] if step < len(self.ids) else self.eos
        out = torch.full_like(scores, float("-inf"))
        out[:, forced] = 0.0
        return out


def _generate(model, tokenizer, processors=(), criteria=(), streamer=None) -> str:  # type: ignore[no-untyped-def]
    encoded = tokenizer(PROMPT, return_tensors="pt")
    prompt_length = encoded["input_ids"].shape[1]
    output = model.generate(
        **encoded,
        logits_processor=[ForceText(tokenizer, TARGET, prompt_length), *processors],
        stopping_criteria=list(criteria),
        streamer=streamer,
        max_new_tokens=len(TARGET) + 2,
        do_sample=False,
        pad_token_id=0,
    )
    return str(tokenizer.decode(output[0, prompt_length:].tolist(), skip_special_tokens=True))


def _holds_phone(text: str) -> bool:
    return "2025550143" in phone_digits(text) or "5550143" in phone_digits(text)


def test_without_the_guard_the_forced_model_leaks_the_phone(model, tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert _generate(model, tokenizer) == TARGET  # the premise of the tests below


def test_mask_hook_bans_the_completing_token_so_the_value_is_never_generated(model, tokenizer, index) -> None:  # type: ignore[no-untyped-def]
    prompt_length = tokenizer(PROMPT, return_tensors="pt")["input_ids"].shape[1]
    guard = GuardLogitsProcessor(tokenizer, index, prompt_length=prompt_length)
    raw = _generate(model, tokenizer, processors=[guard])
    assert guard.banned >= 1
    assert not _holds_phone(raw)
    assert raw.startswith(" Call +1 (202) 555-014")  # everything before the last digit went through


def test_stop_hook_stops_right_after_the_value(model, tokenizer, index) -> None:  # type: ignore[no-untyped-def]
    prompt_length = tokenizer(PROMPT, return_tensors="pt")["input_ids"].shape[1]
    criteria = GuardStoppingCriteria(tokenizer, index, prompt_length=prompt_length)
    raw = _generate(model, tokenizer, criteria=[criteria])
    assert criteria.stopped == [True]
    assert raw == " Call +1 (202) 555-0143"  # stopped at once, nothing generated after


@pytest.mark.parametrize(("policy", "hook"), [(GuardPolicy(), "mask"), (GuardPolicy(), "stop"),
                                              (GuardPolicy(mode="block", block_text="[withheld]"), "stop")])
def test_guarded_generate_never_returns_the_value(model, tokenizer, index, policy, hook) -> None:  # type: ignore[no-untyped-def]
    prompt_length = tokenizer(PROMPT, return_tensors="pt")["input_ids"].shape[1]
    result = guarded_generate(
        model, tokenizer, PROMPT, index, policy, hook=hook,
        logits_processor=[ForceText(tokenizer, TARGET, prompt_length)],
        max_new_tokens=len(TARGET) + 2, do_sample=False, pad_token_id=0,
    )
    assert not _holds_phone(result.text)
    if policy.mode == "block":
        assert result.blocked and result.text == "[withheld]"
    elif hook == "stop":
        assert result.text == " Call [removed]" and result.matches[0].kind == "phone"
    else:  # masked: the value never came out, so there is nothing left to redact
        assert result.text.startswith(" Call +1 (202) 555-014") and result.matches == []


@pytest.mark.parametrize("mode", ["redact", "block"])
def test_streamer_never_emits_the_value(model, tokenizer, index, mode) -> None:  # type: ignore[no-untyped-def]
    pieces: list[str] = []
    policy = GuardPolicy(mode=mode, block_text="[withheld]")
    streamer = GuardedStreamer(tokenizer, index, policy, on_text=pieces.append, holdback_chars=24)
    _generate(model, tokenizer, streamer=streamer)
    emitted = "".join(pieces)
    assert emitted == streamer.text
    assert not _holds_phone(emitted)
    if mode == "block":
        # The value completes within the first 24 characters, which were still held back.
        assert streamer.blocked and emitted == "[withheld]"
    else:
        assert len(pieces) > 1  # it did stream, not only flush at the end
        assert emitted == " Call [removed] now."


def test_streamer_passes_clean_text_through_unchanged(model, tokenizer) -> None:  # type: ignore[no-untyped-def]
    rules = rule_hashes(SubjectIdentifiers(full_name="Zed Other", phones=["303-555-0199"]), KEY)
    other_index = GuardIndex.build([("z" * 32, r.kind, r.digest_hex) for r in rules], KEY)
    pieces: list[str] = []
    streamer = GuardedStreamer(tokenizer, other_index, on_text=pieces.append, holdback_chars=8)
    _generate(model, tokenizer, streamer=streamer)
    assert "".join(pieces) == TARGET and streamer.matches == []
