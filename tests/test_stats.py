"""Tests of robustseg_lib.stats (and smoke tests of robustseg_lib.viz_stats)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import seaborn as sns
import pytest
from scipy import stats as sst

from robustseg_lib import stats as S
from robustseg_lib import viz_stats as V

N_CASES = 12
# Fixed per-case "noise": alternating signs so no accidental pattern; |values| all distinct.
_RNG = np.random.default_rng(123)
BASE = _RNG.uniform(0.6, 0.95, N_CASES)
NOISE = _RNG.uniform(0.001, 0.01, N_CASES) * np.where(np.arange(N_CASES) % 2, 1, -1)


def make_table(conds: dict[tuple, float | np.ndarray], regions=("WT", "TC", "ET")) -> pd.DataFrame:
    """Tidy table from {(model, attack, target_policy, eps): multiplier or per-case values}.

    A float ``mu`` gives ``BASE·mu + NOISE`` (``BASE`` exactly when mu == 1.0 and clean);
    an array gives those values directly.
    """
    rows = []
    for (model, attack, policy, eps), spec in conds.items():
        if isinstance(spec, np.ndarray):
            vals = spec
        elif attack == "clean" and model == "baseline":
            vals = BASE * spec
        else:
            vals = BASE * spec + (0.0 if spec == 1.0 else NOISE)
        for region in regions:
            for i in range(N_CASES):
                rows.append({
                    "case_id": f"c{i:02d}", "model": model, "attack": attack, "eps": eps,
                    "steps": 0 if attack == "clean" else 5, "region": region,
                    "dice": float(vals[i]), "hd95": 1.0, "target_policy": policy,
                })  # fmt: skip
    return pd.DataFrame(rows)


FULL = {
    ("baseline", "clean", None, 0.0): 1.0,
    ("baseline", "fgsm", None, 0.1): 0.8,
    ("baseline", "fgsm", None, 0.2): 0.6,
    ("baseline", "ifgsm", None, 0.2): 0.3,
    ("baseline", "tifgsm", "erase", 0.2): 0.5,
    ("baseline", "tifgsm", "et_to_ncr", 0.2): 0.7,
    ("baseline", "transfer_fgsm", None, 0.2): 1.2,  # diagnostic: must be ignored
    ("distilled", "clean", None, 0.0): 0.98,
    ("distilled", "fgsm", None, 0.2): 0.9,
    ("distilled", "ifgsm", None, 0.2): 0.85,
    ("advtrain", "clean", None, 0.0): 0.95,
    ("advtrain", "fgsm", None, 0.2): 0.8,
    ("advtrain", "ifgsm", None, 0.2): 0.75,
}


# ----------------------------------------------------------------------------- Wilcoxon
def test_paired_wilcoxon_matches_scipy_random() -> None:
    rng = np.random.default_rng(0)
    for n in (8, 25, 60):
        a = rng.normal(size=n)
        b = a + rng.normal(0.3, 1.0, size=n)
        for alt in ("two-sided", "less", "greater"):
            ref = sst.wilcoxon(a, b, alternative=alt)
            w = S.paired_wilcoxon(a, b, alternative=alt)
            assert w.statistic == pytest.approx(ref.statistic)
            assert w.pvalue == pytest.approx(ref.pvalue)
            assert w.n == n
            assert w.median_diff == pytest.approx(np.median(a - b))


def test_paired_wilcoxon_ties_and_zeros_hand_example() -> None:
    a = np.array([1, 2, 3, 4, 5, 6], float)
    b = np.array([1, 1, 1, 5, 2, 6], float)
    # d = a − b = [0, 1, 2, −1, 3, 0]; zeros dropped ("wilcox") -> [1, 2, −1, 3], n = 4
    # |d| = [1, 2, 1, 3] -> average ranks [1.5, 3, 1.5, 4]
    # R+ = 1.5 + 3 + 4 = 8.5, R− = 1.5 -> r = (8.5 − 1.5)/(8.5 + 1.5) = 0.7
    w = S.paired_wilcoxon(a, b)
    ref = sst.wilcoxon(a, b, zero_method="wilcox")
    assert w.n == 4
    assert w.effect_size == pytest.approx(0.7)
    assert w.statistic == pytest.approx(ref.statistic) == pytest.approx(1.5)
    assert w.pvalue == pytest.approx(ref.pvalue)
    assert w.median_diff == pytest.approx(0.5)  # median of [−1, 0, 0, 1, 2, 3]
    # b > a flips the sign of the effect
    assert S.paired_wilcoxon(b, a).effect_size == pytest.approx(-0.7)
    # other zero handling goes straight to scipy
    wp = S.paired_wilcoxon(a, b, zero_method="pratt")
    refp = sst.wilcoxon(a, b, zero_method="pratt")
    assert wp.pvalue == pytest.approx(refp.pvalue) and wp.statistic == pytest.approx(refp.statistic)
    assert wp.n == 6


def test_paired_wilcoxon_tied_small_samples_are_scipys_permutation_test() -> None:
    """Ties among ≤ 13 non-zero differences: scipy's "auto" runs an exhaustive sign-flip permutation test (slowly);
    ours runs the same test with the statistic vectorised. Oracle: scipy.stats.wilcoxon itself, p-value and statistic
    equal to the last bit, for each alternative, on samples with ties of all sizes, zeros, and one sign only; the
    hand example of 4 tied differences has the exact p of its 16 sign patterns."""
    rng = np.random.default_rng(7)
    samples = [np.array([1, 2, 1, 3, -2, 2, 1], float), np.array([0.5, 0.5, 0.5, 0.25]), -np.array([1.0, 1.0, 2.0])]
    samples += [rng.choice([-0.3, -0.1, 0.1, 0.2, 0.3, 0.5], size=n) for n in (2, 5, 8, 10, 11)]
    for d in samples:
        dz = np.concatenate([d, [0.0, 0.0]])  # zeros are dropped first, as before
        for alt in ("two-sided", "greater", "less"):
            ours = S.paired_wilcoxon(dz, np.zeros_like(dz), alternative=alt)
            ref = sst.wilcoxon(d, alternative=alt)  # no zeros: scipy's own auto choice on the same n
            assert (ours.pvalue, ours.statistic) == (ref.pvalue, ref.statistic), (d, alt)
            assert ours.n == d.size
    # by hand: d = [1, 1, 2, -2] has average ranks [1.5, 1.5, 3.5, 3.5] and T+ = 6.5; the null is T+ over the 16 sign
    # patterns of |d|, and the two-sided p twice the smaller tail
    d = np.array([1.0, 1.0, 2.0, -2.0])
    patterns = np.array(np.meshgrid(*[[-1, 1]] * 4)).reshape(4, -1).T * np.abs(d)
    tplus = np.array([sum(r for r, v in zip([1.5, 1.5, 3.5, 3.5], row) if v > 0) for row in patterns])
    want = min(1.0, 2 * min(np.mean(tplus >= 6.5), np.mean(tplus <= 6.5)))
    assert S.paired_wilcoxon(d, np.zeros(4)).pvalue == pytest.approx(want)


def test_paired_wilcoxon_degenerate_and_validation() -> None:
    x = [0.5, 0.6, 0.7]
    w = S.paired_wilcoxon(x, x)
    assert (w.pvalue, w.n, w.effect_size, w.statistic, w.median_diff) == (1.0, 0, 0.0, 0.0, 0.0)
    w1 = S.paired_wilcoxon([1.0, 2.0], [1.0, 1.0])  # one non-zero difference: scipy's answer
    assert w1.n == 1 and w1.pvalue == pytest.approx(sst.wilcoxon([1.0, 2.0], [1.0, 1.0]).pvalue)
    with pytest.raises(ValueError, match="equal lengths"):
        S.paired_wilcoxon([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="b: contains NaN"):
        S.paired_wilcoxon([1, 2, 3], [1, np.nan, 2])
    with pytest.raises(ValueError, match="alternative"):
        S.paired_wilcoxon([1, 2], [2, 1], alternative="bigger")
    with pytest.raises(AttributeError):
        w.pvalue = 0.0  # frozen


def test_paired_wilcoxon_zero_differences_do_not_change_the_method() -> None:
    # 3 non-zero differences d = [0.03, 0.02, −0.01] -> ranks 3, 2, 1: R⁺ = 5, R⁻ = 1.
    # Exact null: 2³ = 8 equally likely sign patterns, R⁻ ≤ 1 for {} and {1}: P = 2/8,
    # two-sided p = 2·2/8 = 0.5, whatever the number of zero differences added.
    a = np.array([0.5, 0.6, 0.7])
    b = a - np.array([0.03, 0.02, -0.01])
    zeros = np.full(11, 0.8)  # 14 pairs in all, 11 of them with a zero difference
    w = S.paired_wilcoxon(np.r_[a, zeros], np.r_[b, zeros])
    assert w.n == 3 and w.statistic == pytest.approx(1.0)
    assert w.pvalue == pytest.approx(0.5)
    assert w.pvalue == pytest.approx(sst.wilcoxon(a - b).pvalue)  # scipy on the non-zero differences alone
    # 10 non-zero differences of one sign + 4 zeros (14 pairs): exact p = 2·(1/2¹⁰)
    d = np.r_[0.01 * np.arange(1, 11), np.zeros(4)]
    x = np.full(14, 0.5)
    w = S.paired_wilcoxon(x + d, x)
    assert w.n == 10 and w.pvalue == pytest.approx(2 / 2**10)
    assert S.paired_wilcoxon(x + d, x, alternative="greater").pvalue == pytest.approx(1 / 2**10)
    assert S.paired_wilcoxon(x + d, x, alternative="less").pvalue == pytest.approx(1.0)


def test_hodges_lehmann_hand_example() -> None:
    # d = [0, 1, 5]: Walsh averages (d_i + d_j)/2, i ≤ j: 0, 1, 5, 0.5, 2.5, 3
    # sorted 0, 0.5, 1, 2.5, 3, 5 -> median (1 + 2.5)/2 = 1.75 (median(d) = 1, mean = 2)
    assert S.hodges_lehmann([0.0, 1.0, 5.0]) == pytest.approx(1.75)
    assert S.hodges_lehmann([-2.0]) == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="d: empty"):
        S.hodges_lehmann([])
    with pytest.raises(ValueError, match="d: contains NaN"):
        S.hodges_lehmann([1.0, np.nan])


def test_signed_rank_cdf_matches_enumeration_of_sign_patterns() -> None:
    import itertools

    for n in (1, 4, 10):
        sums = [sum(k for k, s in zip(range(1, n + 1), signs) if s) for signs in itertools.product((0, 1), repeat=n)]
        ref = np.cumsum(np.bincount(sums, minlength=n * (n + 1) // 2 + 1)) / 2**n
        np.testing.assert_allclose(S._signed_rank_cdf(n), ref, rtol=0, atol=1e-15)
    # the classic table value: two-sided 5 % critical value of T for n = 10 is 8 (P(T ≤ 8) = 25/1024)
    cdf = S._signed_rank_cdf(10)
    assert cdf[8] == pytest.approx(25 / 1024) and cdf[8] <= 0.025 < cdf[9]


@pytest.mark.parametrize("n", [6, 7, 10, 14, 25, 57])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_hodges_lehmann_ci_is_the_inversion_of_scipys_wilcoxon(n: int, confidence: float) -> None:
    # independent oracle: the CI is the set of shifts θ at which scipy's exact two-sided test of d − θ
    # is not rejected at 1 − confidence, so p just outside each end is ≤ α and just inside is > α
    d = np.random.default_rng(n).normal(0.05, 0.1, n)  # continuous: no ties, no zeros
    est, lo, hi = S.hodges_lehmann_ci(d, confidence=confidence)
    assert est == pytest.approx(S.hodges_lehmann(d)) and lo < est < hi
    alpha, delta = 1 - confidence, 1e-9
    p = lambda theta: sst.wilcoxon(d - theta, method="exact").pvalue  # noqa: E731
    assert p(lo - delta) <= alpha < p(lo + delta)
    assert p(hi + delta) <= alpha < p(hi - delta)


def test_hodges_lehmann_ci_hand_examples_and_small_n() -> None:
    # n = 6: P(T⁺ ≤ 0) = 1/64 ≤ 0.025 < P(T⁺ ≤ 1) = 2/64, so c = 0 and the CI spans all Walsh averages
    assert S.hodges_lehmann_ci([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == pytest.approx((3.5, 1.0, 6.0))
    # n = 5: 2·2⁻⁵ = 0.0625 > 0.05, no 95 % interval exists; the estimate still does
    est, lo, hi = S.hodges_lehmann_ci([0.0, 1.0, 5.0, 2.0, 3.0])
    assert est == pytest.approx(S.hodges_lehmann([0.0, 1.0, 5.0, 2.0, 3.0])) and np.isnan(lo) and np.isnan(hi)
    with pytest.raises(ValueError, match="confidence"):
        S.hodges_lehmann_ci([1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError, match="d: contains NaN"):
        S.hodges_lehmann_ci([1.0, np.nan])


def test_hodges_lehmann_ci_normal_approximation(monkeypatch: pytest.MonkeyPatch) -> None:
    # above n = 400: c is the largest integer with the continuity-corrected normal P(T⁺ ≤ c) ≤ α/2, T⁺ ~ N(M/2, σ²),
    # σ² = n(n+1)(2n+1)/24 (oracle: scipy's normal CDF); the interval's ends are the Walsh averages of rank c+1, M−c
    n = 450
    d = np.random.default_rng(7).normal(0.0, 1.0, n)
    walsh = np.sort([(x + y) / 2 for i, x in enumerate(d) for y in d[i:]])
    m, sd = n * (n + 1) / 2, np.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    _, lo, hi = S.hodges_lehmann_ci(d)
    c = int(np.searchsorted(walsh, lo))  # 0-based index of lo = c
    assert walsh[c] == lo and walsh[len(walsh) - c - 1] == hi
    assert sst.norm.cdf((c + 0.5 - m / 2) / sd) <= 0.025 < sst.norm.cdf((c + 1.5 - m / 2) / sd)
    # and it stays within a couple of ranks of the exact interval
    monkeypatch.setattr(S, "_EXACT_CI_MAX_N", 1000)
    _, lo_x, _ = S.hodges_lehmann_ci(d)
    assert abs(int(np.searchsorted(walsh, lo_x)) - c) <= 3


def test_compare_hl_interval_goes_with_the_test_beside_it() -> None:
    # 20 unchanged cases and 6 that gained 0.10-0.20: the test ranks the 6 (exact p = 2/64, significant); the interval
    # over those 6 excludes 0 as the test says (over all 26 pairs it would be about [0.00, 0.06], containing 0)
    gains = np.array([0.10, 0.12, 0.14, 0.16, 0.18, 0.20])
    clean = np.linspace(0.5, 0.9, 26)
    att = clean.copy()
    att[:6] += gains
    rows = [{"case_id": f"c{i:02d}", "model": "baseline", "attack": a, "eps": e, "steps": 0, "region": "WT",
             "dice": float(v[i]), "hd95": 1.0} for a, e, v in (("clean", 0.0, clean), ("fgsm", 0.3, att)) for i in range(26)]
    r = S.compare(pd.DataFrame(rows)).iloc[0]  # a = clean, b = attacked: differences −gains and zeros
    assert r["n_nonzero"] == 6 and r["pvalue"] == pytest.approx(2 / 64)
    assert r["hl_ci_lo"] == pytest.approx(-0.20) and r["hl_ci_hi"] == pytest.approx(-0.10)
    assert r["hl_estimate"] == pytest.approx(S.hodges_lehmann(-gains))
    # over many samples with zeros and no ties: 0 outside the interval exactly when scipy's exact test rejects
    rng = np.random.default_rng(3)
    for _ in range(40):
        k = int(rng.integers(6, 14))
        d = np.concatenate([rng.normal(0.03, 0.05, k), np.zeros(int(rng.integers(0, 10)))])
        t = pd.DataFrame([{"case_id": f"c{i:02d}", "model": "baseline", "attack": a, "eps": e, "steps": 0, "region": "WT",
                           "dice": float(v), "hd95": 1.0}
                          for i, dv in enumerate(d) for a, e, v in (("clean", 0.0, 0.5 + dv), ("fgsm", 0.3, 0.5))])
        r = S.compare(t, method="exact").iloc[0]
        dd = (0.5 + d) - 0.5
        p = sst.wilcoxon(dd[dd != 0], method="exact").pvalue
        assert (p <= 0.05) == (not (r["hl_ci_lo"] <= 0 <= r["hl_ci_hi"])), (p, r["hl_ci_lo"], r["hl_ci_hi"])
    # every difference zero: estimate 0, interval [0, 0]
    same = pd.DataFrame([{**row, "dice": 0.5} for row in rows])
    r = S.compare(same).iloc[0]
    assert (r["hl_estimate"], r["hl_ci_lo"], r["hl_ci_hi"]) == (0.0, 0.0, 0.0)


def test_hl_interval_and_auto_p_can_disagree_above_50_pairs() -> None:
    """What the docs say about the limit of "the interval excludes 0 exactly when p < α": scipy's ``auto`` p is exact
    up to 50 non-zero differences and the normal approximation above, while the interval stays exact to n = 400, so
    near α they can disagree. 62 distinct differences: the exact interval excludes 0 and the exact p rejects, the
    ``auto`` p (oracle: scipy's asymptotic method, no continuity correction) does not."""
    rng = np.random.default_rng(214)
    n = 62
    d = (np.arange(1, n + 1) + rng.uniform(0, 0.1, n)) * np.where(rng.uniform(size=n) < 0.62, 1, -1)
    _, lo, hi = S.hodges_lehmann_ci(d)
    assert lo > 0
    auto = S.paired_wilcoxon(d, np.zeros(n)).pvalue
    assert auto == pytest.approx(sst.wilcoxon(d, method="asymptotic").pvalue, rel=1e-12) and 0.05 < auto < 0.0501
    assert sst.wilcoxon(d, method="exact").pvalue < 0.05


def test_compare_hl_interval_is_at_one_minus_alpha() -> None:
    t = make_table(FULL)
    r = S.compare(t, alpha=0.2).query("family == 'attack_effect' and region == 'WT' and attack_b == 'fgsm' and eps_b == 0.2").iloc[0]
    sel = lambda a, e: t[(t.model == "baseline") & (t.attack == a) & (t.eps == e) & (t.region == "WT")].set_index("case_id").dice  # noqa: E731
    d = (sel("clean", 0.0) - sel("fgsm", 0.2)).to_numpy()
    assert (r["hl_ci_lo"], r["hl_ci_hi"]) == pytest.approx(S.hodges_lehmann_ci(d, confidence=0.8)[1:])
    assert (r["hl_ci_lo"], r["hl_ci_hi"]) != pytest.approx(S.hodges_lehmann_ci(d, confidence=0.95)[1:])


# ----------------------------------------------------------------------------- Holm
def test_holm_worked_example() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> max(0.06, 0.04) = 0.06
    out = S.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(out, [0.03, 0.06, 0.06, 0.02])


def test_holm_cap_nan_and_monotone() -> None:
    np.testing.assert_allclose(S.holm([0.5, 0.6]), [1.0, 1.0])
    out = S.holm([0.01, np.nan, 0.02])  # m = 2: 0.01·2 = 0.02, 0.02·1 -> max 0.02
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.02])
    rng = np.random.default_rng(0)
    p = rng.uniform(size=30)
    adj = S.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= -1e-15) and np.all(adj >= p) and np.all(adj <= 1)
    assert S.holm([]).size == 0
    with pytest.raises(ValueError, match="pvalues"):
        S.holm([0.5, 1.5])


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_mean_ci_coverage() -> None:
    rng = np.random.default_rng(42)
    hits = 0
    n_sim = 200
    for k in range(n_sim):
        x = rng.normal(1.0, 2.0, size=30)
        _, lo, hi = S.bootstrap_mean_ci(x, n_resamples=400, seed=k)
        hits += lo <= 1.0 <= hi
    assert 0.90 <= hits / n_sim <= 0.99


def test_bootstrap_deterministic_and_degenerate() -> None:
    x = np.linspace(0, 1, 20)
    assert S.bootstrap_mean_ci(x, seed=3) == S.bootstrap_mean_ci(x, seed=3)
    m, lo, hi = S.bootstrap_mean_ci(x)
    assert lo < m < hi and m == pytest.approx(0.5)
    assert S.bootstrap_mean_ci([0.7] * 10) == (0.7, 0.7, 0.7)
    assert S.bootstrap_mean_ci([0.3]) == (0.3, 0.3, 0.3)
    with pytest.raises(ValueError, match="confidence"):
        S.bootstrap_mean_ci(x, confidence=95)
    with pytest.raises(ValueError, match="x: contains NaN"):
        S.bootstrap_mean_ci([1.0, np.nan])


def test_bootstrap_relative_drop() -> None:
    # hand value: means 0.7 and 0.3 -> drop = 1 − 3/7 = 4/7
    d, lo, hi = S.bootstrap_relative_drop_ci([0.8, 0.6], [0.4, 0.2])
    assert d == pytest.approx(4 / 7) and lo <= d <= hi
    c = BASE
    a = BASE * 0.5 + NOISE
    d, lo, hi = S.bootstrap_relative_drop_ci(c, a, n_resamples=500)
    assert d == pytest.approx(1 - a.mean() / c.mean())
    assert lo < d < hi and hi - lo < 0.1
    # the attacked scores a constant fraction of clean -> bootstrap distribution is a point
    d, lo, hi = S.bootstrap_relative_drop_ci(c, 0.5 * c)
    assert d == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    assert S.bootstrap_relative_drop_ci([0.8] * 4, [0.4] * 4) == pytest.approx((0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="equal lengths"):
        S.bootstrap_relative_drop_ci([1, 2], [1])
    with pytest.raises(ValueError, match="clean"):
        S.bootstrap_relative_drop_ci([0, 0], [1, 1])


# ----------------------------------------------------------------------------- summary / compare
def test_summary_table() -> None:
    t = make_table(FULL)
    s = S.summary_table(t, n_resamples=200)
    assert list(s.columns) == ["model", "attack", "target_policy", "eps", "region", "n", "mean_dice", "ci_lo", "ci_hi"]
    assert len(s) == len(FULL) * 3
    row = s[(s.model == "baseline") & (s.attack == "clean") & (s.region == "WT")].iloc[0]
    assert row["n"] == N_CASES and row["mean_dice"] == pytest.approx(BASE.mean())
    assert row["ci_lo"] < row["mean_dice"] < row["ci_hi"]
    erase = s[(s.attack == "tifgsm") & (s.target_policy == "erase") & (s.region == "ET")]
    assert len(erase) == 1


def test_compare_families() -> None:
    t = make_table(FULL)
    c = S.compare(t)
    assert list(c.columns) == S.COMPARE_COLUMNS
    wt = c[c.region == "WT"]
    fam = wt.groupby("family").size().to_dict()
    # attack_effect: baseline 5 attack conditions + distilled 2 + advtrain 2 (transfer_ ignored)
    assert fam == {"attack_effect": 9, "defense_vs_baseline": 6, "distill_vs_advtrain": 3, "defense_vs_clean": 4}
    assert not c["attack_a"].str.startswith("transfer_").any() and not c["attack_b"].str.startswith("transfer_").any()
    # targeted policies are distinct attacks
    ae = wt[(wt.family == "attack_effect") & (wt.attack_b == "tifgsm")]
    assert sorted(ae["target_policy_b"]) == ["erase", "et_to_ncr"]
    # clean vs attack: a = clean; positive effect when the attack lowers Dice
    r = wt[(wt.family == "attack_effect") & (wt.model_a == "baseline") & (wt.attack_b == "ifgsm")].iloc[0]
    assert r["attack_a"] == "clean" and r["eps_b"] == 0.2 and r["n"] == N_CASES
    assert r["mean_a"] > r["mean_b"] and r["effect_size"] == pytest.approx(1.0) and r["significant"]
    # Holm within family × region
    for _, g in c.groupby(["family", "region"]):
        np.testing.assert_allclose(g["p_holm"], S.holm(g["pvalue"].to_numpy()))
    dc = wt[wt.family == "defense_vs_clean"]
    assert (dc["model_b"] == "baseline").all() and (dc["attack_b"] == "clean").all()
    dva = wt[wt.family == "distill_vs_advtrain"]
    assert (dva["model_a"] == "distilled").all() and (dva["model_b"] == "advtrain").all()
    # diagnostics on request
    cd = S.compare(t, include_diagnostics=True)
    assert (cd["attack_b"] == "transfer_fgsm").any()
    # explicit defended list
    only = S.compare(t, defended=["advtrain"])
    assert set(only.loc[only.family == "defense_vs_baseline", "model_a"]) == {"advtrain"}
    with pytest.raises(ValueError, match="defended"):
        S.compare(t, defended=["nope"])


def test_compare_pairs_by_case_id() -> None:
    t = make_table(FULL)
    ref = S.compare(t)
    shuffled = t.sample(frac=1.0, random_state=7).reset_index(drop=True)
    got = S.compare(shuffled)
    key = ["family", "region", "model_a", "attack_a", "target_policy_a", "eps_a", "model_b", "attack_b",
           "target_policy_b", "eps_b"]  # fmt: skip
    pd.testing.assert_frame_equal(
        ref.sort_values(key).reset_index(drop=True), got.sort_values(key).reset_index(drop=True), check_like=True
    )
    # attacked rows relabelled in reverse case order (storage order unchanged): compare must
    # pair by case_id, not by position
    rev = t.copy()
    m = (rev.model == "baseline") & (rev.attack == "ifgsm") & (rev.region == "WT")
    rev.loc[m, "case_id"] = rev.loc[m, "case_id"].to_numpy()[::-1]
    r1 = S.compare(rev)
    sel = (r1.family == "attack_effect") & (r1.model_a == "baseline") & (r1.attack_b == "ifgsm") & (r1.region == "WT")
    clean = rev[(rev.model == "baseline") & (rev.attack == "clean") & (rev.region == "WT")]
    att = rev[m]
    j = clean.merge(att, on="case_id", suffixes=("_c", "_a"))
    expect = S.paired_wilcoxon(j["dice_c"], j["dice_a"])
    got_row = r1.loc[sel].iloc[0]
    assert got_row["statistic"] == pytest.approx(expect.statistic)
    assert got_row["effect_size"] == pytest.approx(expect.effect_size)
    assert got_row["median_diff"] == pytest.approx(expect.median_diff)
    positional = S.paired_wilcoxon(clean["dice"].to_numpy(), att["dice"].to_numpy())
    assert positional.median_diff != pytest.approx(expect.median_diff)
    # partial overlap -> inner join; none -> error
    part = t[~((t.model == "baseline") & (t.attack == "fgsm") & t.case_id.isin(["c00", "c01"]))]
    cp = S.compare(part)
    assert (cp.loc[(cp.model_a == "baseline") & (cp.attack_b == "fgsm"), "n"] == N_CASES - 2).all()
    bad = t.copy()
    bad.loc[(bad.model == "baseline") & (bad.attack == "fgsm"), "case_id"] += "_x"
    with pytest.raises(ValueError, match="no case_id overlap"):
        S.compare(bad)


def test_compare_row_matches_independent_merge_scipy_and_walsh() -> None:
    import itertools

    t = make_table(FULL)
    c = S.compare(t)
    assert list(c.columns[-3:]) == ["hl_estimate", "hl_ci_lo", "hl_ci_hi"]  # appended: positional readers keep working
    r = c[(c.family == "defense_vs_baseline") & (c.region == "TC") & (c.model_a == "advtrain") & (c.attack_a == "fgsm")].iloc[0]
    sel = lambda m: t[(t.model == m) & (t.attack == "fgsm") & (t.eps == 0.2) & (t.region == "TC")][["case_id", "dice"]]  # noqa: E731
    j = sel("advtrain").merge(sel("baseline"), on="case_id", suffixes=("_a", "_b"))
    d = (j.dice_a - j.dice_b).to_numpy()
    ref = sst.wilcoxon(j.dice_a, j.dice_b)
    assert r["n"] == len(j) and r["pvalue"] == pytest.approx(ref.pvalue) and r["statistic"] == pytest.approx(ref.statistic)
    walsh = [(x + y) / 2 for x, y in itertools.combinations_with_replacement(d, 2)]
    assert len(walsh) == len(d) * (len(d) + 1) // 2
    assert r["hl_estimate"] == pytest.approx(float(np.median(walsh)))
    assert r["hl_estimate"] != pytest.approx(r["median_diff"])
    # its CI is the inversion of scipy's test at the comparison's alpha (n = 12, continuous differences)
    p = lambda theta: sst.wilcoxon(d - theta, method="exact").pvalue  # noqa: E731
    assert p(r["hl_ci_lo"] - 1e-9) <= 0.05 < p(r["hl_ci_lo"] + 1e-9)
    assert p(r["hl_ci_hi"] + 1e-9) <= 0.05 < p(r["hl_ci_hi"] - 1e-9)


# ----------------------------------------------------------------------------- claims
def _verdicts(conds: dict, **kw) -> dict[str, str]:
    cl = S.claims(make_table(conds), n_resamples=300, **kw)
    assert list(cl.columns) == S.CLAIM_COLUMNS
    assert list(cl["claim"]) == ["C1", "C2", "C3", "C4"]
    assert set(cl["verdict"]) <= set(S.VERDICTS)
    return dict(zip(cl["claim"], cl["verdict"]))


# per-case differences from BASE whose mean is above/below zero but not significantly (n = 12):
# +0.02/−0.01 alternating -> R⁺ = 57, R⁻ = 21 (p ≈ 0.18, checked in test_claim_c4_strict...)
ABOVE_NS = BASE + np.where(np.arange(N_CASES) % 2, -0.01, 0.02)
BELOW_NS = BASE - np.where(np.arange(N_CASES) % 2, -0.01, 0.02)


def test_claims_all_hold() -> None:
    v = _verdicts(FULL)
    assert v == {"C1": "holds", "C2": "holds", "C3": "holds", "C4": "holds"}
    cl = S.claims(make_table(FULL), n_resamples=300).set_index("claim")
    drop = 1 - (0.3 * BASE + NOISE).mean() / BASE.mean()  # ifgsm at mu = 0.3, eps 0.2
    assert cl.loc["C2", "rel_drop"] == pytest.approx(drop)
    ev = cl.loc["C2", "evidence"]
    assert "relative drop" in ev and "ifgsm@0.2" in ev
    assert f"reaches 65 % first at eps 0.2 (ifgsm, {100 * drop:.0f} %)" in ev
    assert cl.loc["C1", "n_tests"] == 4 and cl.loc["C1", "n_support"] == 4  # fgsm only at eps 0.2


def test_a_p_holm_equal_to_alpha_is_not_significant() -> None:
    """"Significant" is p_holm strictly below α, in the claims and in compare's ``significant`` column. Oracle: the
    rule itself on hand-set p-values: every p_holm at exactly 0.05 supports nothing (C1, C3, C4 not supported); one ulp
    below, every test supports (they all point the claimed way on FULL) and the claims hold."""
    t = make_table(FULL)
    cmp = S.compare(t)
    for p, verdict, n_support in ((0.05, "not supported", 0), (np.nextafter(0.05, 0), "holds", None)):
        cl = S.claims(t, cmp.assign(p_holm=p), alpha=0.05, n_resamples=50).set_index("claim")
        for claim in ("C1", "C3", "C4"):
            assert cl.loc[claim, "verdict"] == verdict
            assert cl.loc[claim, "n_support"] == (cl.loc[claim, "n_tests"] if n_support is None else n_support)
            assert cl.loc[claim, "n_against"] == 0
    p_row = float(cmp["p_holm"].iloc[0])  # compare at an alpha equal to a row's own p_holm: that row is not significant
    c_at = S.compare(t, alpha=p_row)
    assert c_at["p_holm"].iloc[0] == p_row and not c_at["significant"].iloc[0]
    assert S.compare(t, alpha=np.nextafter(p_row, 1))["significant"].iloc[0]


def test_claims_contradicted() -> None:
    conds = {
        ("baseline", "clean", None, 0.0): 1.0,
        ("baseline", "fgsm", None, 0.2): 1.0,  # identical to clean: no effect at all
        ("baseline", "ifgsm", None, 0.2): 1.1,  # the attack *raises* Dice, significantly
        ("distilled", "clean", None, 0.0): 1.0,
        ("distilled", "fgsm", None, 0.2): 1.05,
        ("distilled", "ifgsm", None, 0.2): 1.04,
        ("advtrain", "clean", None, 0.0): 1.0,
        ("advtrain", "fgsm", None, 0.2): 1.1,  # above distilled and above the clean baseline
        ("advtrain", "ifgsm", None, 0.2): 1.08,
    }
    # every defended-under-attack difference from clean is ≥ 0.04·0.6 − 0.01 > 0: 12/12 positive,
    # exact p = 2/2¹², Holm × 4 -> significant; same for advtrain − distilled (≥ 0.02·0.6 > 0)
    cl = S.claims(make_table(conds), n_resamples=300).set_index("claim")
    # C2: no attack lowers the mean (drops 0 and < 0), so the whole interval is below 65 %
    assert dict(cl["verdict"]) == {"C1": "contradicted", "C2": "contradicted", "C3": "contradicted", "C4": "contradicted"}
    assert cl.loc["C2", "rel_drop_ci_hi"] < 0.65
    assert (cl.loc["C1", "n_support"], cl.loc["C1", "n_against"]) == (0, 1)
    assert (cl.loc["C3", "n_support"], cl.loc["C3", "n_against"]) == (0, 2)
    assert (cl.loc["C4", "n_support"], cl.loc["C4", "n_against"]) == (0, 4)


def test_claims_not_supported() -> None:
    conds = {
        ("baseline", "clean", None, 0.0): 1.0,
        ("baseline", "fgsm", None, 0.2): 1.0,  # no effect: all differences zero, p = 1
        ("distilled", "clean", None, 0.0): 0.9,
        ("distilled", "fgsm", None, 0.2): BELOW_NS,  # below clean, not significantly
        ("advtrain", "clean", None, 0.0): 0.9,
        ("advtrain", "fgsm", None, 0.2): BELOW_NS,  # identical to distilled: p = 1
    }
    cl = S.claims(make_table(conds), n_resamples=300, method="exact").set_index("claim")
    # the old rules gave C1/C3 "does not hold" without any evidence against, and C4 "holds"
    # because both means are below clean without significance. C2 is judged on its interval: fgsm leaves every case
    # unchanged, a drop of exactly 0 with a point interval, which lies below 65 %: contradicted
    assert dict(cl["verdict"]) == {"C1": "not supported", "C2": "contradicted", "C3": "not supported", "C4": "not supported"}
    assert (cl.loc["C2", "rel_drop"], cl.loc["C2", "rel_drop_ci_lo"], cl.loc["C2", "rel_drop_ci_hi"]) == (0, 0, 0)
    assert (cl.loc["C3", "n_support"], cl.loc["C3", "n_against"]) == (0, 0)


def test_claims_mixed() -> None:
    conds = {
        ("baseline", "clean", None, 0.0): 1.0,
        ("baseline", "fgsm", None, 0.2): 0.5,  # relative drop ≈ 0.5: CI below 0.65
        ("baseline", "ifgsm", None, 0.2): 1.0,  # no effect
        ("distilled", "clean", None, 0.0): 0.95,
        ("distilled", "fgsm", None, 0.2): 0.9,  # distilled better than advtrain, below clean
        ("distilled", "ifgsm", None, 0.2): ABOVE_NS,  # above clean, not significantly
        ("advtrain", "clean", None, 0.0): 0.95,
        ("advtrain", "fgsm", None, 0.2): 0.8,  # below clean
        # above clean (every difference ≥ 0.05 − 0.012 − 0.01 > 0) and above distilled
        ("advtrain", "ifgsm", None, 0.2): ABOVE_NS - 0.001 * np.arange(1, N_CASES + 1) + 0.05,
    }
    cl = S.claims(make_table(conds), n_resamples=300, method="exact").set_index("claim")
    assert cl.loc["C1", "verdict"] == "mixed" and cl.loc["C1", "n_support"] == 1
    # the old rule called a drop ≥ 65 %/2 with CI < 65 % "mixed"; an interval wholly below 65 % contradicts the paper
    assert cl.loc["C2", "verdict"] == "contradicted"
    assert cl.loc["C2", "rel_drop_ci_hi"] < 0.65 and cl.loc["C2", "rel_drop"] == pytest.approx(1 - (0.5 * BASE + NOISE).mean() / BASE.mean())
    assert "no attack reaches 65 % at any eps" in cl.loc["C2", "evidence"]
    assert cl.loc["C3", "verdict"] == "mixed"
    assert cl.loc["C3", "n_support"] == 1 and cl.loc["C3", "n_against"] == 1
    assert cl.loc["C4", "verdict"] == "mixed"
    assert (cl.loc["C4", "n_tests"], cl.loc["C4", "n_support"], cl.loc["C4", "n_against"]) == (4, 2, 1)
    assert "Largest offender: advtrain ifgsm@0.2" in cl.loc["C4", "evidence"]


def test_claim_c4_strict_and_defenses_only() -> None:
    # ABOVE_NS − BASE = +0.02 (6 cases, ranks 7..12) / −0.01 (6 cases, ranks 1..6):
    # R⁻ = 21, R⁺ = 57, far from significant
    p = S.paired_wilcoxon(ABOVE_NS, BASE, method="exact").pvalue
    assert p == pytest.approx(sst.wilcoxon(ABOVE_NS - BASE, method="exact").pvalue) and p > 0.1
    base = {
        ("baseline", "clean", None, 0.0): 1.0,
        ("baseline", "fgsm", None, 0.2): 0.5,
        ("advtrain", "clean", None, 0.0): 1.0,
    }
    for arr in (ABOVE_NS, BELOW_NS):  # old rules: "mixed" above, "holds" below
        cl = S.claims(make_table({**base, ("advtrain", "fgsm", None, 0.2): arr}), n_resamples=300, method="exact")
        c4 = cl.set_index("claim").loc["C4"]
        assert c4["verdict"] == "not supported" and (c4["n_support"], c4["n_against"]) == (0, 0)
        assert cl.set_index("claim").loc["C3", "verdict"] == "not tested"
    # a distilled model deployed at T = 1 is not a defense: significantly above clean, but not counted
    conds = {
        **base,
        ("advtrain", "fgsm", None, 0.2): 0.8,  # significantly below clean
        ("distilled_T1", "clean", None, 0.0): 1.0,
        ("distilled_T1", "fgsm", None, 0.2): 1.2,  # significantly above clean
    }
    cl = S.claims(make_table(conds), n_resamples=300).set_index("claim")
    # the one defense present supports; the distilled model (the other defense) has no test: partly tested
    assert cl.loc["C4", "verdict"] == "partly tested" and cl.loc["C4", "n_tests"] == 1
    assert "distilled_T1" not in cl.loc["C4", "evidence"].split("Not tested")[0]
    assert "Not tested: distilled" in cl.loc["C4", "evidence"]


def test_claims_direction_from_signed_ranks() -> None:
    # distilled − advtrain under attack: 11 small positive differences and one large negative
    # one: the mean is negative (−0.028) but R⁺ = 66, R⁻ = 12 -> rank-biserial +0.69, exact
    # two-sided p = 0.0342 (scipy below); with the clean comparison (12/12 positive,
    # p = 2/2¹²) Holm gives max(2·2/2¹², 0.0342) = 0.0342 < 0.05: a significant test in
    # favour of distillation, although its mean is lower.
    d = np.r_[0.01 + 0.001 * np.arange(11), -0.5]
    ref = sst.wilcoxon(d, method="exact")
    assert ref.statistic == 12 and ref.pvalue == pytest.approx(0.0341796875) and d.mean() < 0
    adv = BASE * 0.7
    conds = {
        ("baseline", "clean", None, 0.0): 1.0,
        ("baseline", "fgsm", None, 0.2): 0.5,
        ("distilled", "clean", None, 0.0): BASE,
        ("distilled", "fgsm", None, 0.2): adv + d,
        ("advtrain", "clean", None, 0.0): BASE - 0.05,
        ("advtrain", "fgsm", None, 0.2): adv,
    }
    cl = S.claims(make_table(conds), n_resamples=300, method="exact").set_index("claim")
    assert cl.loc["C3", "verdict"] == "holds"
    assert (cl.loc["C3", "n_support"], cl.loc["C3", "n_against"]) == (1, 0)
    # effect_size NaN -> fall back to the mean difference (here: against)
    cmp = S.compare(make_table(conds), method="exact")
    cmp.loc[cmp["family"] == "distill_vs_advtrain", "effect_size"] = np.nan
    cl2 = S.claims(make_table(conds), cmp, n_resamples=300).set_index("claim")
    assert cl2.loc["C3", "verdict"] == "contradicted"


def test_claim_c2_ci_is_of_the_maximum() -> None:
    # two attacks with the same relative drop (0.5) on different cases: the maximum over them
    # is larger than either; its CI must come from bootstrapping the maximum, not the winner
    e = np.linspace(-0.1, 0.1, N_CASES)
    a1, a2 = BASE * 0.5 + e, BASE * 0.5 + e[::-1]
    conds = {
        ("baseline", "clean", None, 0.0): BASE,
        ("baseline", "fgsm", None, 0.2): a1,
        ("baseline", "ifgsm", None, 0.2): a2,
    }
    # oracle: a plain resampling loop over cases, 20 000 resamples
    idx = np.random.default_rng(99).integers(0, N_CASES, (20000, N_CASES))
    m = np.maximum(1 - a1[idx].mean(1) / BASE[idx].mean(1), 1 - a2[idx].mean(1) / BASE[idx].mean(1))
    lo_ref, hi_ref = np.percentile(m, [2.5, 97.5])
    got = S.claims(make_table(conds, regions=("WT",)), n_resamples=4000).set_index("claim").loc["C2"]
    assert got["rel_drop"] == pytest.approx(max(1 - a1.mean() / BASE.mean(), 1 - a2.mean() / BASE.mean()))
    assert got["rel_drop_ci_lo"] == pytest.approx(lo_ref, abs=0.01)
    assert got["rel_drop_ci_hi"] == pytest.approx(hi_ref, abs=0.01)
    # the winner-only interval is visibly lower (so the test tells the two apart)
    for a in (a1, a2):
        assert S.bootstrap_relative_drop_ci(BASE, a, n_resamples=4000)[1] < lo_ref - 0.03
    # the function itself against the same oracle
    drop, lo, hi = S.bootstrap_max_relative_drop_ci(BASE, np.vstack([a1, a2]), n_resamples=4000, seed=3)
    assert lo == pytest.approx(lo_ref, abs=0.01) and hi == pytest.approx(hi_ref, abs=0.01)
    with pytest.raises(ValueError, match="attacked: rows"):
        S.bootstrap_max_relative_drop_ci(BASE, np.ones((2, 3)))
    with pytest.raises(ValueError, match="attacked"):
        S.bootstrap_max_relative_drop_ci(BASE, [[np.nan] * N_CASES])


def test_stratified_c2_bootstrap_against_exact_enumeration() -> None:
    import itertools

    # two strata of two cases: a stratified resample is one of 2² × 2² = 16 equally likely draws, so the exact
    # bootstrap distribution is enumerable; each atom has mass 1/16 > 2.5 %, so the percentile interval is
    # [its smallest atom, its largest]. The plain bootstrap (4 draws from all 4 cases) reaches further out.
    clean = np.array([0.9, 0.8, 0.6, 0.7])
    att = np.array([[0.3, 0.5, 0.4, 0.1], [0.6, 0.2, 0.3, 0.5]])
    strata = ["r0", "r0", "r1", "r1"]
    atoms = []
    for i in itertools.product([0, 1], repeat=2):
        for j in itertools.product([2, 3], repeat=2):
            ix = list(i + j)
            atoms.append(max(1 - att[k, ix].mean() / clean[ix].mean() for k in range(2)))
    drop, lo, hi = S.bootstrap_max_relative_drop_ci(clean, att, n_resamples=20000, seed=5, strata=strata)
    assert drop == pytest.approx(max(1 - a.mean() / clean.mean() for a in att))
    assert lo == pytest.approx(min(atoms), abs=1e-12) and hi == pytest.approx(max(atoms), abs=1e-12)
    plain = S.bootstrap_max_relative_drop_ci(clean, att, n_resamples=20000, seed=5)
    assert plain[1] < min(atoms) - 0.01 or plain[2] > max(atoms) + 0.01
    # one stratum is the plain bootstrap, bit for bit; cases constant within their strata leave no spread
    one = S.bootstrap_max_relative_drop_ci(clean, att, seed=2, strata=["x"] * 4)
    assert one == S.bootstrap_max_relative_drop_ci(clean, att, seed=2)
    flat = np.array([0.9, 0.9, 0.6, 0.6])
    d, l, h = S.bootstrap_max_relative_drop_ci(flat, [flat * [0.5, 0.5, 0.8, 0.8]], strata=strata)
    assert d == pytest.approx(1 - (0.45 + 0.48) / (0.9 + 0.6)) and l == pytest.approx(d) and h == pytest.approx(d)
    with pytest.raises(ValueError, match="strata: expected one label per case"):
        S.bootstrap_max_relative_drop_ci(clean, att, strata=["r0"] * 3)
    with pytest.raises(ValueError, match="percentile"):
        S.bootstrap_max_relative_drop_ci(clean, att, strata=strata, method="bca")
    # through claims(): strata by case id; an unlisted case is refused by name
    conds = {("baseline", "clean", None, 0.0): BASE, ("baseline", "fgsm", None, 0.3): BASE * 0.5 + NOISE}
    tab = make_table(conds, regions=("WT",))
    by_case = {f"c{i:02d}": f"run{i % 3}" for i in range(N_CASES)}
    c2 = S.claims(tab, n_resamples=500, strata=by_case).set_index("claim").loc["C2"]
    runs = [f"run{i % 3}" for i in range(N_CASES)]
    want = S.bootstrap_max_relative_drop_ci(BASE, [BASE * 0.5 + NOISE], n_resamples=500, strata=runs)
    assert (c2["rel_drop"], c2["rel_drop_ci_lo"], c2["rel_drop_ci_hi"]) == pytest.approx(want, abs=1e-12)
    assert "within 3 strata" in c2["evidence"]
    with pytest.raises(ValueError, match="not listed"):
        S.claims(tab, n_resamples=50, strata=dict(list(by_case.items())[1:]))


def test_claim_c2_first_eps_reaching_the_paper() -> None:
    # exact multiples of clean: relative drop = 1 − mu for every condition (constant ratios, so
    # the bootstrap distribution of the maximum is a point)
    conds = {
        ("baseline", "clean", None, 0.0): BASE,
        ("baseline", "fgsm", None, 0.1): BASE * 0.8,  # 20 %
        ("baseline", "fgsm", None, 0.3): BASE * 0.3,  # 70 %
        ("baseline", "ifgsm", None, 0.1): BASE * 0.34,  # 66 %: first to reach 65 %
        ("baseline", "ifgsm", None, 0.3): BASE * 0.1,  # 90 %: the maximum
        ("baseline", "tifgsm", "erase", 0.1): BASE * 0.5,  # 50 %
    }
    c2 = S.claims(make_table(conds), n_resamples=300).set_index("claim").loc["C2"]
    assert c2["verdict"] == "holds"
    assert (c2["rel_drop"], c2["rel_drop_ci_lo"], c2["rel_drop_ci_hi"]) == pytest.approx((0.9, 0.9, 0.9))
    assert (c2["n_tests"], c2["n_support"]) == (5, 3)
    assert "reaches 65 % first at eps 0.1 (ifgsm, 66 %)" in c2["evidence"] and "by ifgsm@0.3" in c2["evidence"]
    conds = {k: (BASE * 0.4 if k[1] != "clean" else v) for k, v in conds.items()}  # 60 % everywhere
    c2 = S.claims(make_table(conds), n_resamples=300).set_index("claim").loc["C2"]
    assert c2["verdict"] == "contradicted" and c2["rel_drop_ci_hi"] == pytest.approx(0.6)
    assert "no attack reaches 65 % at any eps" in c2["evidence"]


def test_claims_duplicates_are_errors() -> None:
    t = make_table(FULL)
    cmp = S.compare(t)
    dup = pd.concat([t, t[(t.model == "baseline") & (t.attack == "fgsm") & (t.eps == 0.2)].assign(steps=10)])
    with pytest.raises(ValueError, match=r"duplicate case_id rows for 'baseline' fgsm@0.2"):
        S.claims(dup, cmp, n_resamples=100)
    dup = pd.concat([t, t[(t.model == "baseline") & (t.attack == "clean")]])
    with pytest.raises(ValueError, match=r"duplicate case_id rows for the clean 'baseline' condition"):
        S.claims(dup, cmp, n_resamples=100)
    # a second clean condition (another source_model) is an error in claims and in compare
    t2 = t.assign(source_model=None)
    extra = t2[(t2.model == "baseline") & (t2.attack == "clean")].assign(source_model="other")
    two = pd.concat([t2, extra])
    with pytest.raises(ValueError, match=r"'baseline' has 2 clean conditions"):
        S.claims(two, cmp, n_resamples=100)
    with pytest.raises(ValueError, match=r"model 'baseline' has 2 clean conditions"):
        S.compare(two)


def test_claims_not_tested() -> None:
    only_base = {("baseline", "clean", None, 0.0): 1.0, ("baseline", "fgsm", None, 0.2): 0.3}
    v = _verdicts(only_base)
    assert v["C3"] == "not tested" and v["C4"] == "not tested"
    # FGSM alone reduces Dice significantly, but i-FGSM and ti-FGSM were never run: C1 is about all three
    assert v["C1"] == "partly tested" and v["C2"] == "holds"
    v = _verdicts({("baseline", "clean", None, 0.0): 1.0})
    assert set(v.values()) == {"not tested"}
    with pytest.raises(ValueError, match="region"):
        S.claims(make_table(only_base), region="XX")
    with pytest.raises(ValueError, match="alpha"):
        S.claims(make_table(only_base), alpha=5)
    with pytest.raises(ValueError, match="comparisons: missing"):
        S.claims(make_table(only_base), pd.DataFrame({"family": []}))


def test_claims_partly_tested_when_part_of_the_scope_has_no_test() -> None:
    """C1 is about FGSM, i-FGSM and ti-FGSM, C4 about both defenses: every test present supporting is "partly tested"
    when part of that scope was never run; other verdicts stand. Hand-made: an attack at mu = 0.5 lowers all 12
    cases (differences 0.5·BASE − NOISE > 0.29: exact p = 2/2¹², Holm × ≤ 3 < 0.05); mu = 1.0 leaves every case
    unchanged (p = 1); mu = 1.1 raises all 12 (against)."""

    def c(conds: dict, claim: str) -> pd.Series:
        return S.claims(make_table(conds, regions=("WT",)), n_resamples=50, method="exact").set_index("claim").loc[claim]

    clean = {("baseline", "clean", None, 0.0): 1.0}
    two = {**clean, ("baseline", "fgsm", None, 0.2): 0.5, ("baseline", "ifgsm", None, 0.2): 0.5}
    c1 = c(two, "C1")
    assert (c1["verdict"], c1["n_tests"], c1["n_support"], c1["n_against"]) == ("partly tested", 2, 2, 0)
    assert c1["evidence"].endswith("Not tested: tifgsm (no attacked rows for 'baseline'; the claim is about fgsm, "
                                   "ifgsm and tifgsm).")
    # the third attack (any target policy) completes the scope
    c1 = c({**two, ("baseline", "tifgsm", "erase", 0.2): 0.5}, "C1")
    assert (c1["verdict"], c1["n_tests"], c1["n_support"]) == ("holds", 3, 3) and "Not tested" not in c1["evidence"]
    # ti-FGSM under two policies is two tests of one attack: FGSM and i-FGSM are still missing
    c1 = c({**clean, ("baseline", "tifgsm", "erase", 0.2): 0.5, ("baseline", "tifgsm", "et_to_ncr", 0.2): 0.5}, "C1")
    assert (c1["verdict"], c1["n_tests"]) == ("partly tested", 2) and "Not tested: fgsm, ifgsm (" in c1["evidence"]
    # a contradiction or a mixed count in the tested part stands
    c1 = c({**clean, ("baseline", "fgsm", None, 0.2): 1.1, ("baseline", "ifgsm", None, 0.2): 1.0}, "C1")
    assert (c1["verdict"], c1["n_support"], c1["n_against"]) == ("contradicted", 0, 1) and "Not tested: tifgsm" in c1["evidence"]
    c1 = c({**clean, ("baseline", "fgsm", None, 0.2): 0.5, ("baseline", "ifgsm", None, 0.2): 1.0}, "C1")
    assert (c1["verdict"], c1["n_support"]) == ("mixed", 1)
    # C4: the distilled model alone, 12/12 below clean (0.8·BASE + NOISE − BASE < −0.11): partly tested
    dist = {**two, ("distilled", "clean", None, 0.0): 0.98, ("distilled", "fgsm", None, 0.2): 0.8}
    c4 = c(dist, "C4")
    assert (c4["verdict"], c4["n_tests"], c4["n_support"]) == ("partly tested", 1, 1)
    assert "Not tested: advtrain (no attacked condition; the claim is about distilled and advtrain)." in c4["evidence"]
    # both defenses (advtrain 12/12 below clean too): holds
    c4 = c({**dist, ("advtrain", "clean", None, 0.0): 0.95, ("advtrain", "fgsm", None, 0.2): 0.75}, "C4")
    assert (c4["verdict"], c4["n_tests"], c4["n_support"]) == ("holds", 2, 2) and "Not tested" not in c4["evidence"]


def _cmp_row(family: str, a: tuple, b: tuple, p_holm: float, effect: float, means: tuple[float, float]) -> dict:
    """One hand-made row of a comparison table: ``a``/``b`` = (model, attack, target_policy, eps)."""
    row = {"family": family, "region": "WT", "p_holm": p_holm, "effect_size": effect, "mean_a": means[0], "mean_b": means[1]}
    for s, (m, att, pol, eps) in (("a", a), ("b", b)):
        row.update({f"model_{s}": m, f"attack_{s}": att, f"target_policy_{s}": pol, f"eps_{s}": eps})
    return row


def test_claims_leave_out_diagnostic_attacks_in_c1_c3_c4() -> None:
    """A comparison table computed with diagnostics (transfer and logit-rescaled attacks) must not count them: in this
    hand-made table every diagnostic row is significant against its claim (or not significant), every paper-attack
    row supports it. Expected, counting paper attacks only: C1 holds 3/3, C3 holds 1/1, C4 holds 2/2 (counting the
    diagnostics: C1 mixed 3/5, C3 mixed 1/2, C4 mixed 2/4)."""
    clean, cl_d, cl_a = ("baseline", "clean", None, 0.0), ("distilled", "clean", None, 0.0), ("advtrain", "clean", None, 0.0)
    sup, ag, ns = (0.001, +1.0), (0.001, -1.0), (0.4, 0.2)  # (p_holm, effect): significant a > b, a < b, neither
    rows = [
        _cmp_row("attack_effect", clean, ("baseline", "fgsm", None, 0.2), *sup, (0.8, 0.4)),
        _cmp_row("attack_effect", clean, ("baseline", "ifgsm", None, 0.2), *sup, (0.8, 0.2)),
        _cmp_row("attack_effect", clean, ("baseline", "tifgsm", "erase", 0.2), *sup, (0.8, 0.1)),
        _cmp_row("attack_effect", clean, ("baseline", "transfer_fgsm", None, 0.4), *ag, (0.8, 0.9)),
        _cmp_row("attack_effect", clean, ("baseline", "ifgsm_logit_rescaled", None, 0.4), *ns, (0.8, 0.79)),
        _cmp_row("distill_vs_advtrain", cl_d, cl_a, *sup, (0.8, 0.7)),  # clean: not a condition under attack
        _cmp_row("distill_vs_advtrain", ("distilled", "fgsm", None, 0.2), ("advtrain", "fgsm", None, 0.2), *sup, (0.6, 0.5)),
        _cmp_row("distill_vs_advtrain", ("distilled", "transfer_fgsm", None, 0.2), ("advtrain", "transfer_fgsm", None, 0.2),
                 *ag, (0.5, 0.6)),
        _cmp_row("defense_vs_clean", ("distilled", "fgsm", None, 0.2), clean, ag[0], -1.0, (0.6, 0.8)),
        _cmp_row("defense_vs_clean", ("advtrain", "fgsm", None, 0.2), clean, ag[0], -1.0, (0.5, 0.8)),
        _cmp_row("defense_vs_clean", ("advtrain", "transfer_ifgsm", None, 0.2), clean, *sup, (0.85, 0.8)),
        _cmp_row("defense_vs_clean", ("distilled", "fgsm_logit_rescaled", None, 0.2), clean, *ns, (0.81, 0.8)),
    ]
    cmp = pd.DataFrame(rows)
    table = make_table(FULL, regions=("WT",))  # C2 only
    cl = S.claims(table, cmp, n_resamples=50).set_index("claim")
    got = {k: (cl.loc[k, "verdict"], cl.loc[k, "n_tests"], cl.loc[k, "n_support"], cl.loc[k, "n_against"]) for k in ("C1", "C3", "C4")}
    assert got == {"C1": ("holds", 3, 3, 0), "C3": ("holds", 1, 1, 0), "C4": ("holds", 2, 2, 0)}
    for k in ("C1", "C3", "C4"):
        assert "transfer" not in cl.loc[k, "evidence"] and "logit" not in cl.loc[k, "evidence"]
    # a defense tested under diagnostic attacks only has no test: C4 is partly tested
    no_dist = cmp.drop(index=8)
    c4 = S.claims(table, no_dist, n_resamples=50).set_index("claim").loc["C4"]
    assert (c4["verdict"], c4["n_tests"]) == ("partly tested", 1) and "Not tested: distilled" in c4["evidence"]
    # through compare(): FULL's baseline transfer_fgsm raises Dice significantly; with the diagnostics in the table
    # the counts are those without them
    t = make_table(FULL)
    cols = ["claim", "verdict", "n_tests", "n_support", "n_against"]
    with_diag = S.claims(t, S.compare(t, include_diagnostics=True), n_resamples=50)[cols]
    pd.testing.assert_frame_equal(with_diag, S.claims(t, S.compare(t), n_resamples=50)[cols])
    assert with_diag.set_index("claim").loc["C1", "n_tests"] == 4


def test_claims_refuse_a_lower_is_better_metric() -> None:
    """HD95 is a distance (lower is better): judging it with Dice's directions would reverse every verdict, so
    claims and claims_by_region refuse it, naming ``metric``."""
    t = make_table(FULL, regions=("WT",))
    with pytest.raises(ValueError, match=r"^metric: 'hd95' is a distance where lower is better.*higher is better"):
        S.claims(t, n_resamples=50, metric="hd95")
    with pytest.raises(ValueError, match=r"^metric: 'hd95'"):
        S.claims_by_region(t, n_resamples=50, metric="hd95")
    with pytest.raises(ValueError, match="^metric: 'HD95' is a distance where lower is better"):
        S.check_claim_metric("HD95")
    with pytest.raises(ValueError, match="^metric: expected the name"):
        S.check_claim_metric(3)
    assert S.check_claim_metric("dice") == "dice" and S.check_claim_metric("dice_direct") == "dice_direct"
    assert S.claims(t, n_resamples=50, metric="dice").set_index("claim").loc["C1", "verdict"] == "holds"


def test_claim_rules_documented() -> None:
    for word in ("holds", "partly tested", "contradicted", "not supported", "mixed", "not tested", "relative",
                 "rank-biserial", "distilled_T1", "Diagnostic attacks", "higher is better"):
        assert word in S.CLAIM_RULES_MD or word.replace("distilled_T1", "T = 1") in S.CLAIM_RULES_MD
        assert word in S.claims.__doc__
    assert "does not hold" not in S.CLAIM_RULES_MD and "does not hold" not in S.claims.__doc__


# ----------------------------------------------------------------------------- viz smoke
def test_viz_stats_smoke() -> None:
    t = make_table(FULL)
    fig = V.plot_robustness_curves(t, region="WT", n_boot=50)
    axes = fig.get_axes()
    assert len(axes) == 4  # fgsm, ifgsm, tifgsm[erase], tifgsm[et_to_ncr]
    assert all(ax.lines for ax in axes)
    assert {ax.get_title() for ax in axes} == {"fgsm", "ifgsm", "tifgsm[erase]", "tifgsm[et_to_ncr]"}
    fig = V.plot_paired(t, {"model": "baseline", "attack": "clean"}, {"model": "baseline", "attack": "ifgsm"}, "WT")
    ax = fig.get_axes()[0]
    assert len(ax.lines) >= N_CASES and "Wilcoxon raw p=" in ax.get_title()  # not Holm: say so
    with pytest.raises(ValueError, match="a"):
        V.plot_paired(t, {"model": "baseline"}, {"model": "baseline", "attack": "ifgsm"}, "WT")
    fig = V.plot_claims(S.claims(t, n_resamples=100))
    assert fig.get_axes()[0].tables
    fig.canvas.draw()


def test_robustness_curves_draw_sparse_models_as_points() -> None:
    import matplotlib.colors as mcolors

    conds = {
        ("baseline", "clean", None, 0.0): 1.0,
        ("baseline", "fgsm", None, 0.1): 0.9,
        ("baseline", "fgsm", None, 0.2): 0.8,
        ("baseline", "fgsm", None, 0.4): 0.6,
        ("distilled_T5", "clean", None, 0.0): 1.0,
        ("distilled_T5", "fgsm", None, 0.4): 0.7,  # measured at the largest eps only
    }
    fig = V.plot_robustness_curves(make_table(conds), region="WT", n_boot=50)
    ax = fig.get_axes()[0]
    colours = dict(zip(["baseline", "distilled_T5"], sns.color_palette(n_colors=2)))

    def drawn(model: str) -> list:
        return [ln for ln in ax.lines if len(ln.get_xdata()) and mcolors.same_color(ln.get_color(), colours[model])]

    base_lines = [ln for ln in drawn("baseline") if len(ln.get_xdata()) == 4]
    assert base_lines and all(ln.get_linestyle() == "-" for ln in base_lines)  # a measured curve: a line
    sparse = [ln for ln in drawn("distilled_T5") if len(ln.get_xdata()) == 2]
    assert sparse and all(ln.get_linestyle() in ("None", "") for ln in sparse)  # two budgets: points, no line
    np.testing.assert_allclose(sorted(sparse[0].get_xdata()), [0.0, 0.4])


# ----------------------------------------------------------------------------- report
def _write_report(tmp_path, **kw):
    import json

    from robustseg_lib import report as R
    from robustseg_lib.artefacts import RunPaths

    run = RunPaths(tmp_path / "run")
    run.root.mkdir(exist_ok=True)
    run.manifest.write_text(json.dumps({"profile": "test", "stages": {
        "07_adversarial_training": {"status": "done", "seconds": 12.0},
        "08_statistics": {"status": "running"},
    }}))  # fmt: skip
    t = make_table(FULL)
    s = S.summary_table(t, n_resamples=50)
    c = S.compare(t)
    cl = S.claims(t, c, n_resamples=100)
    path = R.write_report(run, summary=s, comparisons=c, claims=cl, region="WT", **kw)
    return run, path.read_text(), c


def _md_rows(text: str, header_start: str) -> tuple[list[str], list[list[str]]]:
    lines = text.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith(header_start))
    header = [h.strip() for h in lines[i].strip("|").split("|")]
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([v.strip() for v in ln.strip("|").split("|")])
    return header, rows


def test_claim_rules_state_the_alpha_they_were_applied_at(tmp_path) -> None:
    """The rules' significance threshold is the α of the call, in the text and in the report; a bad α is refused
    before the report folder is touched."""
    assert S.CLAIM_RULES_MD == S.claim_rules_md(0.05)
    assert "below α (0.05)." in S.CLAIM_RULES_MD
    strict = S.claim_rules_md(0.01)
    assert "below α (0.01)." in strict and "α (0.05)" not in strict and "<<" not in strict
    for bad in (0, 1, 1.5, float("nan"), True, "0.05"):
        with pytest.raises(ValueError, match="alpha"):
            S.claim_rules_md(bad)
    run, text, _ = _write_report(tmp_path, alpha=0.01)
    assert "below α (0.01)." in text and "below α (0.05)." not in text
    (tmp_path / "bad").mkdir()
    with pytest.raises(ValueError, match="alpha"):
        _write_report(tmp_path / "bad", alpha=2.0)
    assert not (tmp_path / "bad" / "run" / "report").exists()


def test_report_comparisons_table_and_rules(tmp_path) -> None:
    run, text, c = _write_report(tmp_path)
    assert "### Decision rules" in text and S.CLAIM_RULES_MD.splitlines()[0] in text
    assert "claims_comparisons.csv" not in text and not (run.report / "claims_comparisons.csv").exists()
    header, rows = _md_rows(text, "| family | model_a | attack_a")
    assert {"n_nonzero", "pvalue", "p_holm", "hl_estimate [CI]"} <= set(header)
    col = {h: k for k, h in enumerate(header)}
    wt = c[c.region == "WT"]
    assert len(rows) == len(wt)
    # the HL estimate is printed with its interval, row by row in the table's order
    assert [r[col["hl_estimate [CI]"]] for r in rows] == [
        f"{e:.3f} [{lo:.3f}, {hi:.3f}]" for e, lo, hi in zip(wt.hl_estimate, wt.hl_ci_lo, wt.hl_ci_hi)
    ]
    # the two ti-FGSM target policies are told apart
    ae = [r for r in rows if r[col["family"]] == "attack_effect" and r[col["model_a"]] == "baseline"]
    assert {r[col["attack_b"]] for r in ae} >= {"tifgsm[erase]", "tifgsm[et_to_ncr]"}
    keys = [tuple(r[col[h]] for h in ("family", "model_a", "attack_a", "eps_a", "model_b", "attack_b", "eps_b")) for r in rows]
    assert len(set(keys)) == len(keys)
    # p-values in 2 significant digits: 12/12 differences of one sign -> exact p = 2/2¹² = 0.00049
    r = next(r for r in ae if r[col["attack_b"]] == "ifgsm")
    assert r[col["pvalue"]] == format(2 / 2**12, ".2g") == "0.00049"
    assert r[col["n_nonzero"]] == "12"
    assert not any(r[col["pvalue"]] == "0.000" for r in rows)
    # the stage that writes the report
    _, st = _md_rows(text, "| stage | status")
    assert dict((a, b) for a, b, _ in st) == {"07_adversarial_training": "done", "08_statistics": "running (this report)"}


def test_report_summary_names_the_source_model_of_transfer_attacks(tmp_path) -> None:
    """Two transfer attacks that differ only in their source model are two rows that say which is which."""
    from robustseg_lib import report as R
    from robustseg_lib.artefacts import RunPaths

    t = make_table({("distilled", "clean", None, 0.0): 0.98, ("distilled", "transfer_fgsm", None, 0.2): 0.7})
    t["source_model"] = np.where(t.attack == "clean", None, "baseline")
    other = t[t.attack != "clean"].assign(source_model="advtrain", dice=lambda d: d.dice - 0.1)
    t = pd.concat([t, other], ignore_index=True)
    run = RunPaths(tmp_path / "run")
    run.root.mkdir()
    s = S.summary_table(t, n_resamples=50)
    text = R.write_report(run, summary=s, comparisons=S.compare(t), claims=S.claims(t, S.compare(t), n_resamples=50),
                          region="WT").read_text()
    header, rows = _md_rows(text, "| model | attack")
    assert header[:5] == ["model", "attack", "target_policy", "source_model", "eps"]
    transfer = {r[3]: r[-1] for r in rows if r[1] == "transfer_fgsm"}
    wt = s[(s.region == "WT") & (s.attack == "transfer_fgsm")].set_index("source_model")["mean_dice"]
    assert set(transfer) == {"baseline", "advtrain"}
    assert [transfer[m].split()[0] for m in ("baseline", "advtrain")] == [f"{wt[m]:.3f}" for m in ("baseline", "advtrain")]


def test_report_names_the_claims_comparisons(tmp_path) -> None:
    t = make_table(FULL)
    paper = t[~((t.attack == "tifgsm") & (t.target_policy == "et_to_ncr"))]
    cc = S.compare(paper)
    run, text, _ = _write_report(tmp_path, claims_comparisons=cc)
    assert (run.report / "claims_comparisons.csv").is_file()
    written = pd.read_csv(run.report / "claims_comparisons.csv")
    assert len(written) == len(cc) and np.allclose(written["p_holm"], cc["p_holm"])
    i_claims, i_rules = text.index("## Claims"), text.index("### Decision rules")
    note = text[i_claims:i_rules]
    assert "paper's attacks only" in note and "Holm" in note and "claims_comparisons.csv" in note
    with pytest.raises(ValueError, match="claims_comparisons"):
        _write_report(tmp_path, claims_comparisons="nope")


def test_drop_vs_perceptibility_by_hand() -> None:
    rows = []
    for cid, clean, fg, te, tn in [("a", 0.8, 0.4, 0.2, 0.9), ("b", 0.6, 0.3, 0.0, 0.7), ("c", 0.5, 0.5, 0.5, 0.5)]:
        rows += [
            {"case_id": cid, "model": "baseline", "attack": "clean", "eps": 0.0, "region": "WT", "dice": clean, "target_policy": None},
            {"case_id": cid, "model": "baseline", "attack": "fgsm", "eps": 0.5, "region": "WT", "dice": fg, "target_policy": None},
            {"case_id": cid, "model": "baseline", "attack": "tifgsm", "eps": 0.5, "region": "WT", "dice": te, "target_policy": "erase"},
            {"case_id": cid, "model": "baseline", "attack": "tifgsm", "eps": 0.5, "region": "WT", "dice": tn, "target_policy": "et_to_ncr"},
            {"case_id": cid, "model": "advtrain", "attack": "fgsm", "eps": 0.5, "region": "WT", "dice": 0.0, "target_policy": None},
            {"case_id": cid, "model": "baseline", "attack": "transfer_fgsm", "eps": 0.5, "region": "WT", "dice": 0.0, "target_policy": None},
        ]
    table = pd.DataFrame(rows)
    table = table[~((table.case_id == "c") & (table.attack == "fgsm"))]  # fgsm measured on cases a and b only
    percept = pd.DataFrame([
        {"model": "baseline", "attack": "fgsm", "eps": 0.5, "target_policy": None, "linf": 0.5, "psnr": p, "ssim": 0.9}
        for p in (30.0, 20.0)
    ] + [
        {"model": "baseline", "attack": "tifgsm", "eps": 0.5, "target_policy": pol, "linf": 0.5, "psnr": p, "ssim": 0.8}
        for pol, p in (("erase", 24.0), ("erase", float("inf")), ("et_to_ncr", 40.0))
    ] + [{"model": "advtrain", "attack": "fgsm", "eps": 0.5, "target_policy": None, "linf": 0.5, "psnr": 1.0, "ssim": 0.0}])
    d = S.drop_vs_perceptibility(table, percept).set_index(["attack", "target_policy"], drop=False)
    assert len(d) == 3  # the diagnostic transfer attack and the other model are left out
    fg = d.loc[("fgsm", None)] if ("fgsm", None) in d.index else d[d.attack == "fgsm"].iloc[0]
    # by hand: cases a, b: clean mean 0.7, attacked 0.35 -> 50 %; PSNR (30 + 20)/2
    assert fg["n"] == 2 and fg["rel_drop"] == pytest.approx(0.5) and fg["psnr"] == pytest.approx(25.0)
    er = d[(d.attack == "tifgsm") & (d.target_policy == "erase")].iloc[0]
    # clean mean 1.9/3, attacked 0.7/3 -> 1 - 0.7/1.9; the infinite PSNR (no change) is left out of the mean
    assert er["n"] == 3 and er["rel_drop"] == pytest.approx(1 - 0.7 / 1.9) and er["psnr"] == pytest.approx(24.0)
    nc = d[(d.attack == "tifgsm") & (d.target_policy == "et_to_ncr")].iloc[0]
    assert nc["rel_drop"] == pytest.approx(1 - 2.1 / 1.9) and nc["psnr"] == pytest.approx(40.0)  # a negative drop: Dice rose
    assert list(S.drop_vs_perceptibility(table).columns) == ["attack", "target_policy", "eps", "n", "mean_clean", "mean_attacked", "rel_drop"]
    with pytest.raises(ValueError, match="no rows for model 'nobody'"):
        S.drop_vs_perceptibility(table, model="nobody")


def test_report_shows_drops_beside_perceptibility(tmp_path) -> None:
    drops = pd.DataFrame({"attack": ["fgsm", "tifgsm"], "target_policy": [None, "erase"], "eps": [0.3, 0.3], "n": [14, 14],
                          "mean_clean": [0.8, 0.8], "mean_attacked": [0.6, 0.2], "rel_drop": [0.25, 0.75],
                          "linf": [0.3, 0.3], "psnr": [28.04, 29.0], "ssim": [0.9, 0.92]})
    run, text, _ = _write_report(tmp_path, drops=drops)
    assert (run.report / "drops.csv").is_file()
    header, rows = _md_rows(text, "| attack | eps | n |")
    by_attack = {r[0]: dict(zip(header, r)) for r in rows}
    assert by_attack["tifgsm[erase]"]["rel_drop"] == "75.0 %" and by_attack["fgsm"]["rel_drop"] == "25.0 %"
    assert text.index("### C2 in context") > text.index("### Decision rules")
    (tmp_path / "b").mkdir()
    _, text_without, _ = _write_report(tmp_path / "b", drops=None)
    assert "C2 in context" not in text_without
    with pytest.raises(ValueError, match="drops"):
        _write_report(tmp_path, drops="nope")


def test_report_counts_cases_with_an_empty_truth_region(tmp_path) -> None:
    from robustseg_lib import report as R
    from robustseg_lib.artefacts import RunPaths

    run = RunPaths(tmp_path / "run")
    run.tables.mkdir(parents=True, exist_ok=True)
    # five cases prepared; c3 and c4 were never evaluated (train split): only c0-c2 count
    pd.DataFrame({"case_id": [f"c{i}" for i in range(5)], "WT": [10, 8, 5, 0, 0], "TC": [4, 0, 2, 0, 0],
                  "ET": [0, 0, 1, 0, 0], "unit": "voxels"}).to_csv(run.tables / "data_region_volumes.csv", index=False)
    pd.DataFrame({"case_id": ["c0", "c1", "c2"], "dice": [0.5, 0.6, 0.7]}).to_csv(run.tables / "results_02_unet.csv", index=False)
    note = R.empty_truth_note(run)
    assert "(of 3): WT 0, TC 1, ET 2" in note
    assert R.empty_truth_note(RunPaths(tmp_path / "empty")) == ""
    # every evaluated case has every region (by hand: c0 10/4/1, c2 5/2/1): no all-or-nothing score, no sentence
    pd.DataFrame({"case_id": ["c0", "c2"], "dice": [0.5, 0.7]}).to_csv(run.tables / "results_02_unet.csv", index=False)
    pd.DataFrame({"case_id": ["c0", "c2"], "WT": [10, 5], "TC": [4, 2], "ET": [1, 1], "unit": "voxels"}).to_csv(
        run.tables / "data_region_volumes.csv", index=False)
    assert R.empty_truth_note(run) == ""


def _et_driven_by_empty_truth() -> tuple[pd.DataFrame, list[str]]:
    """FULL, except that in ET six cases have no truth (clean Dice 1, every attack 0: one false-positive voxel)
    and the other six move by ±0.01/0.02 alternating under every attack (not significant)."""
    t = make_table(FULL)
    empty = [f"c{i:02d}" for i in range(6)]
    et, is_empty = t.region == "ET", t.case_id.isin(empty)
    t.loc[et & is_empty, "dice"] = np.where(t.loc[et & is_empty, "attack"] == "clean", 1.0, 0.0)
    rest = et & ~is_empty & (t.attack != "clean")
    clean = t[et & (t.attack == "clean")].set_index(["model", "case_id"])["dice"]
    idx = t.loc[rest, "case_id"].str[1:].astype(int).to_numpy()
    t.loc[rest, "dice"] = clean.loc[list(zip(t.loc[rest, "model"], t.loc[rest, "case_id"]))].to_numpy() - np.where(idx % 2, -0.01, 0.02)
    return t, empty


def test_empty_truth_cases_by_hand() -> None:
    v = pd.DataFrame({"case_id": ["a", "b", "c"], "WT": [5, 3, 0], "TC": [0, 3, 0], "ET": [0, 0, 0], "unit": "voxels"})
    assert S.empty_truth_cases(v) == {"WT": ["c"], "TC": ["a", "c"], "ET": ["a", "b", "c"]}
    assert S.empty_truth_cases(v, regions=("ET", "NCR")) == {"ET": ["a", "b", "c"]}
    with pytest.raises(ValueError, match="volumes"):
        S.empty_truth_cases(pd.DataFrame({"WT": [1]}))


def test_claims_by_region_rejudges_every_region_and_without_empty_truth_cases() -> None:
    t, empty = _et_driven_by_empty_truth()
    out = S.claims_by_region(t, empty_truth={"ET": empty + ["not_evaluated"], "WT": []}, n_resamples=300)
    assert list(out.columns) == S.SENSITIVITY_COLUMNS + S.CLAIM_COLUMNS
    excl = "ET, 6 empty-truth cases excluded"
    assert list(pd.unique(out.analysis)) == ["WT", "TC", "ET", excl]  # WT's empty list: no second analysis
    v = {a: dict(zip(g.claim, g.verdict)) for a, g in out.groupby("analysis")}
    # every all-case row is claims() on that region
    for r in ("WT", "TC", "ET"):
        ref = S.claims(t, region=r, n_resamples=300)
        assert v[r] == dict(zip(ref.claim, ref.verdict))
    # on ET, C1 "holds" only through the six empty-truth cases (each 1 → 0): without them no attack is significant
    # (oracle: scipy on the six remaining pairs, whose differences are mixed in sign)
    assert v["ET"]["C1"] == "holds" and v[excl]["C1"] == "not supported"
    ex = out[out.analysis == excl]
    assert (ex.n_cases == 6).all() and (ex.n_excluded == 6).all() and (out[out.analysis == "ET"].n_excluded == 0).all()
    et = t[(t.region == "ET") & ~t.case_id.isin(empty) & (t.model == "baseline")]
    a = et[et.attack == "clean"].set_index("case_id").dice
    b = et[(et.attack == "ifgsm")].set_index("case_id").dice
    assert sst.wilcoxon(a, b.loc[a.index]).pvalue > 0.05
    # ids are matched as strings; a list that matches nothing warns (ids read as numbers?) instead of doing nothing
    with pytest.warns(UserWarning, match="none of the 2 case ids listed for region 'ET'"):
        quiet = S.claims_by_region(t, empty_truth={"ET": [0, 1]}, regions=["ET"], n_resamples=50)
    assert list(pd.unique(quiet.analysis)) == ["ET"]
    # every case without the region: the analysis is there, "not tested"
    all_out = S.claims_by_region(t, empty_truth={"ET": sorted(t.case_id.unique())}, regions=["ET"], n_resamples=50)
    last = all_out[all_out.analysis == "ET, 12 empty-truth cases excluded"]
    assert list(last.verdict) == ["not tested"] * 4 and (last.n_cases == 0).all()
    with pytest.raises(ValueError, match="regions"):
        S.claims_by_region(t, regions=["NCR"])
    with pytest.raises(ValueError, match="empty_truth"):
        S.claims_by_region(t, empty_truth=["c00"])


def test_report_shows_the_verdicts_by_region(tmp_path) -> None:
    t, empty = _et_driven_by_empty_truth()
    sens = S.claims_by_region(t, empty_truth={"ET": empty}, n_resamples=100)
    run, text, _ = _write_report(tmp_path, claims_by_region=sens)
    assert (run.report / "claims_by_region.csv").is_file()
    header, rows = _md_rows(text, "| analysis | cases |")
    assert header == ["analysis", "cases", "C1", "C2", "C3", "C4"]
    by = {r[0]: dict(zip(header, r)) for r in rows}
    assert by["ET"]["C1"] == "holds (4/4)" and by["ET, 6 empty-truth cases excluded"]["C1"] == "not supported (0/4)"
    assert by["ET, 6 empty-truth cases excluded"]["cases"] == "6"
    c2 = sens[(sens.analysis == "WT") & (sens.claim == "C2")].iloc[0]
    assert by["WT"]["C2"] == f"{c2.verdict} ({100 * c2.rel_drop:.0f} %)"
    assert text.index("### Decision rules") < text.index("### Sensitivity")
    (tmp_path / "b").mkdir()
    assert "### Sensitivity" not in _write_report(tmp_path / "b")[1]
    with pytest.raises(ValueError, match="claims_by_region"):
        _write_report(tmp_path, claims_by_region="nope")


def test_teaching_example_uses_the_exact_test_on_the_non_zero_pairs() -> None:
    from robustseg_lib import report as R

    n = 16  # > 13 pairs: where scipy, given the zeros too, switches to its normal approximation (p 0.083 here)
    clean = np.linspace(0.6, 0.9, n)
    att = clean.copy()
    att[:3] -= 0.1  # 3 cases lose Dice, the other 13 are unchanged (zero differences)
    t = pd.DataFrame([{"case_id": f"c{i:02d}", "model": "baseline", "attack": atk, "eps": eps, "steps": 0, "region": "WT",
                       "dice": float(v[i]), "hd95": 1.0, "target_policy": None}
                      for atk, eps, v in (("clean", 0.0, clean), ("ifgsm", 0.3, att)) for i in range(n)])
    assert sst.wilcoxon(clean, att, zero_method="wilcox").pvalue != pytest.approx(0.25)  # what the old call gave
    text = R.teaching_example(t, S.compare(t))
    # hand value: 3 non-zero differences of one sign, exact two-sided p = 2 / 2**3; scipy agrees on them alone
    assert sst.wilcoxon(clean[:3] - att[:3]).pvalue == pytest.approx(0.25)
    assert "paired Wilcoxon p = 0.25." in text
    mw = sst.mannwhitneyu(clean, att, alternative="two-sided").pvalue
    assert f"Unpaired Mann–Whitney p = {mw:.2g};" in text


# ----------------------------------------------------------------------------- found by mutation testing (session 12)
def _d_p0342() -> np.ndarray:
    """11 small positive differences and one large negative: exact two-sided p = 0.0342 (scipy, below)."""
    return np.r_[0.01 + 0.001 * np.arange(11), -0.5]


def test_compare_significant_is_after_holm() -> None:
    """Two attacks each with raw p = 0.0342 < 0.05 (oracle: scipy's exact test); Holm over the pair (hand:
    min(1, 2·p) for both) is 0.068, so neither is significant: `significant` must follow p_holm, not p."""
    d = _d_p0342()
    p = sst.wilcoxon(d, method="exact").pvalue
    assert p == pytest.approx(0.0341796875)
    conds = {
        ("baseline", "clean", None, 0.0): BASE,
        ("baseline", "fgsm", None, 0.2): BASE - d,
        ("baseline", "ifgsm", None, 0.2): BASE - 1.1 * d,  # same signed ranks, same p
    }
    c = S.compare(make_table(conds, regions=("WT",)), method="exact")
    assert len(c) == 2
    assert (c["pvalue"] < 0.05).all()
    np.testing.assert_allclose(c["p_holm"], [2 * p, 2 * p])
    assert not c["significant"].any()


def test_eps_zero_rows_of_an_attack_sweep_are_not_attacked_conditions() -> None:
    """A sweep's eps grid starts at 0 (profiles: [0.0, 0.1, ...]), so the table holds fgsm@0 rows equal to clean.
    They are neither the clean condition nor attacked: attack_effect has one test (Holm over m = 1, so
    p_holm = p, scipy's exact p = 2/2¹²) and C2 counts one condition."""
    conds = {
        ("baseline", "clean", None, 0.0): BASE,
        ("baseline", "fgsm", None, 0.0): BASE,  # eps 0: the clean input
        ("baseline", "fgsm", None, 0.2): BASE * 0.5,
    }
    t = make_table(conds, regions=("WT",))
    c = S.compare(t, method="exact")
    ae = c[c.family == "attack_effect"]
    assert list(ae["eps_b"]) == [0.2]
    assert ae["p_holm"].iloc[0] == pytest.approx(sst.wilcoxon(BASE - BASE * 0.5, method="exact").pvalue)
    assert ae["p_holm"].iloc[0] == pytest.approx(2 / 2**12)
    c2 = S.claims(t, c, n_resamples=200).set_index("claim").loc["C2"]
    assert c2["n_tests"] == 1 and c2["rel_drop"] == pytest.approx(0.5)


def test_claim_c1_takes_each_attack_at_its_largest_eps() -> None:
    """C1 judges fgsm at its largest eps only. Hand-made: one eps with no effect at all (p = 1), the other with
    12/12 cases lower (exact p = 2/2¹², Holm ×2 still < 0.05); the verdict follows the largest eps either way
    (supported: "partly tested", since fgsm is the only one of the three attacks run)."""
    for small, large, want in ((1.0, 0.5, "partly tested"), (0.5, 1.0, "not supported")):
        conds = {
            ("baseline", "clean", None, 0.0): 1.0,
            ("baseline", "fgsm", None, 0.1): small,
            ("baseline", "fgsm", None, 0.3): large,
        }
        c1 = S.claims(make_table(conds, regions=("WT",)), n_resamples=50, method="exact").set_index("claim").loc["C1"]
        assert c1["verdict"] == want and c1["n_tests"] == 1
        assert "fgsm@0.3" in c1["evidence"]


def test_claim_c1_judges_the_baseline_only() -> None:
    """C1 is about the undefended model: a distilled model attacked at a larger eps, with a significant drop, must
    not stand in for the baseline's fgsm (no effect at all: p = 1, so 'not supported')."""
    conds = {
        ("baseline", "clean", None, 0.0): 1.0,
        ("baseline", "fgsm", None, 0.2): 1.0,
        ("distilled", "clean", None, 0.0): 1.0,
        ("distilled", "fgsm", None, 0.4): 0.5,
    }
    c1 = S.claims(make_table(conds, regions=("WT",)), n_resamples=50, method="exact").set_index("claim").loc["C1"]
    assert c1["verdict"] == "not supported"
    assert (c1["n_tests"], c1["n_support"], c1["n_against"]) == (1, 0, 0)


def _c2_with_oracle(att: np.ndarray, seed: int) -> tuple[pd.Series, float, float]:
    """C2 of a table with one attacked condition ``att`` (clean = BASE), and the 95 % percentile interval of its
    relative drop from a plain resampling loop over cases (20 000 resamples)."""
    idx = np.random.default_rng(seed).integers(0, N_CASES, (20000, N_CASES))
    lo_ref, hi_ref = np.percentile(1 - att[idx].mean(1) / BASE[idx].mean(1), [2.5, 97.5])
    conds = {("baseline", "clean", None, 0.0): BASE, ("baseline", "fgsm", None, 0.2): att}
    c2 = S.claims(make_table(conds, regions=("WT",)), n_resamples=4000).set_index("claim").loc["C2"]
    assert c2["rel_drop"] == pytest.approx(1 - att.mean() / BASE.mean())
    assert c2["rel_drop_ci_lo"] == pytest.approx(lo_ref, abs=0.02)
    assert c2["rel_drop_ci_hi"] == pytest.approx(hi_ref, abs=0.02)
    return c2, lo_ref, hi_ref


def _spread(lo: float, hi: float) -> np.ndarray:
    """Per-case ratios attacked/clean spread evenly over [lo, hi], interleaved over the cases."""
    r = np.linspace(lo, hi, N_CASES)
    return np.r_[r[::2], r[1::2]]


def test_claim_c2_holds_only_when_the_whole_interval_reaches_the_paper() -> None:
    """C2 needs evidence beyond sampling error either way, like the count-based claims: holds when the 95 % CI lower
    bound reaches 65 %, contradicted when the upper bound is below it, not supported when the interval contains it.
    Hand-made per-case ratios with a wide interval; oracle: a plain resampling loop."""
    # a point estimate below 65 % whose interval reaches above it (the old rule, CI upper bound >= 65 %: "holds")
    c2, lo_ref, hi_ref = _c2_with_oracle(BASE * _spread(0.0, 0.8), seed=11)
    assert c2["rel_drop"] < 0.62 and lo_ref < 0.55 and hi_ref > 0.7  # well on either side of 65 %
    assert c2["verdict"] == "not supported" and c2["n_support"] == 0 and c2["n_against"] == 0
    assert "no attack reaches 65 % at any eps" in c2["evidence"]
    # a point estimate above 65 % whose interval reaches below it (as ET in teaching seed 4: 70 %, CI 60-100 %)
    c2, lo_ref, hi_ref = _c2_with_oracle(BASE * _spread(0.0, 0.6), seed=12)
    assert c2["rel_drop"] > 0.68 and lo_ref < 0.62 and hi_ref > 0.75
    assert c2["verdict"] == "not supported" and c2["n_support"] == 1
    # the whole interval clearly above 65 %: holds
    c2, lo_ref, hi_ref = _c2_with_oracle(BASE * _spread(0.05, 0.25), seed=13)
    assert lo_ref > 0.8
    assert c2["verdict"] == "holds" and c2["n_support"] == 1
    # the whole interval clearly below 65 %: contradicted
    c2, lo_ref, hi_ref = _c2_with_oracle(BASE * _spread(0.45, 0.75), seed=14)
    assert hi_ref < 0.5
    assert c2["verdict"] == "contradicted" and (c2["n_support"], c2["n_against"]) == (0, 0)
    assert "no attack reaches 65 % at any eps" in c2["evidence"]


@pytest.mark.parametrize(
    ("ci", "want"),
    [
        ((0.70, 0.65, 0.90), "holds"),  # lower bound exactly at the paper's drop: reaches it
        ((0.70, 0.6499, 0.90), "not supported"),
        ((0.60, 0.50, 0.65), "not supported"),  # upper bound exactly at it: not below
        ((0.60, 0.50, 0.6499), "contradicted"),
        ((0.65, 0.65, 0.65), "holds"),
    ],
)
def test_claim_c2_verdict_at_the_interval_bounds(monkeypatch, ci: tuple[float, float, float], want: str) -> None:
    """The rule's edges, with the bootstrap replaced by a fixed (drop, lo, hi): holds iff lo >= 65 %, contradicted
    iff hi < 65 %, else not supported; the row carries the interval it was judged on."""
    monkeypatch.setattr(S, "bootstrap_max_relative_drop_ci", lambda *a, **k: ci)
    conds = {("baseline", "clean", None, 0.0): BASE, ("baseline", "fgsm", None, 0.2): BASE * 0.5}
    c2 = S.claims(make_table(conds, regions=("WT",)), n_resamples=10).set_index("claim").loc["C2"]
    assert c2["verdict"] == want
    assert (c2["rel_drop"], c2["rel_drop_ci_lo"], c2["rel_drop_ci_hi"]) == ci


def test_claim_c2_point_intervals_decide_by_the_drop_itself() -> None:
    """Exact multiples of clean give a point bootstrap distribution (lo = drop = hi): 66 % holds, 64 % is
    contradicted, from C2_MIN_CASES cases on; on fewer cases the same point interval decides nothing."""
    for mu, want in ((0.34, "holds"), (0.36, "contradicted")):
        for n in (N_CASES, S.C2_MIN_CASES, S.C2_MIN_CASES - 1, 1):
            conds = {("baseline", "clean", None, 0.0): BASE, ("baseline", "fgsm", None, 0.2): BASE * mu}
            t = make_table(conds, regions=("WT",))
            t = t[t["case_id"].isin([f"c{i:02d}" for i in range(n)])]
            c2 = S.claims(t, n_resamples=200).set_index("claim").loc["C2"]
            assert c2["rel_drop_ci_lo"] == pytest.approx(1 - mu) == c2["rel_drop_ci_hi"]
            few = n < S.C2_MIN_CASES
            assert c2["verdict"] == ("not supported" if few else want), (mu, n)
            assert (f"With {n} case" in c2["evidence"] and "(fewer than 6) the interval is no evidence" in c2["evidence"]) == few


def test_c2_min_cases_is_the_fewest_pairs_a_signed_rank_test_can_reject_on() -> None:
    """Oracle: scipy's exact two-sided signed-rank p of n differences all of one sign (the smallest p n pairs can give)
    first drops below 0.05, the level of C2's 95 % interval, at n = C2_MIN_CASES."""
    p = {n: sst.wilcoxon(np.arange(1.0, n + 1), method="exact").pvalue for n in range(1, 10)}
    assert min(n for n, v in p.items() if v < 0.05) == S.C2_MIN_CASES


def test_claim_c2_leaves_out_diagnostic_attacks() -> None:
    """Transfer and logit-rescaled attacks are diagnostics, not the paper's attacks: with exact multiples of clean
    (drop = 1 − mu, a point bootstrap distribution) C2 is fgsm's 50 % alone, although the diagnostics drop 90 %+."""
    conds = {
        ("baseline", "clean", None, 0.0): BASE,
        ("baseline", "fgsm", None, 0.2): BASE * 0.5,
        ("baseline", "transfer_fgsm", None, 0.2): BASE * 0.1,
        ("baseline", "ifgsm_logit_rescaled", None, 0.2): BASE * 0.05,
    }
    c2 = S.claims(make_table(conds, regions=("WT",)), n_resamples=200).set_index("claim").loc["C2"]
    assert (c2["rel_drop"], c2["rel_drop_ci_lo"], c2["rel_drop_ci_hi"]) == pytest.approx((0.5, 0.5, 0.5))
    assert c2["n_tests"] == 1 and c2["verdict"] == "contradicted"  # 50 %, a point interval below 65 %


@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_stratified_bootstrap_interval_level_against_a_resampling_loop(confidence: float) -> None:
    """The stratified interval's ends are the (1 ± confidence)/2 percentiles of the resampled maxima. Oracle: a
    plain loop drawing 6 cases with replacement within each of two strata of 6 (20 000 resamples)."""
    att = BASE * 0.5 + 5 * NOISE
    strata = ["a"] * 6 + ["b"] * 6
    rng = np.random.default_rng(1)
    idx = np.concatenate([rng.integers(0, 6, (20000, 6)), 6 + rng.integers(0, 6, (20000, 6))], axis=1)
    q = 100 * (1 - confidence) / 2
    lo_ref, hi_ref = np.percentile(1 - att[idx].mean(1) / BASE[idx].mean(1), [q, 100 - q])
    _, lo, hi = S.bootstrap_max_relative_drop_ci(BASE, [att], n_resamples=20000, seed=0, strata=strata,
                                                 confidence=confidence)  # fmt: skip
    tol = 0.05 * (hi_ref - lo_ref)  # Monte-Carlo error ≈ 0.5 % of the width; a wrong level moves the ends ≥ 7 %
    assert lo == pytest.approx(lo_ref, abs=tol) and hi == pytest.approx(hi_ref, abs=tol)


def test_c2_bootstrap_leaves_out_resamples_without_a_clean_mean() -> None:
    """Three of six cases score 0 clean (one of them above 0 under attack): 1 in 64 resamples draws only those, and
    has no relative drop (0/0, or −∞). Those resamples are left out of the percentiles; they used to turn the whole
    interval into NaN, which was then collapsed to the point estimate, so C2 was "contradicted" by a 50–50 % interval.
    Oracle: the exact bootstrap distribution, all 6⁶ equally likely ordered draws, those with a clean mean above 0."""
    import itertools

    clean = np.array([0.0, 0.0, 0.0, 0.8, 0.9, 0.7])
    att = np.array([0.0, 0.05, 0.0, 0.5, 0.6, 0.1])
    idx = np.array(list(itertools.product(range(6), repeat=6)))
    mc = clean[idx].mean(1)
    dist = 1 - att[idx].mean(1)[mc > 0] / mc[mc > 0]
    assert (mc == 0).sum() == 3**6  # the draws that the old code let spoil the interval
    lo_ref, hi_ref = np.percentile(dist, [2.5, 97.5])
    drop_ref = 1 - att.mean() / clean.mean()
    for strata in (None, ["x"] * 6):  # scipy's resampling and the hand-written one
        drop, lo, hi = S.bootstrap_max_relative_drop_ci(clean, [att], n_resamples=20000, seed=0, strata=strata)
        assert drop == pytest.approx(drop_ref)
        assert lo == pytest.approx(lo_ref, abs=0.03) and hi == pytest.approx(hi_ref, abs=0.03)
    assert S.bootstrap_relative_drop_ci(clean, att, n_resamples=20000)[1:] == pytest.approx((lo_ref, hi_ref), abs=0.03)
    assert lo_ref < 0.65 < hi_ref  # so C2 decides nothing on these cases
    conds = {("baseline", "clean", None, 0.0): np.r_[clean, BASE[6:]], ("baseline", "fgsm", None, 0.2): np.r_[att, BASE[6:]]}
    t = make_table(conds, regions=("WT",))
    c2 = S.claims(t[t["case_id"].isin([f"c{i:02d}" for i in range(6)])]).set_index("claim").loc["C2"]
    assert c2["rel_drop"] == pytest.approx(drop_ref) and c2["verdict"] == "not supported"
    assert c2["rel_drop_ci_lo"] == pytest.approx(lo_ref, abs=0.05) and c2["rel_drop_ci_hi"] == pytest.approx(hi_ref, abs=0.05)


def test_basic_bootstrap_interval_without_a_clean_mean_reflects_the_percentiles() -> None:
    """``method="basic"`` with resamples that have no relative drop: the interval of the others is the basic one,
    ``(2·drop − q_hi, 2·drop − q_lo)``, so lo ≤ hi (not the percentile ends reflected the wrong way round).
    Oracle: the exact bootstrap distribution, all 6⁶ equally likely ordered draws with a clean mean above 0."""
    import itertools

    clean = np.array([0.0, 0.0, 0.0, 0.8, 0.9, 0.7])
    att = np.array([0.0, 0.05, 0.0, 0.5, 0.6, 0.1])
    idx = np.array(list(itertools.product(range(6), repeat=6)))
    mc = clean[idx].mean(1)
    q_lo, q_hi = np.percentile(1 - att[idx].mean(1)[mc > 0] / mc[mc > 0], [2.5, 97.5])
    drop_ref = 1 - att.mean() / clean.mean()
    drop, lo, hi = S.bootstrap_relative_drop_ci(clean, att, n_resamples=20000, method="basic")
    assert drop == pytest.approx(drop_ref)
    assert lo < hi
    assert lo == pytest.approx(2 * drop_ref - q_hi, abs=0.03) and hi == pytest.approx(2 * drop_ref - q_lo, abs=0.03)


def test_bootstrap_mean_ci_uses_the_confidence() -> None:
    """An 80 % interval is the 10th/90th percentiles of resampled means (oracle: a plain resampling loop), narrower
    than the 95 % one; summary_table passes its confidence through."""
    x = BASE
    idx = np.random.default_rng(4).integers(0, N_CASES, (20000, N_CASES))
    lo_ref, hi_ref = np.percentile(x[idx].mean(1), [10, 90])
    _, lo, hi = S.bootstrap_mean_ci(x, confidence=0.8, n_resamples=20000)
    tol = 0.05 * (hi_ref - lo_ref)
    assert lo == pytest.approx(lo_ref, abs=tol) and hi == pytest.approx(hi_ref, abs=tol)
    _, lo95, hi95 = S.bootstrap_mean_ci(x, confidence=0.95, n_resamples=20000)
    assert lo95 < lo - tol and hi95 > hi + tol
    s = S.summary_table(make_table({("baseline", "clean", None, 0.0): BASE}, regions=("WT",)), confidence=0.8,
                        n_resamples=20000)  # fmt: skip
    assert s["ci_lo"].iloc[0] == pytest.approx(lo_ref, abs=tol) and s["ci_hi"].iloc[0] == pytest.approx(hi_ref, abs=tol)


def test_compare_drops_pairs_with_nan_on_either_side() -> None:
    """A NaN score (e.g. HD95 of an empty prediction) in the attacked condition drops that pair: the test is scipy's
    on the 11 complete pairs; likewise a NaN on the clean side."""
    att = BASE * 0.5 + NOISE
    for side in ("attacked", "clean"):
        a, b = BASE.copy(), att.copy()
        (b if side == "attacked" else a)[3] = np.nan
        conds = {("baseline", "clean", None, 0.0): a, ("baseline", "fgsm", None, 0.2): b}
        r = S.compare(make_table(conds, regions=("WT",)), method="exact").iloc[0]
        keep = np.arange(N_CASES) != 3
        assert r["n"] == N_CASES - 1
        assert r["pvalue"] == pytest.approx(sst.wilcoxon(BASE[keep], att[keep], method="exact").pvalue)
        assert r["mean_b"] == pytest.approx(att[keep].mean())


def test_claims_by_region_matches_integer_case_ids_as_strings() -> None:
    """Case ids read as numbers in both the table and the empty-truth list (e.g. both from CSV) are still matched
    ("ids are compared as strings"): cases 0 and 1 are excluded, 10 remain."""
    conds = {("baseline", "clean", None, 0.0): BASE, ("baseline", "fgsm", None, 0.2): BASE * 0.5}
    t = make_table(conds, regions=("ET",))
    t["case_id"] = t["case_id"].str[1:].astype(int)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = S.claims_by_region(t, empty_truth={"ET": [0, 1]}, n_resamples=50, method="exact")
    assert list(pd.unique(out.analysis)) == ["ET", "ET, 2 empty-truth cases excluded"]
    assert (out.loc[out.analysis != "ET", "n_cases"] == N_CASES - 2).all()


# ----------------------------------------------------------------------------- found by mutation testing (session 14)
def _kp_rows(spec: list[tuple[str, str, float]]) -> pd.DataFrame:
    """One WT row per (model, attack, eps), in the given order (key_pairs reads conditions only)."""
    return pd.DataFrame([{"case_id": "c0", "model": m, "attack": a, "eps": e, "region": "WT", "dice": 0.5}
                         for m, a, e in spec])


def test_key_pairs_picks_the_strongest_ifgsm_and_pairs_the_defenses_by_hand() -> None:
    """key_pairs by hand: clean vs the baseline's largest i-FGSM eps (0.3, not 0.1); distilled vs adversarially
    trained at the *distilled* model's largest eps (0.2, not advtrain's 0.4), distilled first."""
    from robustseg_lib import report as R

    t = _kp_rows([("baseline", "clean", 0.0), ("baseline", "ifgsm", 0.1), ("baseline", "ifgsm", 0.3),
                  ("distilled", "ifgsm", 0.2), ("advtrain", "ifgsm", 0.2), ("advtrain", "ifgsm", 0.4)])
    assert R.key_pairs(t) == [
        ({"model": "baseline", "attack": "clean", "eps": 0.0}, {"model": "baseline", "attack": "ifgsm", "eps": 0.3}),
        ({"model": "distilled", "attack": "ifgsm", "eps": 0.2}, {"model": "advtrain", "attack": "ifgsm", "eps": 0.2}),
    ]
    # only one of the two defenses: no defense pair
    only_distilled = t[t.model != "advtrain"]
    assert R.key_pairs(only_distilled) == [R.key_pairs(t)[0]]


def test_key_pairs_without_ifgsm_takes_the_first_non_diagnostic_attack() -> None:
    """Without i-FGSM the first attack that is neither clean nor diagnostic (transfer_*, *_logit_rescaled) is used
    (hand: fgsm at its largest eps 0.2); the diagnostic rows come first in the table and have larger eps."""
    from robustseg_lib import report as R

    t = _kp_rows([("baseline", "clean", 0.0), ("baseline", "transfer_fgsm", 0.5), ("baseline", "fgsm_logit_rescaled", 0.6),
                  ("baseline", "fgsm", 0.2), ("baseline", "fgsm", 0.1)])
    assert R.key_pairs(t) == [
        ({"model": "baseline", "attack": "clean", "eps": 0.0}, {"model": "baseline", "attack": "fgsm", "eps": 0.2}),
    ]
    assert R.key_pairs(t[t.attack.isin(["clean", "transfer_fgsm", "fgsm"])])[0][1]["attack"] == "fgsm"
    assert R.key_pairs(t[t.attack.isin(["clean", "fgsm_logit_rescaled", "fgsm"])])[0][1]["attack"] == "fgsm"
    assert R.key_pairs(_kp_rows([("baseline", "clean", 0.0)])) == []


def test_key_pairs_ignores_eps_zero_rows_of_an_attack() -> None:
    """An eps grid that starts at 0 gives ifgsm@0 rows, which are the clean input: with the baseline measured at
    eps 0 only there is no clean-vs-attack pair (hand), only the defenses' pair at 0.2."""
    from robustseg_lib import report as R

    t = _kp_rows([("baseline", "clean", 0.0), ("baseline", "ifgsm", 0.0),
                  ("distilled", "ifgsm", 0.0), ("distilled", "ifgsm", 0.2), ("advtrain", "ifgsm", 0.2)])
    assert R.key_pairs(t) == [
        ({"model": "distilled", "attack": "ifgsm", "eps": 0.2}, {"model": "advtrain", "attack": "ifgsm", "eps": 0.2}),
    ]


def test_teaching_example_numbers_by_hand() -> None:
    """teaching_example on three WT cases (the minimum it accepts), with a TC region of other values beside it:
    clean [0.8, 0.7, 0.6], attacked [0.5, 0.7, 0.65]. Hand: SDs 0.100 / 0.104, differences [0.3, 0, -0.05] with mean
    0.083, positive in 1 of 3; Mann–Whitney from scipy; the paired test on the two non-zero pairs: p = 1 (exact,
    2·P(T⁺ ≥ 2) of {0, 1, 2, 3} equally likely). The comparison table is hand-made: 3 WT comparisons at α = 0.1,
    2 with raw p < 0.1 and 1 after Holm; 0.3 false positives expected."""
    from robustseg_lib import report as R

    wt = {"clean": [0.8, 0.7, 0.6], "ifgsm": [0.5, 0.7, 0.65]}
    tc = {"clean": [0.3, 0.2, 0.9], "ifgsm": [0.1, 0.4, 0.4]}
    t = pd.DataFrame([{"case_id": f"c{i}", "model": "baseline", "attack": atk, "eps": 0.0 if atk == "clean" else 0.3,
                       "region": reg, "dice": vals[atk][i]}
                      for reg, vals in (("WT", wt), ("TC", tc)) for atk in ("clean", "ifgsm") for i in range(3)])
    cmp_ = pd.DataFrame({"region": ["WT", "WT", "WT", "TC"], "pvalue": [0.01, 0.03, 0.2, 0.001],
                         "p_holm": [0.03, 0.12, 0.2, 0.001]})
    text = R.teaching_example(t, cmp_, region="WT", alpha=0.1)
    mw = sst.mannwhitneyu(wt["clean"], wt["ifgsm"], alternative="two-sided").pvalue
    assert (
        "**Pairing.** WT Dice, baseline clean vs baseline ifgsm ε=0.3, 3 cases: the between-case standard deviations are "
        "0.100 / 0.104 and the per-case differences have mean 0.083, positive in 1 of 3 cases. "
        f"Unpaired Mann–Whitney p = {mw:.2g}; paired Wilcoxon p = 1."
    ) in text
    assert "This run makes 3 comparisons on WT. With raw p < 0.1, 2 look significant; " in text
    assert "after Holm's correction within each family, 1 remain. At α = 0.1, about 0.3 false positives" in text
    assert "Where pairing matters" not in text  # a comparison table that names no conditions
    # two cases are too few for the pairing paragraph
    two = t[t.case_id != "c2"]
    assert "**Pairing.**" not in R.teaching_example(two, cmp_, region="WT", alpha=0.1)


def test_key_pairs_and_teaching_example_take_one_policy_of_a_targeted_attack() -> None:
    """A run without i-FGSM whose ti-FGSM has two target policies (erase first, as notebook 05 writes its main
    policy): the pairs name the first policy, the pairing paragraph counts each of the 4 cases once (it used to merge
    every case with both policies: "8 cases"), and plot_paired accepts the pair (it used to refuse the duplicates).
    Hand: clean [0.8, 0.7, 0.6, 0.9], erase [0.1, 0.2, 0.3, 0.4] -> differences all positive, mean 0.5."""
    from robustseg_lib import report as R
    from robustseg_lib.viz_stats import plot_paired

    clean, erase, swap = [0.8, 0.7, 0.6, 0.9], [0.1, 0.2, 0.3, 0.4], [0.9, 0.9, 0.9, 0.9]
    rows = [{"case_id": f"c{i}", "model": "baseline", "attack": "clean", "target_policy": None, "eps": 0.0,
             "region": "WT", "dice": clean[i]} for i in range(4)]
    for pol, vals in (("erase", erase), ("swap", swap)):
        rows += [{"case_id": f"c{i}", "model": "baseline", "attack": "tifgsm", "target_policy": pol, "eps": 0.3,
                  "region": "WT", "dice": vals[i]} for i in range(4)]
    t = pd.DataFrame(rows)
    pairs = R.key_pairs(t)
    assert pairs == [({"model": "baseline", "attack": "clean", "eps": 0.0},
                      {"model": "baseline", "attack": "tifgsm", "eps": 0.3, "target_policy": "erase"})]
    text = R.teaching_example(t, pd.DataFrame({"region": [], "pvalue": [], "p_holm": []}), region="WT")
    assert "baseline clean vs baseline tifgsm[erase] ε=0.3, 4 cases:" in text
    assert "have mean 0.500, positive in 4 of 4 cases." in text
    fig = plot_paired(t, *pairs[0], region="WT")
    assert fig.axes[0].get_title().startswith("WT dice: n=4,")


def test_key_pairs_takes_the_largest_eps_of_the_main_policy_only() -> None:
    """The main policy (erase, first) was run at eps 0.1 and 0.3, the other (swap) at 0.3 and 0.5: the pairs use the
    largest eps of erase's rows, 0.3 (hand), not swap's 0.5, at which no erase row exists; likewise for the defenses'
    pair (distilled erase at 0.2 only)."""
    from robustseg_lib import report as R

    rows = [("baseline", "clean", None, 0.0), ("baseline", "tifgsm", "erase", 0.1), ("baseline", "tifgsm", "erase", 0.3),
            ("baseline", "tifgsm", "swap", 0.3), ("baseline", "tifgsm", "swap", 0.5),
            ("distilled", "tifgsm", "erase", 0.2), ("distilled", "tifgsm", "swap", 0.4),
            ("advtrain", "tifgsm", "erase", 0.2), ("advtrain", "tifgsm", "swap", 0.4)]
    t = pd.DataFrame([{"case_id": "c0", "model": m, "attack": a, "target_policy": p, "eps": e, "region": "WT", "dice": 0.5}
                      for m, a, p, e in rows])
    assert R.key_pairs(t) == [
        ({"model": "baseline", "attack": "clean", "eps": 0.0},
         {"model": "baseline", "attack": "tifgsm", "eps": 0.3, "target_policy": "erase"}),
        ({"model": "distilled", "attack": "tifgsm", "eps": 0.2, "target_policy": "erase"},
         {"model": "advtrain", "attack": "tifgsm", "eps": 0.2, "target_policy": "erase"}),
    ]


def test_md_table_cells_by_hand() -> None:
    """_md_table, expected text written out: NaN prints as an empty cell, float32 cells get the float format,
    per-column formats override the default, '|' inside a cell cannot split it, one separator per column."""
    from robustseg_lib import report as R

    df = pd.DataFrame({"name": ["a|b", "c"], "x": [0.12345, float("nan")],
                       "y": np.array([1.5, 2.25], dtype=np.float32), "p": [0.000123, 0.5]})
    assert R._md_table(df, formats={"p": ".2g"}) == (
        "| name | x | y | p |\n"
        "|---|---|---|---|\n"
        "| a/b | 0.123 | 1.500 | 0.00012 |\n"
        "| c |  | 2.250 | 0.5 |"
    )


def test_comparison_view_labels_both_sides_and_prints_the_estimate_without_interval() -> None:
    """_comparison_view on a hand-made two-row table: the a side's target policy labels it too
    (tifgsm[erase]); an estimate without interval (n_nonzero too small) prints alone, a missing one as an
    empty cell, never 'nan'; counts print as integers; source_model_a is shown."""
    from robustseg_lib import report as R

    c = pd.DataFrame({
        "family": ["x", "x"], "region": ["WT", "WT"],
        "model_a": ["distilled", "distilled"], "attack_a": ["tifgsm", "fgsm"], "target_policy_a": ["erase", None],
        "source_model_a": ["baseline", "baseline"], "eps_a": [0.2, 0.2],
        "model_b": ["advtrain", "advtrain"], "attack_b": ["tifgsm", "fgsm"], "target_policy_b": ["erase", None],
        "eps_b": [0.2, 0.2], "n": [12.0, 12.0], "n_nonzero": [4.0, 0.0],
        "hl_estimate": [0.0125, float("nan")], "hl_ci_lo": [float("nan")] * 2, "hl_ci_hi": [float("nan")] * 2,
        "pvalue": [0.125, float("nan")], "p_holm": [0.25, float("nan")],
    })
    v = R._comparison_view(c)
    assert list(v.columns) == ["family", "model_a", "attack_a", "source_model_a", "eps_a", "model_b", "attack_b", "eps_b",
                               "n", "n_nonzero", "hl_estimate [CI]", "pvalue", "p_holm"]
    assert list(v["attack_a"]) == ["tifgsm[erase]", "fgsm"] and list(v["attack_b"]) == ["tifgsm[erase]", "fgsm"]
    assert list(v["hl_estimate [CI]"]) == ["0.013", ""]
    rows = R._md_table(v, formats=R._P_FORMATS).splitlines()[2:]
    assert rows[0] == "| x | distilled | tifgsm[erase] | baseline | 0.200 | advtrain | tifgsm[erase] | 0.200 | 12 | 4 | 0.013 | 0.12 | 0.25 |"
    assert rows[1] == "| x | distilled | fgsm | baseline | 0.200 | advtrain | fgsm | 0.200 | 12 | 0 |  |  |  |"


def test_sensitivity_view_by_hand() -> None:
    """_sensitivity_view on a hand-made claims_by_region table: rows in the table's order (WT, TC, ET; not sorted),
    cases from n_cases, 'verdict (support/tests)', C2 with its drop in %, without it when the drop is NaN, and a bare
    verdict when nothing was tested."""
    from robustseg_lib import report as R

    rows = []
    for analysis, n in (("WT", 12), ("TC", 11), ("ET", 9)):
        rows += [
            {"analysis": analysis, "n_cases": n, "claim": "C1", "verdict": "holds", "n_tests": 3, "n_support": 2, "rel_drop": np.nan},
            {"analysis": analysis, "n_cases": n, "claim": "C2", "verdict": "holds" if analysis == "WT" else "not tested",
             "n_tests": 0, "n_support": 0, "rel_drop": 0.704 if analysis == "WT" else np.nan},
            {"analysis": analysis, "n_cases": n, "claim": "C3", "verdict": "not tested", "n_tests": 0, "n_support": 0, "rel_drop": np.nan},
        ]
    v = R._sensitivity_view(pd.DataFrame(rows))
    assert list(v["analysis"]) == ["WT", "TC", "ET"] and list(v["cases"]) == [12, 11, 9]
    assert list(v["C1"]) == ["holds (2/3)"] * 3
    assert list(v["C2"]) == ["holds (70 %)", "not tested", "not tested"]
    assert list(v["C3"]) == ["not tested"] * 3


def _hand_report_inputs(region: str = "TC") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Hand-made summary (two regions, a target_policy column), comparisons and claims for write_report."""
    summary = pd.DataFrame({"model": ["baseline", "baseline", "baseline"], "attack": ["clean", "tifgsm", "clean"],
                            "target_policy": [None, "erase", None], "eps": [0.0, 0.2, 0.0], "region": [region, region, "XX"],
                            "n": [12, 12, 12], "mean_dice": [0.8, 0.4, 0.5], "ci_lo": [0.7, 0.3, 0.45], "ci_hi": [0.9, 0.55, 0.55]})
    comparisons = pd.DataFrame({"family": ["attack_effect"], "region": [region], "model_a": ["baseline"], "attack_a": ["clean"],
                                "eps_a": [0.0], "model_b": ["baseline"], "attack_b": ["fgsm"], "eps_b": [0.2], "n": [12],
                                "pvalue": [0.0004], "p_holm": [0.0004]})
    claims = pd.DataFrame({"claim": ["C1"], "statement": ["attacks hurt"], "verdict": ["holds"], "evidence": ["1/1 tests"],
                           "n_tests": [1]})
    return summary, comparisons, claims


def test_write_report_contents_by_hand(tmp_path) -> None:
    """write_report on hand-made tables and run folder (region TC): every table written as CSV, the headline table on
    TC only with 'mean [lo, hi]' and the target policy, the header from the manifest (profile, device, short sha
    with +dirty, machine summary), the claims' evidence, the empty-truth note, figures given and found copied and all
    listed, diagnostics copied with their verdict column, stage seconds in .1f and a finished report stage shown
    as done."""
    import json

    import matplotlib.pyplot as plt

    from robustseg_lib import report as R
    from robustseg_lib.artefacts import RunPaths

    run = RunPaths(tmp_path / "run")
    run.root.mkdir()
    run.manifest.write_text(json.dumps({
        "profile": "handmade", "device": "cpu", "git_sha": "3949eed96d863797381880a506703ba8651cfee8+dirty",
        "machine": {"summary": "Some CPU (x86_64), 1 torch thread, no GPU"},
        "stages": {"01_data": {"status": "done", "seconds": 12.0}, "08_statistics": {"status": "done", "seconds": 3.5}},
    }))
    fig_a, fig_b = plt.figure(), plt.figure()
    fig_b.savefig(run.figures / "found.png")
    plt.close(fig_b)
    found_bytes = (run.figures / "found.png").read_bytes()
    pd.DataFrame({"verdict": ["masked"], "model": ["distilled"], "attack": ["fgsm"], "eps": [0.2], "other": [1],
                  "dice_direct": [0.9]}).to_csv(run.tables / "diagnostics_06_distillation.csv", index=False)
    pd.DataFrame({"case_id": ["c0", "c1"], "WT": [5, 4], "TC": [0, 2], "ET": [0, 0]}).to_csv(run.tables / "data_region_volumes.csv", index=False)
    pd.DataFrame({"case_id": ["c0", "c1"], "dice": [0.5, 0.6]}).to_csv(run.tables / "results_02_unet.csv", index=False)
    summary, comparisons, claims = _hand_report_inputs("TC")
    path = R.write_report(run, summary=summary, comparisons=comparisons, claims=claims, region="TC", figures={"given": fig_a})
    plt.close(fig_a)
    text = path.read_text()
    for name, df in (("summary", summary), ("comparisons", comparisons), ("claims", claims)):
        assert len(pd.read_csv(run.report / f"{name}.csv")) == len(df)
    assert "profile `handmade` · device `cpu` · git `3949eed96d+dirty` · machine: Some CPU (x86_64), 1 torch thread, no GPU" in text
    header, rows = _md_rows(text, "| claim |")
    assert header == ["claim", "statement", "verdict", "evidence"] and rows == [["C1", "attacks hurt", "holds", "1/1 tests"]]
    assert "## Mean TC Dice with 95 % bootstrap CI" in text
    header, rows = _md_rows(text, "| model | attack | target_policy |")
    assert header == ["model", "attack", "target_policy", "eps", "n", "mean [95% CI]"]
    assert [r[-1] for r in rows] == ["0.800 [0.700, 0.900]", "0.400 [0.300, 0.550]"]
    assert "(of 2): WT 0, TC 1, ET 2" in text
    assert (run.report / "given.png").is_file() and (run.report / "found.png").read_bytes() == found_bytes
    assert "![given.png](given.png)" in text and "![found.png](found.png)" in text
    assert (run.report / "diagnostics_06_distillation.csv").is_file()
    assert "## Gradient-masking diagnostics" in text
    header, rows = _md_rows(text, "| model | attack | eps | dice_direct")
    assert header == ["model", "attack", "eps", "dice_direct", "verdict"] and rows == [["distilled", "fgsm", "0.200", "0.900", "masked"]]
    _, st = _md_rows(text, "| stage | status")
    assert st == [["01_data", "done", "12.0"], ["08_statistics", "done", "3.5"]]


def test_write_report_without_diagnostics_and_with_bad_tables(tmp_path) -> None:
    """No diagnostics table in the run: no diagnostics section; each of the three required tables is checked by
    name (a string instead of a DataFrame raises ValueError naming it)."""
    from robustseg_lib import report as R
    from robustseg_lib.artefacts import RunPaths

    summary, comparisons, claims = _hand_report_inputs("WT")
    run = RunPaths(tmp_path / "run")
    text = R.write_report(run, summary=summary, comparisons=comparisons, claims=claims).read_text()
    assert "Gradient-masking" not in text and "## Stages" not in text
    for name in ("summary", "comparisons", "claims"):
        kw = {"summary": summary, "comparisons": comparisons, "claims": claims, name: "nope"}
        with pytest.raises(ValueError, match=f"^{name}: expected a pandas DataFrame"):
            R.write_report(run, **kw)


def test_report_empty_truth_note_is_empty_when_no_evaluated_case_has_volumes(tmp_path) -> None:
    """Oracle by hand: the volumes table lists c0-c2 with empty regions, but the results name only c8 and c9, so no
    evaluated case has a volume row: nothing to count, no note (rather than a sentence "of 0" cases)."""
    from robustseg_lib import report as R
    from robustseg_lib.artefacts import RunPaths

    run = RunPaths(tmp_path / "run")
    run.tables.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"case_id": ["c0", "c1", "c2"], "WT": [0, 8, 5], "TC": [0, 0, 2], "ET": [0, 0, 0]}).to_csv(
        run.tables / "data_region_volumes.csv", index=False)
    pd.DataFrame({"case_id": ["c8", "c9"], "dice": [0.5, 0.6]}).to_csv(run.tables / "results_02_unet.csv", index=False)
    assert R.empty_truth_note(run) == ""


def test_report_empty_truth_note_needs_a_region_column(tmp_path) -> None:
    """A volumes table without any region column (nothing to count): no note, rather than a sentence listing no
    region."""
    from robustseg_lib import report as R
    from robustseg_lib.artefacts import RunPaths

    run = RunPaths(tmp_path / "run")
    pd.DataFrame({"case_id": ["c0", "c1"], "NCR": [3, 0]}).to_csv(run.tables / "data_region_volumes.csv", index=False)
    pd.DataFrame({"case_id": ["c0", "c1"], "dice": [0.5, 0.6]}).to_csv(run.tables / "results_02_unet.csv", index=False)
    assert R.empty_truth_note(run) == ""


def _viz_table() -> pd.DataFrame:
    """Three cases; WT values by hand, TC all 0.1 (a region that must not leak into a WT figure)."""
    wt = {
        ("baseline", "clean", None, 0.0): [0.8, 0.7, 0.9],
        ("baseline", "fgsm", None, 0.1): [0.6, 0.5, 0.7],
        ("baseline", "fgsm", None, 0.2): [0.4, 0.3, 0.2],
        ("baseline", "tifgsm", "erase", 0.2): [0.5, 0.5, 0.5],
        ("baseline", "transfer_fgsm", None, 0.2): [0.7, 0.7, 0.7],
        ("advtrain", "clean", None, 0.0): [0.7, 0.7, 0.7],
        ("advtrain", "fgsm", None, 0.1): [0.65, 0.65, 0.65],
        ("advtrain", "fgsm", None, 0.2): [0.6, 0.6, 0.6],
    }
    return pd.DataFrame([{"case_id": f"c{i}", "model": m, "attack": a, "target_policy": p, "eps": e, "region": r,
                          "dice": v[i] if r == "WT" else 0.1}
                         for (m, a, p, e), v in wt.items() for r in ("WT", "TC") for i in range(3)])


def test_robustness_curves_by_hand() -> None:
    """plot_robustness_curves on a hand-made table: the baseline's fgsm curve is the WT means by hand (0.8, 0.6,
    0.3 at eps 0, 0.1, 0.2; TC left out); the tifgsm panel draws only the model attacked there (no advtrain,
    colours from seaborn's palette as the function assigns them, models sorted); only the last panel keeps the
    legend; the y label names the region; ``attacks`` chooses the panels; a table of clean rows only gets one
    'clean' panel; an absent region is refused."""
    import matplotlib.colors as mcolors

    t = _viz_table()
    fig = V.plot_robustness_curves(t, region="WT", n_boot=20)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["fgsm", "tifgsm[erase]"]
    colours = dict(zip(["advtrain", "baseline"], sns.color_palette(n_colors=2)))

    def drawn(ax, model: str) -> list:
        return [ln for ln in ax.lines if len(ln.get_xdata()) and mcolors.same_color(ln.get_color(), colours[model])]

    base = drawn(axes[0], "baseline")
    assert len(base) == 1
    np.testing.assert_allclose(base[0].get_xdata(), [0.0, 0.1, 0.2])
    np.testing.assert_allclose(base[0].get_ydata(), [0.8, 0.6, 0.3])
    assert drawn(axes[1], "baseline") and not drawn(axes[1], "advtrain")
    assert axes[0].get_legend() is None and axes[-1].get_legend() is not None
    assert axes[0].get_ylabel() == "mean dice (WT)"
    assert [ax.get_title() for ax in V.plot_robustness_curves(t, region="WT", attacks=["fgsm"], n_boot=20).get_axes()] == ["fgsm"]
    only_clean = V.plot_robustness_curves(t[t.attack == "clean"], region="WT", n_boot=20)
    assert [ax.get_title() for ax in only_clean.get_axes()] == ["clean"]
    with pytest.raises(ValueError, match="region: no rows for 'ET'"):
        V.plot_robustness_curves(t, region="ET")
    with pytest.raises(ValueError, match="missing columns"):
        V.plot_robustness_curves(t.drop(columns=["eps"]))


def test_paired_plot_by_hand() -> None:
    """plot_paired on four WT cases (a TC region beside them): clean [0.8, 0.7, 0.6, 0.5] vs ifgsm
    [0.5, 0.7, 0.4, 0.3], the ifgsm eps stored as 0.1 + 0.2 and asked for as 0.3, target_policy None asked for as
    None. Hand: 3 cases drop (red lines), 1 unchanged (blue); n = 4; every non-zero difference a − b is positive, so
    the rank-biserial r = +1.00; the conditions are labelled '0' and '0.3'; a condition matching nothing is named."""
    import matplotlib.colors as mcolors

    vals = {"clean": ([0.8, 0.7, 0.6, 0.5], 0.0), "ifgsm": ([0.5, 0.7, 0.4, 0.3], 0.1 + 0.2)}
    t = pd.DataFrame([{"case_id": f"c{i}", "model": "baseline", "attack": a, "target_policy": None, "eps": e, "region": r,
                       "dice": v[i] if r == "WT" else 0.2}
                      for a, (v, e) in vals.items() for r in ("WT", "TC") for i in range(4)])
    a = {"model": "baseline", "attack": "clean", "eps": 0.0}
    b = {"model": "baseline", "attack": "ifgsm", "target_policy": None, "eps": 0.3}
    ax = V.plot_paired(t, a, b, "WT").get_axes()[0]
    pairs = [ln for ln in ax.lines if list(ln.get_xdata()) == [0, 1]]
    assert sum(mcolors.same_color(ln.get_color(), "#d62728") for ln in pairs) == 3
    assert sum(mcolors.same_color(ln.get_color(), "#1f77b4") for ln in pairs) == 1
    assert ax.get_title().startswith("WT dice: n=4, Wilcoxon raw p=") and ax.get_title().endswith(", r=+1.00")
    assert [x.get_text() for x in ax.get_xticklabels()] == ["baseline, clean, 0", "baseline, ifgsm, None, 0.3"]
    with pytest.raises(ValueError, match="^b: no rows match"):
        V.plot_paired(t, a, {"model": "nobody"}, "WT")


def test_paired_plot_reds_a_higher_hd95() -> None:
    """For HD95 (lower is better) a case whose distance grows is the one drawn red: hand-made distances clean
    [2, 3, 4] vs ifgsm [5, 3, 1] give one red (2 → 5), two blue (3 → 3 unchanged, 4 → 1 better); the legend names
    both colours."""
    import matplotlib.colors as mcolors

    vals = {"clean": [2.0, 3.0, 4.0], "ifgsm": [5.0, 3.0, 1.0]}
    t = pd.DataFrame([{"case_id": f"c{i}", "model": "baseline", "attack": a, "eps": 0.0 if a == "clean" else 0.3,
                       "region": "WT", "dice": 0.5, "hd95": v[i]} for a, v in vals.items() for i in range(3)])
    ax = V.plot_paired(t, {"attack": "clean"}, {"attack": "ifgsm"}, "WT", metric="hd95").get_axes()[0]
    red = [list(ln.get_ydata()) for ln in ax.lines if list(ln.get_xdata()) == [0, 1] and mcolors.same_color(ln.get_color(), "#d62728")]
    blue = [list(ln.get_ydata()) for ln in ax.lines if list(ln.get_xdata()) == [0, 1] and mcolors.same_color(ln.get_color(), "#1f77b4")]
    assert red == [[2.0, 5.0]] and sorted(blue) == [[3.0, 3.0], [4.0, 1.0]]
    assert [x.get_text() for x in ax.get_legend().get_texts()] == ["worse on the right", "unchanged or better"]


def test_claims_figure_colours_the_verdict_column() -> None:
    """plot_claims: each verdict cell gets its colour from the table in viz_stats (hex values copied here), an
    unknown verdict white, and the other columns are not coloured; a table without 'evidence' is refused."""
    import matplotlib.colors as mcolors

    cl = pd.DataFrame({"claim": ["C1", "C2", "C3", "C4"], "statement": ["s1", "s2", "s3", "s4"],
                       "verdict": ["holds", "contradicted", "something else", "partly tested"],
                       "evidence": ["e1", "e2", "e3", "e4"]})
    cells = V.plot_claims(cl).get_axes()[0].tables[0].get_celld()
    assert mcolors.same_color(cells[1, 2].get_facecolor(), "#c7e9c0")
    assert mcolors.same_color(cells[2, 2].get_facecolor(), "#fcbba1")
    assert mcolors.same_color(cells[3, 2].get_facecolor(), "white")
    assert mcolors.same_color(cells[4, 2].get_facecolor(), "#e5f5e0")
    assert all(mcolors.same_color(cells[r, c].get_facecolor(), "white") for r in (1, 2, 3, 4) for c in (0, 1, 3))
    # every verdict of the vocabulary has its own colour
    colours = [V._VERDICT_COLOURS[v] for v in S.VERDICTS]
    assert len(set(colours)) == len(S.VERDICTS)
    with pytest.raises(ValueError, match=r"missing columns \['evidence'\]"):
        V.plot_claims(cl.drop(columns=["evidence"]))


def test_condition_rows_reads_nan_as_missing_and_refuses_a_non_number_eps() -> None:
    """A NaN value selects the missing cells like None does (pandas reads an empty CSV cell as NaN), rows 1 and 2 by
    hand; an eps of None, NaN, inf, a string or a bool is refused naming eps (None used to fail inside float())."""
    t = pd.DataFrame({"model": ["a", "a", "a"], "target_policy": ["erase", None, np.nan], "eps": [0.1, 0.1, 0.1]})
    assert S.condition_rows(t, {"target_policy": float("nan")}).tolist() == [False, True, True]
    assert S.condition_rows(t, {"target_policy": None}).tolist() == [False, True, True]
    assert S.condition_rows(t, {"eps": 0.1 + 1e-12, "model": "a"}).tolist() == [True, True, True]
    for bad in (None, float("nan"), float("inf"), "0.1", True):
        with pytest.raises(ValueError, match="cond: eps must be a finite number"):
            S.condition_rows(t, {"eps": bad})


def test_mean_table_keeps_target_policies_and_sources_apart() -> None:
    """mean_table averages each (attack, target policy, source model, eps) on its own: the old notebook pivot on
    attack and eps averaged ti-FGSM erase with et_to_ncr (oracle: hand means; blanks where a key does not apply)."""
    rows = []
    for case, (clean, erase, ncr, tr) in enumerate([(0.8, 0.0, 0.9, 0.5), (0.6, 0.2, 0.7, 0.3)]):
        rows += [("baseline", "clean", None, None, 0.0, clean), ("baseline", "tifgsm", "erase", None, 1.0, erase),
                 ("baseline", "tifgsm", "et_to_ncr", None, 1.0, ncr), ("advtrain", "tifgsm", "erase", None, 1.0, erase + 0.5),
                 ("advtrain", "transfer_fgsm", None, "baseline", 1.0, tr)]
    t = pd.DataFrame([dict(case_id=str(i // 5), model=m, attack=a, target_policy=p, source_model=s, eps=e, region="WT",
                           dice=d) for i, (m, a, p, s, e, d) in enumerate(rows)])
    t = pd.concat([t, t.assign(region="ET", dice=-1.0)], ignore_index=True)
    m = S.mean_table(t, "WT")
    assert list(m.index.names) == ["attack", "target_policy", "source_model", "eps"]
    assert m.loc[("tifgsm", "erase", "", 1.0), "baseline"] == pytest.approx(0.1)
    assert m.loc[("tifgsm", "et_to_ncr", "", 1.0), "baseline"] == pytest.approx(0.8)
    assert m.loc[("tifgsm", "erase", "", 1.0), "advtrain"] == pytest.approx(0.6)
    assert np.isnan(m.loc[("tifgsm", "et_to_ncr", "", 1.0), "advtrain"])
    assert m.loc[("clean", "", "", 0.0), "baseline"] == pytest.approx(0.7)
    assert m.loc[("transfer_fgsm", "", "baseline", 1.0), "advtrain"] == pytest.approx(0.4)
    # a table without the optional key columns is indexed on attack and eps alone
    plain = S.mean_table(t.drop(columns=["target_policy", "source_model"]).query("attack != 'tifgsm'"), "WT")
    assert list(plain.index.names) == ["attack", "eps"] and plain.loc[("clean", 0.0), "baseline"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="region: no rows for 'TC'"):
        S.mean_table(t, "TC")


def test_teaching_example_shows_where_pairing_matters() -> None:
    """Eight cases: FGSM lowers every case's Dice by a little (0.004 i), far less than the cases differ, so the paired
    test finds it and Mann–Whitney does not; i-FGSM keeps a tenth of each case's Dice, which both find. The
    paragraph picks the FGSM comparison; without it, it says both tests agree. Oracles: scipy's exact Wilcoxon
    and Mann–Whitney on the hand values."""
    from robustseg_lib import report as R

    clean = np.linspace(0.3, 0.9, 8)
    conds = {("clean", 0.0): clean, ("fgsm", 0.1): clean - 0.004 * np.arange(1, 9), ("ifgsm", 0.1): clean * 0.1}
    t = pd.DataFrame([{"case_id": f"c{i}", "model": "baseline", "attack": a, "eps": e, "region": "WT", "dice": v[i]}
                      for (a, e), v in conds.items() for i in range(8)])
    text = R.teaching_example(t, S.compare(t), region="WT")
    p_u = sst.mannwhitneyu(clean, conds[("fgsm", 0.1)], alternative="two-sided").pvalue
    p_w = sst.wilcoxon(clean, conds[("fgsm", 0.1)], method="exact").pvalue
    assert p_u > 0.5 and p_w == pytest.approx(2 / 2**8)
    assert ("**Where pairing matters.** WT Dice, baseline clean ε=0 vs baseline fgsm ε=0.1 (attack_effect), 8 cases: "
            f"the per-case differences have mean {0.004 * 4.5:.3f} against between-case standard deviations of "
            f"{np.std(clean, ddof=1):.3f} / {np.std(conds[('fgsm', 0.1)], ddof=1):.3f}. "
            f"Unpaired Mann–Whitney p = {p_u:.2g}; paired Wilcoxon p = {p_w:.2g}.") in text
    strong = t[t.attack != "fgsm"]
    p_u2 = sst.mannwhitneyu(clean, conds[("ifgsm", 0.1)], alternative="two-sided").pvalue
    assert f"the unpaired test finds too (its largest p is {p_u2:.2g})" in R.teaching_example(strong, S.compare(strong))
