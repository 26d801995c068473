"""The embedded task: seeded exact division, with exact grading and programmatic verifiers.

A problem divides a number by a one-digit divisor without remainder: "Compute 6118 / 7." (the
answer, the quotient, is 10..999; 7,920 problems). Levels 1–5 group the divisors by how hard
dividing by them is for the tiny model (seed-0 base models solved 89–92% at level 1 and 6–17% at
level 5; the quotient's size matters little):

    level  divisor  example
    1      2, 5     Compute 1748 / 2.
    2      3, 9     Compute 6318 / 9.
    3      4, 6     Compute 2544 / 6.
    4      7        Compute 6118 / 7.
    5      8        Compute 4816 / 8.

The solution is a direct guess ("91 / 7 = 13"): a tiny model trained from scratch learns to guess
the leading digits well and the rest only roughly, so on problems it never saw it misses by a few
units or tens.

The *confirmative* check is easier than solving, which is what self-verification needs: it
multiplies the guess back by parts (one-digit products, then additions), compares the product with
the number digit by digit from the left, and, when they differ, finds the answer by long division.
Every step is a small, local fact — a one-digit product, a sum, a comparison of two digits, a number
below 90 divided by one digit — so the check stays right where the guess, an inverse the model only
approximates, fails. (The arithmetic task this replaced — chains of additions and subtractions —
could not be checked by its own solver: checking used the same skills as solving, so the check
failed where the solver did; docs/results/2026-11-base-recipe-and-task.md.) The *problem-solving* check re-derives
the answer by long division and compares.

Splits are disjoint by construction: a problem belongs to a split by a hash of its text and the task
seed. `base` (40%) trains the base model, `train` (35%, problems the base model never saw) is where
behaviour initialisation and RL sample, `val` (5%) stops base training, `test` (20%) is evaluated.

`ArithTask` is the task as `--data arith:SPLIT` loads it; the recipe of its base model (`s2r base`)
is in base.py beside this file.
"""

import hashlib
import random
from collections.abc import Iterator
from functools import cache

from s2r.format import DEFAULT_FORMAT, TrajectoryFormat
from s2r.tasks.task import Problem, Task

DIVISORS, QUOTIENTS = range(2, 10), range(10, 1000)
LEVELS = {1: (2, 5), 2: (3, 9), 3: (4, 6), 4: (7,), 5: (8,)}  # level -> its divisors
SPLITS = {"base": (0, 40), "train": (40, 75), "val": (75, 80), "test": (80, 100)}  # share of the hash space, in %


def split_of(text: str, seed: int) -> str:
    bucket = int.from_bytes(hashlib.sha256(f"{seed}|{text}".encode()).digest()[:8], "big") % 100
    return next(name for name, (lo, hi) in SPLITS.items() if lo <= bucket < hi)


def problem_text(n: int, d: int) -> str:
    return f"Compute {n} / {d}."


def operands_of(problem: str) -> tuple[int, int]:
    """'Compute 91 / 7.' -> (91, 7)."""
    n, slash, d = problem.removeprefix("Compute ").rstrip(".").split()
    if slash != "/":
        raise ValueError(f"not a division problem: {problem!r}")
    return int(n), int(d)


def level_of(divisor: int) -> int:
    return next(level for level, divisors in LEVELS.items() if divisor in divisors)


@cache
def pairs_of(split: str, seed: int) -> tuple[tuple[int, int], ...]:
    """Every (quotient, divisor) of a split, in a seeded order."""
    pairs = [(q, d) for q in QUOTIENTS for d in DIVISORS if split_of(problem_text(q * d, d), seed) == split]
    random.Random(f"arith|{seed}|{split}").shuffle(pairs)
    return tuple(pairs)


def generate(split: str = "test", n: int | None = None, seed: int = 0) -> Iterator[Problem]:
    """The first n problems of a split (all of it by default), the same for the same seed. Only
    `base`, the base model's training stream, repeats: it runs through its problems epoch after
    epoch, each in a new seeded order; other splits end when their problems do."""
    if split not in SPLITS:
        raise ValueError(f"arith has splits {', '.join(SPLITS)}, not {split!r}")
    pairs = list(pairs_of(split, seed))
    count = len(pairs) if n is None else n if split == "base" else min(n, len(pairs))
    for i in range(count):
        epoch, j = divmod(i, len(pairs))
        if j == 0 and epoch:
            random.Random(f"arith|{seed}|{split}|{epoch}").shuffle(pairs)
        q, d = pairs[j]
        yield Problem(id=f"arith-{seed}/{split}/{i}", problem=problem_text(q * d, d), gold=str(q), level=level_of(d),
                      subject="division")


class ArithTask(Task):
    """The embedded task (`--data arith:train`, `arith:val:7`: split, then task seed), graded by the
    math grader; its teacher is the confirmative check."""

    name = "arith"

    def problems(self, split: str) -> list[dict]:
        name, _, seed = split.partition(":")
        return [p.as_dict() for p in generate(name, None, int(seed or 0))]

    def teacher(self, problem: str, answer: str) -> str | None:
        return confirmative_check(problem, answer)


# ----------------------------------------------------------------------------------- texts


def guess_text(problem: str, answer: int | str) -> str:
    n, d = operands_of(problem)
    return f"{n} / {d} = {answer}\nThe answer is \\boxed{{{answer}}}."


def solution(problem: str) -> str:
    """The solution the base model is trained on: the quotient, guessed directly."""
    n, d = operands_of(problem)
    return guess_text(problem, n // d)


def as_int(answer: str | None) -> int | None:
    """The whole number an answer denotes ("0303", "303.0" -> 303), as the grader compares it."""
    try:
        value = float(str(answer).replace(",", "").strip())
    except ValueError:
        return None
    return int(value) if value.is_integer() and abs(value) < 1e15 else None


def compare_digits(n: int, p: int) -> tuple[str, int]:
    """Compare two numbers digit by digit from the left, the shorter padded with zeros:
    (91, 84) -> ("9 > 8", 1); (91, 94) -> ("9 = 9, 1 < 4", -1); (91, 91) -> ("9 = 9, 1 = 1", 0)."""
    width = max(len(str(n)), len(str(p)))
    steps = []
    for a, b in zip(str(n).zfill(width), str(p).zfill(width)):
        steps.append(f"{a} {'=' if a == b else '>' if a > b else '<'} {b}")
        if a != b:
            return ", ".join(steps), 1 if a > b else -1
    return ", ".join(steps), 0


def long_division(n: int, d: int) -> str:
    """Divide digit by digit from the first, each step a number below 10·d by a one-digit divisor
    with remainder (the quotient's digits, leading zeros dropped, are the answer):
    (6118, 7) -> "6118 / 7: 6 / 7 = 0 r 6, 61 / 7 = 8 r 5, 51 / 7 = 7 r 2, 28 / 7 = 4 r 0"."""
    steps, r = [], 0
    for digit in str(n):
        chunk = r * 10 + int(digit)
        r = chunk % d
        steps.append(f"{chunk} / {d} = {chunk // d} r {r}")
    return f"{n} / {d}: " + ", ".join(steps)


def confirmative_check(problem: str, answer: str, fmt: TrajectoryFormat = DEFAULT_FORMAT) -> str:
    """Multiply the answer back by parts, one per digit (a zero digit too: 105 * 8 is 100 * 8, 0 * 8
    and 5 * 8, so the number of parts never depends on the digits), and compare the product with the
    number digit by digit; if they differ, find the answer by long division; then the verdict:

        Compute 91 / 7., answer 12  ->  12 * 7: 10 * 7 = 70, 2 * 7 = 14
                                        70 + 14 = 84
                                        Compare 91 and 84: 9 > 8, so 84 is too small.
                                        91 / 7: 9 / 7 = 1 r 2, 21 / 7 = 3 r 0, so the answer is 13.
                                        Therefore, the answer is incorrect.
    """
    n, d = operands_of(problem)
    g = as_int(answer)
    if g is None or g < 0:
        return fmt.verification(f"The answer {answer} is not a whole number.", "incorrect")
    digits = str(g)
    parts = [int(c) * 10 ** (len(digits) - 1 - i) for i, c in enumerate(digits)]  # a part per digit: 105 -> [100, 0, 5]
    products = [x * d for x in parts]
    lines = [f"{g} * {d}: " + ", ".join(f"{x} * {d} = {y}" for x, y in zip(parts, products))]
    p = products[0]
    for y in products[1:]:
        lines.append(f"{p} + {y} = {p + y}")
        p += y
    steps, sign = compare_digits(n, p)
    if sign == 0:
        lines.append(f"Compare {n} and {p}: {steps}, so {p} is right.")
        return fmt.verification("\n".join(lines), "correct")
    lines.append(f"Compare {n} and {p}: {steps}, so {p} is {'too small' if sign > 0 else 'too big'}.")
    lines.append(f"{long_division(n, d)}, so the answer is {n // d}.")
    return fmt.verification("\n".join(lines), "incorrect")


def problem_solving_check(problem: str, answer: str, fmt: TrajectoryFormat = DEFAULT_FORMAT) -> str:
    """Re-derive the answer and compare it with `answer`, then the verdict."""
    n, d = operands_of(problem)
    ok = as_int(answer) == n // d
    body = f"Solve it again.\n{long_division(n, d)}, so the answer is {n // d}.\n{n // d} {'is' if ok else 'is not'} {answer}."
    return fmt.verification(body, "correct" if ok else "incorrect")


VERIFIERS = {"confirmative": confirmative_check, "problem-solving": problem_solving_check}

def shown_guess(q: int, rng: random.Random) -> int:
    """The right quotient half the time, else a `near_miss`."""
    return q if rng.random() < 0.5 else near_miss(q, rng)


def near_miss(q: int, rng: random.Random) -> int:
    """A wrong quotient of the kind the base model guesses: off by a few units (half the time), by a
    few tens, or with one digit changed."""
    while True:
        kind = rng.random()
        if kind < 0.5:
            g = q + rng.choice([-1, 1]) * rng.randint(1, 9)
        elif kind < 0.75:
            g = q + rng.choice([-1, 1]) * rng.randint(1, 5) * 10
        else:
            digits = list(str(q))
            i = rng.randrange(len(digits))
            digits[i] = rng.choice([c for c in "0123456789" if c != digits[i] and (i or c != "0")])
            g = int("".join(digits))
        if g > 0 and g != q:
            return g


def check_exercise(problem: str, rng: random.Random, fmt: TrajectoryFormat = DEFAULT_FORMAT) -> tuple[str, str]:
    """(question, answer text) of a check *on request*, for the base model's training mix: a shown
    guess (`shown_guess`) is checked by the verify marker line and the confirmative check of its
    answer, and a wrong one is followed by the retry marker, the answer the check found and that
    answer's check (so that checks are learnt far into a text, where a retry's check is, not only
    at its start). Like a pretrained LLM, the base model can then check a solution when asked and
    act on the check, in the words of the trajectory format; checking its own answers unprompted is
    what behaviour initialisation adds.

    "Check this solution. Compute 91 / 7.\n91 / 7 = 12\nThe answer is \\boxed{12}."
      ->  "Wait, let me recheck my solution.\n12 * 7: ...\nTherefore, the answer is incorrect.\n
           Let me try again.\n91 / 7 = 13\nThe answer is \\boxed{13}.\n
           Wait, let me recheck my solution.\n13 * 7: ...\nTherefore, the answer is correct."
    """
    n, d = operands_of(problem)
    g = shown_guess(n // d, rng)
    completion = f"{fmt.verify_marker}\n{confirmative_check(problem, str(g), fmt)}"
    if g != n // d:  # retry, and check the retry: a check far into a trajectory, as a retry's is
        completion += (f"\n{fmt.retry_marker}\n{solution(problem)}"
                       f"\n{fmt.verify_marker}\n{confirmative_check(problem, str(n // d), fmt)}")
    return f"Check this solution. {problem}\n{guess_text(problem, g)}", completion


def division_drill(problem: str) -> tuple[str, str]:
    """(question, answer text) of long division on request, for the base model's training mix: the
    skill the confirmative check's correction uses, practised on its own."""
    n, d = operands_of(problem)
    return f"Divide digit by digit. {problem}", f"{long_division(n, d)}, so the answer is {n // d}."


def worked_trajectory(problem: str, rng: random.Random, fmt: TrajectoryFormat = DEFAULT_FORMAT) -> str:
    """A self-verify / self-correct trajectory written by the task itself, for smoke tests and
    benchmarks: a first guess (right half the time) and its confirmative check, then, if it was
    wrong, the right solution and its check."""
    from s2r.format import render

    n, d = operands_of(problem)
    g = shown_guess(n // d, rng)
    attempts, checks = [guess_text(problem, g)], [confirmative_check(problem, str(g), fmt)]
    if g != n // d:
        attempts.append(solution(problem))
        checks.append(confirmative_check(problem, str(n // d), fmt))
    return render(attempts, checks, fmt)
