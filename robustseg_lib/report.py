"""The reproduction report: Markdown + PNG figures + CSV tables, readable without Jupyter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from .artefacts import RunPaths, atomic_savefig, atomic_to_csv, atomic_write_text
from .evaluation import evaluated_region_volumes
from .runtime import short_sha
from .stats import attack_label, claim_rules_md, condition_rows, empty_truth_cases, paired_wilcoxon

__all__ = ["key_pairs", "teaching_example", "write_report"]


def _main(table: pd.DataFrame) -> pd.DataFrame:
    a = table["attack"].astype(str)
    return table[~a.str.startswith("transfer_") & ~a.str.endswith("_logit_rescaled")]


def _pick_eps(table: pd.DataFrame, model: str, attack: str) -> float | None:
    e = table[(table.model == model) & (table.attack == attack) & (table.eps > 0)]["eps"]
    return float(e.max()) if len(e) else None


def key_pairs(table: pd.DataFrame) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The comparisons worth a paired plot: clean vs the strongest i-FGSM on the baseline,
    and distilled vs adversarially trained under it (when both exist).

    Without i-FGSM the first other non-diagnostic attack is used; when that is a targeted attack
    recorded under several target policies, the first policy in the table's order (notebook 05's main
    policy) is used and named in the conditions.

    Returns:
        ``[(condition_a, condition_b), ...]`` as dicts of model/attack/eps (and ``target_policy`` for a
        targeted attack) for ``viz_stats.plot_paired``.
    """
    t = _main(table)
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    attack = "ifgsm" if (t.attack == "ifgsm").any() else next((a for a in t.attack.unique() if a != "clean"), None)
    if attack is None:
        return pairs
    extra: dict[str, Any] = {}
    if "target_policy" in t.columns:  # a targeted attack: one policy, or each case would appear once per policy
        policies = t.loc[(t.attack == attack) & t.target_policy.notna(), "target_policy"]
        if len(policies):
            extra = {"target_policy": policies.iloc[0]}
            t = t[(t.attack != attack) | (t.target_policy == extra["target_policy"])]
    e = _pick_eps(t, "baseline", attack)
    if e is not None:
        pairs.append(({"model": "baseline", "attack": "clean", "eps": 0.0},
                      {"model": "baseline", "attack": attack, "eps": e, **extra}))
    models = set(t.model)
    if {"distilled", "advtrain"} <= models:
        e2 = _pick_eps(t, "distilled", attack)
        if e2 is not None:
            pairs.append(({"model": "distilled", "attack": attack, "eps": e2, **extra},
                          {"model": "advtrain", "attack": attack, "eps": e2, **extra}))
    return pairs


def teaching_example(table: pd.DataFrame, comparisons: pd.DataFrame, *, region: str = "WT", alpha: float = 0.05) -> str:
    """Markdown that teaches pairing and multiple-comparison correction with this run's numbers.

    Args:
        table: tidy results.
        comparisons: output of ``stats.compare``.
        region: region to use.
        alpha: significance level.

    Returns:
        Markdown paragraphs: paired vs unpaired p on the first :func:`key_pairs` comparison and on the comparison
        the unpaired test misses by the most (when ``comparisons`` names its conditions, as ``stats.compare``'s
        output does); raw vs Holm counts.
    """
    lines = []
    pairs = key_pairs(table)
    if pairs:
        a, b = pairs[0]
        sel = lambda c: table[condition_rows(table, c) & (table.region == region)]  # noqa: E731
        j = sel(a)[["case_id", "dice"]].merge(sel(b)[["case_id", "dice"]], on="case_id", suffixes=("_a", "_b")).dropna()
        if len(j) >= 3:
            d = j.dice_a - j.dice_b
            p_unpaired = sps.mannwhitneyu(j.dice_a, j.dice_b, alternative="two-sided").pvalue
            p_paired = paired_wilcoxon(j.dice_a.to_numpy(), j.dice_b.to_numpy()).pvalue  # zeros dropped first
            lines.append(
                f"**Pairing.** {region} Dice, {a['model']} {attack_label(a['attack'], a.get('target_policy'))} vs {b['model']} "
                f"{attack_label(b['attack'], b.get('target_policy'))} ε={b['eps']:g}, {len(j)} cases: "
                f"the between-case standard deviations are {j.dice_a.std():.3f} / {j.dice_b.std():.3f} and the per-case "
                f"differences have mean {d.mean():.3f}, positive in {(d > 0).sum()} of {len(d)} cases. "
                f"Unpaired Mann–Whitney p = {p_unpaired:.2g}; paired Wilcoxon p = {p_paired:.2g}."
            )
    c = comparisons[comparisons.region == region] if "region" in comparisons else comparisons
    missed = _pairing_matters(table, c, region, alpha)
    if missed:
        lines.append(missed)
    if len(c):
        raw = int((c.pvalue < alpha).sum())
        adj = int((c.p_holm < alpha).sum())
        lines.append(
            f"**Multiple comparisons.** This run makes {len(c)} comparisons on {region}. With raw p < {alpha}, {raw} look significant; "
            f"after Holm's correction within each family, {adj} remain. At α = {alpha}, about {alpha * len(c):.1f} false positives "
            "would be expected among raw p-values if no effect were real; Holm keeps the chance of even one below α per family."
        )
    return "\n\n".join(lines) if lines else "_Not enough paired results in this run for the example._"


def _pairing_matters(table: pd.DataFrame, comparisons: pd.DataFrame, region: str, alpha: float) -> str:
    """Markdown on the comparison, among those whose paired test has raw p < ``alpha``, that an unpaired test
    (Mann–Whitney on the same cases) misses by the most; ``""`` when ``comparisons`` names no conditions."""
    need = [f"{k}_{s}" for s in ("a", "b") for k in ("model", "attack", "eps")]
    if not len(comparisons) or any(k not in comparisons for k in need) or "pvalue" not in comparisons:
        return ""
    found = comparisons[comparisons.pvalue < alpha]
    if not len(found):
        return ""
    t = table[table.region == region]
    best = None
    for _, r in found.iterrows():
        conds = []
        for s in ("a", "b"):
            cond = {k: r[f"{k}_{s}"] for k in ("model", "attack", "eps")}
            for k in ("target_policy", "source_model"):
                if k in t.columns and f"{k}_{s}" in r.index:
                    cond[k] = r[f"{k}_{s}"]
            conds.append(cond)
        j = t[condition_rows(t, conds[0])][["case_id", "dice"]].merge(
            t[condition_rows(t, conds[1])][["case_id", "dice"]], on="case_id", suffixes=("_a", "_b")).dropna()
        if len(j) < 3:
            continue
        p_u = float(sps.mannwhitneyu(j.dice_a, j.dice_b, alternative="two-sided").pvalue)
        if best is None or p_u > best[0]:
            best = (p_u, r, conds, j)
    if best is None:
        return ""
    p_u, r, (a, b), j = best
    if p_u < alpha:
        return (f"**Where pairing matters.** Every comparison on {region} that the paired test finds here (raw p < "
                f"{alpha:g}) the unpaired test finds too (its largest p is {p_u:.2g}): this run's effects are large "
                "against the spread between cases.")
    name = lambda c: f"{c['model']} {attack_label(c['attack'], c.get('target_policy'))} ε={c['eps']:g}"  # noqa: E731
    return (f"**Where pairing matters.** {region} Dice, {name(a)} vs {name(b)} ({r['family']}), {len(j)} cases: the "
            f"per-case differences have mean {(j.dice_a - j.dice_b).mean():.3f} against between-case standard "
            f"deviations of {j.dice_a.std():.3f} / {j.dice_b.std():.3f}. Unpaired Mann–Whitney p = {p_u:.2g}; paired "
            f"Wilcoxon p = {r['pvalue']:.2g}. Chosen as the comparison the paired test finds (raw p < {alpha:g}) that "
            "the unpaired test misses by the most.")


def _md_table(df: pd.DataFrame, floatfmt: str = ".3f", formats: dict[str, str] | None = None) -> str:
    """A Markdown table (hand-written: pandas' to_markdown needs the optional 'tabulate').

    Args:
        df: the table.
        floatfmt: format of float cells.
        formats: per-column float formats overriding ``floatfmt`` (e.g. ``{"pvalue": ".2g"}``).

    Returns:
        The Markdown text.
    """
    cols = list(df.columns)
    fmts = [(formats or {}).get(c, floatfmt) for c in cols]

    def fmt(v: Any, f: str) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(v, f)
        return str(v).replace("|", "/")

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(v, f) for v, f in zip(row, fmts)) + " |" for row in df.itertuples(index=False, name=None)]
    return "\n".join(out)


#: Float formats of the printed comparison tables: p-values in 2 significant digits (never "0.000").
_P_FORMATS = {"pvalue": ".2g", "p_holm": ".2g"}


def _comparison_view(cmp_r: pd.DataFrame) -> pd.DataFrame:
    """The printed columns of a comparison table: attacks labelled with their target policy
    (``tifgsm[erase]``), ``source_model`` when present, ``n_nonzero`` and the HL estimate with its
    confidence interval."""
    v = cmp_r.copy()
    for s in ("a", "b"):
        if f"attack_{s}" in v.columns:
            pol = v[f"target_policy_{s}"] if f"target_policy_{s}" in v.columns else [None] * len(v)
            v[f"attack_{s}"] = [attack_label(a, p) for a, p in zip(v[f"attack_{s}"], pol)]
    if {"hl_estimate", "hl_ci_lo", "hl_ci_hi"} <= set(v.columns):
        v["hl_estimate"] = [
            f"{e:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else ("" if np.isnan(e) else f"{e:.3f}")
            for e, lo, hi in zip(v["hl_estimate"], v["hl_ci_lo"], v["hl_ci_hi"])
        ]
        v = v.rename(columns={"hl_estimate": "hl_estimate [CI]"})
    cols = [
        "family", "model_a", "attack_a", "source_model_a", "eps_a", "model_b", "attack_b", "source_model_b", "eps_b",
        "n", "n_nonzero", "mean_a", "mean_b", "hl_estimate", "hl_estimate [CI]", "effect_size", "pvalue", "p_holm",
        "significant",
    ]  # fmt: skip
    v = v[[c for c in cols if c in v.columns]]
    for c in ("n", "n_nonzero"):
        if c in v.columns:
            v[c] = v[c].astype("Int64")
    return v


def empty_truth_note(run: RunPaths) -> str:
    """How many evaluated cases have no ground-truth voxel of each region (from notebook 01's region volumes).

    Under the BraTS rule such a case scores Dice 1 for that region when nothing is predicted there and 0 otherwise,
    so a region's mean mixes these all-or-nothing scores with ordinary ones (typically ET, absent in non-enhancing
    tumours).

    Args:
        run: the run folder (``tables/data_region_volumes.csv`` and the ``tables/results_*.csv`` case ids).

    Returns:
        One Markdown sentence, or ``""`` when the tables are not there or no evaluated case lacks a region (then no
        mean mixes all-or-nothing scores, and "WT 0, TC 0, ET 0" would only be noise).
    """
    v = evaluated_region_volumes(run)
    if v is None:
        return ""
    empty = empty_truth_cases(v)
    if v.empty or not any(empty.values()):
        return ""
    counts = ", ".join(f"{r} {len(ids)}" for r, ids in empty.items())
    return (
        f"Evaluated cases whose ground truth has no voxel of a region (of {len(v)}): {counts}. Under the BraTS rule such "
        "a case scores Dice 1 for that region when nothing is predicted there and 0 otherwise, so that region's means "
        "mix all-or-nothing scores with ordinary ones."
    )


def _sensitivity_view(sens: pd.DataFrame) -> pd.DataFrame:
    """One row per analysis of ``stats.claims_by_region``: cases, then each claim's verdict with its support
    count (``holds (3/3)``; C2: the largest relative drop)."""
    rows = []
    for analysis, g in sens.groupby("analysis", sort=False):
        row: dict[str, Any] = {"analysis": analysis, "cases": int(g["n_cases"].iloc[0])}
        for _, r in g.iterrows():
            if r["claim"] == "C2" and np.isfinite(r["rel_drop"]):
                row["C2"] = f"{r['verdict']} ({100 * r['rel_drop']:.0f} %)"
            elif r["n_tests"]:
                row[r["claim"]] = f"{r['verdict']} ({int(r['n_support'])}/{int(r['n_tests'])})"
            else:
                row[r["claim"]] = r["verdict"]
        rows.append(row)
    return pd.DataFrame(rows)


def _drops_view(d: pd.DataFrame) -> pd.DataFrame:
    v = d.copy()
    if "target_policy" in v.columns:
        v.insert(0, "attack ", [attack_label(a, p) for a, p in zip(v["attack"], v["target_policy"])])
        v = v.drop(columns=["attack", "target_policy"]).rename(columns={"attack ": "attack"})
    if "rel_drop" in v.columns:
        v["rel_drop"] = [f"{100 * x:.1f} %" for x in v["rel_drop"]]
    return v


def write_report(
    run: RunPaths,
    *,
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    claims: pd.DataFrame,
    region: str = "WT",
    figures: dict[str, Any] | None = None,
    claims_comparisons: pd.DataFrame | None = None,
    report_stage: str = "08_statistics",
    drops: pd.DataFrame | None = None,
    claims_by_region: pd.DataFrame | None = None,
    alpha: float = 0.05,
) -> Path:
    """Write ``report/report.md`` with its tables (CSV) and the run's figures (PNG copies).

    The report holds the claims with their decision rules (``stats.claim_rules_md(alpha)``), the
    summary means, the full table of paired Wilcoxon tests (attacks labelled with their target
    policy, ``n_nonzero``, p-values in 2 significant digits), the gradient-masking
    diagnostics, the figures and the stages of the run.

    Args:
        run: the run folder.
        summary, comparisons, claims: tables from ``robustseg_lib.stats`` (``comparisons`` is
            the full table printed in the report, written as ``comparisons.csv``).
        region: region of the headline tables.
        figures: extra ``name → matplotlib Figure`` to include.
        claims_comparisons: the comparison table the claims were judged on, when it is not
            ``comparisons`` (the notebooks judge the claims on the paper's attacks only, with
            Holm applied within that smaller table); written as ``claims_comparisons.csv``
            and named next to the claims. ``None``: not written.
        report_stage: the manifest stage that writes the report; its ``running`` status is
            shown as ``running (this report)``.
        drops: ``stats.drop_vs_perceptibility`` of the undefended model (relative Dice drop and
            PSNR per attack × eps), shown after the claims as C2's context; written as
            ``drops.csv``. ``None``: left out.
        claims_by_region: ``stats.claims_by_region`` (the verdicts on every region, and without
            empty-truth cases), shown after the claims as their sensitivity; written as
            ``claims_by_region.csv``. ``None``: left out.
        alpha: the family-wise error rate the claims and tests were judged at (the rules state it).

    Returns:
        Path of ``report.md``.
    """
    for name, df in (("summary", summary), ("comparisons", comparisons), ("claims", claims)):
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    for name, df in (("drops", drops), ("claims_by_region", claims_by_region)):
        if df is not None and not isinstance(df, pd.DataFrame):
            raise ValueError(f"{name}: expected a pandas DataFrame or None, got {type(df).__name__}")
    if claims_comparisons is not None and not isinstance(claims_comparisons, pd.DataFrame):
        raise ValueError(f"claims_comparisons: expected a pandas DataFrame or None, got {type(claims_comparisons).__name__}")
    rules = claim_rules_md(alpha)  # checks alpha before anything is written
    import json
    import shutil

    rep = run.report
    tables = {"summary": summary, "comparisons": comparisons, "claims": claims}
    if claims_comparisons is not None:
        tables["claims_comparisons"] = claims_comparisons
    if drops is not None:
        tables["drops"] = drops
    if claims_by_region is not None:
        tables["claims_by_region"] = claims_by_region
    for name, df in tables.items():
        atomic_to_csv(df, rep / f"{name}.csv")
    figs = []
    for name, fig in (figures or {}).items():
        atomic_savefig(fig, rep / f"{name}.png")
        figs.append(f"{name}.png")
    for png in sorted(run.figures.glob("*.png")):
        shutil.copyfile(png, rep / png.name)
        figs.append(png.name)
    diag_lines: list[str] = []
    for csv in sorted(run.tables.glob("diagnostics_*.csv")):  # written by notebooks 06 and 07
        d = pd.read_csv(csv)
        shutil.copyfile(csv, rep / csv.name)
        cols = [c for c in ("model", "attack", "eps", "dice_direct", "dice_transfer", "dice_logit_rescaled", "frac_saturated_voxels", "frac_saturated_voxels_baseline", "frac_near_zero_grad", "verdict") if c in d.columns]
        diag_lines += [f"`{csv.stem}`:", "", _md_table(d[cols]), ""]
    manifest = json.loads(run.manifest.read_text()) if run.manifest.is_file() else {}
    stages = manifest.get("stages", {})
    mean_col = next((c for c in summary.columns if c.startswith("mean_")), "mean_dice")
    s = summary[(summary.region == region)].copy()
    s["mean [95% CI]"] = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in zip(s[mean_col], s.ci_lo, s.ci_hi)]
    keep = [c for c in ("model", "attack", "target_policy", "source_model", "eps", "n", "mean [95% CI]") if c in s.columns]
    cmp_r = comparisons[comparisons.region == region] if "region" in comparisons.columns else comparisons
    if claims_comparisons is not None:
        claims_note = (
            "The claims are judged on the paper's attacks only (FGSM, i-FGSM and ti-FGSM with its main target policy), "
            "with Holm's correction applied within that comparison table "
            "([claims_comparisons.csv](claims_comparisons.csv)); their p_holm can therefore differ from the full "
            "table of Wilcoxon tests below, which covers every attack of the run."
        )
    else:
        claims_note = "Each claim's p_holm comes from the comparison table it was judged on (Holm within family × region)."
    lines = [
        "# Reproduction report: Liu et al. (2021), *Robustifying deep networks for image segmentation*",
        "",
        f"Run folder `{run.root}` · profile `{manifest.get('profile', '?')}` · device `{manifest.get('device', '?')}` · git `{short_sha(manifest.get('git_sha', '?'))}`"
        + (f" · machine: {manifest['machine']['summary']}" if isinstance(manifest.get("machine"), dict) and "summary" in manifest["machine"] else ""),
        "",
        "## Claims",
        "",
        _md_table(claims[[c for c in ("claim", "statement", "verdict", "evidence") if c in claims.columns]]),
        "",
        claims_note,
        "",
        "### Decision rules",
        "",
        rules.rstrip("\n"),
        "",
        *(
            [
                "### Sensitivity: the verdicts on every region, and without empty-truth cases",
                "",
                f"The same rules applied to each region (the headline above is {region}), and to a region without the "
                "evaluated cases whose ground truth has none of it (their Dice is all or nothing under the BraTS rule, so "
                "an attack can move them from 1 to 0 with a single false-positive voxel); the paired tests and Holm's "
                "correction are recomputed on the remaining cases ([claims_by_region.csv](claims_by_region.csv)).",
                "",
                _md_table(_sensitivity_view(claims_by_region)),
                "",
            ]
            if claims_by_region is not None
            else []
        ),
        *(
            [
                f"### C2 in context: how large a drop, at how visible a perturbation ({region})",
                "",
                "Relative drop of the undefended model's mean Dice, 1 − mean(attacked)/mean(clean), per attack and eps, "
                "beside the perturbation's mean L∞ and PSNR over the brain (dB, against the clean volume; higher is less "
                "visible) and SSIM ([drops.csv](drops.csv)).",
                "",
                _md_table(_drops_view(drops)),
                "",
            ]
            if drops is not None
            else []
        ),
        f"## Mean {region} Dice with 95 % bootstrap CI",
        "",
        _md_table(s[keep]),
        "",
        *([empty_note, ""] if (empty_note := empty_truth_note(run)) else []),
        f"## Paired Wilcoxon signed-rank tests ({region}, Holm-adjusted within family)",
        "",
        "a vs b paired by case; `n_nonzero`: pairs with a non-zero difference (the ones ranked); `hl_estimate [CI]`: "
        "Hodges–Lehmann estimate of a − b with its distribution-free confidence interval at 1 − α (the inverted "
        "signed-rank test), both over the non-zero pairs the test ranks, so the interval excludes 0 exactly when the raw "
        "p is below α as long as that p is exact too (at most 50 non-zero pairs, no ties; beyond, the test's normal "
        "approximation can disagree with the interval near α); per test, not Holm-adjusted; none when n_nonzero is too small; `effect_size`: rank-biserial correlation of a − b; `pvalue`: raw "
        "two-sided Wilcoxon p; `p_holm`: Holm-adjusted within family.",
        "",
        _md_table(_comparison_view(cmp_r), formats=_P_FORMATS),
        "",
        "Full tables: [summary.csv](summary.csv), [comparisons.csv](comparisons.csv), [claims.csv](claims.csv)"
        + (", [claims_comparisons.csv](claims_comparisons.csv)." if claims_comparisons is not None else "."),
        "",
        *(
            [
                "## Gradient-masking diagnostics (WT Dice at the largest eps)",
                "",
                "Direct attack vs (a) transfer from the undefended baseline and (b) the attack on the logits divided by T; "
                "a defense whose robustness disappears under (a) or (b) owes it to masked gradients.",
                "",
                *diag_lines,
            ]
            if diag_lines
            else []
        ),
        "## Figures",
        "",
        *[f"![{f}]({f})\n" for f in figs],
    ]
    if stages:
        def status(k: str, v: dict[str, Any]) -> Any:
            st = v.get("status")
            return f"{st} (this report)" if k == report_stage and st == "running" else st

        rows = [{"stage": k, "status": status(k, v), "seconds": v.get("seconds")} for k, v in stages.items()]
        lines += ["## Stages", "", _md_table(pd.DataFrame(rows), ".1f")]
    return atomic_write_text(rep / "report.md", "\n".join(lines) + "\n")
