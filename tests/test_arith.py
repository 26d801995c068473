"""The embedded task: generator, splits, levels, solutions and the two programmatic verifiers."""

import operator
import random

import pytest

from s2r.format import DEFAULT_FORMAT, parse, render, verdict_of
from s2r.grader import Grader
from s2r.tasks import arith, load_problems

OPS = {"+": operator.add, "-": operator.sub}


def evaluate(problem: str) -> int:
    """An independent evaluator (left to right), not the task's own code."""
    tokens = problem.removeprefix("Compute ").rstrip(".").split()
    value = int(tokens[0])
    for op, n in zip(tokens[1::2], tokens[2::2]):
        value = OPS[op](value, int(n))
    return value


def test_deterministic_per_seed():
    assert list(arith.generate("test", 50, seed=3)) == list(arith.generate("test", 50, seed=3))
    assert [p.problem for p in arith.generate("test", 50, seed=3)] != [p.problem for p in arith.generate("test", 50, seed=4)]


def test_splits_are_disjoint():
    test = {p.problem for p in arith.generate("test")}
    val = {p.problem for p in arith.generate("val")}
    train = {p.problem for p in arith.generate("train", 50_000)}
    assert len(test) == 1000 and len(val) == 1000  # no repeats inside val and test
    assert not test & train and not val & train and not test & val
    assert all(arith.split_of(t, 0) == "test" for t in test)


def test_levels_and_gold():
    problems = list(arith.generate("test"))
    for level in range(1, 6):
        these = [p for p in problems if p.level == level]
        assert len(these) == 200
        assert all(len(p.problem.split()) == 2 + 2 * len(arith.LEVELS[level]) for p in these)
    for p in problems:
        assert int(p.gold) == evaluate(p.problem) >= 0
        numbers, ops = arith.operands_of(p.problem)
        assert all(t >= 0 for t in arith.running_totals(numbers, ops))


def test_loader_names():
    assert [p.id for p in load_problems("arith", limit=3)] == [p.id for p in arith.generate("test", 3)]
    assert load_problems("arith:val:5", limit=2) == list(arith.generate("val", 2, seed=5))
    with pytest.raises(ValueError):
        load_problems("arith:dev")


def test_solutions_grade_correct_and_parse():
    problems = list(arith.generate("train", 300))
    with Grader(workers=1) as g:
        grades = g.grade_many([(arith.solution(p.problem), p.gold) for p in problems])
    assert all(x.correct for x in grades)
    p = problems[7]
    assert parse(arith.solution(p.problem)).answers == [p.gold]


def wrong_answers(gold: int, rng: random.Random) -> list[str]:
    return [str(gold + d) for d in (1, -1, 10, -10, rng.randint(2, 40))] + [str(rng.randint(0, 300)), "x", f"{gold}.5"]


def verifier_cases():
    rng = random.Random(0)
    pairs = []
    for p in arith.generate("train", 600, seed=1):
        pairs += [(p, p.gold), (p, "0" + p.gold), (p, p.gold + ".0")] + [(p, w) for w in wrong_answers(int(p.gold), rng)]
    with Grader(workers=2) as g:
        grades = g.grade_answers([(answer, p.gold) for p, answer in pairs])
    assert len(pairs) > 5000
    return pairs, grades


def test_problem_solving_check_agrees_with_the_grader():
    """Thousands of (problem, answer) pairs: the verdict equals the grader's."""
    pairs, grades = verifier_cases()
    verdicts = [verdict_of(arith.problem_solving_check(p.problem, answer)) for p, answer in pairs]
    mismatches = [(p.problem, a, v, gr.verdict) for (p, a), v, gr in zip(pairs, verdicts, grades)
                  if (v == "correct") != gr.correct]
    assert not mismatches, mismatches[:5]


def test_confirmative_check_accepts_every_right_answer_and_rejects_a_wrong_last_digit():
    """Its verdict is "correct" exactly when the answer is a whole number with the right last digit:
    every right answer passes, every wrong one with another last digit fails, and off-by-10 slips
    pass (the grader-agreement filter of `s2r build` drops those verifications)."""
    pairs, grades = verifier_cases()
    for (p, answer), gr in zip(pairs, grades):
        verdict = verdict_of(arith.confirmative_check(p.problem, answer))
        value = arith.as_int(answer)
        expected = value is not None and abs(value) % 10 == int(p.gold) % 10
        assert (verdict == "correct") == expected, (p.problem, answer)
        if gr.correct:
            assert verdict == "correct"


def test_confirmative_check_follows_last_digits_only():
    p = "Compute 47 + 8 - 19 + 6."
    assert arith.confirmative_check(p, "43") == (
        "Check the last digits.\n7 + 8 ends in 5\n5 - 9 ends in 6\n6 + 6 ends in 2\n"
        "So the answer ends in 2, and 43 ends in 3.\nTherefore, the answer is incorrect.")
    assert arith.confirmative_check(p, "42").endswith("and 42 ends in 2.\nTherefore, the answer is correct.")
    assert arith.confirmative_check(p, "4.5") == "The answer 4.5 is not a whole number.\nTherefore, the answer is incorrect."


def test_verification_texts_parse_in_a_trajectory():
    p = next(arith.generate("test", 1, seed=2))
    wrong = str(int(p.gold) + 3)
    attempt = arith.solution(p.problem).replace(f"\\boxed{{{p.gold}}}", f"\\boxed{{{wrong}}}")
    for style, verify in arith.VERIFIERS.items():
        text = render([attempt, arith.solution(p.problem)], [verify(p.problem, wrong), verify(p.problem, p.gold)])
        parsed = parse(text)
        assert parsed.answers == [wrong, p.gold] and parsed.verdicts == ["incorrect", "correct"], style


def test_check_exercises_show_a_solution_half_of_them_slipped():
    rng = random.Random(0)
    verdicts = []
    for p in arith.generate("train", 400, seed=0):
        question, completion = arith.check_exercise(p.problem, rng)
        assert question.startswith(f"Check this solution. {p.problem}\n")
        shown = parse(question.split("\n", 1)[1])
        assert completion.startswith(DEFAULT_FORMAT.verify_marker + "\n")
        verdict = parse("x\n\n" + completion).verdicts[0]
        same_digit = shown.final_answer[-1] == p.gold[-1]  # the check's verdict (a slip by 10 passes)
        assert verdict == ("correct" if same_digit else "incorrect")
        assert f"and {shown.final_answer} ends in" in completion
        verdicts.append(verdict)
    assert 150 < verdicts.count("incorrect") < 250
