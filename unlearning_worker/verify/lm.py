"""The model operations the attacks need: load, batched generation, batched log-likelihoods, hidden states.

Everything is batched (left padding for generation, right padding for scoring) and runs under
`torch.inference_mode()`. Pure: no Django, no environment reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unlearning_worker.adapters import name_the_loss


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel (causal LM)
    tokenizer: Any  # a transformers tokenizer
    device: torch.device

    @property
    def max_positions(self) -> int:
        config = self.model.config
        for attr in ("n_positions", "max_position_embeddings"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048


def load_model(model_dir: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a causal LM and its tokenizer from a local directory (never from a hub)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    if not path.is_dir():
        raise ValueError("model directory does not exist")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token_id is None:  # GPT-2 style tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    from unlearning_worker.routed import is_routed, load_routed

    model: Any = load_routed(path) if is_routed(path) else name_the_loss(AutoModelForCausalLM.from_pretrained(path, local_files_only=True))
    dev = torch.device(device)
    model.to(dev)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=dev)


def wrap_model(model: Any, tokenizer: Any, device: str | torch.device = "cpu") -> LoadedModel:
    """An in-memory model (tests, the engine's live evaluation) in the same shape as load_model."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=torch.device(device))


def encode(lm: LoadedModel, text: str, *, special_tokens: bool = False) -> list[int]:
    """The text's token ids; with `special_tokens`, framed as the tokenizer frames it for use (a BOS
    token where the model has one), else bare (the framing an attacker may also choose)."""
    return list(lm.tokenizer(text, add_special_tokens=special_tokens)["input_ids"])


def encode_many(lm: LoadedModel, texts: Sequence[str], *, special_tokens: bool = False) -> list[list[int]]:
    """encode() of each text, in one batched tokenizer call (thousands of texts at once: the
    relearning attacker's data)."""
    if not texts:
        return []
    return [list(ids) for ids in lm.tokenizer(list(texts), add_special_tokens=special_tokens)["input_ids"]]


def generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    seed: int | None = None,
    batch_size: int = 64,
    stop_at_newline: bool = True,
) -> list[list[str]]:
    """Completions (new text only) for each prompt: num_return_sequences strings per prompt.

    Delegates to the worker's batched, KV-cached `generate_batch` (left padding, explicit RNG).
    Answers end at the first newline: every probe is a one-line question and the text after the
    answer line is not the model's answer to it. Prompts longer than the model's context are cut
    from the left so that the question at their end survives.
    """
    from unlearning_worker.generation import generate_batch

    room = max(1, lm.max_positions - max_new_tokens)
    fitted = []
    for prompt in prompts:
        ids = encode(lm, prompt)
        fitted.append(prompt if len(ids) <= room else lm.tokenizer.decode(ids[-room:]))
    if not fitted:
        return []
    return generate_batch(
        lm.model,
        lm.tokenizer,
        fitted,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
        num_return_sequences=num_return_sequences,
        seed=seed,
        batch_size=batch_size,
        stop_at_newline=stop_at_newline,
    )


def token_logprobs(lm: LoadedModel, texts: Sequence[str], *, batch_size: int = 32,
                   special_tokens: bool = False) -> list[list[float]]:
    """Per-token log-probabilities of every token after the first, for each text (teacher forcing)."""
    results: list[list[float]] = []
    for start in range(0, len(texts), batch_size):
        chunk = [encode(lm, t, special_tokens=special_tokens)[: lm.max_positions]
                 for t in texts[start : start + batch_size]]
        results.extend(_score_ids(lm, chunk, [1] * len(chunk)))
    return results


def continuation_logprobs(
    lm: LoadedModel, prompt_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]], *, batch_size: int
) -> list[float]:
    """Sum of log-probabilities of each continuation given its prompt (batched, right padding)."""
    totals: list[float] = []
    for start in range(0, len(prompt_ids), batch_size):
        seqs = [
            list(p) + list(c)
            for p, c in zip(prompt_ids[start : start + batch_size], continuation_ids[start : start + batch_size], strict=True)
        ]
        first = [len(p) for p in prompt_ids[start : start + batch_size]]
        for lp in _score_ids(lm, seqs, first):
            totals.append(float(sum(lp)))
    return totals


def _score_ids(lm: LoadedModel, seqs: Sequence[Sequence[int]], first_scored: Sequence[int]) -> list[list[float]]:
    """Log-probs of tokens seqs[i][first_scored[i]:] for each i."""
    pad = lm.tokenizer.pad_token_id
    width = max(len(s) for s in seqs)
    input_ids = torch.tensor([list(s) + [pad] * (width - len(s)) for s in seqs], device=lm.device)
    attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=lm.device)
    with torch.inference_mode():
        logits = lm.model(input_ids=input_ids, attention_mask=attention).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        picked = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1).cpu()
    out = []
    for i, s in enumerate(seqs):
        lo = max(1, first_scored[i])
        out.append(picked[i, lo - 1 : len(s) - 1].tolist())
    return out


def perplexity(lm: LoadedModel, texts: Sequence[str], *, batch_size: int = 32, special_tokens: bool = False) -> float:
    """Token-weighted perplexity over all texts (exp of the mean negative log-likelihood)."""
    total, count = 0.0, 0
    for lps in token_logprobs(lm, texts, batch_size=batch_size, special_tokens=special_tokens):
        total -= sum(lps)
        count += len(lps)
    if count == 0:
        return float("nan")
    return math.exp(total / count)


def find_final_norm_and_head(model: Any) -> tuple[Any, Any]:
    """The final normalisation and the output head of a causal LM, found generically.

    GPT-2: transformer.ln_f + lm_head; Llama, Mistral, Qwen: model.norm + lm_head; GPT-NeoX:
    gpt_neox.final_layer_norm + embed_out. The head is `get_output_embeddings()`; the norm is the
    last normalisation module of the base model that is not inside a decoder layer.
    """
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError("model has no output head")
    base = getattr(model, "base_model", model)
    for attr in ("ln_f", "norm", "final_layer_norm", "final_layernorm", "ln_out"):
        module = getattr(base, attr, None)
        if isinstance(module, torch.nn.Module):
            return module, head
    candidates = [
        m for name, m in base.named_children() if "norm" in type(m).__name__.lower() or "norm" in name.lower()
    ]
    if candidates:
        return candidates[-1], head
    raise ValueError("cannot find the final normalisation of this architecture")
