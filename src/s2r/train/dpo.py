"""`s2r dpo`: direct preference optimisation on pairs of a model's own right and wrong samples.

    loss = Σ_b w_b · −log σ(β [(π_c − ref_c) − (π_r − ref_r)]) / Σ_b w_b     (train/dpo_math.py)

π_c, π_r: the trained model's summed log-probs of the chosen / rejected completion (and its EOS)
given the prompt; ref: the same under the starting model (frozen; with LoRA the model with its
adapters switched off, so no second copy is kept). Pairs (train/dpo_pairs.py): `--pairs attempts`
from `s2r sample` output (K graded first attempts per problem), `--pairs trajectories` from
`s2r solve --samples K` S²R trajectories (whole trajectories, ranked by final correctness).
`--weighting difficulty` weighs a pair by the share of its problem's samples that are wrong; none = 1.

Processes, checkpoints, exact resume, logs and the saved model work as in `s2r sft` (train/sft.py);
`OUT/model` is a save_pretrained folder (LoRA adapters merged; the adapter alone in `OUT/adapter`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from s2r.config import arg, to_dict
from s2r.jsonl import DataError, write_json_atomic
from s2r.prompts import problem_prompt
from s2r.train.common import TrainFields, checkpoint, finished, launched, load_models, save_model
from s2r.train.dpo_pairs import SOURCES, WEIGHTINGS, Pair
from s2r.train.sft import SFTConfig, lr_at, micro_batches, plan_steps, set_lr

if TYPE_CHECKING:
    import torch


@dataclass
class DPOConfig(TrainFields):
    data: str = arg(help="graded samples JSONL: `s2r sample` output (--pairs attempts) or `s2r solve --samples K` (trajectories)",
                    positional=True)
    model: str = arg(help="starting model folder (also the frozen reference)")
    out: str = arg("runs/dpo", help="output folder: model/, ckpt.pt, log.jsonl, tb/, dpo.json")
    pairs: str = arg("attempts", help="attempts: first attempts of `s2r sample`; trajectories: whole S²R trajectories")
    weighting: str = arg("none", help="none: every pair weighs 1; difficulty: the share of its problem's samples that are wrong")
    max_pairs: int | None = arg(None, help="(right, wrong) pairs per problem at most, drawn with the seed (default: all)")
    beta: float = arg(0.1, help="β: the DPO temperature (the weight of the KL to the reference in its objective)")
    epochs: int = arg(1, help="passes over the pairs")
    batch_size: int = arg(32, help="pairs per optimiser step (all processes together)")
    lr: float = arg(1e-6, help="peak learning rate (AdamW)")
    warmup_ratio: float = arg(0.1, help="share of the steps with a linear warm-up")
    min_lr_ratio: float = arg(0.0, help="the cosine schedule ends at lr × this")
    max_length: int = arg(4096, help="pairs with a longer sequence (prompt + completion) are left out, with a count")
    max_steps: int | None = arg(None, help="stop after this many steps (the schedule still spans all epochs)")
    seed: int = arg(0, help="seed of the data order and of the pairs drawn per problem")
    ckpt_every: int = arg(100, help="steps between checkpoints")

    @property
    def kl_coef(self) -> float:
        """load_models keeps a frozen reference when this is > 0: DPO always needs one."""
        return self.beta

    key = SFTConfig.key  # what determines the trained weights: every field but where they go and how fast


Example = tuple[list[int], list[int], list[int], list[int], float]  # chosen ids, mask, rejected ids, mask, weight


def encode_pairs(pairs: list[Pair], tokenizer, cfg: DPOConfig) -> tuple[list[Example], int]:
    """Token ids and loss masks (completion + EOS) of each pair, and how many were too long (left out)."""
    from s2r.train.batching import encode

    prompt_cfg = cfg.prompt_config()
    examples, too_long = [], 0
    for p in pairs:
        prompt = problem_prompt(p.problem, prompt_cfg, tokenizer)
        (c, cm), (r, rm) = encode(tokenizer, prompt, p.chosen), encode(tokenizer, prompt, p.rejected)
        if max(len(c), len(r)) > cfg.max_length:
            too_long += 1
            continue
        examples.append((c, cm, r, rm, p.weight))
    if not examples:
        raise ValueError(f"{cfg.data}: no pair fits in max_length {cfg.max_length}")
    return examples, too_long


def sequence_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ over the completion tokens (and EOS) of log π(x_t | x_<t), per sequence: [B]."""
    from s2r.train.batching import token_logprobs

    return (token_logprobs(model, batch) * batch["loss_mask"][:, 1:]).sum(-1)  # [B, T-1] -> [B]


def accumulate(ddp, model, ref, micros: list[list[Example]], total_weight: float, beta: float, world: int = 1,
               scales: list[float] | None = None, pad_id: int = 0, device="cpu", autocast=None) -> list[float]:
    """Forward and backward every micro-batch of one optimiser batch; gradients add up to those of the
    weighted loss over the whole batch. Returns [Σ w l / W, pairs with margin > 0, Σ β · margin] of
    this process. ddp / model / ref as in sft.accumulate (ref None: LoRA, the adapter-free model);
    scales: of each micro-batch (default 1; 0 for one that only joins the collectives)."""
    import torch

    from s2r.train.batching import collate
    from s2r.train.dpo_math import dpo_margins, weighted_dpo_loss

    sums = [0.0, 0.0, 0.0]
    for j, mb in enumerate(micros):
        b = len(mb)
        seqs = [(e[0], e[1]) for e in mb] + [(e[2], e[3]) for e in mb]  # chosen then rejected: [2b]
        t = {k: v.to(device) for k, v in collate(seqs, pad_id).items()}
        scale = scales[j] if scales else 1.0
        weights = torch.tensor([e[4] for e in mb], device=device) * scale  # [b]
        sync = j == len(micros) - 1 or not hasattr(ddp, "no_sync")  # DDP syncs once; FSDP reduces every backward
        with (contextlib.nullcontext() if sync else ddp.no_sync()), (autocast or contextlib.nullcontext()):
            logps = sequence_logps(ddp, t)  # [2b]
            with torch.no_grad():
                if ref is not None:
                    ref_logps = sequence_logps(ref, t)
                else:
                    with model.disable_adapter():
                        ref_logps = sequence_logps(model, t)
            loss = weighted_dpo_loss(logps[:b], logps[b:], ref_logps[:b], ref_logps[b:], beta, weights, total_weight)
            (loss * world).backward()  # DDP averages gradients over processes: × world gives the batch's
        margins = dpo_margins(logps[:b], logps[b:], ref_logps[:b], ref_logps[b:]).detach()  # [b]
        sums[0] += loss.item()
        sums[1] += (margins > 0).sum().item() * scale
        sums[2] += beta * margins.sum().item() * scale
    return sums


def load_pairs(cfg: DPOConfig) -> list[Pair]:
    from s2r.metrics import load_trajectories
    from s2r.train.dpo_pairs import build_pairs

    if cfg.pairs not in SOURCES or cfg.weighting not in WEIGHTINGS:
        raise ValueError(f"--pairs must be one of {', '.join(SOURCES)} and --weighting one of {', '.join(WEIGHTINGS)}")
    if cfg.beta <= 0:
        raise ValueError(f"--beta must be > 0, not {cfg.beta}")
    records = load_trajectories(cfg.data)  # its errors name the file and line
    try:
        pairs = build_pairs(records, cfg.pairs, cfg.weighting, cfg.max_pairs, cfg.seed)
    except DataError as e:
        raise DataError(f"{cfg.data}: {e}") from None
    if not pairs:
        raise ValueError(f"{cfg.data}: no problem has both a right and a wrong sample: no pair to train on")
    return pairs


def run_dpo(cfg: DPOConfig) -> Path:
    import torch

    pairs = load_pairs(cfg)
    from s2r.train.sharding import lockstep, optimiser_step

    with launched(cfg) as dist_:
        out = Path(cfg.out)
        key = cfg.key(hashlib.sha256(Path(cfg.data).read_bytes()).hexdigest())
        info_path = out / "dpo.json"
        if finished(info_path, key, lambda info: info.get("finished"), dist_.main, "DPO model"):
            return out / "model"
        model, ref, tokenizer = load_models(cfg, dist_)
        examples, too_long = encode_pairs(pairs, tokenizer, cfg)
        steps, last, run = plan_steps(cfg, len(examples), too_long, "pairs", out, key, model, dist_, "dpo")
        step, log = run.done, run.log
        model.train()
        start = time.monotonic()
        while step < last:
            batch = [examples[i] for i in steps[step]]
            total_weight = sum(e[4] for e in batch)  # W of the whole optimiser batch
            # 2 sequences a pair; a process with fewer micro-batches (or none) joins with zero-weight ones
            micros, scales = lockstep(micro_batches(batch, dist_.rank, dist_.world, max(1, cfg.micro_batch_size // 2)),
                                      batch[:1], dist_, cfg.strategy == "fsdp")
            lr = set_lr(run.opt, lr_at(step, len(steps), cfg))
            loss, won, margin = dist_.sum(accumulate(run.ddp, model, ref, micros, total_weight, cfg.beta, dist_.world, scales,
                                                     tokenizer.pad_token_id, dist_.device, run.autocast))
            grad_norm = optimiser_step(run.opt, run.params, cfg.grad_clip)
            step += 1
            record = {"step": step, "epoch": (step - 1) // math.ceil(len(examples) / cfg.batch_size), "train/loss": loss,
                      "train/reward_acc": won / len(batch), "train/reward_margin": margin / len(batch), "lr": lr,
                      "grad_norm": grad_norm, "pairs": len(batch), "seconds": time.monotonic() - start}
            log.append(record)
            run.run_log.write(step, record, loss=f"{loss:.3f}", acc=f"{record['train/reward_acc']:.2f}")
            if step % cfg.ckpt_every == 0 or step == last:
                checkpoint(out, cfg, dist_, model, run.trainable_names, run.opt, key=key, step=step, rng=torch.get_rng_state())
        run.run_log.close()
        save_model(model, tokenizer, cfg, out, dist_)
        if dist_.main:
            write_json_atomic(info_path, {"key": key, "finished": step == len(steps), "steps": step, "total_steps": len(steps),
                                          "pairs": len(examples), "left_out_too_long": too_long, "config": to_dict(cfg),
                                          "last": log[-1] if log else None})
            print(f"wrote {out / 'model'} after {step} steps on {len(examples)} pairs", file=sys.stderr)
        dist_.barrier()
        return out / "model"
