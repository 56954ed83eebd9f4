"""Counterfactual distillation: make the model answer about the person as it answers about someone it
never saw.

For every forget record and every targeted value in it, the base model is asked, once, what it
predicts at the value's tokens when the record is about a never-seen person instead: the name (full,
first and last) and every *other* value in the record are swapped for a fictitious person's, and only
the targeted value's own tokens are kept (teacher-forced), so the two texts line up token for token
there. The mean of those next-token distributions over a few fictitious people is the target; the
run minimises the cross-entropy from it to the model's distribution on the real record (KL to the
never-seen behaviour), with the retain anchor of the other methods.

Why this and not a push-down (ga, npo, floor): a push-down has no level to stop at, or a level per
token only, and both leave the person *marked* (the true value conspicuously unlikely: an overshoot)
and the association in the weights (fine-tuning on other people's data brings it back). The target
here is the behaviour of a model that never saw the person, by construction neither above nor below
it: the generic-prediction idea of Eldan & Russinovich (2023, "Who's Harry Potter?"), applied per
value with the base model itself as the never-seen reference.

Each targeted value is distilled with every *other* value of the person swapped out of the teacher's
context: a teacher that saw the person's phone number before the e-mail could recall the e-mail from
it (linkability), and the target would leak.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import torch

from unlearning_worker.data import ForgetItem
from unlearning_worker.leakage import same_format_random
from unlearning_worker.methods import UnlearningMethod, losses, register

COUNTERFACTUAL_SEED = 104_729  # fictitious people for the teacher: never the demo corpus's seed
TOP_K = 64  # teacher tokens kept per position (the rest of its mass is under 1e-3 on the demo model)


@dataclass
class SpanTarget:
    item: int  # forget item index
    positions: torch.Tensor  # (N,) positions in the student's input whose logits predict the value's tokens
    target_idx: torch.Tensor  # (N, K)
    target_p: torch.Tensor  # (N, K)
    hidden: torch.Tensor | None = None  # (N, L, D): the reference's hidden states there, layers 1..L
    entropy: torch.Tensor | None = None  # (N,) entropy of the target: cross-entropy minus it is the KL


def _tokens_over(
    tokenizer: Any, prompt: str, completion: str, span: tuple[int, int]
) -> tuple[list[int], list[int], list[int]]:
    """(input positions, token ids, start offsets in the completion) of the completion tokens
    overlapping `span`, laid out as data.encode lays out prompt + completion."""
    prompt_ids = tokenizer(prompt)["input_ids"] if prompt else []
    if not prompt_ids and tokenizer.bos_token_id is not None:
        prompt_ids = [tokenizer.bos_token_id]
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    start, end = span
    positions, ids, starts = [], [], []
    for index, ((a, b), token) in enumerate(zip(enc["offset_mapping"], enc["input_ids"], strict=True)):
        if a < end and b > start:
            positions.append(len(prompt_ids) + index)
            ids.append(token)
            starts.append(a)
    return positions, ids, starts


def never_seen_prefix(prefix: str, subject_name: str, person: Any, rng: random.Random) -> str:
    """The part of a value already written, as it would read for a never-seen person with a value the
    model never saw: the subject's name parts (an e-mail's "ada.quill") become the person's, and every
    digit becomes a random digit. Without this the reference recalls the rest of a memorised value
    from its first characters (measured: the base model asked about a never-seen name still ranked
    the subject's phone first of 500 candidates, teacher-forced on its own prefix)."""
    out = prefix
    for old, new in zip(subject_name.split(), person.name.split(), strict=False):
        out = out.replace(old.lower(), new.lower()).replace(old, new)
        out = re.sub(re.escape(old), new, out, flags=re.IGNORECASE)
    return "".join(rng.choice("0123456789") if ch.isdigit() else ch for ch in out)


def _name_swapper(old_name: str, new_name: str) -> list[tuple[re.Pattern[str], str]]:
    rules = [(re.compile(re.escape(old_name)), new_name)]
    old, new = old_name.split(), new_name.split()
    if old and new:
        rules.append((re.compile(rf"\b{re.escape(old[0])}\b"), new[0]))
        rules.append((re.compile(rf"\b{re.escape(old[-1])}\b"), new[-1]))
    return rules


def _swap(text: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, new in rules:
        text = pattern.sub(new, text)
    return text


def counterfactual_text(
    item: ForgetItem, keep: tuple[int, int, str], person: Any, rng: random.Random
) -> tuple[str, str, tuple[int, int]]:
    """(prompt, completion, span of the kept value) for the record about `person` instead of the
    subject: the name swapped everywhere, every span (targeted or context) but `keep` replaced by the
    person's value of that attribute (or a random one of the same format), the kept span unchanged."""
    rules = _name_swapper(item.subject_name, person.name)
    prompt = _swap(item.prompt, rules)
    out: list[str] = []
    pos = 0
    kept: tuple[int, int] = (0, 0)
    for start, end, attribute in sorted([*item.pii_spans, *item.context_spans]):
        if start < pos:
            continue
        out.append(_swap(item.completion[pos:start], rules))
        old = item.completion[start:end]
        if (start, end, attribute) == keep:
            at = sum(len(x) for x in out)
            kept = (at, at + len(old))
            out.append(old)
        else:
            try:
                out.append(str(person.attribute(attribute)))
            except AttributeError:
                out.append(same_format_random(old, rng))
        pos = end
    out.append(_swap(item.completion[pos:], rules))
    return prompt, "".join(out), kept


@register
class Counterfactual(UnlearningMethod):
    """Distil the base model's never-seen behaviour into the person's records (see module doc)."""

    name = "counterfactual"
    draws = 4  # fictitious people per value: their mean is the target (one person's quirks average out)

    def _fictitious(self) -> list[Any]:
        from pii.synth import generate_people

        known = {i.subject_name.casefold() for i in self.ctx.forget_items}
        retain_text = "\n".join(self.ctx.tokenizer.decode(e.input_ids) for e in self.ctx.retain[:5000])
        people = []
        for person in generate_people(200, seed=COUNTERFACTUAL_SEED + self.ctx.spec.seed):
            # never a name the model was trained on (as far as the retain set shows) or a subject
            if person.name.casefold() in known or person.name in retain_text:
                continue
            people.append(person)
        if len(people) < self.draws:
            raise ValueError("could not draw enough never-seen names for the counterfactual targets")
        return people

    @torch.no_grad()
    def prepare(self) -> None:
        for item in self.ctx.forget_items:
            if not item.subject_name.strip():
                raise ValueError("the counterfactual method needs the subject's name on every forget item")
        wanted = set(self.ctx.spec.attributes)
        people = self._fictitious()
        model, tokenizer = self.ctx.model, self.ctx.tokenizer
        was_training = model.training
        model.eval()
        self.targets: list[SpanTarget] = []
        # 1. every (forget item, targeted value, token of it): the teacher contexts, one per fictitious person
        pending: list[tuple[int, list[int], list[list[int]]]] = []  # item, student positions, teacher inputs
        for i, item in enumerate(self.ctx.forget_items):
            rng = random.Random(f"counterfactual:{self.ctx.spec.seed}:{i}")
            for start, end, attribute in sorted(item.pii_spans):
                if wanted and attribute not in wanted:
                    continue
                positions, _ids, starts = _tokens_over(tokenizer, item.prompt, item.completion, (start, end))
                if not positions:
                    continue
                contexts: list[list[int]] = []
                for person in rng.sample(people, self.draws):
                    prompt, completion, (kept, _kept_end) = counterfactual_text(item, (start, end, attribute), person, rng)
                    prompt_ids = list(tokenizer(prompt)["input_ids"]) if prompt else [tokenizer.bos_token_id]
                    for token_start in starts:
                        written = item.completion[start:token_start] if token_start > start else ""
                        cut = kept + min(0, token_start - start)  # a token may start on the space before the value
                        text = completion[:cut] + never_seen_prefix(written, item.subject_name, person, rng)
                        contexts.append(prompt_ids + list(tokenizer(text, add_special_tokens=False)["input_ids"]))
                pending.append((i, positions, contexts))
        # 2. the teacher's next-token distribution after each context, averaged over the people
        for i, positions, contexts in pending:
            n = len(positions)
            probs, hidden = self._next_token_probs(contexts)
            probs = probs.view(self.draws, n, -1).mean(0)
            top = torch.topk(probs, min(TOP_K, probs.shape[-1]), dim=-1)
            p = top.values / top.values.sum(-1, keepdim=True)
            mean_hidden = hidden.view(self.draws, n, *hidden.shape[1:]).mean(0) if self.hidden_weight > 0 else None
            entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
            self.targets.append(SpanTarget(i, torch.tensor(positions) - 1, top.indices.cpu(), p.cpu(), mean_hidden,
                                           entropy.cpu()))
        model.train(was_training)
        self.by_item: dict[int, list[int]] = {}
        for k, t in enumerate(self.targets):
            self.by_item.setdefault(t.item, []).append(k)

    @property
    def hidden_weight(self) -> float:
        return self.ctx.spec.hidden_weight

    def _next_token_probs(self, contexts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(contexts), V) next-token distributions after each context (right padding), and the
        (len(contexts), L, D) hidden states of layers 1..L at the last position."""
        out = []
        states = []
        pad = self.ctx.pad_id
        for lo in range(0, len(contexts), 64):
            chunk = contexts[lo : lo + 64]
            width = max(len(c) for c in chunk)
            ids = torch.tensor([c + [pad] * (width - len(c)) for c in chunk], device=self.ctx.device)
            mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in chunk], device=self.ctx.device)
            result = self.ctx.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            last = torch.tensor([len(c) - 1 for c in chunk], device=self.ctx.device)
            rows = torch.arange(len(chunk))
            out.append(torch.softmax(result.logits[rows, last].float(), dim=-1).cpu())
            states.append(torch.stack([h[rows, last].float() for h in result.hidden_states[1:]], dim=1).cpu())
        return torch.cat(out), torch.cat(states)

    def state(self) -> dict[str, Any]:
        return {"targets": [(t.item, t.positions, t.target_idx, t.target_p, t.hidden, t.entropy) for t in self.targets]}

    @torch.no_grad()
    def forget_gap(self) -> float | None:
        """Mean KL (nats per value token) from the never-seen targets to the model, over every target."""
        if not self.targets:
            return None
        was_training = self.ctx.model.training
        self.ctx.model.eval()
        total, count = 0.0, 0
        items = sorted(self.by_item)
        for lo in range(0, len(items), 32):
            chunk = items[lo : lo + 32]
            examples = [self.ctx.forget[i] for i in chunk]
            batch = self._batch(examples, [e.answer_mask for e in examples], [1.0] * len(chunk))
            logits = self.ctx.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            for row, i in enumerate(chunk):
                for k in self.by_item[i]:
                    t = self.targets[k]
                    ce = losses.soft_cross_entropy(logits[row, t.positions.to(logits.device)],
                                                   t.target_idx.to(logits.device), t.target_p.to(logits.device))
                    entropy = t.entropy.to(ce.device) if t.entropy is not None else torch.zeros_like(ce)
                    total += float((ce - entropy).sum())
                    count += int(ce.numel())
        self.ctx.model.train(was_training)
        return total / max(count, 1)

    def load_state(self, state: dict[str, Any]) -> None:
        self.targets = [SpanTarget(*t) for t in state["targets"]]
        self.by_item = {}
        for k, t in enumerate(self.targets):
            self.by_item.setdefault(t.item, []).append(k)

    def forget_loss(self, idx: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rows = [i for i in idx if i in self.by_item]
        if not rows:
            zero = torch.zeros((), device=self.ctx.device, requires_grad=True)
            return zero, {"forget": 0.0}
        examples = [self.ctx.forget[i] for i in rows]
        batch = self._batch(examples, [e.answer_mask for e in examples], self.ctx.forget_weights(rows))
        use_hidden = self.hidden_weight > 0
        result = self.ctx.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                output_hidden_states=use_hidden)
        logits = result.logits
        per_row: list[torch.Tensor] = []
        hidden_rows: list[torch.Tensor] = []
        for row, i in enumerate(rows):
            parts, hidden_parts = [], []
            for k in self.by_item[i]:
                target = self.targets[k]
                at = target.positions.to(logits.device)
                parts.append(losses.soft_cross_entropy(
                    logits[row, at], target.target_idx.to(logits.device), target.target_p.to(logits.device)).mean())
                if use_hidden and target.hidden is not None:
                    mine = torch.stack([h[row, at] for h in result.hidden_states[1:]], dim=1).float()
                    ref = target.hidden.to(mine.device)
                    # relative squared error per layer: every layer counts alike, whatever its scale
                    err = (mine - ref).pow(2).sum(-1) / ref.pow(2).sum(-1).clamp_min(1e-6)
                    hidden_parts.append(err.mean())
            per_row.append(torch.stack(parts).mean())
            if hidden_parts:
                hidden_rows.append(torch.stack(hidden_parts).mean())
        loss = losses.weighted_mean(torch.stack(per_row), batch.weights)
        out = {"forget": float(loss.detach())}
        if hidden_rows:
            hidden_loss = losses.weighted_mean(torch.stack(hidden_rows), batch.weights)
            out["hidden"] = float(hidden_loss.detach())
            loss = loss + self.hidden_weight * hidden_loss
        return loss, out
