"""Statistics figures: robustness curves, paired per-case plots and the claims table.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot's global state
(nothing accumulates across calls). Save with ``robustseg_lib.artefacts.atomic_savefig``. In Jupyter the figure
displays when it is a cell's last value or is passed to ``IPython.display.display`` (it renders itself as PNG);
``plt.show()`` does not show it, since pyplot does not know it.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .stats import LOWER_IS_BETTER_METRICS, attack_label, condition_rows, is_diagnostic_attack, paired_wilcoxon


class _Figure(Figure):
    """A Figure that renders itself for Jupyter.

    matplotlib-inline registers its PNG printer for figures only once ``%matplotlib inline`` has run (0.2: not on
    import), so a Figure made without pyplot otherwise displays as ``<Figure size ...>``: ``_repr_png_`` is what
    IPython asks every object for.
    """

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()

__all__ = ["plot_robustness_curves", "plot_paired", "plot_claims"]

#: plot_paired's line colours: a case that got worse from a to b, and one that did not
_WORSE, _NOT_WORSE = "#d62728", "#1f77b4"

_VERDICT_COLOURS = {
    "holds": "#c7e9c0",
    "partly tested": "#e5f5e0",  # every test present supports, part of the claim untested: paler than holds
    "contradicted": "#fcbba1",
    "not supported": "#fdd0a2",
    "mixed": "#fee391",
    "not tested": "#e0e0e0",
    "does not hold": "#fcbba1",  # the verdict of claims tables written before "contradicted"/"not supported"
}


def _check(table: Any, cols: Sequence[str]) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table: expected a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"table: missing columns {missing}")
    return table


def _labels(df: pd.DataFrame) -> pd.Series:
    pol = df["target_policy"] if "target_policy" in df.columns else pd.Series([None] * len(df), index=df.index)
    return pd.Series([attack_label(a, p) for a, p in zip(df["attack"], pol)], index=df.index)


def plot_robustness_curves(
    table: pd.DataFrame,
    region: str = "WT",
    *,
    metric: str = "dice",
    attacks: Sequence[str] | None = None,
    include_diagnostics: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
) -> Figure:
    """Mean ``metric`` vs eps per model, one panel per attack, with 95 % bootstrap CI bands.

    Each model's clean rows are drawn at eps = 0 in every panel so the curves start from clean
    performance; an attack's own eps = 0 rows of such a model (the same predictions) are left out, so that each case
    counts once there and the band at eps 0 is not narrowed by duplicates. Targeted attacks are split by
    ``target_policy`` (``tifgsm[erase]``).

    Args:
        table: tidy result table.
        region: region to plot.
        metric: score column.
        attacks: attack labels to show, each with rows in ``region`` (default: all non-clean, non-diagnostic ones).
        include_diagnostics: also show ``transfer_*`` / ``*_logit_rescaled`` attacks.
        n_boot, seed: seaborn's bootstrap for the CI bands.

    Returns:
        The figure.
    """
    _check(table, ["case_id", "model", "attack", "eps", "region", metric])
    t = table.loc[table["region"] == region].copy()
    if t.empty:
        raise ValueError(f"region: no rows for {region!r}")
    t["attack_label"] = _labels(t)
    clean = t.loc[t["attack"] == "clean"]
    att = t.loc[t["attack"] != "clean"]
    if not include_diagnostics:
        att = att.loc[~att["attack"].astype(str).map(is_diagnostic_attack)]
    if attacks is None:
        labels = sorted(att["attack_label"].unique())
    else:
        if isinstance(attacks, str):
            raise ValueError(f"attacks: expected a sequence of attack labels, got the string {attacks!r}")
        labels = list(attacks)
        unknown = [lab for lab in labels if lab not in set(att["attack_label"])]
        if unknown:  # a panel of clean points only, titled with an attack that has no rows
            raise ValueError(f"attacks: no {region} rows for {unknown}; available: {sorted(att['attack_label'].unique())}"
                             + ("" if include_diagnostics else " (diagnostic attacks need include_diagnostics=True)"))
    if not labels:
        labels = ["clean"]
    hue_order = sorted(t["model"].unique())
    palette = dict(zip(hue_order, sns.color_palette(n_colors=len(hue_order))))
    fig = _Figure(figsize=(4.2 * len(labels), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(labels), sharey=True, squeeze=False)[0])
    for ax, lab in zip(axes, labels):
        sub = att.loc[att["attack_label"] == lab]
        models = set(sub["model"]) if not sub.empty else set(clean["model"])
        sub = sub.loc[~((sub["eps"].astype(float) == 0) & sub["model"].isin(set(clean["model"])))]  # clean stands for it
        data = pd.concat([clean.loc[clean["model"].isin(models)], sub], ignore_index=True)
        data = data.assign(eps=data["eps"].astype(float))
        # a model measured at fewer budgets than the panel's grid (e.g. the comparison temperatures, clean and the
        # largest eps only) is drawn as points with error bars: a line would read as a measured curve
        n_eps = data.groupby("model")["eps"].nunique()
        sparse = set(n_eps.index[n_eps < n_eps.max()])
        kw = dict(x="eps", y=metric, hue="model", hue_order=hue_order, palette=palette, style="model", markers=True,
                  dashes=False, errorbar=("ci", 95), n_boot=n_boot, seed=seed, ax=ax)
        sns.lineplot(data=data.loc[~data["model"].isin(sparse)], **kw)
        if sparse:
            sns.lineplot(data=data.loc[data["model"].isin(sparse)], err_style="bars", linestyle="", legend=False, **kw)
        ax.set_title(lab)
        ax.set_xlabel("eps (z-score units)")
        ax.set_ylabel(f"mean {metric} ({region})")
        ax.grid(alpha=0.3)
        if ax is not axes[-1] and ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.suptitle(f"Robustness: {region} {metric} vs eps (95 % CI)")
    return fig


def _select(table: pd.DataFrame, cond: Mapping[str, Any], name: str) -> pd.DataFrame:
    if not isinstance(cond, Mapping) or not cond:
        raise ValueError(f"{name}: expected a non-empty dict of column -> value")
    unknown = [k for k in cond if k not in table.columns]
    if unknown:
        raise ValueError(f"{name}: unknown columns {unknown}")
    sel = table.loc[condition_rows(table, cond)]
    if sel.empty:
        raise ValueError(f"{name}: no rows match {dict(cond)}")
    if sel["case_id"].duplicated().any():
        raise ValueError(f"{name}: {dict(cond)} matches several rows per case; add keys (e.g. eps, target_policy)")
    return sel


def _cond_name(cond: Mapping[str, Any]) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in cond.values())


def plot_paired(
    table: pd.DataFrame,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    region: str = "WT",
    *,
    metric: str = "dice",
) -> Figure:
    """Per-case paired plot of two conditions: a line per case plus box and strip plots.

    A case's line is red where ``b`` is worse than ``a`` (a lower Dice; a higher distance for the metrics of
    ``stats.LOWER_IS_BETTER_METRICS`` such as HD95) and blue otherwise; the legend says so.

    Args:
        table: tidy result table.
        a, b: column -> value filters selecting one row per case, e.g.
            ``{"model": "baseline", "attack": "clean"}``.
        region: region to plot.
        metric: score column.

    Returns:
        The figure (title carries n, the raw (not Holm-adjusted) paired Wilcoxon p-value and the
        rank-biserial r).
    """
    _check(table, ["case_id", "region", metric])
    t = table.loc[table["region"] == region]
    if t.empty:
        raise ValueError(f"region: no rows for {region!r}")
    sa = _select(t, a, "a")[["case_id", metric]]
    sb = _select(t, b, "b")[["case_id", metric]]
    j = sa.merge(sb, on="case_id", suffixes=("_a", "_b")).dropna()
    if j.empty:
        raise ValueError("a, b: no case_id overlap between the two conditions")
    la, lb = _cond_name(a), _cond_name(b)
    long = pd.DataFrame(
        {"condition": [la] * len(j) + [lb] * len(j), metric: np.r_[j[f"{metric}_a"], j[f"{metric}_b"]]}
    )
    fig = _Figure(figsize=(5.0, 4.2), layout="constrained")
    ax = fig.subplots()
    lower_better = metric in LOWER_IS_BETTER_METRICS
    for ya, yb in zip(j[f"{metric}_a"], j[f"{metric}_b"]):
        worse = yb > ya if lower_better else yb < ya
        ax.plot([0, 1], [ya, yb], color=_WORSE if worse else _NOT_WORSE, alpha=0.4, lw=0.9, zorder=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MatplotlibDeprecationWarning)  # seaborn passes `vert`
        sns.boxplot(data=long, x="condition", y=metric, order=[la, lb], width=0.35, fliersize=0,
                    boxprops={"alpha": 0.35}, ax=ax)  # fmt: skip
    sns.stripplot(data=long, x="condition", y=metric, order=[la, lb], color="k", size=3, jitter=0.05, ax=ax)
    w = paired_wilcoxon(j[f"{metric}_a"].to_numpy(), j[f"{metric}_b"].to_numpy())
    # the raw (unadjusted) p of this one test; the report's significance is Holm-adjusted within a family
    ax.set_title(f"{region} {metric}: n={len(j)}, Wilcoxon raw p={w.pvalue:.2g}, r={w.effect_size:+.2f}", fontsize=10)
    ax.set_xlabel("")
    ax.set_ylabel(f"{metric} ({region})")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(handles=[Line2D([], [], color=_WORSE, label="worse on the right"),
                       Line2D([], [], color=_NOT_WORSE, label="unchanged or better")],
              fontsize=7, loc="best")  # fmt: skip
    return fig


def plot_claims(claims_table: pd.DataFrame, *, wrap: int = 70) -> Figure:
    """Render the :func:`robustseg_lib.stats.claims` table with verdicts colour-coded.

    Args:
        claims_table: output of ``stats.claims``.
        wrap: wrap width (characters) for the statement and evidence text.

    Returns:
        The figure.
    """
    import textwrap

    _check(claims_table, ["claim", "statement", "verdict", "evidence"])
    if claims_table.empty:
        raise ValueError("claims_table: no rows")
    cells, heights = [], []
    for _, r in claims_table.iterrows():
        st = textwrap.fill(str(r["statement"]), wrap // 2 + 10)
        ev = textwrap.fill(str(r["evidence"]), wrap)
        cells.append([r["claim"], st, r["verdict"], ev])
        heights.append(max(st.count("\n"), ev.count("\n")) + 1)
    fig = _Figure(figsize=(14, 0.6 + 0.28 * sum(heights) + 0.3 * len(cells)), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    tab = ax.table(cellText=cells, colLabels=["claim", "statement", "verdict", "evidence"],
                   colWidths=[0.05, 0.33, 0.1, 0.52], loc="upper center", cellLoc="left")  # fmt: skip
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    total = 1 + sum(heights)
    for (row, col), cell in tab.get_celld().items():
        h = 1 if row == 0 else heights[row - 1]
        cell.set_height(0.95 * h / total)
        if row == 0:
            cell.set_text_props(weight="bold")
        elif col == 2:
            cell.set_facecolor(_VERDICT_COLOURS.get(str(cells[row - 1][2]), "white"))
    return fig
