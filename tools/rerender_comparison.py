"""Re-render committed comparisons (``robustseg compare``) with the current code, from the committed runs they name.

Usage: ``python tools/rerender_comparison.py docs/results/teaching-seeds/comparison [more comparison folders]``.

A committed ``comparison.md`` states the design, the code versions and the verdicts as the code that wrote it did;
when that text changes later (e.g. a new note on runs made by other commits), the file goes stale although its
results do not. For each folder, this tool reads the runs table of its ``comparison.md`` (each run's label and
folder, relative to the repository root), compares those runs again into a temporary folder with the current
:func:`robustseg_lib.replicates.write_comparison`, and checks that it writes the same files and that every table
over runs (every CSV but ``runs.csv``, which holds commits, machines and times) equals the committed one. A change
of a result needs a review, not a re-render: the tool then stops and writes nothing to any folder. Only when every
folder passes does it replace each folder's ``comparison.md`` (with a line saying when, at which commit and how it
was re-rendered) and ``runs.csv``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from robustseg_lib import replicates
from robustseg_lib.artefacts import atomic_write_text
from robustseg_lib.runtime import git_sha, short_sha

ROOT = Path(__file__).resolve().parents[1]
STAMP_PREFIX = "*Re-rendered on "
KEEP = ("runs.csv",)  # the tables a re-render may change: the runs' commits, machines and times as read now


def committed_runs(folder: Path) -> tuple[list[str], list[str]]:
    """The runs a committed comparison was made of, from its ``runs.csv`` (the runs table of ``comparison.md``).

    Args:
        folder: a committed comparison folder (``comparison.md`` and its tables).

    Returns:
        ``(labels, paths)``, paths as written there (relative to the repository root), in the table's order.
    """
    table = folder / "runs.csv"  # the runs table of comparison.md, as a CSV
    if not (folder / "comparison.md").is_file() or not table.is_file():
        raise ValueError(f"{folder}: no comparison.md and runs.csv; expected a folder written by `robustseg compare`")
    runs = pd.read_csv(table, dtype=str)
    if not {"run", "path"} <= set(runs.columns):
        raise ValueError(f"{table}: no 'run' and 'path' columns")
    labels, paths = runs["run"].tolist(), runs["path"].tolist()
    missing = [p for p in paths if not (ROOT / p).is_dir()]
    if len(paths) < 2 or missing:
        raise ValueError(f"{table}: expected at least two run folders under {ROOT}; missing: {', '.join(missing) or 'none'}")
    return labels, paths


def changed_tables(new: Path, old: Path) -> list[str]:
    """The tables over runs that differ between a new and a committed comparison folder (rtol 1e-12, atol 0).

    Args:
        new: the folder the current code just wrote.
        old: the committed folder.

    Returns:
        Names of the differing (or only one side's) CSV files, with the reason; ``runs.csv`` is not compared.
    """
    names = sorted({p.name for p in new.glob("*.csv")} | {p.name for p in old.glob("*.csv")})
    out = []
    for name in names:
        if name in KEEP:
            continue
        if not (new / name).is_file() or not (old / name).is_file():
            out.append(f"{name} (written {'now only' if (new / name).is_file() else 'only before'})")
            continue
        try:
            pd.testing.assert_frame_equal(pd.read_csv(new / name), pd.read_csv(old / name), rtol=1e-12, atol=0)
        except AssertionError as exc:
            out.append(f"{name} ({str(exc).splitlines()[0]})")
    return out


def rerender(folders: list[Path]) -> list[Path]:
    """Re-render every folder's ``comparison.md`` and ``runs.csv`` (see the module docstring); all or none.

    Args:
        folders: committed comparison folders.

    Returns:
        The files replaced.
    """
    sha = short_sha(git_sha(ROOT))
    stamp = datetime.now(timezone.utc).date().isoformat()
    staged: list[tuple[Path, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="rerender_comparison_") as tmp, contextlib.chdir(ROOT):
        for k, folder in enumerate(folders):
            folder = folder.resolve()
            labels, paths = committed_runs(folder)
            new = Path(tmp) / str(k)
            replicates.write_comparison(paths, new, labels=labels)
            differ = changed_tables(new, folder)
            if differ:
                raise RuntimeError(
                    f"{folder}: the current code compares the committed runs into other results: {'; '.join(differ)}. "
                    "A re-render must not change results; review the comparison instead. Nothing written.")
            name = str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder)
            lines = (new / "comparison.md").read_text().splitlines()
            lines[2:2] = [f"{STAMP_PREFIX}{stamp} at git `{sha}` by `python tools/rerender_comparison.py {name}`: "
                          "that commit's `robustseg compare` read the committed runs named below; every table over runs "
                          "equals this folder's before (checked), while the text and the runs table (commits, machines) "
                          "are that commit's.*", ""]  # fmt: skip
            staged.append((folder, "\n".join(lines) + "\n", (new / "runs.csv").read_text()))
    written = []
    for folder, md, runs_csv in staged:
        written.append(atomic_write_text(folder / "comparison.md", md))
        written.append(atomic_write_text(folder / "runs.csv", runs_csv))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+", help="committed comparison folders, e.g. docs/results/teaching-seeds/comparison")
    args = ap.parse_args(argv)
    try:
        written = rerender(args.folders)
    except (ValueError, RuntimeError) as exc:
        print(f"rerender_comparison: {exc}", file=sys.stderr)
        return 1
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
