"""Preference pairs for `s2r dpo`, built from graded samples of a model (pure functions).

- attempts: a sampled-attempts file (`s2r sample`: K graded first attempts per problem); chosen = the
  text of a right attempt, rejected = the text of a wrong one of the same problem.
- trajectories: S²R trajectories (`s2r solve --samples K`); whole trajectories ranked by final
  correctness: chosen ends right, rejected ends wrong.

Every (right, wrong) pair of distinct texts of a problem, or `max_pairs` of them drawn with a seed of
its own per problem (adding problems does not change another's draw). Samples the grader could not
check (timeout, crash) are left out; so are truncated ones (their text has no real end). A sample
with no answer is wrong. A problem's difficulty = wrong / (right + wrong) over what is left.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from s2r.grader import grader_failed
from s2r.jsonl import DataError, has_surrogate
from s2r.metrics import group_by_problem

WEIGHTINGS = ("none", "difficulty")
SOURCES = ("attempts", "trajectories")


@dataclass(frozen=True)
class Pair:
    problem: str  # the prompt is rendered from it as at inference
    chosen: str
    rejected: str
    weight: float  # 1, or the problem's difficulty


def outcome(record: dict) -> str | None:
    """'right', 'wrong' or None (left out: truncated, or the grader failed) of a sample's final answer."""
    last = record["attempts"][-1]
    if record.get("truncated") or (last["grade"] != "correct" and grader_failed(last.get("reason", ""))):
        return None
    return "right" if last["grade"] == "correct" else "wrong"


def difficulty(outcomes: Sequence[str | None]) -> float | None:
    """Share of a problem's usable samples that are wrong: ['right', 'wrong', 'wrong', None] -> 2/3."""
    used = [o for o in outcomes if o is not None]
    return used.count("wrong") / len(used) if used else None


def build_pairs(records: Sequence[dict], source: str, weighting: str = "none", max_pairs: int | None = None,
                seed: int = 0) -> list[Pair]:
    """The preference pairs of `records` (trajectory records), problem by problem in first-seen order."""
    if source not in SOURCES or weighting not in WEIGHTINGS:
        raise ValueError(f"pairs must be one of {SOURCES} and weighting one of {WEIGHTINGS}")
    pairs: list[Pair] = []
    for key, group in group_by_problem(records).items():
        for r in group:
            if source == "attempts" and len(r["attempts"]) != 1:
                raise DataError(f"problem {r['id']!r}: a sample with {len(r['attempts'])} attempts; "
                                "--pairs attempts takes `s2r sample` output (one attempt each)")
            if not isinstance(r.get("text"), str) or not isinstance(r.get("problem"), str):
                raise DataError(f"problem {r['id']!r}: a sample whose 'text' or 'problem' is missing or not text "
                                "(expected `s2r sample` or `s2r solve` output)")
            if has_surrogate(r["text"] + r["problem"]):
                raise DataError(f"problem {r['id']!r}: a text holds a lone surrogate (such as \\ud800), which no tokenizer can encode")
        outcomes = [outcome(r) for r in group]
        right = list(dict.fromkeys(r["text"] for r, o in zip(group, outcomes) if o == "right"))
        wrong = list(dict.fromkeys(r["text"] for r, o in zip(group, outcomes) if o == "wrong"))
        both = [(c, w) for c, w in itertools.product(right, wrong) if c != w]
        if max_pairs is not None and len(both) > max_pairs:
            both = random.Random(f"{seed}|{key}").sample(both, max_pairs)
        weight = difficulty(outcomes) if weighting == "difficulty" else 1.0
        pairs += [Pair(group[0]["problem"], c, w, weight) for c, w in both]
    return pairs
