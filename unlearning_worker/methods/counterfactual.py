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
capped at what a never-seen person's gets in the record's *twin* (the whole record about a
fictitious person), and the model's log-probability of the true token held at its level by a loss of
its own. Membership inference reads those log-probabilities; a distribution target alone barely
sees them. Three things make that level the right one (each measured on the demo model, three
subjects; docs/DESIGN-NOTES.md):
- values meet their twins run by run (digits, letters, the rest), not token by token: the sum over
  a run is what a model spends on it whatever the tokens (`value_levels`);
- the level is held both ways where the target keeps the token, not only as a ceiling: one-sided,
  the values sank below where random values sit (an overshoot, which marks the person too);
- digit runs are held at what other digits of the format get in the same record under the model
  as it is at each check (`on_check`): what the candidate-rank attacker compares them with.
And every record is distilled in each framing an attacker can query it in: as trained and without
the tokenizer's BOS token (`framings`).

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unlearning_worker.data import Example, ForgetItem, prompt_ids
from unlearning_worker.leakage import same_format_random
from unlearning_worker.methods import UnlearningMethod, losses, register

COUNTERFACTUAL_SEED = 104_729  # fictitious people for the teacher: never the demo corpus's seed
# versions of each record with other digits in one value, whose mean is a digit run's level: a memorising model's digit
# predictions are peaked, the log-probability of a random 9-digit value varies by ~15 nats (sd, demo
# model), so the mean of 4 would stray by ~7.5 nats, of 16 by ~3.7
DIGIT_DRAWS = 16
TOKENS_PER_BATCH = 2048  # positions per forward pass when only the true tokens' log-probabilities are wanted
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
    # how the record is framed for this target: the number of leading tokens dropped from it (0: as
    # trained; 1: without the tokenizer's BOS token, see framings)
    shift: int = 0
    # (N,) True where the true token is held *at* its level, not only below it: where the target keeps
    # the token (its level is then the log of its target probability). One-sided, the level loss
    # pushed values on below the never-seen level and nothing brought them back (the target
    # distribution's pull on a 1e-5 token is nil): measured, candidate-rank z -1.8 against the
    # control's 0.0 and one value last of 1,000 (demo model, three subjects)
    hold: torch.Tensor | None = None
    # (N,) True for the tokens held together, as a sum (a value's digit tokens, see _hold_digits)
    pooled: torch.Tensor | None = None


def framings(tokenizer: Any, prompt: str, example: Example) -> tuple[int, ...]:
    """The framings a forget record is distilled under, as the number of its leading tokens dropped:
    the record as it was trained (0) and, where the tokenizer puts a BOS token before a non-empty
    prompt, the same text without it (1). (Behind an empty prompt the BOS is all the first token
    follows.)

    The attacker chooses how to frame a query, and a model trained with BOS recalls a value without
    it too; targets met only behind the BOS leave the value there. Measured on the demo model (three
    subjects, seed 2): a value distilled to -10.7 nats behind BOS was still at -3.4 without it (rank 6
    of 100 candidates, as before unlearning), and relearning and 4-bit quantization ranked it first."""
    bos = tokenizer.bos_token_id
    if bos is None or not prompt or len(example.input_ids) < 3 or example.input_ids[0] != bos:
        return (0,)
    return (0, 1)


def framed(example: Example, shift: int) -> Example:
    """The example without its first `shift` tokens."""
    if not shift:
        return example
    return Example(example.input_ids[shift:], example.answer_mask[shift:], example.span_mask[shift:])


def _tokens_over(
    tokenizer: Any, prompt: str, completion: str, span: tuple[int, int]
) -> tuple[list[int], list[int], list[int], list[int]]:
    """(input positions, token ids, start and end offsets in the completion) of the completion tokens
    overlapping `span`, laid out as data.encode lays out prompt + completion."""
    head = prompt_ids(tokenizer, prompt)
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    start, end = span
    positions, ids, starts, ends = [], [], [], []
    for index, ((a, b), token) in enumerate(zip(enc["offset_mapping"], enc["input_ids"], strict=True)):
        if a < end and b > start:
            positions.append(len(head) + index)
            ids.append(token)
            starts.append(a)
            ends.append(b)
    return positions, ids, starts, ends


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


def _level_excess(logits: torch.Tensor, true_ids: torch.Tensor, target: SpanTarget, *, ceiling: bool = False
                  ) -> torch.Tensor | None:
    """(N',) nats by which the model's log-probability of each true token is off its never-seen level:
    above it (0 where below), or either way where the target holds it there (`ceiling`: above it
    only, everywhere); the pooled tokens count once, by how far their sum is off the sum of their
    levels; over the tokens that have a level; None when none has. `logits` (N, V) are the model's at
    the target's positions and `true_ids` (N,) the tokens they predict (the record's next tokens)."""
    if target.level is None:
        return None
    level = target.level.to(logits.device)
    known = ~torch.isnan(level)
    if not bool(known.any()):
        return None
    logp = torch.log_softmax(logits[known].float(), dim=-1).gather(-1, true_ids[known][:, None]).squeeze(-1)
    off = logp - level[known]
    if target.hold is None:
        return torch.relu(off)
    each = torch.relu(off) if ceiling else torch.where(target.hold.to(logits.device)[known], off.abs(), torch.relu(off))
    if target.pooled is None:
        return each
    pooled = target.pooled.to(logits.device)[known]
    if not bool(pooled.any()):
        return each
    total = off[pooled].sum()
    return torch.cat([each[~pooled], (torch.relu(total) if ceiling else total.abs())[None]])


def _huber(excess: torch.Tensor) -> torch.Tensor:
    """Squared within a nat, linear beyond: a value 10 nats off its level does not pull 10x harder
    than one 1 nat off (measured, squared: the first 10 steps took the retain exact answers from 0.80
    to 0.44; with this, to 0.61, and the gap after 200 steps was lower, 0.67 against 0.75)."""
    return torch.where(excess < 1.0, excess.pow(2), 2.0 * excess - 1.0)


def hold_at_target(target: SpanTarget, truth: torch.Tensor, caps: torch.Tensor) -> None:
    """Set `target`'s level (caps: the never-seen level of each true token, NaN: none): where the
    (capped) target keeps the true token, the log of its target probability, held both ways; else the
    cap, as a ceiling."""
    hit = target.target_idx == truth[:, None]
    held = (target.target_p * hit).sum(-1)
    hold = hit.any(-1) & (held > 0) & ~torch.isnan(caps)
    target.level = torch.where(hold, held.clamp_min(1e-30).log(), caps)
    target.hold = hold


@dataclass
class DigitPlan:
    """One value target whose digit tokens are held at what other digits of the format get in their
    place: the target's index and framing, the value as its record writes it, the twins' values with
    their log-probabilities (the level of the value's other runs), and the record with other digits
    in this value only (`inputs`, so framed; `values`: the value there, positions as data.encode lays
    them out)."""

    target: int
    shift: int
    mine: ValueTokens
    twins: list[tuple[ValueTokens, list[float]]]
    inputs: list[list[int]]
    values: list[ValueTokens]


@dataclass
class ValueTokens:
    """A value as one record writes it: its text, where it starts in the completion, and the
    (start, end) completion offsets and input positions of the tokens over it."""

    text: str
    start: int
    offsets: list[tuple[int, int]]
    positions: list[int]


def _value_tokens(tokenizer: Any, prompt: str, completion: str, span: tuple[int, int, str] | tuple[int, int]
                  ) -> ValueTokens:
    positions, _ids, starts, ends = _tokens_over(tokenizer, prompt, completion, (span[0], span[1]))
    return ValueTokens(completion[span[0] : span[1]], span[0], list(zip(starts, ends, strict=True)), positions)


def _segment_keys(text: str) -> list[tuple[str, int]]:
    """For each character: (its class, the index of its run among the runs of that class), the
    classes being digits, letters and anything else. Two values of one format meet run by run: the
    third digit group of one phone number with the third of another, an e-mail's digits with the
    other's digits, whatever their tokens."""
    keys: list[tuple[str, int]] = []
    runs: dict[str, int] = {}
    previous = ""
    for ch in text:
        kind = "d" if ch.isdigit() else "a" if ch.isalpha() else "o"
        if kind != previous:
            runs[kind] = runs.get(kind, -1) + 1
            previous = kind
        keys.append((kind, runs[kind]))
    return keys


def _char_logprobs(value: ValueTokens, token_logprobs: list[float]) -> list[float]:
    """Each character's share of the log-probability of the token over it (a token's log-probability
    spread evenly over its characters inside the value)."""
    out = [0.0] * len(value.text)
    end = value.start + len(value.text)
    for (a, b), lp in zip(value.offsets, token_logprobs, strict=True):
        lo, hi = max(a, value.start), min(b, end)
        for j in range(lo, hi):
            out[j - value.start] = lp / (hi - lo)
    return out


def _run_levels(sources: list[tuple[ValueTokens, list[float]]]) -> tuple[dict[tuple[str, int], float], dict[str, float]]:
    """Per character, the mean log-probability of each run (and of each class) over `sources` (values
    and the log-probabilities of their tokens)."""
    by_run: dict[tuple[str, int], list[float]] = {}
    by_kind: dict[str, list[float]] = {}
    for value, logprobs in sources:
        per_run: dict[tuple[str, int], list[float]] = {}
        for key, lp in zip(_segment_keys(value.text), _char_logprobs(value, logprobs), strict=True):
            per_run.setdefault(key, []).append(lp)
        for key, lps in per_run.items():
            by_run.setdefault(key, []).append(sum(lps) / len(lps))
            by_kind.setdefault(key[0], []).append(sum(lps) / len(lps))
    return ({k: sum(v) / len(v) for k, v in by_run.items()}, {k: sum(v) / len(v) for k, v in by_kind.items()})


def value_levels(mine: ValueTokens, twins: list[tuple[ValueTokens, list[float]]],
                 alternatives: list[tuple[ValueTokens, list[float]]] | None = None) -> list[float | None]:
    """The never-seen log-probability of each of `mine`'s tokens: the sum, over the token's characters,
    of what a character of the same run gets in the twins' values (the twin value's run log-probability
    per character, mean over the twins that have the run; a run no twin has takes its class's mean).
    With `alternatives` (the same record with other digits of the format in place of the value's),
    the digit runs take what those digits get there instead.

    Aligning token by token would compare a value's "853" with a twin's "8" where the two tokenise
    differently (digits merge unevenly), and give a level far above or below the never-seen one: the
    sum over a run is what a model spends on it whatever the tokens (measured on the demo model: a
    two-digit e-mail suffix got -15.3 nats from the twins' name tokens)."""
    by_run, by_kind = _run_levels(twins)
    if alternatives:
        digit_runs, digit_kind = _run_levels(alternatives)
        by_run = {**{k: v for k, v in by_run.items() if k[0] != "d"}, **{k: v for k, v in digit_runs.items() if k[0] == "d"}}
        by_kind = {**by_kind, **{k: v for k, v in digit_kind.items() if k == "d"}}
    keys = _segment_keys(mine.text)
    end = mine.start + len(mine.text)
    out: list[float | None] = []
    for a, b in mine.offsets:
        total, known = 0.0, True
        for j in range(max(a, mine.start), min(b, end)):
            key = keys[j - mine.start]
            found = by_run.get(key, by_kind.get(key[0]))
            if found is None:
                known = False
                break
            total += found
        out.append(total if known and b > mine.start and a < end else None)
    return out


def random_digits(text: str, span: tuple[int, int], rng: random.Random, donors: Sequence[str] = ()) -> str:
    """`text` with the digits in `span` replaced (the same length: everything stays where it is): each
    run of digits by the run of the same index and length in a random donor value (values of the same
    format, never the subject's), else by random digits; never the value itself: a one-digit e-mail
    suffix is drawn again one time in ten, and its record then holds the memorised digit at its own
    log-probability (demo model, P000159: one e-mail record held the suffix at -0.0 nats where the other
    took it to -8.6, and the suffix ranked first of its 10 candidates on the model, after relearning
    and under int4, z 1.7-2.6). Donors keep the format's own distribution (a
    month is 01-12, a year 19xx): uniform digits are values no one has, which the model rightly finds
    unlikely, and the true value held at their level sank below the attacker's plausible decoys
    (demo model, three subjects: mean z -0.4 against the control's 0)."""
    runs = [re.findall(r"\d+", d) for d in donors]
    matches = list(re.finditer(r"\d+", text[span[0] : span[1]]))
    out = list(text)
    for _attempt in range(50):  # never the value itself: its level would be its own log-probability
        for k, match in enumerate(matches):
            a, b = span[0] + match.start(), span[0] + match.end()
            pool = [r[k] for r in runs if len(r) > k and len(r[k]) == b - a]
            new = rng.choice(pool) if pool else "".join(rng.choice("0123456789") for _ in range(b - a))
            out[a:b] = list(new)
        if not matches or out[span[0] : span[1]] != list(text[span[0] : span[1]]):
            return "".join(out)
    last = span[0] + matches[-1].end() - 1  # donors that all share the value: one digit moved on
    out[last] = str((int(text[last]) + 1 + rng.randrange(9)) % 10)
    return "".join(out)


def _donors(people: list[Any], attribute: str) -> list[str]:
    """The fictitious people's values of `attribute` (none where the generator has no such attribute)."""
    out = []
    for person in people:
        try:
            out.append(str(person.attribute(attribute)))
        except AttributeError:
            return []
    return out


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


def _shifted(occurrences: list[list[int]], shift: int) -> list[list[int]]:
    """Input positions in the framing that drops the first `shift` tokens: a position left with nothing
    before it is dropped, its occurrence kept (possibly empty) so that occurrences stay in order."""
    return [[j - shift for j in occurrence if j - shift > 0] for occurrence in occurrences]


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


def never_seen_people(tokenizer: Any, forget: Sequence[ForgetItem], retain: Sequence[Example], *, seed: int,
                      count: int = 200) -> list[Any]:
    """Fictitious people (pii.synth) whose names are neither a subject's nor found in the retain
    records (the first 5,000, as far as they show what the model was trained on)."""
    from pii.synth import generate_people

    known = {i.subject_name.casefold() for i in forget}
    retain_text = "\n".join(tokenizer.decode(e.input_ids) for e in retain[:5000])
    return [p for p in generate_people(count, seed=seed) if p.name.casefold() not in known and p.name not in retain_text]


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
    kept = next(((a, b) for (a, b, _attr), old in zip(spans, sorted_spans(item), strict=True) if old == keep), (0, 0))
    return prompt, completion, kept


def sorted_spans(item: ForgetItem) -> list[tuple[int, int, str]]:
    """The record's spans in reading order; a span overlapping an earlier one is dropped."""
    out: list[tuple[int, int, str]] = []
    for span in sorted([*item.pii_spans, *item.context_spans]):
        if not out or span[0] >= out[-1][1]:
            out.append(span)
    return out


def rewrite_record(
    item: ForgetItem, keep: tuple[int, int, str] | None, person: Any, rng: random.Random
) -> tuple[str, str, list[tuple[int, int, str]]]:
    """(prompt, completion, where each of the record's spans (sorted_spans) now lies) for the record
    about `person`: the name swapped everywhere and every span but `keep` replaced by the person's
    value of that attribute (or a random one of the same format). keep=None: the whole record is the
    never-seen person's (its twin)."""
    rules = _name_swapper(item.subject_name, person.name)
    prompt = _swap(item.prompt, rules)
    out: list[str] = []
    pos = 0
    spans: list[tuple[int, int, str]] = []
    for start, end, attribute in sorted_spans(item):
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
    _ceiling = False  # levels are ceilings only (on the in-loop attacker's copy: relearned_forget_loss)

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        if ctx.spec.never_seen_sample:
            self.draws = 1  # one never-seen person per record: the teacher and the twin alike (_people_for)

    def _people_for(self, i: int, people: list[Any], rng: random.Random) -> list[Any]:
        """The fictitious people forget item i is distilled towards: `draws` of them from `rng`, or with
        never_seen_sample one, the same for the teacher and the twin."""
        if self.ctx.spec.never_seen_sample:
            return [random.Random(f"counterfactual-person:{self.ctx.spec.seed}:{i}").choice(people)]
        return rng.sample(people, self.draws)

    def _fictitious(self) -> list[Any]:
        people = never_seen_people(self.ctx.tokenizer, self.ctx.forget_items, self.ctx.retain,
                                   seed=COUNTERFACTUAL_SEED + self.ctx.spec.seed)
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
        # item, student positions, teacher inputs, the span, the framing
        pending: list[tuple[int, list[int], list[list[int]], tuple[int, int, str], int]] = []
        for i, item in enumerate(self.ctx.forget_items):
            shifts = framings(tokenizer, item.prompt, self.ctx.forget[i])
            rng = random.Random(f"counterfactual:{self.ctx.spec.seed}:{i}")
            for start, end, attribute in sorted(item.pii_spans):
                if wanted and attribute not in wanted:
                    continue
                positions, _ids, starts, _ends = _tokens_over(tokenizer, item.prompt, item.completion, (start, end))
                if not positions:
                    continue
                contexts: list[list[int]] = []
                for person in self._people_for(i, people, rng):
                    prompt, completion, (kept, _kept_end) = counterfactual_text(item, (start, end, attribute), person, rng)
                    head = prompt_ids(tokenizer, prompt)
                    for token_start in starts:
                        written = item.completion[start:token_start] if token_start > start else ""
                        cut = kept + min(0, token_start - start)  # a token may start on the space before the value
                        text = completion[:cut] + never_seen_prefix(written, item.subject_name, person, rng)
                        contexts.append(head + list(tokenizer(text, add_special_tokens=False)["input_ids"]))
                for shift in shifts:  # the teacher framed as the student is
                    pending.append((i, [x - shift for x in positions], [c[shift:] for c in contexts],
                                    (start, end, attribute), shift))
        # 2. the teacher's next-token distribution after each context, averaged over the people
        value_spans: list[tuple[int, int, str]] = []  # the span each target distils, for the caps
        for i, positions, contexts, span, shift in pending:
            value_spans.append(span)
            n = len(positions)
            probs, hidden = self._next_token_probs(contexts)
            probs = probs.view(self.draws, n, -1).mean(0)
            top = torch.topk(probs, min(TOP_K, probs.shape[-1]), dim=-1)
            p = top.values / top.values.sum(-1, keepdim=True)
            mean_hidden = hidden.view(self.draws, n, *hidden.shape[1:]).mean(0) if self.hidden_weight > 0 else None
            entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
            self.targets.append(SpanTarget(i, torch.tensor(positions) - 1, top.indices.cpu(), p.cpu(), mean_hidden,
                                           entropy.cpu(), shift=shift))
        self._index_targets()
        self.digit_plans: list[DigitPlan] = []
        if self.ctx.spec.never_seen_cap:
            self._apply_never_seen_caps(people, value_spans)
            self._index_targets()
            self._hold_digits()
        model.train(was_training)

    def on_check(self) -> None:
        self._hold_digits()

    def relearned_forget_loss(self, idx: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The forget loss on the in-loop attacker's fine-tuned copy (engine.RelearningAdversary, now
        the model): relative to what the copy itself gives other values, and only where the person's
        values stand above it. A fine-tune on other people's records lifts every value of the format,
        a never-seen person's too, so levels read under the model being unlearned would call that
        lift a leak and push the person's values below a never-seen level (an overshoot, which marks
        the person): the digit levels are re-measured under the copy (what other digits of the format
        get in the same record there, as the candidate-rank attacker compares them), and every level
        is a ceiling, not a hold. The levels as they were are put back afterwards."""
        items = {i for i in idx if i in self.by_item}
        saved = [(t, t.level, t.hold, t.pooled) for k in sorted({k for i in items for k in self.by_item[i]})
                 for t in [self.targets[k]]]
        for t, level, hold, pooled in saved:
            t.level = level.clone() if level is not None else None
            t.hold = hold.clone() if hold is not None else None
            t.pooled = pooled.clone() if pooled is not None else None
        self._ceiling = True
        try:
            self._hold_digits(items)
            return self.forget_loss(idx, step)
        finally:
            self._ceiling = False
            for t, level, hold, pooled in saved:
                t.level, t.hold, t.pooled = level, hold, pooled

    @torch.no_grad()
    def _hold_digits(self, items: set[int] | None = None) -> None:
        """Hold the value tokens that write digits, together (their sum), at what other digits of the
        format (random_digits' donors) get in the same place of the same record under the model as it
        is now (two-sided): the candidate-rank attacker compares the true value with other values of
        the format in the person's own context, under the model being attacked, by the sum over the
        value. (The sum, not each token at an even share of its run: a memorising model spends its
        digits unevenly, the first cheap and the next dear; on the demo model the two measured alike,
        mean z -0.42 on three subjects with uniform random digits.)

        A level read off never-seen people once, under the base model, missed that comparison: after
        unlearning, other digits in the person's records were more likely than a never-seen person's
        digits under the base model, and the true values, held at the latter, ranked below them (demo
        model, three subjects: mean z -1.2, the social security numbers at -2.2 and -2.3, where the
        never-seen control is at 0). With donor digits, re-measured at every check: mean z +0.03 on
        those three subjects, +0.06 on another one (diagnostic rank over the attack's prompts)."""
        plans = [plan for plan in self.digit_plans if items is None or self.targets[plan.target].item in items]
        if not plans:
            return
        was_training = self.ctx.model.training
        self.ctx.model.eval()
        logp = self._token_logprobs([x for plan in plans for x in plan.inputs])  # one batched pass
        at = 0
        for plan in plans:
            mine, rows = plan.mine, logp[at : at + len(plan.inputs)]
            at += len(plan.inputs)
            alternatives = [(value, [float(row[x - plan.shift - 1]) for x in value.positions])
                            for value, row in zip(plan.values, rows, strict=True) if value.positions]
            levels = value_levels(mine, plan.twins, alternatives)
            target = self.targets[plan.target]
            assert target.level is not None and target.hold is not None
            if target.pooled is None:
                target.pooled = torch.zeros(len(target.level), dtype=torch.bool)
            for n, (a, b) in enumerate(mine.offsets):
                digits = any(ch.isdigit() for ch in mine.text[max(0, a - mine.start) : b - mine.start])
                if digits and levels[n] is not None:
                    target.level[n] = float(levels[n])  # type: ignore[arg-type]
                    target.hold[n] = True
                    target.pooled[n] = True
        self.ctx.model.train(was_training)

    def _index_targets(self) -> None:
        """by_item: forget item -> the indices of its targets; by_view: (forget item, framing) -> the same."""
        self.by_item: dict[int, list[int]] = {}
        self.by_view: dict[tuple[int, int], list[int]] = {}
        for k, t in enumerate(self.targets):
            self.by_item.setdefault(t.item, []).append(k)
            self.by_view.setdefault((t.item, t.shift), []).append(k)
        self._shifts: dict[int, list[int]] = {}
        for i, shift in sorted(self.by_view):
            self._shifts.setdefault(i, []).append(shift)

    def _views(self, items: list[int]) -> list[tuple[int, int]]:
        """The (forget item, framing) rows of a batch over `items`: every framing of each."""
        return [(i, shift) for i in items for shift in self._shifts.get(i, [])]

    def _view_batch(self, views: list[tuple[int, int]]) -> Any:
        examples = [framed(self.ctx.forget[i], shift) for i, shift in views]
        return self._batch(examples, [e.answer_mask for e in examples], self.ctx.forget_weights([i for i, _ in views]))

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
        # one never-seen person's levels (a sample) or the mean over the draws (see spec.never_seen_sample)
        keep = 1 if self.ctx.spec.never_seen_sample else None
        for i, item in enumerate(self.ctx.forget_items):
            rng = random.Random(f"counterfactual-twin:{self.ctx.spec.seed}:{i}")
            order = sorted_spans(item)
            mine = _name_positions(tokenizer, item.prompt, item.completion, item.subject_name, order)
            ids = list(self.ctx.forget[i].input_ids)
            inputs = [ids]
            values = [_value_tokens(tokenizer, item.prompt, item.completion, span) for span in order]
            twin_names: list[list[list[int]]] = []
            twin_values: list[list[ValueTokens]] = []  # per draw, per span of `order`
            for person in self._people_for(i, people, rng):
                prompt, completion, spans = rewrite_record(item, None, person, rng)
                head = prompt_ids(tokenizer, prompt)
                inputs.append(head + list(tokenizer(completion, add_special_tokens=False)["input_ids"]))
                twin_names.append(_name_positions(tokenizer, prompt, completion, person.name, spans))
                twin_values.append([_value_tokens(tokenizer, prompt, completion, span) for span in spans])
            own_prompt = prompt_ids(tokenizer, item.prompt)
            alternatives: dict[int, tuple[list[list[int]], list[ValueTokens]]] = {}
            for o, span in enumerate(order):
                # the record with other digits of the format in this value only (the attacker's decoys
                # sit in the true record): what they get there, re-measured at every check (on_check)
                if not any(ch.isdigit() for ch in values[o].text):
                    continue
                alt_rng = random.Random(f"counterfactual-digits:{self.ctx.spec.seed}:{i}:{o}")
                donors = _donors(people, span[2])
                texts = [random_digits(item.completion, (span[0], span[1]), alt_rng, donors) for _ in range(DIGIT_DRAWS)]
                alternatives[o] = ([own_prompt + list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts],
                                   [_value_tokens(tokenizer, item.prompt, t, span) for t in texts])
            for shift in framings(tokenizer, item.prompt, self.ctx.forget[i]):
                logp = self._token_logprobs([x[shift:] for x in inputs])
                for k in self.by_item.get(i, []):  # the distilled values: cap their targets
                    target = self.targets[k]
                    if target.shift != shift or value_spans[k] not in order:  # overlapped by an earlier span
                        continue
                    o = order.index(value_spans[k])
                    twins = [(v[o], [float(logp[d + 1][x - shift - 1]) for x in v[o].positions])
                             for d, v in enumerate(twin_values) if v[o].positions][:keep]
                    self._cap(target, inputs[0][shift:], value_levels(values[o], twins))
                    if o in alternatives:
                        alt_inputs, alt_values = alternatives[o]
                        self.digit_plans.append(DigitPlan(k, shift, values[o], twins,
                                                          [x[shift:] for x in alt_inputs][:keep], alt_values[:keep]))
                names.extend(self._name_targets(i, shift, inputs[0][shift:], logp, _shifted(mine, shift),
                                                [_shifted(t, shift) for t in twin_names][:keep]))
        self.targets.extend(names)

    @staticmethod
    def _cap(target: SpanTarget, ids: list[int], caps: list[float | None]) -> None:
        """Cap `target`'s true tokens (ids: its record in its framing) at `caps` (None: no cap)."""
        truth = torch.tensor([ids[int(p) + 1] for p in target.positions])
        target.target_idx, target.target_p = cap_target(
            target.target_idx, target.target_p, truth, torch.tensor([c if c is not None else 0.0 for c in caps]))
        target.entropy = -(target.target_p * target.target_p.clamp_min(1e-12).log()).sum(-1)
        hold_at_target(target, truth, torch.tensor([c if c is not None else float("nan") for c in caps]))

    def _name_targets(self, i: int, shift: int, ids: list[int], logp: list[torch.Tensor], mine: list[list[int]],
                      twin_names: list[list[list[int]]]) -> list[SpanTarget]:
        """Forget item i's name targets in framing `shift` (ids: the record so framed; logp: the per-token
        log-probabilities of the record and then its twins; positions so framed)."""
        positions, caps = [], []
        for o, occurrence in enumerate(mine):
            for n, j in enumerate(occurrence):
                c = _twin_level(logp, twin_names, o, n)
                if c is not None:
                    positions.append(j)
                    caps.append(c)
        if not positions:
            return []
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
        target = SpanTarget(i, torch.tensor(positions) - 1, index, probs, None, entropy, None, shift)
        hold_at_target(target, truth, torch.tensor(caps))
        return [target]

    def _token_logprobs(self, inputs: list[list[int]]) -> list[torch.Tensor]:
        """(T-1,) log-probability of each next input token, for each input (what the level needs: not
        the whole vocabulary at every position, which a large vocabulary would make gigabytes), in
        right-padded batches of at most TOKENS_PER_BATCH positions."""
        order = sorted(range(len(inputs)), key=lambda n: len(inputs[n]))  # similar lengths pad little
        results: dict[int, torch.Tensor] = {}
        lo = 0
        while lo < len(order):
            hi = lo + 1
            while hi < len(order) and (hi - lo + 1) * len(inputs[order[hi]]) <= TOKENS_PER_BATCH:
                hi += 1
            chunk = [inputs[n] for n in order[lo:hi]]
            width = max(len(c) for c in chunk)
            pad = self.ctx.pad_id
            ids = torch.tensor([c + [pad] * (width - len(c)) for c in chunk], device=self.ctx.device)
            mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in chunk], device=self.ctx.device)
            logits = self.ctx.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            picked = logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
            for row, n in enumerate(order[lo:hi]):
                results[n] = picked[row, : len(inputs[n]) - 1].detach().cpu()
            lo = hi
        return [results[n] for n in range(len(inputs))]

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
        return {"targets": [(t.item, t.positions, t.target_idx, t.target_p, t.hidden, t.entropy, t.level, t.shift,
                             t.hold, t.pooled)
                            for t in self.targets], "digit_plans": self.digit_plans}

    @torch.no_grad()
    def forget_gap(self) -> float | None:
        """Mean KL (nats per value token) from the never-seen targets to the model, over every target."""
        if not self.targets:
            return None
        was_training = self.ctx.model.training
        self.ctx.model.eval()
        total, count = 0.0, 0
        views = sorted(self.by_view)
        for lo in range(0, len(views), 32):
            chunk = views[lo : lo + 32]
            batch = self._view_batch(chunk)
            logits = self.ctx.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            for row, view in enumerate(chunk):
                for k in self.by_view[view]:
                    t = self.targets[k]
                    at = t.positions.to(logits.device)
                    ce = losses.soft_cross_entropy(logits[row, at], t.target_idx.to(logits.device),
                                                   t.target_p.to(logits.device))
                    entropy = t.entropy.to(ce.device) if t.entropy is not None else torch.zeros_like(ce)
                    total += float((ce - entropy).sum())
                    count += int(ce.numel())
                    excess = _level_excess(logits[row, at], batch.input_ids[row, at + 1], t)
                    if excess is not None:
                        total += float(excess.sum())
        self.ctx.model.train(was_training)
        return total / max(count, 1)

    def load_state(self, state: dict[str, Any]) -> None:
        self.targets = [SpanTarget(*t) for t in state["targets"]]
        self.digit_plans = list(state.get("digit_plans", []))
        self._index_targets()

    def forget_loss(self, idx: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rows = self._views([i for i in idx if i in self.by_item])
        if not rows:
            zero = torch.zeros((), device=self.ctx.device, requires_grad=True)
            return zero, {"forget": 0.0}
        use_hidden = self.hidden_weight > 0
        parts: dict[int, list[torch.Tensor]] = {}
        hidden_parts: dict[int, list[torch.Tensor]] = {}
        # the rows in passes of like length (a bio is three times a question's length: in one padded
        # pass, a subject's records computed 2.2x the tokens they hold), each row's terms the same
        lengths = [len(self.ctx.forget[i].input_ids) - shift for i, shift in rows]
        for group in self.ctx.passes(lengths):
            self._rows_loss([rows[g] for g in group], group, use_hidden, parts, hidden_parts)
        per_row = torch.stack([torch.stack(parts[row]).mean() for row in range(len(rows))])
        weights = torch.tensor(self.ctx.forget_weights([i for i, _ in rows]), dtype=torch.float32, device=per_row.device)
        loss = losses.weighted_mean(per_row, weights)
        out = {"forget": float(loss.detach())}
        hidden_at = [row for row in range(len(rows)) if row in hidden_parts]
        if hidden_at:
            hidden_rows = [torch.stack(hidden_parts[row]).mean() for row in hidden_at]
            hidden_loss = losses.weighted_mean(torch.stack(hidden_rows), weights[hidden_at])
            out["hidden"] = float(hidden_loss.detach())
            loss = loss + self.hidden_weight * hidden_loss
        return loss, out

    def _rows_loss(self, views: list[tuple[int, int]], numbers: list[int], use_hidden: bool,
                   parts: dict[int, list[torch.Tensor]], hidden_parts: dict[int, list[torch.Tensor]]) -> None:
        """One pass over `views` (row numbers `numbers` of the step's rows): each target's distillation
        and level terms into `parts`, its hidden-state term into `hidden_parts`, by row number."""
        batch = self._view_batch(views)
        result = self.ctx.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                output_hidden_states=use_hidden)
        logits = result.logits
        device = logits.device
        # every target's positions gathered at once, from the logits and from each layer's states: indexed
        # target by target, each index's backward wrote a zero tensor of the whole micro-batch, a cost that
        # grew with the square of its size (ten subjects, demo model: 10 steps in 22 s at 16 records a
        # micro-batch and in 147 s at 80, the same gradient)
        owners = [(row, self.targets[k]) for row, view in enumerate(views) for k in self.by_view[view]]
        row_ix = torch.cat([torch.full((len(t.positions),), row, dtype=torch.long) for row, t in owners]).to(device)
        pos_ix = torch.cat([t.positions for _row, t in owners]).to(device)
        picked = logits[row_ix, pos_ix]
        true_ids = batch.input_ids[row_ix, pos_ix + 1]
        states = (torch.stack([h[row_ix, pos_ix] for h in result.hidden_states[1:]], dim=1).float()
                  if use_hidden else None)
        at = 0
        for row, target in owners:
            span = slice(at, at + len(target.positions))
            at = span.stop
            part = losses.soft_cross_entropy(
                picked[span], target.target_idx.to(device), target.target_p.to(device)).mean()
            excess = _level_excess(picked[span], true_ids[span], target, ceiling=self._ceiling)
            if excess is not None:
                part = part + _huber(excess).mean()
            parts.setdefault(numbers[row], []).append(part)
            if states is not None and target.hidden is not None:
                mine, ref = states[span], target.hidden.to(device)
                # relative squared error per layer: every layer counts alike, whatever its scale
                err = (mine - ref).pow(2).sum(-1) / ref.pow(2).sum(-1).clamp_min(1e-6)
                hidden_parts.setdefault(numbers[row], []).append(err.mean())
