"""The reproduction report: Markdown + PNG figures + CSV tables, readable without Jupyter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from .artefacts import RunPaths, atomic_savefig, atomic_to_csv, atomic_write_text
from .runtime import short_sha

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

    Returns:
        ``[(condition_a, condition_b), ...]`` as dicts of model/attack/eps for ``viz_stats.plot_paired``.
    """
    t = _main(table)
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    attack = "ifgsm" if (t.attack == "ifgsm").any() else next((a for a in t.attack.unique() if a != "clean"), None)
    if attack is None:
        return pairs
    e = _pick_eps(t, "baseline", attack)
    if e is not None:
        pairs.append(({"model": "baseline", "attack": "clean", "eps": 0.0}, {"model": "baseline", "attack": attack, "eps": e}))
    models = set(t.model)
    if {"distilled", "advtrain"} <= models:
        e2 = _pick_eps(t, "distilled", attack)
        if e2 is not None:
            pairs.append(({"model": "distilled", "attack": attack, "eps": e2}, {"model": "advtrain", "attack": attack, "eps": e2}))
    return pairs


def teaching_example(table: pd.DataFrame, comparisons: pd.DataFrame, *, region: str = "WT", alpha: float = 0.05) -> str:
    """Markdown that teaches pairing and multiple-comparison correction with this run's numbers.

    Args:
        table: tidy results.
        comparisons: output of ``stats.compare``.
        region: region to use.
        alpha: significance level.

    Returns:
        A Markdown paragraph (paired vs unpaired p on one comparison; raw vs Holm counts).
    """
    lines = []
    pairs = key_pairs(table)
    if pairs:
        a, b = pairs[0]
        sel = lambda c: table[(table.model == c["model"]) & (table.attack == c["attack"]) & np.isclose(table.eps, c["eps"]) & (table.region == region)]  # noqa: E731
        j = sel(a)[["case_id", "dice"]].merge(sel(b)[["case_id", "dice"]], on="case_id", suffixes=("_a", "_b")).dropna()
        if len(j) >= 3:
            d = j.dice_a - j.dice_b
            p_unpaired = sps.mannwhitneyu(j.dice_a, j.dice_b, alternative="two-sided").pvalue
            p_paired = sps.wilcoxon(j.dice_a, j.dice_b, zero_method="wilcox").pvalue if (d != 0).any() else 1.0
            lines.append(
                f"**Pairing.** {region} Dice, {a['model']} {a['attack']} vs {b['model']} {b['attack']} ε={b['eps']:g}, {len(j)} cases: "
                f"the between-case standard deviation is {j.dice_a.std():.3f} / {j.dice_b.std():.3f}, but the per-case differences "
                f"have mean {d.mean():.3f} and are positive in {(d > 0).sum()} of {len(d)} cases. "
                f"Unpaired Mann–Whitney p = {p_unpaired:.2g}; paired Wilcoxon p = {p_paired:.2g}."
            )
    c = comparisons[comparisons.region == region] if "region" in comparisons else comparisons
    if len(c):
        raw = int((c.pvalue < alpha).sum())
        adj = int((c.p_holm < alpha).sum())
        lines.append(
            f"**Multiple comparisons.** This run makes {len(c)} comparisons on {region}. With raw p < {alpha}, {raw} look significant; "
            f"after Holm's correction within each family, {adj} remain. At α = {alpha}, about {alpha * len(c):.1f} false positives "
            "would be expected among raw p-values if no effect were real; Holm keeps the chance of even one below α per family."
        )
    return "\n\n".join(lines) if lines else "_Not enough paired results in this run for the example._"


def _md_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A Markdown table (hand-written: pandas' to_markdown needs the optional 'tabulate')."""
    cols = list(df.columns)

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(v, floatfmt)
        return str(v).replace("|", "/")

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False, name=None)]
    return "\n".join(out)


def write_report(
    run: RunPaths,
    *,
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    claims: pd.DataFrame,
    region: str = "WT",
    figures: dict[str, Any] | None = None,
) -> Path:
    """Write ``report/report.md`` with its tables (CSV) and the run's figures (PNG copies).

    Args:
        run: the run folder.
        summary, comparisons, claims: tables from ``robustseg_lib.stats``.
        region: region of the headline tables.
        figures: extra ``name → matplotlib Figure`` to include.

    Returns:
        Path of ``report.md``.
    """
    import json
    import shutil

    rep = run.report
    for name, df in (("summary", summary), ("comparisons", comparisons), ("claims", claims)):
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
        cols = [c for c in ("model", "attack", "eps", "dice_direct", "dice_transfer", "dice_logit_rescaled", "frac_near_zero_grad", "verdict") if c in d.columns]
        diag_lines += [f"`{csv.stem}`:", "", _md_table(d[cols]), ""]
    manifest = json.loads(run.manifest.read_text()) if run.manifest.is_file() else {}
    stages = manifest.get("stages", {})
    mean_col = next((c for c in summary.columns if c.startswith("mean_")), "mean_dice")
    s = summary[(summary.region == region)].copy()
    s["mean [95% CI]"] = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in zip(s[mean_col], s.ci_lo, s.ci_hi)]
    keep = [c for c in ("model", "attack", "target_policy", "eps", "n", "mean [95% CI]") if c in s.columns]
    cmp_r = comparisons[comparisons.region == region]
    cmp_cols = [c for c in ("family", "model_a", "attack_a", "eps_a", "model_b", "attack_b", "eps_b", "n", "mean_a", "mean_b", "effect_size", "pvalue", "p_holm", "significant") if c in cmp_r.columns]
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
        f"## Mean {region} Dice with 95 % bootstrap CI",
        "",
        _md_table(s[keep]),
        "",
        f"## Paired Wilcoxon signed-rank tests ({region}, Holm-adjusted within family)",
        "",
        _md_table(cmp_r[cmp_cols]),
        "",
        "Full tables: [summary.csv](summary.csv), [comparisons.csv](comparisons.csv), [claims.csv](claims.csv).",
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
        lines += ["## Stages", "", _md_table(pd.DataFrame([{"stage": k, "status": v.get("status"), "seconds": v.get("seconds")} for k, v in stages.items()]), ".1f")]
    return atomic_write_text(rep / "report.md", "\n".join(lines) + "\n")
