"""The embedded task: seeded multi-step arithmetic with exact grading and programmatic verifiers.

A problem is a chain of additions and subtractions that starts from a two-digit number; every
running total stays ≥ 0. Levels 1–5 add steps and digits:

    level  steps  operands              example
    1      2      2..5                  Compute 47 + 3 - 5.
    2      2      2..9                  Compute 47 + 8 - 9.
    3      3      2..9                  Compute 47 + 8 - 9 + 6.
    4      4      2..9, one 10..19      Compute 47 + 8 - 19 + 6 - 3.
    5      5      2..9, two 10..19      Compute 47 + 8 - 19 + 6 - 13 + 5.

The solution writes one running total per line and boxes the last; a tiny model trained from
scratch learns the single steps fast but slips now and then (mostly at the teen operands of levels 4
and 5), so accuracy falls with the number of steps.

The *confirmative* check is easier than solving, which is what self-verification needs: it follows
only the last digits (one-digit sums and differences, no carries) and compares the result with the
claimed answer's last digit. It never re-solves, so it does not repeat the solver's slips; it catches
every slip that changes the last digit (87% of the seed-0 base model's wrong answers) and tells the
retry which digit the answer must end in. An earlier check undid every step from the answer back to
the first number: exact, but as hard as solving, so the tiny model rejected most of its own correct
answers. The *problem-solving* check re-derives the answer and compares, repeating the solver's own
mistakes.

Splits are disjoint by construction: a problem belongs to train, val or test by a hash of its text
and the task seed, so a test problem can never be generated for training.
"""

import hashlib
import random
from collections.abc import Iterator

from s2r.format import DEFAULT_FORMAT, TrajectoryFormat
from s2r.tasks.benchmarks import Problem

# level -> the range of each operand after the first (a two-digit number). Level 1 has two small
# steps, not one: one-step problems are too few for a 200-problem test share of distinct problems.
TINY, ONE, TEEN = (2, 5), (2, 9), (10, 19)
LEVELS = {1: (TINY, TINY), 2: (ONE, ONE), 3: (ONE, ONE, ONE), 4: (ONE, TEEN, ONE, ONE), 5: (ONE, TEEN, ONE, TEEN, ONE)}
SPLITS = {"train": (0, 80), "val": (80, 90), "test": (90, 100)}  # share of the hash space, in %
SIZES = {"train": 50_000, "val": 1_000, "test": 1_000}  # default number of problems per split


def split_of(text: str, seed: int) -> str:
    bucket = int.from_bytes(hashlib.sha256(f"{seed}|{text}".encode()).digest()[:8], "big") % 100
    return next(name for name, (lo, hi) in SPLITS.items() if lo <= bucket < hi)


def operands_of(problem: str) -> tuple[list[int], list[str]]:
    """'Compute 47 + 38 - 19.' -> ([47, 38, 19], ['+', '-'])."""
    tokens = problem.removeprefix("Compute ").rstrip(".").split()
    return [int(t) for t in tokens[0::2]], tokens[1::2]


def running_totals(numbers: list[int], ops: list[str]) -> list[int]:
    totals = [numbers[0]]
    for n, op in zip(numbers[1:], ops):
        totals.append(totals[-1] + n if op == "+" else totals[-1] - n)
    return totals


def make_problem(rng: random.Random, level: int) -> str:
    total = rng.randint(10, 99)
    text = f"Compute {total}"
    for lo, hi in LEVELS[level]:
        n = rng.randint(lo, hi)
        op = "-" if rng.random() < 0.5 and n <= total else "+"  # running totals stay ≥ 0
        total = total + n if op == "+" else total - n
        text += f" {op} {n}"
    return text + "."


def generate(split: str = "test", n: int | None = None, seed: int = 0) -> Iterator[Problem]:
    """The first n problems of a split (levels cycle 1..5), the same for the same seed."""
    if split not in SPLITS:
        raise ValueError(f"arith has splits {', '.join(SPLITS)}, not {split!r}")
    rng = random.Random(f"arith|{seed}|{split}")
    count = SIZES[split] if n is None else n
    made, seen, tries = 0, set(), 0
    while made < count:
        tries += 1
        if tries > 1000 * (count + 100):
            raise RuntimeError(f"arith: cannot find {count} distinct {split} problems")
        level = made % 5 + 1
        text = make_problem(rng, level)
        if split_of(text, seed) != split or (split != "train" and text in seen):
            continue  # train may repeat a problem (level 1 has only ~13k); val and test never do
        seen.add(text)
        numbers, ops = operands_of(text)
        yield Problem(id=f"arith-{seed}/{split}/{made}", problem=text, gold=str(running_totals(numbers, ops)[-1]),
                      level=level, subject="arithmetic")
        made += 1


def load(name: str, limit: int | None = None) -> list[Problem]:
    """`arith`, `arith:train`, `arith:val:7` (split, then task seed)."""
    parts = name.split(":")
    split = parts[1] if len(parts) > 1 and parts[1] else "test"
    seed = int(parts[2]) if len(parts) > 2 else 0
    return list(generate(split, limit, seed))


# ----------------------------------------------------------------------------------- texts


def solution(problem: str) -> str:
    """The step-by-step solution the base model is trained on."""
    numbers, ops = operands_of(problem)
    totals = running_totals(numbers, ops)
    lines = [f"{a} {op} {n} = {t}" for a, op, n, t in zip(totals, ops, numbers[1:], totals[1:])]
    return "\n".join(lines) + f"\nThe answer is \\boxed{{{totals[-1]}}}."


def as_int(answer: str | None) -> int | None:
    """The whole number an answer denotes ("0303", "303.0" -> 303), as the grader compares it."""
    try:
        value = float(str(answer).replace(",", "").strip())
    except ValueError:
        return None
    return int(value) if value.is_integer() and abs(value) < 1e15 else None


def confirmative_check(problem: str, answer: str, fmt: TrajectoryFormat = DEFAULT_FORMAT) -> str:
    """Follow the last digits from the first number through each step (no re-solving), compare
    with the answer's last digit, then the verdict:

        Compute 47 + 8 - 19 + 6., answer 43  ->  Check the last digits.
                                                 7 + 8 ends in 5
                                                 5 - 9 ends in 6
                                                 6 + 6 ends in 2
                                                 So the answer ends in 2, and 43 ends in 3.
                                                 Therefore, the answer is incorrect.
    """
    numbers, ops = operands_of(problem)
    value = as_int(answer)
    if value is None:
        return fmt.verification(f"The answer {answer} is not a whole number.", "incorrect")
    lines, digit = ["Check the last digits."], numbers[0] % 10
    for n, op in zip(numbers[1:], ops):
        new = (digit + n) % 10 if op == "+" else (digit - n) % 10
        lines.append(f"{digit} {op} {n % 10} ends in {new}")
        digit = new
    claimed = abs(value) % 10
    lines.append(f"So the answer ends in {digit}, and {value} ends in {claimed}.")
    return fmt.verification("\n".join(lines), "correct" if claimed == digit else "incorrect")


def problem_solving_check(problem: str, answer: str, fmt: TrajectoryFormat = DEFAULT_FORMAT) -> str:
    """Re-derive the answer and compare it with `answer`, then the verdict."""
    numbers, ops = operands_of(problem)
    totals = running_totals(numbers, ops)
    lines = ["Solve it again."] + [f"{a} {op} {n} = {t}" for a, op, n, t in zip(totals, ops, numbers[1:], totals[1:])]
    ok = as_int(answer) == totals[-1]
    lines.append(f"{totals[-1]} {'is' if ok else 'is not'} {answer}.")
    return fmt.verification("\n".join(lines), "correct" if ok else "incorrect")


VERIFIERS = {"confirmative": confirmative_check, "problem-solving": problem_solving_check}

# The fixed wording of the task's texts, one token each in the base model's tokenizer (digits stay
# single characters): sequences get ~2.5× shorter, so training and generation get that much faster.
PHRASES = [DEFAULT_FORMAT.verify_marker, DEFAULT_FORMAT.retry_marker, DEFAULT_FORMAT.correct_sentence,
           DEFAULT_FORMAT.incorrect_sentence, "Compute ", " + ", " - ", " = ", "The answer is \\boxed{", "}.",
           "Check the last digits.", " ends in ", "So the answer ends in ", ", and ", "Check this solution. ",
           "Solve it again.", " is not ", " is ", "The answer ", " is not a whole number."]


def slipped_solution(problem: str, rng: random.Random) -> tuple[str, int]:
    """(solution text, its answer): half the time the right solution, else one where a running total
    slipped by 1..10 at a random step and the rest followed from it — the kind of mistake the base
    model makes."""
    numbers, ops = operands_of(problem)
    totals = running_totals(numbers, ops)
    if rng.random() < 0.5:
        j = rng.randrange(1, len(totals))
        d = rng.choice([-1, 1]) * rng.randint(1, 10)
        totals = totals[:j] + [max(0, t + d) for t in totals[j:]]
    lines = [f"{a} {op} {n} = {t}" for a, op, n, t in zip(totals, ops, numbers[1:], totals[1:])]
    return "\n".join(lines) + f"\nThe answer is \\boxed{{{totals[-1]}}}.", totals[-1]


def check_exercise(problem: str, rng: random.Random, fmt: TrajectoryFormat = DEFAULT_FORMAT) -> tuple[str, str]:
    """(question, answer text) of a check *on request*, for the base model's training mix: a shown
    solution (`slipped_solution`) is checked by the verify marker line and the confirmative check of
    its answer. Like a pretrained LLM, the base model can then check a solution when asked, in the
    words of the trajectory format; checking its own answers unprompted, and retrying, is what
    behaviour initialisation adds.

    "Check this solution. Compute 47 + 8 - 9.\n47 + 8 = 55\n55 - 9 = 46\nThe answer is \\boxed{46}."
      ->  "Wait, let me recheck my solution.\nCheck the last digits.\n7 + 8 ends in 5\n..."
    """
    text, answer = slipped_solution(problem, rng)
    return f"Check this solution. {problem}\n{text}", f"{fmt.verify_marker}\n{confirmative_check(problem, str(answer), fmt)}"


def worked_trajectory(problem: str, rng: random.Random, fmt: TrajectoryFormat = DEFAULT_FORMAT) -> str:
    """A self-verify / self-correct trajectory written by the task itself, for smoke tests and
    benchmarks: a (possibly slipped) first attempt and its confirmative check, then, if it was
    wrong, the right solution and its check."""
    from s2r.format import render

    shown, answer = slipped_solution(problem, rng)
    gold = str(running_totals(*operands_of(problem))[-1])
    attempts, checks = [shown], [confirmative_check(problem, str(answer), fmt)]
    if str(answer) != gold:
        attempts.append(solution(problem))
        checks.append(confirmative_check(problem, gold, fmt))
    return render(attempts, checks, fmt)

