"""SFT throughput on 2 CPU processes (gloo): `--strategy fsdp` against `--strategy ddp`, as a ratio.

Both run `torchrun --standalone --nproc_per_node 2 -m s2r.cli sft` on the same model and data; the
speed is the tokens of steps 3..N over their time (the log's clock), so setup and the first steps
are not counted. FSDP all-gathers each layer's parameters before its forward and backward and
reduce-scatters the gradients, where DDP all-reduces the gradients once per step: on CPUs, with a
small model, that is pure overhead, which this measures; its point is memory (docs/memory.md).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from s2r.jsonl import write_jsonl_atomic
from s2r.models.tiny import TinyModelConfig, run_tiny_model
from s2r.tasks import arith

RECORDS, BATCH, MICRO, STEPS = 96, 16, 4, 6


def tokens_per_s(out: Path) -> float:
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return sum(r["tokens"] for r in log[2:]) / (log[-1]["seconds"] - log[1]["seconds"])


def run(rounds: int = 1) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = run_tiny_model(TinyModelConfig(str(root / "model"), hidden_size=192, layers=4, heads=4,
                                               intermediate_size=768, phrases=arith.PHRASES))
        rng = random.Random(0)
        rows = []
        for p in arith.generate("train", RECORDS, seed=0):
            text = arith.worked_trajectory(p.problem, rng)
            rows.append({"problem": p.problem, "completion": text, "spans": [[0, len(text)]]})
        write_jsonl_atomic(root / "sft.jsonl", rows)
        speed: dict[str, list[float]] = {"ddp": [], "fsdp": []}
        for r in range(rounds):
            for strategy in speed:
                out = root / f"{strategy}{r}"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "s2r.cli",
                       "sft", str(root / "sft.jsonl"), "--model", str(model), "--out", str(out), "--strategy", strategy,
                       "--batch-size", str(BATCH), "--micro-batch-size", str(MICRO), "--max-steps", str(STEPS),
                       "--kl-coef", "0.1", "--system", "", "--template", "plain", "--tensorboard", "false", "--threads", "1"]
                subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                speed[strategy].append(tokens_per_s(out))
    ddp, fsdp = (sorted(v)[len(v) // 2] for v in speed.values())
    return "\n".join([
        "## Sharded training on CPU: 2-process fsdp vs 2-process ddp",
        "",
        f"`python bench/fsdp.py`. Model: tiny Llama (192 wide, 4 layers), the embedded task's phrase tokenizer; "
        f"fp32, 2 processes (gloo) of 1 thread. {RECORDS} trajectories, batch {BATCH} in micro-batches of {MICRO}, "
        f"λ = 0.1 (the reference sharded too), tokens/s of steps 3–{STEPS}; {rounds} round(s).",
        "",
        "| | tokens/s |",
        "|---|---|",
        f"| `--strategy ddp` | {ddp:,.0f} |",
        f"| `--strategy fsdp` | {fsdp:,.0f} |",
        f"| **fsdp / ddp** | **{fsdp / ddp:.2f}×** |",
        "",
        "FSDP gathers every layer's parameters before its forward and backward and reduce-scatters the "
        "gradients: on CPUs with a small model that is overhead; its point is memory (docs/memory.md).",
        "",
    ])


if __name__ == "__main__":
    print(run())
