"""Statistics for the study's claims, in plain NumPy (seeded, so a report is reproducible).

Data for one claim are runs (x, y, stratum): x the axis under test (data size or trainable
parameters, compared on a log scale), y the test score, stratum the other grid coordinates held
fixed (e.g. the budget when testing data size), so that only x varies inside a stratum.

- `trend`: Spearman rank correlation between x and y inside each stratum, averaged over strata
  (weighted by stratum size); p-value from a permutation test that shuffles x inside each stratum
  (exact null of "no relation"); slope from least squares of y on log10(x) with stratum means
  removed (score change per tenfold increase of x).
- `equivalence`: the effect Δ = mean y at the largest x − mean y at the smallest x (strata pooled),
  with a stratified bootstrap distribution. Two one-sided tests (TOST): p_equivalent = the larger of
  the bootstrap shares at or beyond −δ and +δ ("equivalent" when < α, i.e. the (1 − 2α) interval
  lies inside ±δ); p_different = twice the smaller share on the near side of ±δ ("different" when
  < α, i.e. the (1 − α) interval lies wholly outside ±δ).
- `interior_peak`: the x with the best mean y; when it is interior, one-sided bootstrap tests that
  it beats the smallest and the largest x (each at α/2, Bonferroni: p_peaked = 2 × the larger p).
  "peaked" when both hold; "monotone" when the best x is an end and beats the other end
  (p_monotone < α).
- `bootstrap_ci`: percentile interval of a mean.
- `bh_adjust`: Benjamini–Hochberg adjusted p-values, controlling the false discovery rate over the
  tests of one report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

ALPHA = 0.05
PERMUTATIONS = 2000
BOOTSTRAPS = 2000


def rank(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's correlation uses."""
    a = np.asarray(a, float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a), dtype=float)
    for v in np.unique(a):
        tied = a == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def _corr_rows(rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of rx (P, n) with ry (n,); 0 where either is constant."""
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean()
    den = np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rx * ry).sum(-1) / den
    return np.where(den > 0, r, 0.0)


@dataclass(frozen=True)
class Trend:
    rho: float  # stratified Spearman correlation, in [-1, 1]
    p_value: float  # two-sided permutation p-value
    slope: float  # score change per tenfold increase of x (strata means removed)
    n: int  # runs used
    strata: int


def trend(x: Sequence[float], y: Sequence[float], strata: Sequence, permutations: int = PERMUTATIONS,
          seed: int = 0) -> Trend:
    x, y = np.log10(np.asarray(x, float)), np.asarray(y, float)
    keys = list(strata)
    groups = [np.array([i for i, k in enumerate(keys) if k == g]) for g in dict.fromkeys(keys)]
    groups = [g for g in groups if len(g) >= 3 and len(np.unique(x[g])) >= 2]
    if not groups:
        return Trend(0.0, 1.0, 0.0, 0, 0)
    rng = np.random.default_rng(seed)
    weights = np.array([len(g) for g in groups], float)
    observed, null = 0.0, np.zeros(permutations)
    num = den = 0.0
    for w, g in zip(weights, groups):
        xs, ys = x[g], y[g]
        rx, ry = rank(xs), rank(ys)
        observed += w * _corr_rows(rx[None], ry)[0]
        perms = rng.permuted(np.broadcast_to(rx, (permutations, len(rx))), axis=1)  # (P, n_g): x shuffled
        null += w * _corr_rows(perms, ry)
        xc, yc = xs - xs.mean(), ys - ys.mean()
        num, den = num + (xc * yc).sum(), den + (xc ** 2).sum()
    observed, null = observed / weights.sum(), null / weights.sum()
    p = (1 + np.sum(np.abs(null) >= abs(observed) - 1e-12)) / (permutations + 1)
    return Trend(float(observed), float(p), float(num / den) if den > 0 else 0.0, int(weights.sum()), len(groups))


def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, boots: int = BOOTSTRAPS, seed: int = 0
) -> tuple[float, float]:
    v = np.asarray(values, float)
    if len(v) == 0:
        return (float("nan"), float("nan"))
    if len(v) == 1:
        return (float(v[0]), float(v[0]))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(boots, len(v)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _stratified_boot_diff(a_groups, b_groups, boots: int, rng) -> np.ndarray:
    """Bootstrap distribution of mean(a) - mean(b), resampling inside each stratum."""
    def boot_mean(groups):
        total = np.zeros(boots)
        count = sum(len(g) for g in groups)
        for g in groups:
            g = np.asarray(g, float)
            total += g[rng.integers(0, len(g), size=(boots, len(g)))].sum(1)
        return total / count
    return boot_mean(a_groups) - boot_mean(b_groups)


@dataclass(frozen=True)
class Equivalence:
    delta: float  # observed mean(largest x) - mean(smallest x)
    ci90: tuple[float, float]  # (1 - 2 alpha) interval: inside +-margin means equivalent
    ci95: tuple[float, float]
    margin: float
    verdict: str  # "equivalent" | "different" | "inconclusive"
    p_equivalent: float = 1.0  # TOST p: small means |effect| < margin
    p_different: float = 1.0  # small means |effect| > margin


def equivalence(x: Sequence[float], y: Sequence[float], strata: Sequence, margin: float, alpha: float = ALPHA,
                boots: int = BOOTSTRAPS, seed: int = 0) -> Equivalence:
    x, y, keys = np.asarray(x, float), np.asarray(y, float), list(strata)
    lo_x, hi_x = x.min(), x.max()
    lo = [y[[i for i, k in enumerate(keys) if k == g and x[i] == lo_x]] for g in dict.fromkeys(keys)]
    hi = [y[[i for i, k in enumerate(keys) if k == g and x[i] == hi_x]] for g in dict.fromkeys(keys)]
    pairs = [(h, w) for h, w in zip(hi, lo) if len(h) >= 2 and len(w) >= 2]  # a variance needs >= 2 seeds
    if not pairs or lo_x == hi_x:
        return Equivalence(float("nan"), (float("nan"),) * 2, (float("nan"),) * 2, margin, "inconclusive")
    rng = np.random.default_rng(seed)
    dist = _stratified_boot_diff([h for h, _ in pairs], [w for _, w in pairs], boots, rng)
    delta = float(np.concatenate([h for h, _ in pairs]).mean() - np.concatenate([w for _, w in pairs]).mean())
    ci90 = tuple(float(q) for q in np.quantile(dist, [alpha, 1 - alpha]))
    ci95 = tuple(float(q) for q in np.quantile(dist, [alpha / 2, 1 - alpha / 2]))
    share = lambda hit: float((1 + np.sum(hit)) / (boots + 1))  # noqa: E731  (a bootstrap p never reads 0)
    p_equivalent = max(share(dist <= -margin), share(dist >= margin))
    p_different = min(1.0, 2 * min(share(dist <= margin), share(dist >= -margin)))
    verdict = "equivalent" if p_equivalent < alpha else "different" if p_different < alpha else "inconclusive"
    return Equivalence(delta, ci90, ci95, margin, verdict, p_equivalent, p_different)


@dataclass(frozen=True)
class Peak:
    best_x: float
    interior: bool
    gain_over_low: float
    gain_over_high: float
    p_low: float  # one-sided bootstrap p that the best x does not beat the smallest x
    p_high: float
    verdict: str  # "peaked" | "monotone" | "inconclusive" | "untestable"
    levels: int

    @property
    def p_peaked(self) -> float:
        """p of "an interior x beats both ends" (each one-sided test at half the level)."""
        return min(1.0, 2 * max(self.p_low, self.p_high)) if self.interior else 1.0

    @property
    def p_monotone(self) -> float:
        """p of "the best x is an end and beats the other end"."""
        return 1.0 if self.interior or self.verdict == "untestable" else min(self.p_low, self.p_high)


def interior_peak(x: Sequence[float], y: Sequence[float], strata: Sequence, alpha: float = ALPHA,
                  boots: int = BOOTSTRAPS, seed: int = 0) -> Peak:
    x, y, keys = np.asarray(x, float), np.asarray(y, float), list(strata)
    levels = np.unique(x)
    if len(levels) < 3:
        return Peak(float("nan"), False, float("nan"), float("nan"), 1.0, 1.0, "untestable", len(levels))
    means = np.array([y[x == v].mean() for v in levels])
    k = int(means.argmax())
    rng = np.random.default_rng(seed)

    def groups(v):
        return [y[[i for i, kk in enumerate(keys) if kk == g and x[i] == v]] for g in dict.fromkeys(keys)]

    def gain(a, b):
        ga, gb = groups(a), groups(b)
        pairs = [(p, q) for p, q in zip(ga, gb) if len(p) >= 2 and len(q) >= 2]
        if not pairs:
            return float("nan"), 1.0
        dist = _stratified_boot_diff([p for p, _ in pairs], [q for _, q in pairs], boots, rng)
        observed = float(np.concatenate([p for p, _ in pairs]).mean() - np.concatenate([q for _, q in pairs]).mean())
        return observed, float((1 + np.sum(dist <= 0)) / (boots + 1))

    g_low, p_low = gain(levels[k], levels[0]) if k > 0 else (0.0, 1.0)
    g_high, p_high = gain(levels[k], levels[-1]) if k < len(levels) - 1 else (0.0, 1.0)
    interior = 0 < k < len(levels) - 1
    if interior and p_low < alpha / 2 and p_high < alpha / 2:
        verdict = "peaked"
    elif not interior and min(p_low, p_high) < alpha:
        verdict = "monotone"
    else:
        verdict = "inconclusive"
    return Peak(float(levels[k]), interior, g_low, g_high, p_low, p_high, verdict, len(levels))


def bh_adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (step-up): q_(i) = min_{j >= i} p_(j) m / j over the sorted
    p-values, capped at 1. Rejecting q < α keeps the expected share of false discoveries among the
    rejections at most α (independent or positively dependent tests; Benjamini & Hochberg 1995)."""
    p = np.asarray(p_values, float)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return [float(x) for x in out]


# Student t quantiles t_{0.95, df} (a two-sided 90 % interval), df = 1..30; df > 30 uses the nearest
# smaller tabulated df (slightly wide, never narrow), df > 120 the normal 1.645.
_T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812,
        11: 1.796, 12: 1.782, 13: 1.771, 14: 1.761, 15: 1.753, 16: 1.746, 17: 1.740, 18: 1.734, 19: 1.729,
        20: 1.725, 25: 1.708, 30: 1.697, 40: 1.684, 60: 1.671, 120: 1.658}


def t95(df: int) -> float:
    """t_{0.95, df}: the 90 % two-sided Student quantile."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df > 120:
        return 1.645
    return _T95[max(k for k in _T95 if k <= df)]


@dataclass(frozen=True)
class Line:
    """Least-squares line y = a + b x over n points, with what a prediction interval needs."""
    a: float
    b: float
    n: int
    sigma: float | None  # residual standard deviation (n - 2 degrees of freedom); None for n <= 2
    x_mean: float
    sxx: float


def fit_line(x: Sequence[float], y: Sequence[float]) -> Line:
    """OLS of y on x. One point (or all x equal): a flat line at the mean of y, b = 0."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) == 0:
        raise ValueError("fit_line needs at least one point")
    xm, ym = float(x.mean()), float(y.mean())
    sxx = float(((x - xm) ** 2).sum())
    b = float(((x - xm) * (y - ym)).sum() / sxx) if sxx > 0 else 0.0
    a = ym - b * xm
    sigma = None
    if len(x) > 2:
        resid = y - (a + b * x)
        sigma = float(np.sqrt((resid ** 2).sum() / (len(x) - 2)))
    return Line(a, b, len(x), sigma, xm, sxx)


def predict_line(line: Line, x0: float) -> tuple[float, float | None, float | None]:
    """(prediction, lo, hi) at x0: the 90 % prediction interval for a new point,
    y_hat +- t_{0.95, n-2} sigma sqrt(1 + 1/n + (x0 - x_mean)^2 / Sxx); no interval (None, None)
    with two points or fewer (the line fits them exactly: nothing estimates the scatter)."""
    y = line.a + line.b * x0
    if line.sigma is None:
        return y, None, None
    lever = (x0 - line.x_mean) ** 2 / line.sxx if line.sxx > 0 else 0.0
    half = t95(line.n - 2) * line.sigma * float(np.sqrt(1 + 1 / line.n + lever))
    return y, y - half, y + half
