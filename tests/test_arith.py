"""The embedded task: generator, splits, levels, solutions and the two programmatic verifiers."""

import random
import re

import pytest

from s2r.format import DEFAULT_FORMAT, parse, render, verdict_of
from s2r.grader import Grader
from s2r.tasks import arith, load_problems


def test_deterministic_per_seed():
    assert list(arith.generate("test", 50, seed=3)) == list(arith.generate("test", 50, seed=3))
    assert [p.problem for p in arith.generate("test", 50, seed=3)] != [p.problem for p in arith.generate("test", 50, seed=4)]


def test_splits_are_disjoint_and_cover_every_problem():
    splits = {name: [p.problem for p in arith.generate(name)] for name in arith.SPLITS}
    sizes = {name: len(v) for name, v in splits.items()}
    assert sum(sizes.values()) == len(arith.QUOTIENTS) * len(arith.DIVISORS) == 7920
    assert all(len(set(v)) == len(v) for v in splits.values())  # no repeats inside a split
    assert sizes["test"] >= 1000 and sizes["train"] >= 2000 and sizes["val"] >= 200
    seen = set()
    for name, texts in splits.items():
        assert not seen & set(texts)
        seen |= set(texts)
        assert all(arith.split_of(t, 0) == name for t in texts)


def test_only_the_base_split_repeats_in_new_orders():
    n = len(arith.pairs_of("base", 0))
    stream = [p.problem for p in arith.generate("base", 2 * n + 5)]
    assert len(stream) == 2 * n + 5 and set(stream[:n]) == set(stream[n : 2 * n]) and stream[:n] != stream[n : 2 * n]
    assert len(list(arith.generate("test", 10**6))) == len(arith.pairs_of("test", 0))


def test_levels_and_gold():
    problems = list(arith.generate("test"))
    assert {p.level for p in problems} == {1, 2, 3, 4, 5}
    for p in problems:
        m = re.fullmatch(r"Compute (\d+) / (\d)\.", p.problem)
        n, d, q = int(m[1]), int(m[2]), int(p.gold)
        assert n == q * d and 2 <= d <= 9 and q in arith.QUOTIENTS and d in arith.LEVELS[p.level]


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
    return [str(gold + d) for d in (1, -1, 10, -10, 100, rng.randint(2, 40))] + [
        str(rng.randint(1, 2000)), str(arith.near_miss(gold, rng)), "0", "x", f"{gold}.5", f"-{gold}"]


def verifier_cases():
    rng = random.Random(0)
    pairs = []
    for p in arith.generate("train", 500, seed=1):
        pairs += [(p, p.gold), (p, "0" + p.gold), (p, p.gold + ".0")] + [(p, w) for w in wrong_answers(int(p.gold), rng)]
    with Grader(workers=2) as g:
        grades = g.grade_answers([(answer, p.gold) for p, answer in pairs])
    assert len(pairs) > 7000
    return pairs, grades


@pytest.mark.parametrize("style", ["confirmative", "problem-solving"])
def test_each_check_agrees_with_the_grader(style):
    """Thousands of (problem, answer) pairs: the verdict equals the grader's."""
    pairs, grades = verifier_cases()
    verdicts = [verdict_of(arith.VERIFIERS[style](p.problem, answer)) for p, answer in pairs]
    mismatches = [(p.problem, a, v, gr.verdict) for (p, a), v, gr in zip(pairs, verdicts, grades)
                  if (v == "correct") != gr.correct]
    assert not mismatches, mismatches[:5]


LINE = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)(?: r (\d+))?")
OPS = {"+": lambda a, b, c, r: a + b == c, "-": lambda a, b, c, r: a - b == c, "*": lambda a, b, c, r: a * b == c,
       "/": lambda a, b, c, r: a == b * c + r and 0 <= r < b}


def test_confirmative_check_is_true_line_by_line_and_finds_the_answer():
    """Every equation it writes is true (each step of the long division too), its digit comparison
    is right, and a rejected whole number is followed by the right answer (checked by an independent
    evaluator, not the task's code)."""
    pairs, _ = verifier_cases()
    for p, answer in pairs:
        text = arith.confirmative_check(p.problem, answer)
        for a, op, b, c, r in LINE.findall(text):
            assert OPS[op](int(a), int(b), int(c), int(r or 0)), (p.problem, answer, text)
        value = arith.as_int(answer)
        if value is None or value < 0:
            assert "is not a whole number" in text
            continue
        n, product = map(int, re.search(r"Compare (\d+) and (\d+):", text).groups())
        assert product == value * int(p.problem.split()[3].rstrip("."))
        if product == n:
            assert text.endswith(f"so {n} is right.\n{DEFAULT_FORMAT.correct_sentence}")
        else:
            assert f"is {'too small' if product < n else 'too big'}." in text
            assert text.endswith(f"so the answer is {p.gold}.\n{DEFAULT_FORMAT.incorrect_sentence}"), text


def test_confirmative_check_by_example():
    assert arith.confirmative_check("Compute 91 / 7.", "12") == (
        "12 * 7: 10 * 7 = 70, 2 * 7 = 14\n70 + 14 = 84\nCompare 91 and 84: 9 > 8, so 84 is too small.\n"
        "91 / 7: 9 / 7 = 1 r 2, 21 / 7 = 3 r 0, so the answer is 13.\nTherefore, the answer is incorrect.")
    assert arith.confirmative_check("Compute 8316 / 9.", "924") == (
        "924 * 9: 900 * 9 = 8100, 20 * 9 = 180, 4 * 9 = 36\n8100 + 180 = 8280\n8280 + 36 = 8316\n"
        "Compare 8316 and 8316: 8 = 8, 3 = 3, 1 = 1, 6 = 6, so 8316 is right.\nTherefore, the answer is correct.")
    assert arith.confirmative_check("Compute 840 / 8.", "150").splitlines()[:4] == [  # a part per digit, 0 too
        "150 * 8: 100 * 8 = 800, 50 * 8 = 400, 0 * 8 = 0", "800 + 400 = 1200", "1200 + 0 = 1200",
        "Compare 840 and 1200: 0 < 1, so 1200 is too big."]
    assert arith.confirmative_check("Compute 6440 / 8.", "805").splitlines()[:3] == [
        "805 * 8: 800 * 8 = 6400, 0 * 8 = 0, 5 * 8 = 40", "6400 + 0 = 6400", "6400 + 40 = 6440"]
    assert arith.confirmative_check("Compute 91 / 7.", "4.5") == (
        "The answer 4.5 is not a whole number.\nTherefore, the answer is incorrect.")


def test_long_division_and_its_drill():
    assert arith.long_division(6118, 7) == "6118 / 7: 6 / 7 = 0 r 6, 61 / 7 = 8 r 5, 51 / 7 = 7 r 2, 28 / 7 = 4 r 0"
    assert arith.long_division(840, 8) == "840 / 8: 8 / 8 = 1 r 0, 4 / 8 = 0 r 4, 40 / 8 = 5 r 0"  # a zero digit
    assert arith.division_drill("Compute 91 / 7.") == (
        "Divide digit by digit. Compute 91 / 7.", "91 / 7: 9 / 7 = 1 r 2, 21 / 7 = 3 r 0, so the answer is 13.")


def test_compare_digits():
    assert arith.compare_digits(91, 84) == ("9 > 8", 1)
    assert arith.compare_digits(91, 94) == ("9 = 9, 1 < 4", -1)
    assert arith.compare_digits(91, 91) == ("9 = 9, 1 = 1", 0)
    assert arith.compare_digits(994, 1001) == ("0 < 1", -1)


def test_verification_texts_parse_in_a_trajectory():
    p = next(arith.generate("test", 1, seed=2))
    wrong = str(int(p.gold) + 3)
    attempt = arith.guess_text(p.problem, wrong)
    for style, verify in arith.VERIFIERS.items():
        text = render([attempt, arith.solution(p.problem)], [verify(p.problem, wrong), verify(p.problem, p.gold)])
        parsed = parse(text)
        assert parsed.answers == [wrong, p.gold] and parsed.verdicts == ["incorrect", "correct"], style


def test_check_exercises_show_a_guess_half_of_them_wrong_and_retry_and_check_after_a_failed_check():
    rng = random.Random(0)
    verdicts = []
    for p in arith.generate("base", 400, seed=0):
        question, completion = arith.check_exercise(p.problem, rng)
        assert question.startswith(f"Check this solution. {p.problem}\n")
        shown = parse(question.split("\n", 1)[1]).final_answer
        assert completion.startswith(DEFAULT_FORMAT.verify_marker + "\n")
        parsed = parse("x\n\n" + completion)
        verdicts += parsed.verdicts
        if shown == p.gold:
            assert parsed.verdicts == ["correct"] and parsed.answers == [None]
        else:
            assert parsed.verdicts == ["incorrect", "correct"] and parsed.final_answer == p.gold
            assert completion.endswith(f"{DEFAULT_FORMAT.retry_marker}\n{arith.solution(p.problem)}\n"
                                       f"{DEFAULT_FORMAT.verify_marker}\n{arith.confirmative_check(p.problem, p.gold)}")
    assert 150 < verdicts.count("incorrect") < 250


def test_near_misses_are_wrong_positive_and_mostly_close():
    rng = random.Random(0)
    gaps = [abs(arith.near_miss(q, rng) - q) for q in range(10, 1000) for _ in range(3)]
    assert all(g > 0 for g in gaps)
    assert 0.6 < sum(g < 10 or g % 10 == 0 and g <= 50 for g in gaps) / len(gaps) < 0.95


def test_worked_trajectories_end_with_the_right_answer_checked_correct():
    rng = random.Random(1)
    for p in arith.generate("train", 50):
        parsed = parse(arith.worked_trajectory(p.problem, rng))
        assert parsed.final_answer == p.gold and parsed.verdicts[-1] == "correct"
        assert parsed.verdicts[:-1] == ["incorrect"] * (len(parsed.verdicts) - 1)
