"""CCT, the confidence/critique transform of SFT data ("Confidence v.s. Critique", Yang et al. 2025).

The model answers, then is asked to review its answer (the `intrinsic` strategy's second turn). CCT
trains that second turn from the model's own sampled attempts:

    first answer right  ->  the target keeps it         (confidence: do not break what is right)
    first answer wrong  ->  the target is a right one   (critique: fix what is wrong)

Per problem, every distinct first answer among its K samples becomes one record; a wrong one's
target is a right sample of the same problem (seeded choice), and a problem with no right sample
gives no critique records. Records are SFT records whose prompt is a conversation (`messages`):

    {"messages": [user: problem, assistant: attempt 1, user: review prompt],
     "completion": attempt 2, "spans": [[0, len(completion)]], "cct": "confidence" | "critique", ...}
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from s2r.metrics import answer_key, group_by_problem
from s2r.records import SFTRecord

PROBLEM_FIELDS = ("benchmark", "id", "problem", "gold", "level", "subject")


def problem_meta(r: dict) -> dict:
    """The problem's fields an SFT record carries for reading (gold under `gold`; None when absent)."""
    return {k: r.get(k) for k in PROBLEM_FIELDS if k != "problem"}


def _first(record: dict) -> tuple[str | None, bool]:
    a = record["attempts"][0]
    return a["answer"], a["grade"] == "correct"


def cct_records(attempts: Sequence[dict], review_prompt: str, seed: int = 0) -> tuple[list[dict], dict[str, int]]:
    """(SFT records, counts of confidence / critique records and problems without a right sample)
    from sampled first attempts (`s2r sample` records). See the module docstring."""
    records, counts = [], {"confidence": 0, "critique": 0, "problems_without_a_right_sample": 0}
    for (bench, pid), group in group_by_problem(attempts).items():
        group = sorted(group, key=lambda r: r.get("sample", 0))
        right = [r for r in group if _first(r)[1]]
        rng = random.Random(f"{seed}|{bench}|{pid}")
        seen = set()
        if not right:
            counts["problems_without_a_right_sample"] += 1
        for r in group:
            answer, correct = _first(r)
            if answer is None or answer_key(answer) in seen or not (correct or right):
                continue
            seen.add(answer_key(answer))
            kind = "confidence" if correct else "critique"
            target = (r if correct else rng.choice(right))["text"].strip()
            messages = [{"role": "user", "content": r["problem"]}, {"role": "assistant", "content": r["text"].strip()},
                        {"role": "user", "content": review_prompt}]
            records.append(SFTRecord(target, [[0, len(target)]], problem=r["problem"], messages=messages,
                                     meta=problem_meta(r) | {"kind": "cct", "cct": kind}).dump())
            counts[kind] += 1
    return records, counts
