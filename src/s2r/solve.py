"""`s2r solve` (write trajectories) and `s2r eval` (solve + metrics.json + report.html)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from s2r.config import arg, to_dict
from s2r.format import MarkerFields
from s2r.grader import Grader
from s2r.jsonl import ResumableJsonl, write_atomic, write_json_atomic
from s2r.metrics import compute_metrics
from s2r.models.backend import SamplingParams
from s2r.models.http import HTTPFields
from s2r.models.vllm_backend import VLLMFields
from s2r.progress import Progress
from s2r.prompts import PromptFields
from s2r.settings_guard import guard_output, model_digest
from s2r.loop import MATH, STRATEGIES, Settings, solve_problems
from s2r.tasks import DataFields, Task, grading_task


@dataclass
class SolveConfig(MarkerFields, HTTPFields, DataFields, PromptFields, VLLMFields):
    out: str = arg(help="solve: trajectories JSONL to write; eval: output folder")
    data: list[str] | None = arg(None, help="benchmarks (folder names, name:split) or JSONL files; with --task, its "
                                            "splits (default: math500; with --task, its test split)")
    model: str | None = arg(None, help="transformers, vllm: model folder; http: served model name (default: the first listed)")
    backend: str = arg("transformers", help="transformers or vllm (a local model folder), or http (OpenAI-compatible server)")
    strategy: str = arg("s2r", help="s2r, single, majority or intrinsic")
    samples: int = arg(1, help="trajectories per problem (for pass@k, maj@k, and CL/CS estimates)")
    votes: int = arg(4, help="majority: sampled answers per vote")
    max_tokens: int = arg(1024, help="token budget per trajectory")
    max_attempts: int = arg(4, help="s2r: attempts at most")
    temperature: float | None = arg(None, help="sampling temperature (default: 0 = greedy, 0.7 when sampling several)")
    top_p: float = arg(1.0, help="nucleus sampling")
    seed: int = arg(0, help="sampling seed")
    rethink_from: str | None = arg(None, help="intrinsic: self-rethinking: the review turn shows the model's own wrong "
                                              "attempts from this `s2r sample` file (docs/mistake-tuning.md)")
    rethink_k: int = arg(3, help="self-rethinking: wrong attempts shown (one per problem, seeded by --seed)")
    tokenizer: str | None = arg(None, help="http: local tokenizer folder, to render its chat template")
    batch_size: int = arg(32, help="transformers: prompts per generate() call")
    device: str = arg("auto", help="transformers: auto, cpu, cuda, cuda:1, ...")
    dtype: str = arg("auto", help="transformers, vllm: auto (bfloat16 on GPUs, float32 on CPU), float32, bfloat16, float16")
    grader_timeout: float = arg(2.0, help="seconds per grading comparison")
    chunk: int = arg(64, help="jobs between two flushes of the output")


@dataclass
class EvalConfig(SolveConfig):
    title: str | None = arg(None, help="report title (default: model and strategy)")


def make_backend(cfg: SolveConfig):
    if cfg.backend == "transformers":
        if not cfg.model:
            raise ValueError("--model MODEL_DIR is required with the transformers backend")
        from s2r.models.hf import TransformersBackend

        return TransformersBackend.from_pretrained(cfg.model, batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype)
    if cfg.backend == "vllm":
        if not cfg.model:
            raise ValueError("--model MODEL_DIR is required with the vllm backend")
        from s2r.models.vllm_backend import VLLMBackend

        return VLLMBackend.from_pretrained(cfg.model, cfg, dtype=cfg.dtype, seed=cfg.seed)
    if cfg.backend == "http":
        from s2r.models.http import HTTPBackend

        tokenizer = None
        if cfg.tokenizer:
            from transformers import AutoTokenizer

            from s2r.models.hf import from_pretrained

            tokenizer = from_pretrained(AutoTokenizer, cfg.tokenizer)
        return HTTPBackend(cfg.base_url, cfg.model, cfg.api_key, cfg.request_timeout, cfg.retries,
                           cfg.concurrency, tokenizer=tokenizer)
    raise ValueError(f"backend must be transformers, vllm or http, not {cfg.backend!r}")


def model_folder(cfg: SolveConfig) -> str | None:
    """The local folder whose s2r.json gives the prompt defaults: the model, or (http) the tokenizer."""
    return cfg.model if cfg.backend in ("transformers", "vllm") else cfg.tokenizer


def model_identity(cfg: SolveConfig) -> str:
    """The model as a trajectories file's settings record it: a local model's digest, or the served name."""
    if cfg.backend in ("transformers", "vllm") and cfg.model:
        return model_digest(cfg.model)
    return f"{cfg.model or '(first listed)'} at {cfg.base_url}"


def settings_of(cfg: SolveConfig, task: Task = MATH) -> Settings:
    """The loop's settings; --system / --template left unset come from the model folder (prompts.py)."""
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {cfg.strategy!r}")
    sampling = cfg.samples > 1 or cfg.strategy == "majority"
    temperature = cfg.temperature if cfg.temperature is not None else (0.7 if sampling else 0.0)
    prompt = cfg.from_model(model_folder(cfg)).prompt_config()
    if cfg.rethink_from:
        prompt = replace(prompt, review_prompt=rethink_review(cfg))
    return Settings(
        task=task, max_tokens=cfg.max_tokens, max_attempts=cfg.max_attempts, votes=cfg.votes,
        params=SamplingParams(max_tokens=cfg.max_tokens, temperature=temperature, top_p=cfg.top_p, seed=cfg.seed),
        fmt=cfg.fmt,
        prompt=prompt,
    )


def rethink_review(cfg: SolveConfig) -> str:
    """Self-rethinking's review turn: the model's own wrong attempts (methods/mistakes.rethink_prompt)."""
    from s2r.methods.mistakes import rethink_prompt
    from s2r.methods.samples import load_samples

    if cfg.strategy != "intrinsic":
        raise ValueError(f"--rethink-from is the intrinsic strategy's review turn: use --strategy intrinsic, not {cfg.strategy}")
    if cfg.rethink_k < 1:
        raise ValueError(f"--rethink-k must be at least 1, not {cfg.rethink_k}")
    try:
        return rethink_prompt(load_samples(cfg.rethink_from), cfg.rethink_k, cfg.seed)
    except ValueError as e:
        raise ValueError(f"{cfg.rethink_from}: {e}") from None


class EndpointErrors(RuntimeError):
    pass


def solve_resumable(path, jobs, strategy: str, settings: Settings, backend_factory, *, model: str, chunk: int = 64,
                    grader_timeout: float = 2.0, desc: str | None = None, guard: dict | None = None,
                    restart: bool = False) -> list[dict]:
    """Run (benchmark, problem, sample) jobs into a resumable trajectories file and return its records.

    The file's settings (`settings.record(strategy, model)` and `guard`, in PATH.settings.json) must
    be those it was written with, else it stops (restart: runs again; settings_guard.py). Jobs
    already in the file are skipped; the backend is made only if work is left. Each chunk's
    sampling seed is settings' seed plus the place of its first job in `jobs`, so a resumed run
    samples what an uninterrupted one would. Failed generations are kept out of the file and raised
    as EndpointErrors (the records that succeeded stay in PATH.partial for the next run)."""
    guard_output(path, settings.record(strategy, model) | (guard or {}), restart=restart)
    with ResumableJsonl(path) as sink:
        done = {(r["benchmark"], str(r["id"]), r["sample"]) for r in sink.records}
        todo = [(i, j) for i, j in enumerate(jobs) if (j[0], j[1].id, j[2]) not in done]
        if done:
            print(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} trajectories already written", file=sys.stderr)
        errors: list[str] = []
        if todo:
            backend = backend_factory()
            bar = Progress(desc or f"solve ({strategy})", len(jobs), initial=len(jobs) - len(todo), unit="trajectory")
            try:
                with Grader(timeout=grader_timeout) as grader:
                    for lo in range(0, len(todo), chunk):
                        part = todo[lo : lo + chunk]
                        s = replace(settings, params=replace(settings.params, seed=settings.params.seed + part[0][0]))
                        start = time.monotonic()
                        records, errs = solve_problems(backend, [j for _, j in part], strategy, s, grader)
                        sink.extend(records)
                        errors += errs
                        bar.update(len(part), **{"tok/s": f"{sum(r['tokens'] for r in records) / max(1e-9, time.monotonic() - start):.0f}"})
            finally:
                bar.close()
                backend.close()
        if errors:
            raise EndpointErrors(f"{len(errors)} of {len(jobs)} generations failed (first: {errors[0]}); "
                                 f"{len(sink.records)} trajectories are kept in {sink.partial}: run the same command again to retry the rest")
        sink.finish()
        return sink.records


def run_solve(cfg: SolveConfig, out_path: str | None = None) -> list[dict]:
    """Write trajectories for every (benchmark, problem, sample); resumes a killed run."""
    datasets = cfg.datasets(cfg.data, "math500")
    jobs = [(d.name, p, s) for d in datasets for p in d.problems for s in range(cfg.samples)]
    return solve_resumable(out_path or cfg.out, jobs, cfg.strategy, settings_of(cfg, grading_task(datasets)),
                           lambda: make_backend(cfg), model=model_identity(cfg), chunk=cfg.chunk,
                           grader_timeout=cfg.grader_timeout)


def run_eval(cfg: EvalConfig) -> dict:
    from s2r.report import render_report

    out = Path(cfg.out)
    cfg = cfg.from_model(model_folder(cfg))  # metrics.json and the report say which prompt was used
    records = run_solve(cfg, str(out / "trajectories.jsonl"))
    runs = {b: [r for r in records if r["benchmark"] == b] for b in dict.fromkeys(r["benchmark"] for r in records)}
    result = {"benchmarks": {b: compute_metrics(rs) for b, rs in runs.items()}, "config": to_dict(cfg)}
    write_json_atomic(out / "metrics.json", result)
    title = cfg.title or f"{cfg.model or cfg.backend} · strategy {cfg.strategy}"
    write_atomic(out / "report.html", render_report(title, runs, meta=to_dict(cfg)))
    for b, m in result["benchmarks"].items():
        o = m["overall"]
        print(f"{b}: acc_first {o['eval/acc_first']:.3f}  acc_final {o['eval/acc_final']:.3f}  "
              f"i2c {o['eval/i2c']:.3f}  c2i {o['eval/c2i']:.3f}  ({m['counts']['trajectories']} trajectories)")
    print(f"wrote {out / 'trajectories.jsonl'}, {out / 'metrics.json'}, {out / 'report.html'}", file=sys.stderr)
    return result
