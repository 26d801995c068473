"""R-Tuning, refusal-aware instruction tuning (Zhang et al. 2024, "R-Tuning: Instructing Large
Language Models to Say 'I Don't Know'"), on the model's own graded samples.

A problem is "sure" when the share of its gradable samples that are right is at least `threshold`,
else "unsure". Gradable: graded correct or incorrect, or without an answer (the model gave none: not
right); an answer the grader could not check (unverifiable) is left out. Each problem gives one SFT record whose completion is
an answer followed by a certainty statement line:

    a right sample (seeded choice)   trained           the problem has one
    the first sample                 context only      it has none (its text is not trained)
    "\\n\\nI am sure." / "\\n\\nI am unsure."  trained

At inference the loop reads a statement written after the final answer into the record's
`certainty` (1.0 sure, 0.0 unsure; `stated_certainty`), which selective.py's "stated" signal reads.
[Departures from the paper: its completion is the gold answer, here a right sample of the model's
own (the model keeps its way of writing; a problem no sample solves has no such text, so its first
sample is shown as context and only the statement is trained); "sure" is by the share of right
samples rather than one greedy answer's match, and the statement follows the answer directly,
without the paper's "Are you sure ...?" question.]
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from s2r.metrics import group_by_problem
from s2r.methods.cct import problem_meta
from s2r.records import SFTRecord

SURE = "I am sure."
UNSURE = "I am unsure."
SEPARATOR = "\n\n"  # between the answer and the statement
_STATEMENT = re.compile(rf"^[ \t]*({re.escape(SURE)}|{re.escape(UNSURE)})[ \t]*$", re.MULTILINE)
GRADABLE = ("correct", "incorrect")


def r_tuning_records(attempts: Sequence[dict], threshold: float = 0.5,
                     seed: int = 0) -> tuple[list[dict], dict[str, int]]:
    """(SFT records, counts of sure / unsure problems and problems without a gradable sample, left
    out) from sampled first attempts (`s2r sample` records). See the module docstring.

    p1: samples right, wrong, right (2/3 ≥ 0.5) -> a right text + "\\n\\nI am sure.", all trained
    p2: wrong, wrong -> "wrong text" context, "\\n\\nI am unsure." trained: spans [[len("wrong text"), end]]
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"the threshold is a share of right samples, in [0, 1], not {threshold}")
    records, counts = [], {"sure": 0, "unsure": 0, "problems_without_a_gradable_sample": 0}
    for (bench, pid), group in group_by_problem(attempts).items():
        group = sorted(group, key=lambda r: r.get("sample", 0))
        grades = [r["attempts"][0]["grade"] for r in group]
        gradable = [g for r, g in zip(group, grades) if g in GRADABLE or r["attempts"][0]["answer"] is None]
        if not gradable:
            counts["problems_without_a_gradable_sample"] += 1
            continue
        right = [r for r, g in zip(group, grades) if g == "correct"]
        share = len(right) / len(gradable)
        sure = share >= threshold
        text = (random.Random(f"{seed}|{bench}|{pid}").choice(right) if right else group[0])["text"].strip()
        completion = f"{text}{SEPARATOR}{SURE if sure else UNSURE}"
        start = 0 if right else len(text)  # a wrong text is context: only the statement is trained
        records.append(SFTRecord(completion, [[start, len(completion)]], problem=group[0]["problem"],
                                 meta=problem_meta(group[0]) | {"kind": "r-tuning", "rtuning": "sure" if sure else "unsure",
                                                                "right_share": share}).dump())
        counts["sure" if sure else "unsure"] += 1
    return records, counts


def stated_certainty(text: str) -> float | None:
    r"""The certainty a text states after its final answer: 1.0 for a line "I am sure.", 0.0 for
    "I am unsure." (the last such line after the last \boxed), None when there is none.

    >>> stated_certainty("x = 3, \\boxed{3}\n\nI am unsure.")
    0.0
    >>> stated_certainty("I am sure.\n\\boxed{3}") is None
    True
    """
    boxed = text.rfind("\\boxed")
    found = _STATEMENT.findall(text, max(0, boxed))
    if not found:
        return None
    return 1.0 if found[-1] == SURE else 0.0
