"""`s2r hard`: the problems a model finds hard, read from its trajectories (`s2r solve`), written as
a problem file that `s2r rl` and `s2r offline` take as --data.

A problem is hard when one of its trajectories ends on an answer that is not right (wrong, or no
answer found) or needs at least `min_attempts` attempts to end right. Problems whose final answer
the grader could not check (timeout, crash) are left out and counted, never called hard.

Why: online RL learns only from prompt groups whose answers differ. A behaviour-initialised model
that ends right on ~90% of its training rollouts spends most of them on groups that are all right
(advantage 0); on its hard problems most groups are mixed (docs/results/2026-11-rl-studies.md: "RL on the problems the model
finds hard", with measurements).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass

from s2r.config import arg
from s2r.grader import grader_failed
from s2r.jsonl import DataError, write_jsonl_atomic
from s2r.metrics import group_by_problem, load_trajectories


@dataclass
class HardConfig:
    trajectories: str = arg(help="trajectories JSONL of the model on training problems (`s2r solve`)", positional=True)
    out: str = arg(help="problem JSONL to write (id, problem, gold, level, subject)")
    min_attempts: int = arg(3, help="a trajectory that ends right after this many attempts or more is hard too (0: off)")


def verdict(record: dict, min_attempts: int) -> str:
    """'hard', 'easy' or 'ungraded' for one trajectory record."""
    last = record["attempts"][-1]
    if last["grade"] != "correct" and grader_failed(last.get("reason", "")):
        return "ungraded"
    if last["grade"] != "correct" or 0 < min_attempts <= len(record["attempts"]):
        return "hard"
    return "easy"


def hard_problems(records: list[dict], min_attempts: int, source: str = "trajectories") -> tuple[list[dict], Counter]:
    """(the hard problems, in first-seen order, one per (benchmark, id); counts of problems that are
    hard, easy and ungraded). One hard trajectory makes its problem hard; an ungraded one makes it
    ungraded unless another trajectory is hard."""
    hard, counts = [], Counter()
    for group in group_by_problem(records).values():
        verdicts = {verdict(r, min_attempts) for r in group}
        kind = "hard" if "hard" in verdicts else "ungraded" if "ungraded" in verdicts else "easy"
        counts[kind] += 1
        if kind == "hard":
            r = group[0]
            if not r.get("problem") or r.get("gold") is None:
                raise DataError(f"{source}: trajectory {r['id']!r} has no 'problem' or 'gold' field: cannot write it as a problem")
            hard.append({"id": r["id"], "problem": r["problem"], "gold": r["gold"], "level": r.get("level"),
                         "subject": r.get("subject")})
    return hard, counts


def run_hard(cfg: HardConfig) -> list[dict]:
    problems, counts = hard_problems(load_trajectories(cfg.trajectories), cfg.min_attempts, cfg.trajectories)
    write_jsonl_atomic(cfg.out, problems)
    ungraded = f", {counts['ungraded']} left out: the grader failed on them" if counts["ungraded"] else ""
    print(f"{sum(counts.values())} problems: {counts['hard']} hard (not right, or right after "
          f"≥ {cfg.min_attempts} attempts), {counts['easy']} easy{ungraded}; wrote {cfg.out}", file=sys.stderr)
    return problems
