"""Tests of robustseg_lib.artefacts (atomic writes, the run-folder layout) and of reading checkpoints back.

Oracles: the file system seen directly (os.listdir, stat, zipfile, gzip magic bytes), hand-written file contents, and
the run-folder layout as the RunPaths docstring and docs/design.md document it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustseg_lib import artefacts as A


# ----------------------------------------------------------------------------- found by mutation testing (session 13)
def test_atomic_path_writes_a_hidden_sibling_and_renames_it_only_at_the_end(tmp_path) -> None:
    """The temporary file is a hidden file in the target's own folder (a rename within one file system is atomic;
    the loaders skip hidden names) with the target's full suffix (``.nii.gz``: writers choose the format from it); the
    target appears only when the block ends, holding what was written."""
    target = tmp_path / "sub" / "case.nii.gz"
    with A.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".case.nii.gz.") and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"payload")
        assert not target.exists()
    assert target.read_bytes() == b"payload" and os.listdir(target.parent) == ["case.nii.gz"]


def test_a_failed_write_leaves_the_old_target_and_no_temporary_file(tmp_path) -> None:
    """An exception inside the block: the error propagates, the previous file is untouched and nothing else is left
    in the folder (oracle: os.listdir)."""
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="killed"):
        with A.atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["table.csv"]


def test_an_empty_write_still_replaces_the_target(tmp_path) -> None:
    """Writing zero bytes is a write: the target exists afterwards and is empty, also over a non-empty old file."""
    assert A.atomic_write_bytes(tmp_path / "a.bin", b"").read_bytes() == b""
    (tmp_path / "b.txt").write_text("old")
    A.atomic_write_text(tmp_path / "b.txt", "")
    assert (tmp_path / "b.txt").read_text() == ""


def test_atomic_write_json_text_is_sorted_and_numpy_and_paths_are_plain(tmp_path) -> None:
    """The exact text (hand-written): keys sorted at every level, numpy integers as JSON integers, numpy floats as
    numbers, arrays as lists, paths as their full string; a trailing newline."""
    obj = {"b": np.int64(3), "a": {"z": np.float32(0.5), "y": np.arange(2)}, "p": Path("/runs/x/data")}
    A.atomic_write_json(tmp_path / "m.json", obj)
    want = '{\n  "a": {\n    "y": [\n      0,\n      1\n    ],\n    "z": 0.5\n  },\n  "b": 3,\n  "p": "/runs/x/data"\n}\n'
    assert (tmp_path / "m.json").read_text() == want
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        A.atomic_write_json(tmp_path / "bad.json", {"o": object()})
    assert not (tmp_path / "bad.json").exists()


def test_atomic_save_npz_compresses_only_when_asked(tmp_path) -> None:
    """``compressed=False`` stores the members (what the memory-mapped loader needs), ``True`` deflates them (oracle:
    zipfile's compress_type); both read back equal with allow_pickle=False."""
    a = np.arange(1000, dtype=np.float32).reshape(10, 100)
    for compressed, method in ((False, zipfile.ZIP_STORED), (True, zipfile.ZIP_DEFLATED)):
        path = A.atomic_save_npz(tmp_path / f"c{compressed}.npz", compressed=compressed, a=a)
        with zipfile.ZipFile(path) as z:
            assert [i.compress_type for i in z.infolist()] == [method]
        with np.load(path, allow_pickle=False) as npz:
            np.testing.assert_array_equal(npz["a"], a)


def test_atomic_to_csv_writes_no_index(tmp_path) -> None:
    """Tidy tables are written without the DataFrame index (hand-written file text)."""
    df = pd.DataFrame({"case_id": ["c0", "c1"], "dice": [0.5, 1.0]}, index=[7, 9])
    assert A.atomic_to_csv(df, tmp_path / "t.csv").read_text() == "case_id,dice\nc0,0.5\nc1,1.0\n"


def test_run_paths_follow_the_documented_layout(tmp_path) -> None:
    """``runs/<profile>/``: data/ (raw/ NIfTI and prepared.npz), models/<name>.pt, tables/<name>.csv,
    figures/<name>.png, notebooks/, report/, manifest.json at the top (paths written by hand)."""
    run = A.RunPaths(tmp_path / "run")
    root = tmp_path / "run"
    assert run.raw_data == root / "data" / "raw" and run.prepared == root / "data" / "prepared.npz"
    assert run.checkpoint("baseline") == root / "models" / "baseline.pt"
    assert run.table("results_03_fgsm") == root / "tables" / "results_03_fgsm.csv"
    assert run.figure("f") == root / "figures" / "f.png" and run.manifest == root / "manifest.json"
    assert run.notebooks == root / "notebooks" and run.report == root / "report"
    assert all((root / d).is_dir() for d in ("data", "models", "tables", "figures", "notebooks", "report"))


_UNPICKLED: list[str] = []


def _record_unpickling(what: str) -> str:
    _UNPICKLED.append(what)
    return what


class _Payload:
    """An object whose unpickling runs a function: what a malicious checkpoint would carry."""

    def __reduce__(self):
        return (_record_unpickling, ("code ran",))


def test_load_model_refuses_a_checkpoint_with_a_pickled_object(tmp_path) -> None:
    """Security: checkpoints are read with ``weights_only=True``, so a file whose pickle calls a function (a
    stand-in for arbitrary code) is refused as unreadable and the function never runs (oracle: the function's own
    record of being called; torch.load with weights_only=False does call it, checked last)."""
    from robustseg_lib import models

    path = tmp_path / "evil.pt"
    torch.save({"spec": {"name": "unet"}, "state_dict": {}, "extra": _Payload()}, path)
    _UNPICKLED.clear()
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        models.load_model(path)
    assert _UNPICKLED == []
    torch.load(path, weights_only=False)  # the payload is live: unpickling it does run the function
    assert _UNPICKLED == ["code ran"]


@pytest.mark.parametrize(("stem", "by"), [
    ("baseline", "run notebook 02_unet first"), ("distilled", "run notebook 06_distillation first"),
    ("advtrain_static", "run notebook 07_adversarial_training first"), ("mine", "run the notebook that trains it first"),
])
def test_a_missing_model_names_the_notebook_that_writes_it(tmp_path, stem, by) -> None:
    """A student who opens a later notebook first is told which notebook to run (the chain's models by name)."""
    from robustseg_lib import models

    with pytest.raises(FileNotFoundError, match=f"{stem}.pt: no such checkpoint \\({by}, or `robustseg reproduce`\\)"):
        models.load_model(tmp_path / f"{stem}.pt")


def test_read_json_names_the_file_it_cannot_parse(tmp_path) -> None:
    """A truncated or hand-edited record (``attacks/*.json``, ``*.train.json``) is reported with its path, not as a
    bare JSONDecodeError ("Expecting value: line 1 column 8") that says nothing about which file."""
    from robustseg_lib.artefacts import read_json

    path = tmp_path / "attacks" / "fgsm.json"
    path.parent.mkdir()
    path.write_text('{"attack": ', encoding="utf-8")
    with pytest.raises(ValueError, match="fgsm.json: not valid JSON"):
        read_json(path)


def test_read_json_object_refuses_other_values_and_text_that_is_not_utf8(tmp_path) -> None:
    """read_json_object (shared by the MSD loader, compare and the manifest reader) returns an object and names the
    file, and what it holds in words, for any other JSON value; bytes that are not UTF-8 are 'not valid JSON' like
    other unreadable text, not a bare UnicodeDecodeError (oracle: hand-written files)."""
    from robustseg_lib.artefacts import read_json_object

    f = tmp_path / "m.json"
    f.write_text('{"a": [1]}', encoding="utf-8")
    assert read_json_object(f) == {"a": [1]}
    for text, kind in (("[1]", "an array"), ("3", "the number 3"), ("null", "null"), ("true", "the boolean true"),
                       ('"x"', "the string 'x'")):
        f.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=f"m.json: expected a JSON object \\(x\\), got {re.escape(kind)}$"):
            read_json_object(f, "a JSON object (x)")
    f.write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match="m.json: not valid JSON"):
        read_json_object(f)
    with pytest.raises(FileNotFoundError, match="nope.json: no such file"):
        read_json_object(tmp_path / "nope.json")


# ----------------------------------------------------------------------------- session 21: durability (fsync)
def _record_fsyncs(monkeypatch, target: Path) -> list[tuple]:
    """Wrap os.fsync and os.replace to log, in order, ("file", size at the fsync) / ("dir", path) / ("replace",)."""
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            events.append(("dir", os.path.samestat(st, os.stat(target.parent))))
        else:
            events.append(("file", st.st_size))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", Path(dst) == target))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.parametrize("writer", ["bytes", "text", "json", "npz", "csv", "torch", "figure"])
def test_every_atomic_writer_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch, writer) -> None:
    """Power-loss safety: the written temporary file (its full size, oracle: the final file's size) is fsynced, then
    renamed onto the target, then the target's folder is fsynced, in that order and once each (oracle: the fd's stat)."""
    target = tmp_path / "d" / {"npz": "a.npz", "csv": "a.csv", "torch": "a.pt", "figure": "a.png"}.get(writer, "a.txt")
    events = _record_fsyncs(monkeypatch, target)
    if writer == "bytes":
        A.atomic_write_bytes(target, b"payload")
    elif writer == "text":
        A.atomic_write_text(target, "payload")
    elif writer == "json":
        A.atomic_write_json(target, {"a": 1})
    elif writer == "npz":
        A.atomic_save_npz(target, x=np.arange(3))
    elif writer == "csv":
        A.atomic_to_csv(pd.DataFrame({"a": [1]}), target)
    elif writer == "torch":
        A.atomic_torch_save({"w": torch.zeros(2)}, target)
    else:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(1, 1))
        A.atomic_savefig(fig, target, dpi=10)
        plt.close(fig)
    assert events == [("file", target.stat().st_size), ("replace", True), ("dir", True)]
    assert target.stat().st_size > 0


def _fail_folder_fsync(monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    """Make os.fsync raise OSError(err) on a folder's descriptor (told apart with os.fstat) and work on files."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(err, os.strerror(err))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_folder_that_cannot_be_fsynced_is_skipped_but_a_failing_file_fsync_is_not(tmp_path, monkeypatch) -> None:
    """EINVAL from fsync on a folder (file systems without folder fsync) and a platform without O_DIRECTORY still
    write the file; an I/O error from fsync on the file itself propagates and leaves the old target in place."""
    _fail_folder_fsync(monkeypatch, errno.EINVAL)
    assert A.atomic_write_text(tmp_path / "a.txt", "new").read_text() == "new"
    monkeypatch.delattr(os, "O_DIRECTORY")
    assert A.atomic_write_text(tmp_path / "b.txt", "new").read_text() == "new"

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output"):
        A.atomic_write_text(tmp_path / "a.txt", "lost")
    assert (tmp_path / "a.txt").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]


def test_an_io_error_from_the_folder_fsync_propagates(tmp_path, monkeypatch) -> None:
    """Only the errno values of a file system without folder fsync (EINVAL, ...) are skipped: an EIO from the folder's
    fsync (the rename may not be on disk) is raised to the caller, not swallowed (oracle: the errno the wrapped
    os.fsync raises on a folder fd, told apart with os.fstat)."""
    _fail_folder_fsync(monkeypatch, errno.EIO)
    with pytest.raises(OSError, match="Input/output") as info:
        A.atomic_write_text(tmp_path / "a.txt", "new")
    assert info.value.errno == errno.EIO
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]  # renamed before the folder's fsync; no temporary file left
