"""THE grader: extraction rules, agreement with math-verify, hard timeouts on hostile input."""

import logging
import os
import random

import pytest
from math_verify import parse as mv_parse
from math_verify import verify as mv_verify

from s2r.grader import Grader, compare, extract_answer, last_boxed

logging.getLogger("math_verify").setLevel(logging.CRITICAL)


def native(pred: str, gold: str) -> bool:
    """math-verify on its own, in this process (only for inputs that cannot hang)."""
    return mv_verify(mv_parse("$" + gold + "$"), mv_parse("$" + pred + "$"))


@pytest.mark.parametrize(
    "text, answer",
    [
        (r"so \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{1} then \boxed{ 2 }", "2"),  # the last box wins
        (r"\fbox{7}", "7"),
        (r"\boxed{\left\{1,2\right\}}", r"\left\{1,2\right\}"),  # escaped braces are text
        (r"\boxed{a^{b^{c}}} and \boxed{unclosed", "a^{b^{c}}"),  # an unclosed box is skipped
        ("work\n#### 1,000", "1,000"),
        ("The answer is $42$.", "42"),
        ("so the final answer is 3.5.", "3.5"),
        ("Final answer: x = 3", "x = 3"),
        ("Therefore, the answer is correct.", None),  # the verdict sentence is not an answer
        ("no answer at all", None),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_last_boxed_none_without_box():
    assert last_boxed("nothing here") is None


ORDINARY = [  # (pred, gold), correct and incorrect, in the notations benchmarks use
    (r"\frac12", "0.5"), ("1/3", r"\frac{1}{3}"), ("2", "3"), (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
    (r"(3, \pi)", r"(3,\frac{\pi}{2})"), ("10-4n", "10-4 n"), ("4n-10", "10-4 n"), ("1,000", "1000"),
    ("025", "25"), (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}"), (r"x^2+2x+1", "(x+1)^2"), ("x^2+1", "(x+1)^2"),
    (r"\{1,2,3\}", r"\{3,2,1\}"), ("[1, 2)", "[1,2)"), ("(1, 2)", "[1,2]"), (r"2\pi", r"2 \pi"),
    ("0.333333", r"\frac{1}{3}"), ("12%", "12"), ("-7", "7"), (r"\dfrac{3}{4}", "0.75"), ("x=3", "3"),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"), ("e^{i\\pi}", "-1"),
]


@pytest.mark.parametrize("pred, gold", ORDINARY)
def test_agrees_with_math_verify(grader, pred, gold):
    ours = grader.grade(rf"Thus \boxed{{{pred}}}.", gold)
    assert ours.pred == pred
    assert ours.correct == native(pred, gold), ours


def test_integer_shortcut_agrees_with_math_verify():
    rng = random.Random(0)
    pairs = [(str(rng.randint(-50, 50)), str(rng.randint(-50, 50))) for _ in range(40)]
    pairs += [("007", "7"), ("+3", "3"), ("-0", "0")]
    for pred, gold in pairs:
        assert (compare(pred, gold)[0] == "correct") == native(pred, gold), (pred, gold)


def test_hostile_inputs_are_unverifiable_and_never_hang():
    hostile = [r"9^{9^{9^{9}}}", r"(10^8)!", "+".join(["x"] * 25_000)]
    with Grader(timeout=1.0, workers=2) as g:
        grades = g.grade_many([(rf"\boxed{{{h}}}", "5") for h in hostile] + [(r"\boxed{5}", "5"), (r"\boxed{\frac{10}{2}}", "5")])
    assert [x.verdict for x in grades] == ["unverifiable"] * 3 + ["correct", "correct"]
    assert grades[0].reason == grades[1].reason == "timeout after 1s"
    assert grades[2].reason.startswith("answer too long")


def test_worker_start_up_is_not_timed():
    """Importing math-verify takes a fresh worker 0.5 s to seconds; before the ready handshake that
    time counted against the first item, so a new or replacement worker timed a plain `1/2` out."""
    with Grader(timeout=0.25, workers=2) as g:
        first = g.grade_many([(r"\boxed{\frac{1}{2}}", "0.5"), (r"\boxed{\frac{3}{4}}", "0.75")])
        hostile = g.grade(r"\boxed{9^{9^{9^{9}}}}", "5")  # kills its worker: the next item meets a new one
        after = g.grade_many([(r"\boxed{\frac{2}{4}}", "0.5"), (r"\boxed{\frac{5}{4}}", "1.25")])
    assert [x.verdict for x in first + after] == ["correct"] * 4
    assert hostile.reason == "timeout after 0.25s"


def test_a_worker_that_cannot_start_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("s2r.grader.sys.executable", "false")  # exits at once, never says it is ready
    with Grader(timeout=1, workers=1) as g, pytest.raises(RuntimeError, match="did not start"):
        g.grade(r"\boxed{\frac{1}{2}}", "0.5")


def test_long_answers_go_to_math_verify_when_allowed():
    expr = "+".join(["1"] * 400)  # 799 characters, parses fine
    with Grader(timeout=10, workers=1, max_answer_chars=1000) as g:
        assert g.grade(rf"\boxed{{{expr}}}", "400").verdict == "correct"


def test_no_answer_is_unverifiable_not_incorrect(grader):
    g = grader.grade("I do not know.", "5")
    assert (g.verdict, g.pred, g.reason) == ("unverifiable", None, "no answer found")


def test_empty_gold_is_unverifiable(grader):
    assert grader.grade(r"\boxed{5}", "").verdict == "unverifiable"


def test_worker_killed_from_outside_is_replaced():
    with Grader(timeout=5, workers=2) as g:
        assert g.grade(r"\boxed{\frac{1}{2}}", "0.5").correct
        for w in g._workers:
            os.kill(w.proc.pid, 9)
            w.proc.wait()
        assert g.grade(r"\boxed{\frac{2}{4}}", "0.5").correct


def test_results_keep_input_order_and_report_progress():
    seen = []
    items = [(rf"\boxed{{\frac{{{i}}}{{2}}}}", str(i / 2)) for i in range(30)] + [(r"\boxed{x+1}", "x+2")]
    with Grader(timeout=5, workers=2) as g:
        grades = g.grade_many(items, on_result=lambda i, _: seen.append(i))
    assert [x.verdict for x in grades] == ["correct"] * 30 + ["incorrect"]
    assert sorted(seen) == list(range(31))


def test_math500_solutions_against_their_answers(grader, data_dir):
    """The gold-answer convention of math500 (answer field) agrees with the boxed solution, and a
    neighbour's answer is judged exactly as math-verify judges it."""
    from s2r.jsonl import read_jsonl

    recs = list(read_jsonl(data_dir / "math500" / "test.jsonl"))
    same = grader.grade_many([(r["solution"], r["answer"]) for r in recs])
    assert all(x.correct for x in same)
    shifted = grader.grade_many([(r["solution"], recs[(i + 1) % len(recs)]["answer"]) for i, r in enumerate(recs)])
    for i, (r, x) in enumerate(zip(recs, shifted)):
        expected = mv_verify(mv_parse("$" + recs[(i + 1) % len(recs)]["answer"] + "$"), mv_parse(r["solution"]))
        assert x.correct == expected, (i, x)


def test_a_long_gold_is_the_graders_failure_not_a_mismatch():
    """The gold answer is capped like the answer: no grader timeout spent on it, and a grade that
    `grader_failed` reports (RL and `s2r hard` leave it out)."""
    from s2r.grader import grader_failed

    with Grader(timeout=2, workers=1, max_answer_chars=10) as g:
        (grade,) = g.grade_answers([("1", "1" * 11)])
        assert grade.verdict == "unverifiable" and grader_failed(grade.reason) and "gold answer too long" in grade.reason
        (grade,) = g.grade_answers([(None, "x" * 11)])  # the gold's fault wins over "no answer found"
        assert grader_failed(grade.reason)
