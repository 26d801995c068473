"""Every RL quantity by hand (three- or four-element examples worked out in comments), and each
vectorised function against a plain loop on random inputs (DESIGN.md habits 1 and 2)."""

import math
import random

import pytest
import torch

from s2r.train import advantages as A
from s2r.train import losses as L
from s2r.train.advantages import Step

OK, BAD = Step("solve", correct=True), Step("solve", correct=False)
SAYS_OK, SAYS_BAD, GARBLED = Step("verify", verdict="correct"), Step("verify", verdict="incorrect"), Step("verify", verdict="unparsable")


# ----------------------------------------------------------------------------------- rewards


def test_process_rewards_by_hand():
    # wrong attempt called incorrect (+1), right attempt called correct (+1)
    assert A.process_rewards([BAD, SAYS_BAD, OK, SAYS_OK], truncated=False) == [-1, 1, 1, 1]
    # right attempt called incorrect (−1), the re-solve breaks it (−1), called correct (−1: it is wrong)
    assert A.process_rewards([OK, SAYS_BAD, BAD, SAYS_OK], truncated=False) == [1, -1, -1, -1]
    # unparsable verdict −1; a verification with no attempt before it −1
    assert A.process_rewards([OK, GARBLED], truncated=False) == [1, -1]
    assert A.process_rewards([SAYS_OK, OK], truncated=False) == [-1, 1]


def test_truncation_costs_the_last_action():
    assert A.process_rewards([BAD, SAYS_BAD, OK], truncated=True) == [-1, 1, -1]
    assert A.outcome_reward([BAD, SAYS_BAD, OK], truncated=True) == -1
    assert A.outcome_reward([BAD, SAYS_BAD, OK], truncated=False) == 1
    assert A.outcome_reward([OK, SAYS_BAD, BAD, SAYS_BAD], truncated=False) == -1  # the final answer counts


def test_returns_to_go_by_hand():
    # γ = 1: [−1, 1, 1, 1] -> [−1+1+1+1, 1+1+1, 1+1, 1]
    assert A.returns_to_go([-1, 1, 1, 1], 1.0) == [2, 3, 2, 1]
    # γ = 0.5: G3 = 1, G2 = 1 + 0.5, G1 = 1 + 0.5·1.5 = 1.75, G0 = −1 + 0.5·1.75 = −0.125
    assert A.returns_to_go([-1, 1, 1, 1], 0.5) == [-0.125, 1.75, 1.5, 1]
    assert A.returns_to_go([-1, 1, -1], 0.0) == [-1, 1, -1]  # γ = 0: the rewards themselves
    for _ in range(20):  # against the definition Σ_{j≥i} γ^{j−i} r_j
        r, gamma = [random.choice([-1.0, 1.0]) for _ in range(random.randint(1, 7))], random.random()
        want = [sum(gamma ** (j - i) * r[j] for j in range(i, len(r))) for i in range(len(r))]
        assert A.returns_to_go(r, gamma) == pytest.approx(want)


# ----------------------------------------------------------------------------------- outcome level


def test_rloo_by_hand():
    # i = 0: 1 − (−1 − 1 + 1)/3 = 4/3;  i = 1: −1 − (1 − 1 + 1)/3 = −4/3
    adv = A.rloo(torch.tensor([[1.0, -1.0, -1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    assert torch.allclose(adv, torch.tensor([[4 / 3, -4 / 3, -4 / 3, 4 / 3], [0.0, 0.0, 0.0, 0.0]]))
    # three samples: 1 − (−1 − 1)/2 = 2;  −1 − (1 − 1)/2 = −1
    assert torch.allclose(A.rloo(torch.tensor([[1.0, -1.0, -1.0]])), torch.tensor([[2.0, -1.0, -1.0]]))
    with pytest.raises(ValueError):
        A.rloo(torch.tensor([[1.0]]))


def test_rloo_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(5, 6, generator=g)
    loop = torch.tensor([[r[p, i] - sum(r[p, j] for j in range(6) if j != i) / 5 for i in range(6)] for p in range(5)])
    assert torch.allclose(A.rloo(r), loop, atol=1e-6)


def test_outcome_advantages_are_rloo_of_the_final_answer():
    groups = [[([OK, SAYS_OK], False), ([BAD, SAYS_OK], False), ([BAD, SAYS_BAD, OK, SAYS_OK], False)]]
    adv, state = A.outcome_advantages(groups, {}, A.AdvantageSettings())
    # R = [1, −1, 1]: 1 − 0 = 1; −1 − 1 = −2; 1 − 0 = 1
    assert adv == [[[1.0], [-2.0], [1.0]]] and state == {}


# ----------------------------------------------------------------------------------- process level


def test_reward_context_strings():
    steps, rewards = [OK, SAYS_BAD, BAD, SAYS_BAD], [1, -1, -1, 1]
    assert A.full_context(steps, rewards) == ["R", "R+V", "R+V-R", "R+V-R-V"]
    assert A.last_context(steps, rewards) == ["R", "R+V", "V-R", "R-V"]
    assert A.kind_context(steps, rewards) == ["R", "V", "R", "V"]


def test_baselines_in_each_mode():
    stats = A.context_stats(["R", "R", "R+V", "R"], [1, -1, 1, 1])
    assert stats == {"R": [1.0, 3], "R+V": [1.0, 1]}
    # batch: this batch's means
    assert A.batch_baselines({"R": [5.0, 9]}, stats) == {"R": [1 / 3, 3], "R+V": [1.0, 1]}
    # cumulative: R had mean −1 over 1 action; now (−1 + 1) / (1 + 3) = 0
    assert A.cumulative_baselines({"R": [-1.0, 1]}, stats) == {"R": [0.0, 4], "R+V": [1.0, 1]}
    # ema, decay 0.5: 0.5 · (−1) + 0.5 · 1/3 = −1/3; a new context starts at its batch mean
    ema = A.ema_baselines({"R": [-1.0, 1]}, stats, decay=0.5)
    assert ema["R"][0] == pytest.approx(-1 / 3) and ema["R"][1] == 4 and ema["R+V"] == [1.0, 1]
    # below min_count the baseline is 0
    assert A.baseline_of({"R": [0.5, 2]}, "R", min_count=2) == 0.5
    assert A.baseline_of({"R": [0.5, 2]}, "R", min_count=3) == 0.0
    assert A.baseline_of({}, "R+V", min_count=1) == 0.0


def test_baselines_match_a_loop():
    rng = random.Random(0)
    keys = [rng.choice(["R", "R+V", "R-V", "R+V-R"]) for _ in range(50)]
    rewards = [rng.choice([-1.0, 1.0]) for _ in keys]
    state: dict = {}
    history: dict = {}
    for lo in range(0, 50, 10):
        k, r = keys[lo : lo + 10], rewards[lo : lo + 10]
        state = A.cumulative_baselines(state, A.context_stats(k, r))
        for key, value in zip(k, r):
            history.setdefault(key, []).append(value)
        for key, values in history.items():
            assert state[key][0] == pytest.approx(sum(values) / len(values)) and state[key][1] == len(values)


def test_both_bonuses():
    steps = [OK, SAYS_BAD, BAD, SAYS_BAD, OK, SAYS_OK]
    # verify bonus: the verifications of correct attempts (1 and 5); flip bonus: re-solves 2 (✓→✗) and 4 (✗→✓)
    assert A.bonus_weights(steps, verify_bonus=True, flip_bonus=True) == [1, 2, 2, 1, 2, 2]
    assert A.bonus_weights(steps, verify_bonus=True, flip_bonus=False) == [1, 2, 1, 1, 1, 2]
    assert A.bonus_weights(steps, verify_bonus=False, flip_bonus=True) == [1, 1, 2, 1, 2, 1]


def test_process_advantages_by_hand():
    # two rollouts, batch baseline over the full context:
    #   a: [OK, SAYS_OK]  rewards [1, 1]    keys ["R", "R+V"]
    #   b: [BAD, SAYS_OK] rewards [-1, -1]  keys ["R", "R-V"]
    # b("R") = 0, b("R+V") = 1, b("R-V") = −1  ->  a: [1, 0 (×2 bonus = 0)]; b: [−1, 0]
    groups = [[([OK, SAYS_OK], False), ([BAD, SAYS_OK], False)]]
    adv, state = A.process_advantages(groups, {}, A.AdvantageSettings())
    assert adv == [[[1.0, 0.0], [-1.0, 0.0]]]
    assert state == {"R": [0.0, 2], "R+V": [1.0, 1], "R-V": [-1.0, 1]}
    # kind contexts: b("R") = 0, b("V") = 0  ->  a: [1, 1 × 2], b: [−1, −1]
    adv, _ = A.process_advantages(groups, {}, A.AdvantageSettings(context="kind"))
    assert adv == [[[1.0, 2.0], [-1.0, -1.0]]]


def test_process_advantages_with_returns_by_hand():
    # γ = 1, batch baseline over the full context; a check is credited with the re-solve after it:
    #   a: [BAD, SAYS_BAD, OK]  rewards [−1, 1, 1]   returns [1, 2, 1]   keys ["R", "R-V", "R-V+R"]
    #   b: [BAD, SAYS_BAD, BAD] rewards [−1, 1, −1]  returns [−1, 0, −1] keys ["R", "R-V", "R-V+R"]
    # b("R") = 0, b("R-V") = 1, b("R-V+R") = 0  ->  a: [1, 1, 1 × 2 (flip)], b: [−1, −1, −1]
    groups = [[([BAD, SAYS_BAD, OK], False), ([BAD, SAYS_BAD, BAD], False)]]
    adv, state = A.process_advantages(groups, {}, A.AdvantageSettings(gamma=1.0))
    assert adv == [[[1.0, 1.0, 2.0], [-1.0, -1.0, -1.0]]]
    assert state == {"R": [0.0, 2], "R-V": [1.0, 2], "R-V+R": [0.0, 2]}
    # with γ = 0 the two checks are alike (both right to reject): advantage 0 each
    adv, _ = A.process_advantages(groups, {}, A.AdvantageSettings())
    assert adv == [[[0.0, 0.0, 2.0], [0.0, 0.0, -1.0]]]


def test_fold_kl():
    # A − β Σ k1: 1 − 0.1 · 2 = 0.8
    assert torch.allclose(A.fold_kl(torch.tensor([1.0, -1.0]), torch.tensor([2.0, -1.0]), 0.1), torch.tensor([0.8, -0.9]))


# ----------------------------------------------------------------------------------- losses


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([math.log(0.5), math.log(0.25)]), torch.tensor([math.log(0.25), math.log(0.5)])
    # k1 = log 0.5 − log 0.25 = log 2; and −log 2
    assert torch.allclose(L.k1(logp, ref), torch.tensor([math.log(2), -math.log(2)]))
    # k3 = r − log r − 1 with r = π_ref/π: r = 1/2 -> 1/2 + log 2 − 1; r = 2 -> 2 − log 2 − 1
    assert torch.allclose(L.k3(logp, ref), torch.tensor([0.5 + math.log(2) - 1, 1 - math.log(2)]))
    assert L.k3(logp, logp).abs().max() == 0


def test_clipped_surrogate_by_hand():
    log_ratio = torch.log(torch.tensor([1.5, 0.5, 1.0, 1.1]))
    adv = torch.tensor([1.0, -1.0, 2.0, -1.0])
    # −min(1.5·1, 1.2·1) = −1.2;  −min(0.5·−1, 0.8·−1) = 0.8;  −2;  −min(−1.1, −1.1) = 1.1
    assert torch.allclose(L.clipped_surrogate(log_ratio, adv, 0.2), torch.tensor([-1.2, 0.8, -2.0, 1.1]))
    assert L.clipped_mask(log_ratio, adv, 0.2).tolist() == [True, True, False, False]


def test_sequence_and_part_level_ratios_by_hand():
    # one sequence of 4 predicted tokens, log π_θ − log π_old = [0.2, 0.4, −0.2, 0.0]
    logp = torch.tensor([[0.2, 0.4, -0.2, 0.0]])
    old = torch.zeros(1, 4)
    # sequence level (ORL): one part over the last 3 tokens -> mean 0.0667
    seq = L.part_log_ratios(logp, old, torch.tensor([[-1, 0, 0, 0]]), 1)
    assert torch.allclose(seq, torch.tensor([0.2 / 3]))
    # part level (PRL): parts [0, 0 | 1, 1] -> means 0.3 and −0.1
    parts = L.part_log_ratios(logp, old, torch.tensor([[0, 0, 1, 1]]), 2)
    assert torch.allclose(parts, torch.tensor([0.3, -0.1]))


def test_part_functions_match_a_loop():
    g = torch.Generator().manual_seed(1)
    logp, old = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    parts = torch.randint(-1, 5, (3, 7), generator=g)
    got = L.part_log_ratios(logp, old, parts, 5)
    for p in range(5):
        d = [float(logp[b, t] - old[b, t]) for b in range(3) for t in range(7) if parts[b, t] == p]
        assert got[p].item() == pytest.approx(sum(d) / len(d) if d else 0.0, abs=1e-6)
    adv = torch.randn(5, generator=g)
    loop = [-min(math.exp(x) * a, min(max(math.exp(x), 0.8), 1.2) * a) for x, a in zip(got.tolist(), adv.tolist())]
    assert torch.allclose(L.clipped_surrogate(got, adv, 0.2), torch.tensor(loop), atol=1e-6)
    ref = torch.randn(3, 7, generator=g)
    loop_k3 = [[math.exp(float(r - x)) - float(r - x) - 1 for x, r in zip(row, rrow)] for row, rrow in zip(logp, ref)]
    assert torch.allclose(L.k3(logp, ref), torch.tensor(loop_k3), atol=1e-5)
