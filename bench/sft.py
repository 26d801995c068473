"""SFT throughput: `s2r sft` vs TRL's SFTTrainer on the same model and data, and s2r's model FLOP
utilisation as a fraction of this machine's measured fp32 matmul peak.

Data: 512 S²R trajectories of the embedded task (the whole completion trained, so both sides train
the same tokens), batch 32 in micro-batches of 8, AdamW, fp32, no KL (TRL's SFTTrainer has none;
s2r with its default λ = 0.1 is a third row). Setup is not timed: each side runs 2 and 8 optimiser
steps and (t8 − t2) / 6 is the time of one step. Rounds alternate.

MFU = 6 · N · tokens/s + 12 · L · d · T · tokens/s (the PaLM estimate of training FLOPs, with the
attention term at the mean sequence length T), over the peak of a 2048×2048 fp32 matmul.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from s2r.jsonl import write_jsonl_atomic
from s2r.models.tiny import TinyModelConfig, run_tiny_model
from s2r.prompts import messages_for, render_prompt
from s2r.tasks import arith
from s2r.tasks.arith.base import PLAIN
from s2r.train.sft import SFTConfig, run_sft

BATCH, MICRO, RECORDS = 32, 8, 512


def records() -> list[dict]:
    rng = random.Random(0)
    out = []
    for p in arith.generate("train", RECORDS, seed=0):
        text = arith.worked_trajectory(p.problem, rng)
        out.append({"problem": p.problem, "completion": text, "spans": [[0, len(text)]]})
    return out


def s2r_seconds(model: str, data: Path, root: Path, steps: int, kl: float) -> float:
    cfg = SFTConfig(str(data), model=model, out=str(root / f"s2r-{steps}-{kl}-{time.monotonic_ns()}"), epochs=1,
                    batch_size=BATCH, micro_batch_size=MICRO, lr=1e-4, kl_coef=kl, max_steps=steps, system="",
                    template="plain", tensorboard=False, ckpt_every=10_000)
    start = time.perf_counter()
    run_sft(cfg)
    return time.perf_counter() - start


def trl_seconds(model: str, rows: list[dict], root: Path, steps: int) -> float:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model)
    data = Dataset.from_list([{"prompt": render_prompt(messages_for(r["problem"], PLAIN), PLAIN),
                               "completion": r["completion"] + tokenizer.eos_token} for r in rows])
    args = TRLConfig(output_dir=str(root / f"trl-{steps}-{time.monotonic_ns()}"), per_device_train_batch_size=MICRO,
                     gradient_accumulation_steps=BATCH // MICRO, learning_rate=1e-4, max_steps=steps, use_cpu=True,
                     report_to="none", save_strategy="no", logging_steps=1, bf16=False, seed=0, disable_tqdm=True,
                     max_length=2048, packing=False, completion_only_loss=True, gradient_checkpointing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """fp32 FLOP/s of an n×n matmul on this machine (best of reps)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def run(rounds: int = 3) -> str:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        cfg = TinyModelConfig(str(root / "model"), hidden_size=192, layers=4, heads=4, intermediate_size=768,
                              phrases=arith.PHRASES)
        model = str(run_tiny_model(cfg))
        rows = records()
        write_jsonl_atomic(root / "sft.jsonl", rows)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model).parameters())
        tok = AutoTokenizer.from_pretrained(model)
        lengths = [len(tok(render_prompt(messages_for(r["problem"], PLAIN), PLAIN))["input_ids"])
                   + len(tok(r["completion"], add_special_tokens=False)["input_ids"]) + 1 for r in rows]
        mean_len = sum(lengths) / len(lengths)
        per_step: dict[str, list[float]] = {"s2r": [], "s2r-kl": [], "trl": []}
        for _ in range(rounds):
            per_step["s2r"].append((s2r_seconds(model, root / "sft.jsonl", root, 8, 0.0) - s2r_seconds(model, root / "sft.jsonl", root, 2, 0.0)) / 6)
            per_step["trl"].append((trl_seconds(model, rows, root, 8) - trl_seconds(model, rows, root, 2)) / 6)
            per_step["s2r-kl"].append((s2r_seconds(model, root / "sft.jsonl", root, 8, 0.1) - s2r_seconds(model, root / "sft.jsonl", root, 2, 0.1)) / 6)
        peak = matmul_peak()
    tokens = BATCH * mean_len  # per optimiser step
    rate = {k: [tokens / t for t in v] for k, v in per_step.items()}
    flops_per_token = 6 * n_params + 12 * cfg.layers * cfg.hidden_size * mean_len
    mfu = statistics.median(rate["s2r"]) * flops_per_token / peak
    ratios = [a / b for a, b in zip(rate["s2r"], rate["trl"])]

    def row(name: str, key: str) -> str:
        r = rate[key]
        return f"| {name} | {statistics.median(r):,.0f} ({min(r):,.0f}–{max(r):,.0f}) |"

    return "\n".join([
        "## SFT throughput: s2r sft vs TRL SFTTrainer, and model FLOP utilisation",
        "",
        f"Model: tiny Llama, {n_params / 1e6:.1f}M parameters ({cfg.hidden_size} wide, {cfg.layers} layers), the "
        f"embedded task's phrase tokenizer; fp32, {torch.get_num_threads()} CPU threads. {RECORDS} trajectories "
        f"(mean {mean_len:.0f} tokens), batch {BATCH} in micro-batches of {MICRO}, AdamW. Time per step = "
        f"(8 steps − 2 steps) / 6, so setup is not counted; {rounds} alternating rounds; medians (min–max).",
        "",
        "| | tokens/s |",
        "|---|---|",
        row("s2r sft, λ = 0 (no reference)", "s2r"),
        row(f"TRL {__import__('trl').__version__} SFTTrainer", "trl"),
        row("s2r sft, λ = 0.1 (KL over the full vocabulary to a frozen copy)", "s2r-kl"),
        f"| **s2r / TRL** | **{statistics.median(ratios):.2f}×** ({min(ratios):.2f}–{max(ratios):.2f}) |",
        "",
        f"Model FLOP utilisation of s2r sft (λ = 0): {mfu:.1%} of the measured fp32 matmul peak "
        f"({peak / 1e9:.0f} GFLOP/s, 2048×2048), counting 6N + 12·L·d·T FLOPs per token.",
        "",
    ])


if __name__ == "__main__":
    print(run(rounds=1))
