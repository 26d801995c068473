"""`s2r sft`: supervised fine-tuning on span-masked records, with a KL penalty to the frozen start.

    loss = Σ_t m_t NLL_t / n + λ · Σ_t m_t KL_t(π_θ ‖ π_ref) / n        (docs/method.md §2, step 5)

m_t = 1 on the trained character spans of each record (`s2r build`) and the closing EOS; n = the
number of trained tokens in the whole optimiser batch, so gradient accumulation over uneven
micro-batches and data parallelism give the gradient of one big batch (tests/test_sft.py).

Full fine-tuning or LoRA (peft; the reference is then the model with its adapters switched off, so
no second copy is kept). One process, or several under `torchrun` / `accelerate launch` (DDP, or
FSDP2 with `--strategy fsdp`, `sharding.py`: nccl on GPUs, gloo on CPUs). Checkpoints (`ckpt.pt`, or
sharded `ckpt/` under fsdp: trainable weights, optimiser, step, RNG) every `ckpt_every` steps give an
exact resume: the data order is a function of the seed and the epoch.
Logs every step to `log.jsonl` and TensorBoard (`tb/`). The result is a `save_pretrained` folder,
`OUT/model` (LoRA adapters merged; the adapter alone in `OUT/adapter`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from s2r.config import arg, to_dict
from s2r.jsonl import DataError, has_surrogate, iter_jsonl, wrong_field, write_json_atomic
from s2r.prompts import PromptConfig, messages_for, render_prompt
from s2r.train.common import TrainFields, checkpoint, finished, launched, load_models, save_model, start_run


@dataclass
class SFTConfig(TrainFields):
    data: str = arg(help="SFT records JSONL (from `s2r build`: problem or messages, [prefix,] completion, spans)",
                    positional=True)
    model: str = arg(help="starting model folder (also the frozen KL reference)")
    out: str = arg("runs/sft", help="output folder: model/, ckpt.pt, log.jsonl, tb/, sft.json")
    epochs: int = arg(3, help="passes over the data")
    batch_size: int = arg(32, help="sequences per optimiser step (all processes together)")
    lr: float = arg(5e-6, help="peak learning rate (AdamW)")
    warmup_ratio: float = arg(0.03, help="share of the steps with a linear warm-up")
    min_lr_ratio: float = arg(0.0, help="the cosine schedule ends at lr × this")
    kl_coef: float = arg(0.1, help="λ, weight of the KL to the starting model (0 = plain SFT, no reference)")
    max_length: int = arg(4096, help="longer sequences (prompt + completion) are left out, with a count")
    max_steps: int | None = arg(None, help="stop after this many steps (the schedule still spans all epochs)")
    seed: int = arg(0, help="seed of the data order")
    ckpt_every: int = arg(100, help="steps between checkpoints")

    def key(self, data_digest: str) -> str:
        """What determines the trained weights (not where they go or how fast)."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("out", "max_steps", "ckpt_every", "device", "threads", "tensorboard")}
        return hashlib.sha256(json.dumps([fields, data_digest], sort_keys=True).encode()).hexdigest()[:16]


def lr_at(step: int, total: int, cfg: SFTConfig) -> float:
    """Linear warm-up over warmup_ratio · total steps, then cosine decay to lr · min_lr_ratio."""
    warmup = max(1, round(cfg.warmup_ratio * total)) if cfg.warmup_ratio > 0 else 0
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def plan_steps(cfg: SFTConfig, n: int, too_long: int, what: str, out: Path, key: str, model, dist_, desc: str):
    """The run's optimiser steps over n examples (batch_order), the number this call takes (max_steps), and the
    run set up (start_run, resumed where OUT has its checkpoint); warns of the `too_long` examples left out."""
    if too_long and dist_.main:
        print(f"warning: {too_long} {what} longer than max_length {cfg.max_length} tokens are left out", file=sys.stderr)
    steps = batch_order(n, cfg.batch_size, cfg.epochs, cfg.seed)
    last = min(len(steps), cfg.max_steps or len(steps))
    return steps, last, start_run(cfg, out, key, model, dist_, "step", last, desc)


def set_lr(opt, lr: float) -> float:
    """Set every parameter group's learning rate; lr."""
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


def batch_order(n: int, batch_size: int, epochs: int, seed: int) -> list[list[int]]:
    """Record indices of every optimiser step: a seeded shuffle per epoch, cut into batches."""
    steps = []
    for epoch in range(epochs):
        order = list(range(n))
        random.Random(f"{seed}|{epoch}").shuffle(order)
        steps += [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return steps


def micro_batches(examples: list, rank: int, world: int, size: int) -> list[list]:
    """This process's share of an optimiser batch (every world-th example), sorted by length to
    pad little, in micro-batches of `size`."""
    mine = sorted(examples[rank::world], key=lambda e: len(e[0]))
    return [mine[i : i + size] for i in range(0, len(mine), size)]


ROLES = ("system", "user", "assistant")


def _messages_problem(messages) -> str | None:
    """What is wrong with a `messages` record's conversation, or None: a list of {role, content}
    whose last turn is the user's (the completion is the assistant's next message)."""
    if not isinstance(messages, list) or not messages:
        return "field 'messages' must be a non-empty list of {\"role\", \"content\"}"
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            return f"message {i} must be {{\"role\": system, user or assistant, \"content\": str}}, not {m!r:.60}"
    if messages[-1]["role"] != "user":
        return "the last message must be the user's (the completion is the assistant's answer to it)"
    return None


def sft_problem(r: dict) -> str | None:
    """What is wrong with an SFT record, or None. Three shapes (`s2r build`, docs/formats.md):
    {problem, completion, spans}; {messages, completion, spans} (a conversation, last turn the
    user's); {problem, prefix, completion, spans} (the assistant message starts with `prefix`,
    context, not trained). Spans are character spans of the completion."""
    if "messages" in r:
        problem = wrong_field(r, {"completion": str, "spans": list}) or _messages_problem(r["messages"])
        if not problem and "prefix" in r:
            problem = "a record has messages or a prefix, not both"
        texts = [m["content"] for m in r["messages"]] if not problem else []
    else:
        problem = wrong_field(r, {"problem": str, "completion": str, "spans": list})
        if not problem and "prefix" in r:
            problem = wrong_field(r, {"prefix": str})
        texts = [r["problem"], r.get("prefix", "")] if not problem else []
    if problem:
        return problem
    n = len(r["completion"])
    for s in r["spans"]:
        if not (isinstance(s, list) and len(s) == 2 and all(type(x) is int for x in s) and 0 <= s[0] <= s[1] <= n):
            return f"a span must be [start, end] with 0 <= start <= end <= {n} (the completion's length), not {s!r:.40}"
    if has_surrogate("".join(texts) + r["completion"]):
        return "the text holds a lone surrogate (such as \\ud800), which no tokenizer can encode"
    return None


def sft_prompt(r: dict, cfg: PromptConfig, tokenizer) -> str:
    """The text a record's completion follows: the rendered conversation (the system prompt of
    `cfg`, unless the record's messages open with their own; then the problem, or the record's
    messages), then the record's prefix if any."""
    if "messages" in r:
        system = [{"role": "system", "content": cfg.system}] if cfg.system and r["messages"][0]["role"] != "system" else []
        return render_prompt(system + r["messages"], cfg, tokenizer)
    return render_prompt(messages_for(r["problem"], cfg), cfg, tokenizer) + r.get("prefix", "")


def read_records(path: str) -> list[tuple[int, dict]]:
    """(line number, record) of an SFT records file; DataError naming path:line on a bad record."""
    records = list(iter_jsonl(path))
    for lineno, r in records:
        problem = sft_problem(r)
        if problem:
            raise DataError(f"{path}:{lineno}: not an SFT record (expected the output of `s2r build`): {problem}")
    return records


def encode_records(path: str, records: list[tuple[int, dict]], tokenizer,
                   cfg: SFTConfig) -> tuple[list[tuple[list[int], list[int]]], int]:
    """(ids, loss mask) per record of `path` (read_records), and how many were longer than
    max_length (left out)."""
    from s2r.train.batching import encode_spans

    prompt_cfg = PromptConfig(system=cfg.system, template=cfg.template)
    examples, too_long = [], 0
    for _, r in records:
        prompt = sft_prompt(r, prompt_cfg, tokenizer)
        ids, mask = encode_spans(tokenizer, prompt, r["completion"], [tuple(s) for s in r["spans"]])
        if len(ids) > cfg.max_length:
            too_long += 1
            continue
        examples.append((ids, mask))
    if not examples:
        raise DataError(f"{path}: no record fits in max_length {cfg.max_length}")
    return examples, too_long


def accumulate(ddp, model, ref, micros: list[list], n_tokens: int, kl_coef: float, world: int = 1,
               weights: list[float] | None = None, pad_id: int = 0, device="cpu", autocast=None) -> list[float]:
    """Forward and backward every micro-batch of one optimiser batch; gradients add up to those of
    (Σ NLL + λ Σ KL) / n_tokens over the whole batch. Returns [Σ NLL, Σ KL] of this process.

    ddp: the model as called for training (DDP-wrapped under several processes); model: unwrapped;
    ref: frozen reference, or None (LoRA: `model` with adapters disabled; or no KL at all);
    weights: of each micro-batch (default 1; 0 for one that only joins the collectives)."""
    import torch

    from s2r.train.batching import collate
    from s2r.train.losses import kl_sft_sums

    sums = [0.0, 0.0]
    for j, mb in enumerate(micros):
        t = {k: v.to(device) for k, v in collate(mb, pad_id).items()}
        weight = weights[j] if weights else 1.0
        sync = j == len(micros) - 1 or not hasattr(ddp, "no_sync")  # DDP syncs once; FSDP reduces every backward
        with (contextlib.nullcontext() if sync else ddp.no_sync()), (autocast or contextlib.nullcontext()):
            logits = ddp(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits[:, :-1]  # [b, T-1, V]
            ref_logits = None
            if kl_coef > 0:
                with torch.no_grad():
                    if ref is not None:
                        ref_logits = ref(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits[:, :-1]
                    else:  # LoRA: the reference is the model without its adapters
                        with model.disable_adapter():
                            ref_logits = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits[:, :-1]
            mask = t["loss_mask"][:, 1:] * weight  # [b, T-1]
            nll_sum, kl_sum = kl_sft_sums(logits, ref_logits, t["input_ids"][:, 1:], mask)
            # DDP and FSDP average gradients over processes: × world makes the result Σ over the batch / n_tokens
            ((nll_sum + kl_coef * kl_sum) * world / n_tokens).backward()
        sums[0] += nll_sum.item()
        sums[1] += kl_sum.item()
    return sums


def run_sft(cfg: SFTConfig) -> Path:
    import torch

    from s2r.train.sharding import lockstep, memory_bytes, optimiser_step

    records = read_records(cfg.data)  # bad data stops here, before any model is loaded
    cfg = cfg.from_model(cfg.model)
    with launched(cfg) as dist_:
        out = Path(cfg.out)
        data_digest = hashlib.sha256(Path(cfg.data).read_bytes()).hexdigest()
        key = cfg.key(data_digest)
        info_path = out / "sft.json"
        if finished(info_path, key, lambda info: info.get("finished"), dist_.main, "fine-tuned model"):
            return out / "model"
        model, ref, tokenizer = load_models(cfg, dist_)
        examples, too_long = encode_records(cfg.data, records, tokenizer, cfg)
        steps, last, run = plan_steps(cfg, len(examples), too_long, "records", out, key, model, dist_, "sft")
        step, log = run.done, run.log
        model.train()
        start = time.monotonic()
        while step < last:
            batch = [examples[i] for i in steps[step]]
            n_tokens = sum(sum(m[1:]) for _, m in batch)  # trained (predicted) tokens of the whole batch
            # a process with fewer micro-batches (or none: fewer examples than processes) joins the
            # collectives with zero-weight ones
            micros, weights = lockstep(micro_batches(batch, dist_.rank, dist_.world, cfg.micro_batch_size), batch[:1], dist_,
                                       cfg.strategy == "fsdp")
            lr = set_lr(run.opt, lr_at(step, len(steps), cfg))
            nll_sum, kl_sum = dist_.sum(accumulate(run.ddp, model, ref, micros, n_tokens, cfg.kl_coef, dist_.world, weights,
                                                   tokenizer.pad_token_id, dist_.device, run.autocast))
            grad_norm = optimiser_step(run.opt, run.params, cfg.grad_clip)
            step += 1
            record = {"step": step, "epoch": (step - 1) // math.ceil(len(examples) / cfg.batch_size),
                      "train/loss": (nll_sum + cfg.kl_coef * kl_sum) / n_tokens, "train/nll": nll_sum / n_tokens,
                      "train/kl": kl_sum / n_tokens, "lr": lr, "grad_norm": grad_norm, "tokens": n_tokens,
                      "seconds": time.monotonic() - start}
            log.append(record)
            run.run_log.write(step, record, loss=f"{record['train/loss']:.3f}", kl=f"{record['train/kl']:.4f}")
            if step % cfg.ckpt_every == 0 or step == last:
                checkpoint(out, cfg, dist_, model, run.trainable_names, run.opt, key=key, step=step, rng=torch.get_rng_state())
        run.run_log.close()
        memory = memory_bytes(model, ref, run.opt)  # this process's share
        save_model(model, tokenizer, cfg, out, dist_)
        if dist_.main:
            write_json_atomic(info_path, {"key": key, "finished": step == len(steps), "steps": step, "total_steps": len(steps),
                                          "examples": len(examples), "left_out_too_long": too_long, "config": to_dict(cfg),
                                          "memory": memory, "last": log[-1] if log else None})
            print(f"wrote {out / 'model'} after {step} steps", file=sys.stderr)
        dist_.barrier()
        return out / "model"
