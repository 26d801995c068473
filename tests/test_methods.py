"""S²R's relatives as pure functions, by hand: SCoRe's returns, KL weights and advantages; the CCT
transform; mistake-tuning records and the self-rethinking prompt."""

import doctest

import pytest

import s2r.methods.mistakes
from s2r.methods.cct import cct_records
from s2r.methods.mistakes import CORRECT_TAG, INCORRECT_TAG, mistake_tuning_records, rethink_prompt
from s2r.methods.score import kl_weights, score_advantages, shaped_returns


def test_shaped_returns_by_hand():
    assert shaped_returns(-1, 1, stage=1) == (1, 1)  # stage I: both attempts credited with r2
    assert shaped_returns(1, -1, stage=1) == (-1, -1)
    # stage II, α = 10: r̂2 = r2 + α (r2 − r1); G1 = r1 + r̂2, G2 = r̂2
    assert shaped_returns(-1, 1, stage=2, alpha=10) == (20, 21)  # r̂2 = 1 + 10·2
    assert shaped_returns(1, -1, stage=2, alpha=10) == (-20, -21)  # r̂2 = −1 − 20
    assert shaped_returns(1, 1, stage=2, alpha=10) == (2, 1)  # no change: no bonus
    assert shaped_returns(-1, -1, stage=2, alpha=0.5) == (-2, -1)
    with pytest.raises(ValueError, match="stage"):
        shaped_returns(1, 1, stage=3)


def test_kl_weights_by_hand():
    assert kl_weights(1, beta1=0.01, beta2=0.1) == (0.1, 0.01)  # stage I holds attempt 1 with β2
    assert kl_weights(2, beta1=0.01, beta2=0.1) == (0.01, 0.01)


def test_score_advantages_are_rloo_per_attempt():
    # stage II, α = 10, one prompt: (r1, r2) = (−1, 1) -> G (20, 21); (1, 1) -> G (2, 1)
    # A1 = 20 − 2 = 18, 2 − 20 = −18;  A2 = 21 − 1 = 20, 1 − 21 = −20
    assert score_advantages([[(-1, 1), (1, 1)]], stage=2, alpha=10) == [[(18.0, 20.0), (-18.0, -20.0)]]
    # stage I, three samples: G = r2 for both attempts: r2 = (1, −1, −1)
    # A = 1 − (−1 − 1)/2 = 2; −1 − (1 − 1)/2 = −1; −1
    assert score_advantages([[(-1, 1), (1, -1), (1, -1)]], stage=1) == [[(2.0, 2.0), (-1.0, -1.0), (-1.0, -1.0)]]


def sampled(pid, sample, answer, grade, problem=None):
    problem = problem or f"Compute {pid}."
    text = f"work {answer} \\boxed{{{answer}}}" if answer is not None else "no answer"
    return {"benchmark": "arith", "id": pid, "problem": problem, "gold": "7", "level": 1, "subject": None,
            "sample": sample, "text": text, "attempts": [{"answer": answer, "grade": grade, "verdict": None}]}


ATTEMPTS = [
    sampled("p1", 0, "7", "correct"), sampled("p1", 1, "8", "incorrect"), sampled("p1", 2, "8", "incorrect"),
    sampled("p1", 3, None, "unverifiable"), sampled("p1", 4, "7", "correct"),
    sampled("p2", 0, "5", "incorrect"), sampled("p2", 1, "6", "incorrect"),  # no right sample
    sampled("p3", 0, "7", "correct"),
]


def test_cct_keeps_right_answers_and_fixes_wrong_ones():
    records, counts = cct_records(ATTEMPTS, review_prompt="Review.", seed=0)
    # p1: distinct first answers 7 (right) and 8 (wrong, fixed with the right sample); p2: no right
    # sample, no records; p3: 7 (right)
    assert counts == {"confidence": 2, "critique": 1, "problems_without_a_right_sample": 1}
    by = {(r["id"], r["messages"][1]["content"]): r for r in records}
    keep = by[("p1", "work 7 \\boxed{7}")]
    assert keep["cct"] == "confidence" and keep["completion"] == "work 7 \\boxed{7}"
    fix = by[("p1", "work 8 \\boxed{8}")]
    assert fix["cct"] == "critique" and fix["completion"] == "work 7 \\boxed{7}"
    assert fix["messages"] == [{"role": "user", "content": "Compute p1."},
                               {"role": "assistant", "content": "work 8 \\boxed{8}"},
                               {"role": "user", "content": "Review."}]
    assert fix["spans"] == [[0, len(fix["completion"])]]


def test_mistake_tuning_tags_each_distinct_attempt():
    records, counts = mistake_tuning_records(ATTEMPTS)
    assert counts == {"correct": 2, "incorrect": 3}  # p1: 7, 8; p2: 5, 6; p3: 7 (None and repeats left out)
    tags = [(r["id"], r["prefix"], r["completion"]) for r in records]
    assert ("p1", f"{CORRECT_TAG}\n", "work 7 \\boxed{7}") in tags
    assert ("p1", f"{INCORRECT_TAG}\n", "work 8 \\boxed{8}") in tags
    assert sum(t[0] == "p1" for t in tags) == 2


def test_rethink_prompt_shows_own_mistakes():
    text = rethink_prompt(ATTEMPTS, k=5, seed=0)
    # one wrong attempt per problem (p1's first wrong answer 8, p2's 5), with the right answer
    assert "- Compute p1. You answered 8; the right answer is 7." in text
    assert "- Compute p2. You answered 5; the right answer is 7." in text
    assert text.count("\n- ") == 2 and text.endswith("final answer in \\boxed{}.")
    assert rethink_prompt(ATTEMPTS, k=1, seed=0).count("\n- ") == 1
    with pytest.raises(ValueError, match="no|none"):
        rethink_prompt([a for a in ATTEMPTS if a["attempts"][0]["grade"] == "correct"])
    assert doctest.testmod(s2r.methods.mistakes).failed == 0
