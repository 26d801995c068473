"""The records one problem's way through the pipeline writes and reads, one typed class per contract
(docs/formats.md is their one definition):

    Trajectory  `s2r solve | eval | sample` (and rl's rollouts): a problem, its prompt, the text
                the model wrote, its actions with their spans and grades, its attempts
    Action      one solve / verify action of a trajectory (format.parse's spans, graded)
    SFTRecord   `s2r build` -> `s2r sft`: a completion, its trained spans and what it follows

Each has `load(dict)` and `dump() -> dict`, which keep the JSONL fields exactly: a file written by
an older s2r loads, and `dump(load(d)) == d` for every record s2r writes now. A trajectory written
without `actions` (older s2r, another tool) gets them in `Trajectory.load`, the one place that parses
a record's text: every later stage reads `actions` instead of parsing again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from s2r import format as fmt_
from s2r.format import CORRECT, DEFAULT_FORMAT, SOLVE, TrajectoryFormat
from s2r.grader import extract_answer, grader_failed

INTRINSIC_SEPARATOR = "\n---\n"  # the intrinsic strategy's text: first turn, this line, second turn


@dataclass(frozen=True)
class Action:
    """One action of a trajectory: text[start:end] is its span (separator and marker line included,
    the spans tile the text), text[body:end] its content (format.parse's Action.text)."""

    kind: str  # "solve" | "verify"
    start: int
    end: int
    body: int  # where its content starts: after the separator and marker line(s); = start for the first attempt
    answer: str | None = None  # solve: the extracted answer
    grade: str | None = None  # solve: the grader's verdict on its answer (correct / incorrect / unverifiable)
    verdict: str | None = None  # verify: the model's verdict (correct / incorrect / unparsable)

    @classmethod
    def parsed(cls, a: fmt_.Action) -> Action:
        """The record's action of a format.parse action (not yet graded)."""
        return cls(a.kind, a.start, a.end, a.end - len(a.text), a.answer, None, a.verdict)

    @classmethod
    def load(cls, d: dict) -> Action:
        return cls(d["kind"], d["start"], d["end"], d.get("body", d["start"]), d.get("answer"), d.get("grade"),
                   d.get("verdict"))

    def dump(self) -> dict:
        """{"kind", "start", "end", "body", then "answer" and "grade" (solve) or "verdict" (verify)}."""
        out = {"kind": self.kind, "start": self.start, "end": self.end, "body": self.body}
        if self.kind == SOLVE:
            return out | {"answer": self.answer, "grade": self.grade}
        return out | {"verdict": self.verdict}


def actions_problem(actions) -> str | None:
    """What is wrong with a record's `actions` field, or None."""
    if not isinstance(actions, list):
        return "'actions' must be a list"
    for j, a in enumerate(actions):
        if not (isinstance(a, dict) and a.get("kind") in (SOLVE, fmt_.VERIFY)
                and all(type(a.get(k)) is int for k in ("start", "end")) and type(a.get("body", 0)) is int):
            return f"action {j}: must be {{'kind': 'solve' | 'verify', 'start': int, 'end': int, ...}}"
    return None


def _field(attempt, name: str):
    return attempt.get(name) if isinstance(attempt, dict) else None


def graded(actions: list[Action], attempts: list[dict]) -> list[Action]:
    """The actions with each solve action graded as its attempt (the i-th solve is the i-th attempt;
    a solve beyond the attempts keeps no grade)."""
    grades = iter(_field(a, "grade") for a in attempts)
    return [replace(a, grade=next(grades, None)) if a.kind == SOLVE else a for a in actions]


def actions_of_text(text: str, strategy: str | None, attempts: list[dict], fmt: TrajectoryFormat = DEFAULT_FORMAT,
                    extract: Callable[[str], str | None] = extract_answer) -> list[Action]:
    """The graded actions of a trajectory's text, for a record written without them: `single` and
    `majority` are one attempt (the text), `intrinsic` two (the turns either side of its separator
    line; the second span starts at it), `s2r` (and anything else) what format.parse finds."""
    if strategy in ("single", "majority") and len(attempts) == 1:  # the loop cut the text at the attempt's end
        first = fmt_.parse(text, fmt, extract).actions[0]
        body = first.end - len(first.text) if first.kind == SOLVE else 0
        acts = [Action(SOLVE, 0, len(text), body, _field(attempts[0], "answer"))]
    elif strategy == "intrinsic" and len(attempts) == 2 and INTRINSIC_SEPARATOR in text:
        cut = text.index(INTRINSIC_SEPARATOR)
        acts = [Action(SOLVE, 0, cut, 0, _field(attempts[0], "answer")),
                Action(SOLVE, cut, len(text), cut + len(INTRINSIC_SEPARATOR), _field(attempts[1], "answer"))]
    else:
        acts = [Action.parsed(a) for a in fmt_.parse(text, fmt, extract).actions]
    return graded(acts, attempts)


# Fields of a trajectory record, in the order they are written; the optional ones are left out when None.
PROBLEM = ("id", "problem", "gold", "level", "subject")  # tasks.task.Problem.as_dict


@dataclass
class Trajectory:
    """One sampled trajectory of one problem (docs/formats.md, "Trajectories file")."""

    attempts: list[dict]  # [{"answer", "grade", "verdict", "reason"}] per attempt (metrics.py reads these)
    id: Any = None  # the problem (tasks.task.Problem); a str when s2r wrote it (always, in a trajectories file)
    tokens: int | None = None  # generated tokens, all rounds together (metrics.py requires it and truncated)
    truncated: bool | None = None  # cut off by the token budget
    benchmark: str | None = None  # the problem set; problems are told apart by (benchmark, id)
    problem: str | None = None
    gold: str | None = None
    level: int | None = None
    subject: str | None = None
    sample: int | None = None  # index among the problem's samples
    strategy: str | None = None  # s2r, single, majority, intrinsic
    text: str | None = None  # the assistant's text (intrinsic: both turns, joined by a line "---")
    stopped: bool | None = None  # s2r: the model itself stopped (EOS) where the text ends
    loop_markers: list | None = None  # s2r: [start, end, "eos" | "cut", "retry" | "verify"] of each marker the loop wrote
    sampled: list | None = None  # [start, end, log π] of each generated token (rl with vLLM)
    votes: list | None = None  # majority: the sampled answers voted on
    certainty: float | None = None  # the certainty the text states after its final answer
    prompt: str | None = None  # the prompt exactly as rendered: the text follows it (assistant prefix included)
    actions: list[Action] = field(default_factory=list)  # the text's actions, spans tiling it, solves graded
    extra: dict = field(default_factory=dict)  # any other field, kept as it is (rl: rewards, advantages, trained)

    @classmethod
    def load(cls, d: dict, fmt: TrajectoryFormat = DEFAULT_FORMAT,
             extract: Callable[[str], str | None] = extract_answer) -> Trajectory:
        """A record as read from a trajectories file (check it first: metrics.check_trajectory).
        Without `actions`, they are read off its text here (actions_of_text), with `fmt` and `extract`."""
        known = {f.name for f in fields(cls)} - {"actions", "extra"}
        t = cls(**{k: v for k, v in d.items() if k in known},
                extra={k: v for k, v in d.items() if k not in known and k != "actions"})
        if "actions" in d:
            t.actions = [Action.load(a) for a in d["actions"]]
        elif isinstance(t.text, str):
            t.actions = actions_of_text(t.text, t.strategy, t.attempts, fmt, extract)
        return t

    def dump(self) -> dict:
        """The record as written: today's fields in their order, then prompt and actions, then extra."""
        out: dict = {}
        for name in ("benchmark", *PROBLEM, "sample", "strategy", "attempts", "tokens", "truncated", "text", "stopped",
                     "loop_markers", "sampled", "votes", "certainty", "prompt"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.actions or self.text is not None:
            out["actions"] = [a.dump() for a in self.actions]
        return out | self.extra

    def content(self, action: Action) -> str:
        """An action's content: its text without separator and marker line."""
        return self.text[action.body : action.end]

    @property
    def solves(self) -> list[Action]:
        return [a for a in self.actions if a.kind == SOLVE]


def graded_steps(t: Trajectory):
    """(t.actions, their advantages.Step) of a graded rollout, or None when the grader failed on one
    of its answers (timeout, crash: never scored), read off the record (RL and offline RL train on
    them): a solve's `correct` is its grade, a verification's `verdict` its own.

    solve (correct), verify ("correct") -> [Step("solve", correct=True), Step("verify", verdict="correct")]"""
    from s2r.train.advantages import Step  # torch: only where RL runs

    if any(grader_failed(a.get("reason", "")) for a in t.attempts):
        return None
    return t.actions, [Step(a.kind, correct=a.grade == CORRECT) if a.kind == SOLVE else Step(a.kind, verdict=a.verdict)
                       for a in t.actions]


# ----------------------------------------------------------------------------------- SFT records


SFT_SHAPED = ("problem", "messages", "prefix", "completion", "spans")


@dataclass
class SFTRecord:
    """One SFT example (docs/formats.md, "SFT records"): `completion` follows `problem` (rendered
    with the system prompt, then `prefix` if any) or the conversation `messages`; `spans` are the
    [start, end] character spans of the completion to train. `meta`: every other field (benchmark,
    id, gold, level, subject, kind, ...), kept for reading, ignored by `s2r sft`."""

    completion: str
    spans: list[list[int]]
    problem: str | None = None
    messages: list[dict] | None = None  # [{"role", "content"}, ...], the last turn the user's
    prefix: str | None = None  # the start of the assistant's message: context, not trained
    meta: dict = field(default_factory=dict)

    @classmethod
    def load(cls, d: dict) -> SFTRecord:
        """A record as read (check it first: train/sft.sft_problem)."""
        return cls(**{k: d[k] for k in SFT_SHAPED if k in d}, meta={k: v for k, v in d.items() if k not in SFT_SHAPED})

    def dump(self) -> dict:
        """meta first (benchmark, id, ...: as given), then the shaped fields that are set."""
        return self.meta | {k: getattr(self, k) for k in SFT_SHAPED if getattr(self, k) is not None}
