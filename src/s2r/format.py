"""The trajectory format (docs/method.md §1): one assistant message holds `s1 v1 [s2 v2 ...]`.

Rendered with the default markers (`render(["A1", "A2"], ["V1 ... incorrect.", "V2 ... correct."])`):

    A1                                         ] solve  (span starts at 0)
                                               ┐ verify (span starts at the separator
    Wait, let me recheck my solution.          │         "\n\n" before its marker)
    V1 ... Therefore, the answer is incorrect. ┘
                                               ┐ solve
    Let me try again.                          │
    A2                                         ┘
                                               ┐ verify
    Wait, let me recheck my solution.          │
    V2 ... Therefore, the answer is correct.   ┘ (then EOS, a token, not text)

Rules:
- A marker counts only as a whole line (at the start of the text or after "\\n"); markers are found by
  character offsets, never by token ids or by a bare word such as "Wait,".
- The verify marker opens a verification; the retry marker opens a new attempt; the text before the
  first marker is the first attempt. Text without markers is one solve action.
- A marker line repeated with nothing but whitespace before it since the last one ("Wait, let me
  recheck my solution.\nWait, let me recheck my solution.\n...") is one marker: the action it opened
  goes on, rather than an empty verification (unparsable) or an empty attempt (no answer) being
  judged, and RL blaming the first marker for the repeat.
- Each action's character span runs from the separator before its marker ("\\n\\n" or "\\n") to the
  next one, so the spans tile the text with no gaps or overlaps, and training an action trains the
  decision to open it. `Action.text` is the content: no marker line, no separator.
- A verification's verdict is its last canonical verdict sentence; with none it is "unparsable"
  (never guessed: docs/method.md [departure]).
- A solve action's answer is extracted by the task's `extract` (default: the one grader's
  `extract_answer`), which `parse` is given.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from s2r.config import arg
from s2r.grader import extract_answer

SOLVE, VERIFY = "solve", "verify"
CORRECT, INCORRECT, UNPARSABLE = "correct", "incorrect", "unparsable"


@dataclass(frozen=True)
class TrajectoryFormat:
    """Markers and verdict sentences; the defaults are the paper's wording."""

    verify_marker: str = "Wait, let me recheck my solution."  # line that opens a verification
    retry_marker: str = "Let me try again."  # line that opens the next attempt
    correct_sentence: str = "Therefore, the answer is correct."  # closes a positive verification
    incorrect_sentence: str = "Therefore, the answer is incorrect."  # closes a negative one

    def __post_init__(self) -> None:
        for name in ("verify_marker", "retry_marker", "correct_sentence", "incorrect_sentence"):
            value = getattr(self, name)
            if not value.strip() or "\n" in value or value != value.strip():
                raise ValueError(f"{name} must be one non-empty line without surrounding spaces: {value!r}")
        if self.verify_marker == self.retry_marker:
            raise ValueError("verify_marker and retry_marker must differ")
        a, b = self.correct_sentence, self.incorrect_sentence
        if a in b or b in a:
            raise ValueError("neither verdict sentence may contain the other")

    @cached_property
    def marker_re(self) -> re.Pattern[str]:
        markers = "|".join(re.escape(m) for m in (self.verify_marker, self.retry_marker))
        return re.compile(rf"^(?:{markers})[ \t]*(?:\n|\Z)", re.MULTILINE)

    def verification(self, body: str, verdict: str) -> str:
        """A verification text: `body` then the canonical sentence for `verdict`."""
        sentence = {CORRECT: self.correct_sentence, INCORRECT: self.incorrect_sentence}[verdict]
        return f"{body}\n{sentence}" if body else sentence


DEFAULT_FORMAT = TrajectoryFormat()


@dataclass(kw_only=True)
class MarkerFields:
    """The format's four lines as command-line fields; commands that read or write trajectories
    inherit them (`cfg.fmt` is the TrajectoryFormat)."""

    verify_marker: str = arg(TrajectoryFormat.verify_marker, help="line that opens a verification")
    retry_marker: str = arg(TrajectoryFormat.retry_marker, help="line that opens the next attempt")
    correct_sentence: str = arg(TrajectoryFormat.correct_sentence, help="verdict sentence: correct")
    incorrect_sentence: str = arg(TrajectoryFormat.incorrect_sentence, help="verdict sentence: incorrect")

    @property
    def fmt(self) -> TrajectoryFormat:
        return TrajectoryFormat(self.verify_marker, self.retry_marker, self.correct_sentence, self.incorrect_sentence)


@dataclass(frozen=True)
class Action:
    kind: str  # "solve" | "verify"
    start: int  # character span [start, end) of the action in the text, marker included
    end: int
    text: str  # content: no marker line, no separator
    answer: str | None = None  # solve: the extracted final answer (None if none)
    verdict: str | None = None  # verify: "correct" | "incorrect" | "unparsable"


@dataclass(frozen=True)
class Parsed:
    text: str
    actions: tuple[Action, ...]

    @property
    def attempts(self) -> list[str]:
        return [a.text for a in self.actions if a.kind == SOLVE]

    @property
    def verifications(self) -> list[str]:
        return [a.text for a in self.actions if a.kind == VERIFY]

    @property
    def answers(self) -> list[str | None]:
        return [a.answer for a in self.actions if a.kind == SOLVE]

    @property
    def verdicts(self) -> list[str]:
        return [a.verdict for a in self.actions if a.kind == VERIFY]

    @property
    def final_answer(self) -> str | None:
        """The answer of the last attempt (docs/method.md §1)."""
        answers = self.answers
        return answers[-1] if answers else None

    @property
    def alternates(self) -> bool:
        """True when the actions go solve, verify, solve, verify, ... starting with a solve."""
        return all(a.kind == (SOLVE if i % 2 == 0 else VERIFY) for i, a in enumerate(self.actions))

    @property
    def spans(self) -> list[tuple[int, int]]:
        return [(a.start, a.end) for a in self.actions]


def render(attempts: Sequence[str], verifications: Sequence[str], fmt: TrajectoryFormat = DEFAULT_FORMAT) -> str:
    """Join attempts and verifications (texts, verdict sentence included) into one trajectory.

    There is one verification per attempt, or one fewer (a trajectory that stops after an attempt).
    """
    if not attempts or len(verifications) not in (len(attempts), len(attempts) - 1):
        raise ValueError(f"need ≥1 attempt and as many verifications or one fewer, got "
                         f"{len(attempts)} and {len(verifications)}")
    parts: list[str] = []
    for j, attempt in enumerate(attempts):
        if j:
            parts.append(f"\n\n{fmt.retry_marker}\n")
        parts.append(attempt)
        if j < len(verifications):
            parts.append(f"\n\n{fmt.verify_marker}\n{verifications[j]}")
    return "".join(parts)


def verdict_of(verification: str, fmt: TrajectoryFormat = DEFAULT_FORMAT) -> str:
    """The last canonical verdict sentence in a verification: correct / incorrect / unparsable."""
    pos_correct = verification.rfind(fmt.correct_sentence)
    pos_incorrect = verification.rfind(fmt.incorrect_sentence)
    if pos_correct < 0 and pos_incorrect < 0:
        return UNPARSABLE
    return CORRECT if pos_correct > pos_incorrect else INCORRECT


def parse(text: str, fmt: TrajectoryFormat = DEFAULT_FORMAT,
          extract: Callable[[str], str | None] = extract_answer) -> Parsed:
    """Split generated text into solve / verify actions with character spans (see module docstring);
    `extract` reads a solve action's answer."""
    marks = list(fmt.marker_re.finditer(text))
    # (span start, content start, kind) per action
    heads: list[tuple[int, int, str]] = [] if marks and marks[0].start() == 0 else [(0, 0, SOLVE)]
    for m in marks:
        kind = VERIFY if m.group().strip() == fmt.verify_marker else SOLVE
        if heads and heads[-1][2] == kind and not text[heads[-1][1] : m.start()].strip():
            heads[-1] = (heads[-1][0], m.end(), kind)  # a marker line repeated: the same action goes on
            continue
        floor = heads[-1][1] if heads else 0  # the separator comes out of the previous content only
        sep = 2 if text.endswith("\n\n", floor, m.start()) else 1 if text.endswith("\n", floor, m.start()) else 0
        heads.append((m.start() - sep, m.end(), kind))
    actions = []
    for i, (start, content_start, kind) in enumerate(heads):
        end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        content = text[content_start:end]
        if kind == SOLVE:
            actions.append(Action(SOLVE, start, end, content, answer=extract(content)))
        else:
            actions.append(Action(VERIFY, start, end, content, verdict=verdict_of(content, fmt)))
    return Parsed(text, tuple(actions))


def token_spans(offsets: Sequence[tuple[int, int]], char_spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Map character spans that tile a text to token spans [t0, t1) that tile its tokens.

    offsets: the tokenizer's offset mapping for the text (`return_offsets_mapping=True`).
    A token goes to the span that holds its last character, so a token that straddles a boundary
    (e.g. "\\n\\nWait") belongs to the action it opens. Tokens without characters (special tokens such
    as EOS) go with the token before them; at the very start, with the first span.

    >>> token_spans([(0, 2), (2, 5), (5, 6), (0, 0)], [(0, 3), (3, 6)])
    [(0, 1), (1, 4)]
    """
    starts = [s for s, _ in char_spans]
    owner: list[int] = []
    pos = 0
    for start, end in offsets:
        if end > start:
            pos = max(pos, end - 1)
        owner.append(max(0, bisect.bisect_right(starts, pos) - 1))
    spans = []
    t = 0
    for k in range(len(char_spans)):
        t0 = t
        while t < len(owner) and owner[t] == k:
            t += 1
        spans.append((t0, t))
    return spans
