"""`s2r dpo`'s math and data, by hand: the weighted DPO loss, difficulty, preference pairs.

TRL's DPO loss is not compared: in trl 1.16.0 it is computed inside DPOTrainer._compute_loss (it
reads self.beta, self.loss_types, runs the models), with no function callable without a trainer."""

import pytest
import torch

from s2r.jsonl import DataError
from s2r.train.dpo_math import dpo_margins, weighted_dpo_loss
from s2r.train.dpo_pairs import Pair, build_pairs, difficulty

# Three pairs, β = 0.1.   π_c   ref_c   π_r   ref_r   margin = (π_c − ref_c) − (π_r − ref_r)   −log σ(β · margin)
#                   1:  −10    −12    −15    −14     2 − (−1) = 3                          log(1 + e^−0.3) = 0.554355
#                   2:  −20    −20    −20    −20     0                                     log 2           = 0.693147
#                   3:   −5     −4     −3     −5     −1 − 2 = −3                           log(1 + e^0.3)  = 0.854355
PI_C, REF_C = torch.tensor([-10.0, -20.0, -5.0]), torch.tensor([-12.0, -20.0, -4.0])
PI_R, REF_R = torch.tensor([-15.0, -20.0, -3.0]), torch.tensor([-14.0, -20.0, -5.0])


def test_margins_and_plain_dpo_loss_by_hand():
    assert dpo_margins(PI_C, PI_R, REF_C, REF_R).tolist() == [3.0, 0.0, -3.0]
    loss = weighted_dpo_loss(PI_C, PI_R, REF_C, REF_R, 0.1, torch.ones(3))
    assert loss.item() == pytest.approx((0.554355 + 0.693147 + 0.854355) / 3, abs=1e-6)  # = 0.700619, the mean


def test_weighted_dpo_loss_by_hand():
    w = torch.tensor([0.5, 1.0, 0.25])
    # (0.5 · 0.554355 + 1 · 0.693147 + 0.25 · 0.854355) / (0.5 + 1 + 0.25) = 1.183913 / 1.75 = 0.676522
    assert weighted_dpo_loss(PI_C, PI_R, REF_C, REF_R, 0.1, w).item() == pytest.approx(0.676522, abs=1e-6)
    # a micro-batch (pair 1 alone) divided by its optimiser batch's weight: 0.277178 / 1.75 = 0.158387
    one = weighted_dpo_loss(PI_C[:1], PI_R[:1], REF_C[:1], REF_R[:1], 0.1, w[:1], total_weight=1.75)
    assert one.item() == pytest.approx(0.158387, abs=1e-6)


def test_dpo_gradient_by_hand():
    # d/dπ_c −log σ(β m) = −β σ(−β m): at m = 0, −0.1 · 1/2 = −0.05 (and +0.05 for π_r); the reference gets none
    pi_c, pi_r = torch.tensor([-20.0], requires_grad=True), torch.tensor([-20.0], requires_grad=True)
    weighted_dpo_loss(pi_c, pi_r, torch.tensor([-20.0]), torch.tensor([-20.0]), 0.1, torch.ones(1)).backward()
    assert pi_c.grad.item() == pytest.approx(-0.05) and pi_r.grad.item() == pytest.approx(0.05)


def sample(id, text, grade, reason="", truncated=False, attempts=1, sample_no=0):
    a = {"answer": text[-1], "grade": grade, "verdict": None, "reason": reason}
    return {"id": id, "problem": f"problem {id}", "gold": "g", "sample": sample_no, "attempts": [a] * attempts,
            "tokens": 5, "truncated": truncated, "text": text}


# p1: 1 right, 3 wrong (W1 twice), 1 the grader timed out on    -> difficulty 3/4, pairs (R1, W1), (R1, W2)
# p2: all right                                                     -> no pair
# p3: 1 right, 1 wrong, 1 truncated (left out)                      -> difficulty 1/2, pair (R3, W3)
SAMPLES = [
    sample("p1", "R1", "correct"), sample("p1", "W1", "incorrect"), sample("p1", "W2", "incorrect"),
    sample("p1", "W1", "incorrect"), sample("p1", "T1", "unverifiable", reason="timeout after 5s"),
    sample("p2", "A2", "correct"), sample("p2", "B2", "correct"),
    sample("p3", "R3", "correct"), sample("p3", "W3", "unverifiable", reason="no answer found"),  # no answer: wrong
    sample("p3", "X3", "incorrect", truncated=True),
]


def test_difficulty_by_hand():
    assert difficulty(["right", "wrong", "wrong", None]) == pytest.approx(2 / 3)
    assert difficulty(["right", "right"]) == 0.0 and difficulty([None]) is None


def test_pairs_from_attempts_by_hand():
    assert build_pairs(SAMPLES, "attempts") == [
        Pair("problem p1", "R1", "W1", 1.0), Pair("problem p1", "R1", "W2", 1.0), Pair("problem p3", "R3", "W3", 1.0)]
    weighted = build_pairs(SAMPLES, "attempts", weighting="difficulty")
    # p1: W1, W1, W2 wrong of R1, W1, W2, W1 graded (T1 timed out) -> 3/4; p3: W3 wrong of R3, W3 -> 1/2
    assert [p.weight for p in weighted] == pytest.approx([3 / 4, 3 / 4, 1 / 2])


def test_pairs_capped_per_problem_with_a_seed():
    many = [sample("q", f"R{i}", "correct", sample_no=i) for i in range(3)] + \
           [sample("q", f"W{i}", "incorrect", sample_no=3 + i) for i in range(3)]  # 3 × 3 = 9 pairs
    capped = build_pairs(many, "attempts", max_pairs=4, seed=1)
    assert len(capped) == 4 and len(set(capped)) == 4
    assert capped == build_pairs(many, "attempts", max_pairs=4, seed=1)  # the same seed, the same pairs
    assert {(p.chosen, p.rejected) for p in build_pairs(many, "attempts", max_pairs=4, seed=2)} != \
           {(p.chosen, p.rejected) for p in capped}  # seed 2 draws other pairs (checked: it does)
    # adding a problem leaves q's draw alone
    assert build_pairs(SAMPLES + many, "attempts", max_pairs=4, seed=1)[-4:] == capped


def test_pairs_from_trajectories_and_bad_input():
    trajs = [sample("t", "first wrong, then right", "correct", attempts=2),
             sample("t", "right away", "correct"), sample("t", "ends wrong", "incorrect", attempts=3)]
    assert build_pairs(trajs, "trajectories", weighting="difficulty") == [
        Pair("problem t", "first wrong, then right", "ends wrong", 1 / 3),
        Pair("problem t", "right away", "ends wrong", 1 / 3)]
    with pytest.raises(DataError, match="one attempt each"):
        build_pairs(trajs, "attempts")
    with pytest.raises(ValueError, match="weighting"):
        build_pairs(trajs, "trajectories", weighting="hard")
