"""Benchmark tasks: every source becomes a list of `Problem(id, problem, gold, level?, subject?)`.

A benchmark is named by its folder in the data directory (`math500`, `gsm8k:train` for another
split; `Benchmark`) or by the path of a JSONL file (`JsonlProblems`: its field names are
`ProblemFields`, and files s2r writes need none). Gold answers are normalised here, once, to the form
the grader compares (see each `_row_*` function and docs/data.md).

The data directory is, in order: the `data_dir` argument (`--data-dir`), `$S2R_DATA_DIR`,
`./shared/data`, `../shared/data`, or `shared/data` beside this repository's checkout.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2r.grader import last_boxed
from s2r.jsonl import DataError, has_surrogate, iter_jsonl
from s2r.tasks.task import Problem, Task

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- gold answers

_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")


def number_text(x: Any) -> str:
    """145.0 -> "145", 2.5 -> "2.5", "1,000" -> "1000"; anything else: its stripped text."""
    if isinstance(x, bool):
        raise ValueError(f"not a number: {x!r}")
    if isinstance(x, (int, float)):
        return str(int(x)) if float(x).is_integer() else repr(float(x))
    s = str(x).strip()
    return s.replace(",", "") if _THOUSANDS.match(s) else s


def strip_dollars(s: str) -> str:
    """"$10-4 n$" -> "10-4 n" (only a single pair wrapping the whole answer)."""
    s = s.strip()
    if len(s) >= 2 and s.startswith("$") and s.endswith("$") and "$" not in s[1:-1]:
        return s[1:-1].strip()
    return s


def boxed_gold(solution: str) -> str:
    answer = last_boxed(solution)
    if answer is None:
        raise ValueError("solution has no \\boxed{} answer")
    return answer.strip()


def _level(value: Any) -> int | None:
    m = re.search(r"\d+", str(value)) if value is not None else None
    return int(m.group()) if m else None


# ----------------------------------------------------------------------------------- sources
# Each row function maps (record, line index) to the Problem fields.

Row = Callable[[dict[str, Any], int], dict[str, Any]]


def _row_gsm8k(r, i):  # answer: worked solution whose last line is "#### N"
    return dict(id=str(i), problem=r["question"], gold=number_text(r["answer"].split("####")[-1]))


def _row_math500(r, i):
    return dict(id=r["unique_id"], problem=r["problem"], gold=r["answer"].strip(),
                level=_level(r["level"]), subject=r["subject"])


def _row_math(r, i):  # no answer field: the last \boxed{} of the solution
    return dict(id=str(r.get("idx", i)), problem=r["problem"], gold=boxed_gold(r["solution"]),
                level=_level(r["level"]), subject=r["type"])


def _row_aime24(r, i):
    return dict(id=str(r["id"]), problem=r["problem"], gold=number_text(r["answer"]))


def _row_aime25(r, i):  # one answer is written "336^\circ"
    gold = re.sub(r"\^\s*\{?\\circ\}?$", "", str(r["answer"]).strip())
    return dict(id=str(i), problem=r["question"], gold=number_text(gold))


def _row_amc23(r, i):  # answer stored as a float such as 27.0
    return dict(id=str(r["id"]), problem=r["problem"], gold=number_text(r["answer"]))


def _row_olympiadbench(r, i):
    return dict(id=str(r["id"]), problem=r["question"], gold=strip_dollars(r["final_answer"][0]),
                subject=r.get("subfield"))


def _row_college_math(r, i):
    return dict(id=str(i), problem=r["question"], gold=strip_dollars(r["answer"]), subject=r.get("data_topic"))


def _row_gaokao2023en(r, i):
    return dict(id=str(i), problem=r["question"], gold=strip_dollars(str(r["answer"])))


def _row_minerva_math(r, i):
    return dict(id=str(r.get("idx", i)), problem=r["problem"], gold=boxed_gold(r["solution"]), subject=r.get("type"))


def _row_svamp(r, i):
    return dict(id=r["ID"], problem=f"{r['Body'].strip()} {r['Question'].strip()}", gold=number_text(r["Answer"]),
                subject=r.get("Type"))


def _row_asdiv(r, i):  # "9 (apples)" -> "9"; ~180 answers are words, times or ratios and stay as they are
    return dict(id=str(r.get("idx", i)), problem=f"{r['body'].strip()} {r['question'].strip()}",
                gold=number_text(str(r["answer"]).split(" (")[0]), subject=r.get("solution_type"))


def _row_mawps(r, i):
    return dict(id=str(r.get("idx", i)), problem=r["input"], gold=number_text(r["target"]), subject=r.get("type"))


@dataclass(frozen=True)
class Source:
    files: dict[str, str]  # split -> path relative to the data directory; the first is the default
    row: Row


BENCHMARKS: dict[str, Source] = {
    "gsm8k": Source({"test": "gsm8k/test.jsonl", "train": "gsm8k/train.jsonl"}, _row_gsm8k),
    "math500": Source({"test": "math500/test.jsonl"}, _row_math500),
    "math": Source({"test": "math/test.jsonl"}, _row_math),
    "aime24": Source({"test": "aime24/test.jsonl"}, _row_aime24),
    "aime25": Source({"test": "aime25/test.jsonl"}, _row_aime25),
    "amc23": Source({"test": "amc23/test.jsonl"}, _row_amc23),
    "olympiadbench": Source({"test": "olympiadbench/test.jsonl"}, _row_olympiadbench),
    "college_math": Source({"test": "college_math/test.jsonl"}, _row_college_math),
    "gaokao2023en": Source({"test": "gaokao2023en/test.jsonl"}, _row_gaokao2023en),
    "minerva_math": Source({"test": "minerva_math/test.jsonl"}, _row_minerva_math),
    "svamp": Source({"test": "svamp/test.jsonl"}, _row_svamp),
    "asdiv": Source({"test": "asdiv/test.jsonl"}, _row_asdiv),
    "mawps": Source({"test": "mawps/test.jsonl", "addsub": "mawps/addsub.jsonl",
                     "multiarith": "mawps/multiarith.jsonl", "singleeq": "mawps/singleeq.jsonl",
                     "singleop": "mawps/singleop.jsonl"}, _row_mawps),
}


# ----------------------------------------------------------------------------------- user JSONL


@dataclass(frozen=True)
class ProblemFields:
    """Field names of a JSONL file. `gold` may hold a bare answer, a number, or a solution whose last
    `\\boxed{}` is the answer. A field left None is found by its usual name: the gold answer in `gold`,
    else `answer` (what `s2r data` and `s2r hard` write); the id in `id`, else the line number (from
    1); `level`, `subject`. Records repeated with the same id, problem and gold (the samples of a
    trajectories file) are one problem."""

    problem: str = "problem"
    gold: str | None = None
    id: str | None = None
    level: str | None = None
    subject: str | None = None


def _gold_from_value(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number_text(value)
    if not isinstance(value, str):
        raise ValueError(f"gold answer must be a string or number, got {type(value).__name__}")
    boxed = last_boxed(value)
    return number_text(strip_dollars(boxed if boxed is not None else value))


def _user_row(fields: ProblemFields) -> Row:
    def row(r, i):
        gold = fields.gold or ("gold" if "gold" in r else "answer")
        id_field = fields.id or ("id" if "id" in r else None)
        out = dict(id=str(r[id_field]) if id_field else str(i + 1), problem=r[fields.problem],
                   gold=_gold_from_value(r[gold]))
        level, subject = fields.level or "level", fields.subject or "subject"
        if r.get(level) is not None:
            out["level"] = _level(r[level])
        if r.get(subject) is not None:
            out["subject"] = str(r[subject])
        return out

    return row


# ----------------------------------------------------------------------------------- loading


def data_dir_candidates(explicit: str | os.PathLike | None = None) -> list[Path]:
    if explicit:
        return [Path(explicit)]
    if os.environ.get("S2R_DATA_DIR"):
        return [Path(os.environ["S2R_DATA_DIR"])]
    repo = Path(__file__).resolve().parents[3]  # src/s2r/tasks/benchmarks.py -> the checkout
    return [Path("shared/data"), Path("../shared/data"), repo.parent / "shared" / "data"]


def find_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    tried = data_dir_candidates(explicit)
    for path in tried:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        "benchmark data directory not found (tried: " + ", ".join(str(p) for p in tried)
        + "); pass --data-dir or set S2R_DATA_DIR"
    )


def load_file(path: Path, row: Row) -> list[Problem]:
    """Problems of one file. Records whose gold answer is empty cannot be graded: they are left out
    with a warning that names their lines (gaokao2023en has two)."""
    problems, seen, no_gold = [], {}, []
    for i, (lineno, record) in enumerate(iter_jsonl(path)):
        try:
            p = Problem(**row(record, i))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise DataError(f"{path}:{lineno}: cannot read problem: {what}") from None
        if not isinstance(p.problem, str) or not p.problem.strip():
            raise DataError(f"{path}:{lineno}: the problem must be non-empty text, not {p.problem!r:.40}")
        if has_surrogate(p.problem):
            raise DataError(f"{path}:{lineno}: the problem text holds a lone surrogate (such as \\ud800), which no tokenizer can encode")
        if not p.gold:
            no_gold.append(lineno)
            continue
        if p.id in seen:
            if seen[p.id] == (p.problem, p.gold):  # another sample of the same problem
                continue
            raise DataError(f"{path}:{lineno}: duplicate id {p.id!r}")
        seen[p.id] = (p.problem, p.gold)
        problems.append(p)
    if no_gold:
        log.warning("%s: left out %d problems with an empty gold answer (lines %s)",
                    path, len(no_gold), ", ".join(map(str, no_gold)))
    return problems


class Benchmark(Task):
    """A benchmark of the data directory, graded by the math grader."""

    def __init__(self, name: str, source: Source, data_dir: str | os.PathLike | None = None):
        self.name, self.source, self.data_dir = name, source, data_dir
        self.default_split = next(iter(source.files))

    def problems(self, split: str) -> list[dict]:
        if split not in self.source.files:
            raise ValueError(f"{self.name} has no split {split!r}; splits: {', '.join(self.source.files)}")
        return [p.as_dict() for p in load_file(find_data_dir(self.data_dir) / self.source.files[split], self.source.row)]


class JsonlProblems(Task):
    """A JSONL file of problems (its one split is the file), graded by the math grader."""

    def __init__(self, path: Path, fields: ProblemFields | None = None):
        self.path, self.fields = path, fields or ProblemFields()
        self.name = self.default_split = path.stem

    def problems(self, split: str) -> list[dict]:
        return [p.as_dict() for p in load_file(self.path, _user_row(self.fields))]
