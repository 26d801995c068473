"""Selective prediction: answering only when sure (docs/metrics-selective.md).

CERTAINTY_SIGNALS maps a trajectory record (metrics.py's schema) to a certainty in [0, 1]; the
pure functions below take parallel lists `scores` (certainty per trajectory, higher = surer) and
`labels` (True where the final answer is correct); `selective_metrics` is metrics.py's family.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

Record = dict[str, Any]

ANSWER_ABOVE = 0.5  # a trajectory is answered when its certainty is > this (binary signals: when it is 1)


def _descending_thresholds(scores: Sequence[float], labels: Sequence[bool]) -> list[tuple[float, int, int]]:
    """(threshold, TP, FP) at each distinct score, highest first: TP / FP = correct / wrong among the
    trajectories with score ≥ threshold (ties enter together, as in scikit-learn)."""
    pairs = sorted(zip(scores, labels), key=lambda p: -p[0])
    out: list[tuple[float, int, int]] = []
    tp = fp = 0
    for i, (s, y) in enumerate(pairs):
        tp += bool(y)
        fp += not y
        if i + 1 == len(pairs) or pairs[i + 1][0] != s:
            out.append((s, tp, fp))
    return out


def average_precision(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """AP = Σ_k (R_k − R_{k−1}) · P_k over the distinct thresholds k, highest first, R_0 = 0:
    P_k = TP_k / (TP_k + FP_k), R_k = TP_k / #correct. Step-wise, no interpolation (scikit-learn's
    average_precision_score). None when no trajectory is correct (recall undefined).

    scores [0.9, 0.8, 0.8, 0.1], labels [1, 0, 1, 0] -> thresholds 0.9: P 1, R 1/2; 0.8: P 2/3, R 1;
    0.1: R 1 -> AP = 1/2 · 1 + 1/2 · 2/3 = 5/6."""
    positives = sum(map(bool, labels))
    if positives == 0:
        return None
    ap, last_recall = 0.0, 0.0
    for _, tp, fp in _descending_thresholds(scores, labels):
        recall = tp / positives
        ap += (recall - last_recall) * tp / (tp + fp)
        last_recall = recall
    return ap


def risk_coverage(scores: Sequence[float], labels: Sequence[bool]) -> list[tuple[float, float, float]]:
    """(threshold, coverage, risk) for each distinct score t, highest first, answering where score ≥ t:
    coverage = answered / all, risk = 1 − accuracy on the answered. The last point has coverage 1.

    scores [1, 1, 0.5, 0], labels [1, 0, 1, 0] -> [(1, 0.5, 0.5), (0.5, 0.75, 1/3), (0, 1, 0.5)]."""
    n = len(scores)
    return [(t, (tp + fp) / n, fp / (tp + fp)) for t, tp, fp in _descending_thresholds(scores, labels)]


def selective_accuracy(scores: Sequence[float], labels: Sequence[bool]) -> tuple[float | None, float | None]:
    """(coverage, accuracy on the answered) when answering where score > ANSWER_ABOVE; accuracy None
    when nothing is answered, both None when there is no trajectory."""
    answered = [y for s, y in zip(scores, labels) if s > ANSWER_ABOVE]
    coverage = len(answered) / len(scores) if scores else None
    return coverage, (sum(map(bool, answered)) / len(answered) if answered else None)


# ----------------------------------------------------------------------------------- records


def _stated(r: Record) -> float | None:
    return r.get("certainty")


def _vote_share(r: Record) -> float | None:
    """Share of all votes (answerless samples included) for the final answer; 0 when it has none."""
    from s2r.metrics import answer_key  # votes are counted as metrics.vote counts them

    if not r.get("votes"):
        return None
    final = r["attempts"][-1].get("answer")
    if final is None:
        return 0.0
    return sum(v is not None and answer_key(v) == answer_key(final) for v in r["votes"]) / len(r["votes"])


def _last_verdict(r: Record) -> float | None:
    """1 if the final attempt was verified "correct", else 0 — for records of a model that verifies."""
    if r.get("strategy") != "s2r" and all(a.get("verdict") is None for a in r["attempts"]):
        return None
    return 1.0 if r["attempts"][-1].get("verdict") == "correct" else 0.0


# Which certainty a record carries: the first signal of this table that gives a number.
CERTAINTY_SIGNALS: dict[str, Callable[[Record], float | None]] = {
    "stated": _stated,  # an explicit `certainty` field (e.g. parsed from "I am sure" / "I am unsure")
    "vote_share": _vote_share,  # a majority vote's `votes`
    "last_verdict": _last_verdict,  # an S²R model's own verdict on its final attempt
}


def certainty(r: Record) -> tuple[str, float] | None:
    """(signal name, certainty in [0, 1]) of a record, or None when it carries no signal."""
    for name, signal in CERTAINTY_SIGNALS.items():
        value = signal(r)
        if value is not None:
            return name, float(value)
    return None


def _scored(records: Sequence[Record]) -> list[tuple[str, float, bool]]:
    """(signal, certainty, final answer correct) of each record with a signal."""
    return [(*c, r["attempts"][-1]["grade"] == "correct") for r in records if (c := certainty(r)) is not None]


def selective_metrics(records: Sequence[Record]) -> dict[str, float | None]:
    """select/coverage, acc_answered, ap over the records that carry a certainty signal (absent when
    none does): answered = certainty > 0.5; AP of the certainty ranking against final correctness."""
    scored = _scored(records)
    if not scored:
        return {}
    scores, labels = [s for _, s, _ in scored], [y for _, _, y in scored]
    coverage, acc = selective_accuracy(scores, labels)
    return {"select/coverage": coverage, "select/acc_answered": acc, "select/ap": average_precision(scores, labels)}


def risk_coverage_curve(records: Sequence[Record]) -> dict[str, Any] | None:
    """{"signals": {name: records}, "points": [[threshold, coverage, risk], ...]}, or None."""
    scored = _scored(records)
    if not scored:
        return None
    points = risk_coverage([s for _, s, _ in scored], [y for _, _, y in scored])
    return {"signals": dict(Counter(name for name, _, _ in scored)), "points": [list(p) for p in points]}
