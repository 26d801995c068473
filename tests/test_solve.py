"""The solve loop's control flow, made deterministic with a scripted fake model."""

import pytest
from fakes import ScriptedBackend

from s2r.format import DEFAULT_FORMAT as F
from s2r.grader import Grader
from s2r.prompts import PromptConfig
from s2r.loop import CHECK, ENDED, OPEN, RETRY, Settings, settle, solve_problems
from s2r.tasks import Problem

V = "\n\nWait, let me recheck my solution.\n"
R = "\n\nLet me try again.\n"
OK = "\nTherefore, the answer is correct."
BAD = "\nTherefore, the answer is incorrect."
PLAIN = Settings(max_tokens=400, prompt=PromptConfig(system="", template="plain"))


@pytest.fixture(scope="module")
def grader():
    with Grader(timeout=5, workers=1) as g:
        yield g


def run(scripts, strategy="s2r", settings=PLAIN, grader=None, gold="5", fail=(), keeps_stop_strings=False):
    backend = ScriptedBackend(scripts, set(fail), keeps_stop_strings)
    jobs = [("t", Problem(id=str(i), problem=p, gold=gold), 0) for i, p in enumerate(scripts)]
    records, errors = solve_problems(backend, jobs, strategy, settings, grader)
    return records, errors, backend


def shape(record):
    return [(a["answer"], a["grade"], a["verdict"]) for a in record["attempts"]]


def test_stops_at_the_first_correct_verdict(grader):
    script = r"\boxed{5}" + V + "5 checks out." + OK + R + r"\boxed{6}" + V + "fine" + OK
    (r,), _, backend = run({"p": [script]}, grader=grader)
    assert shape(r) == [("5", "correct", "correct")]
    assert r["text"] == r"\boxed{5}" + V + "5 checks out." + OK and not r["truncated"]
    assert len(backend.calls) == 1 and r["tokens"] == len(script) + 1  # every generated token counts
    assert r["stopped"] is False  # it generated on past the verdict: RL must not train an EOS there
    (r,), _, _ = run({"p": [r"\boxed{5}" + V + "yes." + OK]}, grader=grader)
    assert r["stopped"] is True  # EOS right after the verdict
    # a backend that keeps stop strings ends generation at the "correct" sentence: nothing is spent past it
    (r,), _, _ = run({"p": [script]}, grader=grader, keeps_stop_strings=True)
    assert r["text"] == r"\boxed{5}" + V + "5 checks out." + OK and r["tokens"] == len(r["text"])
    assert r["stopped"] is False  # the loop stopped it, not the model


def test_retries_after_incorrect_in_one_generation(grader):
    script = r"\boxed{4}" + V + "4 is too small." + BAD + R + r"\boxed{5}" + V + "yes." + OK
    (r,), _, backend = run({"p": [script]}, grader=grader)
    assert shape(r) == [("4", "incorrect", "incorrect"), ("5", "correct", "correct")]
    assert len(backend.calls) == 1 and r["loop_markers"] == []


def test_eos_after_incorrect_gets_the_retry_marker(grader):
    first = r"\boxed{4}" + V + "no." + BAD
    second = r"\boxed{5}" + V + "yes." + OK
    (r,), _, backend = run({"p": [first, second]}, grader=grader)
    assert len(backend.calls) == 2
    assert backend.calls[1][1].endswith(first + R)  # the loop opened the next attempt
    assert r["text"] == first + R + second
    assert shape(r) == [("4", "incorrect", "incorrect"), ("5", "correct", "correct")]
    assert r["tokens"] == len(first) + 1 + len(second) + 1  # generated tokens only, EOS included
    assert r["loop_markers"] == [[len(first), len(first + R), "eos", "retry"]]  # where the loop wrote, not the model


@pytest.mark.parametrize("went_on", [
    "\n\n\n" + r"\boxed{7}" + V + "yes." + OK,  # the next attempt without its marker: read as part of the check
    V + "no." + OK,  # a second check of the same attempt
    " Hmm." + R + r"\boxed{7}",  # more text after the verdict, then the marker
])
def test_the_retry_marker_follows_every_incorrect_verdict(grader, went_on):
    """An "incorrect" verdict closes its verification and the retry marker opens the next attempt
    (METHOD.md §1): whatever the model writes there instead is cut, and the loop writes the marker."""
    first = r"\boxed{4}" + V + "no." + BAD
    second = r"\boxed{5}" + V + "yes." + OK
    (r,), _, backend = run({"p": [first + went_on, second]}, grader=grader)
    assert len(backend.calls) == 2 and backend.calls[1][1].endswith(first + R)
    assert r["text"] == first + R + second
    assert shape(r) == [("4", "incorrect", "incorrect"), ("5", "correct", "correct")]
    assert r["tokens"] == len(first + went_on) + 1 + len(second) + 1  # the cut tokens were generated: they count
    assert r["loop_markers"] == [[len(first), len(first + R), "cut", "retry"]]


@pytest.mark.parametrize("check", [
    "\n\n\n5 * 1 = 5" + OK,  # a check of the attempt, its verify marker left out
    "\nWait, let me recheck.\n5 * 1 = 5" + BAD,  # a marker that is not the format's
])
def test_the_verify_marker_opens_every_check(grader, check):
    """A verification opens with the verify marker (METHOD.md §1): a check written on from the answer
    line without it is cut at the end of that line, and the loop writes the marker there."""
    first = "5 / 1 = 5\nThe answer is " + r"\boxed{5}."
    verification = "5 * 1 = 5" + OK
    (r,), _, backend = run({"p": [first + check, verification]}, grader=grader)
    assert len(backend.calls) == 2 and backend.calls[1][1].endswith(first + V)
    assert r["text"] == first + V + verification
    assert shape(r) == [("5", "correct", "correct")]
    assert r["tokens"] == len(first + check) + 1 + len(verification) + 1  # the cut tokens were generated: they count
    assert r["loop_markers"] == [[len(first), len(first + V), "cut", "verify"]]


def test_settle_finds_a_check_without_its_marker():
    answer = "12 / 4 = 3\nThe answer is " + r"\boxed{3}."
    assert settle(answer + "\n\n3 * 4 = 12" + OK, F, 4) == (answer, CHECK)
    assert settle(answer + V + "3 * 4 = 12" + BAD + R + answer + "\n3 * 4 = 12" + OK, F, 4) == (
        answer + V + "3 * 4 = 12" + BAD + R + answer, CHECK)  # in a retry too
    assert settle(answer, F, 4) == (answer, OPEN)  # an attempt that stops at its answer: nothing to write
    no_answer = "12 / 4: 1 / 4 = 0 r 1" + OK  # a verdict sentence before any answer line: left as it is
    assert settle(no_answer, F, 4) == (no_answer, OPEN)


def test_settle_keeps_a_retry_marker_on_its_own_line():
    one_newline = r"\boxed{4}" + V + "no." + BAD + "\nLet me try again.\n" + r"\boxed{5}"
    assert settle(one_newline, F, max_attempts=4) == (one_newline, OPEN)
    assert settle(r"\boxed{4}" + V + "no." + BAD + "  \n", F, 4) == (r"\boxed{4}" + V + "no." + BAD, RETRY)
    assert settle(r"\boxed{4}" + V + "no." + BAD + "\nok", F, 1) == (r"\boxed{4}" + V + "no." + BAD, ENDED)


def test_attempt_cap(grader):
    script = "".join(rf"\boxed{{{k}}}" + V + "no." + BAD + R for k in (1, 2, 3)) + r"\boxed{5}"
    settings = Settings(max_tokens=400, max_attempts=2, prompt=PLAIN.prompt)
    (r,), _, _ = run({"p": [script]}, settings=settings, grader=grader)
    assert shape(r) == [("1", "incorrect", "incorrect"), ("2", "incorrect", "incorrect")]
    assert r["text"].endswith(F.incorrect_sentence) and not r["truncated"]


def test_attempt_cap_after_an_unparsable_verdict():
    text = r"\boxed{1}" + V + "no." + BAD + R + r"\boxed{2}" + V + "hmm" + R + r"\boxed{3}"
    cut, status = settle(text, F, max_attempts=2)
    assert status == ENDED and cut == r"\boxed{1}" + V + "no." + BAD + R + r"\boxed{2}" + V + "hmm"


def test_token_cap_truncates(grader):
    script = r"\boxed{4}" + V + "checking " * 20 + OK
    settings = Settings(max_tokens=60, prompt=PLAIN.prompt)  # cut inside the verification
    (r,), _, _ = run({"p": [script]}, settings=settings, grader=grader)
    assert r["truncated"] and r["tokens"] == 60 and r["text"] == script[:60]
    assert shape(r) == [("4", "incorrect", "unparsable")]


def test_budget_counts_all_rounds(grader):
    first = r"\boxed{4}" + V + "no." + BAD  # then EOS
    settings = Settings(max_tokens=len(first) + 5, prompt=PLAIN.prompt)
    (r,), _, backend = run({"p": [first, r"\boxed{5}" + V + "yes." + OK]}, settings=settings, grader=grader)
    assert r["truncated"] and r["tokens"] == len(first) + 5  # round 2 got the 4 tokens that were left


def test_unparsable_verdict_ends_without_retry(grader):
    (r,), _, backend = run({"p": [r"\boxed{5}" + V + "looks fine to me"]}, grader=grader)
    assert shape(r) == [("5", "correct", "unparsable")] and len(backend.calls) == 1 and not r["truncated"]


def test_eos_after_an_attempt_without_verification(grader):
    (r,), _, _ = run({"p": [r"it is \boxed{5}"]}, grader=grader)
    assert shape(r) == [("5", "correct", None)] and not r["truncated"] and r["tokens"] == len(r"it is \boxed{5}") + 1


def test_failed_generation_is_reported_not_written(grader):
    records, errors, _ = run({"p": [r"\boxed{5}"], "q": [r"\boxed{5}"]}, fail={"q"}, grader=grader)
    assert [r["problem"] for r in records] == ["p"] and errors == ["scripted failure"]


def test_single_stops_where_a_verification_would_begin(grader):
    (r,), _, _ = run({"p": [r"\boxed{4}" + V + "no." + BAD + R + r"\boxed{5}"]}, "single", grader=grader)
    assert shape(r) == [("4", "incorrect", None)] and r["text"] == r"\boxed{4}" + "\n"


@pytest.mark.parametrize("keeps_stop_strings", [False, True])
def test_single_cuts_a_check_written_on_without_the_marker(grader, keeps_stop_strings):
    # an S²R-trained model checks right after its answer without the verify marker, then writes
    # another answer: the attempt is its first answer line, complete (not truncated)
    attempt = r"9 - 4 = 5" + "\n" + r"The answer is \boxed{5}."
    script = attempt + "\n\n5 + 4 = 9." + BAD + r" So \boxed{6}." + "x" * 50
    settings = Settings(max_tokens=len(script) - 10, prompt=PLAIN.prompt)
    (r,), _, _ = run({"p": [script]}, "single", settings=settings, grader=grader, keeps_stop_strings=keeps_stop_strings)
    assert r["text"] == attempt and shape(r) == [("5", "correct", None)] and not r["truncated"]
    # every generated token counts; a backend that keeps stop strings stops at the verdict sentence
    assert r["tokens"] == (script.index(BAD) + len(BAD) if keeps_stop_strings else len(script) - 10)


def test_majority_votes(grader):
    settings = Settings(max_tokens=100, votes=3, prompt=PLAIN.prompt)
    scripts = {"p": [r"\boxed{6}", r"\boxed{5}", r"\boxed{ 5 }"]}
    (r,), _, backend = run(scripts, "majority", settings=settings, grader=grader)
    assert shape(r) == [("5", "correct", None)] and r["votes"] == ["6", "5", "5"]
    assert r["tokens"] == sum(len(s) + 1 for s in scripts["p"])


def test_intrinsic_second_turn(grader):
    records, _, backend = run({"p": [r"\boxed{4}", r"Oops, it is \boxed{5}"], "q": [r"\boxed{5}", "I stand by it."]},
                              "intrinsic", grader=grader)
    assert shape(records[0]) == [("4", "incorrect", None), ("5", "correct", None)]
    assert shape(records[1]) == [("5", "correct", None), ("5", "correct", None)]  # no new answer: the first stands
    review = backend.calls[2][1]
    assert PLAIN.prompt.review_prompt in review and review.index(r"\boxed{4}") < review.index(PLAIN.prompt.review_prompt)
