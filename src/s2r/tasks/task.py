"""The Task interface: where problems come from, how an attempt's answer is read, how it is graded.

    from s2r.tasks import Task

    class Reverse(Task):
        name = "reverse"
        def problems(self, split):                   # each {"id", "problem", "gold", "level"?, "subject"?}
            return [{"id": w, "problem": f"Reverse {w}.", "gold": w[::-1]} for w in ("abc", "hello")]
        def extract(self, text):                     # default: the last \\boxed{} (grader.extract_answer)
            return text.strip().splitlines()[-1] if text.strip() else None
        def grade(self, answer, gold):               # default: THE math grader, with its timeouts
            return "correct" if answer == gold else "incorrect"

`s2r solve|eval|sample|rl|offline|data --task path/to/file.py:Reverse --data test` (or
`module:Reverse`). The math benchmarks and the embedded `arith` task are tasks too (tasks/__init__.py,
TASKS). `teacher(problem, answer)` may write a programmatic verification (`s2r verify --teacher task`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from s2r.grader import CORRECT, INCORRECT, UNVERIFIABLE, Grade, Grader, extract_answer
from s2r.jsonl import DataError

VERDICTS = (CORRECT, INCORRECT, UNVERIFIABLE)


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    gold: str
    level: int | None = None
    subject: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class Task:
    """A source of problems with its answer extraction and grading; override what differs."""

    name: str = "task"
    default_split: str = "test"  # the split `--data` names when it names none

    def problems(self, split: str) -> list[dict]:
        """The problems of a split: dicts with "id", "problem", "gold" (and "level", "subject")."""
        raise NotImplementedError(f"task {self.name!r} defines no problems()")

    def extract(self, text: str) -> str | None:
        """The final answer of one attempt's text, or None when it gives none."""
        return extract_answer(text)

    def grade(self, answer: str | None, gold: str) -> str:
        """"correct", "incorrect" or "unverifiable" for one extracted answer (one at a time; the
        pipeline grades in batches through grade_many)."""
        with Grader() as grader:
            return grader.grade_answers([(answer, gold)])[0].verdict

    def teacher(self, problem: str, answer: str) -> str | None:
        """A verification of `answer` ending in the format's verdict sentence, or None (no teacher)."""
        return None

    def grade_many(self, pairs: Sequence[tuple[str | None, str]], grader: Grader) -> list[Grade]:
        """Grades of (answer, gold) pairs: the math grader's pool by default, else this task's
        `grade` per pair. A `grade` that raises or returns something else is a grader failure
        (unverifiable, reason "grader error: ..."): counted, never scored as wrong."""
        if type(self).grade is Task.grade:
            return grader.grade_answers(pairs)
        return [own_grade(self, answer, gold) for answer, gold in pairs]

    def __repr__(self) -> str:  # part of the settings a trajectories file records
        return f"{type(self).__name__}({self.name})"


def own_grade(task: Task, answer: str | None, gold: str) -> Grade:
    if answer is None:
        return Grade(UNVERIFIABLE, None, "no answer found")
    try:
        verdict = task.grade(answer, gold)
    except Exception as e:  # the task's own code failed: the answer is not judged
        return Grade(UNVERIFIABLE, answer, f"grader error: {type(e).__name__}: {e}"[:300])
    if verdict not in VERDICTS:
        return Grade(UNVERIFIABLE, answer, f"grader error: grade() returned {verdict!r}"[:300])
    return Grade(verdict, answer, {CORRECT: "match", INCORRECT: "mismatch"}.get(verdict, f"{task.name} cannot grade it"))


def same_grading(a: Task, b: Task) -> bool:
    """Whether two tasks read and grade answers the same way (both by the defaults, or one task)."""
    return a is b or all(getattr(type(a), m) is getattr(Task, m) is getattr(type(b), m) for m in ("extract", "grade", "grade_many"))


def checked_problems(rows: Sequence[dict], where: str) -> list[Problem]:
    """Problems of a task's rows: every row has a non-empty problem and gold and a new id."""
    problems, seen = [], set()
    for i, row in enumerate(rows):
        try:
            p = Problem(id=str(row["id"]), problem=row["problem"], gold=str(row["gold"]), level=row.get("level"),
                        subject=row.get("subject"))
        except (KeyError, TypeError, AttributeError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise DataError(f"{where}: problem {i + 1}: {what}") from None
        if not isinstance(p.problem, str) or not p.problem.strip() or not p.gold:
            raise DataError(f"{where}: problem {i + 1} ({p.id!r}): empty problem text or gold answer")
        if p.id in seen:
            raise DataError(f"{where}: problem {i + 1}: duplicate id {p.id!r}")
        seen.add(p.id)
        problems.append(p)
    return problems


def load_task(spec: str) -> Task:
    """A task instance from `path/to/file.py:Class` or `package.module:Class`."""
    target, _, cls_name = spec.rpartition(":")
    if not target or not cls_name:
        raise ValueError(f"--task must be FILE.py:CLASS or MODULE:CLASS, not {spec!r}")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise FileNotFoundError(f"--task {spec}: no file {path}")
        name = f"s2r_user_task_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ValueError(f"--task {spec}: cannot import {target}: {e}") from None
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ValueError(f"--task {spec}: {cls_name} is not a subclass of s2r.tasks.Task in {target}")
    return cls()
