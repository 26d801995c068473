"""The pure math of training: per-token terms and their masked sums (the design notes habit 1).

Losses return *sums* over masked tokens; the caller divides by the token count of the whole
optimiser batch, so micro-batching with gradient accumulation (and data parallelism) gives the
same gradient as one big batch (habit 2).
"""

from __future__ import annotations

import torch


def kl_sft_sums(logits: torch.Tensor, ref_logits: torch.Tensor | None, targets: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_t m_t · NLL_t, Σ_t m_t · KL_t) for SFT with a KL penalty (docs/method.md §2, step 5).

    logits, ref_logits: [B, T, V] predicting targets [B, T]; mask [B, T] in {0, 1}.
      NLL_t = −log π_θ(y_t | y_<t)
      KL_t  = Σ_v π_θ(v | y_<t) (log π_θ(v | y_<t) − log π_ref(v | y_<t))   (full vocabulary)
    KL sum is 0 without a reference.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V]
    nll = -logp.gather(-1, targets[..., None])[..., 0]  # [B, T]
    nll_sum = (nll * mask).sum()
    if ref_logits is None:
        return nll_sum, torch.zeros((), device=logits.device)
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)  # [B, T, V]
    kl = (logp.exp() * (logp - ref_logp)).sum(-1)  # [B, T]
    return nll_sum, (kl * mask).sum()


def kl_sft_loss(logits, ref_logits, targets, mask, kl_coef: float, n_tokens: float | None = None):
    """loss = NLL_sum / n + λ · KL_sum / n, with n the masked token count (of the whole batch when
    given). Returns (loss, nll mean, kl mean)."""
    n = mask.sum() if n_tokens is None else n_tokens
    nll_sum, kl_sum = kl_sft_sums(logits, ref_logits, targets, mask)
    return (nll_sum + kl_coef * kl_sum) / n, nll_sum / n, kl_sum / n


# ----------------------------------------------------------------------------------- RL (docs/method.md §3)


def k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1_t = log π(y_t) − log π_ref(y_t), per sampled token (unbiased KL estimate; can be < 0)."""
    return logp - ref_logp


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3_t = exp(log π_ref − log π) − (log π_ref − log π) − 1 ≥ 0 per sampled token (Schulman 2020)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def part_sums(values: torch.Tensor, part_ids: torch.Tensor, n_parts: int) -> torch.Tensor:
    """Σ over each part's tokens: values [B, T], part_ids [B, T] (−1 = not in any part) -> [n_parts]."""
    keep = part_ids >= 0
    return torch.zeros(n_parts, dtype=values.dtype, device=values.device).index_add(0, part_ids[keep], values[keep])


def part_log_ratios(logp: torch.Tensor, old_logp: torch.Tensor, part_ids: torch.Tensor, n_parts: int) -> torch.Tensor:
    """log ρ_p = mean over the part's tokens of (log π_θ − log π_old) -> [n_parts].

    One part per rollout gives ORL's sequence-level ratio, one per action PRL's part-level ratio."""
    counts = part_sums(torch.ones_like(logp), part_ids, n_parts).clamp(min=1)
    return part_sums(logp - old_logp, part_ids, n_parts) / counts


def clipped_surrogate(log_ratio: torch.Tensor, adv: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-part PPO loss, −min(ρ A, clip(ρ, 1 − ε, 1 + ε) A), ρ = exp(log_ratio).

    ρ = 1.5, A = 1, ε = 0.2 -> −1.2;  ρ = 0.5, A = −1 -> 0.8;  ρ = 1, A = 2 -> −2."""
    ratio = torch.exp(log_ratio)
    return -torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)


def clipped_mask(log_ratio: torch.Tensor, adv: torch.Tensor, eps: float) -> torch.Tensor:
    """True where the clipped term is the one taken (no gradient flows through that part)."""
    ratio = torch.exp(log_ratio)
    return ((ratio > 1 + eps) & (adv > 0)) | ((ratio < 1 - eps) & (adv < 0))


def tis_weights(old_logp: torch.Tensor, sampler_logp: torch.Tensor, part_ids: torch.Tensor, n_parts: int,
                cap: float) -> torch.Tensor:
    """Truncated importance sampling weight of each part -> [n_parts], for rollouts sampled by another
    engine (vLLM) than the trainer: the mean over the part's tokens of
        w_t = min(π_old(y_t) / π_sampler(y_t), C)      (w_t = 1 where sampler_logp is NaN: unknown).

    old [ln 0.5, ln 0.2], sampler [ln 0.25, ln 0.4], one part, C = 1.5 -> (min(2, 1.5) + 0.5) / 2 = 1.0"""
    w = torch.exp(old_logp - sampler_logp).clamp(max=cap)  # [B, T]
    w = torch.where(torch.isnan(w), torch.ones_like(w), w)
    counts = part_sums(torch.ones_like(w), part_ids, n_parts).clamp(min=1)
    return part_sums(w, part_ids, n_parts) / counts
