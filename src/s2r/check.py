"""`s2r check IN.jsonl --out OUT.jsonl`: grade a file of (response, gold) records with THE grader.

Each output line is the input record plus `verdict`, `pred` and `reason`. A response in the
trajectory format is graded on its final attempt's answer (docs/method.md §1); a plain response on its
final answer. The output lands atomically; a killed run resumes where it stopped.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass

from s2r.config import arg
from s2r.format import parse
from s2r.grader import Grader
from s2r.jsonl import DataError, ResumableJsonl, iter_jsonl
from s2r.progress import Progress


@dataclass
class CheckConfig:
    input: str = arg(help="JSONL file of records with a response and a gold answer", positional=True)
    out: str = arg(help="output JSONL: each input record plus verdict, pred and reason")
    response_field: str = arg("response", help="field that holds the model's response")
    gold_field: str = arg("gold", help="field that holds the gold answer")
    timeout: float = arg(2.0, help="hard time limit per comparison, in seconds")
    workers: int = arg(0, help="grading processes (0 = one per CPU core)")
    max_answer_chars: int = arg(1000, help="longer extracted (or gold) answers are unverifiable without parsing")
    chunk: int = arg(200, help="records graded between two flushes of the output")


def _read_inputs(cfg: CheckConfig) -> list[dict]:
    records = []
    for lineno, r in iter_jsonl(cfg.input):
        for field in (cfg.response_field, cfg.gold_field):
            if not isinstance(r.get(field), (str, int, float)) or isinstance(r.get(field), bool):
                raise DataError(f"{cfg.input}:{lineno}: field {field!r} is missing or not text")
        records.append(r)
    return records


def summarize(records: list[dict]) -> str:
    n = len(records)
    verdicts = Counter(r["verdict"] for r in records)
    parts = [f"{v} {verdicts[v]} ({verdicts[v] / n:.1%})" for v in ("correct", "incorrect", "unverifiable") if n]
    lines = [f"{n} records: " + ", ".join(parts)]
    reasons = Counter(r["reason"] for r in records if r["verdict"] == "unverifiable")
    if reasons:
        lines.append("  unverifiable: " + ", ".join(f"{why} ×{k}" for why, k in reasons.most_common()))
    return "\n".join(lines)


def run_check(cfg: CheckConfig) -> dict:
    inputs = _read_inputs(cfg)
    start = time.monotonic()
    with ResumableJsonl(cfg.out) as out:
        done = len(out.records)
        for j, old in enumerate(out.records):  # resuming: the output must belong to this input
            key = (cfg.response_field, cfg.gold_field)
            if j >= len(inputs) or [old.get(k) for k in key] != [inputs[j][k] for k in key]:
                raise DataError(f"{cfg.out}: record {j + 1} does not match {cfg.input}; "
                                "it was written for another input (remove it or choose another --out)")
        if done:
            print(f"resuming: {done} of {len(inputs)} records already graded", file=sys.stderr)
        bar = Progress("grading", len(inputs), initial=done, unit="record")
        with Grader(timeout=cfg.timeout, workers=cfg.workers or None, max_answer_chars=cfg.max_answer_chars) as grader:
            for lo in range(done, len(inputs), cfg.chunk):
                chunk = inputs[lo : lo + cfg.chunk]
                items = [(parse(str(r[cfg.response_field])).final_answer, str(r[cfg.gold_field])) for r in chunk]
                grades = grader.grade_answers(items, on_result=lambda i, g: bar.update(1))
                out.extend({**r, **g.as_dict()} for r, g in zip(chunk, grades))
        bar.close()
        out.finish()
        records = out.records
    print(summarize(records), file=sys.stderr)
    print(f"graded {len(records) - done} records in {time.monotonic() - start:.1f}s -> {cfg.out}", file=sys.stderr)
    return dict(Counter(r["verdict"] for r in records))
