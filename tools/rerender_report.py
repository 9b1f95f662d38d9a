"""Re-render a committed run's report with the current code's notebook 08, from the run's committed tables.

Usage: ``python tools/rerender_report.py docs/results/teaching-cpu``.

A committed report (``report.md``) states the decision rules and draws notebook 08's figures as the code that
wrote it did; when the rules' text or the figures change later, the report goes stale although its results do not.
This tool copies the folder's per-case tables, attack records and manifest into a temporary run folder (with the
folder's figures of notebooks 01-07), executes ``notebooks/08_statistics.ipynb`` there with the parameters the
manifest records for it, and checks that every statistics table it writes equals the committed one (a change of a
result needs a rerun of the chain, not a re-render: the tool then stops and writes nothing). Only then does it
replace the folder's ``report.md`` (with a line saying when, at which commit and how it was re-rendered) and its
notebook-08 figures (``08_*.png``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from robustseg_lib.artefacts import atomic_write_bytes, atomic_write_text
from robustseg_lib.runtime import git_sha, short_sha

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "08_statistics.ipynb"
STAGE = "08_statistics"
# the tables notebook 08 writes (tools/build_notebooks.py, nb08)
STAT_TABLES = ("summary", "comparisons", "claims_comparisons", "claims", "claims_by_region", "drops")
HEADER_PREFIX = "Run folder `"


def check_folder(folder: Path) -> dict:
    """Check that ``folder`` holds a finished run's export and return its notebook-08 parameters.

    Args:
        folder: a committed run folder (``manifest.json``, ``tables/``, ``attacks/``, ``report.md``).

    Returns:
        The manifest's parameters of ``08_statistics``.
    """
    for name in ("manifest.json", "tables", "attacks", "report.md"):
        if not (folder / name).exists():
            raise ValueError(f"{folder}: no {name}; expected a committed run folder (manifest.json, tables/, attacks/, report.md)")
    manifest = json.loads((folder / "manifest.json").read_text())
    rec = manifest.get("stages", {}).get(STAGE, {})
    if rec.get("status") != "done":
        raise ValueError(f"{folder / 'manifest.json'}: stage {STAGE} is {rec.get('status', 'missing')!r}, not done")
    prm = manifest.get("parameters", {}).get(STAGE)
    if not isinstance(prm, dict):
        raise ValueError(f"{folder / 'manifest.json'}: no parameters recorded for {STAGE}")
    missing = [t for t in STAT_TABLES if not (folder / "tables" / f"{t}.csv").is_file()]
    if missing:
        raise ValueError(f"{folder / 'tables'}: missing {', '.join(f + '.csv' for f in missing)}")
    return prm


def changed_tables(new: Path, old: Path) -> list[str]:
    """The statistics tables whose values differ between two ``tables/`` folders (read as published; rtol 1e-12, atol 0).

    Args:
        new: the ``tables/`` folder notebook 08 just wrote.
        old: the committed ``tables/`` folder.

    Returns:
        Names of the differing tables, with the reason.
    """
    out = []
    for name in STAT_TABLES:
        a, b = pd.read_csv(new / f"{name}.csv"), pd.read_csv(old / f"{name}.csv")
        try:
            pd.testing.assert_frame_equal(a, b, rtol=1e-12, atol=0)
        except AssertionError as exc:
            out.append(f"{name}.csv ({str(exc).splitlines()[0]})")
    return out


def rerender(folder: Path) -> list[Path]:
    """Re-render ``folder``'s report with the current notebook 08 (see the module docstring).

    Args:
        folder: the committed run folder.

    Returns:
        The files replaced in ``folder``.
    """
    import papermill

    folder = folder.resolve()
    prm = check_folder(folder)
    name = str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder)
    # the header keeps the folder the run was made in (the run's own record, like its stages)
    old = re.search(r"^Run folder `([^`]*)`", (folder / "report.md").read_text(), flags=re.MULTILINE)
    run_folder = old.group(1) if old else name
    sha = git_sha(ROOT)
    with tempfile.TemporaryDirectory(prefix="rerender_") as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(folder / "tables", run / "tables")
        shutil.copytree(folder / "attacks", run / "attacks")
        shutil.copyfile(folder / "manifest.json", run / "manifest.json")
        (run / "figures").mkdir()
        for png in folder.glob("*.png"):  # the report's copies of the run's figures; notebook 08 draws its own again
            if not png.name.startswith("08_"):
                shutil.copyfile(png, run / "figures" / png.name)
        papermill.execute_notebook(
            str(NOTEBOOK), str(Path(tmp) / NOTEBOOK.name), parameters={**prm, "run_dir": str(run), "device": "cpu"},
            kernel_name="python3", cwd=str(NOTEBOOK.parent), progress_bar=False,
        )
        differ = changed_tables(run / "tables", folder / "tables")
        if differ:
            raise RuntimeError(
                f"{folder}: the current notebook 08 computes other results from the committed tables: {'; '.join(differ)}. "
                "A re-render must not change results; rerun the chain (or regenerate and review the tables) instead. Nothing written."
            )
        lines = (run / "report" / "report.md").read_text().splitlines()
        i = next((k for k, line in enumerate(lines) if line.startswith(HEADER_PREFIX)), None)
        if i is None:
            raise RuntimeError(f"notebook 08's report has no line starting with {HEADER_PREFIX!r}; update {Path(__file__).name}")
        lines[i] = lines[i].replace(f"`{run}`", f"`{run_folder}`", 1)
        stamp = datetime.now(timezone.utc).date().isoformat()
        lines[i + 1:i + 1] = [
            "",
            f"*Re-rendered on {stamp} at git `{short_sha(sha)}` by `python tools/rerender_report.py {name}`: that "
            "commit's notebook 08 read this run's committed per-case tables; the statistics tables it wrote equal the "
            "run's (checked), while the text, the decision rules and notebook 08's figures are that commit's. The "
            "header (run folder, commit, machine) and the stages are the run's own.*",
        ]
        written = [atomic_write_text(folder / "report.md", "\n".join(lines) + "\n")]
        for png in sorted((run / "figures").glob("08_*.png")):
            written.append(atomic_write_bytes(folder / png.name, png.read_bytes()))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="committed run folder, e.g. docs/results/teaching-cpu")
    args = ap.parse_args(argv)
    try:
        written = rerender(args.folder)
    except (ValueError, RuntimeError) as exc:
        print(f"rerender_report: {exc}", file=sys.stderr)
        return 1
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
