"""Tasks (task.py: the interface) and the one loader every command's `--data` goes through.

`--data NAME[:SPLIT]` names a task of TASKS (the math benchmarks, and `arith`, the embedded task:
`arith:val:7` is its split `val` of task seed 7) or a JSONL file of problems; with `--task
FILE.py:CLASS` (or `MODULE:CLASS`) it names a split of that task. `DataFields` holds the options
every such command shares.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from s2r.config import arg
from s2r.tasks import arith
from s2r.tasks.benchmarks import BENCHMARKS, Benchmark, JsonlProblems, ProblemFields
from s2r.tasks.task import Problem, Task, checked_problems, load_task, same_grading

# name -> the task, made for a data directory (where the benchmarks' files are)
TASKS: dict[str, Callable[[str | os.PathLike | None], Task]] = {
    "arith": lambda data_dir: arith.ArithTask(),
    **{name: partial(Benchmark, name, source) for name, source in BENCHMARKS.items()},
}


@dataclass(frozen=True)
class Dataset:
    name: str  # the `benchmark` of its records: the --data text, a file's stem, or TASK:SPLIT for --task
    task: Task
    problems: list[Problem]


def load_dataset(data: str, *, task: Task | None = None, data_dir: str | os.PathLike | None = None,
                 fields: ProblemFields | None = None, limit: int | None = None) -> Dataset:
    """The problems `data` names: a split of `task` when given, else a task of TASKS (`math500`,
    `gsm8k:train`, `arith:train`) or a JSONL file."""
    if task is not None:
        name, split = f"{task.name}:{data}", data
    else:
        base, _, split = data.partition(":")
        if base in TASKS:
            name, task = data, TASKS[base](data_dir)
        elif Path(data).is_file():
            name, task = Path(data).stem, JsonlProblems(Path(data), fields)
        else:
            raise ValueError(f"unknown benchmark {data!r}: not a file, and not one of {', '.join(TASKS)}")
        split = split or task.default_split
    problems = checked_problems(task.problems(split), f"task {task.name}, split {split}")
    return Dataset(name, task, problems[:limit] if limit is not None else problems)


def load_problems(name: str, *, data_dir: str | os.PathLike | None = None, fields: ProblemFields | None = None,
                  limit: int | None = None) -> list[Problem]:
    """Problems of a benchmark (`"math500"`, `"gsm8k:train"`), of the embedded task (`"arith"`,
    `"arith:train"`, `"arith:val:7"`: split, then task seed) or of a JSONL file path."""
    return load_dataset(name, data_dir=data_dir, fields=fields, limit=limit).problems


def grading_task(datasets: list[Dataset]) -> Task:
    """The task whose extract and grade score a run's attempts: all its datasets must share one."""
    first = datasets[0].task
    for d in datasets[1:]:
        if not same_grading(first, d.task):
            raise ValueError(f"{datasets[0].name} and {d.name} read or grade answers differently: run them one at a time")
    return first


FIELD_OPTIONS = ("problem_field", "gold_field", "id_field", "level_field", "subject_field")


@dataclass(kw_only=True)
class DataFields:
    """The data options of every command that takes `--data`."""

    task: str | None = arg(None, help="your own task, FILE.py:CLASS or MODULE:CLASS (docs/tasks.md); --data then "
                                      "names its splits")
    limit: int | None = arg(None, help="first N problems of each set")
    data_dir: str | None = arg(None, help="benchmark data directory (default: $S2R_DATA_DIR or ../shared/data)")
    problem_field: str = arg("problem", help="JSONL files: field with the problem text")
    gold_field: str | None = arg(None, help="JSONL files: field with the gold answer, or a solution with \\boxed{} "
                                            "(default: gold, else answer)")
    id_field: str | None = arg(None, help="JSONL files: field with the id (default: id, else the line number)")
    level_field: str | None = arg(None, help="JSONL files: field with the difficulty level (default: level)")
    subject_field: str | None = arg(None, help="JSONL files: field with the subject (default: subject)")

    @property
    def fields(self) -> ProblemFields:
        return ProblemFields(self.problem_field, self.gold_field, self.id_field, self.level_field, self.subject_field)

    def datasets(self, names: list[str] | None, default: str) -> list[Dataset]:
        """The data sets `names` name (default: `default`; with --task, its default split)."""
        task = load_task(self.task) if self.task else None
        names = names or [task.default_split if task else default]
        return [load_dataset(n, task=task, data_dir=self.data_dir, fields=self.fields, limit=self.limit) for n in names]

    def loading_options(self) -> tuple[str, ...]:
        """The fields a trained model's key leaves out: what they change is in the data's digest
        (--task stays in, when given: it grades)."""
        return FIELD_OPTIONS + (() if self.task else ("task",))


__all__ = ["BENCHMARKS", "TASKS", "DataFields", "Dataset", "Problem", "ProblemFields", "Task", "arith", "grading_task",
           "load_dataset", "load_problems", "load_task"]
