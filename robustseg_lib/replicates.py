"""Replicate runs: do the verdicts survive another seed?

One run of the chain judges the paper's claims on one draw of everything random: the synthetic cases and their
split, the networks' initialisation and batches, the attacks' random choices. ``robustseg reproduce --seed N`` draws
all of them afresh (the synthetic cases of seed N are other cases: ``data.case_seed``). This module reads finished
run folders, nothing else, and judges the claims in these ways:

- **Per run** (:func:`verdict_table`, :func:`verdict_agreement`): the verdicts of every run side by side, and
  whether they agree.
- **Pooled** (:func:`pooled_claims`): the same tests and rules (``stats.compare``, ``stats.claims_by_region``) on the
  runs' per-case tables stacked, each case named by its run (``seed1/BraTS2021_00003``). A paired test pairs the two
  conditions *within* a case of a run (the same run's models), so pooling adds test cases and power. Like each run's
  own test it is conditional on the trained models (the cases of one run share its networks; training-to-training
  spread is not modelled): read it beside the per-run agreement.
- **Run level** (:func:`run_level_claims`): the same tests and rules again, with the *runs* as the units: each run's
  mean Dice per condition (:func:`run_level_table`) is one paired observation. This is the test that does model
  training-to-training (and data-draw) spread, at the price of few units: it can only decide from
  :func:`runs_for_run_level_test` runs on, more under Holm (:func:`run_level_min_p`).

Which of these a set of runs allows is :func:`replicate_design`: ``--seed N`` alone redraws the synthetic cases too
(*independent* runs: pooled and run level); ``--seed N --set data.seed=0`` keeps the profile's cases and split and
redraws the training and the attacks only (*training replicates* on one test set: run level, where the spread across
runs is then training spread alone, and :func:`case_mean_claims`, the cases as units with each case's Dice averaged
over the trainings; pooling would count every case once per run).

:func:`write_comparison` writes the tables and a Markdown summary (``robustseg compare RUN RUN ...``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .artefacts import atomic_to_csv, atomic_write_text, json_kind, read_json_object
from .checks import check_int
from .stats import is_diagnostic_attack

__all__ = [
    "RunRecord",
    "read_run",
    "parameter_differences",
    "verdict_table",
    "verdict_agreement",
    "dice_by_run",
    "canonical_analysis",
    "shared_cases",
    "case_overlaps",
    "code_version_note",
    "unchecked_training_cases",
    "replicate_design",
    "redrawn_training",
    "RESERVED_LABELS",
    "pooled_table",
    "pooled_empty_truth",
    "pooled_claims",
    "runs_table",
    "write_comparison",
    "run_level_min_p",
    "runs_for_run_level_test",
    "run_level_table",
    "run_level_claims",
    "run_level_spread",
    "case_mean_table",
    "case_mean_claims",
]

RunRecord = dict[str, Any]


#: Every file :func:`write_comparison` may write (its output folder is cleared of these names, and only these).
COMPARISON_FILES = (
    "runs.csv", "parameter_differences.csv", "verdicts_by_run.csv", "agreement.csv", "dice_by_run.csv",
    "pooled_comparisons.csv", "pooled_claims_by_region.csv", "run_level_table.csv", "run_level_comparisons.csv",
    "run_level_spread.csv", "run_level_claims_by_region.csv", "case_mean_comparisons.csv",
    "case_mean_claims_by_region.csv", "comparison.md",
)  # fmt: skip


def _labels(run_dirs: Sequence[str | Path], labels: Sequence[str] | None) -> list[str]:
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if len(run_dirs) < 2:
        raise ValueError(f"compare needs at least two run folders, got {len(run_dirs)}: "
                         f"{', '.join(map(str, run_dirs)) or 'none'}")
    if labels is None:
        labels = [Path(d).name for d in run_dirs]
    labels = [str(x) for x in labels]
    if len(labels) != len(run_dirs):
        raise ValueError(f"labels: {len(labels)} labels for {len(run_dirs)} run folders")
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup or any(not x or "/" in x for x in labels):
        raise ValueError(f"labels: must be distinct, non-empty and without '/', got {labels} "
                         "(pass labels=..., or --labels to robustseg compare)")
    taken = sorted(set(labels) & RESERVED_LABELS)
    if taken:
        raise ValueError(f"labels: {taken} name columns of the comparison tables; choose other labels")
    return labels


#: Column names of the comparison tables, which a run's label (a column of its own) must not repeat.
RESERVED_LABELS = frozenset(
    {"run", "region", "model", "attack", "target_policy", "source_model", "eps", "min", "max", "spread", "analysis",
     "claim", "agreement", "pooled", "stage", "parameter"}
)  # fmt: skip


def run_level_min_p(n_runs: int) -> float:
    """The smallest two-sided p an exact test with the runs (trainings) as units can reach.

    With ``n`` runs, a sign test or Wilcoxon signed-rank test of one per-run difference (e.g. each run's mean Dice of
    distillation minus adversarial training) is most significant when all ``n`` differences share a sign:
    p = 2 · 2⁻ⁿ for both tests (``scipy.stats.binomtest(n, n)``).

    Args:
        n_runs: number of runs, ≥ 1.

    Returns:
        The smallest attainable two-sided p.
    """
    from scipy.stats import binomtest

    check_int(n_runs, "n_runs", minimum=1)
    return float(binomtest(n_runs, n_runs, 0.5).pvalue)


def runs_for_run_level_test(alpha: float = 0.05, family_size: int = 1) -> int:
    """The fewest runs with which a run-level test (:func:`run_level_min_p`) can reach ``p < alpha`` at all.

    Args:
        alpha: significance level, in (0, 1).
        family_size: tests in the test's Holm family (the smallest p is multiplied by it), ≥ 1.

    Returns:
        The smallest ``n`` with ``family_size · run_level_min_p(n) < alpha`` (6 at 0.05 and 8 at 0.01 for one test;
        11 for a family of 36 at 0.05).
    """
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha!r}")
    check_int(family_size, "family_size", minimum=1)
    n = 1
    while family_size * run_level_min_p(n) >= alpha:
        n += 1
    return n


def _run_level_note(n_runs: int, alpha: float, computed: bool = True) -> str:
    """comparison.md's sentence, in the pooled section, on what the runs, as units, can and cannot show
    (``computed``: whether the run-level section follows)."""
    floor, need = run_level_min_p(n_runs), runs_for_run_level_test(alpha)
    head = ("It does not model training-to-training spread: that needs the runs themselves as units, and with "
            f"{n_runs} runs an exact two-sided test over runs ")  # fmt: skip
    if n_runs < need:
        return (head + f"cannot go below p = {floor:.3g}; it can reach p < {alpha:g} from {need} runs on. Until then "
                "the per-run columns and their agreement are the evidence about that spread.")  # fmt: skip
    where = "the run-level column (below) is that test" if computed else "that test was not run (run_level=False)"
    return head + f"can reach p = {floor:.3g} < {alpha:g}: {where}."


#: The comparison families the claims read (C1, C3, C4), whose sizes set what a run-level test can reach.
_CLAIM_FAMILIES = ("attack_effect", "distill_vs_advtrain", "defense_vs_clean")


def _run_level_reach(n_runs: int, comparisons: pd.DataFrame, alpha: float) -> str:
    """comparison.md's sentence on which run-level families can reach significance with ``n_runs`` runs."""
    fam = comparisons[comparisons["family"].isin(_CLAIM_FAMILIES)]
    sizes = fam.groupby(["family", "region"]).size()
    lo, hi = int(sizes.min()), int(sizes.max())
    floor = run_level_min_p(n_runs)
    txt = (f"With {n_runs} runs no two-sided p can go below {floor:.3g} (every run's difference of one sign), and Holm "
           f"multiplies the smallest p of a family by its size ({lo}–{hi} tests in the families C1, C3 and C4 read), so "
           f"the smallest reachable p_holm is {min(1.0, lo * floor):.3g}–{min(1.0, hi * floor):.3g}. ")  # fmt: skip
    if hi * floor < alpha:
        return txt + f"Every family can reach p_holm < {alpha:g}."
    need = runs_for_run_level_test(alpha, hi)
    if lo * floor >= alpha:
        return txt + (f"No run-level test can reach p_holm < {alpha:g}: its \"not supported\" verdicts say that the runs "
                      f"are too few, not that the effects are absent. Every family can from {need} runs on.")  # fmt: skip
    short = "; ".join(f"{f}, {n} tests" for f, n in sizes[sizes * floor >= alpha].groupby(level=0).max().items())
    return txt + (f"The largest families cannot reach p_holm < {alpha:g} ({short}), so a \"not supported\" "
                  f"there says that the runs are too few; every family can from {need} runs on.")  # fmt: skip


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_json_object(path: Path, hint: str) -> dict[str, Any]:
    """The JSON object in ``path`` (:func:`artefacts.read_json_object`), with ``hint`` added to its errors."""
    try:
        return read_json_object(path)
    except ValueError as exc:
        raise ValueError(f"{exc}; {hint}") from None


def _read_manifest(path: Path) -> dict[str, Any]:
    """A run's ``manifest.json``, checked for what a comparison reads: an object whose ``stages`` map each stage to an
    object (``seconds`` a number or null), whose ``parameters`` map each stage to an object (``seed`` an integer,
    ``train_seed`` an integer or null) and whose ``machine`` is an object (``gpu`` a string or null) or null; ValueError
    naming the file and the key otherwise."""
    hint = "restore the run's manifest, or rerun the chain (robustseg reproduce)"
    man = _read_json_object(path, hint)

    def bad(key: str, want: str, value: Any) -> ValueError:
        return ValueError(f"{path}: {key!r} must be {want}, got {json_kind(value)}; {hint}")

    stages = man.get("stages", {})
    if not isinstance(stages, dict):
        raise bad("stages", "an object mapping each stage to its record", stages)
    for stage, rec in stages.items():
        if not isinstance(rec, dict):
            raise bad(f"stages.{stage}", "an object (status, seconds, ...)", rec)
        sec = rec.get("seconds")
        if sec is not None and (isinstance(sec, bool) or not isinstance(sec, (int, float))):
            raise bad(f"stages.{stage}.seconds", "a number or null", sec)
    params = man.get("parameters", {})
    if not isinstance(params, dict):
        raise bad("parameters", "an object mapping each stage to its parameters", params)
    for stage, prm in params.items():
        if not isinstance(prm, dict):
            raise bad(f"parameters.{stage}", "an object of parameter values", prm)
        if "seed" in prm and not _is_int(prm["seed"]):
            raise bad(f"parameters.{stage}.seed", "an integer", prm["seed"])
        if prm.get("train_seed") is not None and not _is_int(prm["train_seed"]):
            raise bad(f"parameters.{stage}.train_seed", "an integer or null", prm["train_seed"])
    machine = man.get("machine")
    if machine is not None and not isinstance(machine, dict):
        raise bad("machine", "an object or null", machine)
    if machine and machine.get("gpu") is not None and not isinstance(machine["gpu"], str):
        raise bad("machine.gpu", "a string or null", machine["gpu"])
    return man


def _read_table(
    path: Path,
    hint: str,
    columns: Sequence[str] = (),
    *,
    counts: Sequence[str] = (),
    numbers: Sequence[str] = (),
    rows: bool = False,
    text: Sequence[str] = ("case_id",),
) -> pd.DataFrame:
    """A run's CSV table (``text`` columns read as text), checked for what a comparison reads; ValueError naming the
    file (and column) when it is empty or not CSV, lacks one of ``columns``, has no rows where ``rows``, or holds
    something other than whole numbers in a ``counts`` column (blanks included) or than numbers or blanks in a
    ``numbers`` column. ``hint`` says what to do."""
    try:
        t = pd.read_csv(path, dtype={c: str for c in text})
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty (not even a header row); {hint}") from None
    except ValueError as exc:  # pandas' ParserError, a UnicodeDecodeError
        raise ValueError(f"{path}: cannot be read as a CSV table ({type(exc).__name__}: {exc}); {hint}") from None
    missing = [c for c in columns if c not in t.columns]
    if missing:
        raise ValueError(f"{path}: lacks the column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
                         f"(it has {', '.join(map(str, t.columns))}); {hint}")  # fmt: skip
    if rows and t.empty:
        raise ValueError(f"{path}: no rows, only its header; {hint}")
    for c in (*counts, *numbers):
        v = pd.to_numeric(t[c], errors="coerce").astype(float)
        bad = v.isna() & t[c].notna()
        if c in counts:
            bad |= ~np.isfinite(v) | (v % 1 != 0)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            val = t[c].iloc[i]
            want = "whole numbers" if c in counts else "numbers or blanks"
            raise ValueError(f"{path}: column {c!r} must hold {want}, but its row {i + 1} has "
                             f"{'a blank' if pd.isna(val) else repr(val)}; {hint}")  # fmt: skip
    return t


#: The columns of a run's ``tables/claims_by_region.csv`` that a comparison reads.
_CLAIMS_COLUMNS = ("analysis", "region", "n_cases", "n_excluded", "claim", "verdict", "n_tests", "n_support",
                   "n_against", "rel_drop")  # fmt: skip


def read_run(run_dir: str | Path) -> RunRecord:
    """What a finished run folder says about itself: its manifest and its claims.

    Args:
        run_dir: a run folder of ``robustseg reproduce`` (or a committed copy holding ``manifest.json``, ``tables/``
            and, for the pooled analysis, ``attacks/``).

    Returns:
        ``{"path", "profile", "git_sha", "code_versions", "machine", "seeds", "parameters", "stage_seconds",
        "claims_by_region", "n_cases", "case_ids", "has_volumes", "data_case_ids", "test_volumes"}``; ``git_sha`` is
        the manifest's (its last call's), ``code_versions`` the distinct commits its stages ran at, in chain order (a
        resumed run may mix them; the manifest's ``git_sha`` where no stage records one, ``"unknown"`` where neither
        does), ``seeds`` is the set of seeds its stages ran with,
        ``claims_by_region`` a DataFrame, ``case_ids`` the evaluated cases (``tables/results_02_unet.csv``; empty
        when absent), ``has_volumes`` whether notebook 01's region volumes (``tables/data_region_volumes.csv``, which
        the empty-truth analyses need) are there, ``data_case_ids`` every case of the run's data (those volumes'
        ids, a bootstrap copy's id as its case's; empty when absent), ``test_volumes`` those volumes' rows of the
        evaluated cases (indexed and sorted by case id; None when absent). Without the volumes table,
        ``data_case_ids`` are those of the run's ``data/prepared.npz`` where the folder still holds it (only its
        ``case_ids`` member is read).

    Raises:
        FileNotFoundError: the folder, its manifest or its ``tables/claims_by_region.csv`` is missing (named).
        ValueError: the manifest is not a JSON object of the run's stages and parameters (the file and key named), a
            stage of it did not finish (named), a table read is empty, not CSV, without a column read, or with a
            count or number column that holds something else (the file and column named; ``claims_by_region.csv``
            without rows too), or ``data/prepared.npz``, read for want of the volumes table, has no readable
            ``case_ids`` (named).
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: run folder does not exist")
    man_path = root / "manifest.json"
    if not man_path.is_file():
        raise FileNotFoundError(f"{man_path}: no manifest; is {root} a run folder of `robustseg reproduce`?")
    man = _read_manifest(man_path)
    unfinished = [f"{s} ({rec.get('status')})" for s, rec in man.get("stages", {}).items() if rec.get("status") != "done"]
    if unfinished or "08_statistics" not in man.get("stages", {}):
        raise ValueError(f"{root}: the chain has not finished for its last request (stages not done: "
                         f"{', '.join(unfinished or ['08_statistics'])}); rerun it without --only")
    claims_path = root / "tables" / "claims_by_region.csv"
    if not claims_path.is_file():
        raise FileNotFoundError(f"{claims_path}: no verdicts by region; rerun notebook 08")
    cbr = _read_table(claims_path, "restore it, or rerun notebook 08", _CLAIMS_COLUMNS, rows=True,
                      counts=("n_cases", "n_tests", "n_support", "n_against"), numbers=("n_excluded", "rel_drop"))
    params = man.get("parameters", {})
    res = root / "tables" / "results_02_unet.csv"
    case_ids: set[str] = set()
    if res.is_file():
        case_ids = set(_read_table(res, "restore it, or rerun notebook 02", ["case_id"])["case_id"])
    vols = root / "tables" / "data_region_volumes.csv"
    data_ids: set[str] = set()
    test_vols = None
    prepared = root / "data" / "prepared.npz"
    if vols.is_file():
        from .data import original_case_id  # torch: only for this, not for the verdict tables

        v = _read_table(vols, "restore it, or rerun notebook 01", ["case_id"])
        data_ids = set(v["case_id"].map(original_case_id))
        test_vols = v[v["case_id"].isin(case_ids)].set_index("case_id").sort_index()
    elif prepared.is_file():  # a run folder without the volumes table (an older run): its prepared data name the cases
        data_ids = _prepared_case_ids(prepared)
    from .runtime import machine_summary  # torch, as above

    stage_shas = [str(rec["git_sha"]) for rec in man["stages"].values() if rec.get("git_sha")]
    return {
        "path": str(root),
        "profile": man.get("profile", ""),
        "git_sha": man.get("git_sha", ""),
        "code_versions": list(dict.fromkeys(stage_shas)) or [str(man.get("git_sha") or "unknown")],
        "machine": machine_summary(man.get("machine") or {}),
        "seeds": sorted({p["seed"] for p in params.values() if "seed" in p}),
        "parameters": params,
        "stage_seconds": {s: rec.get("seconds") for s, rec in man["stages"].items()},
        "claims_by_region": cbr,
        "n_cases": int(cbr["n_cases"].max()),
        "case_ids": case_ids,
        "has_volumes": vols.is_file(),
        "data_case_ids": data_ids,
        "test_volumes": test_vols,
    }


def _prepared_case_ids(path: Path) -> set[str]:
    """Every case of a run's data from its ``data/prepared.npz`` (``case_ids`` only: the images stay on disk), a
    bootstrap copy's id as its case's; ValueError naming the file when it cannot be read."""
    from .data import original_case_id  # torch, as in read_run

    try:
        with np.load(path, allow_pickle=False) as npz:
            ids = npz["case_ids"]
    except Exception as exc:  # a truncated zip, a missing member, an object array
        raise ValueError(f"{path}: cannot read its case_ids ({type(exc).__name__}: {exc}); restore it, or remove it "
                         "to compare the run without its training cases") from None
    return {original_case_id(str(c)) for c in ids}


def parameter_differences(runs: Sequence[RunRecord], labels: Sequence[str]) -> pd.DataFrame:
    """The stage parameters whose values are not the same in every run.

    Args:
        runs: :func:`read_run` records.
        labels: one name per run (the columns).

    Returns:
        One row per differing ``stage``/``parameter``, one column per run (its value as text; ``—`` when the run's
        stage lacks the parameter). Empty (with those columns) when the runs ran with identical parameters.
    """
    stages = sorted({s for r in runs for s in r["parameters"]})
    rows = []
    for stage in stages:
        names = sorted({k for r in runs for k in r["parameters"].get(stage, {})})
        for name in names:
            vals = [r["parameters"].get(stage, {}).get(name, "—") for r in runs]
            if any(json.dumps(v, sort_keys=True) != json.dumps(vals[0], sort_keys=True) for v in vals[1:]):
                rows.append({"stage": stage, "parameter": name, **{lab: str(v) for lab, v in zip(labels, vals)}})
    return pd.DataFrame(rows, columns=["stage", "parameter", *labels])


def verdict_table(runs: Sequence[RunRecord], labels: Sequence[str]) -> pd.DataFrame:
    """Every run's verdicts, long form.

    Args:
        runs: :func:`read_run` records.
        labels: one name per run.

    Returns:
        Columns ``run, analysis, claim, verdict, n_cases, n_excluded, n_tests, n_support, n_against, rel_drop``;
        ``analysis`` is :func:`canonical_analysis` of each run's own name. Where some run judges a region without its
        empty-truth cases and another run has no such case, the latter's analysis of the whole region *is* that
        analysis (nothing to exclude): it is listed under both names, with ``n_excluded`` 0. A run without notebook
        01's region volumes could not look for such cases and is left out of those analyses.
    """
    cols = ["analysis", "claim", "verdict", "n_cases", "n_excluded", "n_tests", "n_support", "n_against", "rel_drop"]
    tables = [canonical_analysis(r["claims_by_region"]) for r in runs]
    excluded = {a: reg for t in tables for a, reg in zip(t["analysis"], t["region"]) if a != reg}
    frames = []
    for t, lab, run in zip(tables, labels, runs):
        for analysis, region in excluded.items():
            if run.get("has_volumes", True) and not (t["analysis"] == analysis).any():
                t = pd.concat([t, t[t["analysis"] == region].assign(analysis=analysis)], ignore_index=True)
        frames.append(t[cols].assign(run=lab))
    return pd.concat(frames, ignore_index=True)[["run", *cols]]


def canonical_analysis(claims_by_region: pd.DataFrame) -> pd.DataFrame:
    """Name each analysis so that runs can be lined up: the region, or ``"<region> without empty-truth cases"``.

    A run names its exclusion analysis by its own count (``"ET, 4 empty-truth cases excluded"``); another seed has
    another count, or no such case and no such analysis. The count stays in ``n_excluded``.

    Args:
        claims_by_region: ``stats.claims_by_region`` output (or a run's ``claims_by_region.csv``).

    Returns:
        A copy with ``analysis`` renamed.
    """
    out = claims_by_region.copy()
    excl = out["n_excluded"].fillna(0).astype(int) > 0
    out["analysis"] = out["region"].astype(str).where(~excl, out["region"].astype(str) + " without empty-truth cases")
    return out


def dice_by_run(run_dirs: Sequence[str | Path], labels: Sequence[str]) -> pd.DataFrame:
    """Mean Dice of every condition in every run (each run's ``tables/summary.csv``), side by side.

    Args:
        run_dirs: finished run folders.
        labels: one name per run.

    Returns:
        Columns ``region, model, attack, target_policy, eps``, one column of mean Dice per run, then ``min``,
        ``max`` and ``spread`` (max − min) over the runs; transfer attacks and gradient-masking diagnostics are left
        out, and a condition missing from a run is NaN there.

    Raises:
        FileNotFoundError: a run has no ``tables/summary.csv`` (named).
        ValueError: a summary table is empty, not CSV, lacks a column read, or holds other than numbers in ``eps`` or
            ``mean_dice`` (the file and column named).
    """
    keys = ["region", "model", "attack", "target_policy", "eps"]
    merged: pd.DataFrame | None = None
    for d, lab in zip(run_dirs, labels):
        f = Path(d) / "tables" / "summary.csv"
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no summary table; rerun notebook 08")
        t = _read_table(f, "restore it, or rerun notebook 08", ["region", "model", "attack", "eps", "mean_dice"],
                        numbers=("eps", "mean_dice"), text=("target_policy", "source_model"))
        if "target_policy" not in t:
            t["target_policy"] = ""
        keep = ~t["attack"].astype(str).map(is_diagnostic_attack)
        keep &= (t["attack"] == "clean") | (t["eps"] > 0)  # an attack at eps 0 repeats the clean row
        t = t.loc[keep, keys + ["mean_dice"]].assign(target_policy=lambda x: x["target_policy"].fillna(""))
        t = t.rename(columns={"mean_dice": lab})
        merged = t if merged is None else merged.merge(t, on=keys, how="outer")
    assert merged is not None
    vals = merged[list(labels)]
    out = merged.assign(min=vals.min(axis=1), max=vals.max(axis=1))
    out["spread"] = out["max"] - out["min"]
    order = {"clean": 0, "fgsm": 1, "ifgsm": 2, "tifgsm": 3}
    out = out.assign(_a=out["attack"].map(order).fillna(9), _m=out["model"].map({"baseline": 0, "distilled": 1, "advtrain": 2}).fillna(9))
    return out.sort_values(["region", "_m", "model", "_a", "target_policy", "eps"]).drop(columns=["_a", "_m"]).reset_index(drop=True)


def verdict_agreement(
    verdicts: pd.DataFrame,
    pooled: pd.DataFrame | None = None,
    run_level: pd.DataFrame | None = None,
    case_mean: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The verdicts side by side, with how often each was reached.

    Args:
        verdicts: :func:`verdict_table`.
        pooled: :func:`pooled_claims` (optional): adds a ``pooled`` column.
        run_level: :func:`run_level_claims` (optional): adds a ``run_level`` column.
        case_mean: :func:`case_mean_claims` (optional): adds a ``case_mean`` column.

    Returns:
        One row per ``analysis``/``claim`` (analyses in first-seen order), one column per run holding
        ``verdict (n_support/n_tests)``, with ``, k against`` when tests are significant the other way (C2:
        ``verdict (max drop %)``), then ``agreement``: ``"all <verdict>"`` or
        ``"<verdict> k, <verdict> m"`` (most frequent first), then ``pooled``, ``run_level`` and ``case_mean``
        when given.
    """

    def cell(r: pd.Series) -> str:
        if r["claim"] == "C2" and pd.notna(r["rel_drop"]):
            return f"{r['verdict']} ({100 * float(r['rel_drop']):.0f} %)"
        against = f", {int(r['n_against'])} against" if int(r["n_against"]) else ""
        return f"{r['verdict']} ({int(r['n_support'])}/{int(r['n_tests'])}{against})"

    v = verdicts.assign(cell=verdicts.apply(cell, axis=1))
    runs = list(pd.unique(v["run"]))
    keys = list(dict.fromkeys(zip(v["analysis"], v["claim"])))
    rows = []
    for analysis, claim in keys:
        g = v[(v["analysis"] == analysis) & (v["claim"] == claim)].set_index("run")
        row: dict[str, Any] = {"analysis": analysis, "claim": claim}
        row.update({run: g["cell"].get(run, "—") for run in runs})
        counts = g["verdict"].value_counts()
        missing = len(runs) - len(g)
        if len(counts) == 1 and not missing:
            row["agreement"] = f"all {counts.index[0]}"
        else:
            parts = [f"{k} {n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
            row["agreement"] = ", ".join(parts + ([f"absent {missing}"] if missing else []))
        rows.append(row)
    out = pd.DataFrame(rows, columns=["analysis", "claim", *runs, "agreement"])
    for name, extra in (("pooled", pooled), ("run_level", run_level), ("case_mean", case_mean)):
        if extra is not None:
            p = extra.assign(cell=extra.apply(cell, axis=1)).set_index(["analysis", "claim"])["cell"]
            out[name] = [p.get((a, c), "—") for a, c in zip(out["analysis"], out["claim"])]
    return out


def case_overlaps(runs: Sequence[RunRecord], labels: Sequence[str]) -> list[tuple[str, str, str]]:
    """Pairs of runs that may hold the same patients, and in which role: what makes runs not independent.

    A synthetic patient is its generator seed: case ``i`` of data seed ``s`` is ``case_seed(s, i)`` whatever the
    shape, number of cases or split, and with notebook 01's ``train_seed`` the training and validation cases are drawn
    from that seed instead (:func:`data.synthetic_case_seeds`). Two synthetic runs may share test patients when their
    data seeds are equal; one run's training or validation cases may be another's test patients when its training seed
    is the other's data seed; and two runs may train on the same patients when their training seeds are equal. The
    test is by seed, not by case index: for sets of tens of cases the indices overlap all but surely. A real patient
    is its case id: two runs read the same cases when they read the same folder or their evaluated ids overlap (the
    same data under another path; ids are compared by patient, :func:`data.patient_id`, so two timepoints of one
    BraTS 2023/2024 subject count as one patient), and a run's training and validation ids are those of its region volumes
    (``tables/data_region_volumes.csv``) outside its evaluated ids. A real run and a synthetic one are compared by
    case ids too, since a folder may hold the synthetic cases our writers wrote (so a real BraTS folder and a
    synthetic set in its layout look shared: compare such runs without pooling anyway).

    Args:
        runs: :func:`read_run` records.
        labels: one name per run.

    Returns:
        ``[(label_a, label_b, what), ...]``, one entry per pair, ``what`` the first of ``"the same folder"``,
        ``"test cases"``, ``"<a>'s training cases are <b>'s test cases"`` (either way round) and ``"training
        cases"`` that holds; empty when no two runs may share a patient.
    """
    out = []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            what = _overlap(runs[i], runs[j], labels[i], labels[j])
            if what:
                out.append((labels[i], labels[j], what))
    return out


def _overlap(ra: RunRecord, rb: RunRecord, la: str, lb: str) -> str:
    """:func:`case_overlaps` for one pair: what the two runs may share, or "" when nothing."""
    a, b = (r["parameters"].get("01_data", {}) for r in (ra, rb))
    if a.get("data_dir") or b.get("data_dir"):  # by case ids, a synthetic run's too: a folder may hold our writers' cases
        if a.get("data_dir") == b.get("data_dir"):
            return "the same folder"
        from .data import patient_id  # as in read_run: torch only here

        test_a, test_b = ra.get("case_ids", set()), rb.get("case_ids", set())
        train_a, train_b = ra.get("data_case_ids", set()) - test_a, rb.get("data_case_ids", set()) - test_b
        # by patient: two scans of one BraTS 2023/2024 subject (-000, -001) are the same patient in two runs
        test_a, test_b, train_a, train_b = ({patient_id(c) for c in ids} for ids in (test_a, test_b, train_a, train_b))
    else:  # one synthetic patient per generator seed: compare the seeds of the test and the training cases
        test_a, test_b = {a.get("seed")}, {b.get("seed")}
        train_a, train_b = {_training_data_seed(ra)}, {_training_data_seed(rb)}
    if test_a & test_b:
        return "test cases"
    if train_a & test_b:
        return f"{la}'s training cases are {lb}'s test cases"
    if test_a & train_b:
        return f"{lb}'s training cases are {la}'s test cases"
    return "training cases" if train_a & train_b else ""


def code_version_note(runs: Sequence[RunRecord], labels: Sequence[str]) -> str:
    """comparison.md's sentences on the code the runs ran, where it may differ: runs at other commits (``git_sha``), a
    run whose stages ran at several commits, runs from a checkout with uncommitted changes (``+dirty``: the files may differ
    from the commit named, so two runs naming one commit may still differ) and runs that record no commit.

    Args:
        runs: :func:`read_run` records.
        labels: one name per run.

    Returns:
        The sentences, or ``""`` when every run ran at the same clean, known commit.
    """
    from .runtime import short_sha  # torch, as in read_run

    versions = [list(r.get("code_versions") or [r.get("git_sha") or "unknown"]) for r in runs]
    notes = []
    if len({tuple(v) for v in versions}) > 1 or any(len(v) > 1 for v in versions):
        listing = "; ".join(f"{lab} {', '.join(short_sha(s) for s in v)}" for lab, v in zip(labels, versions))
        notes.append(f"The runs were made by different code versions (git_sha: {listing}): their numbers may differ by "
                     "the code as well as by their seeds and parameters, so the spread across them holds that "
                     "difference too; a code change between the commits that touched the data, the training, the "
                     "attacks or the statistics makes them not replicates of one procedure.")
    dirty = [lab for lab, v in zip(labels, versions) if any("+dirty" in s for s in v)]
    if dirty:
        notes.append(f"{', '.join(dirty)} ran from a checkout with uncommitted changes (`+dirty`): its files may differ from "
                     "the commit named (in code, or only in documents: the manifest does not say which), so whether "
                     "it ran that commit's code could not be checked.")
    unknown = [lab for lab, v in zip(labels, versions) if any(s in ("", "unknown") for s in v)]
    if unknown:
        notes.append(f"{', '.join(unknown)} record no git commit (run outside a git checkout): whether they ran the "
                     "same code as the others could not be checked.")
    return " ".join(notes)


def unchecked_training_cases(runs: Sequence[RunRecord], labels: Sequence[str]) -> list[str]:
    """The runs whose training and validation cases :func:`case_overlaps` needed and could not know: runs compared with
    some other run by case ids (either reads a real folder, and not the same one) whose data case ids are unknown (no
    ``tables/data_region_volumes.csv`` and no ``data/prepared.npz``: e.g. a committed copy of an older run). For
    them only the test cases were compared; whether one trained on another's test patients, or two on the same
    patients, was not checked.

    Args:
        runs: :func:`read_run` records.
        labels: one name per run.

    Returns:
        Their labels, in run order; empty when every needed id is known.
    """
    dirs = [r["parameters"].get("01_data", {}).get("data_dir") or "" for r in runs]
    return [lab for i, (r, lab) in enumerate(zip(runs, labels)) if not r.get("data_case_ids") and any(
        (dirs[i] or dirs[j]) and dirs[i] != dirs[j] for j in range(len(runs)) if j != i)]  # fmt: skip


def shared_cases(runs: Sequence[RunRecord], labels: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of runs that may share a patient (:func:`case_overlaps`), which makes them not independent: a pooled
    test would count a shared test case twice, and a model trained on another run's test patients, or two runs
    trained on the same patients, tie the runs together. A thread-count or machine comparison of one profile and
    seed is such a pair: compare it without pooling.

    Args:
        runs: :func:`read_run` records.
        labels: one name per run.

    Returns:
        ``[(label_a, label_b), ...]``, empty when every run has its own patients.
    """
    return [(la, lb) for la, lb, _ in case_overlaps(runs, labels)]


def _shared_text(overlaps: list[tuple[str, str, str]]) -> str:
    """The pairs of :func:`case_overlaps` in words, for the error and the report."""
    return "; ".join(f"{la} and {lb} ({what})" for la, lb, what in overlaps)


def _training_data_seed(r: RunRecord) -> Any:
    """The seed of a run's training and validation cases (notebook 01's ``train_seed``: synthetic data draws them
    from it, real data bootstraps its own with it; -1 or absent: the data seed, which is no redraw)."""
    p = r["parameters"].get("01_data", {})
    train_seed = p.get("train_seed", -1)
    return p.get("seed") if train_seed in (-1, None) else train_seed


def redrawn_training(runs: Sequence[RunRecord]) -> bool:
    """Whether runs on one test set trained on other draws of the training and validation cases (notebook 01's
    ``train_seed``), so that their spread holds the training cases' draw as well as the training's.

    Args:
        runs: :func:`read_run` records.

    Returns:
        True when two runs' training cases come from different seeds.
    """
    return len({_training_data_seed(r) for r in runs}) > 1


#: The stages that train a model (the baseline; the distilled student, whose teacher is the baseline; the
#: adversarially trained net): training replicates must train each of them anew.
_TRAINING_STAGES = ("02_unet", "06_distillation", "07_adversarial_training")

#: :func:`replicate_design`'s answers.
INDEPENDENT, SAME_TEST_SET, SHARED = "independent", "same test set", "shared"


def replicate_design(runs: Sequence[RunRecord], labels: Sequence[str]) -> str:
    """Which design a set of runs is, and so which cross-run analyses are valid.

    - ``"independent"``: no two runs may share a patient, among their test or their training cases
      (:func:`shared_cases`; e.g. ``--seed N``): pooled and run-level analyses.
    - ``"same test set"``: training replicates: every run generated or read its data with the same notebook-01
      parameters (``workers`` and ``train_seed`` aside), evaluated the same case ids (with the same notebook-01 region
      volumes, where the runs have them: other data under the same ids are other cases), and no two runs trained a model
      (stages 02, 06 and 07, :data:`_TRAINING_STAGES`) with the same seed on the same training cases, so that every
      model is trained anew in every run (e.g. ``--seed N --set data.seed=0``, or with ``--set data.train_seed=N`` too:
      other training cases, :func:`redrawn_training`; the attacks' seeds may stay). Run
      level and case means over trainings (:func:`case_mean_claims`), not pooled: the runs' means are over the same
      cases, so their spread is that of training and of the attacks' draws (and of the training cases' draw where
      they were redrawn); a pooled test would count each case once per run.
    - ``"shared"``: anything else with a shared case (e.g. the same run twice, on other threads, or runs that keep one
      training stage's seed): neither.

    Args:
        runs: :func:`read_run` records (at least two).
        labels: one name per run.

    Returns:
        One of ``INDEPENDENT``, ``SAME_TEST_SET``, ``SHARED``.
    """
    if not shared_cases(runs, labels):
        return INDEPENDENT

    def data(r: RunRecord) -> dict:  # the test cases' parameters
        return {k: v for k, v in r["parameters"].get("01_data", {}).items() if k not in ("workers", "train_seed")}

    def training(r: RunRecord, stage: str) -> tuple:  # what a stage's model is trained from: its seed and its cases
        return r["parameters"].get(stage, {}).get("seed"), _training_data_seed(r)

    first = runs[0]
    same_cases = bool(first.get("case_ids")) and all(
        data(r) == data(first) and r.get("case_ids") == first["case_ids"] for r in runs[1:])  # fmt: skip
    # the same parameters and ids are not the same cases where the data differ (e.g. another code version's generator):
    # the test cases' region volumes, where the runs have them, must be the same row for row
    vols = [v for r in runs if (v := r.get("test_volumes")) is not None]
    same_cases = same_cases and all(_same_volumes(v, vols[0]) for v in vols[1:])
    # every model trained anew in every run: a stage trained with the same seed on the same cases in two runs is one
    # training seen twice (the baseline of 02 is also the distillation's teacher), which a test over runs would count
    # as two
    distinct_training = all(len({training(r, s) for r in runs}) == len(runs) for s in _TRAINING_STAGES)
    return SAME_TEST_SET if same_cases and distinct_training else SHARED


def _same_volumes(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two runs' test-case region volumes (:func:`read_run`'s ``test_volumes``) are the same cases' (the same
    ids, and equal counts in every column both have)."""
    cols = sorted(set(a.columns) & set(b.columns))
    return list(a.index) == list(b.index) and a[cols].equals(b[cols])


def _check_tables(run_dir: str | Path) -> None:
    if not (Path(run_dir) / "tables").is_dir():  # checked first: RunPaths would make the folder
        raise FileNotFoundError(f"{Path(run_dir) / 'tables'}: no result tables; is {run_dir} a finished run folder?")


#: The columns of a run's per-case tables (``tables/results_*.csv``) that the pooled analyses read.
_RESULTS_COLUMNS = ("case_id", "model", "attack", "eps", "region", "dice")


def _check_results_tables(run_dir: str | Path, columns: Sequence[str] = _RESULTS_COLUMNS) -> None:
    """Every per-case table of a run (``tables/results_*.csv``) readable, with ``columns`` and numeric ``eps`` and
    ``dice`` where it reads them, before ``evaluation.read_results`` stacks them; ValueError naming the file and
    column otherwise."""
    for f in sorted((Path(run_dir) / "tables").glob("results_*.csv")):
        _read_table(f, "restore it, or rerun its notebook", columns,
                    numbers=[c for c in ("eps", "dice") if c in columns])  # fmt: skip


def _check_attack_records(run_dir: str | Path) -> None:
    """Every attack record of a run (``attacks/*.json``) a JSON object that ``evaluation.AttackSpec`` takes, before
    ``evaluation.load_attack_specs`` reads them; ValueError naming the file and what is wrong otherwise."""
    from .evaluation import AttackSpec  # torch, as in _stacked_table

    hint = "copy the run's attacks/ folder again, or rerun notebooks 03-05"
    for f in sorted((Path(run_dir) / "attacks").glob("*.json")):
        blob = _read_json_object(f, hint)
        try:
            AttackSpec(**blob)
        except (TypeError, ValueError) as exc:  # a missing or unknown field, an unknown attack, a bad eps grid
            raise ValueError(f"{f}: not an attack record of notebooks 03-05 ({exc}); {hint}") from None


def pooled_table(run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's per-case results of several runs, stacked, each case id prefixed with its run's label.

    Args:
        run_dirs: finished run folders (at least two).
        labels: one name per run (default: the folder names); distinct, without ``/``.

    Returns:
        The tidy result table (``evaluation.paper_attacks`` of each run) with ``case_id`` = ``"<label>/<case id>"``
        and a ``run`` column.

    Raises:
        ValueError: the runs do not share the same conditions (model × attack × policy × eps × region), naming the
            first run that differs; a pooled paired test needs every condition in every run. Or two runs share their
            cases (:func:`shared_cases`), naming them. Or a file read is malformed (:func:`read_run`; an attack record
            that is not one, a per-case table that is not CSV or lacks a column read or holds other than numbers in
            ``eps`` or ``dice``), naming the file and what is wrong.
    """
    labels = _labels(run_dirs, labels)
    overlaps = case_overlaps([read_run(d) for d in run_dirs], labels)
    if overlaps:
        raise ValueError(f"runs may share patients: {_shared_text(overlaps)}; a pooled test would count a shared "
                         "test case twice, and runs that share patients are not independent; compare them without "
                         "pooling")  # fmt: skip
    return _stacked_table(run_dirs, labels)


def _stacked_table(run_dirs: Sequence[str | Path], labels: Sequence[str]) -> pd.DataFrame:
    """:func:`pooled_table` without its check that the runs have their own cases (the run-level analysis of
    training replicates on one test set averages each run's cases, so it may stack the same cases)."""
    from .artefacts import RunPaths
    from .evaluation import paper_attacks, read_results  # torch: only here, not for the per-run tables

    frames = []
    conditions: set | None = None
    for d, lab in zip(run_dirs, labels):
        _check_tables(d)
        if not any((Path(d) / "attacks").glob("*.json")):
            raise FileNotFoundError(f"{Path(d) / 'attacks'}: no attack records (notebooks 03-05), which pooling needs to "
                                    "tell the paper's attacks apart; copy them with the tables, or compare without pooling")  # fmt: skip
        _check_attack_records(d)
        _check_results_tables(d)
        run = RunPaths(d)
        t = paper_attacks(run, read_results(run))
        keys = [c for c in _CONDITION_KEYS if c in t]
        conds = set(t[keys].astype(str).itertuples(index=False, name=None))
        if conditions is None:
            conditions, first = conds, lab
        elif conds != conditions:
            extra, lacking = sorted(conds - conditions)[:3], sorted(conditions - conds)[:3]
            raise ValueError(f"{d}: its conditions differ from those of run {first!r} (extra e.g. {extra}, "
                             f"lacking e.g. {lacking}); pool runs of the same profile only, or compare their verdicts without pooling "
                             "(robustseg compare --no-pooled)")  # fmt: skip
        frames.append(t.assign(case_id=lab + "/" + t["case_id"].astype(str), run=lab))
    return pd.concat(frames, ignore_index=True)


def pooled_empty_truth(run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None) -> dict[str, list[str]]:
    """The evaluated cases without each region in their ground truth, over several runs, in pooled case ids.

    Args:
        run_dirs: finished run folders.
        labels: one name per run (default: the folder names), as for :func:`pooled_table`.

    Returns:
        ``region → ["<label>/<case id>", ...]`` (``stats.empty_truth_cases`` of each run's notebook-01 volumes); a run
        without its volumes table contributes nothing.

    Raises:
        ValueError: a run's volumes table or one of its per-case tables (``tables/results_*.csv``) is empty, not CSV
            or without ``case_id`` (the file named).
    """
    from .artefacts import RunPaths
    from .evaluation import evaluated_region_volumes
    from .stats import empty_truth_cases

    labels = _labels(run_dirs, labels)
    out: dict[str, list[str]] = {}
    for d, lab in zip(run_dirs, labels):
        _check_tables(d)
        _check_results_tables(d, ["case_id"])
        if (Path(d) / "tables" / "data_region_volumes.csv").is_file():
            _read_table(Path(d) / "tables" / "data_region_volumes.csv", "restore it, or rerun notebook 01", ["case_id"])
        vols = evaluated_region_volumes(RunPaths(d))
        if vols is None:
            warnings.warn(f"{d}: no tables/data_region_volumes.csv; its empty-truth cases cannot be excluded from the "
                          "pooled analyses", UserWarning, stacklevel=2)  # fmt: skip
        for region, ids in (empty_truth_cases(vols) if vols is not None else {}).items():
            out.setdefault(region, []).extend(f"{lab}/{i}" for i in ids)
    return out


_CONDITION_KEYS = ("model", "attack", "target_policy", "source_model", "eps", "region")


def _without_missing_scores(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``table`` without every row of a (case, region) that has a NaN ``metric`` in some condition (warned, named), so
    that every condition's mean over a run's cases (or a case's runs) is over the same cases, as the paired tests
    over those means assume (``stats.compare`` drops a NaN pair per comparison instead)."""
    bad = table[metric].isna()
    if not bad.any():
        return table
    gone = table.loc[bad, ["case_id", "region"]].astype(str).drop_duplicates()
    warnings.warn(f"{metric}: missing in {len(gone)} case × region (e.g. {gone.iloc[0]['case_id']} in "
                  f"{gone.iloc[0]['region']}); those cases leave that region's means in every condition",
                  UserWarning, stacklevel=3)  # fmt: skip
    key = table["case_id"].astype(str) + "\0" + table["region"].astype(str)
    return table.loc[~key.isin(set(gone["case_id"] + "\0" + gone["region"]))]


def run_level_table(
    table: pd.DataFrame, *, exclude: Mapping[str, Collection[str]] | None = None, metric: str = "dice"
) -> pd.DataFrame:
    """Each run's mean score per condition, as a tidy table whose "cases" are the runs.

    Args:
        table: :func:`pooled_table` (needs its ``run`` column).
        exclude: ``region → pooled case ids`` left out of that region's means (e.g. :func:`pooled_empty_truth`); the
            other regions keep every case.
        metric: the score to average.

    Returns:
        Columns ``case_id`` (the run's label), the condition keys the table has (``model, attack, target_policy,
        source_model, eps, region``), ``metric`` (the mean over the run's cases of that condition) and ``n_cases``
        (how many cases that mean is over). A case with a NaN score in some condition of a region is left out of
        every condition of that region (warned), so that a run's means are over the same cases. A run with no case
        left in a region has no rows there.

    Raises:
        ValueError: no ``run`` or ``metric`` column, or ``exclude`` is not a mapping.
    """
    if not isinstance(table, pd.DataFrame) or "run" not in table.columns or metric not in table.columns:
        raise ValueError(f"table: expected a pooled table with 'run' and {metric!r} columns (pooled_table)")
    if exclude is not None and not isinstance(exclude, Mapping):
        raise ValueError(f"exclude: expected a mapping region -> case ids, got {type(exclude).__name__}")
    t = _without_missing_scores(table, metric)
    for region, ids in (exclude or {}).items():
        drop = (t["region"] == region) & t["case_id"].astype(str).isin(set(map(str, ids)))
        t = t.loc[~drop]
    keys = [c for c in _CONDITION_KEYS if c in t.columns]
    g = t.groupby(["run", *keys], dropna=False, sort=False)[metric]
    out = g.agg(["mean", "size"]).reset_index().rename(columns={"run": "case_id", "mean": metric, "size": "n_cases"})
    return out[["case_id", *keys, metric, "n_cases"]]


def run_level_claims(
    table: pd.DataFrame,
    *,
    empty_truth: dict[str, list[str]] | None = None,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The claims judged with the runs as the units: notebook 08's tests and rules on :func:`run_level_table`.

    Each run contributes one paired observation per comparison (its mean Dice under the two conditions), so a
    Wilcoxon test here asks whether the effect has the same sign from training to training (and data draw to data
    draw), not only from case to case. With ``n`` runs no p can go below :func:`run_level_min_p` ``(n)``, times the
    family size under Holm; C2's interval resamples runs.

    Args:
        table: :func:`pooled_table`.
        empty_truth: :func:`pooled_empty_truth`: each region with such cases is judged again on run means without them.
        alpha: family-wise error rate (Holm).
        n_resamples, seed: C2's bootstrap over runs.

    Returns:
        ``(comparisons, claims_by_region)`` as :func:`pooled_claims` returns them; ``n_cases`` counts runs and
        ``n_excluded`` the pooled cases left out.
    """
    from .stats import claims_by_region, compare

    if empty_truth is not None and not isinstance(empty_truth, Mapping):
        raise ValueError(f"empty_truth: expected a mapping region -> case ids, got {type(empty_truth).__name__}")
    kw = dict(alpha=alpha, n_resamples=n_resamples, seed=seed)
    units = run_level_table(table)
    cmp = compare(units, alpha=alpha)
    frames = [claims_by_region(units, cmp, **kw)]  # every region on all cases; n_cases counts the runs
    for r in pd.unique(frames[0]["region"]):
        # the exclusion happens before averaging, so it cannot be claims_by_region's own (which drops units)
        ids = set(map(str, (empty_truth or {}).get(r, ()))) & set(table.loc[table["region"] == r, "case_id"].astype(str))
        if ids:
            sub = run_level_table(table.loc[table["region"] == r], exclude={r: ids})
            frames.append(claims_by_region(sub, regions=[r], **kw).assign(
                analysis=f"{r} without empty-truth cases", n_excluded=len(ids)))  # fmt: skip
    return cmp, pd.concat(frames, ignore_index=True)


def run_level_spread(units: pd.DataFrame, comparisons: pd.DataFrame, *, metric: str = "dice") -> pd.DataFrame:
    """How much each comparison's paired effect varies from run to run.

    The run-level test asks whether the effect keeps its sign; this says how far it moves. Between a set of
    independent runs and a set of training replicates on one test set, the ratio of these standard deviations
    separates the spread that training alone brings from the spread that the data draw adds.

    Args:
        units: :func:`run_level_table` (its ``case_id`` is the run).
        comparisons: ``stats.compare`` of ``units`` (e.g. :func:`run_level_claims`' first table).
        metric: the score column of ``units``.

    Returns:
        One row per comparison: its ``family``, ``region`` and condition columns (``*_a``, ``*_b``), ``n_runs`` (runs
        with both conditions), ``mean_diff`` and ``sd_diff`` (mean and standard deviation, ddof 1, over runs of
        ``a`` − ``b``; NaN below two runs).

    Raises:
        ValueError: ``units`` lacks ``case_id``/``region``/``metric``, or ``comparisons`` a column it needs.
    """
    if not isinstance(units, pd.DataFrame) or not {"case_id", "region", metric} <= set(units.columns):
        raise ValueError(f"units: expected run_level_table's columns case_id, region and {metric!r}")
    keys = [c for c in _CONDITION_KEYS if c in units.columns and c != "region"]
    need = {"family", "region", *(f"{k}{s}" for k in keys for s in ("_a", "_b"))}
    if not isinstance(comparisons, pd.DataFrame) or not need <= set(comparisons.columns):
        raise ValueError(f"comparisons: expected stats.compare's columns, lacking {sorted(need - set(comparisons.columns))}")

    def key(df: pd.DataFrame, suffix: str = "") -> pd.Series:  # a condition as one string; NaN and "" alike
        cols = df[[f"{k}{suffix}" for k in keys]].astype(object)
        return cols.where(cols.notna(), "").astype(str).agg("|".join, axis=1)

    wide = units.assign(_cond=key(units)).pivot_table(index=["region", "_cond"], columns="case_id", values=metric,
                                                      aggfunc="first")  # fmt: skip
    cols = ["family", "region", *(f"{k}{s}" for s in ("_a", "_b") for k in keys)]
    out = comparisons[cols].copy()
    rows = []
    for region, ka, kb in zip(out["region"], key(out, "_a"), key(out, "_b")):
        d = (wide.loc[(region, ka)] - wide.loc[(region, kb)]).dropna()
        rows.append((len(d), d.mean() if len(d) else float("nan"), d.std(ddof=1) if len(d) > 1 else float("nan")))
    out[["n_runs", "mean_diff", "sd_diff"]] = pd.DataFrame(rows, index=out.index)
    out["n_runs"] = out["n_runs"].astype(int)
    return out.reset_index(drop=True)


def case_mean_table(table: pd.DataFrame, *, metric: str = "dice") -> pd.DataFrame:
    """Each test case's mean score per condition over training replicates on one test set.

    The other half of :func:`run_level_table`: there a run's cases are averaged and the runs are the units; here a
    case's runs are averaged and the cases are the units.

    Args:
        table: the stacked per-case table of runs that evaluated the same cases (``write_comparison`` builds it as
            :func:`pooled_table` does: ``case_id`` = ``"<run label>/<case id>"``, a ``run`` column).
        metric: the score to average.

    Returns:
        Columns ``case_id`` (the case's own id), the condition keys the table has, ``metric`` (the mean over runs)
        and ``n_runs``. A case with a NaN score in some run and condition of a region is left out of that region
        (warned), so that every case mean is over every run.

    Raises:
        ValueError: no ``run``/``metric`` column, a case id without its run prefix, or a case and condition that
            not every run has (the runs did not evaluate one test set), named.
    """
    if not isinstance(table, pd.DataFrame) or "run" not in table.columns or metric not in table.columns:
        raise ValueError(f"table: expected a stacked table with 'run' and {metric!r} columns (pooled_table)")
    ids = table["case_id"].astype(str)
    prefix = table["run"].astype(str) + "/"
    bad = ~pd.Series([i.startswith(pre) for i, pre in zip(ids, prefix)], index=table.index, dtype=bool)
    if bad.any():
        raise ValueError(f"table: case id {ids[bad].iloc[0]!r} does not start with its run's label "
                         f"{prefix[bad].iloc[0]!r} (pooled_table names cases so)")  # fmt: skip
    t = _without_missing_scores(table, metric)
    t = t.assign(case_id=[i[len(pre):] for i, pre in zip(ids[t.index], prefix[t.index])])
    if len(t) < len(table):  # a case without a score in one run leaves every run's mean in that region
        gone = set(zip(table.loc[~table.index.isin(t.index), "case_id"].astype(str).str.split("/", n=1).str[-1],
                       table.loc[~table.index.isin(t.index), "region"].astype(str)))  # fmt: skip
        t = t.loc[[(c, r) not in gone for c, r in zip(t["case_id"], t["region"].astype(str))]]
    keys = [c for c in _CONDITION_KEYS if c in t.columns]
    g = t.groupby(["case_id", *keys], dropna=False, sort=False)[metric]
    out = g.agg(["mean", "size"]).reset_index().rename(columns={"mean": metric, "size": "n_runs"})
    n_runs = table["run"].nunique()
    short = out[out["n_runs"] != n_runs]
    if len(short):
        first = short.iloc[0]
        raise ValueError(f"table: case {first['case_id']!r} has {first[keys].to_dict()} in {first['n_runs']} of "
                         f"{n_runs} runs; a mean over trainings needs every run to evaluate the same cases")  # fmt: skip
    return out[["case_id", *keys, metric, "n_runs"]]


def case_mean_claims(
    table: pd.DataFrame,
    *,
    empty_truth: dict[str, list[str]] | None = None,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The claims judged on the test cases, each case's Dice averaged over training replicates on one test set.

    With the run-level analysis it brackets the two sources of spread: :func:`run_level_claims` asks whether an
    effect keeps its sign from training to training (on these cases), this asks whether the training procedure's
    mean effect keeps it from case to case. Notebook 08's tests and rules on :func:`case_mean_table`.

    Args:
        table: the stacked table (as for :func:`case_mean_table`).
        empty_truth: :func:`pooled_empty_truth`: each region judged again without those cases.
        alpha: family-wise error rate (Holm).
        n_resamples, seed: C2's bootstrap over cases.

    Returns:
        ``(comparisons, claims_by_region)`` as :func:`pooled_claims` returns them; ``n_cases`` counts test cases.
    """
    from .stats import claims_by_region, compare

    if empty_truth is not None and not isinstance(empty_truth, Mapping):
        raise ValueError(f"empty_truth: expected a mapping region -> case ids, got {type(empty_truth).__name__}")
    units = case_mean_table(table)
    # every run lacks the same cases: its label prefix dropped, each case id once
    empty = {r: sorted({str(i).split("/", 1)[-1] for i in ids}) for r, ids in (empty_truth or {}).items()}
    cmp = compare(units, alpha=alpha)
    cbr = claims_by_region(units, cmp, empty_truth=empty or None, alpha=alpha, n_resamples=n_resamples, seed=seed)
    return cmp, canonical_analysis(cbr)


def pooled_claims(
    table: pd.DataFrame,
    *,
    empty_truth: dict[str, list[str]] | None = None,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The claims judged on a pooled table by notebook 08's tests and rules.

    Args:
        table: :func:`pooled_table`.
        empty_truth: :func:`pooled_empty_truth`: each region judged again without those cases, as notebook 08 does.
        alpha: family-wise error rate (Holm).
        n_resamples: bootstrap resamples (C2's interval; stratified by the table's ``run`` column when it has one, so
            each resample keeps every run's number of cases).
        seed: bootstrap seed.

    Returns:
        ``(comparisons, claims_by_region)`` as ``stats.compare`` and ``stats.claims_by_region`` return them, the latter
        with :func:`canonical_analysis` names.
    """
    from .stats import claims_by_region, compare

    strata = None
    if "run" in table.columns:
        pairs = table[["case_id", "run"]].astype(str).drop_duplicates()
        if pairs["case_id"].duplicated().any():
            raise ValueError(
                "table: a case id appears under several runs; use pooled_table, which prefixes each run's ids"
            )
        strata = dict(zip(pairs["case_id"], pairs["run"]))
    t = table.drop(columns=["run"], errors="ignore")
    cmp = compare(t, alpha=alpha)
    cbr = claims_by_region(t, cmp, empty_truth=empty_truth, alpha=alpha, n_resamples=n_resamples, seed=seed,
                           strata=strata)  # fmt: skip
    return cmp, canonical_analysis(cbr)


#: comparison.md's sentence under the runs table, per :func:`replicate_design` answer.
_DESIGN_SENTENCE = {
    INDEPENDENT: "Design: independent runs. No two runs share a patient, among their test or their training cases "
                 "(other synthetic data seeds, or other real cases), so the runs' cases can be pooled and the runs "
                 "can be units.",
    SAME_TEST_SET: "Design: training replicates on one test set. All {n} runs evaluated the same {cases} test cases "
                   "(the same data parameters and case ids) with models trained from other seeds{redrawn}, so the runs "
                   "can be units but their cases cannot be pooled.",
    SHARED: "Design: runs that share cases without being training replicates on one test set (e.g. the same run "
            "twice, or other data parameters over the same cases): per-run verdicts only.",
}  # fmt: skip

#: The run-level section's sentence on which spread its units carry.
_RUN_LEVEL_SPREAD = {
    INDEPENDENT: "Unlike the pooled test it models the spread from training to training and from data draw to data draw.",
    SAME_TEST_SET: "Every run evaluated the same test cases, so the spread it models is that from training to training "
                   "(initialisation, batches and the attacks' draws{redrawn}) alone: its verdicts generalise over "
                   "trainings, for these test cases, not over other cases.",
}  # fmt: skip


def runs_table(runs: Sequence[RunRecord], labels: Sequence[str]) -> pd.DataFrame:
    """The runs table of a comparison (``runs.csv`` and the top of ``comparison.md``): one row per run.

    Args:
        runs: :func:`read_run` records.
        labels: one name per run.

    Returns:
        Columns run, path, profile, seeds, git_sha (each commit its stages ran at, ``+dirty`` kept), machine,
        test_cases and stage_seconds (the stages' recorded seconds, summed and rounded).
    """
    from .runtime import short_sha  # torch, as in read_run

    if len(runs) != len(labels):
        raise ValueError(f"labels: {len(labels)} for {len(runs)} runs")
    return pd.DataFrame(
        [{"run": lab, "path": r["path"], "profile": r["profile"], "seeds": " ".join(map(str, r["seeds"])),
          "git_sha": ", ".join(short_sha(s) for s in r["code_versions"]), "machine": r["machine"], "test_cases": r["n_cases"],
          "stage_seconds": round(sum(s or 0 for s in r["stage_seconds"].values()))} for r, lab in zip(runs, labels)],
        columns=["run", "path", "profile", "seeds", "git_sha", "machine", "test_cases", "stage_seconds"],
    )  # fmt: skip


def write_comparison(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    labels: Sequence[str] | None = None,
    pooled: bool = True,
    run_level: bool = True,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Compare finished runs and write the result.

    Args:
        run_dirs: finished run folders (at least two), e.g. the same profile at seeds 0, 1, 2, 3.
        out_dir: where to write ``runs.csv``, ``parameter_differences.csv``, ``verdicts_by_run.csv``,
            ``agreement.csv``, ``dice_by_run.csv``, with ``pooled``: ``pooled_comparisons.csv`` and
            ``pooled_claims_by_region.csv``, with ``run_level`` too: ``run_level_table.csv``,
            ``run_level_comparisons.csv``, ``run_level_spread.csv`` and ``run_level_claims_by_region.csv``, for
            training replicates on one test set also ``case_mean_comparisons.csv`` and
            ``case_mean_claims_by_region.csv`` (:func:`case_mean_claims`), and ``comparison.md`` (each written
            atomically). Files of these names that this comparison does not write (an earlier comparison's, into the
            same folder) are removed, so that every table beside ``comparison.md`` is this comparison's; nothing
            else in the folder is touched.
        labels: one name per run (default: the folder names).
        pooled: also judge the claims on the pooled cases (:func:`pooled_claims`) of independent runs; skipped, with
            a note in ``comparison.md``, when runs may share patients (:func:`case_overlaps`, :func:`replicate_design`).
        run_level: with ``pooled``, also judge the claims with the runs as units (:func:`run_level_claims`), for
            independent runs and for training replicates on one test set.
        alpha, n_resamples, seed: as in :func:`pooled_claims`.

    Returns:
        The agreement table (:func:`verdict_agreement`).
    """
    from .report import _md_table  # the report's Markdown tables

    def _md(df: pd.DataFrame) -> str:
        return _md_table(df, formats={"eps": "g"})

    labels = _labels(run_dirs, labels)
    runs = [read_run(d) for d in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in COMPARISON_FILES:  # an earlier comparison's tables would sit beside this one's comparison.md
        (out / name).unlink(missing_ok=True)
    info = runs_table(runs, labels)
    diffs = parameter_differences(runs, labels)
    verdicts = verdict_table(runs, labels)
    dice = dice_by_run(run_dirs, labels)
    cbr = rl = rl_cmp = cm = None
    design = replicate_design(runs, labels)
    redrawn = (" on their own draws of the training and validation cases (notebook 01's `train_seed`)",
               ", and the draw of the training and validation cases") if design == SAME_TEST_SET and redrawn_training(
                   runs) else ("", "")  # fmt: skip
    if pooled and design != SHARED:
        with warnings.catch_warnings():  # a run without volumes is named in comparison.md instead
            warnings.simplefilter("ignore", UserWarning)
            empty = pooled_empty_truth(run_dirs, labels)
        if design == SAME_TEST_SET:  # one test set: a case one run's volumes find without a region is every run's
            empty = {r: sorted({f"{lab}/{i.split('/', 1)[-1]}" for i in ids for lab in labels}) for r, ids in empty.items()}
        table = _stacked_table(run_dirs, labels)
        if design == INDEPENDENT:
            cmp, cbr = pooled_claims(table, empty_truth=empty, alpha=alpha, n_resamples=n_resamples, seed=seed)
            atomic_to_csv(cmp, out / "pooled_comparisons.csv")
            atomic_to_csv(cbr, out / "pooled_claims_by_region.csv")
        if run_level:
            rl_cmp, rl = run_level_claims(table, empty_truth=empty, alpha=alpha, n_resamples=n_resamples, seed=seed)
            units = run_level_table(table)
            atomic_to_csv(units, out / "run_level_table.csv")
            atomic_to_csv(rl_cmp, out / "run_level_comparisons.csv")
            atomic_to_csv(run_level_spread(units, rl_cmp), out / "run_level_spread.csv")
            atomic_to_csv(rl, out / "run_level_claims_by_region.csv")
        if design == SAME_TEST_SET:
            cm_cmp, cm = case_mean_claims(table, empty_truth=empty, alpha=alpha, n_resamples=n_resamples, seed=seed)
            atomic_to_csv(cm_cmp, out / "case_mean_comparisons.csv")
            atomic_to_csv(cm, out / "case_mean_claims_by_region.csv")
    agree = verdict_agreement(verdicts, cbr, rl, cm)
    atomic_to_csv(info, out / "runs.csv")
    atomic_to_csv(diffs, out / "parameter_differences.csv")
    atomic_to_csv(verdicts, out / "verdicts_by_run.csv")
    atomic_to_csv(agree, out / "agreement.csv")
    atomic_to_csv(dice, out / "dice_by_run.csv")
    region = str(runs[0]["claims_by_region"]["analysis"].iloc[0])  # the headline region comes first
    top = dice[(dice["region"] == region)]
    top = top[(top["attack"] == "clean") | (top["eps"] == top.groupby(["model", "attack"])["eps"].transform("max"))]
    fmt = top.assign(**{c: top[c].map(lambda v: "—" if pd.isna(v) else f"{v:.3f}") for c in [*labels, "min", "max", "spread"]})
    # parameters other than the seeds (and the loader's workers): the runs are then not replicates of one procedure
    procedure = [f"{st}.{pa}" for st, pa in zip(diffs["stage"], diffs["parameter"]) if pa not in ("seed", "train_seed", "workers")]
    design_text = _DESIGN_SENTENCE[design].format(n=len(runs), cases=runs[0]["n_cases"], redrawn=redrawn[0])
    if procedure and design != SHARED:
        design_text += (f" The runs differ in more than their seeds ({', '.join(procedure)}; below): the spread across "
                        "them holds those differences too, so they are not replicates of one procedure, and the "
                        "cross-run verdicts are about that mixture.")  # fmt: skip
    code_note = code_version_note(runs, labels)
    unchecked = unchecked_training_cases(runs, labels)
    if unchecked:
        code_note = (f"Training cases not checked: {', '.join(unchecked)} have neither notebook 01's region volumes "
                     "(`tables/data_region_volumes.csv`) nor `data/prepared.npz`, so their training and validation "
                     "case ids are unknown. Only their test cases were compared with the other runs' cases: whether "
                     "one of them trained on another run's test patients, or two runs on the same patients, could not "
                     "be checked, and the design above rests on the test cases alone. " + code_note).strip()
    parts = [
        "# Verdicts across runs", "",
        "## Runs", "", _md(info), "", design_text, "", *([code_note, ""] if code_note else []),
        "## Parameters that differ", "",
        _md(diffs) if len(diffs) else "None: every stage ran with the same parameters.", "",
        "## Verdicts (`verdict (supporting tests / tests, tests significant the other way)`; C2: the largest relative drop)", "",
        _md(agree), "",
        f"## Mean {region} Dice, clean and at each attack's largest eps (every condition and region: `dice_by_run.csv`)", "",
        _md(fmt), "",
    ]  # fmt: skip
    if pooled and design == SHARED:
        parts += ["## Pooled evidence", "",
                  f"Not computed: runs may share patients ({_shared_text(case_overlaps(runs, labels))}). A pooled test would count a "
                  "shared test case twice, and runs that share patients are not independent.", ""]  # fmt: skip
    elif pooled and design == SAME_TEST_SET:
        parts += ["## Pooled evidence", "",
                  f"Not computed: every run evaluated the same test cases, which a pooled test would count {len(runs)} "
                  "times. Instead, the run-level section judges the claims over the trainings, and the case-level "
                  "section over the cases with the trainings averaged." if run_level else
                  f"Not computed: every run evaluated the same test cases, which a pooled test would count {len(runs)} "
                  "times.", ""]  # fmt: skip
    if cbr is not None:
        no_vols = [lab for r, lab in zip(runs, labels) if not r["has_volumes"]]
        n = int(cbr["n_cases"].max())
        parts += ["## Pooled evidence", "",
                  f"The pooled column judges each claim on the {n} test cases of all runs together, with notebook 08's "
                  "tests and rules; each case is paired within its own run (conditional on each run's models, as a "
                  "run's own tests are), and C2's bootstrap resamples cases within each run. "
                  + _run_level_note(len(runs), alpha, rl is not None) + " An analysis "
                  "\"without empty-truth cases\" leaves out every run's evaluated cases that lack the region "
                  "(`n_excluded`)" + (
                      f"; runs {', '.join(no_vols)} have no region volumes, so their cases all stay in" if no_vols else "")
                  + ".", "",
                  _md(cbr[["analysis", "n_cases", "claim", "verdict", "evidence"]]), ""]  # fmt: skip
    if rl is not None and rl_cmp is not None:
        parts += ["## Run-level evidence", "",
                  f"The run_level column judges each claim with the {len(runs)} runs as the units: each run's mean "
                  "Dice per condition (`run_level_table.csv`) is one paired observation, under notebook 08's tests and "
                  "rules (Holm within family × region; C2's bootstrap resamples runs). " + _RUN_LEVEL_SPREAD[design].format(redrawn=redrawn[1])
                  + " "
                  + _run_level_reach(len(runs), rl_cmp, alpha) + " (In the evidence below, a \"case\" is a run.)", "",
                  _md(rl[["analysis", "n_cases", "claim", "verdict", "evidence"]].rename(columns={"n_cases": "n_runs"})),
                  ""]  # fmt: skip
    if cm is not None:
        parts += ["## Case-level evidence, trainings averaged", "",
                  f"The case_mean column judges each claim on the {int(cm['n_cases'].max())} test cases, each case's "
                  f"Dice per condition averaged over the {len(runs)} trainings, under notebook 08's tests and rules "
                  "(`case_mean_comparisons.csv`). It asks whether the training procedure's mean effect holds from case "
                  "to case; the run-level column asks whether the effect holds from training to training on these "
                  "cases. A claim that both support does not rest on one training or on a few cases.", "",
                  _md(cm[["analysis", "n_cases", "claim", "verdict", "evidence"]]), ""]  # fmt: skip
    atomic_write_text(out / "comparison.md", "\n".join(parts))
    return agree
