"""The clipped per-part policy update shared by `s2r rl` and `s2r offline` (rl.py's module
docstring has the objective): rollouts as tensors, scoring of π_old and π_ref, and gradient
accumulation over micro-batches."""

from __future__ import annotations

import contextlib
import math
from dataclasses import astuple, dataclass

from s2r.train.advantages import fold_kl


@dataclass
class Rollout:
    ids: list[int]  # prompt + completion (+ EOS)
    parts: list[int]  # part index per token, −1 on the prompt
    adv: list[float]  # advantage per part (the KL fold comes later)
    old_logp: list[float] | None = None  # log π_old per predicted token, [len(ids) − 1]
    ref_logp: list[float] | None = None
    sampler_logp: list[float] | None = None  # log π of the engine that sampled (vLLM), NaN where unknown
    kl: list[float] | None = None  # β of the k1 fold per part (default: PolicyLoss.kl_coef for every part)


@dataclass(frozen=True)
class PolicyLoss:
    """The settings of the clipped per-part loss; `s2r rl` and `s2r offline` configs make one (policy_loss())."""

    clip_eps: float = 0.2  # ε of the clipped surrogate
    kl_coef: float = 0.0  # β of the KL to the reference
    kl_estimator: str = "k1"  # k1: β·Σk1 folded into each part's advantage; k3: β·mean k3 added to the loss
    temperature: float = 1.0  # the sampling temperature: every π is taken at it
    tis_cap: float = 2.0  # cap C of the truncated importance weight (rollouts sampled by vLLM)


@dataclass
class PolicyStats:
    """What one optimiser step's micro-batches add up to (weighted, on one process; `summed` adds
    them over processes): the sums behind the train/* means of the log."""

    surrogate_sum: float = 0.0  # Σ_p clipped surrogate
    k3_sum: float = 0.0  # Σ_t k3_t over the trained tokens
    clipped_parts: float = 0.0  # parts whose clipped term was taken
    k1_sum: float = 0.0  # Σ_t k1_t over the trained tokens (log π_old − log π_ref)
    k1_tokens: float = 0.0  # trained tokens with a reference

    def __add__(self, other: PolicyStats) -> PolicyStats:
        return PolicyStats(*(a + b for a, b in zip(astuple(self), astuple(other))))

    def summed(self, dist_) -> PolicyStats:
        """Added up over processes (`Distributed.sum`)."""
        return PolicyStats(*dist_.sum(list(astuple(self))))

    @property
    def kl_ref(self) -> float | None:
        """Mean k1 per trained token, None without a reference."""
        return self.k1_sum / self.k1_tokens if self.k1_tokens else None


def part_kl_coefs(rollouts: list[Rollout], default: float) -> list[float]:
    """β of each part of a micro-batch, in batch_of's numbering: a rollout's own `kl`, else `default`.

    rollouts with 2 parts (kl [0.5, 0.05]) and 1 part (no kl), default 0.1 -> [0.5, 0.05, 0.1]"""
    out = []
    for r in rollouts:
        if r.kl is not None and len(r.kl) != len(r.adv):
            raise ValueError(f"a rollout has {len(r.adv)} parts but {len(r.kl)} KL coefficients")
        out += r.kl if r.kl is not None else [default] * len(r.adv)
    return out


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
                 temperature: float = 1.0, old: bool = True, dist_=None, ref_is_old: bool = False) -> None:
    """Fill old_logp (the sampling policy, before any update; skipped with old=False, for an
    on-policy single step that reads it off its own forward) and ref_logp of every rollout, both at
    the sampling temperature. ref_is_old: the reference is the untrained policy that sampled (offline
    RL), so one forward of `model` fills both. With dist_ given, every process scores as many
    micro-batches as the one with most (a sharded model's forward is a collective)."""
    import torch

    from s2r.train.batching import token_logprobs
    from s2r.train.sharding import lockstep

    chunks = [rollouts[lo : lo + micro] for lo in range(0, len(rollouts), micro)]
    if dist_ is not None:
        chunks, _ = lockstep(chunks, [Rollout([pad_id, pad_id], [-1, -1], [])], dist_, on=True)
    with torch.no_grad(), (autocast or contextlib.nullcontext()):
        for mb in chunks:
            t = batch_of(mb, pad_id, device)
            o = token_logprobs(model, t, temperature) if old else None  # [b, T-1]
            if ref_is_old:
                r = o  # the reference is the policy that sampled: the same forward
            elif ref is not None:
                r = token_logprobs(ref, t, temperature)
            elif hasattr(model, "disable_adapter"):  # LoRA: the reference is the model without adapters
                with model.disable_adapter():
                    r = token_logprobs(model, t, temperature)
            else:
                r = None
            for i, ro in enumerate(mb):
                ro.old_logp = o[i, : len(ro.ids) - 1].tolist() if o is not None else None
                ro.ref_logp = r[i, : len(ro.ids) - 1].tolist() if r is not None else None


def rl_accumulate(ddp, micros: list[list[Rollout]], n_parts: int, n_tokens: int, loss_cfg, world: int = 1,
                  weights: list[float] | None = None, pad_id: int = 0, device="cpu", autocast=None) -> PolicyStats:
    """Forward and backward every micro-batch of one optimiser step; the gradients add up to those of
    the step's loss over all its parts (see the module docstring). Rollouts without old_logp are
    on-policy (one step on fresh rollouts): π_old = π_θ, read off this forward. With kl_estimator
    k1 the KL is folded into the advantages here, with each part's β (`part_kl_coefs`). Returns
    this process's PolicyStats. loss_cfg: a PolicyLoss, or a config that makes one (policy_loss());
    weights: of each micro-batch (default 1; 0 for one that only joins the collectives)."""
    import torch

    from s2r.train.batching import token_logprobs
    from s2r.train.losses import clipped_mask, clipped_surrogate, k1, k3, part_log_ratios, part_sums, tis_weights

    cfg = loss_cfg if isinstance(loss_cfg, PolicyLoss) else loss_cfg.policy_loss()
    stats = PolicyStats()
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
                    beta = cfg.kl_coef if all(r.kl is None for r in mb) else \
                        torch.tensor(part_kl_coefs(mb, cfg.kl_coef), dtype=torch.float32, device=device)  # [n]
                    adv = fold_kl(adv, part_sums(k1_t, t["parts"], t["n_parts"]), beta)  # A_p − β_p Σ_{t∈p} k1_t
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
        stats += PolicyStats(surrogate.item(), k3_sum.item(),
                             clipped_mask(log_ratio.detach(), adv, cfg.clip_eps).sum().item() * weight, k1_sum.item(),
                             trained.sum().item() * weight if "ref_logp" in t else 0.0)
    return stats


def update_policy(run, rollouts: list[Rollout], cfg, loss: PolicyLoss, dist_, pad_id: int, seed: str) -> tuple[PolicyStats, int]:
    """One iteration's updates (`s2r rl`, `s2r score`): cfg.epochs passes over the rollouts, each of
    cfg.updates optimiser steps on disjoint shares of them (shuffled with `seed`, per process).
    Returns the PolicyStats summed over steps and processes, and the parts trained."""
    import random

    from s2r.train.sharding import lockstep, optimiser_step

    shares = []
    for epoch in range(cfg.epochs):
        order = list(range(len(rollouts)))
        random.Random(f"{seed}|{epoch}|{dist_.rank}").shuffle(order)
        shares += [[rollouts[i] for i in order[u :: cfg.updates]] for u in range(cfg.updates)]
    # A process with nothing to train on (fewer prompts than processes, or every generation
    # failed) still joins each step's all-reduce, with a rollout borrowed from another one.
    spare = rollouts[:1]
    if dist_.sum([float(not rollouts)])[0]:
        spare = next((part for part in dist_.gather(rollouts[:1]) if part), [])
    totals, parts_total = PolicyStats(), 0
    for share in shares:
        n_parts, n_tokens = dist_.sum([sum(len(r.adv) for r in share), sum(sum(p >= 0 for p in r.parts[1:]) for r in share)])
        if n_parts == 0:
            continue
        micros, weights = lockstep([share[i : i + cfg.micro_batch_size] for i in range(0, len(share), cfg.micro_batch_size)],
                                   spare, dist_, cfg.strategy == "fsdp")  # the spare at weight 0
        stats = rl_accumulate(run.ddp, micros, n_parts, max(1, n_tokens), loss, dist_.world, weights, pad_id, dist_.device,
                              run.autocast).summed(dist_)
        optimiser_step(run.opt, run.params, cfg.grad_clip)
        totals, parts_total = totals + stats, parts_total + n_parts
    return totals, parts_total
