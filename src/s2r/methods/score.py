"""SCoRe (Kumar et al. 2024, arXiv 2409.12917): two-turn self-correction by online RL.

A rollout is attempt 1, a fixed instruction to find and fix any error, attempt 2; r1, r2 ∈ {−1, +1}
are the grader's rewards of the two answers. Each attempt is one part of the rollout (its tokens),
trained with the clipped per-part loss of `s2r rl`; what differs between the stages is the return
each part is credited with and the weight of its KL to the base model:

    stage I   G1 = r2,            G2 = r2              KL weight β2 on attempt 1, β1 on attempt 2
              (maximise attempt 2; a strong KL, β2 ≈ 10 β1, holds attempt 1 at the base model)
    stage II  r̂2 = r2 + α (r2 − r1)                     KL weight β1 on both
              G1 = r1 + r̂2,       G2 = r̂2
              (both attempts' rewards; the bonus α (r2 − r1) pays attempt 2 for fixing attempt 1
               and charges it for breaking it; attempt 1 is credited with what follows it)

Advantages are leave-one-out (RLOO) per attempt over the K samples of a prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from s2r.train.advantages import rloo

STAGES = (1, 2)

# The fixed second-turn instruction (the paper's for MATH, its answer-format sentence made \boxed{}).
INSTRUCTION = ("There might be an error in the solution above because of lack of understanding of the question. "
               "Please correct the error, if any, and rewrite the solution. Put your final answer in \\boxed{}.")


def shaped_returns(r1: float, r2: float, stage: int, alpha: float = 10.0) -> tuple[float, float]:
    """(G1, G2), the returns of attempt 1 and attempt 2 (module docstring).

    stage 1: (r1, r2) = (−1, 1) -> (1, 1)
    stage 2, α = 10: (−1, 1) -> r̂2 = 1 + 10·2 = 21 -> (−1 + 21, 21) = (20, 21)
                     (1, −1) -> r̂2 = −1 + 10·(−2) = −21 -> (1 − 21, −21) = (−20, −21)
                     (1, 1)  -> r̂2 = 1 -> (2, 1)
    """
    if stage == 1:
        return r2, r2
    if stage == 2:
        shaped = r2 + alpha * (r2 - r1)  # r̂2 = r2 + α (r2 − r1)
        return r1 + shaped, shaped
    raise ValueError(f"SCoRe stage must be 1 or 2, not {stage!r}")


def kl_weights(stage: int, beta1: float, beta2: float) -> tuple[float, float]:
    """β of each attempt's KL to the base model: stage 1 (β2, β1), stage 2 (β1, β1)."""
    if stage not in STAGES:
        raise ValueError(f"SCoRe stage must be 1 or 2, not {stage!r}")
    return (beta2, beta1) if stage == 1 else (beta1, beta1)


def score_advantages(groups: Sequence[Sequence[tuple[float, float]]], stage: int,
                     alpha: float = 10.0) -> list[list[tuple[float, float]]]:
    """groups[prompt][sample] = (r1, r2) -> (A1, A2) per rollout: RLOO over each attempt's returns.

    stage 2, α = 10, one prompt with (r1, r2) = (−1, 1), (1, 1):
      G = (20, 21), (2, 1);  A1 = 20 − 2 = 18 and 2 − 20 = −18;  A2 = 21 − 1 = 20 and −20
    """
    returns = torch.tensor([[shaped_returns(r1, r2, stage, alpha) for r1, r2 in g] for g in groups],
                           dtype=torch.float64)  # [P, K, 2]
    adv = torch.stack([rloo(returns[..., 0]), rloo(returns[..., 1])], dim=-1)  # [P, K, 2]
    return [[(a1, a2) for a1, a2 in row] for row in adv.tolist()]
