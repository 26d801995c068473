"""Statistics over seeds for `s2r compare`: means with 95% Student-t intervals, and paired tests of
whether two rows (methods) differ by more than the seed-to-seed spread.

`rows_by_seed` is results.json's "rows": {seed: [{"name": row name, "metrics": {key: value | None}}, ...]};
a row may be missing in a seed, a metric may be missing or None (an undefined ratio).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RowsBySeed = Mapping[Any, Sequence[Mapping[str, Any]]]

LEVEL = 0.95  # two-sided confidence level of every interval here
_Z = 1.959963984540054  # the standard normal's 0.975 quantile


def _t_mass(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with df degrees of freedom, exactly (Abramowitz & Stegun 26.7.3–4),
    θ = atan(t/√df), c = cos²θ:
      df odd:  (2/π) [θ + sinθ cosθ Σ_{k<(df−1)/2} a_k c^k],  a_0 = 1, a_k = a_{k−1} · 2k/(2k+1)
      df even: sinθ Σ_{k<df/2} b_k c^k,                       b_0 = 1, b_k = b_{k−1} · (2k−1)/(2k)"""
    theta = math.atan(t / math.sqrt(df))
    c, total, term = math.cos(theta) ** 2, 0.0, 1.0
    if df % 2:
        for k in range((df - 1) // 2):
            total, term = total + term, term * c * (2 * k + 2) / (2 * k + 3)
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    for k in range(df // 2):
        total, term = total + term, term * c * (2 * k + 1) / (2 * k + 2)
    return math.sin(theta) * total


def t_quantile(df: int) -> float:
    """t_{0.975, df}: the half-width of a 95% interval in standard errors (12.706 for df 1, 4.303 for 2,
    2.042 for 30). Bisection on the exact CDF up to df 100; beyond, the Cornish–Fisher expansion
    z + (z³ + z)/(4df) + (5z⁵ + 16z³ + 3z)/(96df²), within 1e-5 there."""
    if df < 1:
        raise ValueError(f"t_quantile: df must be ≥ 1, got {df}")
    if df > 100:
        z = _Z
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    low, high = 0.0, 1.0
    while _t_mass(high, df) < LEVEL:
        low, high = high, 2 * high
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_mass(mid, df) < LEVEL else (low, mid)
    return (low + high) / 2


def interval(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) of the 95% Student-t interval of the mean: mean ± t_{0.975, n−1} · sd/√n,
    sd with n − 1. (mean, None, None) for one value, (None, None, None) for none.

    [1, 2, 3] -> mean 2, sd 1, half-width 4.303/√3 = 2.484 -> (2, −0.484, 4.484)."""
    n = len(values)
    if n == 0:
        return None, None, None
    mean = sum(values) / n
    if n == 1:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def row_names(rows_by_seed: RowsBySeed) -> list[str]:
    """Every row name, in the order first seen over the seeds."""
    return list(dict.fromkeys(row["name"] for rows in rows_by_seed.values() for row in rows))


def values_of(rows_by_seed: RowsBySeed, name: str, key: str) -> dict[Any, float]:
    """{seed: value} of metric `key` of row `name`, over the seeds where both exist and it is not None."""
    out = {}
    for seed, rows in rows_by_seed.items():
        for row in rows:
            if row["name"] == name and row["metrics"].get(key) is not None:
                out[seed] = row["metrics"][key]
    return out


def summarise(rows_by_seed: RowsBySeed, keys: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """{row name: {key: {"mean", "low", "high", "n"}}} over the seeds where the row and key exist (None
    values skipped); n = seeds counted, every key present (n 0: all None; n 1: low = high = None)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in row_names(rows_by_seed):
        out[name] = {}
        for key in keys:
            values = list(values_of(rows_by_seed, name, key).values())
            mean, low, high = interval(values)
            out[name][key] = {"mean": mean, "low": low, "high": high, "n": len(values)}
    return out


@dataclass(frozen=True)
class Separation:
    """Row a minus row b on one metric, paired over the seeds both have."""

    a: str
    b: str
    key: str
    n: int  # seeds with a value for both rows
    diff: float | None  # mean over those seeds of (a − b)
    low: float | None  # 95% t interval of that mean (None below two seeds)
    high: float | None
    separated: bool | None  # the interval excludes 0; None: not decidable (fewer than two seeds)
    note: str  # the verdict in words


def separated(rows_by_seed: RowsBySeed, key: str, a: str, b: str) -> Separation:
    """Whether rows a and b differ on `key` by more than the seed-to-seed spread: the per-seed
    differences a − b (paired: the same seed, the same problems), their mean and its 95% t
    interval; separated when the interval excludes 0.

    differences [0.2, 0.3, 0.25] -> mean 0.25, sd 0.05, half-width 4.303 · 0.05/√3 = 0.124 -> separated;
    [0.1, 0.2, 0.3] -> mean 0.2, sd 0.1, half-width 0.248 -> the interval holds 0: not separated."""
    va, vb = values_of(rows_by_seed, a, key), values_of(rows_by_seed, b, key)
    diffs = [va[s] - vb[s] for s in va if s in vb]
    mean, low, high = interval(diffs)
    if len(diffs) < 2:
        note = "no seed has both" if not diffs else "one seed: not decidable"
        return Separation(a, b, key, len(diffs), mean, None, None, None, note)
    apart = low > 0 or high < 0
    note = (f"{a if mean > 0 else b} higher" if apart else "within the seed spread")
    return Separation(a, b, key, len(diffs), mean, low, high, apart, note)
