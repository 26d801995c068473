"""Every metric of docs/metrics.md, one function per family, computed from trajectory records.

A trajectory record (the contract between `solve`, `eval` and `metrics`; docs/formats.md):

    {"id": str, "problem": str, "gold": str, "sample": int,
     "attempts": [{"answer": str | null, "grade": "correct" | "incorrect" | "unverifiable",
                   "verdict": "correct" | "incorrect" | "unparsable" | null}, ...],
     "tokens": int, "truncated": bool, "level"?: int, "subject"?: str,
     "votes"?: [str | null, ...], "certainty"?: float | null}

`grade` is the grader's result, `verdict` the model's own (null when the attempt was not verified).
`votes` (strategy majority) are the sampled answers voted on; `certainty` in [0, 1] is how sure the
model says it is of its final answer (null: it said nothing parsable); see selective.CERTAINTY_SIGNALS.
Undefined ratios (0/0) are None (JSON null), never 0.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from s2r.jsonl import DataError, iter_jsonl
from s2r.records import actions_problem
from s2r.selective import risk_coverage_curve, selective_metrics

GRADES = {"correct", "incorrect", "unverifiable"}
VERDICTS = {"correct", "incorrect", "unparsable", None}

Record = dict[str, Any]
Metrics = dict[str, float | None]


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _first_ok(r: Record) -> bool:
    return r["attempts"][0]["grade"] == "correct"


def _final_ok(r: Record) -> bool:
    return r["attempts"][-1]["grade"] == "correct"


# ----------------------------------------------------------------------------------- answers


def answer_metrics(records: Sequence[Record]) -> Metrics:
    """eval/acc_first, acc_final, delta, i2c, c2i, unverifiable, attempts_mean, tokens_mean, truncated.
    Each trajectory counts once (N = number of trajectories)."""
    n = len(records)
    first = sum(_first_ok(r) for r in records)
    final = sum(_final_ok(r) for r in records)
    i2c = sum(not _first_ok(r) and _final_ok(r) for r in records)  # fixed
    c2i = sum(_first_ok(r) and not _final_ok(r) for r in records)  # broken
    acc_first, acc_final = ratio(first, n), ratio(final, n)
    return {
        "eval/acc_first": acc_first,
        "eval/acc_final": acc_final,
        "eval/delta": None if n == 0 else acc_final - acc_first,  # == i2c − c2i
        "eval/i2c": ratio(i2c, n),
        "eval/c2i": ratio(c2i, n),
        "eval/unverifiable": ratio(sum(r["attempts"][-1]["grade"] == "unverifiable" for r in records), n),
        "eval/attempts_mean": _mean([len(r["attempts"]) for r in records]),
        "eval/tokens_mean": _mean([r["tokens"] for r in records]),
        "eval/truncated": ratio(sum(bool(r["truncated"]) for r in records), n),
    }


# ----------------------------------------------------------------------------------- verification


def verification_metrics(records: Sequence[Record]) -> Metrics:
    """verify/*: the model's verdicts as a binary classifier of its own attempts ("positive" = the
    model says "correct"). Over attempts with a parsable verdict whose grade is known (attempts the
    grader could not check have no ground truth and are left out); verify/unparsable is over all
    attempts that carry a verification."""
    verified = [(j, a) for r in records for j, a in enumerate(r["attempts"]) if a.get("verdict") is not None]
    judged = [(j, a["grade"] == "correct", a["verdict"] == "correct") for j, a in verified
              if a["verdict"] != "unparsable" and a["grade"] != "unverifiable"]
    tp = sum(truth and says for _, truth, says in judged)
    tn = sum(not truth and not says for _, truth, says in judged)
    pos = sum(truth for _, truth, _ in judged)  # attempts that are correct
    said_pos = sum(says for _, _, says in judged)  # verdicts that say "correct"
    tpr, precision = ratio(tp, pos), ratio(tp, said_pos)
    f1 = None if tpr is None or precision is None else (
        2 * precision * tpr / (precision + tpr) if precision + tpr else 0.0)
    first = [(truth, says) for j, truth, says in judged if j == 0]
    return {
        "verify/acc": ratio(tp + tn, len(judged)),
        "verify/tpr": tpr,
        "verify/tnr": ratio(tn, len(judged) - pos),
        "verify/precision": precision,
        "verify/f1": f1,
        "verify/unparsable": ratio(sum(a["verdict"] == "unparsable" for _, a in verified), len(verified)),
        "verify/first_acc_on_correct": ratio(sum(t and s for t, s in first), sum(t for t, _ in first)),
        "verify/first_acc_on_incorrect": ratio(sum(not t and not s for t, s in first), sum(not t for t, _ in first)),
    }


# ----------------------------------------------------------------------------------- failures


def failure_metrics(records: Sequence[Record]) -> Metrics:
    """fail/*: where the wrong final answers come from, as shares of all trajectories; the three add
    up to 1 − eval/acc_final. Not in docs/metrics.md: s2r's own decomposition of the failures.

    fail/lost_right      some attempt was right, the final one is not: the model found the answer
                         and let it go (its check rejected it, or it went on)
    fail/accepted_wrong  no attempt was right and the model's check said "correct" to the last one:
                         a wrong answer stopped the search
    fail/never_right     no attempt was right and none was accepted: attempts or budget ran out

    A perfect verifier with the same solver recovers at most lost_right + accepted_wrong, and the
    latter only if a further attempt is right: what is left, never_right, is the solver's."""
    n = len(records)
    wrong = [r for r in records if not _final_ok(r)]
    found = [any(a["grade"] == "correct" for a in r["attempts"]) for r in wrong]
    accepted = [not f and r["attempts"][-1].get("verdict") == "correct" for r, f in zip(wrong, found)]
    return {
        "fail/lost_right": ratio(sum(found), n),
        "fail/accepted_wrong": ratio(sum(accepted), n),
        "fail/never_right": ratio(sum(not f and not a for f, a in zip(found, accepted)), n),
    }


def loop_metrics(records: Sequence[Record]) -> Metrics:
    """Shares of the markers the `s2r` loop wrote because the model did not (over the records that
    carry `loop_markers`; absent where none does, like maj@k without several samples):
      eval/retry_by_loop    of all retries (attempts after the first), those whose retry marker the loop
                            wrote — the model stopped (EOS) after "incorrect", or went on without it;
      eval/retry_after_cut  of all retries, those where it went on and the loop cut its text there;
      eval/verify_by_loop   of all attempts, those whose verify marker the loop wrote — the model went
                            on from its answer line into a check without it (and was cut there).
    Not in docs/metrics.md: a model that leaves markers out is drifting from the format (RL can teach it
    to). A marker without its kind (records written before the verify marker was enforced) is a retry's."""
    loop = [r for r in records if "loop_markers" in r]
    if not loop:
        return {}
    retries = sum(len(r["attempts"]) - 1 for r in loop)
    attempts = sum(len(r["attempts"]) for r in loop)
    written = [(m[2], m[3] if len(m) > 3 else "retry") for r in loop for m in r["loop_markers"]]
    retry = [why for why, kind in written if kind == "retry"]
    return {"eval/retry_by_loop": ratio(len(retry), retries), "eval/retry_after_cut": ratio(retry.count("cut"), retries),
            "eval/verify_by_loop": ratio(len(written) - len(retry), attempts)}


# ----------------------------------------------------------------------------------- confidence / critique


def _problem_key(r: Record) -> tuple:
    return (r.get("benchmark"), str(r["id"]))


def group_by_problem(records: Iterable[Record]) -> dict[tuple, list[Record]]:
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        groups[_problem_key(r)].append(r)
    return groups


def confidence_critique_metrics(records: Sequence[Record]) -> Metrics:
    """eval/acc1, acc2, cl, cs, rss (Yang et al. 2025) from per-problem estimates over k samples:
    P(a_i) = share of first attempts correct; P(b|a), P(b|¬a) = share correct after correction
    among first-correct / first-wrong samples (0 when there are none)."""
    pa, pab, pnab = [], [], []  # P(a_i), P(a_i)·P(b_i|a_i), (1−P(a_i))·P(b_i|¬a_i)
    for group in group_by_problem(records).values():
        a = [r for r in group if _first_ok(r)]
        not_a = [r for r in group if not _first_ok(r)]
        p_a = len(a) / len(group)
        p_b_a = ratio(sum(map(_final_ok, a)), len(a)) or 0.0
        p_b_not_a = ratio(sum(map(_final_ok, not_a)), len(not_a)) or 0.0
        pa.append(p_a)
        pab.append(p_a * p_b_a)
        pnab.append((1 - p_a) * p_b_not_a)
    n = len(pa)
    if n == 0:
        return dict.fromkeys(["eval/acc1", "eval/acc2", "eval/cl", "eval/cs", "eval/rss"])
    acc1 = sum(pa) / n  # (1/N) Σ P(a_i)
    acc2 = (sum(pab) + sum(pnab)) / n  # (1/N) Σ [P(a)P(b|a) + (1−P(a))P(b|¬a)]
    return {
        "eval/acc1": acc1,
        "eval/acc2": acc2,
        "eval/cl": ratio(sum(pab), sum(pa)),  # Σ P(a)P(b|a) / Σ P(a)
        "eval/cs": ratio(sum(pnab), n - sum(pa)),  # Σ (1−P(a))P(b|¬a) / Σ (1−P(a))
        "eval/rss": ratio(acc2 - acc1**2, 2 * acc1 * (1 - acc1)),  # 0.5 = no change
    }


# ----------------------------------------------------------------------------------- sampling


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 − C(n−c, k) / C(n, k), for n samples with c correct."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def answer_key(answer: str) -> str:
    """What makes two answers "the same" for voting and deduplication: the string, spaces removed."""
    return "".join(str(answer).split())


def vote(answers: Sequence[str | None]) -> int | None:
    """Index of the majority answer: answers compared by `answer_key`, ties to the answer seen
    first, None (no answer) never votes. None when no sample has an answer."""
    keys = [answer_key(a) if a is not None else None for a in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    winner = next(k for k in counts if counts[k] == best)  # Counter keeps first-seen order
    return keys.index(winner)


def majority_correct(samples: Sequence[Record]) -> bool:
    """Whether the majority vote over the final answers of `samples` is correct (see `vote`)."""
    winner = vote([r["attempts"][-1].get("answer") for r in samples])
    return winner is not None and _final_ok(samples[winner])


def sampling_metrics(records: Sequence[Record]) -> Metrics:
    """eval/maj@k and eval/pass@k on final answers, for k = 1, 2, 4, ... up to and including the
    smallest number of samples any problem has; nothing when every problem has one sample."""
    groups = [sorted(g, key=lambda r: r.get("sample", 0)) for g in group_by_problem(records).values()]
    if not groups:
        return {}
    n_min = min(map(len, groups))
    if n_min < 2:
        return {}
    ks = sorted({2**e for e in range(int(math.log2(n_min)) + 1)} | {n_min})
    out: Metrics = {}
    for k in ks:
        out[f"eval/maj@{k}"] = sum(majority_correct(g[:k]) for g in groups) / len(groups)
        out[f"eval/pass@{k}"] = sum(pass_at_k(len(g), sum(map(_final_ok, g)), k) for g in groups) / len(groups)
    return out


# ----------------------------------------------------------------------------------- all together

FAMILIES: dict[str, Callable[[Sequence[Record]], Metrics]] = {
    "answers": answer_metrics,
    "verification": verification_metrics,
    "failures": failure_metrics,
    "loop": loop_metrics,
    "confidence_critique": confidence_critique_metrics,
    "sampling": sampling_metrics,
    "selective": selective_metrics,
}


def all_metrics(records: Sequence[Record]) -> Metrics:
    out: Metrics = {}
    for family in FAMILIES.values():
        out.update(family(records))
    return out


def compute_metrics(records: Sequence[Record]) -> dict[str, Any]:
    """{"overall": metrics, "by_level": {level: metrics}, "by_subject": {subject: metrics},
    "counts": {...}}; the breakdowns are present when the records carry level / subject."""
    out: dict[str, Any] = {
        "overall": all_metrics(records),
        "counts": {
            "trajectories": len(records),
            "problems": len(group_by_problem(records)),
            "attempts": sum(len(r["attempts"]) for r in records),
            "verifications": sum(a.get("verdict") is not None for r in records for a in r["attempts"]),
        },
    }
    curve = risk_coverage_curve(records)
    if curve:
        out["risk_coverage"] = curve
    for field, name in (("level", "by_level"), ("subject", "by_subject")):
        groups: dict[str, list[Record]] = defaultdict(list)
        for r in records:
            if r.get(field) is not None:
                groups[str(r[field])].append(r)
        if groups:
            keys = sorted(groups, key=lambda s: (0, int(s)) if s.lstrip("-").isdigit() else (1, s))
            out[name] = {key: all_metrics(groups[key]) for key in keys}
    return out


# ----------------------------------------------------------------------------------- reading


def check_trajectory(r: Record) -> str | None:
    """What is wrong with a trajectory record, or None."""
    for field in ("id", "attempts", "tokens", "truncated"):
        if field not in r:
            return f"missing field {field!r}"
    if not isinstance(r["attempts"], list) or not r["attempts"]:
        return "'attempts' must be a non-empty list"
    for j, a in enumerate(r["attempts"]):
        if not isinstance(a, dict) or not isinstance(a.get("grade"), str) or a["grade"] not in GRADES:
            return f"attempt {j}: 'grade' must be one of {sorted(GRADES)}"
        if not isinstance(a.get("verdict"), (str, type(None))) or a.get("verdict") not in VERDICTS:
            return f"attempt {j}: 'verdict' must be correct, incorrect, unparsable or null"
    if not isinstance(r["tokens"], int) or isinstance(r["tokens"], bool) or r["tokens"] < 0:
        return "'tokens' must be a non-negative integer"
    if not isinstance(r["truncated"], bool):
        return "'truncated' must be true or false"
    if not isinstance(r.get("sample", 0), int):
        return "'sample' must be an integer"
    c = r.get("certainty")
    if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 <= c <= 1):
        return "'certainty' must be a number in [0, 1] or null"
    if "votes" in r and not (isinstance(r["votes"], list) and all(v is None or isinstance(v, str) for v in r["votes"])):
        return "'votes' must be a list of answers (strings or null)"
    return actions_problem(r["actions"]) if "actions" in r else None


def load_trajectories(path: str | os.PathLike) -> list[Record]:
    records = []
    for lineno, r in iter_jsonl(path):
        problem = check_trajectory(r)
        if problem:
            raise DataError(f"{path}:{lineno}: not a trajectory record: {problem}")
        records.append(r)
    return records


# ----------------------------------------------------------------------------------- printing


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def metrics_table(result: dict[str, Any]) -> str:
    """A plain-text table: one row per metric, a column overall and one per level when present."""
    columns = [("overall", result["overall"])]
    columns += [(f"level {k}", m) for k, m in result.get("by_level", {}).items()]
    names = list(result["overall"])
    width = max(map(len, names)) + 2
    lines = ["".ljust(width) + "".join(title.rjust(10) for title, _ in columns)]
    for name in names:
        lines.append(name.ljust(width) + "".join(_fmt(m.get(name)).rjust(10) for _, m in columns))
    counts = result["counts"]
    lines.append(f"({counts['trajectories']} trajectories of {counts['problems']} problems, "
                 f"{counts['attempts']} attempts, {counts['verifications']} verifications)")
    return "\n".join(lines)
