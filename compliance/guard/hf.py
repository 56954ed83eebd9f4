"""Hooks that put the inference guard inside Hugging Face `transformers` generation.

Three pieces, usable alone or together:

- GuardStoppingCriteria ("stop"): after each step, decodes the tail of what was generated and
  stops the sequence as soon as a protected value has appeared.
- GuardLogitsProcessor ("mask"): before each step, tries the most likely next tokens and bans
  (-inf) every one that would complete a protected value, so generation continues on another
  path ("202-555-014" then something else). When every candidate is banned it forces EOS.
- GuardedStreamer: a TextStreamer-like streamer that holds back the last `holdback_chars`
  characters until they are known to be safe, and emits redacted (or blocked) text.

`guarded_generate` wires them up and runs a last `guard_text` pass over the decoded output, so the
text it returns never holds a protected value whatever the hooks let through.

Usage (the serving process holds a GuardCache that the Django side refreshes):

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from compliance.guard.hf import GuardedStreamer, guarded_generate
    from pii.guard import GuardCache, GuardPolicy

    cache = GuardCache(key=guard_hmac_key_bytes)
    cache.refresh(load_rules)  # load_rules() -> (version, [(subject_ref, kind, digest_hex), ...])
    model = AutoModelForCausalLM.from_pretrained("/models/support-bot")
    tokenizer = AutoTokenizer.from_pretrained("/models/support-bot")
    result = guarded_generate(
        model, tokenizer, "What is Ada Quartermaine's phone number?", cache.index,
        GuardPolicy(mode="redact"), max_new_tokens=64,
        streamer=GuardedStreamer(tokenizer, cache.index, GuardPolicy(), on_text=print),
    )
    result.text     # the guarded continuation; result.matches says what was caught (no plaintext)

Costs: the stop hook runs one guard call on a window of `window_tokens` tokens per step (tens of
microseconds); the mask hook runs up to `top_k` x (characters in the token) calls per step, about a
millisecond on a CPU core, which is small next to a forward pass of any real model.

Limits: the mask hook only tries the `top_k` most likely tokens; a sampled token outside them can
still complete a value, which the stop hook, the streamer and the final pass then catch. The
streamer cannot take back text it has emitted, so a value longer than `holdback_chars` may leak
its beginning before its end is seen; the default (96 characters) covers names, phones, cards, IBANs
and most spelled-out numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from pii.guard import DEFAULT_HOLDBACK_CHARS, GuardPolicy, GuardResult, StreamGuard, guard_text
from pii.matcher import GuardIndex, Match, find_matches

# Tokens decoded around the newest one. Long enough for any protected value (an IBAN written in
# groups is ~42 characters, i.e. 10-40 tokens) plus the prompt end that may begin a name.
DEFAULT_WINDOW_TOKENS = 48
# Prompt tokens kept as context, so "... call Ada" + " Quartermaine" counts as the full name.
DEFAULT_CONTEXT_TOKENS = 16
DEFAULT_TOP_K = 16


class _TailGuard:
    """Decodes the last tokens of a sequence and asks whether a protected value ends in them."""

    def __init__(
        self,
        tokenizer: Any,
        index: GuardIndex,
        *,
        prompt_length: int,
        policy: GuardPolicy | None,
        window_tokens: int,
        context_tokens: int,
    ) -> None:
        if prompt_length < 0 or window_tokens < 1 or context_tokens < 0:
            raise ValueError("prompt_length, window_tokens and context_tokens must be non-negative (window >= 1)")
        self.tokenizer = tokenizer
        self.index = index
        self.prompt_length = prompt_length
        self.options = (policy or GuardPolicy()).options
        self.window_tokens = window_tokens
        self.context_tokens = context_tokens

    def window(self, ids: Sequence[int]) -> tuple[list[int], int]:
        """(window token ids, how many of them belong to the prompt)."""
        first = max(len(ids) - self.window_tokens, self.prompt_length - self.context_tokens, 0)
        return list(ids[first:]), max(0, self.prompt_length - first)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def matches_after(self, text: str, boundary: int) -> list[Match]:
        """Matches in `text` that end after character `boundary` (the part not yet seen)."""
        return [m for m in find_matches(text, self.index, self.options) if m.end > boundary]


class GuardStoppingCriteria(StoppingCriteria):
    """Stops a sequence as soon as its generated part holds a protected value.

    `stopped[i]` tells which rows were stopped by the guard (the value is in the returned ids:
    pass the text through guard_text, as guarded_generate does, before showing it).
    """

    def __init__(
        self,
        tokenizer: Any,
        index: GuardIndex,
        *,
        prompt_length: int,
        policy: GuardPolicy | None = None,
        window_tokens: int = DEFAULT_WINDOW_TOKENS,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    ) -> None:
        self._tail = _TailGuard(
            tokenizer, index, prompt_length=prompt_length, policy=policy,
            window_tokens=window_tokens, context_tokens=context_tokens,
        )
        self.stopped: list[bool] = []

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        rows = input_ids.tolist()
        if len(self.stopped) != len(rows):
            self.stopped = [False] * len(rows)
        done = []
        for i, row in enumerate(rows):
            window, prompt_tokens = self._tail.window(row)
            boundary = len(self._tail.decode(window[:prompt_tokens]))
            hit = bool(self._tail.matches_after(self._tail.decode(window), boundary))
            self.stopped[i] = self.stopped[i] or hit
            done.append(hit)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class GuardLogitsProcessor(LogitsProcessor):
    """Bans every likely next token that would complete a protected value ("mask" mode).

    For each row it tries the `top_k` highest-scoring tokens: a token is banned if appending it
    makes a protected value end inside the characters it adds (every prefix of the token is
    tried, so "…014" + "35" is caught at "…0143"). Put it last in the processor list, after
    anything that reshapes the scores. `banned` counts the bans, for tests and metrics.
    """

    def __init__(
        self,
        tokenizer: Any,
        index: GuardIndex,
        *,
        prompt_length: int,
        policy: GuardPolicy | None = None,
        top_k: int = DEFAULT_TOP_K,
        window_tokens: int = DEFAULT_WINDOW_TOKENS,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
        eos_token_id: int | None = None,
    ) -> None:
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        self._tail = _TailGuard(
            tokenizer, index, prompt_length=prompt_length, policy=policy,
            window_tokens=window_tokens, context_tokens=context_tokens,
        )
        self.top_k = top_k
        self.eos_token_id = eos_token_id if eos_token_id is not None else getattr(tokenizer, "eos_token_id", None)
        self.banned = 0

    def _completes(self, window: list[int], token: int, seen: str, boundary: int) -> bool:
        extended = self._tail.decode([*window, token])
        # Decoding can rewrite the last characters (byte-level BPE joining a split character);
        # compare from the longest common prefix so nothing added is skipped.
        common = 0
        for a, b in zip(seen, extended, strict=False):
            if a != b:
                break
            common += 1
        for cut in range(max(common, boundary) + 1, len(extended) + 1):
            if any(m.end == cut for m in self._tail.matches_after(extended[:cut], max(boundary, common))):
                return True
        return False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._tail.index.rule_count == 0:
            return scores
        scores = scores.clone()  # type: ignore[assignment]
        for i, row in enumerate(input_ids.tolist()):
            window, prompt_tokens = self._tail.window(row)
            boundary = len(self._tail.decode(window[:prompt_tokens]))
            seen = self._tail.decode(window)
            row_scores = scores[i]
            k = min(self.top_k, row_scores.shape[-1])
            top = torch.topk(row_scores, k)
            for value, token in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                if value == float("-inf"):
                    break
                if self._completes(window, token, seen, boundary):
                    row_scores[token] = float("-inf")
                    self.banned += 1
            if not torch.isfinite(row_scores).any() and self.eos_token_id is not None:
                # Every candidate would say a protected value: end the answer instead.
                row_scores[self.eos_token_id] = 0.0
        return scores


class GuardedStreamer(BaseStreamer):
    """Streams guarded text: what is emitted has already been redacted (or the stream blocked).

    Works like transformers.TextStreamer: pass it as `streamer=` to generate. The filtering is
    `pii.guard.StreamGuard`'s (the same as the REST stream endpoint's): the last `holdback_chars`
    characters are held back until a protected value there would have been seen, and no part of a
    value it has found is emitted. `on_text` receives each safe piece (print by default); `text` is
    everything emitted so far, `blocked` and `matches` what was caught.
    """

    def __init__(
        self,
        tokenizer: Any,
        index: GuardIndex,
        policy: GuardPolicy | None = None,
        *,
        on_text: Callable[[str], None] | None = None,
        skip_prompt: bool = True,
        holdback_chars: int = DEFAULT_HOLDBACK_CHARS,
    ) -> None:
        if holdback_chars < 1:
            raise ValueError("holdback_chars must be >= 1")
        self.tokenizer = tokenizer
        self.policy = policy or GuardPolicy()
        self.on_text = on_text or (lambda piece: print(piece, end="", flush=True))
        self.text = ""
        self._stream = StreamGuard(index, self.policy, holdback_chars=holdback_chars)
        self._ids: list[int] = []
        self._fed = 0  # characters of the decoded output already given to the stream filter
        self._prompt_pending = skip_prompt

    @property
    def blocked(self) -> bool:
        return self._stream.blocked

    @property
    def matches(self) -> list[Match]:
        return self._stream.matches

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:
            if value.shape[0] > 1:
                raise ValueError("GuardedStreamer only supports batch size 1")
            value = value[0]
        if self._prompt_pending:
            self._prompt_pending = False
            return
        self._ids.extend(value.tolist())
        decoded = str(self.tokenizer.decode(self._ids, skip_special_tokens=True))
        # A token that ends inside a multi-byte character decodes to U+FFFD until the rest arrives.
        ready = len(decoded.rstrip("\ufffd"))
        if ready > self._fed:
            self._emit(self._stream.feed(decoded[self._fed : ready]))
            self._fed = ready

    def end(self) -> None:
        decoded = str(self.tokenizer.decode(self._ids, skip_special_tokens=True))
        self._emit(self._stream.feed(decoded[self._fed :], final=True))
        self._fed = len(decoded)

    def _emit(self, piece: str) -> None:
        if piece:
            self.text += piece
            self.on_text(piece)


def guarded_generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    index: GuardIndex,
    policy: GuardPolicy | None = None,
    *,
    hook: Literal["mask", "stop"] | None = None,
    top_k: int = DEFAULT_TOP_K,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    **gen_kwargs: Any,
) -> GuardResult:
    """Generate a continuation of `prompt` with the guard in the loop; return the guarded text.

    hook: "mask" bans tokens that would complete a protected value and lets generation go on
    (default for policy mode "redact"); "stop" ends generation at the first protected value
    (default for "block"). Either way the decoded continuation is passed through guard_text
    (with the prompt's end as context) before it is returned. gen_kwargs go to model.generate;
    their logits_processor / stopping_criteria lists are kept and the guard is appended last.
    """
    policy = policy or GuardPolicy()
    # "stop" by default: measured on the demo model (tests/benchmarks/bench_guard_demo.py), masking the
    # token that completes an e-mail address still lets its identifying local part out, while stopping
    # and redacting the tail let nothing out. "mask" stays available for callers that need a full answer.
    hook = hook or "stop"
    if hook not in ("mask", "stop"):
        raise ValueError("hook must be 'mask' or 'stop'")
    encoded = tokenizer(prompt, return_tensors="pt")
    device = getattr(model, "device", None)
    if device is not None:
        encoded = encoded.to(device)
    prompt_length = int(encoded["input_ids"].shape[1])
    processors = LogitsProcessorList(list(gen_kwargs.pop("logits_processor", None) or []))
    criteria = StoppingCriteriaList(list(gen_kwargs.pop("stopping_criteria", None) or []))
    if hook == "mask":
        processors.append(
            GuardLogitsProcessor(
                tokenizer, index, prompt_length=prompt_length, policy=policy, top_k=top_k,
                context_tokens=context_tokens,
            )
        )
    else:
        criteria.append(
            GuardStoppingCriteria(
                tokenizer, index, prompt_length=prompt_length, policy=policy, context_tokens=context_tokens
            )
        )
    output = model.generate(**encoded, logits_processor=processors, stopping_criteria=criteria, **gen_kwargs)
    prompt_ids = encoded["input_ids"][0].tolist()
    context = str(tokenizer.decode(prompt_ids[max(0, prompt_length - context_tokens):], skip_special_tokens=True))
    generated = str(tokenizer.decode(output[0, prompt_length:].tolist(), skip_special_tokens=True))
    return guard_text(generated, index, policy, context=context)
