"""Loss functions against values computed by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from unlearning_worker.methods import losses


def _logits_for(probabilities: list[list[list[float]]]) -> torch.Tensor:
    # log-probabilities are valid logits: softmax(log p) == p
    return torch.tensor(probabilities).log()


# batch of 2, 4 positions, vocabulary of 3. Row 1 is padded after position 2.
PROBS = [
    [[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]],
    [[0.6, 0.2, 0.2], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25]],
]
IDS = torch.tensor([[0, 1, 2, 0], [2, 0, 1, 0]])  # row 1: last token is padding
MASK = torch.tensor([[False, True, True, True], [False, True, True, False]])


def test_token_logprobs_shift_by_one() -> None:
    lp = losses.token_logprobs(_logits_for(PROBS), IDS)
    # position t predicts token t+1: row 0 -> p(1)=0.25 at t0, p(2)=0.1 at t1, p(0)=0.2 at t2
    expected = torch.tensor([[0.25, 0.1, 0.2], [0.6, 0.3, 0.5]]).log()
    assert torch.allclose(lp, expected, atol=1e-6)


def test_sequence_logprob_ignores_padding_and_first_position() -> None:
    lp = losses.token_logprobs(_logits_for(PROBS), IDS)
    total, count = losses.sequence_logprob(lp, MASK)
    assert count.tolist() == [3.0, 2.0]
    assert total[0].item() == pytest.approx(math.log(0.25) + math.log(0.1) + math.log(0.2), abs=1e-5)
    assert total[1].item() == pytest.approx(math.log(0.6) + math.log(0.3), abs=1e-5)


def test_nll_and_gradient_ascent_weighted_mean() -> None:
    lp = losses.token_logprobs(_logits_for(PROBS), IDS)
    weights = torch.tensor([1.0, 3.0])
    nll0 = -(math.log(0.25) + math.log(0.1) + math.log(0.2)) / 3
    nll1 = -(math.log(0.6) + math.log(0.3)) / 2
    expected = (1 * nll0 + 3 * nll1) / 4
    assert losses.nll(lp, MASK, weights).item() == pytest.approx(expected, abs=1e-5)
    assert losses.gradient_ascent_loss(lp, MASK, weights).item() == pytest.approx(-expected, abs=1e-5)


def test_npo_loss_matches_formula() -> None:
    seq, ref, w = torch.tensor([-2.0, -5.0]), torch.tensor([-1.0, -6.0]), torch.tensor([1.0, 1.0])
    beta = 0.5

    def term(lp: float, r: float) -> float:
        return -(2 / beta) * math.log(1 / (1 + math.exp(beta * (lp - r))))

    expected = (term(-2.0, -1.0) + term(-5.0, -6.0)) / 2
    assert losses.npo_loss(seq, ref, w, beta=beta).item() == pytest.approx(expected, abs=1e-6)


def test_simnpo_loss_matches_formula() -> None:
    seq, n, w = torch.tensor([-6.0]), torch.tensor([3.0]), torch.tensor([2.0])
    beta, gamma = 2.0, 0.5
    x = -(beta / 3.0) * -6.0 - gamma  # = 3.5
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(-x)))
    assert losses.simnpo_loss(seq, n, w, beta=beta, gamma=gamma).item() == pytest.approx(expected, abs=1e-6)


def test_dpo_loss_matches_formula() -> None:
    beta = 0.1
    margin = (-3.0 - -4.0) - (-2.0 - -1.0)  # chosen gained 1, rejected lost 1 -> margin 2
    expected = -math.log(1 / (1 + math.exp(-beta * margin)))
    got = losses.dpo_loss(
        torch.tensor([-3.0]), torch.tensor([-4.0]), torch.tensor([-2.0]), torch.tensor([-1.0]),
        torch.tensor([1.0]), beta=beta,
    )
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_unlikelihood_matches_formula() -> None:
    lp = losses.token_logprobs(_logits_for(PROBS), IDS)
    w = torch.tensor([1.0, 1.0])
    row0 = -(math.log(1 - 0.25) + math.log(1 - 0.1) + math.log(1 - 0.2)) / 3
    row1 = -(math.log(1 - 0.6) + math.log(1 - 0.3)) / 2
    assert losses.unlikelihood_loss(lp, MASK, w).item() == pytest.approx((row0 + row1) / 2, abs=1e-5)


def test_floor_loss_matches_formula_and_stops_at_the_level() -> None:
    lp = losses.token_logprobs(_logits_for(PROBS), IDS)
    w = torch.tensor([1.0, 1.0])
    level = math.log(0.2)
    # relu(log p - level) per target token: p = 0.25, 0.1, 0.2 in row 0 and 0.6, 0.3 in row 1
    row0 = (math.log(0.25) - level + 0.0 + 0.0) / 3
    row1 = (math.log(0.6) - level + math.log(0.3) - level) / 2
    assert losses.floor_loss(lp, MASK, w, floor=level).item() == pytest.approx((row0 + row1) / 2, abs=1e-5)
    # one level per example: row 1 already below its own level contributes nothing
    per_example = torch.tensor([level, math.log(0.9)])
    assert losses.floor_loss(lp, MASK, w, floor=per_example).item() == pytest.approx(row0 / 2, abs=1e-5)
    # the gradient vanishes for tokens at or below the level (bounded ascent, no run-away)
    logits = _logits_for(PROBS).requires_grad_(True)
    losses.floor_loss(losses.token_logprobs(logits, IDS), MASK, w, floor=-5.0).backward()  # all tokens above it
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    logits.grad = None
    losses.floor_loss(losses.token_logprobs(logits, IDS), MASK, w, floor=0.0).backward()  # all at or below it
    assert logits.grad is None or logits.grad.abs().sum() == 0


def test_activation_mse_masks_positions() -> None:
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 1.0], [100.0, 100.0]]])  # last position is masked out
    target = torch.tensor([1.0, 1.0])
    mask = torch.tensor([[True, True, False]])
    # per position mean square: 0 and (4+0)/2 = 2 -> mean 1
    assert losses.activation_mse(hidden, target, mask, torch.tensor([1.0])).item() == pytest.approx(1.0)


def test_soft_cross_entropy_matches_hand_computed_value() -> None:
    # q = softmax([0, ln 3]) = [0.25, 0.75]; target p = 0.5 on each token (listed in the other order)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    loss = losses.soft_cross_entropy(logits, torch.tensor([[1, 0]]), torch.tensor([[0.5, 0.5]]))
    assert loss.shape == (1,)
    assert float(loss[0]) == pytest.approx(-(0.5 * math.log(0.75) + 0.5 * math.log(0.25)), rel=1e-6)
    # at its minimum the model reproduces the target and the loss is the target's entropy
    exact = losses.soft_cross_entropy(torch.tensor([[0.0, 0.0]]), torch.tensor([[1, 0]]), torch.tensor([[0.5, 0.5]]))
    assert float(exact[0]) == pytest.approx(math.log(2.0), rel=1e-6)
