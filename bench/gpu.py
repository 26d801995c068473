"""The CUDA path of `--strategy fsdp`: bf16 mixed precision, gradient checkpointing, the bf16
reference, sharded checkpoints and the gathered save, then two RL iterations (generation on the
gathered weights), on a randomly initialised model of Qwen2-0.5B's shape (nothing downloaded; the
embedded task's character tokenizer, so most of the 151,936 embedding rows are never used).

    torchrun --standalone --nproc_per_node 8 bench/gpu.py --out gpu.json     # or: python bench/gpu.py

Writes a JSON summary: SFT steps/s and tokens/s, peak GPU memory per process, the losses, RL
iteration times. Sized to end well within 8 minutes (30 SFT steps of 32 sequences, 2 small RL
iterations); not yet run on a GPU (none was available). Without CUDA it stops with a one-line error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path


def build_model(path: Path) -> None:
    """A random Qwen2 of Qwen2-0.5B's shape (s2r.train.memory.SHAPES) and the character tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from s2r.models.tiny import char_tokenizer
    from s2r.tasks import arith
    from s2r.train.memory import SHAPES

    s = SHAPES["Qwen2-0.5B"]
    tokenizer = char_tokenizer(phrases=arith.PHRASES)
    config = Qwen2Config(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                         num_key_value_heads=s.kv_heads, intermediate_size=s.intermediate, vocab_size=s.vocab,
                         tie_word_embeddings=s.tied, max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def sft_records(path: Path, n: int) -> None:
    from s2r.jsonl import write_jsonl_atomic
    from s2r.tasks import arith

    rng = random.Random(0)
    out = []
    for p in arith.generate("train", n, seed=0):
        text = arith.worked_trajectory(p.problem, rng)
        out.append({"problem": p.problem, "completion": text, "spans": [[0, len(text)]]})
    write_jsonl_atomic(path, out)


def main() -> int:
    ap = argparse.ArgumentParser(description="fsdp + bf16 + gradient checkpointing on the GPUs of this node")
    ap.add_argument("--out", default="gpu.json", help="JSON summary")
    ap.add_argument("--steps", type=int, default=30, help="SFT optimiser steps")
    ap.add_argument("--work", default=None, help="folder for the model and runs (default: a temporary one)")
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench/gpu.py: error: no CUDA GPU (torch.cuda.is_available() is False); this benchmark needs one", file=sys.stderr)
        return 2
    import torch.distributed as dist

    from s2r.train.rl import RLConfig, run_rl
    from s2r.train.sft import SFTConfig, run_sft

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    work = Path(a.work or (tempfile.mkdtemp(prefix="s2r-gpu-") if rank == 0 else "."))
    if world > 1:  # one folder for all processes: process 0 names it
        dist.init_process_group("nccl", device_id=torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"))
        shared = [str(work)]
        dist.broadcast_object_list(shared, src=0)
        work = Path(shared[0])
    model, data = work / "model", work / "sft.jsonl"
    if rank == 0:
        build_model(model)
        sft_records(data, 32 * a.steps)
    if world > 1:
        dist.barrier()
    common = dict(strategy="fsdp", gradient_checkpointing=True, bf16="on", system="", template="plain", tensorboard=False)
    t0 = time.monotonic()
    out = run_sft(SFTConfig(str(data), model=str(model), out=str(work / "sft"), epochs=1, batch_size=32, micro_batch_size=4,
                            lr=5e-6, kl_coef=0.01, ckpt_every=10, **common))
    sft_seconds = time.monotonic() - t0
    sft_peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    run_rl(RLConfig(str(out), data=["arith:train"], limit=256, out=str(work / "rl"), iterations=2, prompts=16, samples=4,
                    max_tokens=256, updates=2, micro_batch_size=8, lr=5e-7, **common))
    rl_seconds = time.monotonic() - t0
    peaks = [sft_peak, torch.cuda.max_memory_allocated() / 2**30]
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, peaks)
    else:
        gathered = [peaks]
    if rank == 0:
        log = [json.loads(line) for line in (work / "sft" / "log.jsonl").read_text().splitlines()]
        rl_log = [json.loads(line) for line in (work / "rl" / "log.jsonl").read_text().splitlines()]
        # steady-state speed: from the end of step 2 (setup and the first steps' warm-up excluded)
        steady = (len(log) - 2) / (log[-1]["seconds"] - log[1]["seconds"])
        summary = {"gpus": world, "gpu": torch.cuda.get_device_name(), "model": "Qwen2-0.5B shape, random",
                   "sft": {"steps": len(log), "steps_per_s": steady,
                           "tokens_per_s": steady * sum(r["tokens"] for r in log) / len(log),
                           "first_loss": log[0]["train/loss"], "last_loss": log[-1]["train/loss"],
                           "seconds_with_setup": sft_seconds},
                   "rl": {"iterations": len(rl_log), "seconds_with_setup": rl_seconds,
                          "last": {k: rl_log[-1][k] for k in ("train/loss", "train/kl_ref", "gen_seconds", "tokens")}},
                   "peak_gib_per_gpu": {"sft": [p[0] for p in gathered], "rl": [p[1] for p in gathered]}}
        Path(a.out).write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
