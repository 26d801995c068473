"""THE grader: the one source of truth for "correct" (SFT data, RL rewards and evaluation all call it).

    grade = Grader().grade(response, gold)   # Grade(verdict, pred, reason)

verdict is "correct", "incorrect" or "unverifiable" (no answer found, answer too long, parse failure,
timeout, crashed worker); `reason` says which. Never treat "unverifiable" as a silent 0: count it.

How an answer is found in a response (`extract_answer`), first rule that matches wins:
  1. the last `\\boxed{...}` (or `\\fbox{...}`), braces matched, so nested braces are fine;
  2. the last line of the form `#### X` (GSM8K style);
  3. the last "the answer is X" / "final answer is X" / "final answer: X" (up to the end of the line,
     `$` and a closing period stripped; "the answer is correct/incorrect", the verdict sentence of
     the trajectory format, is not an answer).

How it is compared: math-verify (`parse` both sides as `\\boxed{...}`, then `verify(gold, pred)`),
in worker processes with a hard per-item timeout: a worker that overruns is killed and replaced, so
`\\boxed{9^{9^{9^{9}}}}` or `\\boxed{(10^8)!}` cost at most `timeout` seconds and never hang the batch
(math-verify's own signal-based timeouts cannot interrupt a long C-level big-integer operation,
and do not work off the main thread).
Two exact shortcuts skip the pool: identical strings, and two plain integers (compared as integers,
which is what math-verify concludes for them too).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing.connection import wait

CORRECT, INCORRECT, UNVERIFIABLE = "correct", "incorrect", "unverifiable"
GRADER_FAILURES = ("timeout", "grader", "could not parse gold", "gold answer")  # say nothing about the answer


def grader_failed(reason: str) -> bool:
    """True when an unverifiable grade is the grader's failure (timeout, crash, a gold answer it
    cannot read or that is too long), not the answer's (no answer found, answer too long): such a
    grade is counted, never scored."""
    return reason.startswith(GRADER_FAILURES)


@dataclass(frozen=True)
class Grade:
    verdict: str  # "correct" | "incorrect" | "unverifiable"
    pred: str | None  # the extracted answer (None when none was found)
    reason: str  # why: "match", "mismatch", "no answer found", "timeout after 2s", ...

    @property
    def correct(self) -> bool:
        return self.verdict == CORRECT

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------- extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASH_RE = re.compile(r"^[ \t]*####[ \t]*(.+?)[ \t]*$", re.MULTILINE)
_ANSWER_IS_RE = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*:)\s*:?\s*(.+?)[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_VERDICT_WORDS = {"correct", "incorrect", "correct.", "incorrect."}


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` in `text`, with nested braces; None if none
    is complete. `last_boxed(r"so \\boxed{\\frac{1}{2}}.")` == r"\\frac{1}{2}"."""
    for m in reversed(list(_BOX_RE.finditer(text))):
        depth, start, i = 1, m.end(), m.end()
        while i < len(text):
            c = text[i]
            if c == "\\":  # an escaped brace (\{, \}) is text, not grouping
                i += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
            i += 1
    return None


def _clean(answer: str) -> str:
    answer = answer.strip().rstrip(".").strip()
    if len(answer) >= 2 and answer[0] == "$" and answer[-1] == "$":
        answer = answer.strip("$").strip()
    return answer


def extract_answer(text: str) -> str | None:
    """The final answer of a response by the rules in the module docstring; None when none is found."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    hashes = _HASH_RE.findall(text)
    if hashes:
        return _clean(hashes[-1])
    for m in reversed(list(_ANSWER_IS_RE.finditer(text))):
        answer = _clean(m.group(1))
        if answer and answer.lower() not in _VERDICT_WORDS:
            return answer
    return None


# ----------------------------------------------------------------------------------- comparison

_INT_RE = re.compile(r"^[+-]?\d{1,300}$")


def fast_compare(pred: str, gold: str) -> str | None:
    """Exact shortcuts that need no math-verify: identical strings, or two plain integers."""
    p, g = pred.strip(), gold.strip()
    if p == g and p:
        return CORRECT
    if _INT_RE.match(p) and _INT_RE.match(g):
        return CORRECT if int(p) == int(g) else INCORRECT
    return None


@lru_cache(maxsize=4096)
def _parse(answer: str) -> tuple:
    from math_verify import parse

    # Timeouts are enforced by killing the worker process, not by math-verify's SIGALRM.
    return tuple(parse("\\boxed{" + answer + "}", parsing_timeout=None))


def compare(pred: str, gold: str) -> tuple[str, str]:
    """(verdict, reason) for an extracted answer against a gold answer, with math-verify.

    Runs in the calling process with no timeout: use `Grader` for anything a model wrote.
    """
    from math_verify import verify

    fast = fast_compare(pred, gold)
    if fast is not None:
        return fast, "match" if fast == CORRECT else "mismatch"
    gold_parsed = _parse(gold)
    if not gold_parsed:
        return UNVERIFIABLE, "could not parse gold answer"
    pred_parsed = _parse(pred)
    if not pred_parsed:
        return UNVERIFIABLE, "could not parse answer"
    if verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None):
        return CORRECT, "match"
    return INCORRECT, "mismatch"


# ----------------------------------------------------------------------------------- worker pool


def _worker_main() -> None:
    """`python -m s2r.grader`: once warm, write READY, then answer one JSON line [verdict, reason] per
    JSON line [pred, gold]."""
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # nothing but the protocol may reach the pipe
    compare(*WARM_UP)  # import math-verify (seconds on a busy machine) before any item's clock starts
    out.write(json.dumps(READY) + "\n")
    for line in sys.stdin:
        pred, gold = json.loads(line)
        try:
            reply = compare(pred, gold)
        except Exception as e:  # math-verify raised: the item is unverifiable, not wrong
            reply = (UNVERIFIABLE, f"grader error: {type(e).__name__}")
        out.write(json.dumps(reply) + "\n")


WARM_UP, READY = (r"\frac{1}{2}", "0.5"), "ready"  # a worker compares WARM_UP, then writes READY
START_TIMEOUT = 120.0  # seconds a worker may take to import math-verify before the grader gives up


class _Worker:
    """One grading subprocess. A fresh interpreter (not a fork), so the caller's threads (torch,
    tokenizers) and `__main__` never leak into it. It imports and warms math-verify before it says
    it is ready (0.5 s, or 3 s and more on a cold or busy machine), and an item's timeout starts only
    then: a new or replacement worker's start-up never times an answer out."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "s2r.grader"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.item: int | None = None
        self.deadline = 0.0
        self.ready = False

    def wait_ready(self) -> None:
        """Block until the worker has warmed up; a worker that cannot start is an error, not a grade."""
        if self.ready:
            return
        line = self.proc.stdout.readline() if wait([self.proc.stdout], START_TIMEOUT) else ""
        if line.strip() != json.dumps(READY):
            self.kill()
            raise RuntimeError(f"a grader worker (`{sys.executable} -m s2r.grader`) did not start within "
                               f"{START_TIMEOUT:g} s; is math-verify installed? Run it by hand to see its error.")
        self.ready = True

    def send(self, pred: str, gold: str) -> None:
        self.proc.stdin.write(json.dumps([pred, gold]) + "\n")
        self.proc.stdin.flush()

    def recv(self) -> tuple[str, str]:
        line = self.proc.stdout.readline()
        if not line:
            raise EOFError("grader worker exited")
        verdict, reason = json.loads(line)
        return verdict, reason

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Grader:
    """Grades responses against gold answers; math-verify runs in `workers` killable processes.

    timeout: hard limit in seconds per comparison; an item past it is `unverifiable`.
    max_answer_chars: longer extracted answers, and longer gold answers, are `unverifiable` without
    being parsed (a long gold is the grader's failure: `grader_failed` says so).
    Use as a context manager (or call close()) to stop the workers.
    Workers start on first need and are reused across calls.
    """

    def __init__(self, timeout: float = 2.0, workers: int | None = None, max_answer_chars: int = 1000):
        if timeout <= 0:
            raise ValueError("grader timeout must be > 0 seconds")
        self.timeout = timeout
        self.n_workers = max(1, workers or default_workers())
        self.max_answer_chars = max_answer_chars
        self._workers: list[_Worker] = []
        self._cache: dict[tuple[str, str], tuple[str, str]] = {}

    # -- public API

    def grade(self, response: str, gold: str) -> Grade:
        return self.grade_many([(response, gold)])[0]

    def grade_many(
        self,
        items: Sequence[tuple[str, str]],
        on_result: Callable[[int, Grade], None] | None = None,
    ) -> list[Grade]:
        """Grade (response, gold) pairs; results in input order. on_result(i, grade) is called as each
        item finishes (for progress bars)."""
        return self.grade_answers([(extract_answer(r), g) for r, g in items], on_result)

    def grade_answers(
        self,
        items: Sequence[tuple[str | None, str]],
        on_result: Callable[[int, Grade], None] | None = None,
    ) -> list[Grade]:
        """Grade already-extracted answers (None = no answer found) against gold answers."""
        results: list[Grade | None] = [None] * len(items)

        def done(i: int, verdict: str, reason: str) -> None:
            results[i] = Grade(verdict, items[i][0], reason)
            if on_result:
                on_result(i, results[i])

        todo: deque[int] = deque()
        for i, (pred, gold) in enumerate(items):
            if len(gold) > self.max_answer_chars:
                done(i, UNVERIFIABLE, f"gold answer too long ({len(gold)} > {self.max_answer_chars} chars)")
            elif pred is None:
                done(i, UNVERIFIABLE, "no answer found")
            elif len(pred) > self.max_answer_chars:
                done(i, UNVERIFIABLE, f"answer too long ({len(pred)} > {self.max_answer_chars} chars)")
            elif (fast := fast_compare(pred, gold)) is not None:
                done(i, fast, "match" if fast == CORRECT else "mismatch")
            elif (pred, gold) in self._cache:
                done(i, *self._cache[(pred, gold)])
            else:
                todo.append(i)
        if todo:
            self._run_pool(items, todo, done)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers = []

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- the pool

    def _run_pool(self, items, todo: deque[int], done) -> None:
        for w in [w for w in self._workers if w.proc.poll() is not None]:
            self._replace(w)  # died since the last call (killed from outside, out of memory)
        while len(self._workers) < min(self.n_workers, len(todo)):
            self._workers.append(_Worker())
        busy: dict[int, _Worker] = {}  # stdout fd -> worker
        while todo or busy:
            for w in self._workers:
                if w.item is None and todo:
                    w.wait_ready()
                    w.item = todo.popleft()
                    w.deadline = time.monotonic() + self.timeout
                    w.send(*items[w.item])
                    busy[w.proc.stdout.fileno()] = w
            wait_s = max(0.0, min(w.deadline for w in busy.values()) - time.monotonic())
            for fd in wait(list(busy), timeout=wait_s):
                w = busy.pop(fd)
                i, w.item = w.item, None
                try:
                    verdict, reason = w.recv()
                except (EOFError, OSError, ValueError):
                    done(i, UNVERIFIABLE, "grader process crashed")
                    self._replace(w)
                    continue
                if not reason.startswith("grader error"):
                    self._cache[items[i]] = (verdict, reason)
                done(i, verdict, reason)
            now = time.monotonic()
            for fd, w in list(busy.items()):
                if now >= w.deadline:
                    del busy[fd]
                    reason = f"timeout after {self.timeout:g}s"
                    self._cache[items[w.item]] = (UNVERIFIABLE, reason)  # don't pay twice
                    done(w.item, UNVERIFIABLE, reason)
                    w.item = None
                    self._replace(w)

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._workers[self._workers.index(w)] = _Worker()


if __name__ == "__main__":
    _worker_main()
