"""`s2r base`: train the embedded task's tiny base model from scratch (solutions, checks on request, drills).

The model must make real mistakes of its own, so training stops when its greedy accuracy on the
validation split first reaches `target_acc` (default 0.5); the test accuracy then lands near it,
falling with the level. Deterministic for a seed (CPU), checkpointed every `ckpt_every` steps and
resumed exactly when killed, and cached: a finished model with the same settings is reused.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from s2r.config import arg, to_dict
from s2r.format import DEFAULT_FORMAT
from s2r.grader import Grader, extract_answer
from s2r.jsonl import write_json_atomic
from s2r.models.backend import SamplingParams
from s2r.models.tiny import TinyModelConfig, build_tiny_model
from s2r.progress import Progress
from s2r.prompts import PromptConfig, messages_for, render_prompt, write_model_prompt
from s2r.tasks import arith

PLAIN = PromptConfig(system="", template="plain")  # the embedded task's prompt format (model/s2r.json says so)

# The fixed wording of the task's texts, one token each in the base model's tokenizer (digits stay
# single characters): sequences get shorter, so training and generation get faster.
PHRASES = [DEFAULT_FORMAT.verify_marker, DEFAULT_FORMAT.retry_marker, DEFAULT_FORMAT.correct_sentence,
           DEFAULT_FORMAT.incorrect_sentence, "Compute ", " / ", " * ", " + ", " - ", " = ", " > ", " < ", " r ",
           "The answer is \\boxed{", "}.", "Check this solution. ", "Divide digit by digit. ", "Compare ", " and ",
           ", so ", " is right.", " is too small.", " is too big.", ", so the answer is ", "Solve it again.",
           " is not ", " is ", "The answer ", " is not a whole number."]
# RECIPE counts changes to the training texts and batches (2: checks on request, 2048 positions; 3: they
# show a solution; 4: last-digit checks; 5: phrase tokens; 6–10: the division task, its checks ending
# with a retry, the correction by long division, drills, length-sorted micro-batches, mixed levels;
# 11: a part per digit in checks, and a retry's own check after a failed one)
RECIPE = 11


@dataclass
class BaseConfig:
    out: str = arg("runs/base", help="folder for the model (out/model), checkpoints and base.json")
    seed: int = arg(0, help="seed of the initialisation, the data order and the task splits")
    target_acc: float = arg(0.5, help="stop when greedy accuracy on the validation split reaches this")
    max_steps: int = arg(3000, help="stop here even if the target is not reached (cosine schedule length)")
    batch_size: int = arg(32, help="problems per optimiser step")
    lr: float = arg(3e-3, help="peak learning rate (AdamW)")
    warmup: int = arg(50, help="linear warm-up steps")
    weight_decay: float = arg(0.01, help="AdamW weight decay")
    hidden_size: int = arg(128, help="model width")
    layers: int = arg(4, help="transformer blocks")
    heads: int = arg(4, help="attention heads")
    intermediate_size: int = arg(512, help="MLP width")
    check_share: float = arg(0.5, help="share of training sequences that are checks on request (arith.check_exercise)")
    drill_share: float = arg(0.1, help="share of training sequences that are long division on request (arith.division_drill)")
    eval_every: int = arg(250, help="steps between validation accuracy checks")
    eval_every_near: int = arg(50, help="steps between checks once accuracy passes a quarter of the target")
    val_problems: int = arg(200, help="validation problems per check")
    ckpt_every: int = arg(50, help="steps between checkpoints")
    threads: int = arg(0, help="torch CPU threads (0 = all cores)")

    def key(self) -> str:
        """What determines the trained model (not the output folder), RECIPE included."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("out", "threads")} | {"recipe": RECIPE}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def greedy_accuracy(model, tokenizer, problems, grader: Grader) -> tuple[float, dict[int, float]]:
    from s2r.models.hf import TransformersBackend

    backend = TransformersBackend(model, tokenizer, batch_size=128)
    prompts = [render_prompt(messages_for(p.problem, PLAIN), PLAIN) for p in problems]
    model.eval()
    outs = backend.complete(prompts, SamplingParams(max_tokens=160))
    model.train()
    grades = grader.grade_answers([(extract_answer(o.text), p.gold) for o, p in zip(outs, problems)])
    by_level: dict[int, list[bool]] = {}
    for p, g in zip(problems, grades):
        by_level.setdefault(p.level, []).append(g.correct)
    acc = sum(g.correct for g in grades) / len(grades)
    return acc, {lv: sum(v) / len(v) for lv, v in sorted(by_level.items())}


def training_text(problem: str, rng: random.Random, cfg: BaseConfig) -> tuple[str, str]:
    """(prompt, completion) of one training sequence: a check of a given answer on request
    (probability check_share), long division on request (drill_share), else the solution."""
    draw = rng.random()
    if draw < cfg.check_share:
        question, completion = arith.check_exercise(problem, rng)
    elif draw < cfg.check_share + cfg.drill_share:
        question, completion = arith.division_drill(problem)
    else:
        question, completion = problem, arith.solution(problem)
    return render_prompt(messages_for(question, PLAIN), PLAIN), completion


def lr_at(step: int, cfg: BaseConfig) -> float:
    """Linear warm-up, then cosine decay to 10% over max_steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.max_steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def is_trained(cfg: BaseConfig) -> bool:
    """A finished model with these settings is in cfg.out."""
    info = Path(cfg.out) / "base.json"
    return info.exists() and json.loads(info.read_text()).get("key") == cfg.key() and (Path(cfg.out) / "model").exists()


def train_base(cfg: BaseConfig) -> Path:
    import torch

    from s2r.train.batching import encode
    from s2r.train.sft import accumulate, micro_batches

    out = Path(cfg.out)
    model_dir, ckpt_path, info_path = out / "model", out / "ckpt.pt", out / "base.json"
    if is_trained(cfg):
        print(f"reusing the base model in {model_dir} (same settings)", file=sys.stderr)
        if not (model_dir / "s2r.json").exists():  # trained before models said their prompt
            write_model_prompt(model_dir, PLAIN)
        return model_dir
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tiny = TinyModelConfig(str(model_dir), hidden_size=cfg.hidden_size, layers=cfg.layers, heads=cfg.heads,
                           intermediate_size=cfg.intermediate_size, max_positions=2048, seed=cfg.seed, phrases=PHRASES)
    model, tokenizer = build_tiny_model(tiny)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    stream = list(arith.generate("base", cfg.max_steps * cfg.batch_size, cfg.seed))  # epochs in seeded orders
    batches = [stream[i : i + cfg.batch_size] for i in range(0, len(stream), cfg.batch_size)]
    val = list(arith.generate("val", cfg.val_problems, cfg.seed))
    step, history = 0, []
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False)
        if state["key"] == cfg.key():
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            torch.set_rng_state(state["rng"])
            step, history = state["step"], state["history"]
            print(f"resuming base training at step {step}", file=sys.stderr)
    model.train()
    reached = history[-1]["val_acc"] >= cfg.target_acc if history else False
    bar = Progress("base model", cfg.max_steps, initial=step, unit="step")
    start = time.monotonic()
    with Grader(workers=1) as grader:
        while step < cfg.max_steps and not reached:
            seqs = [encode(tokenizer, *training_text(p.problem, random.Random(f"{cfg.seed}|{step}|{i}"), cfg))
                    for i, p in enumerate(batches[step])]
            n_tokens = sum(sum(mask[1:]) for _, mask in seqs)  # trained tokens of the whole batch
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            opt.zero_grad(set_to_none=True)
            # masked mean NLL over the completion tokens, in two micro-batches of similar lengths
            # (solutions and checks pad little apart): the same gradient as one batch, less padding
            nll_sum, _ = accumulate(model, model, None, micro_batches(seqs, 0, 1, -(-len(seqs) // 2)), n_tokens,
                                    kl_coef=0.0, pad_id=tokenizer.pad_token_id)
            loss = nll_sum / n_tokens
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            bar.update(1, loss=f"{loss:.3f}")
            near = bool(history) and history[-1]["val_acc"] >= cfg.target_acc / 4
            if step % (cfg.eval_every_near if near else cfg.eval_every) == 0:
                acc, by_level = greedy_accuracy(model, tokenizer, val, grader)
                history.append({"step": step, "loss": loss, "val_acc": acc, "val_acc_by_level": by_level,
                                "seconds": time.monotonic() - start})
                bar.write(f"step {step}: loss {loss:.3f}, val accuracy {acc:.3f} "
                          + " ".join(f"L{lv} {a:.2f}" for lv, a in by_level.items()))
                reached = acc >= cfg.target_acc
            if step % cfg.ckpt_every == 0 or reached:
                tmp = ckpt_path.with_suffix(".tmp")
                out.mkdir(parents=True, exist_ok=True)
                torch.save({"key": cfg.key(), "model": model.state_dict(), "opt": opt.state_dict(),
                            "rng": torch.get_rng_state(), "step": step, "history": history}, tmp)
                tmp.replace(ckpt_path)
    bar.close()
    model.eval()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_model_prompt(model_dir, PLAIN)
    write_json_atomic(info_path, {"key": cfg.key(), "config": to_dict(cfg), "steps": step, "reached_target": reached,
                                  "history": history})
    return model_dir


def run_base(cfg: BaseConfig) -> Path:
    return train_base(cfg)
