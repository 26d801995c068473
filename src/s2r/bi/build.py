"""`s2r build`: behaviour-initialisation SFT records from verified answers (docs/method.md §2, steps 3–4).

(`--kind cct | mistake-tuning | r-tuning` builds the SFT records of S²R's relatives instead, from
`s2r sample` output: methods/, `build_relative`.)

Per problem: keep the verifications that agree with the grader; draw one verified-correct attempt
and m distinct verified-wrong answers, where m grows with the problem's difficulty (its number of
wrong samples w among K, `max_wrong[w]`, limited by the wrong answers available); render

    [wrong attempt, "incorrect" verification]^m + [correct attempt, "correct" verification]

Problems without a verified-correct attempt are dropped, and each problem is kept with probability
`keep[w]`. Draws are seeded per problem, so `--kind plain` (the correct attempt alone: the paper's
"original-solution SFT" control) picks the same problems and the same correct attempts.

Each record carries the `completion` text and the character `spans` to train (`s2r sft` adds the
closing EOS): every verification with its marker, and the final attempt with its retry marker —
never a wrong attempt. For the three-attempt trajectory in tests/test_build.py:

    A1 ⟦\\n\\nWait, let me recheck my solution.\\nV1⟧ ⟦\\n\\nLet me try again.\\nA2 ...⟧ — only ⟦…⟧ trained.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from dataclasses import dataclass

from s2r.config import arg
from s2r.format import CORRECT, SOLVE, VERIFY, MarkerFields, TrajectoryFormat, parse, render
from s2r.jsonl import DataError, iter_jsonl, wrong_field, write_jsonl_atomic
from s2r.prompts import DEFAULT_REVIEW
from s2r.records import SFTRecord

KINDS = ("s2r", "plain")
RELATIVES = ("cct", "mistake-tuning", "r-tuning")  # S²R's relatives: records from sampled attempts (methods/)
VERIFIED_FIELDS = {"benchmark": str, "id": (str, int), "problem": str, "gold": str, "grade": str, "agrees": bool,
                   "wrong": int, "solution": str, "verification": str}


class NoRecords(ValueError):
    """No problem yields a record."""


@dataclass
class BuildConfig(MarkerFields):
    verified: str = arg(help="verified JSONL (from `s2r verify`); for the kinds cct, mistake-tuning and r-tuning, "
                             "sampled attempts (from `s2r sample`)", positional=True)
    out: str = arg(help="SFT records JSONL to write")
    kind: str = arg("s2r", help="s2r (self-verify / self-correct trajectories), plain (the correct attempt only), or a "
                                "relative of S²R: cct, mistake-tuning, r-tuning (docs/cct.md, mistake-tuning.md, r-tuning.md)")
    max_wrong: list[int] = arg([0, 1, 2, 2, 3, 3], help="most wrong attempts per trajectory, by the number of wrong samples w (index w; the last entry covers more)")
    keep: list[float] = arg([1.0], help="probability to keep a problem, by w (index w; the last entry covers more)")
    seed: int = arg(0, help="seed of the draws")
    review_prompt: str = arg(DEFAULT_REVIEW, help="cct: the review turn the records' second answer follows")
    threshold: float = arg(0.5, help="r-tuning: a problem is 'sure' when this share of its graded samples is right")


def trained_spans(text: str, fmt: TrajectoryFormat) -> list[tuple[int, int]]:
    """Character spans to train in a rendered trajectory: every verification and the final attempt."""
    return spans_to_train(parse(text, fmt).actions)


def spans_to_train(actions) -> list[tuple[int, int]]:
    """The spans of every verification and of the final attempt among a trajectory's actions."""
    last_solve = max(i for i, a in enumerate(actions) if a.kind == SOLVE)
    return [(a.start, a.end) for i, a in enumerate(actions) if a.kind == VERIFY or i == last_solve]


def _at(values: list, w: int):
    return values[min(w, len(values) - 1)]


def build_record(group: list[dict], cfg: BuildConfig) -> dict | str:
    """The SFT record of one problem's verified answers, or why it is dropped."""
    first = group[0]
    rng = random.Random(f"{cfg.seed}|{first['benchmark']}|{first['id']}")
    correct = [r for r in group if r["grade"] == CORRECT and r["agrees"]]
    wrong = [r for r in group if r["grade"] == "incorrect" and r["agrees"]]
    w = first["wrong"]
    if rng.random() >= _at(cfg.keep, w):
        return "dropped by keep"
    if not correct:
        return "no verified-correct attempt"
    chosen = rng.choice(correct)
    wrongs = rng.sample(wrong, min(_at(cfg.max_wrong, w), len(wrong)))
    meta = {k: first.get(k) for k in ("benchmark", "id", "gold", "level", "subject")}
    if cfg.kind == "plain":
        return SFTRecord(chosen["solution"], [[0, len(chosen["solution"])]], problem=first["problem"],
                         meta=meta | {"kind": "plain", "wrong_attempts": 0}).dump()
    text = render([r["solution"] for r in wrongs + [chosen]], [r["verification"] for r in wrongs + [chosen]], cfg.fmt)
    parsed = parse(text, cfg.fmt)  # the text just rendered: its markers are where render put them, or a part holds one
    if len(parsed.actions) != 2 * (len(wrongs) + 1) or not parsed.alternates:
        return "a text contains a marker line"
    return SFTRecord(text, [list(s) for s in spans_to_train(parsed.actions)], problem=first["problem"],
                     meta=meta | {"kind": "s2r", "wrong_attempts": len(wrongs)}).dump()


def build_relative(cfg: BuildConfig) -> list[dict]:
    """The SFT records of one of S²R's relatives (RELATIVES) from `s2r sample` output."""
    from s2r.methods.cct import cct_records
    from s2r.methods.mistakes import mistake_tuning_records
    from s2r.methods.rtuning import r_tuning_records
    from s2r.methods.samples import load_samples

    attempts = load_samples(cfg.verified)
    if cfg.kind == "cct":
        records, counts = cct_records(attempts, cfg.review_prompt, cfg.seed)
    elif cfg.kind == "mistake-tuning":
        records, counts = mistake_tuning_records(attempts)
    else:
        records, counts = r_tuning_records(attempts, cfg.threshold, cfg.seed)
    summary = f"{len(attempts)} attempts -> {len(records)} {cfg.kind} records: " + ", ".join(
        f"{n} {what.replace('_', ' ')}" for what, n in counts.items())
    if not records:
        raise NoRecords(f"{cfg.verified}: no SFT records ({summary})")
    write_jsonl_atomic(cfg.out, records)
    print(summary)
    print(f"wrote {cfg.out}", file=sys.stderr)
    return records


def run_build(cfg: BuildConfig) -> list[dict]:
    if cfg.kind in RELATIVES:
        return build_relative(cfg)
    if cfg.kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS + RELATIVES)}, not {cfg.kind!r}")
    groups: dict[tuple, list[dict]] = {}
    for lineno, r in iter_jsonl(cfg.verified):
        problem = wrong_field(r, VERIFIED_FIELDS)
        if problem:
            raise DataError(f"{cfg.verified}:{lineno}: not a verified record (`s2r verify`): {problem}")
        groups.setdefault((r["benchmark"], str(r["id"])), []).append(r)
    records, dropped = [], Counter()
    for group in groups.values():
        result = build_record(group, cfg)
        if isinstance(result, str):
            dropped[result] += 1
        else:
            records.append(result)
    summary = f"{len(groups)} problems -> {len(records)} {cfg.kind} records" + "".join(f"; {n} {why}" for why, n in dropped.items())
    if not records:
        raise NoRecords(f"{cfg.verified}: no SFT records ({summary}): no problem has a verified-correct attempt; "
                        "did `s2r sample` score 0% (a wrong prompt template)?")
    write_jsonl_atomic(cfg.out, records)
    print(summary)
    shapes = Counter(r["wrong_attempts"] for r in records)
    for m in sorted(shapes):
        shape = " + ".join(["wrong·incorrect"] * m + ["correct·correct"]) if cfg.kind == "s2r" else "correct attempt"
        print(f"  {shapes[m]:>6}  {shape:<70} {'█' * round(40 * shapes[m] / len(records))}")
    print(f"wrote {cfg.out}", file=sys.stderr)
    return records
