"""Tests of robustseg_lib.stats (and smoke tests of robustseg_lib.viz_stats)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
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


# ----------------------------------------------------------------------------- claims
def _verdicts(conds: dict) -> dict[str, str]:
    cl = S.claims(make_table(conds), n_resamples=300)
    assert list(cl.columns) == S.CLAIM_COLUMNS
    assert list(cl["claim"]) == ["C1", "C2", "C3", "C4"]
    return dict(zip(cl["claim"], cl["verdict"]))


def test_claims_all_hold() -> None:
    v = _verdicts(FULL)
    assert v == {"C1": "holds", "C2": "holds", "C3": "holds", "C4": "holds"}
    cl = S.claims(make_table(FULL), n_resamples=300).set_index("claim")
    assert cl.loc["C2", "rel_drop"] == pytest.approx(0.7, abs=0.02)  # ifgsm at mu = 0.3
    assert "ifgsm@0.2" in cl.loc["C2", "evidence"]
    assert cl.loc["C1", "n_tests"] == 4 and cl.loc["C1", "n_support"] == 4  # fgsm only at eps 0.2


def test_claims_all_fail() -> None:
    conds = {
        ("baseline", "clean", None, 0.0): 1.0,
        ("baseline", "fgsm", None, 0.2): 1.0,  # identical to clean: no effect at all
        ("baseline", "ifgsm", None, 0.2): 1.0,
        ("distilled", "clean", None, 0.0): 0.9,
        ("distilled", "fgsm", None, 0.2): 0.7,
        ("distilled", "ifgsm", None, 0.2): 0.6,
        ("advtrain", "clean", None, 0.0): 1.1,
        ("advtrain", "fgsm", None, 0.2): 1.1,  # above clean baseline, significantly
        ("advtrain", "ifgsm", None, 0.2): 1.05,
    }
    v = _verdicts(conds)
    assert v == {"C1": "does not hold", "C2": "does not hold", "C3": "does not hold", "C4": "does not hold"}
    cl = S.claims(make_table(conds), n_resamples=300).set_index("claim")
    assert cl.loc["C3", "n_against"] == 2  # advtrain significantly better in both


def test_claims_mixed() -> None:
    # defended-under-attack slightly above clean, not significantly:
    # +0.02 / −0.01 alternating -> mean above, W = 21 of 78, p ≈ 0.18
    above_ns = BASE + np.where(np.arange(N_CASES) % 2, -0.01, 0.02)
    conds = {
        ("baseline", "clean", None, 0.0): 1.0,
        ("baseline", "fgsm", None, 0.2): 0.5,  # drop 0.5: >= 0.325 but CI < 0.65
        ("baseline", "ifgsm", None, 0.2): 1.0,  # no effect
        ("distilled", "clean", None, 0.0): 0.95,
        ("distilled", "fgsm", None, 0.2): 0.9,  # distilled better
        ("distilled", "ifgsm", None, 0.2): above_ns,
        ("advtrain", "clean", None, 0.0): 0.95,
        ("advtrain", "fgsm", None, 0.2): 0.8,
        ("advtrain", "ifgsm", None, 0.2): 1.1,  # advtrain better here
    }
    # advtrain ifgsm (1.1) is significantly above clean -> C4 would "not hold"; make it below
    conds[("advtrain", "ifgsm", None, 0.2)] = above_ns - 0.001 * np.arange(1, N_CASES + 1) + 0.05
    t = make_table(conds)
    cl = S.claims(t, n_resamples=300, method="exact").set_index("claim")
    assert cl.loc["C1", "verdict"] == "mixed" and cl.loc["C1", "n_support"] == 1
    assert cl.loc["C2", "verdict"] == "mixed"
    assert cl.loc["C2", "rel_drop_ci_hi"] < 0.65 and cl.loc["C2", "rel_drop"] >= 0.325
    assert cl.loc["C3", "verdict"] == "mixed"
    assert cl.loc["C3", "n_support"] == 1 and cl.loc["C3", "n_against"] == 1


def test_claim_c4_mixed() -> None:
    above_ns = BASE + np.where(np.arange(N_CASES) % 2, -0.01, 0.02)
    p = S.paired_wilcoxon(above_ns, BASE, method="exact").pvalue
    assert p > 0.05  # by construction (W = 21, n = 12)
    conds = {
        ("baseline", "clean", None, 0.0): 1.0,
        ("baseline", "fgsm", None, 0.2): 0.5,
        ("advtrain", "clean", None, 0.0): 1.0,
        ("advtrain", "fgsm", None, 0.2): above_ns,
    }
    cl = S.claims(make_table(conds), n_resamples=300, method="exact").set_index("claim")
    assert cl.loc["C4", "verdict"] == "mixed"
    assert cl.loc["C3", "verdict"] == "not tested"


def test_claims_not_tested() -> None:
    only_base = {("baseline", "clean", None, 0.0): 1.0, ("baseline", "fgsm", None, 0.2): 0.3}
    v = _verdicts(only_base)
    assert v["C3"] == "not tested" and v["C4"] == "not tested"
    assert v["C1"] == "holds" and v["C2"] == "holds"
    v = _verdicts({("baseline", "clean", None, 0.0): 1.0})
    assert set(v.values()) == {"not tested"}
    with pytest.raises(ValueError, match="region"):
        S.claims(make_table(only_base), region="XX")


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
    assert len(ax.lines) >= N_CASES and "Wilcoxon" in ax.get_title()
    with pytest.raises(ValueError, match="a"):
        V.plot_paired(t, {"model": "baseline"}, {"model": "baseline", "attack": "ifgsm"}, "WT")
    fig = V.plot_claims(S.claims(t, n_resamples=100))
    assert fig.get_axes()[0].tables
    fig.canvas.draw()
