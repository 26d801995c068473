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


@pytest.mark.parametrize("style", sorted(arith.VERIFIERS))
def test_verifiers_agree_with_the_grader(style):
    """Thousands of (problem, answer) pairs: the verifier's verdict equals the grader's."""
    verify = arith.VERIFIERS[style]
    rng = random.Random(0)
    pairs = []
    for p in arith.generate("train", 600, seed=1):
        pairs += [(p, p.gold), (p, "0" + p.gold), (p, p.gold + ".0")] + [(p, w) for w in wrong_answers(int(p.gold), rng)]
    with Grader(workers=2) as g:
        grades = g.grade_answers([(answer, p.gold) for p, answer in pairs])
    verdicts = [verdict_of(verify(p.problem, answer)) for p, answer in pairs]
    assert len(pairs) > 5000
    mismatches = [(p.problem, a, v, gr.verdict) for (p, a), v, gr in zip(pairs, verdicts, grades)
                  if (v == "correct") != gr.correct]
    assert not mismatches, mismatches[:5]


def test_verification_texts_parse_in_a_trajectory():
    p = next(arith.generate("test", 1, seed=2))
    wrong = str(int(p.gold) + 3)
    attempt = arith.solution(p.problem).replace(f"\\boxed{{{p.gold}}}", f"\\boxed{{{wrong}}}")
    for style, verify in arith.VERIFIERS.items():
        text = render([attempt, arith.solution(p.problem)], [verify(p.problem, wrong), verify(p.problem, p.gold)])
        parsed = parse(text)
        assert parsed.answers == [wrong, p.gold] and parsed.verdicts == ["incorrect", "correct"], style


def test_confirmative_check_works_back_from_the_answer():
    """It never re-solves: every value it computes for a wrong answer is the value it computes for
    the right answer, shifted by the error (+ and − undo linearly)."""
    import re

    def values(text):
        return [int(v) for v in re.findall(r"= (\d+)$", text, re.MULTILINE)]

    for p in arith.generate("test", 200, seed=9):
        error = 7
        right = values(arith.confirmative_check(p.problem, p.gold))
        wrong = values(arith.confirmative_check(p.problem, str(int(p.gold) + error)))
        assert len(right) == len(arith.LEVELS[p.level]) and wrong == [v + error for v in right]
        assert right[-1] == arith.operands_of(p.problem)[0][0]  # lands on the first number


def test_check_exercises_show_a_solution_half_of_them_slipped():
    rng = random.Random(0)
    verdicts = []
    for p in arith.generate("train", 400, seed=0):
        question, completion = arith.check_exercise(p.problem, rng)
        assert question.startswith(f"Check this solution. {p.problem}\n")
        shown = parse(question.split("\n", 1)[1])
        assert completion.startswith(DEFAULT_FORMAT.verify_marker + "\n")
        verdict = parse("x\n\n" + completion).verdicts[0]
        assert verdict == ("correct" if shown.final_answer == p.gold else "incorrect")
        assert f"Start from {shown.final_answer} and" in completion
        verdicts.append(verdict)
    assert 150 < verdicts.count("incorrect") < 250
