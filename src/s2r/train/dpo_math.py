"""The pure math of `s2r dpo`: the (difficulty-)weighted DPO loss (Rafailov et al. 2023).

    l_b = −log σ(β [(π_c − ref_c) − (π_r − ref_r)])            per pair b
    loss = Σ_b w_b l_b / W,   W = Σ_b w_b over the optimiser batch

π_c, π_r: the policy's summed log-probs of the chosen / rejected completion given the prompt;
ref_c, ref_r: the reference's. Plain DPO is w_b = 1 (then loss = mean over pairs, as TRL's
"sigmoid" loss); difficulty weighting sets w_b = the share of the problem's graded samples that are
wrong (`dpo_pairs.difficulty`). Dividing by Σ w rather than B keeps the loss a weighted mean, so β
and the learning rate mean the same with and without weighting; only the mix of problems changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_margins(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                ref_rejected: torch.Tensor) -> torch.Tensor:
    """(π_c − ref_c) − (π_r − ref_r), all [B] -> [B]: how much more the policy prefers the chosen
    completion than the reference does (the implicit reward margin / β)."""
    return (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)


def weighted_dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                      ref_rejected: torch.Tensor, beta: float, weights: torch.Tensor,
                      total_weight: float | torch.Tensor | None = None) -> torch.Tensor:
    """Σ_b w_b · −log σ(β · margin_b) / W; inputs [B], W = Σ_b w_b unless given (a micro-batch passes
    the weight of its whole optimiser batch, so accumulated gradients are those of one big batch).

    β = 0.1, w = 1:  margin 3 -> log(1 + e^−0.3) = 0.554355;  margin 0 -> log 2;  margin −3 -> 0.854355
    """
    per_pair = -F.logsigmoid(beta * dpo_margins(pi_chosen, pi_rejected, ref_chosen, ref_rejected))  # [B]
    total = weights.sum() if total_weight is None else total_weight
    return (weights * per_pair).sum() / total
