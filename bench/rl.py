"""One RL iteration: `s2r rl --level outcome` vs TRL's RLOOTrainer, same model, prompts and budget.

The model is a tiny Llama taught the trajectory format by `s2r sft` (so both sides generate
trajectories that end with EOS, not random text up to the budget). One iteration = 8 prompts × 4
samples at temperature 0.7 within the same token budget, the same grader as reward, rewards →
RLOO advantages, a reference model for the KL (β = 0.05), and one optimiser step over the 32
rollouts. Setup (loading models, starting the grader) is not timed: each side runs 1 and 3
iterations and the difference / 2 is the cost of one iteration. Rounds alternate s2r, TRL, s2r,
TRL so that drift of a shared machine hits both alike.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from s2r.jsonl import read_jsonl, write_jsonl_atomic
from s2r.models.tiny import TinyModelConfig, run_tiny_model
from s2r.tasks import arith
from s2r.tasks.arith.base import PLAIN
from s2r.train.rl import RLConfig, run_rl
from s2r.train.sft import SFTConfig, run_sft

PROMPTS, SAMPLES, BUDGET = 8, 4, 256


def format_model(root: Path) -> str:
    """A tiny model fine-tuned on S²R trajectories of the embedded task (a few hundred steps)."""
    start = run_tiny_model(TinyModelConfig(str(root / "start"), hidden_size=128, layers=3, intermediate_size=512,
                                           phrases=arith.PHRASES))
    rng = random.Random(0)
    records = []
    for p in arith.generate("train", 400, seed=0):
        text = arith.worked_trajectory(p.problem, rng)
        records.append({"problem": p.problem, "completion": text, "spans": [[0, len(text)]]})
    write_jsonl_atomic(root / "sft.jsonl", records)
    return str(run_sft(SFTConfig(str(root / "sft.jsonl"), model=str(start), out=str(root / "sft"), epochs=4, batch_size=16,
                                 lr=3e-3, kl_coef=0.0, system="", template="plain", tensorboard=False)))


def s2r_seconds(model: str, root: Path, iterations: int) -> tuple[float, float, float]:
    """(seconds, generated tokens per iteration, share of the iteration spent generating and grading)."""
    out = root / f"s2r-{iterations}-{time.monotonic_ns()}"
    cfg = RLConfig(model, data=["arith:train"], limit=200, level="outcome", out=str(out), iterations=iterations,
                   prompts=PROMPTS, samples=SAMPLES, max_tokens=BUDGET, updates=1, micro_batch_size=PROMPTS * SAMPLES,
                   lr=1e-5, kl_coef=0.05, system="", template="plain", tensorboard=False, ckpt_every=1000)
    start = time.perf_counter()
    run_rl(cfg)
    seconds = time.perf_counter() - start
    log = list(read_jsonl(out / "log.jsonl"))
    per_iteration = [b["seconds"] - a["seconds"] for a, b in zip([{"seconds": 0.0}] + log, log)]
    return (seconds, sum(r["tokens"] for r in log) / len(log),
            statistics.median(r["gen_seconds"] / t for r, t in zip(log, per_iteration)))


def trl_seconds(model: str, root: Path, iterations: int) -> tuple[float, float, float]:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import RLOOConfig, RLOOTrainer

    from s2r.grader import Grader, extract_answer
    from s2r.prompts import messages_for, render_prompt

    problems = list(arith.generate("train", 200, seed=0))
    gold = {p.problem: p.gold for p in problems}
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = [{"prompt": render_prompt(messages_for(p.problem, PLAIN), PLAIN), "problem": p.problem} for p in problems]
    grader = Grader(workers=1)
    tokens = []

    def reward(prompts, completions, problem, **_):
        tokens.extend(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in completions)
        grades = grader.grade_answers([(extract_answer(c), gold[q]) for c, q in zip(completions, problem)])
        return [1.0 if g.correct else -1.0 for g in grades]

    args = RLOOConfig(output_dir=str(root / f"trl-{iterations}-{time.monotonic_ns()}"), per_device_train_batch_size=PROMPTS * SAMPLES,
                      num_generations=SAMPLES, max_completion_length=BUDGET, temperature=0.7, learning_rate=1e-5, beta=0.05,
                      max_steps=iterations, use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
                      gradient_checkpointing=False, bf16=False, seed=0, disable_tqdm=True)
    trainer = RLOOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    grader.close()
    return seconds, sum(tokens) / max(1, iterations), float("nan")


def run(rounds: int = 3) -> str:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        model = format_model(root)
        results: dict[str, list[tuple[float, float, float]]] = {"s2r": [], "trl": []}
        for _ in range(rounds):
            for name, fn in (("s2r", s2r_seconds), ("trl", trl_seconds)):
                one, _, _ = fn(model, root, 1)
                three, tokens, gen_share = fn(model, root, 3)
                results[name].append(((three - one) / 2, tokens, gen_share))
    s2r_t = [t for t, _, _ in results["s2r"]]
    trl_t = [t for t, _, _ in results["trl"]]
    ratios = [b / a for a, b in zip(s2r_t, trl_t)]
    s2r_tok = statistics.median(tok for _, tok, _ in results["s2r"])
    trl_tok = statistics.median(tok for _, tok, _ in results["trl"])
    gen_share = statistics.median(g for _, _, g in results["s2r"])
    return "\n".join([
        "## One RL iteration: s2r rl (ORL) vs TRL RLOOTrainer",
        "",
        f"Model: tiny Llama (128 wide, 3 layers), the embedded task's phrase tokenizer, taught the trajectory format by "
        f"`s2r sft`; fp32, {torch.get_num_threads()} CPU threads. One iteration: {PROMPTS} prompts × {SAMPLES} samples at "
        f"T = 0.7, budget {BUDGET} tokens, the s2r grader as reward, RLOO, KL to a reference (β = 0.05), one optimiser "
        f"step. Time of one iteration = (3 iterations − 1 iteration) / 2, so setup is not counted; {rounds} alternating "
        "rounds; medians (min–max).",
        "",
        "| | seconds per iteration | generated tokens per iteration |",
        "|---|---|---|",
        f"| s2r rl --level outcome | {statistics.median(s2r_t):.2f} ({min(s2r_t):.2f}–{max(s2r_t):.2f}) | {s2r_tok:,.0f} |",
        f"| TRL {__import__('trl').__version__} RLOOTrainer | {statistics.median(trl_t):.2f} ({min(trl_t):.2f}–{max(trl_t):.2f}) | {trl_tok:,.0f} |",
        f"| **TRL time / s2r time** | **{statistics.median(ratios):.2f}×** ({min(ratios):.2f}–{max(ratios):.2f}) | |",
        "",
        f"What dominates an s2r iteration: generating (and grading) the rollouts, {gen_share:.0%} of it; scoring the "
        "rollouts under the reference and the optimiser step take the rest (with one step per iteration π_old is "
        "read off the training forward: no scoring pass of the policy).",
        "",
    ])


if __name__ == "__main__":
    print(run(rounds=1))
