"""Forget/retain items, their tokenisation into masked examples, and batching.

A forget item is one prompt and the completion that must no longer come out of it, with the PII spans
of the completion (character offsets) and the secret values a probe must not recover. Prompt and
completion are tokenised separately and concatenated, so the boundary between them is exact for any
tokenizer and the answer tokens are known without guessing; the PII span tokens are the completion
tokens whose character offsets overlap a span (this needs a fast tokenizer's offset mapping).

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pii.records import split_spans


def _check_spans(text: str, spans: Sequence[tuple[int, int, str]]) -> None:
    for start, end, attribute in spans:
        if not (0 <= start < end <= len(text)) or not attribute:
            raise ValueError("a PII span lies outside its completion or has no attribute")


@dataclass(frozen=True)
class ForgetItem:
    subject_key: str  # pseudonymous subject reference: groups items per subject in the report
    prompt: str
    completion: str
    pii_spans: list[tuple[int, int, str]]  # char offsets into completion, with the attribute name
    values: dict[str, str]  # attribute -> secret value that a probe from `prompt` must not recover
    pri: float = 0.0  # PII risk index of the record, in [0, 1]; the loss weight is 1 + pri when enabled
    # how the record names the person ("" when unknown): the counterfactual method swaps it for a
    # never-seen name to ask the base model what it would say about someone it never saw
    subject_name: str = ""
    # the record's other PII spans, which this run does not target (a region, a birth date): the
    # counterfactual method swaps them too, so that its never-seen reference cannot recognise the person
    context_spans: list[tuple[int, int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.subject_key:
            raise ValueError("subject_key must not be empty")
        if not self.completion:
            raise ValueError("a forget item needs a completion")
        _check_spans(self.completion, self.pii_spans)
        _check_spans(self.completion, self.context_spans)
        if not math.isfinite(self.pri) or not 0.0 <= self.pri <= 1.0:
            raise ValueError("pri must be in [0, 1]")
        if any(not v for v in self.values.values()):
            raise ValueError("secret values must not be empty")


@dataclass(frozen=True)
class RetainItem:
    prompt: str
    completion: str
    pii_spans: list[tuple[int, int, str]] = field(default_factory=list)  # char offsets into completion
    # whose record it is ("" when unknown, as for general text): with a name, the run's utility check
    # asks the verifier's own question about each of the person's values (evaluation.retain_question_probes)
    subject_key: str = ""
    subject_name: str = ""

    def __post_init__(self) -> None:
        if not self.completion:
            raise ValueError("a retain item needs a completion")
        _check_spans(self.completion, self.pii_spans)

    def values(self) -> dict[str, str]:
        return {attribute: self.completion[s:e] for s, e, attribute in self.pii_spans}


@dataclass(frozen=True)
class Example:
    """One tokenised prompt + completion. Masks are over input positions (True: the token is covered)."""

    input_ids: list[int]
    answer_mask: list[bool]  # completion tokens
    span_mask: list[bool]  # completion tokens overlapping a PII span

    def target_mask(self, *, span_only: bool) -> list[bool]:
        """The tokens a forget loss covers: the PII spans when asked and present, else the whole answer."""
        if span_only and any(self.span_mask):
            return self.span_mask
        return self.answer_mask


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt's tokens as encode lays them out: with the tokenizer's special tokens, and an empty
    prompt as the BOS token alone (it still needs one position to predict from; [] without a BOS)."""
    ids = list(tokenizer(prompt)["input_ids"]) if prompt else []
    if not ids and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id]
    return ids


def encode(tokenizer: Any, prompt: str, completion: str, spans: Sequence[tuple[int, int, str]]) -> Example:
    head = prompt_ids(tokenizer, prompt)
    if not head:
        raise ValueError("the tokenizer has no BOS token: forget and retain items need a non-empty prompt")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("a fast tokenizer (offset mapping) is required to locate PII token spans")
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    completion_ids: list[int] = enc["input_ids"]
    span_flags = [
        any(a < e and b > s for s, e, _attr in spans) for a, b in enc["offset_mapping"]
    ]
    n_prompt = len(head)
    return Example(
        input_ids=head + list(completion_ids),
        answer_mask=[False] * n_prompt + [True] * len(completion_ids),
        span_mask=[False] * n_prompt + span_flags,
    )


def text_retain_items(texts: Sequence[str],
                      spans_of: Callable[[str], Sequence[tuple[int, int, str]]] | None = None) -> list[RetainItem]:
    """Retain records of texts whose values are not known (general text, a sample of the training
    corpora). `spans_of` (pii.records.value_spans with the worker's analyzer) marks the PII values it
    finds in a text: such a text is split before its first value, as a located record is
    (pii.records.split_spans), and carries its values' spans, so the engine's retain focus holds it
    when those attributes are being forgotten. Any other text (none marked, or its first value at its
    very start, which leaves no prompt: its marks are dropped) is split after its first half of words,
    the prompt that half; a text of fewer than 4 words is left out."""
    items = []
    for text in texts:
        spans = [s for s in (spans_of(text) if spans_of is not None else ()) if s[2] != "name"]
        prompt, completion, found = split_spans(text, spans) if spans else ("", "", [])
        if prompt.strip() and found:
            items.append(RetainItem(prompt=prompt, completion=completion, pii_spans=found))
            continue
        words = text.split(" ")
        if len(words) >= 4:
            head = " ".join(words[: len(words) // 2])
            items.append(RetainItem(prompt=head, completion=text[len(head) :], pii_spans=[]))
    return items


def text_examples(tokenizer: Any, texts: Sequence[str], *, max_tokens: int) -> list[Example]:
    """Whole texts as a relearning attacker trains on them: the tokenizer's BOS (where it has one) and
    each text's tokens, at most `max_tokens` in all, every token after the first a target; a text too
    short to predict anything from is left out (engine.RelearningAdversary's corpus texts). One batched
    tokenizer call: the worker hands up to 20,000."""
    if not texts:
        return []
    head = prompt_ids(tokenizer, "")
    room = max(max_tokens - len(head), 1)
    out = []
    # a document is cut before it is tokenized (16 characters a token is far beyond any text's mean) and the tokenizer
    # stops at the cap: a corpus of long documents is never tokenized whole
    for ids in tokenizer([t[: 16 * room] for t in texts], add_special_tokens=False, truncation=True,
                         max_length=room)["input_ids"]:
        ids = (head + list(ids))[:max_tokens]
        if len(ids) >= 2:
            out.append(Example(input_ids=ids, answer_mask=[False] + [True] * (len(ids) - 1), span_mask=[False] * len(ids)))
    return out


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T)
    target_mask: torch.Tensor  # (B, T) bool over input positions; the loss predicts these tokens
    weights: torch.Tensor  # (B,) per-example loss weights


def collate(
    examples: Sequence[Example],
    masks: Sequence[Sequence[bool]],
    weights: Sequence[float],
    *,
    pad_id: int,
    device: torch.device | str,
) -> Batch:
    if not examples:
        raise ValueError("empty batch")
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    target = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, (example, mask) in enumerate(zip(examples, masks, strict=True)):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        attention[row, :n] = 1
        target[row, :n] = torch.tensor(list(mask), dtype=torch.bool)
    return Batch(
        input_ids=ids.to(device),
        attention_mask=attention.to(device),
        target_mask=target.to(device),
        weights=torch.tensor(list(weights), dtype=torch.float32, device=device),
    )


def pass_overhead(device: torch.device | str) -> int:
    """What one more forward pass costs, in padded tokens: on a CPU little (a pass costs its
    arithmetic), on a GPU a lot (a small pass is bound by kernel launches)."""
    return 4096 if torch.device(device).type == "cuda" else 64


def length_groups(lengths: Sequence[int], *, overhead: int) -> list[list[int]]:
    """The indices of `lengths` in passes of like length, each pass ascending: sorted by length and cut
    where it minimises the tokens computed, rows x the longest row of each pass (a right-padded batch
    computes every pad), plus `overhead` a pass (pass_overhead). Demo corpus, ten subjects' records in
    random micro-batches of 16: 42% of the computed tokens are real, 77% sorted into like lengths."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    n = len(order)
    best = [0] + [0] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        best[j], cut[j] = min((best[i] + (j - i) * longest + overhead, i) for i in range(j))
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def step_indices(n: int, batch_size: int, step: int, *, seed: int, salt: str) -> list[int]:
    """The items of one step: all of them when they fit, else consecutive windows of seeded permutations.

    A pure function of (n, batch_size, step, seed): a resumed run draws exactly the batches the
    interrupted run would have drawn, without saving any RNG state.
    """
    if n <= batch_size:
        return list(range(n))
    start = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        order = list(range(n))
        random.Random(f"{salt}:{seed}:{epoch}").shuffle(order)
        out.extend(order[offset : offset + batch_size - len(out)])
    return out
