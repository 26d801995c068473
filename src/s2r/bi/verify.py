"""`s2r verify`: one teacher verification per distinct (problem, answer) of a sampled-attempts file.

Teachers (docs/method.md §2, step 2):

- `arith`: the embedded task's programmatic verifiers (`--style confirmative` or `problem-solving`).
- `task`: a task's own `teacher(problem, answer)` (tasks/task.py): `--task FILE.py:CLASS`'s, else
  the task each record's benchmark names (`arith:train` -> arith, whose teacher is its confirmative check).
- `http`: any LLM behind an OpenAI-compatible endpoint, asked by `CONFIRMATIVE_PROMPT` (or
  `PROBLEM_SOLVING_PROMPT`, or your own `--prompt-file` with {problem}, {answer}, {solution},
  {correct_sentence} and {incorrect_sentence}) to check the answer and end with a verdict sentence.

Every verification lands in a persistent cache (`--cache`, JSONL) keyed by teacher, style, problem and
answer, so a re-run, or a later run on overlapping data, asks the teacher nothing twice. Endpoint
failures are not written and not cached: they are counted, reported, and retried by the next run.
An output written from other attempts or with another teacher, style or format (OUT.settings.json) is
rebuilt, from the cache.

Output: one record per distinct (problem, answer): the problem's fields, the answer, its grade, one
attempt text that gave it (`solution`), how many of the problem's `samples` gave it (`count`), how
many samples were not correct (`wrong`), the `verification` text (verdict sentence included), its
`verdict`, and `agrees` (the verdict matches the grade; what `s2r build` keeps).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from s2r.config import arg, cache_root
from s2r.solve import EndpointErrors
from s2r.format import CORRECT, DEFAULT_FORMAT, INCORRECT, UNPARSABLE, MarkerFields, TrajectoryFormat, verdict_of
from s2r.jsonl import DataError, ResumableJsonl, dumps, iter_jsonl, read_jsonl, wrong_field
from s2r.metrics import answer_key
from s2r.models.backend import SamplingParams
from s2r.models.http import HTTPFields
from s2r.progress import Progress
from s2r.records import Trajectory, actions_problem
from s2r.settings_guard import file_digest, guard_output
from s2r.tasks import TASKS, arith, load_task

CONFIRMATIVE_PROMPT = """\
Here is a math problem and a proposed final answer.

Problem:
{problem}

Proposed answer: {answer}

Check whether the proposed answer is correct WITHOUT solving the problem again from the start. \
Confirm it by other means instead: substitute it back into the conditions of the problem, check the \
constraints it must satisfy, estimate its size, or test special cases. Be brief and concrete. End \
with exactly one of these two sentences, on its own line:
{correct_sentence}
{incorrect_sentence}"""

PROBLEM_SOLVING_PROMPT = """\
Here is a math problem and a proposed final answer.

Problem:
{problem}

Proposed answer: {answer}

Solve the problem again, briefly and carefully, and compare your result with the proposed answer. \
End with exactly one of these two sentences, on its own line:
{correct_sentence}
{incorrect_sentence}"""

PROMPTS = {"confirmative": CONFIRMATIVE_PROMPT, "problem-solving": PROBLEM_SOLVING_PROMPT}


@dataclass
class VerifyConfig(MarkerFields, HTTPFields):
    attempts: str = arg(help="sampled attempts JSONL (from `s2r sample`)", positional=True)
    out: str = arg(help="verified JSONL to write: one record per distinct (problem, answer)")
    teacher: str = arg("arith", help="arith (the embedded task's programmatic verifier), task (a task's own teacher) "
                                     "or http (an LLM endpoint)")
    task: str | None = arg(None, help="--teacher task: your task, FILE.py:CLASS or MODULE:CLASS (default: the task of "
                                      "each record's benchmark)")
    style: str = arg("confirmative", help="confirmative or problem-solving")
    prompt_file: str | None = arg(None, help="http: your own prompt ({problem}, {answer}, {solution}, {correct_sentence}, {incorrect_sentence})")
    cache: str | None = arg(None, help="verification cache JSONL (default $S2R_CACHE/verifications.jsonl or ~/.cache/s2r/...)")
    model: str | None = arg(None, help="http: served model name (default: the first listed)")
    max_tokens: int = arg(1024, help="http: tokens per verification")
    temperature: float = arg(0.0, help="http: sampling temperature")
    chunk: int = arg(64, help="verifications between two flushes of the output")


# ----------------------------------------------------------------------------------- teachers


class ArithTeacher:
    """The embedded task's programmatic checks (tasks/arith.py), exact and instant."""

    def __init__(self, style: str, fmt: TrajectoryFormat):
        self.check, self.fmt = arith.VERIFIERS[style], fmt
        self.id = f"arith:{style}"

    def verify(self, items: list[dict]) -> list[tuple[str | None, str | None]]:
        out = []
        for it in items:
            try:
                arith.operands_of(it["problem"])
            except ValueError:
                raise ValueError(f"the arith teacher checks only the embedded task's problems, not {it['problem'][:60]!r}") from None
            out.append((self.check(it["problem"], it["answer"], self.fmt), None))
        return out

    def close(self) -> None:
        pass


class TaskTeacher:
    """A task's own teacher(problem, answer): --task's, else that of each record's benchmark (TASKS)."""

    def __init__(self, spec: str | None):
        self.own = load_task(spec) if spec else None
        self.id = f"task:{self.own.name if self.own else 'of each benchmark'}"

    def verify(self, items: list[dict]) -> list[tuple[str | None, str | None]]:
        out = []
        for it in items:
            task = self.own
            if task is None:
                base = str(it["benchmark"]).partition(":")[0]
                if base not in TASKS:
                    raise ValueError(f"benchmark {it['benchmark']!r} names no task: give --task FILE.py:CLASS")
                task = TASKS[base](None)
            text = task.teacher(it["problem"], it["answer"])
            if not isinstance(text, str):
                raise ValueError(f"task {task.name!r} has no teacher (its teacher() gave {text!r}): choose --teacher http")
            out.append((text, None))
        return out

    def close(self) -> None:
        pass


class HTTPTeacher:
    """An LLM behind an OpenAI-compatible chat endpoint, prompted to check an answer."""

    def __init__(self, cfg: VerifyConfig):
        from s2r.models.http import HTTPBackend

        self.prompt = Path(cfg.prompt_file).read_text() if cfg.prompt_file else PROMPTS[cfg.style]
        self.fmt = cfg.fmt
        self.backend = HTTPBackend(cfg.base_url, cfg.model, cfg.api_key, cfg.request_timeout, cfg.retries, cfg.concurrency)
        self.params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature)
        digest = hashlib.sha256(self.prompt.encode()).hexdigest()[:12]
        self.id = f"http:{self.backend.model}|prompt {digest}|T={cfg.temperature}"

    def verify(self, items: list[dict]) -> list[tuple[str | None, str | None]]:
        fields = {"correct_sentence": self.fmt.correct_sentence, "incorrect_sentence": self.fmt.incorrect_sentence}
        conversations = [[{"role": "user", "content": self.prompt.format(**fields, problem=it["problem"], answer=it["answer"],
                                                                          solution=it["solution"])}] for it in items]
        return [(None, c.error) if c.finish_reason == "error" else (clean_verification(c.text, self.fmt), None)
                for c in self.backend.chat(conversations, self.params)]

    def close(self) -> None:
        self.backend.close()


def clean_verification(text: str, fmt: TrajectoryFormat) -> str:
    """A teacher's reply as a verification body: cut after its last verdict sentence; a reply that
    contains a marker line would break the trajectory, so its markers are dropped."""
    text = text.strip()
    ends = [text.rfind(s) + len(s) for s in (fmt.correct_sentence, fmt.incorrect_sentence) if s in text]
    if ends:
        text = text[: max(ends)]
    lines = [ln for ln in text.split("\n") if ln.strip() not in (fmt.verify_marker, fmt.retry_marker)]
    return "\n".join(lines).strip()


def make_teacher(cfg: VerifyConfig):
    if cfg.style not in PROMPTS:
        raise ValueError(f"style must be confirmative or problem-solving, not {cfg.style!r}")
    if cfg.teacher == "arith":
        return ArithTeacher(cfg.style, cfg.fmt)
    if cfg.teacher == "task":
        return TaskTeacher(cfg.task)
    if cfg.teacher == "http":
        return HTTPTeacher(cfg)
    raise ValueError(f"teacher must be arith, task or http, not {cfg.teacher!r}")


# ----------------------------------------------------------------------------------- cache and items


class VerificationCache:
    """Persistent JSONL cache: {"key", "verification"} per line, appended and flushed."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries = {r["key"]: r["verification"] for r in read_jsonl(self.path, allow_torn_tail=True, allow_empty=True)} if self.path.exists() else {}
        self._file = self.path.open("a", encoding="utf-8")

    @staticmethod
    def key(teacher: str, style: str, problem: str, answer: str) -> str:
        return hashlib.sha256(json.dumps([teacher, style, problem, answer]).encode()).hexdigest()

    def put(self, key: str, verification: str) -> None:
        self.entries[key] = verification
        self._file.write(dumps({"key": key, "verification": verification}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


ATTEMPT_FIELDS = {"benchmark": str, "id": (str, int), "problem": str, "gold": str, "text": str, "attempts": list}


def attempt_problem(r: dict) -> str | None:
    """What is wrong with a sampled-attempts record (what verify reads of it), or None."""
    problem = wrong_field(r, ATTEMPT_FIELDS)
    if problem or not r["attempts"] or not isinstance(r["attempts"][0], dict):
        return problem or "'attempts' must be a non-empty list of objects"
    problem = wrong_field(r["attempts"][0], {"answer": (str, type(None)), "grade": str})
    return problem or (actions_problem(r["actions"]) if "actions" in r else None)


def read_attempts(path: str, fmt: TrajectoryFormat = DEFAULT_FORMAT) -> list[Trajectory]:
    """The records of a sampled-attempts file (`s2r sample`); DataError naming path:line on a bad one."""
    records = []
    for lineno, r in iter_jsonl(path):
        problem = attempt_problem(r)
        if problem:
            raise DataError(f"{path}:{lineno}: not a sampled-attempts record (`s2r sample`): {problem}")
        records.append(Trajectory.load(r, fmt))
    return records


def distinct_answers(attempt_records: list[Trajectory]) -> list[dict]:
    """One item per distinct (problem, answer) with the fields the output records carry; the
    `solution` is the content of the record's first solve action. Attempts with no answer are not
    verified but count among the problem's `wrong` samples."""
    groups: dict[tuple, list[Trajectory]] = {}
    for r in attempt_records:
        groups.setdefault((r.benchmark, str(r.id)), []).append(r)
    items = []
    for rs in groups.values():
        wrong = sum(r.attempts[0]["grade"] != CORRECT for r in rs)
        by_answer: dict[str, dict] = {}
        for r in rs:
            a = r.attempts[0]
            if a["answer"] is None:
                continue
            key = answer_key(a["answer"])
            if key in by_answer:
                by_answer[key]["count"] += 1
                continue
            by_answer[key] = {
                "benchmark": r.benchmark, "id": r.id, "problem": r.problem, "gold": r.gold, "level": r.level,
                "subject": r.subject, "answer": a["answer"], "grade": a["grade"],
                "solution": r.content(r.solves[0]).rstrip(), "count": 1, "samples": len(rs), "wrong": wrong,
            }
        items += by_answer.values()
    return items


def agreement(records: list[dict]) -> dict:
    """How the teacher's verdicts compare with the grader, per grade."""
    stats = {}
    for grade, verdict in ((CORRECT, CORRECT), ("incorrect", INCORRECT)):
        rs = [r for r in records if r["grade"] == grade]
        stats[grade] = {"answers": len(rs), "agree": sum(r["verdict"] == verdict for r in rs),
                        "unparsable": sum(r["verdict"] == UNPARSABLE for r in rs)}
    stats["unverifiable"] = sum(r["grade"] not in (CORRECT, "incorrect") for r in records)
    stats["kept"] = sum(r["agrees"] for r in records)
    return stats


def run_verify(cfg: VerifyConfig) -> dict:
    fmt = cfg.fmt
    items = distinct_answers(read_attempts(cfg.attempts, fmt))
    teacher = make_teacher(cfg)
    cache = VerificationCache(cfg.cache or cache_root() / "verifications.jsonl")
    errors: list[str] = []
    try:
        guard_output(cfg.out, {"attempts": file_digest([Path(cfg.attempts)]), "teacher": teacher.id, "style": cfg.style,
                               **asdict(fmt)}, restart=True)
        with ResumableJsonl(cfg.out) as sink:
            done = {(r["benchmark"], str(r["id"]), answer_key(r["answer"])) for r in sink.records}
            todo = [it for it in items if (it["benchmark"], str(it["id"]), answer_key(it["answer"])) not in done]
            bar = Progress(f"verify ({teacher.id})", len(items), initial=len(items) - len(todo), unit="answer")
            for lo in range(0, len(todo), cfg.chunk):
                part = todo[lo : lo + cfg.chunk]
                keys = [cache.key(teacher.id, cfg.style, it["problem"], it["answer"]) for it in part]
                ask = [(k, it) for k, it in zip(keys, part) if k not in cache.entries]
                for (k, _), (text, error) in zip(ask, teacher.verify([it for _, it in ask]) if ask else []):
                    if error is not None:
                        errors.append(error)
                    else:
                        cache.put(k, text)
                for k, it in zip(keys, part):
                    if k in cache.entries:
                        text = cache.entries[k]
                        verdict = verdict_of(text, fmt)
                        agrees = (it["grade"], verdict) in ((CORRECT, CORRECT), ("incorrect", INCORRECT))
                        sink.append({**it, "verification": text, "verdict": verdict, "agrees": agrees, "teacher": teacher.id})
                bar.update(len(part))
            bar.close()
            stats = agreement(sink.records)
            print_agreement(stats, teacher.id, len(errors))
            if errors:
                raise EndpointErrors(f"{len(errors)} of {len(items)} verifications failed (first: {errors[0]}); "
                                     f"the rest are kept in {sink.partial} and the cache: run the same command again to retry")
            sink.finish()
    finally:
        cache.close()
        teacher.close()
    print(f"wrote {len(items)} verified answers to {cfg.out}", file=sys.stderr)
    return stats


def print_agreement(stats: dict, teacher: str, failed: int) -> None:
    c, w = stats[CORRECT], stats["incorrect"]
    pct = lambda a, b: f"{a / b:.1%}" if b else "—"  # noqa: E731
    print(f"teacher {teacher}: agreement with the grader")
    print(f"  correct answers:   {c['answers']:>6}  judged correct   {c['agree']:>6} ({pct(c['agree'], c['answers'])}), unparsable {c['unparsable']}")
    print(f"  incorrect answers: {w['answers']:>6}  judged incorrect {w['agree']:>6} ({pct(w['agree'], w['answers'])}), unparsable {w['unparsable']}")
    print(f"  not checkable by the grader: {stats['unverifiable']}; kept for build: {stats['kept']}; endpoint failures: {failed}")
