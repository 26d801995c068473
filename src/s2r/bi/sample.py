"""`s2r sample`: K first attempts per problem (default 5 at temperature 0.7), graded by the one grader.

The output is a trajectories file (the schema of `s2r solve`, strategy `single`): one record per
(problem, sample) with the attempt's text, answer and grade. Resumable like `s2r solve`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from s2r.config import arg
from s2r.solve import SolveConfig, run_solve, settings_of


@dataclass
class SampleConfig(SolveConfig):
    out: str = arg(help="attempts JSONL to write")
    strategy: str = arg("single", help="single: one attempt per sample (what `s2r build` expects)")
    samples: int = arg(5, help="attempts per problem (docs/method.md §2: K = 5)")
    temperature: float | None = arg(0.7, help="sampling temperature")


def run_sample(cfg: SampleConfig) -> list[dict]:
    if cfg.strategy != "single":
        raise ValueError("s2r sample writes first attempts: strategy must be single")
    records = run_solve(cfg)
    correct = sum(r["attempts"][0]["grade"] == "correct" for r in records)
    print(f"{len(records)} attempts, {correct} correct ({correct / max(1, len(records)):.1%}); wrote {cfg.out}")
    if records and not correct:
        prompt = settings_of(cfg).prompt
        print(f"warning: none of the {len(records)} attempts is correct, so `s2r build` will have no data: is the prompt "
              f"the one the model was trained with (--system {prompt.system!r} --template {prompt.template})? "
              "Or are the problems too hard for it?", file=sys.stderr)
    return records
