"""The clipped per-part policy update shared by `s2r rl` and `s2r offline` (rl.py's module
docstring has the objective): rollouts as tensors, scoring of π_old and π_ref, and gradient
accumulation over micro-batches."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

from s2r.train.advantages import fold_kl


@dataclass
class Rollout:
    ids: list[int]  # prompt + completion (+ EOS)
    parts: list[int]  # part index per token, −1 on the prompt
    adv: list[float]  # advantage per part (the KL fold comes later)
    old_logp: list[float] | None = None  # log π_old per predicted token, [len(ids) − 1]
    ref_logp: list[float] | None = None
    sampler_logp: list[float] | None = None  # log π of the engine that sampled (vLLM), NaN where unknown


def pad(rows: list[list], value, device):
    import torch

    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], device=device)


def batch_of(rollouts: list[Rollout], pad_id: int, device) -> dict:
    """Tensors of a micro-batch, right-padded: input_ids, attention_mask [b, T]; parts [b, T−1]
    (numbered across the micro-batch, −1 off the trained tokens, aligned with the predicted token)."""
    offsets, n = [], 0
    for r in rollouts:
        offsets.append(n)
        n += len(r.adv)
    parts = [[p + o if p >= 0 else -1 for p in r.parts[1:]] for r, o in zip(rollouts, offsets)]
    t = {"input_ids": pad([r.ids for r in rollouts], pad_id, device),
         "attention_mask": pad([[1] * len(r.ids) for r in rollouts], 0, device),
         "parts": pad(parts, -1, device), "n_parts": n}
    if rollouts[0].old_logp is not None:
        t["old_logp"] = pad([r.old_logp for r in rollouts], 0.0, device)
    if rollouts[0].ref_logp is not None:
        t["ref_logp"] = pad([r.ref_logp for r in rollouts], 0.0, device)
    if rollouts[0].sampler_logp is not None:
        t["sampler_logp"] = pad([r.sampler_logp for r in rollouts], math.nan, device)
    return t


def score_tokens(model, ref, rollouts: list[Rollout], micro: int, pad_id: int, device, autocast,
                 temperature: float = 1.0, old: bool = True, dist_=None) -> None:
    """Fill old_logp (the sampling policy, before any update; skipped with old=False, for an
    on-policy single step that reads it off its own forward) and ref_logp of every rollout, both at
    the sampling temperature. With dist_ given, every process scores as many micro-batches as the
    one with most (a sharded model's forward is a collective)."""
    import torch

    from s2r.train.batching import token_logprobs
    from s2r.train.sharding import lockstep

    chunks = [rollouts[lo : lo + micro] for lo in range(0, len(rollouts), micro)]
    if dist_ is not None:
        chunks, _ = lockstep(chunks, [Rollout([pad_id, pad_id], [-1, -1], [])], dist_, on=True)
    with torch.no_grad(), (autocast or contextlib.nullcontext()):
        for mb in chunks:
            t = batch_of(mb, pad_id, device)
            if ref is not None:
                r = token_logprobs(ref, t, temperature)
            elif hasattr(model, "disable_adapter"):  # LoRA: the reference is the model without adapters
                with model.disable_adapter():
                    r = token_logprobs(model, t, temperature)
            else:
                r = None
            o = token_logprobs(model, t, temperature) if old else None  # [b, T-1]
            for i, ro in enumerate(mb):
                ro.old_logp = o[i, : len(ro.ids) - 1].tolist() if o is not None else None
                ro.ref_logp = r[i, : len(ro.ids) - 1].tolist() if r is not None else None


def rl_accumulate(ddp, micros: list[list[Rollout]], n_parts: int, n_tokens: int, cfg, world: int = 1,
                  weights: list[float] | None = None, pad_id: int = 0, device="cpu", autocast=None) -> list[float]:
    """Forward and backward every micro-batch of one optimiser step; the gradients add up to those of
    the step's loss over all its parts (see the module docstring). Rollouts without old_logp are
    on-policy (one step on fresh rollouts): π_old = π_θ, read off this forward. With kl_estimator
    k1 the KL is folded into the advantages here. Returns [Σ surrogate, Σ k3, clipped parts, Σ k1,
    k1 tokens] of this process. cfg: an RLConfig or OfflineConfig; weights: of each micro-batch
    (default 1; 0 for one that only joins the collectives)."""
    import torch

    from s2r.train.batching import token_logprobs
    from s2r.train.losses import clipped_mask, clipped_surrogate, k1, k3, part_log_ratios, part_sums, tis_weights

    sums = [0.0] * 5
    for j, mb in enumerate(micros):
        t = batch_of(mb, pad_id, device)
        adv = torch.tensor([a for r in mb for a in r.adv], dtype=torch.float32, device=device)  # [n]
        trained = t["parts"] >= 0  # [b, T-1]
        weight = weights[j] if weights else 1.0
        sync = j == len(micros) - 1 or not hasattr(ddp, "no_sync")  # DDP syncs once; FSDP reduces every backward
        with (contextlib.nullcontext() if sync else ddp.no_sync()), (autocast or contextlib.nullcontext()):
            logp = token_logprobs(ddp, t, cfg.temperature)  # [b, T-1], π_θ at the sampling temperature
            old = t.get("old_logp", logp.detach())  # [b, T-1]
            k1_sum = torch.zeros((), device=device)
            if "ref_logp" in t:
                k1_t = k1(old, t["ref_logp"]).float()  # [b, T-1], log π_old − log π_ref
                k1_sum = (k1_t * trained).sum() * weight
                if cfg.kl_estimator == "k1":
                    adv = fold_kl(adv, part_sums(k1_t, t["parts"], t["n_parts"]), cfg.kl_coef)  # A_p − β Σ_{t∈p} k1_t
            log_ratio = part_log_ratios(logp, old, t["parts"], t["n_parts"])  # [n]
            surrogate = clipped_surrogate(log_ratio, adv, cfg.clip_eps)  # [n]
            if "sampler_logp" in t:  # sampled by vLLM: truncated importance sampling (rl_vllm.py)
                surrogate = surrogate * tis_weights(old, t["sampler_logp"], t["parts"], t["n_parts"], cfg.tis_cap)
            surrogate = surrogate.sum() * weight
            loss = surrogate / n_parts
            k3_sum = torch.zeros((), device=device)
            if cfg.kl_estimator == "k3" and "ref_logp" in t:
                k3_sum = (k3(logp, t["ref_logp"]) * trained).sum() * weight
                loss = loss + cfg.kl_coef * k3_sum / n_tokens
            (loss * world).backward()  # DDP and FSDP average over processes; × world makes it the sum
        sums[0] += surrogate.item()
        sums[1] += k3_sum.item()
        sums[2] += clipped_mask(log_ratio.detach(), adv, cfg.clip_eps).sum().item() * weight
        sums[3] += k1_sum.item()
        sums[4] += trained.sum().item() * weight if "ref_logp" in t else 0.0
    return sums
