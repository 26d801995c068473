"""The CUDA path of `--strategy fsdp`: bf16 mixed precision, gradient checkpointing, the bf16
reference, sharded checkpoints and the gathered save, then two RL iterations (generation on the
gathered weights), on a randomly initialised model of Qwen2-0.5B's shape (nothing downloaded; the
embedded task's character tokenizer, so most of the 151,936 embedding rows are never used). Then,
where vLLM is importable, on one GPU with the SFT'd model (bench/vllm_vs_decode.py's measurements,
each in a process of its own): generation tokens/s of the vLLM backend against s2r's own decode
(bf16, the same 256 prompts, T = 1, up to 256 new tokens), and one `s2r rl` iteration (ORL, 16
prompts × 4 samples, budget 256; the second of two, so setup is excluded) with `--backend vllm`
(its weight push timed apart) against one with `--backend transformers`.

    torchrun --standalone --nproc_per_node 8 bench/gpu.py --out gpu.json     # or: python bench/gpu.py
    python bench/gpu.py --cpu-dry-run --out dry.json   # every code path on CPU, tiny sizes (numbers meaningless)

Writes a JSON summary: SFT steps/s and tokens/s, peak GPU memory per process, the losses, RL
iteration times, and `vllm` (or a note on why it was skipped). Sized to end well within 8 minutes on
one H200 (30 SFT steps of 32 sequences, 2 small RL iterations, then about 4 minutes of vLLM
comparison, most of it the engines' start); not yet run on a GPU (none was available). Without CUDA
it stops with a one-line error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def build_model(path: Path, tiny: bool = False) -> None:
    """A random Qwen2 of Qwen2-0.5B's shape (s2r.train.memory.SHAPES) and the character tokenizer;
    tiny: 2 layers of width 128 (its vocabulary kept), for the CPU dry run."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from s2r.models.tiny import char_tokenizer
    from s2r.tasks.arith.base import PHRASES
    from s2r.train.memory import SHAPES

    s = SHAPES["Qwen2-0.5B"]
    if tiny:
        s = replace(s, hidden=128, layers=2, heads=2, kv_heads=1, intermediate=256)  # head_dim 64, as vLLM-CPU needs
    tokenizer = char_tokenizer(phrases=PHRASES)
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


# sizes of the GPU run, and of the CPU dry run (every code path, numbers meaningless)
SIZES = {"gpu": dict(batch=32, micro=4, rl_prompts=16, rl_samples=4, rl_tokens=256, rl_updates=2, rl_micro=8,
                     gen_prompts=256, gen_tokens=256, vllm_rl_prompts=16, vllm_memory=0.3, dtype="bfloat16"),
         "cpu": dict(batch=4, micro=2, rl_prompts=2, rl_samples=2, rl_tokens=32, rl_updates=1, rl_micro=2,
                     gen_prompts=16, gen_tokens=32, vllm_rl_prompts=2, vllm_memory=0.1, dtype="float32")}
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
                      "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")


def vllm_comparison(model: Path, size: dict, device: str) -> dict:
    """vLLM against s2r's own decode on `model`, on one device, each measurement in a process of its
    own (bench/vllm_vs_decode.py); {"skipped": why} without vLLM."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vLLM is not importable (pip install 's2r[vllm]')"}
    from vllm_vs_decode import measure  # bench/ is this script's folder: first on sys.path

    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES and not k.startswith("TORCHELASTIC")}
    if device == "cuda":  # the first of this process's GPUs, whatever torchrun set up
        env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    result: dict = {"generation": {}, "rl": {}}
    for backend in ("transformers", "vllm"):
        result["generation"][backend] = measure("generation", backend, env, model=str(model), device=device, dtype=size["dtype"],
                                                prompts=size["gen_prompts"], max_tokens=size["gen_tokens"],
                                                gpu_memory_utilization=size["vllm_memory"])
        result["rl"][backend] = measure("rl", backend, env, model=str(model), iterations=2, prompts=size["vllm_rl_prompts"],
                                        max_tokens=size["gen_tokens"], gpu_memory_utilization=size["vllm_memory"])
    g, r = result["generation"], result["rl"]
    result["vllm_over_decode"] = {"generation_tokens_per_s": g["vllm"]["tokens_per_s"] / g["transformers"]["tokens_per_s"],
                                  "rl_seconds_per_iteration": r["vllm"]["seconds_per_iteration"]
                                  / r["transformers"]["seconds_per_iteration"]}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description="fsdp + bf16 + gradient checkpointing on the GPUs of this node, and vLLM "
                                             "against s2r's decode on one of them")
    ap.add_argument("--out", default="gpu.json", help="JSON summary")
    ap.add_argument("--steps", type=int, default=30, help="SFT optimiser steps")
    ap.add_argument("--work", default=None, help="folder for the model and runs (default: a temporary one)")
    ap.add_argument("--cpu-dry-run", action="store_true", help="run every step on CPU with a 2-layer model and tiny sizes "
                                                               "(checks the code paths; its numbers mean nothing)")
    a = ap.parse_args()
    import torch

    dry = a.cpu_dry_run
    if not dry and not torch.cuda.is_available():
        print("bench/gpu.py: error: no CUDA GPU (torch.cuda.is_available() is False); this benchmark needs one", file=sys.stderr)
        return 2
    import torch.distributed as dist

    from s2r.train.rl import RLConfig, run_rl
    from s2r.train.sft import SFTConfig, run_sft

    size, device = SIZES["cpu" if dry else "gpu"], "cpu" if dry else "cuda"
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    work = Path(a.work or (tempfile.mkdtemp(prefix="s2r-gpu-") if rank == 0 else "."))
    if world > 1:  # one folder for all processes: process 0 names it
        dist.init_process_group("gloo" if dry else "nccl",
                                device_id=None if dry else torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"))
        shared = [str(work)]
        dist.broadcast_object_list(shared, src=0)
        work = Path(shared[0])
    model, data = work / "model", work / "sft.jsonl"
    if rank == 0:
        build_model(model, tiny=dry)
        sft_records(data, size["batch"] * a.steps)
    if world > 1:
        dist.barrier()
    peak = (lambda: torch.cuda.max_memory_allocated() / 2**30) if not dry else (lambda: None)
    common = dict(strategy="fsdp", gradient_checkpointing=True, bf16="off" if dry else "on", system="", template="plain",
                  tensorboard=False, device=device)
    t0 = time.monotonic()
    out = run_sft(SFTConfig(str(data), model=str(model), out=str(work / "sft"), epochs=1, batch_size=size["batch"],
                            micro_batch_size=size["micro"], lr=5e-6, kl_coef=0.01, ckpt_every=10, **common))
    sft_seconds = time.monotonic() - t0
    sft_peak = peak()
    if not dry:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    run_rl(RLConfig(str(out), data=["arith:train"], limit=256, out=str(work / "rl"), iterations=2, prompts=size["rl_prompts"],
                    samples=size["rl_samples"], max_tokens=size["rl_tokens"], updates=size["rl_updates"],
                    micro_batch_size=size["rl_micro"], lr=5e-7, **common))
    rl_seconds = time.monotonic() - t0
    peaks = [sft_peak, peak()]
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, peaks)
        dist.destroy_process_group()
    else:
        gathered = [peaks]
    if rank == 0:
        if not dry:
            torch.cuda.empty_cache()  # the GPU is the vLLM comparison's now
        log = [json.loads(line) for line in (work / "sft" / "log.jsonl").read_text().splitlines()]
        rl_log = [json.loads(line) for line in (work / "rl" / "log.jsonl").read_text().splitlines()]
        # steady-state speed: from the end of step 2 (setup and the first steps' warm-up excluded)
        steady = (len(log) - 2) / (log[-1]["seconds"] - log[1]["seconds"])
        summary = {"gpus": world, "gpu": "none (--cpu-dry-run)" if dry else torch.cuda.get_device_name(),
                   "model": "Qwen2-0.5B shape, random" + (", 2 layers of width 128" if dry else ""),
                   "sft": {"steps": len(log), "steps_per_s": steady,
                           "tokens_per_s": steady * sum(r["tokens"] for r in log) / len(log),
                           "first_loss": log[0]["train/loss"], "last_loss": log[-1]["train/loss"],
                           "seconds_with_setup": sft_seconds},
                   "rl": {"iterations": len(rl_log), "seconds_with_setup": rl_seconds,
                          "last": {k: rl_log[-1][k] for k in ("train/loss", "train/kl_ref", "gen_seconds", "tokens")}},
                   "peak_gib_per_gpu": {"sft": [p[0] for p in gathered], "rl": [p[1] for p in gathered]},
                   "vllm": vllm_comparison(Path(out), size, device)}
        Path(a.out).write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
