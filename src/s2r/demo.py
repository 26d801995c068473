"""`s2r demo`: the whole method on the embedded task, on a laptop CPU, with the numbers that move.

Builds (or reuses from the cache) the tiny base model, evaluates it on the test split with each
strategy, and writes `DIR/results.json`, `DIR/report.html` and one trajectories file per row in
`DIR/rows/`. A killed demo resumes: finished rows and trajectories are reused.

Rows so far: `base` (one greedy attempt), `base-majority4` (majority of 4 samples at T=0.7),
`base-intrinsic` (a prompted review turn). Later stages (BI, RL) add rows.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path


from s2r.config import arg
from s2r.evaluate import solve_resumable
from s2r.jsonl import write_atomic, write_json_atomic
from s2r.metrics import compute_metrics
from s2r.models.backend import SamplingParams
from s2r.report import render_report
from s2r.solve import Settings
from s2r.tasks import arith
from s2r.train.base import PLAIN, BaseConfig, is_trained, train_base

TABLE = [("eval/acc_first", "acc first"), ("eval/acc_final", "acc final"), ("eval/i2c", "i2c"), ("eval/c2i", "c2i"),
         ("verify/tpr", "tpr"), ("verify/tnr", "tnr"), ("eval/attempts_mean", "attempts"), ("eval/tokens_mean", "tokens")]


@dataclass
class DemoConfig:
    out: str = arg("runs/demo", help="output folder: results.json, report.html, rows/")
    seed: int = arg(0, help="seed of the task splits, the base model and sampling")
    quick: bool = arg(False, help="a smaller run: 200 test problems, shorter base training")
    test_problems: int | None = arg(None, help="test problems (default 1000, --quick 200)")
    cache: str | None = arg(None, help="where trained models are kept and reused (default $S2R_CACHE or ~/.cache/s2r)")
    target_acc: float = arg(0.5, help="base model: stop training at this greedy validation accuracy")
    base_max_steps: int | None = arg(None, help="base model: training steps at most (default 3000, --quick 900)")
    votes: int = arg(4, help="base-majority: samples per vote")
    batch_size: int = arg(128, help="prompts per generate() call")


def cache_dir(cfg: DemoConfig) -> Path:
    return Path(cfg.cache or os.environ.get("S2R_CACHE") or Path.home() / ".cache" / "s2r")


def base_config(cfg: DemoConfig) -> BaseConfig:
    """The full base model; --quick trains a short one unless the full one is already cached."""

    def placed(base: BaseConfig) -> BaseConfig:
        return replace(base, out=str(cache_dir(cfg) / f"base-{base.key()}"))

    full = placed(BaseConfig(seed=cfg.seed, target_acc=cfg.target_acc))
    if cfg.base_max_steps:
        return placed(replace(full, max_steps=cfg.base_max_steps))
    if cfg.quick and not is_trained(full):
        return placed(replace(full, max_steps=900))
    return full


def run_row(name: str, strategy: str, model_dir: Path, problems, settings: Settings, out: Path, batch_size: int) -> list[dict]:
    """Trajectories of one row, resumable: DIR/rows/NAME.jsonl."""
    def backend():
        from s2r.models.hf import TransformersBackend

        return TransformersBackend.from_pretrained(str(model_dir), batch_size=batch_size)

    return solve_resumable(out / "rows" / f"{name}.jsonl", [("arith", p, 0) for p in problems], strategy, settings,
                           backend, chunk=batch_size, desc=name)


def format_table(rows: list[dict]) -> str:
    head = f"{'row':<18}" + "".join(f"{title:>11}" for _, title in TABLE)
    lines = [head, "-" * len(head)]
    for row in rows:
        m = row["metrics"]
        cells = []
        for key, _ in TABLE:
            v = m.get(key)
            cells.append(f"{'—':>11}" if v is None else f"{v:>11.1f}" if key.endswith("_mean") else f"{100 * v:>10.1f}%")
        lines.append(f"{row['name']:<18}" + "".join(cells))
    return "\n".join(lines)


def run_demo(cfg: DemoConfig) -> dict:
    out = Path(cfg.out)
    start = time.monotonic()
    n_test = cfg.test_problems or (200 if cfg.quick else 1000)
    print(f"s2r demo: seed {cfg.seed}, {n_test} test problems of the embedded arithmetic task", file=sys.stderr)
    base_dir = train_base(base_config(cfg))
    problems = list(arith.generate("test", n_test, cfg.seed))
    greedy = Settings(max_tokens=200, params=SamplingParams(max_tokens=200, seed=cfg.seed), prompt=PLAIN)
    sampled = replace(greedy, votes=cfg.votes, params=replace(greedy.params, temperature=0.7))
    plan = [
        ("base", "single", base_dir, greedy),
        (f"base-majority{cfg.votes}", "majority", base_dir, sampled),
        ("base-intrinsic", "intrinsic", base_dir, greedy),
    ]
    runs = {name: run_row(name, strategy, model, problems, s, out, cfg.batch_size) for name, strategy, model, s in plan}
    rows = [{"name": name, "metrics": compute_metrics(records)["overall"]} for name, records in runs.items()]
    result = {"seed": cfg.seed, "test_problems": n_test, "base_model": str(base_dir), "rows": rows}
    write_json_atomic(out / "results.json", result)
    write_atomic(out / "report.html", render_report(f"s2r demo · embedded arithmetic · seed {cfg.seed}", runs,
                                                    meta={"seed": cfg.seed, "test_problems": n_test, "base_model": str(base_dir)}))
    print(format_table(rows))
    print(f"wrote {out / 'results.json'} and {out / 'report.html'} in {time.monotonic() - start:.0f}s", file=sys.stderr)
    return result
