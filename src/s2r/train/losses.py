"""The pure math of training: per-token terms and their masked sums (DESIGN.md habit 1).

Losses return *sums* over masked tokens; the caller divides by the token count of the whole
optimiser batch, so micro-batching with gradient accumulation (and data parallelism) gives the
same gradient as one big batch (habit 2).
"""

from __future__ import annotations

import torch


def kl_sft_sums(logits: torch.Tensor, ref_logits: torch.Tensor | None, targets: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_t m_t · NLL_t, Σ_t m_t · KL_t) for SFT with a KL penalty (METHOD.md §2, step 5).

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
