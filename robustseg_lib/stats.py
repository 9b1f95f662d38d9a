"""Paired statistics for robustness comparisons: Wilcoxon tests, Holm correction, bootstrap CIs,
the comparison families of the paper and the claim verdicts.

All functions work on the tidy result table of ``docs/design.md``
(``case_id, model, attack, eps, steps, region, dice, hd95`` + optional ``target_policy``,
``source_model``, ...). Comparisons are paired by ``case_id``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sst

__all__ = [
    "WilcoxonResult",
    "paired_wilcoxon",
    "holm",
    "bootstrap_mean_ci",
    "bootstrap_relative_drop_ci",
    "is_diagnostic_attack",
    "attack_label",
    "summary_table",
    "compare",
    "claims",
    "COMPARE_COLUMNS",
    "CLAIM_COLUMNS",
]

#: Optional columns that are part of a condition's identity when present in the table.
ID_OPTIONAL = ("target_policy", "source_model")

COMPARE_COLUMNS = [
    "family", "region",
    "model_a", "attack_a", "target_policy_a", "eps_a",
    "model_b", "attack_b", "target_policy_b", "eps_b",
    "n", "n_nonzero", "mean_a", "mean_b", "median_diff",
    "statistic", "pvalue", "effect_size", "p_holm", "significant",
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


def paired_wilcoxon(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    alternative: str = "two-sided",
    zero_method: str = "wilcox",
    method: str = "auto",
) -> WilcoxonResult:
    """Paired Wilcoxon signed-rank test of ``a`` vs ``b`` (``scipy.stats.wilcoxon`` underneath).

    Zero differences: with the default ``zero_method="wilcox"`` they are dropped before
    ranking (``n`` counts the remaining pairs); ``"pratt"`` and ``"zsplit"`` follow scipy.
    Degenerate cases: all differences zero -> ``statistic 0, pvalue 1.0, n 0, effect 0``.
    Small ``n`` (down to 1 non-zero difference) is passed to scipy unchanged (exact
    distribution; such p-values cannot be small, e.g. n = 1 gives 1.0 two-sided).

    P-value method (scipy's ``method``): ``"auto"`` (scipy's default) is exact for n ≤ 50
    without ties/zeros, an exhaustive sign-flip permutation test for n ≤ 13 with ties or
    zeros (correct but slow: ~1–2 s per call on a CPU, because scipy evaluates the statistic
    row by row), and the normal approximation otherwise. ``"exact"`` is fast and conservative
    with ties; ``"asymptotic"`` is fast but rough for small n.

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
        res = sst.wilcoxon(x, y, zero_method=zero_method, alternative=alternative, method=method)
    n = nonzero if zero_method == "wilcox" else int(x.size)
    return WilcoxonResult(float(res.statistic), float(res.pvalue), n, median_diff, float(effect))


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
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - np.mean(attacked, axis=axis) / np.mean(clean, axis=axis)


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
    _check_confidence(confidence, n_resamples)
    if c.size != a.size:
        raise ValueError(f"clean and attacked must have equal lengths, got {c.size} and {a.size}")
    if c.size == 0:
        raise ValueError("clean: empty sample")
    if c.mean() == 0:
        raise ValueError("clean: mean is zero, the relative drop is undefined")
    drop = float(_relative_drop(c, a))
    if c.size == 1 or (np.ptp(c) == 0 and np.ptp(a) == 0):
        return drop, drop, drop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sst.bootstrap(
            (c, a), _relative_drop, paired=True, vectorized=True, confidence_level=confidence,
            n_resamples=int(n_resamples), method=method, rng=np.random.default_rng(seed),
        )  # fmt: skip
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
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
        table has ``source_model``). ``median_diff``/``effect_size`` refer to ``a − b``.
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
        pairs: list[tuple[str, tuple, tuple]] = []
        # 1. attack effect
        for m, ks in per_model.items():
            for ck in clean_keys[m][:1]:
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
        for ck in clean_keys.get(baseline, [])[:1]:
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
            else:
                row.update(n_nonzero=0, mean_a=np.nan, mean_b=np.nan, median_diff=np.nan,
                           statistic=np.nan, pvalue=np.nan, effect_size=np.nan)  # fmt: skip
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


# ----------------------------------------------------------------------------- claims
_STATEMENTS = {
    "C1": "All three attacks (FGSM, i-FGSM, targeted i-FGSM) significantly reduce Dice of the undefended model.",
    "C2": "Attacks reduce the undefended model's Dice by up to {pct:.0f} %.",
    "C3": "Defensive distillation is significantly better than adversarial training under attack.",
    "C4": "Every defense stays below clean (undefended, unattacked) performance under attack.",
}


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


def _count_verdict(n_tests: int, n_support: int) -> str:
    if n_support == n_tests:
        return "holds"
    if n_support == 0:
        return "does not hold"
    return "mixed"


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
) -> pd.DataFrame:
    """Verdicts on the paper's claims C1–C4 computed from the data (one region).

    Rules (a design decision; ``significant`` means Holm-adjusted two-sided p < ``alpha``
    within the family × region of :func:`compare`):

    - **C1** all attacks significantly reduce Dice: for the baseline, each attack (per
      ``target_policy`` for targeted attacks) at its largest eps, from the ``attack_effect``
      family; supported if ``mean_clean − mean_attacked > 0`` and significant.
      holds = every attack, does not hold = none, mixed otherwise.
    - **C2** Dice reduced by up to ``paper_max_drop``: the largest relative mean-Dice drop
      ``1 − mean(attacked)/mean(clean)`` of the baseline over all attacks × eps > 0 (paired
      cases), with a paired bootstrap CI. holds if the CI upper bound ≥ ``paper_max_drop``;
      mixed if the drop ≥ ``paper_max_drop / 2`` but the upper bound is below it; does not
      hold otherwise.
    - **C3** distillation significantly better than adversarial training: ``distill_vs_advtrain``
      comparisons under attack (eps > 0); supported = distilled mean higher and significant,
      against = advtrain higher and significant. holds if every comparison supports, does not
      hold if none does, mixed otherwise.
    - **C4** every defense stays below clean performance: ``defense_vs_clean`` comparisons;
      holds if every defended-under-attack mean is below the clean baseline mean; does not
      hold if any is significantly above; mixed otherwise (above, but not significantly).
    - ``not tested`` when the needed models/attacks are absent.

    Args:
        table: tidy result table.
        comparisons: output of :func:`compare` on ``table`` (computed if ``None``).
        region: region to judge (e.g. ``"WT"``).
        alpha: significance level.
        paper_max_drop: the paper's maximum relative Dice drop (0.65).
        baseline, distilled, advtrain: model names.
        metric: score column.
        n_resamples, seed: bootstrap settings for C2.
        method: Wilcoxon p-value method used when ``comparisons`` is computed here.

    Returns:
        DataFrame with columns :data:`CLAIM_COLUMNS`, rows C1..C4.
    """
    _check_table(table, metric)
    if not (0 < paper_max_drop):
        raise ValueError(f"paper_max_drop: must be positive, got {paper_max_drop}")
    if region not in set(table["region"]):
        raise ValueError(f"region: {region!r} not in the table")
    if comparisons is None:
        comparisons = compare(table, metric=metric, baseline=baseline, distilled=distilled,
                              advtrain=advtrain, alpha=alpha, method=method)  # fmt: skip
    missing = [c for c in ("family", "region", "p_holm", "mean_a", "mean_b") if c not in comparisons.columns]
    if missing:
        raise ValueError(f"comparisons: missing columns {missing}")
    cr = comparisons.loc[comparisons["region"] == region]
    sig = cr["p_holm"] < alpha
    out: list[dict[str, Any]] = []

    # C1
    fam = cr.loc[(cr["family"] == "attack_effect") & (cr["model_a"] == baseline)].copy()
    if fam.empty:
        out.append(_row("C1", "not tested", f"no attacked rows for {baseline!r}.", paper_max_drop))
    else:
        fam["_lab"] = [attack_label(a, p) for a, p in zip(fam["attack_b"], fam.get("target_policy_b", [None] * len(fam)))]
        top = fam.loc[fam.groupby("_lab")["eps_b"].idxmax()].sort_values("_lab")
        ok = (top["mean_a"] - top["mean_b"] > 0) & (top["p_holm"] < alpha)
        against = (top["mean_a"] - top["mean_b"] < 0) & (top["p_holm"] < alpha)
        parts = [
            f"{r['_lab']}@{r['eps_b']:g}: {r['mean_a']:.3f}→{r['mean_b']:.3f} (p_holm={r['p_holm']:.3g})"
            for _, r in top.iterrows()
        ]
        out.append(_row(
            "C1", _count_verdict(len(top), int(ok.sum())),
            f"{int(ok.sum())}/{len(top)} attacks significantly reduce {region} {metric} at their largest eps: "
            + "; ".join(parts) + ".",
            paper_max_drop, n_tests=len(top), n_support=int(ok.sum()), n_against=int(against.sum()),
        ))  # fmt: skip

    # C2
    t = table.loc[(table["region"] == region) & ~table["attack"].astype(str).map(is_diagnostic_attack)]
    tb = t.loc[t["model"] == baseline]
    clean = tb.loc[(tb["attack"] == "clean")]
    att = tb.loc[(tb["attack"] != "clean") & (tb["eps"].astype(float) > 0)]
    if clean.empty or att.empty:
        out.append(_row("C2", "not tested", f"need clean and attacked rows for {baseline!r}.", paper_max_drop))
    else:
        gkeys = ["attack", *[c for c in ("target_policy",) if c in att.columns], "eps"]
        c_ser = clean.drop_duplicates("case_id").set_index("case_id")[metric]
        best = None
        for key, g in att.groupby(gkeys, dropna=False):
            j = g.drop_duplicates("case_id").set_index("case_id")[metric].to_frame("att").join(c_ser.rename("clean"), how="inner").dropna()
            if j.empty or j["clean"].mean() == 0:
                continue
            d = float(_relative_drop(j["clean"].to_numpy(), j["att"].to_numpy()))
            if best is None or d > best[0]:
                best = (d, key, j)
        if best is None:
            out.append(_row("C2", "not tested", "no attacked cases overlap the clean cases.", paper_max_drop))
        else:
            _, key, j = best
            drop, lo, hi = bootstrap_relative_drop_ci(j["clean"].to_numpy(), j["att"].to_numpy(),
                                                       n_resamples=n_resamples, seed=seed)  # fmt: skip
            kd = dict(zip(gkeys, key if isinstance(key, tuple) else (key,)))
            lab = f"{attack_label(kd['attack'], _norm(kd.get('target_policy')))}@{float(kd['eps']):g}"
            if hi >= paper_max_drop:
                verdict = "holds"
            elif drop >= paper_max_drop / 2:
                verdict = "mixed"
            else:
                verdict = "does not hold"
            out.append(_row(
                "C2", verdict,
                f"largest mean {region} {metric} drop {100 * drop:.1f} % (95 % CI {100 * lo:.1f}–{100 * hi:.1f} %) "
                f"by {lab} over {len(j)} cases; paper: up to {100 * paper_max_drop:.0f} %.",
                paper_max_drop, n_tests=1, n_support=int(verdict == "holds"), rel_drop=drop, rel_drop_ci_lo=lo, rel_drop_ci_hi=hi,
            ))  # fmt: skip

    # C3
    fam = cr.loc[(cr["family"] == "distill_vs_advtrain") & (cr["eps_a"].astype(float) > 0)]
    if fam.empty:
        out.append(_row("C3", "not tested", f"need attacked rows for both {distilled!r} and {advtrain!r}.", paper_max_drop))
    else:
        s = fam["p_holm"] < alpha
        sup = int(((fam["mean_a"] > fam["mean_b"]) & s).sum())
        ag = int(((fam["mean_a"] < fam["mean_b"]) & s).sum())
        out.append(_row(
            "C3", _count_verdict(len(fam), sup),
            f"{distilled} significantly above {advtrain} in {sup}/{len(fam)} attacked conditions, "
            f"significantly below in {ag} ({region} {metric}, Holm α={alpha:g}).",
            paper_max_drop, n_tests=len(fam), n_support=sup, n_against=ag,
        ))  # fmt: skip

    # C4
    fam = cr.loc[cr["family"] == "defense_vs_clean"]
    if fam.empty:
        out.append(_row("C4", "not tested", f"need defended models under attack and clean {baseline!r}.", paper_max_drop))
    else:
        s = fam["p_holm"] < alpha
        below = fam["mean_a"] < fam["mean_b"]
        n_below, n_below_sig = int(below.sum()), int((below & s).sum())
        above_sig = (fam["mean_a"] > fam["mean_b"]) & s
        n_above, n_above_sig = int((~below).sum()), int(above_sig.sum())
        if n_below == len(fam):
            verdict = "holds"
        elif n_above_sig > 0:
            verdict = "does not hold"
        else:
            verdict = "mixed"
        ev = (f"{n_below}/{len(fam)} defended-under-attack means below clean {baseline} "
              f"({n_below_sig} significantly); {n_above} not below ({n_above_sig} significantly above).")  # fmt: skip
        if n_above:
            worst = fam.loc[(fam["mean_a"] - fam["mean_b"]).idxmax()]
            ev += f" Largest: {worst['model_a']} {_fmt_cond(worst, 'a')} {worst['mean_a']:.3f} vs {worst['mean_b']:.3f}."
        out.append(_row("C4", verdict, ev, paper_max_drop, n_tests=len(fam), n_support=n_below, n_against=n_above_sig))
    return pd.DataFrame(out, columns=CLAIM_COLUMNS)
