"""Rewards, reward contexts, baselines and advantages of S²R's RL stage (docs/method.md §3), as pure
functions, each tested by hand in tests/test_rl_math.py (the design notes habit 1).

A rollout is a list of `Step`s (its actions: solve, verify, solve, ...). The variants sit in tables:

    ADVANTAGES[level](rollouts, ...)  "outcome": RLOO on the final answer, one part per rollout
                                      "process": reward-context baselines, one part per action
    CONTEXTS[name](steps, rewards)    the key an action's baseline is grouped by
    BASELINES[mode](state, stats)     how the per-context means are kept: batch, ema, cumulative
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from s2r.format import CORRECT, INCORRECT, SOLVE

LETTER = {SOLVE: "R", "verify": "V"}  # the paper's letters: R a (re-)solve, V a verification


@dataclass(frozen=True)
class Step:
    """One action of a rollout as the rewards see it."""

    kind: str  # "solve" | "verify"
    correct: bool | None = None  # solve: the grader's verdict on its answer
    verdict: str | None = None  # verify: "correct" | "incorrect" | "unparsable"


# ----------------------------------------------------------------------------------- rewards


def process_rewards(steps: Sequence[Step], truncated: bool) -> list[float]:
    """r(a) per action (docs/method.md §3):
        solve   +1 if its answer is correct, else −1
        verify  +1 if its verdict matches the truth of the attempt before it, else −1
                (unparsable, or no attempt before it: −1)
        a rollout cut off by the token budget: −1 on its last action

    [solve ✓, verify "incorrect", solve ✓, verify "correct"]  ->  [1, -1, 1, 1]
    """
    rewards, last_correct = [], None
    for s in steps:
        if s.kind == SOLVE:
            last_correct = bool(s.correct)
            rewards.append(1.0 if last_correct else -1.0)
        else:
            truth = None if last_correct is None else (CORRECT if last_correct else INCORRECT)
            rewards.append(1.0 if truth is not None and s.verdict == truth else -1.0)
    if truncated and rewards:
        rewards[-1] = -1.0
    return rewards


def returns_to_go(rewards: Sequence[float], gamma: float) -> list[float]:
    """G(a_i) = Σ_{j≥i} γ^{j−i} r(a_j): an action's reward plus the discounted rewards after it.
    γ = 0 gives r(a) itself (docs/method.md's PRL); γ = 1 credits a check with the re-solve it leads to.

    [-1, 1, 1, 1], γ = 1  ->  [2, 3, 2, 1];   γ = 0.5  ->  [-1 + 0.5·1.75, 1 + 0.5·1.5, 1.5, 1] = [-0.125, 1.75, 1.5, 1]
    """
    out, g = [], 0.0
    for r in reversed(rewards):
        g = r + gamma * g
        out.append(g)
    return out[::-1]


def outcome_reward(steps: Sequence[Step], truncated: bool) -> float:
    """R = +1 if the final answer (the last solve's) is correct, else −1; −1 when truncated."""
    solves = [s for s in steps if s.kind == SOLVE]
    return 1.0 if solves and solves[-1].correct and not truncated else -1.0


# ----------------------------------------------------------------------------------- outcome level


def rloo(rewards: torch.Tensor) -> torch.Tensor:
    """Leave-one-out advantages, rewards [P, K] -> [P, K]:

        A_i = R_i − (1/(K−1)) Σ_{j≠i} R_j        (RLOO, Ahmadian et al. 2024)

    [[1, -1, -1, 1]] -> [[4/3, -4/3, -4/3, 4/3]]   (for i = 0: 1 − (−1 − 1 + 1)/3)
    """
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    return rewards - (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)


# ----------------------------------------------------------------------------------- process level


def full_context(steps: Sequence[Step], rewards: Sequence[float]) -> list[str]:
    """Every earlier action's letter and reward sign, then the action's own letter:
    [R+, V-, R] for solve ✓, verify ✗, solve  ->  ["R", "R+V", "R+V-R"]."""
    keys, history = [], ""
    for s, r in zip(steps, rewards):
        keys.append(history + LETTER[s.kind])
        history += LETTER[s.kind] + ("+" if r > 0 else "-")
    return keys


def last_context(steps: Sequence[Step], rewards: Sequence[float]) -> list[str]:
    """The action before only: ["R", "R+V", "V-R"] for the example of full_context."""
    keys = []
    for i, s in enumerate(steps):
        prev = f"{LETTER[steps[i - 1].kind]}{'+' if rewards[i - 1] > 0 else '-'}" if i else ""
        keys.append(prev + LETTER[s.kind])
    return keys


def kind_context(steps: Sequence[Step], rewards: Sequence[float]) -> list[str]:
    """One baseline per action kind: ["R", "V", "R"]."""
    return [LETTER[s.kind] for s in steps]


CONTEXTS = {"full": full_context, "last": last_context, "kind": kind_context}

# A baseline state maps a context key to [mean reward, number of actions seen].
State = dict[str, list[float]]


def context_stats(keys: Sequence[str], rewards: Sequence[float]) -> dict[str, list[float]]:
    """{key: [Σ r, n]} over the actions of one batch."""
    stats: dict[str, list[float]] = {}
    for k, r in zip(keys, rewards):
        s = stats.setdefault(k, [0.0, 0])
        s[0] += r
        s[1] += 1
    return stats


def batch_baselines(state: State, stats: dict[str, list[float]], decay: float = 0.0) -> State:
    """b(ctx) = the mean reward of this batch's actions with that context (the state is ignored)."""
    return {k: [s / n, n] for k, (s, n) in stats.items()}


def cumulative_baselines(state: State, stats: dict[str, list[float]], decay: float = 0.0) -> State:
    """b(ctx) = the mean reward of every action with that context so far, this batch included
    (the reference implementation's baseline, for any context)."""
    new = {k: list(v) for k, v in state.items()}
    for k, (s, n) in stats.items():
        mean, count = new.get(k, [0.0, 0])
        new[k] = [(mean * count + s) / (count + n), count + n]
    return new


def ema_baselines(state: State, stats: dict[str, list[float]], decay: float = 0.9) -> State:
    """b(ctx) ← decay · b(ctx) + (1 − decay) · (this batch's mean); the first batch sets it."""
    new = {k: list(v) for k, v in state.items()}
    for k, (s, n) in stats.items():
        if k in new:
            new[k] = [decay * new[k][0] + (1 - decay) * s / n, new[k][1] + n]
        else:
            new[k] = [s / n, n]
    return new


BASELINES = {"batch": batch_baselines, "ema": ema_baselines, "cumulative": cumulative_baselines}


def baseline_of(state: State, key: str, min_count: int) -> float:
    """b(key), or 0 when fewer than min_count actions with that context have been seen."""
    mean, count = state.get(key, [0.0, 0])
    return mean if count >= min_count else 0.0


def bonus_weights(steps: Sequence[Step], verify_bonus: bool, flip_bonus: bool) -> list[float]:
    """×2 on the advantage of (docs/method.md §3)
        a verification of a correct attempt (verify_bonus: discourages "always say incorrect");
        a re-solve whose correctness differs from the attempt before it (flip_bonus).

    [solve ✓, verify, solve ✗, verify] -> [1, 2, 2, 1] with both bonuses on.
    """
    weights, last_correct = [], None
    for s in steps:
        w = 1.0
        if s.kind == SOLVE:
            if flip_bonus and last_correct is not None and bool(s.correct) != last_correct:
                w = 2.0
            last_correct = bool(s.correct)
        elif verify_bonus and last_correct:
            w = 2.0
        weights.append(w)
    return weights


def fold_kl(advantages: torch.Tensor, kl_sums: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """A_p ← A_p − β · Σ_{t∈p} (log π_old(y_t) − log π_ref(y_t))   (k1 KL folded into the advantage)."""
    return advantages - kl_coef * kl_sums


# ----------------------------------------------------------------------------------- both levels


@dataclass(frozen=True)
class AdvantageSettings:
    context: str = "full"  # a CONTEXTS key
    baseline: str = "batch"  # a BASELINES key
    ema_decay: float = 0.9
    min_count: int = 1  # below this many actions with a context, its baseline is 0
    verify_bonus: bool = True
    flip_bonus: bool = True
    gamma: float = 0.0  # PRL return discount: 0 = each action's own reward


def outcome_advantages(groups: Sequence[Sequence[tuple[list[Step], bool]]], state: State,
                       s: AdvantageSettings, stats_reduce=None) -> tuple[list[list[list[float]]], State]:
    """ORL: groups[prompt][sample] = (steps, truncated) -> one advantage per rollout (its one part);
    no baseline state (RLOO's baseline is the other samples of the same prompt)."""
    rewards = torch.tensor([[outcome_reward(st, tr) for st, tr in g] for g in groups], dtype=torch.float64)  # [P, K]
    adv = rloo(rewards)  # [P, K]
    return [[[a] for a in row] for row in adv.tolist()], state


def process_advantages(groups: Sequence[Sequence[tuple[list[Step], bool]]], state: State,
                       s: AdvantageSettings, stats_reduce=None) -> tuple[list[list[list[float]]], State]:
    """PRL: one advantage per action, A(a) = w(a) · (G(a) − b(ctx(a))), G the return with s.gamma
    (γ = 0: G(a) = r(a), docs/method.md's) and b(ctx) the mean G of the actions with that context.

    stats_reduce merges the batch statistics over processes (data parallelism) before the update."""
    flat = [x for g in groups for x in g]
    rewards = [process_rewards(st, tr) for st, tr in flat]
    keys = [CONTEXTS[s.context](st, r) for (st, _), r in zip(flat, rewards)]  # contexts: the earlier rewards
    returns = [returns_to_go(r, s.gamma) for r in rewards]
    stats = context_stats([k for ks in keys for k in ks], [x for g in returns for x in g])
    if stats_reduce:
        stats = stats_reduce(stats)
    state = BASELINES[s.baseline](state, stats, s.ema_decay)
    advs = []
    for (st, _), g, ks in zip(flat, returns, keys):
        w = bonus_weights(st, s.verify_bonus, s.flip_bonus)
        advs.append([wi * (gi - baseline_of(state, k, s.min_count)) for wi, gi, k in zip(w, g, ks)])
    it = iter(advs)
    return [[next(it) for _ in g] for g in groups], state


ADVANTAGES = {"outcome": outcome_advantages, "process": process_advantages}
