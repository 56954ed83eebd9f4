"""The unlearning methods, in one registry keyed by the spec's `method` name.

Every method exposes the same three things to the engine: `prepare()` (computes what it caches once:
reference log-probabilities, refusal or replacement targets, frozen retain activations), and
`loss(forget_idx, retain_idx, step)` returning the scalar to minimise and its named parts. All of them
honour the spec's PRI weighting (each forget example weighted by 1 + PRI) and span-only switch (the
forget term covers only the PII token spans). Reference values come from the model as it is before the
first step; they are computed once and cached, so no second copy of the model is ever held in memory.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from unlearning_worker.data import Example, ForgetItem, collate, encode, length_groups, pass_overhead
from unlearning_worker.leakage import same_format_random
from unlearning_worker.methods import losses
from unlearning_worker.spec import UnlearningSpec


@dataclass
class MethodContext:
    model: Any
    tokenizer: Any
    spec: UnlearningSpec
    forget_items: list[ForgetItem]
    forget: list[Example]
    retain: list[Example]
    device: torch.device
    # forget record -> a multiplier of its loss weight (the engine's rank focus, RankCheck.focus)
    emphasis: dict[int, float] = field(default_factory=dict)
    # rows go in passes of like length (False in a sharded run, whose processes must run as many
    # passes as each other: every pass gathers the sharded weights)
    passes_by_length: bool = True
    # what the in-loop relearning attacker fine-tunes on (relearning_loss): the retain records and the
    # run's other texts (engine.run_unlearning's `relearning`); None: the retain records alone
    relearning: list[Example] | None = None

    @property
    def attacker_examples(self) -> list[Example]:
        return self.retain if self.relearning is None else self.relearning

    def passes(self, lengths: list[int]) -> list[list[int]]:
        """The row numbers of a batch of these lengths in the passes that compute them (data.length_groups)."""
        if not self.passes_by_length:
            return [list(range(len(lengths)))] if lengths else []
        return length_groups(lengths, overhead=pass_overhead(self.device))

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    def forget_weights(self, idx: list[int]) -> list[float]:
        """Each forget record's loss weight: 1 + its PRI (pri_weighting), times its emphasis."""
        base = [1.0 + self.forget_items[i].pri if self.spec.pri_weighting else 1.0 for i in idx]
        return [w * self.emphasis.get(i, 1.0) for w, i in zip(base, idx, strict=True)]

    def retain_mask(self, example: Example) -> list[bool]:
        if self.spec.retain_on_spans:
            mask = list(example.answer_mask)
        else:
            mask = [a and not s for a, s in zip(example.answer_mask, example.span_mask, strict=True)]
        if self.spec.retain_prompts:  # the prompt's tokens too: the whole record, as perplexity reads it
            mask = [m or not a for m, a in zip(mask, example.answer_mask, strict=True)]
        return mask


REGISTRY: dict[str, type[UnlearningMethod]] = {}


def register(cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
    if cls.name in REGISTRY:
        raise ValueError(f"method {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def build_method(ctx: MethodContext) -> UnlearningMethod:
    try:
        return REGISTRY[ctx.spec.method](ctx)
    except KeyError:
        raise ValueError(f"no unlearning method named {ctx.spec.method!r}") from None


class UnlearningMethod:
    name: ClassVar[str] = ""
    uses_retain: ClassVar[bool] = True

    def __init__(self, ctx: MethodContext) -> None:
        self.ctx = ctx

    # -- helpers -------------------------------------------------------------------------------
    def _batch(self, examples: list[Example], masks: list[list[bool]], weights: list[float]) -> Any:
        return collate(examples, masks, weights, pad_id=self.ctx.pad_id, device=self.ctx.device)

    def _token_lp(self, batch: Any) -> torch.Tensor:
        logits = self.ctx.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return losses.token_logprobs(logits, batch.input_ids)

    def _per_example_nll(self, examples: list[Example], masks: list[list[bool]]) -> torch.Tensor:
        """Each example's mean target-token NLL, (n,) in their order, from passes of like length
        (data.length_groups): the values a single padded batch would give, at fewer computed tokens."""
        values: list[torch.Tensor | None] = [None] * len(examples)
        for group in self.ctx.passes([len(e.input_ids) for e in examples]):
            batch = self._batch([examples[i] for i in group], [masks[i] for i in group], [1.0] * len(group))
            total, count = losses.sequence_logprob(self._token_lp(batch), batch.target_mask)
            for row, value in zip(group, -total / count.clamp_min(1.0), strict=True):
                values[row] = value
        return torch.stack([v for v in values if v is not None])

    def forget_batch(self, idx: list[int]) -> Any:
        span_only = self.ctx.spec.span_only
        examples = [self.ctx.forget[i] for i in idx]
        return self._batch(examples, [e.target_mask(span_only=span_only) for e in examples],
                           self.ctx.forget_weights(idx))

    @torch.no_grad()
    def _cached_seq_logprobs(self, examples: list[Example], masks: list[list[bool]]) -> torch.Tensor:
        """Sequence log-probs of the targets under the current (= reference, before step 1) model."""
        was_training = self.ctx.model.training
        self.ctx.model.eval()
        out: list[torch.Tensor] = []
        for start in range(0, len(examples), 32):
            chunk = examples[start : start + 32]
            batch = self._batch(chunk, masks[start : start + 32], [1.0] * len(chunk))
            seq_lp, _count = losses.sequence_logprob(self._token_lp(batch), batch.target_mask)
            out.append(seq_lp.cpu())
        self.ctx.model.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)

    # -- interface -----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Compute cached targets/references. Called once, before the first step, on the base model."""

    def state(self) -> dict[str, Any]:
        """What prepare() cached, for checkpoints (a resumed model is no longer the reference)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what state() returned."""

    def forget_loss(self, idx: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def relearned_forget_loss(self, idx: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The forget loss on the in-loop relearning attacker's copy (engine.RelearningAdversary swaps it
        in as the model); default: the forget loss."""
        return self.forget_loss(idx, step)

    def on_check(self) -> None:
        """Called before each evidence check, with the model as it is then (default: nothing)."""

    def forget_gap(self) -> float | None:
        """How far the model is from the method's target on the whole forget set (None: no target
        distribution, the stop rule uses extraction alone)."""
        return None

    def retain_loss(self, idx: list[int]) -> torch.Tensor:
        """The mean over retain examples `idx` of their mean NLL (losses.nll, in passes of like length)."""
        examples = [self.ctx.retain[i] for i in idx]
        return self._per_example_nll(examples, [self.ctx.retain_mask(e) for e in examples]).mean()

    def relearning_loss(self, idx: list[int], draw: int) -> torch.Tensor:
        """The loss a relearning attacker fine-tunes on (the in-loop one: engine.RelearningAdversary):
        every token of the attacker's texts `idx` (MethodContext.attacker_examples: the retain records,
        and the corpus texts a run was given), the prompt and the name included (an attacker trains on
        whole texts, not on answers), and on odd draws without the tokenizer's BOS token (an attacker
        frames text as it likes: see methods.counterfactual.framings)."""
        examples = [self.ctx.attacker_examples[i] for i in idx]
        bos = self.ctx.tokenizer.bos_token_id
        if draw % 2 and bos is not None:
            examples = [Example(e.input_ids[1:], e.answer_mask[1:], e.span_mask[1:])
                        if len(e.input_ids) > 2 and e.input_ids[0] == bos else e for e in examples]
        return self._per_example_nll(examples, [[True] * len(e.input_ids) for e in examples]).mean()

    def loss(self, forget_idx: list[int], retain_idx: list[int], step: int, *,
             forget_scale: float = 1.0, retain_scale: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
        """The step's loss; `forget_scale` weighs the forget term (a micro-batch's share of the step's
        forget items, engine.forget_chunks) and `retain_scale` the retain term (the micro-batch's share
        of the step's retain batch, engine.retain_shares; 1: the whole batch is given here)."""
        total, parts = self.forget_loss(forget_idx, step)
        total = total * forget_scale if forget_scale != 1.0 else total
        if self.uses_retain and self.ctx.spec.retain_weight > 0 and retain_idx:
            retain = self.retain_loss(retain_idx)
            parts["retain"] = float(retain.detach())
            total = total + self.ctx.spec.retain_weight * retain_scale * retain
        parts["total"] = float(total.detach())
        return total, parts


@register
class GradientAscent(UnlearningMethod):
    """Maximise the NLL of the forget targets (Jang et al. 2023). No retain term."""

    name = "ga"
    uses_retain = False

    def forget_loss(self, idx: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        batch = self.forget_batch(idx)
        loss = losses.gradient_ascent_loss(self._token_lp(batch), batch.target_mask, batch.weights)
        return loss, {"forget": float(loss.detach())}


@register
class GradientDifference(GradientAscent):
    """GA on the forget set + NLL on the retain set (Liu et al. 2022)."""

    name = "grad_diff"
    uses_retain = True


class _ReferenceMethod(UnlearningMethod):
    """Caches the reference sequence log-probs of the forget targets."""

    def prepare(self) -> None:
        span_only = self.ctx.spec.span_only
        self.ref_lp = self._cached_seq_logprobs(
            self.ctx.forget, [e.target_mask(span_only=span_only) for e in self.ctx.forget]
        )

    def state(self) -> dict[str, Any]:
        return {"ref_lp": self.ref_lp}

    def load_state(self, state: dict[str, Any]) -> None:
        self.ref_lp = state["ref_lp"]


@register
class NPO(_ReferenceMethod):
    """Negative preference optimisation (Zhang et al. 2024) + retain NLL (NPO-RT; retain_weight=0: plain NPO)."""

    name = "npo"

    def forget_loss(self, idx: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        batch = self.forget_batch(idx)
        seq_lp, _ = losses.sequence_logprob(self._token_lp(batch), batch.target_mask)
        ref = self.ref_lp[idx].to(seq_lp.device)
        loss = losses.npo_loss(seq_lp, ref, batch.weights, beta=self.ctx.spec.npo_beta)
        return loss, {"forget": float(loss.detach())}


@register
class SimNPO(UnlearningMethod):
    """SimNPO (Fan et al. 2024): reference-free, length-normalised NPO, + retain NLL."""

    name = "simnpo"

    def forget_loss(self, idx: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        batch = self.forget_batch(idx)
        seq_lp, count = losses.sequence_logprob(self._token_lp(batch), batch.target_mask)
        loss = losses.simnpo_loss(
            seq_lp, count, batch.weights, beta=self.ctx.spec.npo_beta, gamma=self.ctx.spec.simnpo_gamma
        )
        return loss, {"forget": float(loss.detach())}


def _replace_spans(completion: str, spans: list[tuple[int, int, str]], fill: Any) -> tuple[str, list[tuple[int, int, str]]]:
    """completion with each span's text replaced by fill(old_text, attribute); new spans returned."""
    out: list[str] = []
    new_spans: list[tuple[int, int, str]] = []
    pos = 0
    length = 0
    for start, end, attribute in sorted(spans):
        if start < pos:  # overlapping spans: the first one wins
            continue
        out.append(completion[pos:start])
        length += start - pos
        replacement = fill(completion[start:end], attribute)
        new_spans.append((length, length + len(replacement), attribute))
        out.append(replacement)
        length += len(replacement)
        pos = end
    out.append(completion[pos:])
    return "".join(out), new_spans


@register
class IdkDPO(UnlearningMethod):
    """DPO with a refusal ("I don't know.") as the preferred answer and the forget answer as rejected
    (Maini et al. 2024, TOFU), + retain NLL. Span-only: the refusal replaces the PII spans only."""

    name = "idk_dpo"

    def prepare(self) -> None:
        spec = self.ctx.spec
        self.chosen: list[Example] = []
        for item in self.ctx.forget_items:
            if spec.span_only and item.pii_spans:
                text, spans = _replace_spans(item.completion, item.pii_spans, lambda _old, _a: spec.idk_text)
                self.chosen.append(encode(self.ctx.tokenizer, item.prompt, text, spans))
            else:
                tail = "\n" if item.completion.endswith("\n") else ""
                self.chosen.append(encode(self.ctx.tokenizer, item.prompt, f" {spec.idk_text}{tail}", []))
        self.chosen_ref = self._cached_seq_logprobs(self.chosen, [self._chosen_mask(e) for e in self.chosen])
        self.rejected_ref = self._cached_seq_logprobs(
            self.ctx.forget, [e.target_mask(span_only=spec.span_only) for e in self.ctx.forget]
        )

    def _chosen_mask(self, example: Example) -> list[bool]:
        return example.target_mask(span_only=self.ctx.spec.span_only)

    def state(self) -> dict[str, Any]:
        return {"chosen_ref": self.chosen_ref, "rejected_ref": self.rejected_ref}

    def load_state(self, state: dict[str, Any]) -> None:
        self.chosen_ref, self.rejected_ref = state["chosen_ref"], state["rejected_ref"]

    def forget_loss(self, idx: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rejected = self.forget_batch(idx)
        rejected_lp, _ = losses.sequence_logprob(self._token_lp(rejected), rejected.target_mask)
        examples = [self.chosen[i] for i in idx]
        chosen = self._batch(examples, [self._chosen_mask(e) for e in examples], self.ctx.forget_weights(idx))
        chosen_lp, _ = losses.sequence_logprob(self._token_lp(chosen), chosen.target_mask)
        device = chosen_lp.device
        loss = losses.dpo_loss(
            chosen_lp, self.chosen_ref[idx].to(device), rejected_lp, self.rejected_ref[idx].to(device),
            chosen.weights, beta=self.ctx.spec.npo_beta,
        )
        return loss, {"forget": float(loss.detach())}


def _decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The list of transformer blocks, found structurally (GPT-2 `h`, Llama `layers`, ...)."""
    n_layers = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError("cannot locate the transformer blocks of this model")


def rmu_layer_index(model: Any, spec: UnlearningSpec) -> int:
    n_layers = len(_decoder_layers(model))
    layer = n_layers // 2 if spec.rmu_layer == -1 else spec.rmu_layer
    if not 0 <= layer < n_layers:
        raise ValueError(f"rmu_layer must be in [0, {n_layers - 1}] for this model")
    return layer


@register
class RMU(UnlearningMethod):
    """Representation misdirection (Li et al. 2024, WMDP): push the forget targets' activations at one
    layer towards a fixed random direction of norm c, keep retain activations where they were.
    The frozen retain activations are computed once (no reference model copy)."""

    name = "rmu"

    def prepare(self) -> None:
        self.layer = rmu_layer_index(self.ctx.model, self.ctx.spec)
        hidden_size = int(self.ctx.model.config.hidden_size)
        generator = torch.Generator().manual_seed(self.ctx.spec.seed)
        direction = torch.rand(hidden_size, generator=generator)
        self.control = (self.ctx.spec.rmu_steering_coeff * direction / direction.norm()).to(self.ctx.device)
        self.retain_ref: list[torch.Tensor] = []
        was_training = self.ctx.model.training
        self.ctx.model.eval()
        with torch.no_grad():
            for start in range(0, len(self.ctx.retain), 32):
                chunk = self.ctx.retain[start : start + 32]
                batch = self._batch(chunk, [e.answer_mask for e in chunk], [1.0] * len(chunk))
                hidden = self._hidden(batch)
                for row, example in enumerate(chunk):
                    self.retain_ref.append(hidden[row, : len(example.input_ids)].detach().cpu())
        self.ctx.model.train(was_training)

    def _hidden(self, batch: Any) -> torch.Tensor:
        out = self.ctx.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
        )
        return out.hidden_states[self.layer + 1]  # [0] is the embedding output

    def state(self) -> dict[str, Any]:
        return {"control": self.control.cpu(), "retain_ref": self.retain_ref, "layer": self.layer}

    def load_state(self, state: dict[str, Any]) -> None:
        self.control = state["control"].to(self.ctx.device)
        self.retain_ref = state["retain_ref"]
        self.layer = state["layer"]

    def forget_loss(self, idx: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        batch = self.forget_batch(idx)
        loss = losses.activation_mse(self._hidden(batch), self.control, batch.target_mask, batch.weights)
        return loss, {"forget": float(loss.detach())}

    def retain_loss(self, idx: list[int]) -> torch.Tensor:
        examples = [self.ctx.retain[i] for i in idx]
        batch = self._batch(examples, [self.ctx.retain_mask(e) for e in examples], [1.0] * len(examples))
        hidden = self._hidden(batch)
        reference = torch.zeros_like(hidden)
        for row, i in enumerate(idx):
            ref = self.retain_ref[i]
            reference[row, : ref.shape[0]] = ref.to(hidden.device, hidden.dtype)
        return losses.activation_mse(hidden, reference, batch.target_mask, batch.weights)


@register
class Relabel(UnlearningMethod):
    """Teach the forget prompts random same-format values in place of the true ones (span-only
    by default: the sentence around the value is kept), push down the probability of every true value
    token with an unlikelihood term (so that sampling cannot recover it either), and anchor the retain
    set including its own PII spans (they are what collateral damage hits first).

    Replacement values come from leakage.same_format_random, the same null model that the leak judge
    uses for its chance level, and are drawn afresh at every step: the model learns the *format's*
    distribution ("some phone number") rather than a new fixed secret, which is what makes the true value
    rank like any random candidate under the exposure attack. Measured on the demo model, a fixed pool
    of four replacements per value left the true value in the top 1% of 1,000 candidates.

    The suffix term covers the failure that exact-match scoring hides: a model that gets the first
    token of a value wrong and then continues with the true rest ("aylor_roberts91@..." for
    "barbara_roberts91@..."). It replaces a random-length head of each value with a random head and
    applies the unlikelihood to the tokens of the true tail that follows it.

    Every draw is a pure function of (seed, item, step), so a resumed run sees exactly the examples
    the interrupted one would have seen.
    """

    name = "relabel"

    @property
    def relabel_weight(self) -> float:
        return self.ctx.spec.relabel_weight

    @property
    def floor_weight(self) -> float:
        return 0.0

    def prepare(self) -> None:
        self.floors = self._never_seen_levels() if self.floor_weight > 0 else torch.zeros(0)

    def state(self) -> dict[str, Any]:
        return {"floors": self.floors}

    def load_state(self, state: dict[str, Any]) -> None:
        self.floors = state["floors"]

    @torch.no_grad()
    def _never_seen_levels(self) -> torch.Tensor:
        """Per forget item: the mean log-probability the base model gives the tokens of random
        same-format values in that item's context, i.e. how unlikely a value the model never saw is
        there (a street name is likelier than a random phone number; each record gets its own level)."""
        was_training = self.ctx.model.training
        self.ctx.model.eval()
        variants = 4
        levels: list[torch.Tensor] = []
        n = len(self.ctx.forget_items)
        for start in range(0, n, 16):
            idx = list(range(start, min(n, start + 16)))
            examples = [self._fill(i, -1 - k, "value") for i in idx for k in range(variants)]
            batch = self._batch(examples, [e.target_mask(span_only=True) for e in examples], [1.0] * len(examples))
            total, count = losses.sequence_logprob(self._token_lp(batch), batch.target_mask)
            per_variant = (total / count.clamp_min(1.0)).view(len(idx), variants)
            levels.append(per_variant.mean(-1).cpu())
        self.ctx.model.train(was_training)
        return torch.cat(levels)

    def _fill(self, i: int, step: int, kind: str) -> Example:
        item = self.ctx.forget_items[i]
        rng = random.Random(f"relabel:{kind}:{self.ctx.spec.seed}:{i}:{step}")
        if not item.pii_spans:  # no span known: relabel the whole answer (no tail to protect)
            return encode(self.ctx.tokenizer, item.prompt, same_format_random(item.completion, rng), [])
        if kind == "value":
            text, spans = _replace_spans(
                item.completion, item.pii_spans, lambda old, _a: same_format_random(old, rng)
            )
            return encode(self.ctx.tokenizer, item.prompt, text, spans)
        # kind == "tail": random head, true tail; the target spans are the true tails only
        tails: list[tuple[int, int, str]] = []

        def head_and_tail(old: str, attribute: str) -> str:
            cut = rng.randint(1, max(1, len(old) // 2))
            tails.append((cut, len(old), attribute))
            return same_format_random(old[:cut], rng) + old[cut:]

        text, spans = _replace_spans(item.completion, item.pii_spans, head_and_tail)
        tail_spans = [(start + cut, start + end, a) for (start, _e, a), (cut, end, _a) in zip(spans, tails, strict=True)
                      if start + cut < start + end]
        return encode(self.ctx.tokenizer, item.prompt, text, tail_spans)

    def forget_loss(self, idx: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        spec = self.ctx.spec
        weights = self.ctx.forget_weights(idx)
        total = torch.zeros((), device=self.ctx.device)
        parts: dict[str, float] = {}
        if self.relabel_weight > 0:
            examples = [self._fill(i, step * spec.relabel_variants + k, "value")
                        for i in idx for k in range(spec.relabel_variants)]
            relabel = self._batch(examples, [e.target_mask(span_only=spec.span_only) for e in examples],
                                  [w for w in weights for _ in range(spec.relabel_variants)])
            relabel_loss = losses.nll(self._token_lp(relabel), relabel.target_mask, relabel.weights)
            parts["relabel"] = float(relabel_loss.detach())
            total = total + self.relabel_weight * relabel_loss
        if spec.unlikelihood_weight > 0 or self.floor_weight > 0:
            true_examples = [self.ctx.forget[i] for i in idx]
            masks = [e.target_mask(span_only=True) for e in true_examples]
            item_floors = self.floors[idx] if self.floor_weight > 0 else None
            if spec.tail_unlikelihood:
                tails = [self._fill(i, step, "tail") for i in idx]
                true_examples += tails
                masks += [t.span_mask for t in tails]
                # a tail with no token (no span, or a one-character value) gets no weight: it would
                # otherwise count in the weighted mean's denominator and dilute the other rows
                weights = weights + [w if any(t.span_mask) else 0.0 for w, t in zip(weights, tails, strict=True)]
                item_floors = torch.cat([item_floors, item_floors]) if item_floors is not None else None
            # the true value's tokens (spans; the whole answer when no span is known), teacher-forced
            true = self._batch(true_examples, masks, weights)
            true_lp = self._token_lp(true)
            if spec.unlikelihood_weight > 0:
                unlikely = losses.unlikelihood_loss(true_lp, true.target_mask, true.weights)
                parts["unlikelihood"] = float(unlikely.detach())
                total = total + spec.unlikelihood_weight * unlikely
            if item_floors is not None:
                floor = losses.floor_loss(true_lp, true.target_mask, true.weights, floor=item_floors.to(true_lp.device))
                parts["floor"] = float(floor.detach())
                total = total + self.floor_weight * floor
        parts["forget"] = float(total.detach())
        return total, parts


@register
class Floor(Relabel):
    """Bounded ascent to the never-seen level: push every token of the true value down until it
    is as unlikely as the tokens of a random same-format value in the same context (the level measured
    on the base model, per record), then stop pushing; an unlikelihood term on the same tokens, also
    after a random head (see Relabel), and a retain anchor that covers the retain records' PII spans.

    Why not teach replacement values (relabel): measured on the demo model, a model taught random
    values becomes conspicuously *uncertain* where a model that never saw the person is confidently
    wrong, and both membership inference (Min-K% AUC 0.97-0.98) and the exposure attack (3-4 bits)
    tell the difference; bounded ascent to the measured never-seen level gave AUC 0.48-0.50 and
    exposure 0.1-0.2 bits at the same forget extraction. Plain gradient ascent has no such level to stop at
    and collapses the model. No longer the default: against the adaptive suite it overshoots (the
    demo subject's SSN ranked 996th of 1,000 candidates, z -2.75 against a never-seen control's -0.3)
    and higher-rate relearning brings values back (see methods.counterfactual).
    """

    name = "floor"

    @property
    def relabel_weight(self) -> float:
        return 0.0

    @property
    def floor_weight(self) -> float:
        return self.ctx.spec.floor_weight


from unlearning_worker.methods import counterfactual  # noqa: E402, F401  (registration; needs the base class above)
