"""Reading `s2r sample` output (graded first attempts), the input of every relative's transform."""

from __future__ import annotations

from s2r.jsonl import DataError, iter_jsonl, wrong_field
from s2r.metrics import check_trajectory

SAMPLE_FIELDS = {"benchmark": str, "id": (str, int), "problem": str, "gold": str, "text": str}


def load_samples(path: str) -> list[dict]:
    """The records of an `s2r sample` file; a DataError naming path:line on a record that is not one."""
    records = []
    for lineno, r in iter_jsonl(path):
        problem = check_trajectory(r) or wrong_field(r, SAMPLE_FIELDS)
        if problem:
            raise DataError(f"{path}:{lineno}: not a sampled attempt (expected the output of `s2r sample`): {problem}")
        records.append(r)
    return records
