"""Offline RL's selection and dataset baselines on hand-made rollouts."""

import pytest

from s2r.format import DEFAULT_FORMAT as F
from s2r.format import render
from s2r.tasks import arith
from s2r.train.advantages import Step
from s2r.train.offline import cut_point, dataset_advantages, select

P = "Compute 91 / 7."
RIGHT, WRONG = arith.solution(P), arith.guess_text(P, 12)
SAYS_RIGHT, SAYS_WRONG = F.correct_sentence, F.incorrect_sentence


def rollout(pid, sample, attempts, truncated=False):
    """attempts: [(right?, verdict or None)]; the text is rendered, the grades follow."""
    texts = [RIGHT if ok else WRONG for ok, _ in attempts]
    checks = [{"correct": SAYS_RIGHT, "incorrect": SAYS_WRONG}[v] for _, v in attempts if v]
    return {"benchmark": "arith", "id": pid, "sample": sample, "text": render(texts, checks), "truncated": truncated,
            "attempts": [{"grade": "correct" if ok else "incorrect"} for ok, _ in attempts]}


def test_cut_point():
    ok, bad = Step("solve", correct=True), Step("solve", correct=False)
    yes, no = Step("verify", verdict="correct"), Step("verify", verdict="incorrect")
    assert cut_point([bad, no, ok, yes, ok, yes]) == 3
    assert cut_point([ok, no, ok, yes]) == 3  # a rejected correct attempt is not the cut
    assert cut_point([bad, yes]) is None


def test_selection_band_alternation_cap_cut_and_balance():
    records = [
        # prompt a: final accuracy 2/5 = 0.4, in the band
        rollout("a", 0, [(False, "incorrect"), (True, "correct")]),  # positive, ends where it is cut
        rollout("a", 1, [(True, "incorrect"), (False, "incorrect"), (True, "correct")]),  # positive, never cut before
        rollout("a", 2, [(False, "correct")]),  # negative
        rollout("a", 3, [(False, "incorrect"), (False, "incorrect")], truncated=True),  # negative, truncated
        rollout("a", 4, [(False, "incorrect"), (False, "correct")]),  # negative
        # prompt b: 4/4 correct, outside the band
        *[rollout("b", k, [(True, "correct")]) for k in range(4)],
    ]
    # a positive that goes on after its verified-correct attempt is cut right after that verification
    long = rollout("a", 5, [(True, "correct"), (False, "incorrect")], truncated=True)
    long["attempts"][-1]["grade"] = "incorrect"
    # a rollout whose actions do not alternate (two verifications in a row)
    odd = rollout("a", 6, [(False, "incorrect")])
    odd["text"] += f"\n\n{F.verify_marker}\n{SAYS_WRONG}"
    # final accuracy of a: samples 0, 1 correct; 2, 3, 4, 5, 6 wrong -> 2/7
    kept, counts = select(records + [long, odd], (0.1, 0.7), max_actions=10, fmt=F, seed=0)
    assert counts["prompts"] == 2 and counts["prompts_outside_band"] == 1 and counts["not_alternating"] == 1
    positives = [k for k in kept if any(s.kind == "solve" and s.correct for s in k.steps)]
    assert sorted(k.record["sample"] for k in positives) == [0, 1, 5]
    cut = next(k for k in kept if k.record["sample"] == 5)
    assert cut.text == render([RIGHT], [SAYS_RIGHT]) and not cut.truncated and len(cut.steps) == 2
    # 4 negatives (2, 3, 4) ... at most as many as the 3 positives are kept: all 3 here
    negatives = [k for k in kept if k not in positives]
    assert len(negatives) == 3 and counts["negatives_dropped"] == 0
    assert next(k for k in negatives if k.record["sample"] == 3).truncated  # a truncated negative stays truncated
    # with a cap of 4 actions, sample 1 (6 actions) is dropped (sample 5 counts after its cut), and
    # one of the 3 negatives goes with the balance
    kept, counts = select(records + [long, odd], (0.1, 0.7), max_actions=4, fmt=F, seed=0)
    assert counts["too_many_actions"] == 1 and counts["positives"] == 2 and counts["negatives"] == 2
    assert counts["negatives_dropped"] == 1
    # without the balance every negative stays
    kept, counts = select(records + [long, odd], (0.1, 0.7), max_actions=4, fmt=F, seed=0, balance=False)
    assert counts["positives"] == 2 and counts["negatives"] == 3 and counts["negatives_dropped"] == 0


def test_dataset_baselines_by_hand():
    records = [rollout("a", 0, [(False, "incorrect"), (True, "correct")]), rollout("a", 1, [(False, "correct")])]
    kept, _ = select(records, (0.0, 1.0), 10, F, 0)
    # process rewards: [−1, +1, +1, +1] and [−1, −1]; contexts: R, R-V, R-V+R, R-V+R+V and R, R-V
    # b(R) = −1, b(R-V) = (1 − 1)/2 = 0, the rest equal their one reward
    rewards, adv, baselines = dataset_advantages(kept, "process", "context", "full", 5, True, True)
    assert rewards == [[-1, 1, 1, 1], [-1, -1]]
    assert adv == [[0.0, 1.0, 0.0, 0.0], [0.0, -1.0]]
    assert baselines["R-V"] == 0.0
    # γ = 1: returns [2, 3, 2, 1] and [−2, −1]; b(R) = 0, b(R-V) = 1, b(R-V+R) = 2, b(R-V+R+V) = 1;
    # bonuses ×2 on the flip (part 2) and on verifying the correct attempt (part 3)
    _, adv, _ = dataset_advantages(kept, "process", "context", "full", 5, True, True, gamma=1.0)
    assert adv == [[2.0, 2.0, 0.0, 0.0], [-2.0, -2.0]]
    # outcome level: R = [+1, −1], one group: b = 0
    _, adv, _ = dataset_advantages(kept, "outcome", "context", "full", 5, True, True)
    assert adv == [[1.0], [-1.0]]
    # by (accuracy bucket, position): accuracy 1/2 -> bucket 2 of 5; b(b2@0) = −1, b(b2@1) = 0
    _, adv, baselines = dataset_advantages(kept, "process", "bucket", "full", 5, False, False)
    assert baselines == pytest.approx({"b2@0": -1.0, "b2@1": 0.0, "b2@2": 1.0, "b2@3": 1.0})
    assert adv == [[0.0, 1.0, 0.0, 0.0], [0.0, -1.0]]
