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

With `never_seen_cap` (the default) the method takes the whole record: every PII span, and every
token of the person's name wherever a record writes it, with each distilled token's probability
capped at what the same token gets in the record's never-seen *twin* (the whole record about a
fictitious person), and the excess of the model's log-probability over that level a loss of its own.
Membership inference reads those log-probabilities; a distribution target alone barely sees them.

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
    # (N,) never-seen log-probability of each true token (never_seen_cap; NaN: none). A distribution
    # target barely sees a token the model gives 1% where the target gives 1e-7 (KL ~0.01 nats), yet
    # membership inference reads exactly that log-probability: so the excess over it is a loss too
    level: torch.Tensor | None = None


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


def cap_target(index: torch.Tensor, probs: torch.Tensor, truth: torch.Tensor, log_cap: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets (N, K) whose probability of each row's true token is at most exp(log_cap): the excess
    goes to the row's other tokens in proportion to what they had (evenly where they had none: a
    memorised token can hold all of a row). A true token outside the row's top K is already below
    any cap that matters."""
    index, probs = index.clone(), probs.clone()
    hit = index == truth[:, None]
    held = (probs * hit).sum(-1)
    new = torch.minimum(held, log_cap.exp())
    other = (probs * ~hit).sum(-1)  # the mass the rest really has (1 - held can round to 0 in float32)
    spread = (~hit).float() / (~hit).float().sum(-1, keepdim=True).clamp_min(1.0)  # where the rest has none
    scaled = probs * ((1.0 - new) / other.clamp_min(1e-12))[:, None]
    rest = torch.where((other > 1e-6)[:, None], scaled, spread * (1.0 - new)[:, None])
    probs = torch.where(hit, new[:, None], rest)
    return index, probs


def _level_excess(logits: torch.Tensor, target: SpanTarget, input_ids: torch.Tensor) -> torch.Tensor | None:
    """(N',) nats by which the model's log-probability of each true token is above its never-seen
    level (0 where below), over the tokens that have a level; None when none has."""
    if target.level is None:
        return None
    level = target.level.to(logits.device)
    known = ~torch.isnan(level)
    if not bool(known.any()):
        return None
    at = target.positions.to(logits.device)[known]
    logp = torch.log_softmax(logits[at].float(), dim=-1).gather(-1, input_ids[at + 1][:, None]).squeeze(-1)
    return torch.relu(logp - level[known])


def _twin_level(logp: list[torch.Tensor], twins: list[list[list[int]]], o: int, k: int) -> float | None:
    """Mean log-probability, over the twin records (logp[1:]: each one's per-token log-probabilities;
    twins: each one's occurrences' input positions), of token k of occurrence o (the occurrence's last
    token where a twin's is shorter); None when no twin has occurrence o."""
    found = []
    for d, occurrences in enumerate(twins):
        if o < len(occurrences) and occurrences[o]:
            at = occurrences[o][min(k, len(occurrences[o]) - 1)]
            found.append(float(logp[d + 1][at - 1]))
    return sum(found) / len(found) if found else None


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


def _name_positions(
    tokenizer: Any, prompt: str, completion: str, name: str, spans: list[tuple[int, int, str]] | None = None
) -> list[list[int]]:
    """Input positions (as data.encode lays out prompt + completion) of the tokens of each occurrence
    of `name` (in full, or its first or last part alone), in reading order. Position 0 is left out
    (nothing predicts it), but its occurrence stays, empty, so that the occurrences of a record and
    of its twin keep their order; a name inside one of the completion's `spans` (a value, which the
    twin rewrites whole) is not an occurrence."""
    parts = name.split()
    if not parts:
        return []
    alternatives = [re.escape(name)] + [rf"\b{re.escape(x)}\b" for x in dict.fromkeys((parts[0], parts[-1]))]
    pattern = re.compile("|".join(alternatives))
    prompt_enc = tokenizer(prompt, return_offsets_mapping=True) if prompt else None
    n_prompt = len(prompt_enc["input_ids"]) if prompt_enc is not None else 1
    if prompt_enc is not None and not prompt_enc["input_ids"]:
        n_prompt = 1
    completion_enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    out: list[list[int]] = []
    for text, enc, shift, held_out in ((prompt, prompt_enc, 0, ()), (completion, completion_enc, n_prompt, spans or ())):
        if enc is None:
            continue
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(a < end and b > start for a, b, _attr in held_out):
                continue
            out.append([shift + k for k, (a, b) in enumerate(enc["offset_mapping"])
                        if a < end and b > start and shift + k > 0])
    return out


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
    prompt, completion, spans = rewrite_record(item, keep, person, rng)
    kept = next(((a, b) for (a, b, _attr), old in zip(spans, _sorted_spans(item), strict=True) if old == keep), (0, 0))
    return prompt, completion, kept


def _sorted_spans(item: ForgetItem) -> list[tuple[int, int, str]]:
    """The record's spans in reading order; a span overlapping an earlier one is dropped."""
    out: list[tuple[int, int, str]] = []
    for span in sorted([*item.pii_spans, *item.context_spans]):
        if not out or span[0] >= out[-1][1]:
            out.append(span)
    return out


def rewrite_record(
    item: ForgetItem, keep: tuple[int, int, str] | None, person: Any, rng: random.Random
) -> tuple[str, str, list[tuple[int, int, str]]]:
    """(prompt, completion, where each of the record's spans (_sorted_spans) now lies) for the record
    about `person`: the name swapped everywhere and every span but `keep` replaced by the person's
    value of that attribute (or a random one of the same format). keep=None: the whole record is the
    never-seen person's (its twin)."""
    rules = _name_swapper(item.subject_name, person.name)
    prompt = _swap(item.prompt, rules)
    out: list[str] = []
    pos = 0
    spans: list[tuple[int, int, str]] = []
    for start, end, attribute in _sorted_spans(item):
        out.append(_swap(item.completion[pos:start], rules))
        old = item.completion[start:end]
        if (start, end, attribute) == keep:
            new = old
        else:
            try:
                new = str(person.attribute(attribute))
            except AttributeError:
                new = same_format_random(old, rng)
        at = sum(len(x) for x in out)
        spans.append((at, at + len(new), attribute))
        out.append(new)
        pos = end
    out.append(_swap(item.completion[pos:], rules))
    return prompt, "".join(out), spans


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
        wanted = set(self.ctx.spec.attributes) if not self.ctx.spec.never_seen_cap else set()  # (): every span
        people = self._fictitious()
        model, tokenizer = self.ctx.model, self.ctx.tokenizer
        was_training = model.training
        model.eval()
        self.targets: list[SpanTarget] = []
        # 1. every (forget item, targeted value, token of it): the teacher contexts, one per fictitious person
        # item, student positions, teacher inputs, the span
        pending: list[tuple[int, list[int], list[list[int]], tuple[int, int, str]]] = []
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
                pending.append((i, positions, contexts, (start, end, attribute)))
        # 2. the teacher's next-token distribution after each context, averaged over the people
        value_spans: list[tuple[int, int, str]] = []  # the span each target distils, for the caps
        for i, positions, contexts, span in pending:
            value_spans.append(span)
            n = len(positions)
            probs, hidden = self._next_token_probs(contexts)
            probs = probs.view(self.draws, n, -1).mean(0)
            top = torch.topk(probs, min(TOP_K, probs.shape[-1]), dim=-1)
            p = top.values / top.values.sum(-1, keepdim=True)
            mean_hidden = hidden.view(self.draws, n, *hidden.shape[1:]).mean(0) if self.hidden_weight > 0 else None
            entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
            self.targets.append(SpanTarget(i, torch.tensor(positions) - 1, top.indices.cpu(), p.cpu(), mean_hidden,
                                           entropy.cpu()))
        self._index_targets()
        if self.ctx.spec.never_seen_cap:
            self._apply_never_seen_caps(people, value_spans)
            self._index_targets()
        model.train(was_training)

    def _index_targets(self) -> None:
        """by_item: forget item -> the indices of its targets."""
        self.by_item: dict[int, list[int]] = {}
        for k, t in enumerate(self.targets):
            self.by_item.setdefault(t.item, []).append(k)

    def _apply_never_seen_caps(self, people: list[Any], value_spans: list[tuple[int, int, str]]) -> None:
        """Cap every distilled value token, and every token of the person's name wherever a forget
        record writes it (the question's prompt included), at what the same token of a never-seen
        person gets there: the same record about a fictitious person (its twin), the same value or
        name occurrence and token index, mean log-probability over the draws (the base model's).

        The counterfactual teacher alone leaves two kinds of familiarity that membership inference
        reads: the name (nothing distilled it; measured on the demo model, one subject: -3.9 nats per
        name token against -7.7 for never-seen names), and values whose letters the teacher still
        completes from memory (an address's street, read from its first letters: -3.3 against -8.3).
        A cap moves probability only downwards, onto the other tokens in the proportions the target
        already had, so a token that is already as unfamiliar as a never-seen one is left as it is
        and the target cannot overshoot."""
        tokenizer = self.ctx.tokenizer
        names: list[SpanTarget] = []
        for i, item in enumerate(self.ctx.forget_items):
            rng = random.Random(f"counterfactual-twin:{self.ctx.spec.seed}:{i}")
            order = _sorted_spans(item)
            mine = _name_positions(tokenizer, item.prompt, item.completion, item.subject_name, order)
            ids = list(self.ctx.forget[i].input_ids)
            inputs = [ids]
            twin_names: list[list[list[int]]] = []
            twin_spans: list[list[list[int]]] = []  # per draw, per span of `order`: input positions
            for person in rng.sample(people, self.draws):
                prompt, completion, spans = rewrite_record(item, None, person, rng)
                prompt_ids = list(tokenizer(prompt)["input_ids"]) if prompt else [tokenizer.bos_token_id]
                inputs.append(prompt_ids + list(tokenizer(completion, add_special_tokens=False)["input_ids"]))
                twin_names.append(_name_positions(tokenizer, prompt, completion, person.name, spans))
                twin_spans.append([_tokens_over(tokenizer, prompt, completion, (a, b))[0] for a, b, _ in spans])
            logp = self._token_logprobs(inputs)
            for k in self.by_item.get(i, []):  # the distilled values: cap their targets
                target = self.targets[k]
                if value_spans[k] not in order:  # overlapped by an earlier span: the twin has no such value
                    continue
                o = order.index(value_spans[k])
                caps = [_twin_level(logp, twin_spans, o, n) for n in range(len(target.positions))]
                truth = torch.tensor([ids[int(p) + 1] for p in target.positions])
                target.target_idx, target.target_p = cap_target(
                    target.target_idx, target.target_p, truth, torch.tensor([c if c is not None else 0.0 for c in caps]))
                target.entropy = -(target.target_p * target.target_p.clamp_min(1e-12).log()).sum(-1)
                target.level = torch.tensor([c if c is not None else float("nan") for c in caps])
            positions, caps = [], []
            for o, occurrence in enumerate(mine):
                for n, j in enumerate(occurrence):
                    c = _twin_level(logp, twin_names, o, n)
                    if c is not None:
                        positions.append(j)
                        caps.append(c)
            if not positions:
                continue
            # the name: the model's own distribution there (top K, the name token always kept), capped
            logits = self.ctx.model(input_ids=torch.tensor([ids], device=self.ctx.device)).logits[0]
            base = torch.softmax(logits[torch.tensor(positions, device=logits.device) - 1].float(), dim=-1).cpu()
            truth = torch.tensor([ids[j] for j in positions])
            rows = torch.arange(len(positions))
            rest = base.clone()
            rest[rows, truth] = -1.0
            top = torch.topk(rest, min(TOP_K, base.shape[-1]) - 1, dim=-1)
            index = torch.cat([truth[:, None], top.indices], dim=-1)
            held = base[rows, truth]
            others = top.values / top.values.sum(-1, keepdim=True).clamp_min(1e-12) * (1.0 - held)[:, None]
            index, probs = cap_target(index, torch.cat([held[:, None], others], dim=-1), truth, torch.tensor(caps))
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
            names.append(SpanTarget(i, torch.tensor(positions) - 1, index, probs, None, entropy, torch.tensor(caps)))
        self.targets.extend(names)

    def _token_logprobs(self, inputs: list[list[int]]) -> list[torch.Tensor]:
        """(T-1,) log-probability of each next input token, for each input (what the level needs: not
        the whole vocabulary at every position, which a large vocabulary would make gigabytes)."""
        out = []
        for ids in inputs:
            tensor = torch.tensor([ids], device=self.ctx.device)
            logits = self.ctx.model(input_ids=tensor).logits[0, :-1]
            out.append(torch.log_softmax(logits.float(), dim=-1).gather(-1, tensor[0, 1:, None]).squeeze(-1).cpu())
        return out

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
        return {"targets": [(t.item, t.positions, t.target_idx, t.target_p, t.hidden, t.entropy, t.level)
                            for t in self.targets]}

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
                    excess = _level_excess(logits[row], t, batch.input_ids[row])
                    if excess is not None:
                        total += float(excess.sum())
        self.ctx.model.train(was_training)
        return total / max(count, 1)

    def load_state(self, state: dict[str, Any]) -> None:
        self.targets = [SpanTarget(*t) for t in state["targets"]]
        self._index_targets()

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
                part = losses.soft_cross_entropy(
                    logits[row, at], target.target_idx.to(logits.device), target.target_p.to(logits.device)).mean()
                excess = _level_excess(logits[row], target, batch.input_ids[row])
                if excess is not None:
                    part = part + excess.pow(2).mean()
                parts.append(part)
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
