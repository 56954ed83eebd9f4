"""Each registered method, a few steps on a tiny model: the forget loss moves the right way and every
trainable parameter changes (LoRA: every adapter parameter changes and the base stays frozen)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from unlearning_worker.data import encode, step_indices
from unlearning_worker.demo.corpus import DemoCorpus, demo_items
from unlearning_worker.methods import REGISTRY, MethodContext, build_method, losses
from unlearning_worker.modeling import freeze_unreached, load_model, trainable_parameters
from unlearning_worker.spec import UnlearningSpec


def _context(model_dir: Path, corpus: DemoCorpus, spec: UnlearningSpec) -> MethodContext:
    forget, retain = demo_items(corpus, [corpus.people[0].person_id], pri={corpus.people[0].person_id: 0.5})
    model, tokenizer = load_model(model_dir, spec, torch.device("cpu"))
    model.train()
    return MethodContext(
        model, tokenizer, spec, forget,
        [encode(tokenizer, f.prompt, f.completion, f.pii_spans) for f in forget],
        [encode(tokenizer, r.prompt, r.completion, r.pii_spans) for r in retain],
        torch.device("cpu"),
    )


@torch.no_grad()
def _true_target_nll(ctx: MethodContext, idx: list[int]) -> float:
    method = build_method(ctx)
    batch = method.forget_batch(idx)
    return float(losses.nll(method._token_lp(batch), batch.target_mask, batch.weights))


def _train(ctx: MethodContext, steps: int) -> tuple[float, float, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    method = build_method(ctx)
    method.prepare()
    forget_idx = list(range(len(ctx.forget)))
    retain_idx = step_indices(len(ctx.retain), 8, 0, seed=0, salt="retain")
    if ctx.spec.method == "rmu":
        freeze_unreached(ctx.model, method, forget_idx, retain_idx)
    all_before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    with torch.no_grad():
        forget_before = float(method.forget_loss(forget_idx, 0)[0])
    params = [p for _, p in trainable_parameters(ctx.model)]
    optimiser = torch.optim.Adam(params, lr=ctx.spec.lr)
    for step in range(steps):
        loss, _parts = method.loss(forget_idx, retain_idx, step)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
    with torch.no_grad():
        forget_after = float(method.forget_loss(forget_idx, 0)[0])
    all_after = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    return forget_before, forget_after, all_before, all_after


@pytest.mark.parametrize("method", sorted(REGISTRY))
@pytest.mark.parametrize("span_only", [True, False])
def test_method_moves_forget_loss_and_every_trainable_parameter(
    method: str, span_only: bool, tiny_model_dir: Path, tiny_corpus: DemoCorpus
) -> None:
    spec = UnlearningSpec(method=method, lr=1e-2, span_only=span_only, device="cpu", dtype="float32")
    if method == "counterfactual":
        # the tiny model memorised nothing, so its never-seen target is close to where it already is:
        # four steps of the retain term (x10) outweigh the forget term's pull; measure the pull alone
        spec = spec.replace(retain_weight=0.0, hidden_weight=1.0)
    ctx = _context(tiny_model_dir, tiny_corpus, spec)
    idx = list(range(len(ctx.forget)))
    nll_before = _true_target_nll(ctx, idx)
    before, after, params_before, params_after = _train(ctx, steps=4)
    assert after < before, f"{method}: forget loss did not decrease ({before:.4f} -> {after:.4f})"
    # RMU acts on activations; the counterfactual target is "as likely as never seen", not "less likely"
    if method not in ("rmu", "counterfactual"):
        assert _true_target_nll(ctx, idx) > nll_before, f"{method}: true forget answers became more likely"
    trainable = {n for n, _ in trainable_parameters(ctx.model)}
    assert trainable
    unchanged = [n for n in trainable if torch.equal(params_before[n], params_after[n])]
    assert unchanged == []


@pytest.mark.parametrize("method", ["relabel", "npo", "rmu"])
def test_lora_changes_every_adapter_parameter_and_no_base_weight(
    method: str, tiny_model_dir: Path, tiny_corpus: DemoCorpus
) -> None:
    spec = UnlearningSpec(method=method, lr=1e-2, lora=True, lora_rank=4, gradient_checkpointing=True,
                          device="cpu", dtype="float32")
    ctx = _context(tiny_model_dir, tiny_corpus, spec)
    before, after, params_before, params_after = _train(ctx, steps=4)
    assert after < before
    lora = [n for n in params_before if "lora_" in n]
    assert lora and {n for n, _ in trainable_parameters(ctx.model)} == set(lora)
    assert [n for n in lora if torch.equal(params_before[n], params_after[n])] == []
    base = [n for n in params_before if "lora_" not in n]
    assert [n for n in base if not torch.equal(params_before[n], params_after[n])] == []


def test_pri_weighting_scales_example_weights(tiny_model_dir: Path, tiny_corpus: DemoCorpus) -> None:
    on = _context(tiny_model_dir, tiny_corpus, UnlearningSpec(pri_weighting=True, device="cpu"))
    off = _context(tiny_model_dir, tiny_corpus, UnlearningSpec(pri_weighting=False, device="cpu"))
    assert on.forget_weights([0, 1]) == [1.5, 1.5]
    assert off.forget_weights([0, 1]) == [1.0, 1.0]


def test_span_only_targets_only_the_value_tokens(tiny_model_dir: Path, tiny_corpus: DemoCorpus) -> None:
    ctx = _context(tiny_model_dir, tiny_corpus, UnlearningSpec(device="cpu"))
    person = tiny_corpus.people[0]
    qa = next(i for i, f in enumerate(ctx.forget_items) if set(f.values) == {"phone"})
    example = ctx.forget[qa]
    span_ids = [t for t, m in zip(example.input_ids, example.span_mask, strict=True) if m]
    text = ctx.tokenizer.decode(span_ids)
    assert text.replace(" ", "") == person.phone
    answer_ids = [t for t, m in zip(example.input_ids, example.answer_mask, strict=True) if m]
    assert ctx.tokenizer.decode(answer_ids) == f" {person.phone}\n"


@pytest.mark.parametrize(("on_spans", "prompts"), [(True, False), (True, True), (False, False), (False, True)])
def test_the_retain_term_covers_the_answer_its_spans_and_with_retain_prompts_the_prompt(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, on_spans: bool, prompts: bool
) -> None:
    """retain_prompts: the retain term reads the whole record, as the verifier's perplexity does (the
    question and the name included); without it, the answer only (its PII spans per retain_on_spans)."""
    ctx = _context(tiny_model_dir, tiny_corpus, UnlearningSpec(device="cpu", retain_on_spans=on_spans,
                                                               retain_prompts=prompts))
    example = next(e for e in ctx.retain if any(e.span_mask))
    mask = ctx.retain_mask(example)
    for m, answer, span in zip(mask, example.answer_mask, example.span_mask, strict=True):
        if not answer:
            assert m is prompts  # the prompt
        elif span:
            assert m is on_spans  # a PII value in the answer
        else:
            assert m is True  # the rest of the answer

def test_never_seen_caps_lower_name_and_value_tokens_to_a_never_seen_level_and_never_raise_them(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus
) -> None:
    from unlearning_worker.methods.counterfactual import _name_positions, framed

    person = tiny_corpus.people[0]
    spec = UnlearningSpec(method="counterfactual", never_seen_cap=True, device="cpu", dtype="float32")
    ctx = _context(tiny_model_dir, tiny_corpus, spec)
    # every occurrence of the name, in the question (prompt) and in the biography (completion), at the
    # positions data.encode gives it, in reading order
    bio = next(i for i, f in enumerate(ctx.forget_items) if f.prompt == person.name)
    found = _name_positions(ctx.tokenizer, ctx.forget_items[bio].prompt, ctx.forget_items[bio].completion, person.name)
    ids = ctx.forget[bio].input_ids
    texts = [ctx.tokenizer.decode([ids[j] for j in occurrence]).strip() for occurrence in found]
    assert texts[0] == person.name and texts[1:] and set(texts[1:]) == {person.first_name}
    assert len(found) == 1 + ctx.forget_items[bio].completion.count(person.first_name)
    qa = next(i for i, f in enumerate(ctx.forget_items) if set(f.values) == {"phone"})
    found = _name_positions(ctx.tokenizer, ctx.forget_items[qa].prompt, ctx.forget_items[qa].completion, person.name)
    assert [ctx.tokenizer.decode([ctx.forget[qa].input_ids[j] for j in o]).strip() for o in found] == [person.name]
    assert _name_positions(ctx.tokenizer, "", "no name here", person.name) == []

    method = build_method(ctx)
    method.prepare()
    off = build_method(_context(tiny_model_dir, tiny_corpus, spec.replace(never_seen_cap=False, attributes=[])))
    off.prepare()
    names = method.targets[len(off.targets):]
    assert names and len(method.targets) > len(off.targets)
    # the values' targets: the same tokens, no true token's probability raised, the rows still
    # distributions; a token without digits held at its target probability (or below its cap where the
    # target dropped it), a token with digits held at what random digits get there
    capped_levels = held_digits = 0
    for capped, plain in zip(method.targets[: len(off.targets)], off.targets, strict=True):
        example = framed(ctx.forget[plain.item], plain.shift)
        truth = [example.input_ids[p + 1] for p in plain.positions.tolist()]
        assert (capped.item, capped.shift) == (plain.item, plain.shift) and torch.equal(capped.positions, plain.positions)
        assert torch.allclose(capped.target_p.sum(-1), torch.ones(len(truth)), atol=1e-5)
        assert capped.level is not None and capped.hold is not None and len(capped.level) == len(truth)
        for row, token in enumerate(truth):
            before = dict(zip(plain.target_idx[row].tolist(), plain.target_p[row].tolist(), strict=True)).get(token, 0.0)
            after = dict(zip(capped.target_idx[row].tolist(), capped.target_p[row].tolist(), strict=True)).get(token, 0.0)
            level = float(capped.level[row])
            assert math.isfinite(level) and level < 0.0
            assert after <= before + 1e-6
            if any(ch.isdigit() for ch in ctx.tokenizer.decode([token])):
                held_digits += bool(capped.hold[row])
            elif after > 0:
                assert bool(capped.hold[row]) and level == pytest.approx(math.log(after), abs=1e-4)
            else:
                assert not bool(capped.hold[row])
            capped_levels += after < before - 1e-6
    assert capped_levels > 0 and held_digits > 0
    model = ctx.model.eval()
    lowered = 0
    for target in names:
        example = framed(ctx.forget[target.item], target.shift)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([example.input_ids])).logits[0]
        base = torch.softmax(logits[target.positions], dim=-1)
        truth = torch.tensor([example.input_ids[p + 1] for p in target.positions.tolist()])
        assert torch.allclose(target.target_p.sum(-1), torch.ones(len(truth)), atol=1e-5)
        assert target.hidden is None and target.level is not None
        for row, token in enumerate(truth.tolist()):
            held = base[row, token]
            kept = target.target_idx[row].tolist()
            wanted = float(target.target_p[row, kept.index(token)]) if token in kept else 0.0
            # never above the model's own probability (a cap, not a push), and exactly the cap where lower
            assert wanted == pytest.approx(min(float(held), math.exp(float(target.level[row]))), abs=1e-5)
            lowered += wanted < float(held) - 1e-3
    assert lowered > 0  # some name token was more familiar than a never-seen name's


def test_cap_target_keeps_rows_distributions_even_when_the_true_token_held_everything() -> None:
    from unlearning_worker.methods.counterfactual import cap_target

    index = torch.tensor([[5, 1, 2], [1, 5, 2], [3, 1, 2]])
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2]])
    truth = torch.tensor([5, 5, 9])  # memorised (all of the row), likely, outside the top K
    _, capped = cap_target(index, probs, truth, torch.log(torch.tensor([0.01, 0.01, 0.01])))
    assert torch.allclose(capped.sum(-1), torch.ones(3), atol=1e-6) and bool((capped >= 0).all())
    assert capped[0, 0] == pytest.approx(0.01) and capped[0, 1] == pytest.approx(0.495)
    assert capped[1, 1] == pytest.approx(0.01) and capped[1, 0] / capped[1, 2] == pytest.approx(2.0)
    assert torch.allclose(capped[2], probs[2])  # nothing to cap


def test_name_occurrences_keep_their_order_and_a_name_inside_a_value_is_none() -> None:
    from unlearning_worker.methods.counterfactual import _name_positions

    class CharTokenizer:  # one token per character, no BOS (as some real tokenizers)
        def __call__(self, text: str, add_special_tokens: bool = True,
                     return_offsets_mapping: bool = False) -> dict[str, list]:
            out: dict[str, list] = {"input_ids": [ord(c) for c in text]}
            if return_offsets_mapping:
                out["offset_mapping"] = [(i, i + 1) for i in range(len(text))]
            return out

    tok = CharTokenizer()
    # a one-token name at position 0 has nothing to predict it, but its occurrence stays (empty), so
    # the twin's occurrences line up with the record's
    assert _name_positions(tok, "A x", "A y", "A") == [[], [3]]
    assert _name_positions(tok, "Q: Ada Lee?", "Ada", "Ada Lee") == [[3, 4, 5, 6, 7, 8, 9], [11, 12, 13]]
    # inside a value (an address "Lee Lane" is rewritten whole in the twin): not an occurrence
    assert _name_positions(tok, "Q: Ada?", " at Lee Lane, Ada", "Ada Lee", [(4, 12, "address")]) == [[3, 4, 5], [21, 22, 23]]


def test_every_value_and_name_token_is_distilled_with_and_without_the_bos_token(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus
) -> None:
    """An attacker chooses the framing: a model trained behind BOS recalls a value without it too, so
    each target exists in both framings, over the same tokens, and the forget loss and the stop rule's
    gap see both."""
    from unlearning_worker.methods.counterfactual import SpanTarget, framed, framings

    spec = UnlearningSpec(method="counterfactual", device="cpu", dtype="float32")
    ctx = _context(tiny_model_dir, tiny_corpus, spec)
    bos = ctx.tokenizer.bos_token_id
    assert bos is not None and all(e.input_ids[0] == bos for e in ctx.forget)
    method = build_method(ctx)
    method.prepare()
    by_key: dict[tuple[int, int], dict[int, tuple[SpanTarget, tuple[int, ...]]]] = {}
    for t in method.targets:
        example = framed(ctx.forget[t.item], t.shift)
        truth = tuple(example.input_ids[p + 1] for p in t.positions.tolist())
        assert t.level is not None and len(t.level) == len(truth)
        by_key.setdefault((t.item, int(t.positions[-1]) + t.shift), {})[t.shift] = (t, truth)
    assert by_key
    for pair in by_key.values():
        assert set(pair) == {0, 1}  # every target in both framings
        (trained, truth0), (bare, truth1) = pair[0], pair[1]
        # the same tokens; only a name token that opens the prompt has nothing before it in the bare one
        n = len(truth1)
        assert truth0[len(truth0) - n :] == truth1 and torch.equal(bare.positions, trained.positions[-n:] - 1)
        assert n == len(truth0) or (trained.hidden is None and n == len(truth0) - 1 and int(trained.positions[0]) == 0)
        assert torch.allclose(bare.target_p.sum(-1), torch.ones(len(truth1)), atol=1e-5)
    # the batch of one item holds both framings, and both count in the loss
    item = method.targets[0].item
    assert method._views([item]) == [(item, 0), (item, 1)]
    loss, _ = method.forget_loss([item], step=1)
    bare_only = [k for k in method.by_item[item] if method.targets[k].shift == 1]
    for k in bare_only:  # make the bare framing's targets the model's own argmax: its part of the loss changes
        method.targets[k].level = None
        method.targets[k].target_p = torch.zeros_like(method.targets[k].target_p)
        method.targets[k].target_p[:, 0] = 1.0
    changed, _ = method.forget_loss([item], step=1)
    assert float(changed.detach()) != pytest.approx(float(loss.detach()), rel=1e-4)

    # the framings: none for a record that does not open with BOS, none behind an empty prompt (the BOS
    # is all the first token follows)
    example = ctx.forget[0]
    assert framings(ctx.tokenizer, ctx.forget_items[0].prompt, example) == (0, 1)
    assert framings(ctx.tokenizer, "", example) == (0,)
    assert framings(ctx.tokenizer, ctx.forget_items[0].prompt, framed(example, 1)) == (0,)


def test_value_levels_meet_run_by_run_whatever_the_tokens_and_digits_take_the_random_digits_level() -> None:
    from unlearning_worker.methods.counterfactual import ValueTokens, random_digits, value_levels

    # "853-95" written as 8|53|-|95 and a twin "12-345" as 12|-|3|45 (offsets in a completion " X")
    mine = ValueTokens("853-95", 1, [(0, 2), (2, 4), (4, 5), (5, 7)], [5, 6, 7, 8])
    twin = ValueTokens("12-345", 1, [(1, 3), (3, 4), (4, 5), (5, 7)], [5, 6, 7, 8])
    # per character: run 0 of digits "12": -4 over 2 chars = -2 each; "-": -0.5; run 1 "345": (-3 - 6) / 3 = -3 each
    levels = value_levels(mine, [(twin, [-4.0, -0.5, -3.0, -6.0])])
    # the first token " 8" covers one character of the value (its space lies outside), "53" two, "-" the dash
    assert levels == pytest.approx([-2.0, -4.0, -0.5, -6.0])
    # the sum over a run does not depend on how either side tokenises it
    assert sum(x for x in levels if x is not None) == pytest.approx(3 * -2.0 + -0.5 + 2 * -3.0)
    # a run no twin has takes its class's mean; a class no twin has: no level
    longer = ValueTokens("1-2-3", 0, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)], [1, 2, 3, 4, 5])
    assert value_levels(longer, [(twin, [-4.0, -0.5, -3.0, -6.0])])[4] == pytest.approx(-2.5)
    assert value_levels(ValueTokens("ab", 0, [(0, 2)], [1]), [(twin, [-4.0, -0.5, -3.0, -6.0])]) == [None]
    # with random-digit alternatives the digit runs take theirs, the rest keeps the twins'
    alternative = ValueTokens("000-11", 1, [(1, 4), (4, 5), (5, 7)], [5, 6, 7])
    mixed = value_levels(mine, [(twin, [-4.0, -0.5, -3.0, -6.0])], [(alternative, [-9.0, -1.5, -1.0])])
    assert mixed == pytest.approx([-3.0, -6.0, -0.5, -1.0])

    import random

    completion = " phone 555-1234, born 1990, at 12 Elm St"
    phone = completion.index("555")
    out = random_digits(completion, (phone, phone + 8), random.Random(1))
    assert len(out) == len(completion) and out != completion
    # only the value's digits change: not "1990", not the address's "12"
    assert out[:phone] == completion[:phone] and out[phone + 8 :] == completion[phone + 8 :]
    assert all(a == b or (a.isdigit() and b.isdigit()) for a, b in zip(out, completion, strict=True))
    # with donors of the format, each run is a donor's run of the same index and length (a month
    # stays a month); a run no donor has in that length is random digits
    donors = ["111-2222", "333-4444", "12-99"]
    seen = {random_digits(completion, (phone, phone + 8), random.Random(n), donors)[phone : phone + 8] for n in range(40)}
    assert {v[:3] for v in seen} == {"111", "333"} and {v[4:] for v in seen} == {"2222", "4444"}
    # never the value itself, however few values the format has or however the donors agree
    assert all(random_digits("ab7@x", (0, 5), random.Random(n))[2] != "7" for n in range(200))
    assert all(random_digits("ab7@x", (0, 5), random.Random(n), ["cd7@y"] * 5) != "ab7@x" for n in range(50))
    assert random_digits("no digits", (0, 9), random.Random(0)) == "no digits"
    odd = random_digits(" 12345", (1, 6), random.Random(0), donors)
    assert odd[1:].isdigit() and len(odd) == 6


def test_a_sampled_never_seen_level_is_one_persons_and_spreads_as_people_do(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus
) -> None:
    """never_seen_sample: each record is held at one never-seen person's levels and one donor's digits,
    so the levels spread across records as a never-seen person's tokens do (a mean over people is
    narrower, and Min-K reads the lowest tokens)."""
    spec = UnlearningSpec(method="counterfactual", device="cpu", dtype="float32")
    levels = {}
    for sample in (False, True):
        method = build_method(_context(tiny_model_dir, tiny_corpus, spec.replace(never_seen_sample=sample)))
        method.prepare()
        assert method.digit_plans
        assert {len(p.inputs) for p in method.digit_plans} == ({1} if sample else {16})
        assert {len(p.twins) for p in method.digit_plans} <= ({1} if sample else {1, 2, 3, 4})
        found = torch.cat([t.level for t in method.targets if t.level is not None])
        levels[sample] = found[~torch.isnan(found)]
    assert len(levels[True]) == len(levels[False])
    assert float(levels[True].std()) > float(levels[False].std())


def test_level_excess_is_a_ceiling_a_hold_or_a_pooled_sum() -> None:
    from unlearning_worker.methods.counterfactual import SpanTarget
    from unlearning_worker.methods.counterfactual import _level_excess as excess_at

    def _level_excess(logits: torch.Tensor, target: SpanTarget, input_ids: torch.Tensor, **kw: bool) -> torch.Tensor | None:
        # the logits at the target's positions and the tokens they predict, as forget_loss gathers them
        return excess_at(logits[target.positions], input_ids[target.positions + 1], target, **kw)

    # 4 positions, vocabulary 3; the true next tokens are input_ids[1:]
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]]))
    input_ids = torch.tensor([0, 0, 1, 2])  # log p(true) at positions 0, 1, 2: log .5, log .5, log .5
    lp = math.log(0.5)
    target = SpanTarget(0, torch.tensor([0, 1, 2]), torch.zeros(3, 1, dtype=torch.long), torch.ones(3, 1),
                        level=torch.tensor([lp - 1.0, lp + 1.0, float("nan")]))
    # a ceiling: 1 nat above the first level, below the second (0), no level for the third
    assert _level_excess(logits, target, input_ids).tolist() == pytest.approx([1.0, 0.0])
    target.hold = torch.tensor([False, True, False])  # held both ways: 1 nat below counts too
    assert _level_excess(logits, target, input_ids).tolist() == pytest.approx([1.0, 1.0])
    target.pooled = torch.tensor([True, True, False])  # pooled: +1 and -1 cancel in the sum
    assert _level_excess(logits, target, input_ids).tolist() == pytest.approx([0.0])
    target.level = torch.tensor([lp - 1.0, lp - 0.5, lp - 2.0])
    target.pooled = torch.tensor([True, False, True])
    assert _level_excess(logits, target, input_ids).tolist() == pytest.approx([0.5, 3.0])
    # as ceilings only (on the in-loop attacker's copy): below the level counts for nothing, the pooled
    # sum too
    assert _level_excess(logits, target, input_ids, ceiling=True).tolist() == pytest.approx([0.5, 3.0])
    target.level = torch.tensor([lp + 1.0, lp + 0.5, lp - 0.5])
    target.hold = torch.tensor([True, True, True])
    assert _level_excess(logits, target, input_ids).tolist() == pytest.approx([0.5, 0.5])
    assert _level_excess(logits, target, input_ids, ceiling=True).tolist() == pytest.approx([0.0, 0.0])


def test_digit_levels_follow_the_model_at_each_check_and_the_engine_asks_for_it(
    tiny_model_dir: Path, tiny_corpus: DemoCorpus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = UnlearningSpec(method="counterfactual", device="cpu", dtype="float32")
    ctx = _context(tiny_model_dir, tiny_corpus, spec)
    method = build_method(ctx)
    method.prepare()
    assert method.digit_plans
    before = [t.level.clone() for t in method.targets]
    pooled = [t.pooled.clone() if t.pooled is not None else None for t in method.targets]
    with torch.no_grad():  # another model: random digits get other log-probabilities
        for param in ctx.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    method.on_check()
    moved = 0
    for target, old, mask in zip(method.targets, before, pooled, strict=True):
        if mask is None:
            assert torch.allclose(target.level, old, equal_nan=True)
            continue
        assert torch.allclose(target.level[~mask], old[~mask], equal_nan=True)  # only the digit tokens move
        moved += int((target.level[mask] - old[mask]).abs().gt(1e-3).sum())
    assert moved > 0

    # on the in-loop attacker's copy the digit levels are what that copy gives other digits, as
    # ceilings, and the levels are put back afterwards
    levels = [t.level.clone() for t in method.targets]
    items = sorted({method.targets[p.target].item for p in method.digit_plans})[:2]
    plain, _ = method.forget_loss(items, 0)
    seen: list[tuple[bool, list[torch.Tensor]]] = []
    forget_loss = method.forget_loss

    def spy(idx: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        seen.append((method._ceiling, [t.level.clone() for t in method.targets]))
        return forget_loss(idx, step)

    with torch.no_grad():  # the attacker's copy: another model again
        for param in ctx.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    method.forget_loss = spy  # type: ignore[method-assign]
    relearned, _ = method.relearned_forget_loss(items, 0)
    method.forget_loss = forget_loss  # type: ignore[method-assign]
    (ceiling, during), = seen
    assert ceiling and not method._ceiling
    assert all(torch.allclose(t.level, old, equal_nan=True) for t, old in zip(method.targets, levels, strict=True))
    changed = [k for k, (now, old) in enumerate(zip(during, levels, strict=True)) if not torch.allclose(now, old, equal_nan=True)]
    assert changed and all(method.targets[k].item in items for k in changed)  # the batch's digit levels only
    assert float(relearned.detach()) != pytest.approx(float(plain.detach()))

    # the engine re-measures before every evidence check
    from unlearning_worker.methods.counterfactual import Counterfactual

    calls = []
    monkeypatch.setattr(Counterfactual, "on_check", lambda self: calls.append(1))
    forget, retain = demo_items(tiny_corpus, [tiny_corpus.people[0].person_id])
    from unlearning_worker.engine import run_unlearning

    run_unlearning(model_dir=tiny_model_dir, out_dir=tmp_path / "out", forget=forget, retain=retain,
                   spec=spec.replace(max_steps=4, eval_every=2, min_steps=4))
    assert len(calls) == 2


def test_auto_dtype_keeps_full_weight_training_in_fp32_where_it_fits_and_bf16_where_not(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bf16 weights drop Adam updates under ~1/256 of a weight (a width-scaled unlearning rate's are),
    so "auto" on CUDA holds full weights in fp32 while their training state fits half the free memory."""
    from unlearning_worker import modeling

    params = modeling.parameter_count(tiny_model_dir)
    model = load_model(tiny_model_dir, UnlearningSpec(), torch.device("cpu"))[0]
    assert params == sum(p.numel() for p in model.parameters())  # tied weights counted once, as stored
    cuda = torch.device("cuda")
    free = {"bytes": params * modeling.FP32_TRAINING_BYTES * 2}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a, **k: (free["bytes"], 10 * free["bytes"]))
    auto = UnlearningSpec()
    assert modeling.resolve_dtype(auto, cuda, tiny_model_dir) == torch.float32
    free["bytes"] -= 2  # one byte short of the room fp32 training needs in half the free memory
    assert modeling.resolve_dtype(auto, cuda, tiny_model_dir) == torch.bfloat16
    free["bytes"] *= 100
    assert modeling.resolve_dtype(UnlearningSpec(lora=True), cuda, tiny_model_dir) == torch.bfloat16  # fp32 adapters
    assert modeling.resolve_dtype(UnlearningSpec(dtype="bfloat16"), cuda, tiny_model_dir) == torch.bfloat16
    assert modeling.resolve_dtype(UnlearningSpec(dtype="float32"), cuda, tiny_model_dir) == torch.float32
    assert modeling.resolve_dtype(auto, cuda, None) == torch.bfloat16  # size unknown: the dtype that fits
    assert modeling.resolve_dtype(auto, torch.device("cpu"), tiny_model_dir) == torch.float32
    assert modeling.parameter_count(tiny_model_dir.parent / "no-such-model") is None
