"""Generation throughput, same model, same prompts, one run:

1. batched vs one prompt at a time: both sides go through s2r's TransformersBackend (left padding, KV
   cache, greedy), which only changes `batch_size`;
2. uneven lengths, as in self-correction (most rows stop early, a few run to the budget): s2r's
   decoding loop, which drops finished rows (`s2r/models/decode.py`), vs transformers'
   `model.generate` on the same batch with the same stop string, which runs every row to the end.

Rounds alternate A B A B so that drift of a shared, noisy machine hits both alike. Prints a markdown
section; `python bench/run.py` collects every section into BENCHMARKS.md.
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


def useful_tokens(ids: list[int], tokenizer, stop: str) -> int:
    """Tokens of a `generate` row up to and including the one that completes the stop string or EOS."""
    for k in range(1, len(ids) + 1):
        if ids[k - 1] == tokenizer.eos_token_id or stop in tokenizer.decode(ids[:k], skip_special_tokens=True):
            return k
    return len(ids)


def measure_uneven(backend: TransformersBackend, prompts: list[str], params: SamplingParams, ours: bool) -> float:
    """New tokens/s at T = 1 with a one-character stop string: lengths are roughly geometric."""
    torch.manual_seed(0)
    start = time.perf_counter()
    if ours:
        outs = backend.complete(prompts, params)
        return sum(o.num_tokens for o in outs) / (time.perf_counter() - start)
    tok = backend.tokenizer
    enc = tok(prompts, return_tensors="pt", padding=True)
    gen = backend.model.generate(**enc, max_new_tokens=params.max_tokens, do_sample=True, temperature=params.temperature,
                                 top_p=1.0, top_k=0, stop_strings=list(params.stop), tokenizer=tok,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    seconds = time.perf_counter() - start
    rows = gen[:, enc["input_ids"].shape[1]:].tolist()
    return sum(useful_tokens(r, tok, params.stop[0]) for r in rows) / seconds


def run(n_prompts: int = 32, new_tokens: int = 128, rounds: int = 3, uneven_prompts: int = 128) -> str:
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
        uneven = SamplingParams(max_tokens=4 * new_tokens, temperature=1.0, stop=("q",))
        mine, theirs = [], []
        for _ in range(rounds):
            backend.batch_size = uneven_prompts
            many = [f"Question: what is {i} * {i + 7}?\nAnswer:\n" for i in range(uneven_prompts)]
            mine.append(measure_uneven(backend, many, uneven, ours=True))
            theirs.append(measure_uneven(backend, many, uneven, ours=False))
    ratios = [b / s for b, s in zip(batched, single)]
    uneven_ratios = [a / b for a, b in zip(mine, theirs)]
    return "\n".join([
        "## Generation throughput: batched vs one prompt at a time, and uneven lengths vs `model.generate`",
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
        (f"Uneven lengths: {uneven_prompts} such prompts in one batch, sampled at T = 1 until the stop string \"q\" "
         f"(about one token in {len(backend.tokenizer)}) or {4 * new_tokens} tokens, so most rows end early and a few "
         "run long. Tokens counted up to each row's stop."),
        "",
        "| | new tokens/s |",
        "|---|---|",
        f"| s2r decode (drops finished rows) | {statistics.median(mine):,.0f} ({min(mine):,.0f}–{max(mine):,.0f}) |",
        f"| transformers `model.generate` (stop_strings) | {statistics.median(theirs):,.0f} ({min(theirs):,.0f}–{max(theirs):,.0f}) |",
        f"| **ratio** | **{statistics.median(uneven_ratios):.1f}×** ({min(uneven_ratios):.1f}–{max(uneven_ratios):.1f}) |",
        "",
    ])


if __name__ == "__main__":
    print(run())
