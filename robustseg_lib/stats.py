"""Paired statistics for robustness comparisons: Wilcoxon tests, Holm correction, bootstrap CIs,
the comparison families of the paper and the claim verdicts.

All functions work on the tidy result table of ``docs/design.md``
(``case_id, model, attack, eps, steps, region, dice, hd95`` + optional ``target_policy``,
``source_model``, ...). Comparisons are paired by ``case_id``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sst

from .checks import check_float

__all__ = [
    "WilcoxonResult",
    "paired_wilcoxon",
    "hodges_lehmann",
    "hodges_lehmann_ci",
    "holm",
    "bootstrap_mean_ci",
    "bootstrap_relative_drop_ci",
    "bootstrap_max_relative_drop_ci",
    "drop_vs_perceptibility",
    "is_diagnostic_attack",
    "attack_label",
    "condition_rows",
    "summary_table",
    "mean_table",
    "compare",
    "claims",
    "claims_by_region",
    "empty_truth_cases",
    "check_claim_metric",
    "COMPARE_COLUMNS",
    "CLAIM_COLUMNS",
    "CLAIM_RULES_MD",
    "claim_rules_md",
    "SENSITIVITY_COLUMNS",
    "VERDICTS",
    "PAPER_ATTACKS",
    "LOWER_IS_BETTER_METRICS",
    "C2_MIN_CASES",
]

#: Optional columns that are part of a condition's identity when present in the table.
ID_OPTIONAL = ("target_policy", "source_model")

COMPARE_COLUMNS = [
    "family", "region",
    "model_a", "attack_a", "target_policy_a", "eps_a",
    "model_b", "attack_b", "target_policy_b", "eps_b",
    "n", "n_nonzero", "mean_a", "mean_b", "median_diff",
    "statistic", "pvalue", "effect_size", "p_holm", "significant", "hl_estimate", "hl_ci_lo", "hl_ci_hi",
]  # fmt: skip

CLAIM_COLUMNS = [
    "claim", "statement", "verdict", "evidence",
    "n_tests", "n_support", "n_against", "rel_drop", "rel_drop_ci_lo", "rel_drop_ci_hi",
]  # fmt: skip


# ----------------------------------------------------------------------------- validation
def _vector(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: contains NaN (drop or impute before testing)")
    if np.isinf(arr).any():
        raise ValueError(f"{name}: contains inf")
    return arr


def _check_confidence(confidence: float, n_resamples: int) -> None:
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples: must be >= 1, got {n_resamples}")


# ----------------------------------------------------------------------------- Wilcoxon
@dataclass(frozen=True)
class WilcoxonResult:
    """Result of :func:`paired_wilcoxon`.

    Attributes:
        statistic: scipy's statistic (two-sided: min(R⁺, R⁻); one-sided: R⁺).
        pvalue: scipy's p-value (1.0 when every difference is zero).
        n: number of pairs the test ranks (non-zero differences under ``"wilcox"``; all pairs
            under ``"pratt"``/``"zsplit"``).
        median_diff: median of ``a − b`` over all pairs.
        effect_size: matched-pairs rank-biserial correlation ``(R⁺ − R⁻)/(R⁺ + R⁻)`` over the
            non-zero differences (average ranks for ties), positive when ``a > b``; 0 if none.
    """

    statistic: float
    pvalue: float
    n: int
    median_diff: float
    effect_size: float


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of differences ``d`` (zeros dropped)."""
    d = np.asarray(d, dtype=np.float64)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    r = sst.rankdata(np.abs(d))  # average ranks for ties
    r_plus = float(r[d > 0].sum())
    r_minus = float(r[d < 0].sum())
    return (r_plus - r_minus) / (r_plus + r_minus)


def hodges_lehmann(d: Sequence[float] | np.ndarray) -> float:
    """Hodges–Lehmann estimate of the location of paired differences ``d``.

    The median of the ``n(n+1)/2`` Walsh averages ``(d_i + d_j)/2`` for ``i ≤ j`` of the
    differences given (zeros included if given; :func:`compare` passes the non-zero ones): the
    estimator that goes with the signed-rank test, the shift at which its statistic is balanced.

    Args:
        d: paired differences ``a − b`` (1-D, no NaN/inf, at least one value).

    Returns:
        The estimate (same units as ``d``).
    """
    return float(np.median(_walsh_averages(d)))


def _walsh_averages(d: Sequence[float] | np.ndarray) -> np.ndarray:
    """The sorted Walsh averages ``(d_i + d_j)/2``, ``i ≤ j``, of a validated non-empty sample."""
    arr = _vector(d, "d")
    if arr.size == 0:
        raise ValueError("d: empty sample")
    i, j = np.triu_indices(arr.size)
    return np.sort((arr[i] + arr[j]) / 2.0)


#: Largest n for which :func:`hodges_lehmann_ci` uses the exact signed-rank distribution.
_EXACT_CI_MAX_N = 400


@functools.lru_cache(maxsize=32)
def _signed_rank_cdf(n: int) -> np.ndarray:
    """``P(T⁺ ≤ t)`` for ``t = 0 … n(n+1)/2`` under the null (no ties): the distribution of the
    sum of a random subset of the ranks ``1 … n``.

    Hand-written (a subset-sum recursion in probabilities, adding one rank at a time) because
    scipy keeps its signed-rank distribution private.
    """
    m = n * (n + 1) // 2
    p = np.zeros(m + 1)
    p[0] = 1.0
    for k in range(1, n + 1):
        p[k:] = 0.5 * p[k:] + 0.5 * p[:-k]  # rank k either out of (t) or in (t − k) the positive set
        p[:k] *= 0.5
    cdf = np.cumsum(p)
    cdf.flags.writeable = False  # cached: shared by every call with this n
    return cdf


def hodges_lehmann_ci(
    d: Sequence[float] | np.ndarray, *, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Hodges–Lehmann estimate of paired differences with its distribution-free confidence interval.

    The interval is the inversion of the two-sided signed-rank test (Hollander & Wolfe, §3.3; what R's
    ``wilcox.test(conf.int=TRUE)`` reports): with the ``M = n(n+1)/2`` Walsh averages sorted,
    ``[W₍c+1₎, W₍M−c₎]`` where ``c`` is the largest integer with ``P(T⁺ ≤ c) ≤ (1 − confidence)/2``
    under the null, i.e. exactly the shifts θ at which the test of ``d − θ`` is not rejected at
    ``1 − confidence``. The null distribution is exact for ``n ≤ 400`` and the normal approximation
    (continuity-corrected) above. The differences are used as given: :func:`compare` passes the
    non-zero ones, the pairs its test ranks (R's convention too), so that 0 lies outside the interval
    exactly when that test rejects at ``1 − confidence`` as long as its p-value is exact too (no ties,
    and at most 50 differences, where scipy's ``"auto"`` switches to the normal approximation, which can
    disagree with the exact bounds near the level; with tied differences the coverage is approximate).
    The interval is per test, not adjusted for multiple comparisons.

    Args:
        d: paired differences ``a − b`` (1-D, no NaN/inf, at least one value).
        confidence: confidence level in (0, 1).

    Returns:
        ``(estimate, lo, hi)``; ``lo = hi = NaN`` when ``n`` is too small for the level (at 95 %,
        n ≤ 5: even the most extreme outcome has probability 2·2⁻ⁿ > 0.05).
    """
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    walsh = _walsh_averages(d)
    est = float(np.median(walsh))
    m = walsh.size
    n = int(round((math.sqrt(8 * m + 1) - 1) / 2))  # m = n(n+1)/2
    half_alpha = (1.0 - confidence) / 2.0
    if n <= _EXACT_CI_MAX_N:
        cdf = _signed_rank_cdf(n)
        c = int(np.searchsorted(cdf, half_alpha * (1 + 1e-12), side="right")) - 1  # largest c: cdf[c] ≤ α/2
    else:  # normal approximation of T⁺ (mean M/2, variance n(n+1)(2n+1)/24), continuity-corrected
        sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
        c = int(math.floor(m / 2.0 - 0.5 - sst.norm.ppf(1.0 - half_alpha) * sd))
    if c < 0:
        return est, math.nan, math.nan
    return est, float(walsh[c]), float(walsh[m - c - 1])


def _signed_rank_sum(d: np.ndarray, axis: int = -1) -> np.ndarray:
    """Wilcoxon's T⁺ along ``axis`` (sum of the average ranks of ``|d|`` where ``d > 0``; ``d`` without zeros): the
    statistic of ``scipy.stats.wilcoxon``'s permutation branch, for whole arrays of sign patterns at once."""
    d = np.moveaxis(np.asarray(d, dtype=np.float64), axis, -1)
    ranks = sst.rankdata(np.abs(d), method="average", axis=-1)
    return np.sum((d > 0).astype(np.float64) * ranks, axis=-1)


def paired_wilcoxon(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    alternative: str = "two-sided",
    zero_method: str = "wilcox",
    method: str = "auto",
) -> WilcoxonResult:
    """Paired Wilcoxon signed-rank test of ``a`` vs ``b`` (``scipy.stats.wilcoxon`` underneath).

    Zero differences: with the default ``zero_method="wilcox"`` they are dropped *before*
    scipy is called, so scipy sees only the ``n`` non-zero differences and chooses its
    p-value method on them (scipy itself would choose on the full number of pairs and, with
    any zero present and more than 13 pairs, fall back to an uncorrected normal
    approximation even when only a handful of non-zero differences remain). ``"pratt"`` and
    ``"zsplit"`` keep the zeros and follow scipy.
    Degenerate cases: all differences zero -> ``statistic 0, pvalue 1.0, n 0, effect 0``.
    Small ``n`` (down to 1 non-zero difference) is passed to scipy unchanged (exact
    distribution; such p-values cannot be small, e.g. n = 1 gives 1.0 two-sided).

    P-value method (scipy's ``method``), applied to the ``n`` ranked differences:
    ``"auto"`` (scipy's default) is the exact signed-rank distribution for n ≤ 50 without
    ties (e.g. 2/2¹⁰ for 10 non-zero differences of one sign, whatever the number of zero
    differences), an exhaustive sign-flip permutation test for n ≤ 13 with tied |differences|,
    and the normal approximation (no continuity correction) otherwise. ``"exact"`` is
    fast and conservative with ties; ``"asymptotic"`` is fast but rough for small n. The
    permutation test is scipy's ``permutation_test`` over the same 2ⁿ sign flips and the same
    statistic as ``wilcoxon``'s, called here with the statistic vectorised (:func:`_signed_rank_sum`):
    ``wilcoxon`` evaluates it one sign pattern at a time (1.6 s a call for 13 pairs; docs/benchmarks.md).

    Args:
        a, b: paired samples of equal length (no NaN/inf).
        alternative: ``"two-sided"``, ``"greater"`` (a > b) or ``"less"``.
        zero_method: ``"wilcox"``, ``"pratt"`` or ``"zsplit"``.
        method: ``"auto"``, ``"exact"`` or ``"asymptotic"``.

    Returns:
        A :class:`WilcoxonResult`.
    """
    x = _vector(a, "a")
    y = _vector(b, "b")
    if x.size != y.size:
        raise ValueError(f"a and b must have equal lengths, got {x.size} and {y.size}")
    if x.size == 0:
        raise ValueError("a: empty sample")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative: expected 'two-sided', 'greater' or 'less', got {alternative!r}")
    if zero_method not in ("wilcox", "pratt", "zsplit"):
        raise ValueError(f"zero_method: expected 'wilcox', 'pratt' or 'zsplit', got {zero_method!r}")
    if method not in ("auto", "exact", "asymptotic"):
        raise ValueError(f"method: expected 'auto', 'exact' or 'asymptotic', got {method!r}")
    d = x - y
    nonzero = int(np.count_nonzero(d))
    median_diff = float(np.median(d))
    effect = rank_biserial(d)
    if nonzero == 0:
        return WilcoxonResult(0.0, 1.0, 0, median_diff, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's small-sample/ties notices
        warnings.simplefilter("ignore", UserWarning)
        if zero_method == "wilcox":
            # drop zeros here so that scipy picks exact/permutation/normal on the non-zero count
            dn = d[d != 0]
            tied_small = method == "auto" and dn.size <= 13 and np.unique(np.abs(dn)).size < dn.size
            res = sst.wilcoxon(dn, zero_method="wilcox", alternative=alternative,
                               method="exact" if tied_small else method)  # when tied_small: for the statistic only
            stat, pvalue = res.statistic, res.pvalue
            if tied_small:  # what scipy's "auto" does (2ⁿ sign flips, n_resamples 9999 > 2¹³), statistic vectorised
                pvalue = sst.permutation_test((dn,), _signed_rank_sum, permutation_type="samples", vectorized=True,
                                              n_resamples=9999, alternative=alternative).pvalue
        else:
            res = sst.wilcoxon(x, y, zero_method=zero_method, alternative=alternative, method=method)
            stat, pvalue = res.statistic, res.pvalue
    n = nonzero if zero_method == "wilcox" else int(x.size)
    return WilcoxonResult(float(stat), float(pvalue), n, median_diff, float(effect))


# ----------------------------------------------------------------------------- Holm
def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values.

    Hand-written because scipy has no Holm correction and statsmodels is not a dependency:
    sort the m non-NaN p-values ascending, ``adj_(i) = max_{j<=i} min(1, (m − j + 1)·p_(j))``
    (1-based), and return them in the original order. NaN entries are passed through and do not
    count towards m.

    Args:
        pvalues: p-values in [0, 1] (NaN allowed).

    Returns:
        Adjusted p-values, same length and order.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues: expected a 1-D sequence, got shape {p.shape}")
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("pvalues: values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(ok)
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="mergesort")]
    factors = m - np.arange(m)  # m, m-1, ..., 1
    adj = np.minimum(1.0, np.maximum.accumulate(factors * p[order]))
    out[order] = adj
    return out


# ----------------------------------------------------------------------------- bootstrap
def bootstrap_mean_ci(
    x: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float, float]:
    """Bootstrap confidence interval of the mean (``scipy.stats.bootstrap``).

    Args:
        x: sample (no NaN).
        confidence: confidence level.
        n_resamples: bootstrap resamples.
        seed: RNG seed (deterministic).
        method: ``"percentile"``, ``"basic"`` or ``"BCa"``.

    Returns:
        ``(mean, lo, hi)``; a constant or single-value sample gives ``lo = hi = mean``.
    """
    arr = _vector(x, "x")
    _check_confidence(confidence, n_resamples)
    if arr.size == 0:
        raise ValueError("x: empty sample")
    mean = float(arr.mean())
    if arr.size == 1 or np.ptp(arr) == 0:
        return mean, mean, mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sst.bootstrap(
            (arr,), np.mean, confidence_level=confidence, n_resamples=int(n_resamples),
            method=method, rng=np.random.default_rng(seed), vectorized=True,
        )  # fmt: skip
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo = hi = mean
    return mean, lo, hi


def _relative_drop(clean: np.ndarray, attacked: np.ndarray, axis: int = -1) -> np.ndarray:
    """``1 − mean(attacked)/mean(clean)`` along ``axis``; NaN where the clean mean is 0 (no relative drop is defined
    there: 0/0, or −∞ for any attacked score above 0), e.g. a bootstrap resample that drew only clean zeros."""
    mc = np.mean(clean, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mc == 0, np.nan, 1.0 - np.mean(attacked, axis=axis) / mc)


def _defined_percentile_ci(dist: np.ndarray, drop: float, confidence: float, method: str) -> tuple[float, float]:
    """Percentile (or basic) interval over the resamples whose relative drop is defined (finite); NaN, NaN for
    another method or when none is."""
    dist = np.asarray(dist, dtype=np.float64).ravel()
    dist = dist[np.isfinite(dist)]
    alpha = (1 - confidence) / 2
    if dist.size == 0 or method.lower() not in ("percentile", "basic"):
        return math.nan, math.nan
    lo, hi = (float(v) for v in np.percentile(dist, [100 * alpha, 100 * (1 - alpha)]))
    return (lo, hi) if method.lower() == "percentile" else (2 * drop - hi, 2 * drop - lo)


def bootstrap_relative_drop_ci(
    clean: Sequence[float] | np.ndarray,
    attacked: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float, float]:
    """Bootstrap CI of the relative drop ``1 − mean(attacked)/mean(clean)`` (paired by case).

    Cases are resampled jointly (``scipy.stats.bootstrap(..., paired=True)``, vectorised).

    Args:
        clean: per-case scores without attack.
        attacked: per-case scores under attack, same cases in the same order.
        confidence, n_resamples, seed, method: as in :func:`bootstrap_mean_ci`.

    Returns:
        ``(drop, lo, hi)``; degenerate samples (single case, or a constant bootstrap
        distribution) give ``lo = hi = drop``.
    """
    c = _vector(clean, "clean")
    a = _vector(attacked, "attacked")
    if c.size != a.size:
        raise ValueError(f"clean and attacked must have equal lengths, got {c.size} and {a.size}")
    # the maximum over one condition is that condition's drop: one implementation of the joint bootstrap
    return bootstrap_max_relative_drop_ci(c, a[None, :], confidence=confidence, n_resamples=n_resamples,
                                          seed=seed, method=method)  # fmt: skip


def _max_relative_drop(clean: np.ndarray, *attacked: np.ndarray, axis: int = -1) -> np.ndarray:
    drops = [_relative_drop(clean, a, axis=axis) for a in attacked]
    return np.max(np.stack(drops), axis=0)


def bootstrap_max_relative_drop_ci(
    clean: Sequence[float] | np.ndarray,
    attacked: Sequence[Sequence[float]] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "percentile",
    strata: Sequence[Any] | np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Bootstrap CI of the *largest* relative drop over several attacked conditions.

    The statistic is ``max_k [1 − mean(attacked[k])/mean(clean)]``. Cases are resampled
    jointly across the clean scores and every condition (``scipy.stats.bootstrap(...,
    paired=True)``) and the maximum is taken inside each resample, so the interval is that
    of the maximum itself rather than of whichever condition won on the observed sample
    (no winner's curse from selecting first and bootstrapping the winner afterwards). The
    maximum of several noisy drops is itself biased upwards when conditions are close; the
    interval describes the sampling variability of that maximum, as reported.

    With ``strata`` (one label per case, e.g. the run a pooled case came from) each
    resample draws, within every stratum, as many cases as it has, so the composition of
    the pool is fixed and the between-strata spread of the means does not widen the
    interval. scipy's bootstrap has no strata, so this resampling is written out here
    (percentile method only); with a single stratum it is the plain bootstrap above.

    A resample that draws only cases with a clean score of 0 has no relative drop (0/0, or
    −∞); such resamples are left out of the percentiles (``"percentile"``/``"basic"``; the
    interval is NaN for ``"BCa"`` or when no resample has a drop), rather than letting them
    make the whole interval NaN.

    Args:
        clean: per-case scores without attack (length ``n``).
        attacked: ``k × n`` per-case scores, one row per attacked condition, cases in the
            same order as ``clean``.
        confidence, n_resamples, seed, method: as in :func:`bootstrap_mean_ci`.
        strata: ``None`` or ``n`` stratum labels, cases in the same order as ``clean``.

    Returns:
        ``(max_drop, lo, hi)``; degenerate samples (single case, or a constant bootstrap
        distribution) give ``lo = hi = max_drop``.
    """
    c = _vector(clean, "clean")
    try:
        att = np.asarray(attacked, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError("attacked: expected a k × n array of numbers") from exc
    if att.ndim == 1:
        att = att[None, :]
    if att.ndim != 2 or att.shape[0] == 0:
        raise ValueError(f"attacked: expected a k × n array with k ≥ 1, got shape {att.shape}")
    if not np.isfinite(att).all():
        raise ValueError("attacked: contains NaN or inf")
    _check_confidence(confidence, n_resamples)
    if c.size == 0:
        raise ValueError("clean: empty sample")
    if att.shape[1] != c.size:
        raise ValueError(f"attacked: rows must have the length of clean ({c.size}), got {att.shape[1]}")
    if c.mean() == 0:
        raise ValueError("clean: mean is zero, the relative drop is undefined")
    groups: list[np.ndarray] = []
    if strata is not None:
        lab = pd.Series(np.asarray(strata, dtype=object).ravel())
        if len(lab) != c.size:
            raise ValueError(f"strata: expected one label per case ({c.size}), got {len(lab)}")
        if lab.isna().any():
            raise ValueError("strata: contains missing labels")
        groups = [np.asarray(ix, dtype=np.intp) for ix in lab.groupby(lab, sort=True).indices.values()]
        if len(groups) > 1 and method != "percentile":
            raise ValueError(f"method: the stratified bootstrap supports 'percentile' only, got {method!r}")
    drop = float(_max_relative_drop(c, *att))
    if c.size == 1 or (np.ptp(c) == 0 and all(np.ptp(a) == 0 for a in att)):
        return drop, drop, drop
    if len(groups) > 1:
        rng = np.random.default_rng(seed)
        # resample indices: within each stratum, n_s draws with replacement from its own n_s cases
        idx = np.concatenate([g[rng.integers(0, g.size, size=(int(n_resamples), g.size))] for g in groups], axis=1)
        dist = _max_relative_drop(c[idx], *(a[idx] for a in att), axis=-1)
        lo, hi = _defined_percentile_ci(dist, drop, confidence, "percentile")
        return drop, lo, hi
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sst.bootstrap(
            (c, *att), _max_relative_drop, paired=True, vectorized=True, confidence_level=confidence,
            n_resamples=int(n_resamples), method=method, rng=np.random.default_rng(seed),
        )  # fmt: skip
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not np.isfinite(res.bootstrap_distribution).all():
        # resamples without a defined drop (clean mean 0): the interval of the others; scipy's would be NaN
        lo, hi = _defined_percentile_ci(res.bootstrap_distribution, drop, confidence, method)
    elif not (math.isfinite(lo) and math.isfinite(hi)):  # a constant bootstrap distribution (BCa)
        lo = hi = drop
    return drop, lo, hi


# ----------------------------------------------------------------------------- table helpers
def is_diagnostic_attack(attack: str) -> bool:
    """True for diagnostic attacks (``transfer_*`` or ``*_logit_rescaled``)."""
    return str(attack).startswith("transfer_") or str(attack).endswith("_logit_rescaled")


def attack_label(attack: str, target_policy: Any = None) -> str:
    """Display label of an attack: ``tifgsm[erase]`` when a target policy is set."""
    if target_policy is None or (isinstance(target_policy, float) and math.isnan(target_policy)) or target_policy == "":
        return str(attack)
    return f"{attack}[{target_policy}]"


def _check_table(table: Any, metric: str, region_col: str = "region") -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table: expected a pandas DataFrame, got {type(table).__name__}")
    need = ["case_id", "model", "attack", "eps", region_col, metric]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"table: missing columns {missing}")
    if table.empty:
        raise ValueError("table: no rows")
    return table


def _id_cols(table: pd.DataFrame) -> list[str]:
    return [c for c in ID_OPTIONAL if c in table.columns]


def _norm(v: Any) -> Any:
    """Normalise a key value: NaN/None -> None, numpy scalars -> Python."""
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        v = v.item()
        if isinstance(v, float) and math.isnan(v):
            return None
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def condition_rows(table: pd.DataFrame, cond: dict[str, Any] | Any) -> pd.Series:
    """Which rows of a tidy table belong to one condition (``{column: value}``): ``eps`` (a finite number) compared
    with ``np.isclose``, ``None`` or NaN matching a missing value, anything else by equality.

    Args:
        table: tidy results.
        cond: column -> value, e.g. ``{"model": "baseline", "attack": "tifgsm", "eps": 0.5, "target_policy": "erase"}``.

    Returns:
        A boolean mask over ``table``'s rows.
    """
    if not hasattr(cond, "items") or not cond:
        raise ValueError(f"cond: expected a non-empty dict of column -> value, got {cond!r}")
    unknown = [k for k in cond if k not in table.columns]
    if unknown:
        raise ValueError(f"cond: unknown columns {unknown}")
    if "eps" in cond:
        e = cond["eps"]
        if isinstance(e, (bool, np.bool_)) or not isinstance(e, (int, float, np.integer, np.floating)) or not np.isfinite(e):
            raise ValueError(f"cond: eps must be a finite number, got {e!r}")
    mask = pd.Series(True, index=table.index)
    for k, v in cond.items():
        if k == "eps":
            mask &= np.isclose(table[k].astype(float), float(v))
        elif v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
            mask &= table[k].isna()
        else:
            mask &= table[k] == v
    return mask


def summary_table(
    table: pd.DataFrame,
    *,
    metric: str = "dice",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean of ``metric`` with a bootstrap CI per model × attack × eps × region.

    Groups also by ``target_policy`` and ``source_model`` when those columns exist.

    Args:
        table: tidy result table.
        metric: score column.
        confidence, n_resamples, seed: bootstrap settings (:func:`bootstrap_mean_ci`).

    Returns:
        DataFrame with the group columns and ``n, mean_<metric>, ci_lo, ci_hi``.
    """
    _check_table(table, metric)
    keys = ["model", "attack", *_id_cols(table), "eps", "region"]
    rows = []
    for key, grp in table.groupby(keys, dropna=False, sort=True):
        vals = grp[metric].to_numpy(dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        if vals.size:
            mean, lo, hi = bootstrap_mean_ci(vals, confidence=confidence, n_resamples=n_resamples, seed=seed)
        else:
            mean = lo = hi = float("nan")
        rows.append({**dict(zip(keys, key)), "n": int(vals.size), f"mean_{metric}": mean, "ci_lo": lo, "ci_hi": hi})
    return pd.DataFrame(rows, columns=[*keys, "n", f"mean_{metric}", "ci_lo", "ci_hi"])


def mean_table(table: pd.DataFrame, region: str = "WT", *, metric: str = "dice") -> pd.DataFrame:
    """Mean ``metric`` of one region per condition (rows) and model (columns), for display.

    Rows are attack × ``target_policy`` × ``source_model`` (where those columns exist; blank where they do not
    apply) × eps, so that two target policies, or two source models, are never averaged into one cell (a table
    indexed on attack and eps alone averages them).

    Args:
        table: tidy result table.
        region: the region's rows to average.
        metric: score column.

    Returns:
        DataFrame indexed by ``attack, [target_policy, source_model,] eps`` with one column per model; NaN where a
        model has no rows for a condition.
    """
    _check_table(table, metric)
    t = table.loc[table["region"] == region]
    if t.empty:
        raise ValueError(f"region: no rows for {region!r} (regions in the table: {sorted(map(str, table['region'].unique()))})")
    ids = _id_cols(t)
    t = t.assign(**{c: t[c].astype(object).where(t[c].notna(), "") for c in ids})  # NaN keys would drop the row
    return t.pivot_table(index=["attack", *ids, "eps"], columns="model", values=metric, aggfunc="mean")


# ----------------------------------------------------------------------------- compare
def _series_by_condition(tr: pd.DataFrame, keys: list[str], metric: str, region: Any) -> dict[tuple, pd.Series]:
    """Map each normalised condition key (model, attack, optional ids, eps) to its
    ``case_id -> metric`` series (one region)."""
    out: dict[tuple, pd.Series] = {}
    for key, g in tr.groupby(keys, dropna=False, sort=False):
        k = tuple(_norm(v) for v in key)
        k = (*k[:-1], float(k[-1]))
        if g["case_id"].duplicated().any():
            raise ValueError(
                f"table: duplicate case_id rows for condition {dict(zip(keys, k))} region {region!r} "
                "(e.g. several step counts at one eps); filter the table first"
            )
        out[k] = pd.Series(g[metric].to_numpy(np.float64), index=g["case_id"].astype(str).to_numpy())
    return out


def _pair_values(sa: pd.Series, sb: pd.Series, ca: Any, cb: Any, region: Any) -> tuple[np.ndarray, np.ndarray]:
    common = sa.index.intersection(sb.index)
    if common.empty:
        raise ValueError(f"table: no case_id overlap between {ca} and {cb} in region {region!r}")
    common = common.sort_values()
    xa = sa.loc[common].to_numpy()
    xb = sb.loc[common].to_numpy()
    ok = ~(np.isnan(xa) | np.isnan(xb))
    return xa[ok], xb[ok]


def compare(
    table: pd.DataFrame,
    *,
    region_col: str = "region",
    metric: str = "dice",
    baseline: str = "baseline",
    defended: Sequence[str] | None = None,
    distilled: str = "distilled",
    advtrain: str = "advtrain",
    alpha: float = 0.05,
    include_diagnostics: bool = False,
    method: str = "auto",
) -> pd.DataFrame:
    """Paired Wilcoxon comparisons of the paper's four families, Holm-corrected.

    Families (``a`` vs ``b``; conditions are model × attack (× target_policy × source_model
    when present) × eps):
    1. ``attack_effect``: for every model, (model, clean) vs (model, attack, eps) for each
       attack × eps > 0.
    2. ``defense_vs_baseline``: each defended model vs ``baseline`` under the same attack × eps
       (clean included).
    3. ``distill_vs_advtrain``: ``distilled`` vs ``advtrain`` under each attack × eps present for
       both (clean included).
    4. ``defense_vs_clean``: each defended model under each attack × eps > 0 vs the clean
       ``baseline``.
    Rows are paired by ``case_id`` (inner join; no overlap is an error; NaN pairs dropped).
    A condition with duplicate ``case_id`` rows, or a model with more than one clean
    condition (e.g. several ``source_model`` values), is an error naming it.
    Holm's correction is applied within each family × region; ``significant = p_holm < alpha``.
    Diagnostic attacks (``transfer_*``, ``*_logit_rescaled``) are skipped unless
    ``include_diagnostics``.

    Args:
        table: tidy result table.
        region_col: column holding the region.
        metric: score column (higher = better for Dice; the test is two-sided either way).
        baseline: name of the undefended model.
        defended: defended models (default: every model other than ``baseline``).
        distilled, advtrain: model names for family 3.
        alpha: significance level after Holm.
        include_diagnostics: also compare diagnostic attacks.
        method: Wilcoxon p-value method (see :func:`paired_wilcoxon`; ``"exact"`` is much
            faster than ``"auto"`` for n ≤ 13 cases with tied/zero differences).

    Returns:
        DataFrame with columns :data:`COMPARE_COLUMNS` (plus ``source_model_a/_b`` when the
        table has ``source_model``). ``median_diff``/``effect_size``/``hl_estimate`` refer to
        ``a − b``; ``hl_estimate`` is the Hodges–Lehmann estimate of the paired difference and
        ``hl_ci_lo/hi`` its distribution-free ``1 − alpha`` confidence interval
        (:func:`hodges_lehmann_ci`), both over the ``n_nonzero`` non-zero differences the test
        ranks (as R's ``wilcox.test``), so that the interval excludes 0 exactly when the
        unadjusted test rejects (without ties and with at most 50 non-zero differences, where
        the p-value is exact; see :func:`hodges_lehmann_ci`); per test, not Holm-adjusted; NaN when
        ``n_nonzero`` is too small (≤ 5 at α = 0.05); all differences zero: 0 with [0, 0] (the interval over
        all ``n`` zero differences: NaN too when ``n`` ≤ 5 at α = 0.05).
    """
    _check_table(table, metric, region_col)
    if not (0 < alpha < 1):
        raise ValueError(f"alpha: must be in (0, 1), got {alpha}")
    t = table
    if not include_diagnostics:
        t = t.loc[~t["attack"].astype(str).map(is_diagnostic_attack)]
    models = list(pd.unique(t["model"]))
    if defended is None:
        defended_list = [m for m in models if m != baseline]
    else:
        if isinstance(defended, str):
            defended = [defended]
        defended_list = list(defended)
        unknown = [m for m in defended_list if m not in models]
        if unknown:
            raise ValueError(f"defended: models {unknown} not in the table")
    opt = _id_cols(t)
    id_keys = ["attack", *opt, "eps"]

    def cond(model: Any, attack_key: tuple) -> dict[str, Any]:
        return {"model": model, **dict(zip(id_keys, attack_key))}

    rows: list[dict[str, Any]] = []
    for region in pd.unique(t[region_col]):
        tr = t.loc[t[region_col] == region]
        series = _series_by_condition(tr, ["model", *id_keys], metric, region)
        per_model: dict[Any, list[tuple]] = {}
        for k in series:
            per_model.setdefault(k[0], []).append(k[1:])
        for m in per_model:
            per_model[m].sort(key=lambda k: tuple("" if v is None else str(v) for v in k[:-1]) + (k[-1],))

        def is_clean(k: tuple) -> bool:
            return k[0] == "clean" and k[-1] == 0.0

        def attacked(k: tuple) -> bool:
            return not is_clean(k) and k[-1] > 0.0

        clean_keys = {m: [k for k in ks if is_clean(k)] for m, ks in per_model.items()}
        for m, cks in clean_keys.items():
            if len(cks) > 1:
                raise ValueError(
                    f"table: model {m!r} has {len(cks)} clean conditions in region {region!r} "
                    f"({[cond(m, k) for k in cks]}); expected one (filter the table first)"
                )
        pairs: list[tuple[str, tuple, tuple]] = []
        # 1. attack effect
        for m, ks in per_model.items():
            for ck in clean_keys[m]:
                for k in ks:
                    if attacked(k):
                        pairs.append(("attack_effect", (m, *ck), (m, *k)))
        base_keys = set(per_model.get(baseline, []))
        # 2. defense vs baseline
        for d in defended_list:
            for k in per_model.get(d, []):
                if k in base_keys and (is_clean(k) or attacked(k)):
                    pairs.append(("defense_vs_baseline", (d, *k), (baseline, *k)))
        # 3. distilled vs advtrain
        adv_keys = set(per_model.get(advtrain, []))
        for k in per_model.get(distilled, []):
            if k in adv_keys and (is_clean(k) or attacked(k)):
                pairs.append(("distill_vs_advtrain", (distilled, *k), (advtrain, *k)))
        # 4. defended under attack vs clean baseline
        for ck in clean_keys.get(baseline, []):
            for d in defended_list:
                for k in per_model.get(d, []):
                    if attacked(k):
                        pairs.append(("defense_vs_clean", (d, *k), (baseline, *ck)))

        for family, ka, kb in pairs:
            ca, cb = cond(ka[0], ka[1:]), cond(kb[0], kb[1:])
            xa, xb = _pair_values(series[ka], series[kb], ca, cb, region)
            row: dict[str, Any] = {"family": family, "region": region}
            for suffix, c in (("a", ca), ("b", cb)):
                row[f"model_{suffix}"] = c["model"]
                row[f"attack_{suffix}"] = c["attack"]
                row[f"target_policy_{suffix}"] = c.get("target_policy")
                if "source_model" in c:
                    row[f"source_model_{suffix}"] = c["source_model"]
                row[f"eps_{suffix}"] = float(c["eps"])
            row["n"] = int(xa.size)
            if xa.size:
                w = paired_wilcoxon(xa, xb, method=method)
                row.update(
                    n_nonzero=w.n, mean_a=float(xa.mean()), mean_b=float(xb.mean()), median_diff=w.median_diff,
                    statistic=w.statistic, pvalue=w.pvalue, effect_size=w.effect_size,
                )  # fmt: skip
                d = xa - xb
                # the pairs the test ranks (zeros dropped, as R's wilcox.test does), so that the interval goes with
                # the p-value beside it: 0 lies outside it exactly when the test rejects (no ties, n <= 50); all zero -> 0
                d_nz = d[d != 0] if w.n else d
                row["hl_estimate"], row["hl_ci_lo"], row["hl_ci_hi"] = hodges_lehmann_ci(d_nz, confidence=1 - alpha)
            else:
                row.update(n_nonzero=0, mean_a=np.nan, mean_b=np.nan, median_diff=np.nan, statistic=np.nan,
                           pvalue=np.nan, effect_size=np.nan, hl_estimate=np.nan, hl_ci_lo=np.nan, hl_ci_hi=np.nan)  # fmt: skip
            rows.append(row)

    cols = list(COMPARE_COLUMNS)
    if "source_model" in opt:
        cols[cols.index("eps_a"):cols.index("eps_a")] = ["source_model_a"]
        cols[cols.index("eps_b"):cols.index("eps_b")] = ["source_model_b"]
    out = pd.DataFrame(rows, columns=[c for c in cols if c not in ("p_holm", "significant")])
    out["p_holm"] = np.nan
    for _, idx in out.groupby(["family", "region"], sort=False).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "pvalue"].to_numpy(np.float64))
    out["significant"] = (out["p_holm"] < alpha).astype(bool)
    return out[cols].reset_index(drop=True)


def drop_vs_perceptibility(
    table: pd.DataFrame,
    percept: pd.DataFrame | None = None,
    *,
    model: str = "baseline",
    region: str = "WT",
    metric: str = "dice",
) -> pd.DataFrame:
    """Relative drop of mean ``metric`` for each attack × eps of one model, beside how visible the perturbation is.

    Puts claim C2 ("by up to 65 %") in context: how large a drop comes at how large a PSNR. The drop
    ``1 − mean(attacked)/mean(clean)`` is over the cases common to the model's clean condition and the
    attacked one; the perceptibility columns are means over cases and modalities (finite PSNR values
    only) of the rows of ``percept`` for the same model, attack, target policy and eps.

    Args:
        table: tidy result table (diagnostic attacks are left out).
        percept: perceptibility table (``case_id, model, attack, eps, modality, linf, psnr, ssim``
            [+ ``target_policy``]); ``None`` for the drops alone.
        model: the model whose drops are tabulated.
        region: region of ``metric``.
        metric: score column.

    Returns:
        One row per attack (× target policy) × eps > 0: ``attack, target_policy, eps, n, mean_clean,
        mean_attacked, rel_drop`` (+ ``linf, psnr, ssim`` with ``percept``), sorted by attack and eps.
    """
    _check_table(table, metric)
    t = table.loc[(table["region"] == region) & (table["model"] == model) & ~table["attack"].astype(str).map(is_diagnostic_attack)]
    if t.empty:
        raise ValueError(f"table: no rows for model {model!r} in region {region!r}")
    clean = t.loc[t["attack"] == "clean"]
    if clean.empty:
        raise ValueError(f"table: no clean rows for model {model!r} in region {region!r}")
    c_ser = _case_series(clean, metric, f"the clean {model!r} condition in region {region!r}")
    has_pol = "target_policy" in t.columns
    keys = ["attack", *(["target_policy"] if has_pol else []), "eps"]
    att = t.loc[(t["attack"] != "clean") & (t["eps"].astype(float) > 0)]
    if percept is not None:
        need = {"model", "attack", "eps", "psnr", "ssim", "linf"} - set(percept.columns)
        if need:
            raise ValueError(f"percept: missing columns {sorted(need)}")
        pm = percept.loc[percept["model"] == model]
    rows = []
    for key, g in att.groupby(keys, dropna=False, sort=True):
        kd = {k: _norm(v) for k, v in zip(keys, key)}
        what = f"{model!r} {attack_label(kd['attack'], kd.get('target_policy'))}@{float(kd['eps']):g}"
        j = _case_series(g, metric, what).to_frame("att").join(c_ser.rename("clean"), how="inner").dropna()
        mc, ma = float(j["clean"].mean()), float(j["att"].mean())
        row = {"attack": kd["attack"], "target_policy": kd.get("target_policy"), "eps": float(kd["eps"]), "n": len(j),
               "mean_clean": mc, "mean_attacked": ma, "rel_drop": (1.0 - ma / mc) if mc else np.nan}  # fmt: skip
        if percept is not None:
            sel = (pm["attack"] == kd["attack"]) & np.isclose(pm["eps"].astype(float), float(kd["eps"]))
            if kd.get("target_policy") is not None and "target_policy" in pm.columns:
                sel &= pm["target_policy"] == kd["target_policy"]
            q = pm.loc[sel]
            psnr = q["psnr"].to_numpy(np.float64)
            psnr = psnr[np.isfinite(psnr)]
            row.update(linf=float(q["linf"].mean()) if len(q) else np.nan,
                       psnr=float(psnr.mean()) if psnr.size else np.nan,
                       ssim=float(q["ssim"].mean()) if q["ssim"].notna().any() else np.nan)  # fmt: skip
        rows.append(row)
    out = pd.DataFrame(rows)
    if not has_pol or out["target_policy"].isna().all():
        out = out.drop(columns="target_policy")
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------- claims
_STATEMENTS = {
    "C1": "All three attacks (FGSM, i-FGSM, targeted i-FGSM) significantly reduce Dice of the undefended model.",
    "C2": "Attacks reduce the undefended model's Dice by up to {pct:.0f} %.",
    "C3": "Defensive distillation is significantly better than adversarial training under attack.",
    "C4": "Every defense stays below clean (undefended, unattacked) performance under attack.",
}

#: The verdict vocabulary of :func:`claims`.
VERDICTS = ("holds", "partly tested", "mixed", "not supported", "contradicted", "not tested")

#: The attacks claim C1 is about ("all three attacks"): FGSM, i-FGSM and targeted i-FGSM, by their ``attack`` names.
PAPER_ATTACKS = ("fgsm", "ifgsm", "tifgsm")

#: Score columns of the result tables where lower is better (distances): the claims are about an overlap score and
#: refuse them.
LOWER_IS_BETTER_METRICS = ("hd95",)

#: The fewest cases on which C2's bootstrap interval counts as evidence: the fewest pairs with which a two-sided
#: signed-rank test can reach p < 0.05 at all (all differences of one sign: 2·2⁻⁶ = 0.031 < 0.05 ≤ 2·2⁻⁵), the level
#: of C2's 95 % interval. Below it the percentile bootstrap has too few distinct resamples to speak of sampling error
#: (one case: every resample is that case, and the "interval" is a point).
C2_MIN_CASES = 6

# The decision rules of :func:`claims` as Markdown; ALPHA_TOKEN stands for the family-wise α they are applied at.
_ALPHA_TOKEN = "<<alpha>>"
_CLAIM_RULES_TEMPLATE = """\
Each claim is judged on one region from the paired Wilcoxon signed-rank tests of `stats.compare` (cases paired
by `case_id`).

- A test is **significant** when its Holm-adjusted two-sided p-value (`p_holm`: Holm within family × region of the
  comparison table the claims are judged on) is below α (<<alpha>>).
- Its **direction** is the sign of the matched-pairs rank-biserial correlation `effect_size` = (R⁺ − R⁻)/(R⁺ + R⁻)
  of the differences a − b, i.e. of the signed ranks the test is computed on (the sign of the mean difference is
  used only when `effect_size` is missing).
- A test **supports** a claim when it is significant in the claimed direction; it is **against** the claim when it
  is significant in the opposite direction. Non-significant tests are neither.
- Verdicts of the count-based claims C1, C3 and C4: **holds** = every test supports; **contradicted** = no test
  supports and at least one is against; **not supported** = no test supports and none is against; **mixed** =
  otherwise (some but not all tests support); **not tested** = the models or attacks needed are absent.
  `n_tests`, `n_support` and `n_against` count the tests.
- **partly tested** (C1 and C4): the claim is about all three attacks (C1) or both defenses (C4), and part of that
  scope has no test at all (e.g. only FGSM was run, or only the adversarially trained model). When every test present
  supports, the verdict is **partly tested** instead of holds, since the untested part could not have contradicted
  it; contradicted, mixed and not supported stand as they are (the tested part is evidence either way). The
  evidence names what is missing.
- Diagnostic attacks (transfer attacks `transfer_*` and logit-rescaled attacks `*_logit_rescaled`) are never
  evidence for or against a claim: their tests are left out even from a comparison table computed with them (whose
  Holm correction still counts them: conservative).
- The claims are about Dice, an overlap score where higher is better; distance metrics where lower is better
  (HD95) are refused rather than judged with the directions reversed.
- **C1** (all attacks significantly reduce Dice): one test per attack on the undefended model (a targeted attack
  once per target policy) at that attack's largest ε: clean vs attacked (`attack_effect` family). Claimed
  direction: clean > attacked. Its scope is the paper's three attacks, FGSM, i-FGSM and ti-FGSM (any target
  policy): one of them without a test makes it at most partly tested.
- **C2** (attacks reduce Dice by up to 65 %): the quantity is the **relative** drop of the mean Dice of the
  undefended model, 1 − mean(attacked)/mean(clean), for every attack × ε > 0, on the cases common to the clean
  condition and all those conditions. `rel_drop` is the largest drop over the conditions and `rel_drop_ci_lo/hi` its
  95 % percentile-bootstrap CI, where each resample draws cases jointly for all conditions and takes the maximum
  inside the resample (the CI of the maximum, not of the condition that won on the observed data; a resample whose
  clean mean Dice is 0 has no relative drop and is left out). Like the other claims it needs evidence beyond
  sampling error either way: **holds** when the CI lower bound reaches 65 % (the largest drop is significantly at
  least the paper's); **contradicted** when the CI upper bound is below 65 % (significantly smaller than the
  paper's); **not supported** when the CI contains 65 %, or when fewer than 6 cases are common to the conditions
  (the fewest with which a two-sided signed-rank test can reach p < 0.05 at all; with fewer, the bootstrap interval
  says nothing about sampling error, and with one case it is a single point). The evidence also gives the smallest ε
  at which any attack's relative drop (point estimate) reaches 65 %. `n_tests` = conditions, `n_support` =
  conditions whose drop (point estimate) reaches 65 %; `n_against` is 0 (the verdict rests on the interval, not on a
  count).
- **C3** (distillation significantly better than adversarial training): the `distill_vs_advtrain` tests of the
  distilled vs the adversarially trained model under each attack × ε > 0. Claimed direction: distilled > adversarially
  trained.
- **C4** (every defense stays below clean performance under attack): the `defense_vs_clean` tests of the paper's two
  defenses only (the distilled and the adversarially trained model; other deployments such as a distilled model run
  at T = 1 or T = 5 are not defenses and are left out), each under each attack × ε > 0, vs the clean undefended
  model. Claimed direction: defended under attack < clean. Their `p_holm` is the comparison table's, whose
  `defense_vs_clean` family may also hold the other deployments (conservative). Its scope is both defenses: one
  of them without an attacked condition makes it at most partly tested.
"""


def claim_rules_md(alpha: float = 0.05) -> str:
    """The decision rules of :func:`claims` as Markdown (the report's "Decision rules"), at the α they were applied at.

    Args:
        alpha: the family-wise error rate the claims were judged at (``claims(..., alpha=...)``), in (0, 1).

    Returns:
        The rules as Markdown, stating ``alpha``.
    """
    alpha = check_float(alpha, "alpha")
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha: must be in (0, 1), got {alpha}")
    return _CLAIM_RULES_TEMPLATE.replace(_ALPHA_TOKEN, f"{alpha:g}")


#: The decision rules at the default α = 0.05 (:func:`claim_rules_md` states another α).
CLAIM_RULES_MD = claim_rules_md(0.05)


def _fmt_cond(r: pd.Series, s: str) -> str:
    lab = attack_label(r[f"attack_{s}"], r.get(f"target_policy_{s}"))
    return f"{lab}@{r[f'eps_{s}']:g}"


def _row(claim: str, verdict: str, evidence: str, paper_max_drop: float, **num: Any) -> dict[str, Any]:
    base = {"n_tests": 0, "n_support": 0, "n_against": 0, "rel_drop": np.nan, "rel_drop_ci_lo": np.nan, "rel_drop_ci_hi": np.nan}
    base.update(num)
    return {
        "claim": claim,
        "statement": _STATEMENTS[claim].format(pct=100 * paper_max_drop),
        "verdict": verdict,
        "evidence": evidence,
        **base,
    }


def _count_verdict(n_tests: int, n_support: int, n_against: int, missing: Sequence[str] = ()) -> str:
    """Verdict of a count-based claim (see :data:`CLAIM_RULES_MD`).

    Args:
        n_tests: tests of the claim present.
        n_support: tests that support it.
        n_against: tests significant in the opposite direction.
        missing: the parts of the claim's scope without any test (attacks of C1, defenses of C4).

    Returns:
        ``"holds"``, ``"partly tested"`` (every test present supports but ``missing`` is not empty),
        ``"mixed"``, ``"not supported"``, ``"contradicted"`` or ``"not tested"`` (no test).
    """
    if n_tests == 0:
        return "not tested"
    if n_support == n_tests:
        return "partly tested" if len(missing) else "holds"
    if n_support == 0:
        return "contradicted" if n_against > 0 else "not supported"
    return "mixed"


def _missing_text(missing: Sequence[str], scope: Sequence[str], what: str) -> str:
    """The evidence sentence naming the untested part of a claim's scope (empty when nothing is missing)."""
    if not len(missing):
        return ""
    return (f" Not tested: {', '.join(missing)} (no {what}; the claim is about "
            f"{', '.join(scope[:-1])} and {scope[-1]}).")


def _not_diagnostic(fam: pd.DataFrame, *cols: str) -> pd.DataFrame:
    """Rows of a comparison table whose attack columns ``cols`` hold no diagnostic attack (:func:`is_diagnostic_attack`)."""
    keep = np.ones(len(fam), dtype=bool)
    for c in cols:
        keep &= ~fam[c].astype(str).map(is_diagnostic_attack).to_numpy(dtype=bool)
    return fam.loc[keep]


def check_claim_metric(metric: Any) -> str:
    """Refuse a score column the claims cannot be judged on.

    The claims' directions (an attack *lowers* the score, distillation is *above* adversarial training, a defense
    stays *below* clean) and C2's relative drop ``1 − mean(attacked)/mean(clean)`` assume an overlap score where
    higher is better, such as Dice. On a distance where lower is better (the tables' HD95) every verdict would be
    reversed, so such a metric is refused rather than judged.

    Args:
        metric: name of the score column.

    Returns:
        ``metric`` unchanged.

    Raises:
        ValueError: ``metric`` is not a non-empty string, or is one of :data:`LOWER_IS_BETTER_METRICS` (any case).
    """
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"metric: expected the name of a score column, got {metric!r}")
    if metric.lower() in LOWER_IS_BETTER_METRICS:
        raise ValueError(
            f"metric: {metric!r} is a distance where lower is better; the claims are about an overlap score where "
            "higher is better (Dice): their directions and C2's relative drop would be reversed"
        )
    return metric


def _direction(fam: pd.DataFrame) -> np.ndarray:
    """Sign of each test's effect ``a − b``: the rank-biserial ``effect_size`` (the signed ranks
    the test is computed on), or the mean difference where ``effect_size`` is missing/NaN."""
    mean_dir = np.sign((fam["mean_a"] - fam["mean_b"]).to_numpy(np.float64))
    if "effect_size" not in fam.columns:
        return mean_dir
    es = fam["effect_size"].to_numpy(np.float64)
    return np.where(np.isnan(es), mean_dir, np.sign(es))


def _support_against(fam: pd.DataFrame, alpha: float, claimed_sign: int) -> tuple[np.ndarray, np.ndarray]:
    sig = (fam["p_holm"].to_numpy(np.float64) < alpha)
    d = _direction(fam)
    return sig & (d == claimed_sign), sig & (d == -claimed_sign)


def _case_series(g: pd.DataFrame, metric: str, what: str) -> pd.Series:
    if g["case_id"].duplicated().any():
        dup = sorted(g.loc[g["case_id"].duplicated(), "case_id"].astype(str).unique())[:5]
        raise ValueError(
            f"table: duplicate case_id rows for {what} (e.g. {dup}; several step counts or runs at one "
            "condition?); filter the table first"
        )
    return pd.Series(g[metric].to_numpy(np.float64), index=g["case_id"].astype(str).to_numpy())


def _claim_c2(
    table: pd.DataFrame, *, region: str, metric: str, baseline: str, paper_max_drop: float, n_resamples: int, seed: int,
    strata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    t = table.loc[(table["region"] == region) & ~table["attack"].astype(str).map(is_diagnostic_attack)]
    tb = t.loc[t["model"] == baseline]
    clean = tb.loc[tb["attack"] == "clean"]
    att = tb.loc[(tb["attack"] != "clean") & (tb["eps"].astype(float) > 0)]
    if clean.empty or att.empty:
        return _row("C2", "not tested", f"need clean and attacked rows for {baseline!r}.", paper_max_drop)
    opt = _id_cols(tb)
    ckeys = ["attack", *opt, "eps"]
    cgroups = list(clean.groupby(ckeys, dropna=False, sort=True))
    if len(cgroups) > 1:
        raise ValueError(
            f"table: {baseline!r} has {len(cgroups)} clean conditions in region {region!r} "
            f"({[dict(zip(ckeys, map(_norm, k))) for k, _ in cgroups]}); expected one (filter the table first)"
        )
    c_ser = _case_series(clean, metric, f"the clean {baseline!r} condition in region {region!r}")
    conds: list[tuple[dict[str, Any], pd.Series]] = []
    for key, g in att.groupby(ckeys, dropna=False, sort=True):
        kd = {k: _norm(v) for k, v in zip(ckeys, key)}
        what = f"{baseline!r} {attack_label(kd['attack'], kd.get('target_policy'))}@{float(kd['eps']):g} in region {region!r}"
        conds.append((kd, _case_series(g, metric, what)))
    joint = pd.concat([c_ser.rename("clean"), *[s.rename(i) for i, (_, s) in enumerate(conds)]], axis=1, join="inner").dropna()
    if joint.empty or joint["clean"].mean() == 0:
        return _row("C2", "not tested", "no case is common to the clean and every attacked condition.", paper_max_drop)
    cvals = joint["clean"].to_numpy()
    avals = joint.drop(columns="clean").to_numpy().T  # k × n
    drops = np.array([float(_relative_drop(cvals, a)) for a in avals])
    lab_strata = None
    if strata is not None:
        unlisted = [cid for cid in joint.index if cid not in strata]
        if unlisted:
            raise ValueError(f"strata: {len(unlisted)} case ids of the table are not listed (e.g. {unlisted[:3]})")
        lab_strata = [strata[cid] for cid in joint.index]
    n_strata = len(set(lab_strata)) if lab_strata is not None else 1
    drop, lo, hi = bootstrap_max_relative_drop_ci(cvals, avals, n_resamples=n_resamples, seed=seed, strata=lab_strata)
    kd_best = conds[int(np.argmax(drops))][0]
    lab = f"{attack_label(kd_best['attack'], kd_best.get('target_policy'))}@{float(kd_best['eps']):g}"
    # significant evidence either way, as for the count-based claims: the whole interval at or above the paper's drop
    # holds, the whole interval below it contradicts, an interval containing it decides nothing; too few cases decide
    # nothing either (C2_MIN_CASES)
    verdict = "holds" if lo >= paper_max_drop else ("contradicted" if hi < paper_max_drop else "not supported")
    too_few = len(joint) < C2_MIN_CASES
    if too_few:
        verdict = "not supported"
    pct = 100 * paper_max_drop
    reach = [(float(kd["eps"]), d, attack_label(kd["attack"], kd.get("target_policy"))) for (kd, _), d in zip(conds, drops) if d >= paper_max_drop]
    if reach:
        e0 = min(r[0] for r in reach)
        first = sorted((r for r in reach if r[0] == e0), key=lambda r: -r[1])
        reach_txt = f"reaches {pct:.0f} % first at eps {e0:g} (" + "; ".join(f"{r[2]}, {100 * r[1]:.0f} %" for r in first) + ")"
    else:
        reach_txt = f"no attack reaches {pct:.0f} % at any eps (largest point estimate {100 * drop:.0f} %)"
    ev = (
        f"largest relative drop of mean {region} {metric}: {100 * drop:.1f} % by {lab} "
        f"(95 % CI of the maximum over {len(conds)} attack × eps conditions, joint paired bootstrap over "
        f"{len(joint)} cases{f' within {n_strata} strata' if n_strata > 1 else ''}: {100 * lo:.1f}–{100 * hi:.1f} %); "
        f"{reach_txt}. Paper: up to {pct:.0f} %."
        + (f" With {len(joint)} case{'s' if len(joint) != 1 else ''} (fewer than {C2_MIN_CASES}) the interval is no "
           "evidence either way." if too_few else "")
    )
    return _row("C2", verdict, ev, paper_max_drop, n_tests=len(conds), n_support=int((drops >= paper_max_drop).sum()),
                rel_drop=drop, rel_drop_ci_lo=lo, rel_drop_ci_hi=hi)  # fmt: skip


def claims(
    table: pd.DataFrame,
    comparisons: pd.DataFrame | None = None,
    *,
    region: str = "WT",
    alpha: float = 0.05,
    paper_max_drop: float = 0.65,
    baseline: str = "baseline",
    distilled: str = "distilled",
    advtrain: str = "advtrain",
    metric: str = "dice",
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "auto",
    strata: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Verdicts on the paper's claims C1–C4 computed from the data (one region).

    Rules (a design decision; the same text, as Markdown, is :data:`CLAIM_RULES_MD`):

    - A test is *significant* when its Holm-adjusted two-sided p (``p_holm``, Holm within
      family × region of ``comparisons``) is below ``alpha``. Its *direction* is the sign of
      the rank-biserial ``effect_size`` (R⁺ − R⁻ of ``a − b``: the signed ranks the test is
      computed on); the sign of ``mean_a − mean_b`` is used only where ``effect_size`` is
      NaN or absent. A test *supports* a claim when significant in the claimed direction and
      is *against* it when significant in the opposite direction.
    - Count-based claims C1, C3, C4: ``holds`` = every test supports; ``contradicted`` = none
      supports and at least one is against; ``not supported`` = none supports and none is
      against; ``mixed`` = otherwise (some, not all, support).
    - ``partly tested`` (C1, C4): every test present supports, but part of the claim's scope has no
      test (an attack of :data:`PAPER_ATTACKS` for C1, one of the two defenses for C4); the evidence
      names it. Other verdicts stand when part of the scope is missing.
    - Diagnostic attacks (:func:`is_diagnostic_attack`) are left out of every claim, also when
      ``comparisons`` was computed with ``include_diagnostics=True``.
    - **C1** all attacks significantly reduce Dice: for ``baseline``, one test per attack (per
      ``target_policy`` for targeted attacks) at its largest eps, from the ``attack_effect``
      family (a = clean, b = attacked); claimed direction a > b. Scope: :data:`PAPER_ATTACKS`.
    - **C2** Dice reduced by up to ``paper_max_drop``: the *relative* drop of mean Dice
      ``1 − mean(attacked)/mean(clean)`` of ``baseline`` for every attack × eps > 0, on the
      cases common to clean and all those conditions; ``rel_drop`` is the maximum over the
      conditions and ``rel_drop_ci_lo/hi`` the CI of that maximum from a paired bootstrap that
      resamples cases jointly across all conditions and takes the maximum in each resample
      (:func:`bootstrap_max_relative_drop_ci`). ``holds`` if the CI lower bound is
      ≥ ``paper_max_drop``, ``contradicted`` if the CI upper bound is < ``paper_max_drop``,
      ``not supported`` when the CI contains it or fewer than :data:`C2_MIN_CASES` cases are
      common to the conditions. The evidence names the smallest eps at
      which any attack's point estimate reaches ``paper_max_drop`` (or says none does).
      ``n_tests`` = conditions, ``n_support`` = conditions whose drop reaches it.
    - **C3** distillation significantly better than adversarial training: the
      ``distill_vs_advtrain`` tests (a = ``distilled``, b = ``advtrain``) under attack
      (eps > 0); claimed direction a > b.
    - **C4** every defense stays below clean performance: the ``defense_vs_clean`` tests of
      the paper's defenses only (a = ``distilled`` or ``advtrain`` under attack; other
      deployments such as ``distilled_T1`` are not defenses), b = clean ``baseline``;
      claimed direction a < b. Scope: both defenses.
    - ``not tested`` when the needed models/attacks are absent.

    Args:
        table: tidy result table (C2 is computed from it).
        comparisons: output of :func:`compare` on ``table`` (computed if ``None``); C1, C3 and
            C4 and their ``p_holm`` come from it.
        region: region to judge (e.g. ``"WT"``).
        alpha: significance level.
        paper_max_drop: the paper's maximum relative Dice drop (0.65).
        baseline, distilled, advtrain: model names.
        metric: score column: an overlap score where higher is better (Dice); distances
            (``"hd95"``) are refused (:func:`check_claim_metric`).
        n_resamples, seed: bootstrap settings for C2.
        method: Wilcoxon p-value method used when ``comparisons`` is computed here.
        strata: ``None`` or case id → stratum (e.g. the run each case of a pooled table came
            from); C2's bootstrap then resamples cases within each stratum
            (:func:`bootstrap_max_relative_drop_ci`). Every case id of the table must be listed.

    Returns:
        DataFrame with columns :data:`CLAIM_COLUMNS`, rows C1..C4.

    Raises:
        ValueError: bad arguments (``metric`` a lower-is-better distance), missing columns, or a
            baseline condition (clean or attacked) with duplicate ``case_id`` rows or several clean
            conditions.
    """
    check_claim_metric(metric)
    _check_table(table, metric)
    if not (0 < paper_max_drop):
        raise ValueError(f"paper_max_drop: must be positive, got {paper_max_drop}")
    if not (0 < alpha < 1):
        raise ValueError(f"alpha: must be in (0, 1), got {alpha}")
    if region not in set(table["region"]):
        raise ValueError(f"region: {region!r} not in the table")
    if strata is not None and not isinstance(strata, Mapping):
        raise ValueError(f"strata: expected a mapping case id -> stratum, got {type(strata).__name__}")
    if comparisons is None:
        comparisons = compare(table, metric=metric, baseline=baseline, distilled=distilled,
                              advtrain=advtrain, alpha=alpha, method=method)  # fmt: skip
    if not isinstance(comparisons, pd.DataFrame):
        raise ValueError(f"comparisons: expected a pandas DataFrame, got {type(comparisons).__name__}")
    need = ("family", "region", "model_a", "model_b", "attack_a", "attack_b", "eps_a", "eps_b", "p_holm", "mean_a",
            "mean_b")  # fmt: skip
    missing = [c for c in need if c not in comparisons.columns]
    if missing:
        raise ValueError(f"comparisons: missing columns {missing}")
    cr = comparisons.loc[comparisons["region"] == region]
    out: list[dict[str, Any]] = []
    how = f"{region} {metric}, Holm α={alpha:g}, direction from signed ranks"

    # C1
    fam = _not_diagnostic(cr.loc[(cr["family"] == "attack_effect") & (cr["model_a"] == baseline)], "attack_b").copy()
    if fam.empty:
        out.append(_row("C1", "not tested", f"no attacked rows for {baseline!r}.", paper_max_drop))
    else:
        pol = fam["target_policy_b"] if "target_policy_b" in fam.columns else [None] * len(fam)
        fam["_lab"] = [attack_label(a, p) for a, p in zip(fam["attack_b"], pol)]
        top = fam.loc[fam.groupby("_lab")["eps_b"].idxmax()].sort_values("_lab")
        sup, ag = _support_against(top, alpha, +1)
        missing = [a for a in PAPER_ATTACKS if a not in set(top["attack_b"].astype(str))]
        parts = [
            f"{r['_lab']}@{r['eps_b']:g}: {r['mean_a']:.3f}→{r['mean_b']:.3f} (p_holm={r['p_holm']:.3g})"
            for _, r in top.iterrows()
        ]
        out.append(_row(
            "C1", _count_verdict(len(top), int(sup.sum()), int(ag.sum()), missing),
            f"{int(sup.sum())}/{len(top)} attacks significantly reduce {region} {metric} at their largest eps, "
            f"{int(ag.sum())} significantly increase it ({how}): " + "; ".join(parts) + "."
            + _missing_text(missing, PAPER_ATTACKS, f"attacked rows for {baseline!r}"),
            paper_max_drop, n_tests=len(top), n_support=int(sup.sum()), n_against=int(ag.sum()),
        ))  # fmt: skip

    # C2
    out.append(_claim_c2(table, region=region, metric=metric, baseline=baseline, paper_max_drop=paper_max_drop,
                         n_resamples=n_resamples, seed=seed, strata=strata))  # fmt: skip

    # C3
    fam = _not_diagnostic(cr.loc[
        (cr["family"] == "distill_vs_advtrain") & (cr["model_a"] == distilled) & (cr["model_b"] == advtrain)
        & (cr["eps_a"].astype(float) > 0)
    ], "attack_a", "attack_b")  # fmt: skip
    if fam.empty:
        out.append(_row("C3", "not tested", f"need attacked rows for both {distilled!r} and {advtrain!r}.", paper_max_drop))
    else:
        sup, ag = _support_against(fam, alpha, +1)
        out.append(_row(
            "C3", _count_verdict(len(fam), int(sup.sum()), int(ag.sum())),
            f"{distilled} significantly above {advtrain} in {int(sup.sum())}/{len(fam)} attacked conditions, "
            f"significantly below in {int(ag.sum())} ({how}).",
            paper_max_drop, n_tests=len(fam), n_support=int(sup.sum()), n_against=int(ag.sum()),
        ))  # fmt: skip

    # C4
    fam = _not_diagnostic(cr.loc[
        (cr["family"] == "defense_vs_clean") & cr["model_a"].isin([distilled, advtrain]) & (cr["model_b"] == baseline)
    ], "attack_a")
    if fam.empty:
        out.append(_row("C4", "not tested", f"need {distilled!r} or {advtrain!r} under attack and clean {baseline!r}.", paper_max_drop))
    else:
        sup, ag = _support_against(fam, alpha, -1)
        n_sup, n_ag = int(sup.sum()), int(ag.sum())
        missing = [m for m in (distilled, advtrain) if m not in set(fam["model_a"])]
        ev = (
            f"{n_sup}/{len(fam)} conditions of {' and '.join(pd.unique(fam['model_a']))} under attack significantly below "
            f"clean {baseline}, {len(fam) - n_sup - n_ag} not significantly different, {n_ag} significantly above ({how})."
        )
        # the condition closest to (or furthest above) clean among the tests that do not support
        rest = fam.loc[~sup] if (~sup).any() else fam
        worst = rest.loc[(rest["mean_a"] - rest["mean_b"]).idxmax()]
        ev += (f" {'Largest offender' if (~sup).any() else 'Closest to clean'}: {worst['model_a']} {_fmt_cond(worst, 'a')} "
               f"{worst['mean_a']:.3f} vs {worst['mean_b']:.3f} (p_holm={worst['p_holm']:.3g}).")  # fmt: skip
        ev += _missing_text(missing, (distilled, advtrain), "attacked condition")
        out.append(_row("C4", _count_verdict(len(fam), n_sup, n_ag, missing), ev, paper_max_drop,
                        n_tests=len(fam), n_support=n_sup, n_against=n_ag))  # fmt: skip
    return pd.DataFrame(out, columns=CLAIM_COLUMNS)


# ----------------------------------------------------------------------------- sensitivity
def empty_truth_cases(volumes: pd.DataFrame, regions: Sequence[str] = ("WT", "TC", "ET")) -> dict[str, list[str]]:
    """The cases whose ground truth has no voxel of each region.

    Args:
        volumes: one row per case with ``case_id`` and a voxel-count column per region (notebook 01's
            ``tables/data_region_volumes.csv``, restricted to the cases of interest).
        regions: regions to look at (those absent from ``volumes`` are skipped).

    Returns:
        ``region → sorted case ids`` with a zero count (regions without such a case map to ``[]``).
    """
    if not isinstance(volumes, pd.DataFrame) or "case_id" not in volumes.columns:
        raise ValueError("volumes: expected a DataFrame with a 'case_id' column and one column per region")
    return {
        r: sorted(volumes.loc[volumes[r] == 0, "case_id"].astype(str))
        for r in regions
        if r in volumes.columns
    }


#: Columns of :func:`claims_by_region` (then :data:`CLAIM_COLUMNS`).
SENSITIVITY_COLUMNS = ["analysis", "region", "n_cases", "n_excluded"]


def claims_by_region(
    table: pd.DataFrame,
    comparisons: pd.DataFrame | None = None,
    *,
    regions: Sequence[str] | None = None,
    empty_truth: Mapping[str, Collection[str]] | None = None,
    alpha: float = 0.05,
    paper_max_drop: float = 0.65,
    baseline: str = "baseline",
    distilled: str = "distilled",
    advtrain: str = "advtrain",
    metric: str = "dice",
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "auto",
    strata: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Sensitivity of the verdicts: the claims re-judged on every region, and on each region without the
    cases whose ground truth lacks it.

    The headline verdicts are judged on one region (WT). This asks whether they depend on that choice,
    and whether a region's verdict rests on empty-truth cases, whose Dice under the BraTS rule is all or
    nothing (1 when nothing is predicted, 0 after a single false-positive voxel), so that an attack can
    move them from 1 to 0 without touching any tumour. The exclusion analysis recomputes the paired
    tests (and Holm within family × region) on the remaining cases.

    Args:
        table: tidy result table (as for :func:`claims`).
        comparisons: :func:`compare` of ``table`` (computed if ``None``); used for the all-case analyses.
        regions: regions to judge (default: WT, TC, ET as present, then any other region of the table).
        empty_truth: ``region → case ids`` whose truth has no voxel of the region
            (:func:`empty_truth_cases`); a region with at least one such case among the table's cases gets
            a second analysis without them ("not tested" when no case is left). Ids are compared as
            strings; a non-empty list sharing no id with the table warns. ``None``: no exclusion analyses.
        alpha, paper_max_drop, baseline, distilled, advtrain, metric, n_resamples, seed, method, strata: as in
            :func:`claims`.

    Returns:
        DataFrame with columns :data:`SENSITIVITY_COLUMNS` + :data:`CLAIM_COLUMNS`: four rows (C1–C4)
        per analysis; ``analysis`` is the region, or e.g. ``"ET, 3 empty-truth cases excluded"``.

    Raises:
        ValueError: as :func:`claims` (a lower-is-better ``metric`` such as ``"hd95"`` included), or ``regions`` not in
            the table.
    """
    check_claim_metric(metric)
    _check_table(table, metric)
    present = list(pd.unique(table["region"]))
    if regions is None:
        regions = [r for r in ("WT", "TC", "ET") if r in present] + [r for r in present if r not in ("WT", "TC", "ET")]
    else:
        regions = [regions] if isinstance(regions, str) else list(regions)
        missing = [r for r in regions if r not in present]
        if missing:
            raise ValueError(f"regions: {missing} not in the table (it has {present})")
    if empty_truth is not None and not isinstance(empty_truth, Mapping):
        raise ValueError(f"empty_truth: expected a mapping region -> case ids, got {type(empty_truth).__name__}")
    kw = dict(alpha=alpha, paper_max_drop=paper_max_drop, baseline=baseline, distilled=distilled, advtrain=advtrain,
              metric=metric, n_resamples=n_resamples, seed=seed, method=method, strata=strata)  # fmt: skip
    if comparisons is None:
        comparisons = compare(table, metric=metric, baseline=baseline, distilled=distilled, advtrain=advtrain,
                              alpha=alpha, method=method)  # fmt: skip
    frames: list[pd.DataFrame] = []

    def add(analysis: str, region: str, cl: pd.DataFrame, n_cases: int, n_excluded: int) -> None:
        frames.append(cl.assign(analysis=analysis, region=region, n_cases=n_cases, n_excluded=n_excluded))

    def n_cases(t: pd.DataFrame, region: str) -> int:
        return int(t.loc[t["region"] == region, "case_id"].nunique())

    for r in regions:
        add(str(r), r, claims(table, comparisons, region=r, **kw), n_cases(table, r), 0)
        tr = table.loc[table["region"] == r]
        ids = set(tr["case_id"].astype(str))
        listed = set(map(str, (empty_truth or {}).get(r, ())))
        drop = listed & ids
        if listed and not drop:
            warnings.warn(
                f"empty_truth: none of the {len(listed)} case ids listed for region {r!r} is in the table "
                f"(listed e.g. {sorted(listed)[:3]}, table e.g. {sorted(ids)[:3]}); were case ids read as numbers?",
                UserWarning,
                stacklevel=2,
            )
        if not drop:
            continue
        analysis = f"{r}, {len(drop)} empty-truth case{'s' if len(drop) > 1 else ''} excluded"
        sub = tr.loc[~tr["case_id"].astype(str).isin(drop)]
        if sub.empty:  # every evaluated case lacks the region: nothing left to judge, say so
            why = f"every evaluated case ({len(drop)}) has no {r} in its ground truth."
            cl = pd.DataFrame([_row(c, "not tested", why, paper_max_drop) for c in ("C1", "C2", "C3", "C4")], columns=CLAIM_COLUMNS)
            add(analysis, r, cl, 0, len(drop))
            continue
        cmp = compare(sub, metric=metric, baseline=baseline, distilled=distilled, advtrain=advtrain,
                      alpha=alpha, method=method)  # fmt: skip
        add(analysis, r, claims(sub, cmp, region=r, **kw), n_cases(sub, r), len(drop))
    return pd.concat(frames, ignore_index=True)[SENSITIVITY_COLUMNS + CLAIM_COLUMNS]
