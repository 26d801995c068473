"""Batched generation vs calling `generate` one prompt at a time, same model, same prompts, one run.

Both sides go through s2r's TransformersBackend (left padding, KV cache, greedy), which only changes
`batch_size`. Rounds alternate A B A B so that drift of a shared, noisy machine hits both alike.
Prints a markdown section; `python bench/run.py` collects every section into BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from s2r.models.backend import SamplingParams
from s2r.models.hf import TransformersBackend
from s2r.models.tiny import TinyModelConfig, run_tiny_model


def measure(backend: TransformersBackend, prompts: list[str], params: SamplingParams, batch_size: int) -> float:
    backend.batch_size = batch_size
    start = time.perf_counter()
    outs = backend.complete(prompts, params)
    return sum(o.num_tokens for o in outs) / (time.perf_counter() - start)  # new tokens / s


def run(n_prompts: int = 32, new_tokens: int = 128, rounds: int = 3) -> str:
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as d:
        cfg = TinyModelConfig(d, hidden_size=256, layers=4, heads=8, intermediate_size=1024)
        run_tiny_model(cfg)
        backend = TransformersBackend.from_pretrained(d)
        n_params = sum(p.numel() for p in backend.model.parameters())
        prompts = [f"Question: what is {i} * {i + 7}?\nAnswer:\n" for i in range(n_prompts)]
        params = SamplingParams(max_tokens=new_tokens)
        measure(backend, prompts[:4], params, 4)  # warm-up
        batched, single = [], []
        for _ in range(rounds):
            batched.append(measure(backend, prompts, params, n_prompts))
            single.append(measure(backend, prompts, params, 1))
    ratios = [b / s for b, s in zip(batched, single)]
    return "\n".join([
        "## Generation throughput: batched vs one prompt at a time",
        "",
        f"Model: random Llama, {n_params / 1e6:.1f}M parameters, character tokenizer, fp32, "
        f"{torch.get_num_threads()} CPU threads. {n_prompts} prompts, greedy, up to {new_tokens} new tokens each; "
        f"{rounds} alternating rounds; medians (min–max).",
        "",
        "| | new tokens/s |",
        "|---|---|",
        f"| s2r TransformersBackend, batch {n_prompts} | {statistics.median(batched):,.0f} ({min(batched):,.0f}–{max(batched):,.0f}) |",
        f"| `generate` one prompt at a time | {statistics.median(single):,.0f} ({min(single):,.0f}–{max(single):,.0f}) |",
        f"| **ratio** | **{statistics.median(ratios):.1f}×** ({min(ratios):.1f}–{max(ratios):.1f}) |",
        "",
    ])


if __name__ == "__main__":
    print(run())
