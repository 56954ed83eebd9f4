"""Loss functions of the unlearning methods, on plain tensors (checked against hand-computed values).

Conventions: `logits` is (B, T, V) for inputs `input_ids` (B, T); a mask is (B, T) over *input
positions* and says which tokens are targets. Logits at position t predict the token at t + 1, so
every function shifts once: token_logprobs(...)[b, t] is log p(input_ids[b, t + 1] | input_ids[b, :t + 1])
and is used where mask[b, t + 1] is set. Padding is never a target. Per-example values are averaged
over examples with weights (1 + PRI when PRI weighting is on): sum(w_i x_i) / sum(w_i).

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T-1): log-probability of each next input token (computed in fp32 for stable sums)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def shifted_mask(mask: torch.Tensor) -> torch.Tensor:
    """The target mask aligned with token_logprobs (drops position 0, which nothing predicts)."""
    return mask[:, 1:].float()


def sequence_logprob(token_lp: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of target-token log-probs, number of target tokens), each (B,)."""
    m = shifted_mask(mask)
    return (token_lp * m).sum(-1), m.sum(-1)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


def nll(token_lp: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over examples of the mean target-token negative log-likelihood."""
    total, count = sequence_logprob(token_lp, mask)
    return weighted_mean(-total / count.clamp_min(1.0), weights)


def gradient_ascent_loss(token_lp: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """GA: minimise the negative NLL of the forget targets (unbounded below; hence evidence-based stops)."""
    return -nll(token_lp, mask, weights)


def npo_loss(
    seq_lp: torch.Tensor, ref_seq_lp: torch.Tensor, weights: torch.Tensor, *, beta: float
) -> torch.Tensor:
    """NPO (Zhang et al. 2024): -(2/beta) log sigmoid(-beta (log pi(y|x) - log pi_ref(y|x)))."""
    return weighted_mean(-(2.0 / beta) * F.logsigmoid(-beta * (seq_lp - ref_seq_lp)), weights)


def simnpo_loss(
    seq_lp: torch.Tensor, n_tokens: torch.Tensor, weights: torch.Tensor, *, beta: float, gamma: float
) -> torch.Tensor:
    """SimNPO (Fan et al. 2024): reference-free, length-normalised NPO,
    -(2/beta) log sigmoid(-(beta/|y|) log pi(y|x) - gamma)."""
    return weighted_mean(
        -(2.0 / beta) * F.logsigmoid(-(beta / n_tokens.clamp_min(1.0)) * seq_lp - gamma), weights
    )


def dpo_loss(
    chosen_lp: torch.Tensor,
    chosen_ref_lp: torch.Tensor,
    rejected_lp: torch.Tensor,
    rejected_ref_lp: torch.Tensor,
    weights: torch.Tensor,
    *,
    beta: float,
) -> torch.Tensor:
    """DPO (Rafailov et al. 2023), used by IdK-DPO with a refusal as the chosen answer:
    -log sigmoid(beta ((log pi - log pi_ref)(chosen) - (log pi - log pi_ref)(rejected)))."""
    margin = (chosen_lp - chosen_ref_lp) - (rejected_lp - rejected_ref_lp)
    return weighted_mean(-F.logsigmoid(beta * margin), weights)


def unlikelihood_loss(token_lp: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Unlikelihood (Welleck et al. 2020): mean over target tokens of -log(1 - p(token)).

    Bounded below by 0 and flat once a token is improbable, unlike gradient ascent: it removes the
    residual mass that lets sampling recover a value, without pushing the model anywhere else.
    """
    p = token_lp.exp().clamp(max=1.0 - 1e-6)
    per_token = -torch.log1p(-p)
    m = shifted_mask(mask)
    per_example = (per_token * m).sum(-1) / m.sum(-1).clamp_min(1.0)
    return weighted_mean(per_example, weights)


def floor_loss(
    token_lp: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor, *, floor: float | torch.Tensor
) -> torch.Tensor:
    """Bounded gradient ascent: mean over target tokens of max(0, log p(token) - floor).

    Pushes each target token down until it is as unlikely as `floor` (the level of a value the model
    never saw), then stops: unlike plain gradient ascent it cannot run away, and unlike unlikelihood
    its pull does not fade while the token is still far more likely than an unseen one. `floor` is a
    number or one level per example, shape (B,).
    """
    if isinstance(floor, torch.Tensor):
        floor = floor.to(token_lp.dtype).unsqueeze(-1)
    per_token = torch.relu(token_lp - floor)
    m = shifted_mask(mask)
    per_example = (per_token * m).sum(-1) / m.sum(-1).clamp_min(1.0)
    return weighted_mean(per_example, weights)


def activation_mse(
    hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """RMU terms (Li et al. 2024): mean over masked positions of the mean squared difference to `target`.

    `hidden` is (B, T, D); `target` broadcasts to it (a scaled random unit vector for the forget term,
    the frozen model's activations for the retain term); `mask` is (B, T) over the positions themselves.
    """
    per_position = (hidden.float() - target.float()).pow(2).mean(-1)
    m = mask.float()
    per_example = (per_position * m).sum(-1) / m.sum(-1).clamp_min(1.0)
    return weighted_mean(per_example, weights)


def soft_cross_entropy(logits: torch.Tensor, target_idx: torch.Tensor, target_p: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy to a sparse target distribution: -sum_k p_k log q(idx_k).

    `logits` is (N, V) at the positions that predict the target tokens; `target_idx` and `target_p`
    are (N, K): the teacher's K most likely tokens and their probabilities (renormalised to sum to 1).
    Minimising it over q is minimising KL(p || q) (the teacher's entropy is a constant). Returns (N,).
    """
    logq = torch.log_softmax(logits.float(), dim=-1)
    return -(target_p.float() * logq.gather(-1, target_idx)).sum(-1)
