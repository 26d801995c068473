"""The inference loop: S²R self-verify / self-correct, and the baselines, behind one table.

    STRATEGIES = {"s2r": ..., "single": ..., "majority": ..., "intrinsic": ...}

Each strategy maps prompts to `Rollout`s (the prompt, text, its actions with their spans, attempts
with the model's verdicts, tokens, truncation); `solve_problems` renders prompts, runs a strategy,
grades every attempt with THE grader and returns trajectory records (records.Trajectory, dumped: the
schema of metrics.py plus `prompt` and the graded `actions`, filled here once).

- s2r: one generation in the trajectory format. The model decides when to stop; the loop enforces
  the rules of docs/method.md §1: the trajectory ends at the first "correct" verdict, or at the verdict
  of attempt `max_attempts`; an "incorrect" verdict closes its verification and the retry marker
  opens the next attempt, so where the model stops (EOS) after such a verdict, or goes on with
  anything but the retry marker line, the loop cuts the text right after the verdict sentence,
  writes the marker and lets it go on; likewise a check written inside an attempt, without the
  verify marker that opens a verification (a verdict sentence after the attempt's answer line), is
  cut at the end of that line and the loop writes the verify marker there; a trajectory that runs
  out of its `max_tokens` budget is marked truncated. A backend that can keep stop strings
  (transformers) stops generating at the "correct" verdict sentence, so no tokens are spent past it.
  Records say whether the model itself stopped (EOS) where the trajectory ends (`stopped`), or was
  stopped or cut there by the loop: RL trains the EOS only in the first case; and where the loop
  wrote a marker (`loop_markers`: [start, end, "eos" | "cut", "retry" | "verify"], its character
  span in the text, whether the model stopped there or its text was cut, and which marker): RL
  trains only what the model generated, not these.
- single: one attempt (generation stops at the verify marker, so S²R models can be measured too;
  a check written on after the answer line without the marker is cut off, as in s2r).
- majority: `votes` sampled attempts and a majority vote over their answers.
- intrinsic: an attempt, then a prompted second turn asking the model to review and correct it; the
  second answer is final (the first one stands when the second turn gives none).

Every strategy's first assistant turn starts with the prompt's `assistant_prefix` (mistake tuning's
tag; not part of the record's text). A certainty statement after the final answer ("I am sure." /
"I am unsure.", R-Tuning: methods/rtuning.stated_certainty) becomes the record's `certainty`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from s2r.format import CORRECT, INCORRECT, SOLVE, Action, TrajectoryFormat, parse
from s2r.grader import Grader
from s2r.methods.rtuning import stated_certainty
from s2r.metrics import vote
from s2r.models.backend import Backend, Completion, SamplingParams
from s2r.prompts import PromptConfig, messages_for, render_prompt
from s2r.records import INTRINSIC_SEPARATOR, Trajectory, graded
from s2r.records import Action as RecordAction  # format.Action is Action here
from s2r.tasks.task import Problem, Task

MATH = Task()  # the default task behaviour: answers in \boxed{}, graded by the math grader


@dataclass
class Rollout:
    text: str  # the assistant's text (for intrinsic: both turns, joined by a line "---")
    attempts: list[dict]  # [{"answer": str | None, "verdict": str | None}]
    tokens: int = 0  # generated tokens
    truncated: bool = False
    error: str | None = None  # an endpoint failure: the record is not written (a re-run retries it)
    extra: dict = field(default_factory=dict)  # stopped, loop_markers, sampled, votes: Trajectory's fields
    prompt: str = ""  # what the text follows, as rendered (assistant prefix included; intrinsic: the first turn's)
    actions: list[RecordAction] = field(default_factory=list)  # the text's actions and spans, one solve per attempt, not graded


@dataclass(frozen=True)
class Settings:
    max_tokens: int = 1024  # token budget per trajectory (all rounds together)
    max_attempts: int = 4  # s2r: attempts at most
    votes: int = 4  # majority: samples per vote
    params: SamplingParams = SamplingParams()
    fmt: TrajectoryFormat = TrajectoryFormat()
    prompt: PromptConfig = field(default_factory=PromptConfig)
    task: Task = MATH  # reads (extract) and grades the attempts' answers

    def record(self, strategy: str, model: str) -> dict:
        """These settings as a flat, readable dict (settings_guard: what a trajectories file was written with)."""
        p = self.params
        prompt = asdict(self.prompt)
        if not prompt["assistant_prefix"]:  # recorded only when set: files written before it existed resume
            del prompt["assistant_prefix"]
        return {"model": model, "strategy": strategy, "task": repr(self.task), "max_tokens": self.max_tokens,
                "max_attempts": self.max_attempts, "votes": self.votes, "temperature": p.temperature, "top_p": p.top_p,
                "seed": p.seed, "stop": list(p.stop), **prompt, **asdict(self.fmt)}


# ----------------------------------------------------------------------------------- s2r


ENDED, RETRY, CHECK, OPEN = "ended", "retry", "check", "open"  # what settle() says comes next


def unmarked_check(text: str, action: Action, fmt: TrajectoryFormat) -> int | None:
    r"""Where a solve action that holds a check without its verify marker should have ended: the end
    of the line of its last answer (\boxed) before its first verdict sentence. None when the action
    holds no verdict sentence, or no answer line before one.

    "15 / 3 = 5\nThe answer is \boxed{5}.\n\n\n5 * 3 = 15 ... Therefore, the answer is correct."
        -> the offset just after "\boxed{5}."
    """
    found = [i for i in (text.find(v, action.start, action.end) for v in (fmt.correct_sentence, fmt.incorrect_sentence))
             if i >= 0]
    if not found:
        return None
    first = min(found)
    boxed = text.rfind("\\boxed{", action.start, first)
    end = text.find("\n", boxed, first) if boxed >= 0 else -1
    return end if end >= 0 else None


def settle(text: str, fmt: TrajectoryFormat, max_attempts: int) -> tuple[str, str]:
    """Apply the format's rules to generated text: (the text, cut where they say, and what comes next).

    ENDED  right after the first "correct" verdict sentence, right after the verdict of attempt
           `max_attempts`, or (that verdict being unparsable) before attempt `max_attempts + 1`;
    RETRY  right after an "incorrect" verdict sentence that is not followed by the retry marker line
           (the model stopped there, or went on without it: "...incorrect.\n\n\n91 / 7: ..."):
           the loop writes the marker next;
    CHECK  at the end of an attempt's answer line where a check follows it without the verify marker
           (unmarked_check): the loop writes the verify marker next;
    OPEN   otherwise, text unchanged (the model stopped elsewhere, or is not done)."""
    actions = parse(text, fmt).actions
    attempts = 0
    for i, a in enumerate(actions):
        if a.kind == SOLVE:
            attempts += 1
            if attempts > max_attempts:
                return text[: a.start], ENDED
            cut = unmarked_check(text, a, fmt)
            if cut is not None:
                return text[:cut], CHECK
        elif a.verdict in (CORRECT, INCORRECT):
            sentence = fmt.correct_sentence if a.verdict == CORRECT else fmt.incorrect_sentence
            end = text.rfind(sentence, a.start, a.end) + len(sentence)  # the verdict sentence closes the check
            if a.verdict == CORRECT or attempts >= max_attempts:
                return text[:end], ENDED
            retry_follows = i + 1 < len(actions) and actions[i + 1].kind == SOLVE
            if text[end : a.end].strip() or not retry_follows:
                return text[:end], RETRY
    return text, OPEN


def loop_written(record: dict) -> list[tuple[int, int]]:
    """Character spans of a record's text that the loop wrote, not the model (its markers)."""
    return [(m[0], m[1]) for m in record.get("loop_markers", [])]


def sampled_spans(tokenizer, ids: list[int], logprobs: list[float], offset: int) -> list[list]:
    """[start, end, log π] of each generated token: its characters in the trajectory text, where the
    completion begins at `offset` (a token that adds no text, such as EOS, has start = end).

    ids of "ab" + EOS, offset 5 -> [[5, 6, lp0], [6, 7, lp1], [7, 7, lp2]]"""
    out, end = [], 0
    for k, lp in enumerate(logprobs):
        n = len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True))
        out.append([offset + end, offset + n, lp])
        end = n
    return out


def actions_and_attempts(text: str, fmt: TrajectoryFormat, extract=MATH.extract) -> tuple[list[RecordAction], list[dict]]:
    """The text's actions (records.Action, spans as format.parse gives them) and [{"answer",
    "verdict"}] per attempt: each solve action (its answer by `extract`) and the verification after
    it. The i-th solve action is the i-th attempt."""
    actions = [RecordAction.parsed(a) for a in parse(text, fmt, extract).actions]
    out: list[dict] = []
    for a in actions:
        if a.kind == SOLVE:
            out.append({"answer": a.answer, "verdict": None})
        elif out and out[-1]["verdict"] is None:
            out[-1]["verdict"] = a.verdict
        # a verification with no attempt before it (or a second one in a row) judges nothing
    return actions, out or [{"answer": None, "verdict": None}]


def render_all(backend: Backend, conversations: Sequence[list[dict]], s: Settings, first: bool = True) -> list[str]:
    """The prompts of the conversations; for the first assistant turn, each ends with the assistant
    prefix (PromptConfig.assistant_prefix), which the model writes on after (not part of its text)."""
    tokenizer = getattr(backend, "tokenizer", None)
    prefix = s.prompt.assistant_prefix if first else ""
    return [render_prompt(conv, s.prompt, tokenizer) + prefix for conv in conversations]


def run_s2r(backend: Backend, conversations: Sequence[list[dict]], s: Settings) -> list[Rollout]:
    prompts = render_all(backend, conversations, s)
    params = s.params
    if getattr(backend, "keeps_stop_strings", False):  # end right at a "correct" verdict: no tokens past it
        params = replace(params, stop=(*params.stop, s.fmt.correct_sentence), include_stop=True)
    n = len(prompts)
    texts, tokens = [""] * n, [0] * n
    truncated, errors, stopped = [False] * n, [None] * n, [False] * n
    markers: list[list] = [[] for _ in range(n)]  # [start, end, "eos" | "cut", kind] of each marker the loop wrote
    sampled: list[list] = [[] for _ in range(n)]  # [start, end, log π] of each generated token (params.logprobs)
    active = list(range(n))
    while active:
        # One round for every active trajectory, in one call, each with the rest of its budget.
        outs = backend.complete([prompts[i] + texts[i] for i in active], params, [s.max_tokens - tokens[i] for i in active])
        still = []
        for i, c in zip(active, outs):
            if c.finish_reason == "error":
                errors[i] = c.error
                continue
            if params.logprobs and c.logprobs is not None:
                kept = [x for x in sampled[i] if x[1] <= len(texts[i])]  # tokens of text the loop cut off go
                sampled[i] = kept + sampled_spans(backend.tokenizer, c.token_ids, c.logprobs, len(texts[i]))
            texts[i] += c.text
            tokens[i] += c.num_tokens
            full = len(texts[i])
            texts[i], status = settle(texts[i], s.fmt, s.max_attempts)
            if status == ENDED:  # the model stopped right there, or generated on and was cut
                stopped[i] = c.finish_reason == "stop" and c.stop_string is None and len(texts[i]) == full
                continue
            if c.finish_reason == "length" or tokens[i] >= s.max_tokens:
                truncated[i] = True
                continue
            if status in (RETRY, CHECK):  # the model stopped, or went on without the marker
                start = len(texts[i])
                kind, marker = ("retry", s.fmt.retry_marker) if status == RETRY else ("verify", s.fmt.verify_marker)
                texts[i] += f"\n\n{marker}\n"
                markers[i].append([start, len(texts[i]), "cut" if start < full else "eos", kind])
                still.append(i)
        active = still
    rollouts = []
    for i in range(n):
        actions, attempts = actions_and_attempts(texts[i], s.fmt, s.task.extract)
        extra = {"stopped": stopped[i], "loop_markers": markers[i], **({"sampled": sampled[i]} if params.logprobs else {})}
        rollouts.append(Rollout(texts[i], attempts, tokens[i], truncated[i], errors[i], extra, prompts[i], actions))
    return rollouts


# ----------------------------------------------------------------------------------- baselines


def _single_params(backend: Backend, s: Settings) -> SamplingParams:
    # Stop where a verification would begin, so an S²R-trained model gives exactly one attempt; a
    # backend that keeps stop strings also stops at a verdict sentence, which ends a check written
    # on without the verify marker (_one_attempt cuts it off), so no tokens are spent past it.
    keeps = getattr(backend, "keeps_stop_strings", False)
    verdicts = (s.fmt.correct_sentence, s.fmt.incorrect_sentence) if keeps else ()
    return replace(s.params, max_tokens=s.max_tokens, stop=(*s.params.stop, f"\n{s.fmt.verify_marker}", *verdicts),
                   include_stop=s.params.include_stop or keeps)


def _one_attempt(c: Completion, s: Settings, prompt: str = "") -> Rollout:
    """The first attempt of a completion: its text up to a verify marker, or up to its answer line
    where a check follows it without the marker (unmarked_check); such an attempt is complete, not
    truncated. Every generated token counts. Its one action, a solve, spans the whole text."""
    if c.finish_reason == "error":
        return Rollout("", [], error=c.error)
    text, truncated = c.text, c.finish_reason == "length"
    first = parse(text, s.fmt, s.task.extract).actions[0]
    body = 0
    if first.kind == SOLVE:
        body = first.end - len(first.text)
        end = unmarked_check(text, first, s.fmt)
        end = first.end if end is None else end
        if end < len(text):
            text, truncated = text[:end], False
    answer = s.task.extract(text)
    return Rollout(text, [{"answer": answer, "verdict": None}], c.num_tokens, truncated, prompt=prompt,
                   actions=[RecordAction(SOLVE, 0, len(text), min(body, len(text)), answer)])


def run_single(backend: Backend, conversations: Sequence[list[dict]], s: Settings) -> list[Rollout]:
    prompts = render_all(backend, conversations, s)
    outs = backend.complete(prompts, _single_params(backend, s))
    return [_one_attempt(c, s, p) for c, p in zip(outs, prompts)]


def run_majority(backend: Backend, conversations: Sequence[list[dict]], s: Settings) -> list[Rollout]:
    prompts, k = render_all(backend, conversations, s), s.votes
    outs = backend.complete([p for p in prompts for _ in range(k)], _single_params(backend, s))
    rollouts = []
    for i in range(len(prompts)):
        samples = [_one_attempt(c, s, prompts[i]) for c in outs[i * k : (i + 1) * k]]
        failed = [r.error for r in samples if r.error]
        if failed:
            rollouts.append(Rollout("", [], error=failed[0]))
            continue
        answers = [r.attempts[0]["answer"] for r in samples]
        winner = vote(answers)
        shown = samples[winner] if winner is not None else samples[0]
        answer = answers[winner] if winner is not None else None
        rollouts.append(Rollout(
            shown.text, [{"answer": answer, "verdict": None}],
            sum(r.tokens for r in samples), any(r.truncated for r in samples),
            extra={"votes": answers}, prompt=prompts[i], actions=[replace(shown.actions[0], answer=answer)],
        ))
    return rollouts


def run_intrinsic(backend: Backend, conversations: Sequence[list[dict]], s: Settings) -> list[Rollout]:
    first = run_single(backend, conversations, s)
    second_prompts = render_all(backend, [
        conv + [{"role": "assistant", "content": s.prompt.assistant_prefix + r.text.strip()},
                {"role": "user", "content": s.prompt.review_prompt}]
        for conv, r in zip(conversations, first)
    ], s, first=False)
    second = backend.complete(second_prompts, replace(s.params, max_tokens=s.max_tokens))
    rollouts = []
    for r1, c in zip(first, second):
        if r1.error or c.finish_reason == "error":
            rollouts.append(Rollout("", [], error=r1.error or c.error))
            continue
        a1 = r1.attempts[0]["answer"]
        a2 = s.task.extract(c.text)
        a2 = a2 if a2 is not None else a1
        turn1 = r1.text.strip()
        text = f"{turn1}{INTRINSIC_SEPARATOR}{c.text}"
        cut = len(turn1)  # the second turn's span starts at the separator line
        rollouts.append(Rollout(
            text, [{"answer": a1, "verdict": None}, {"answer": a2, "verdict": None}],
            r1.tokens + c.num_tokens, r1.truncated or c.finish_reason == "length", prompt=r1.prompt,
            actions=[RecordAction(SOLVE, 0, cut, 0, a1), RecordAction(SOLVE, cut, len(text), cut + len(INTRINSIC_SEPARATOR), a2)],
        ))
    return rollouts


Strategy = Callable[[Backend, Sequence[list[dict]], Settings], list[Rollout]]
STRATEGIES: dict[str, Strategy] = {
    "s2r": run_s2r,
    "single": run_single,
    "majority": run_majority,
    "intrinsic": run_intrinsic,
}


# ----------------------------------------------------------------------------------- problems -> records


def solve_problems(
    backend: Backend,
    jobs: Sequence[tuple[str, Problem, int]],
    strategy: str,
    s: Settings,
    grader: Grader,
) -> tuple[list[dict], list[str]]:
    """Run `strategy` on (benchmark, problem, sample) jobs. Returns (trajectory records: each a
    records.Trajectory, dumped; errors); jobs whose generation failed produce no record, only an
    error message. Each solve action is graded as its attempt."""
    conversations = [messages_for(p.problem, s.prompt) for _, p, _ in jobs]
    rollouts = STRATEGIES[strategy](backend, conversations, s)
    ok = [(job, r) for job, r in zip(jobs, rollouts) if r.error is None]
    grades = iter(s.task.grade_many([(a["answer"], job[1].gold) for job, r in ok for a in r.attempts], grader))
    records = []
    for (bench, p, sample), r in ok:
        attempts = []
        for a in r.attempts:
            g = next(grades)
            attempts.append({"answer": a["answer"], "grade": g.verdict, "verdict": a["verdict"], "reason": g.reason})
        records.append(Trajectory(
            benchmark=bench, **p.as_dict(), sample=sample, strategy=strategy, attempts=attempts, tokens=r.tokens,
            truncated=r.truncated, text=r.text, **r.extra, certainty=stated_certainty(r.text), prompt=r.prompt,
            actions=graded(r.actions, attempts),
        ).dump())
    return records, [r.error for r in rollouts if r.error is not None]
