"""Atomic artefact writes and the run-folder layout shared by all notebooks.

Every file a notebook writes goes through these helpers: the content is written to a
temporary file in the destination folder, flushed to disk (``os.fsync``), renamed over the target
(``os.replace`` is atomic on POSIX) and the folder's entry flushed in turn, so neither a killed run nor a
power loss leaves a half-written file under the target's name.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

__all__ = [
    "RunPaths",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npz",
    "atomic_to_csv",
    "atomic_torch_save",
    "atomic_savefig",
    "read_json",
    "read_json_object",
    "json_kind",
]


#: The process's umask, read once at import (reading it means setting it, which is not thread-safe).
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    Args:
        target: final file path.
        suffix: suffix for the temporary file (some writers choose the format from it);
            defaults to the target's full suffix (e.g. ``.nii.gz``).

    Yields:
        A path to write to. On an exception the temporary file is removed and the
        target is left untouched. On success the temporary file is fsynced before the
        rename and the folder after it (where the OS can open a folder), so the new
        content, not an empty or partial file, is what survives a power loss.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files: give the artefact the mode an ordinary open() would
            os.chmod(tmp_path, 0o666 & ~_UMASK)
            _fsync_file(tmp_path)
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync_file(path: Path) -> None:
    """Flush a closed file's data and metadata to disk (Windows' ``_commit`` needs a writable handle)."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: errno values of an fsync the file system does not support on a folder (not a failed write).
_NO_DIR_FSYNC = {e for e in (errno.EINVAL, errno.EBADF, getattr(errno, "ENOTSUP", None), getattr(errno, "EOPNOTSUPP", None)) if e is not None}


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows)
    or the file system refuses to fsync them (EINVAL on some network and FUSE file systems)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def _write_with(target: str | Path, writer: Callable[[Path], Any], suffix: str | None = None) -> Path:
    with atomic_path(target, suffix=suffix) as tmp:
        writer(tmp)
    return Path(target)


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    return _write_with(target, lambda p: p.write_bytes(data))


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically and return the path."""
    return _write_with(target, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(target: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (numpy scalars converted) atomically."""

    def default(o: Any) -> Any:
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (np.floating,)):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    return atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=default) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; raises FileNotFoundError, or ValueError for text that is not UTF-8 JSON, naming the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def json_kind(value: Any) -> str:
    """A JSON value in words (``an array``, ``the number 3``...), for errors on a malformed file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" + ("…" if len(value) > 40 else "")
    return "an array" if isinstance(value, list) else "an object"


def read_json_object(path: str | Path, what: str = "a JSON object") -> dict[str, Any]:
    """Read a JSON file that must hold an object; as :func:`read_json`, and ValueError naming the path when it holds
    another JSON value (``what`` says what was expected, e.g. ``"a JSON object (MSD dataset.json)"``)."""
    blob = read_json(path)
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: expected {what}, got {json_kind(blob)}")
    return blob


def atomic_save_npz(target: str | Path, compressed: bool = False, **arrays: np.ndarray) -> Path:
    """Save arrays to an ``.npz`` atomically (``np.load(..., allow_pickle=False)`` reads it)."""
    saver = np.savez_compressed if compressed else np.savez
    return _write_with(target, lambda p: saver(p, **arrays), suffix=".npz")


def atomic_to_csv(df: pd.DataFrame, target: str | Path) -> Path:
    """Write a DataFrame as CSV (no index) atomically."""
    return _write_with(target, lambda p: df.to_csv(p, index=False))


def atomic_torch_save(obj: Any, target: str | Path) -> Path:
    """``torch.save`` atomically. Read back with ``torch.load(path, weights_only=True)``."""
    return _write_with(target, lambda p: torch.save(obj, p), suffix=".pt")


def atomic_savefig(fig: Any, target: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (format from the target's suffix)."""
    target = Path(target)
    return _write_with(target, lambda p: fig.savefig(p, dpi=dpi, bbox_inches="tight", format=target.suffix.lstrip(".")))


class RunPaths:
    """The run-folder layout: the contract between notebooks.

    ``runs/<profile>/`` holds ``data/`` (generated NIfTI and the prepared cache),
    ``models/`` (checkpoints), ``tables/`` (tidy CSVs), ``figures/`` (PNG),
    ``notebooks/`` (executed copies), ``report/`` and ``manifest.json``.

    Args:
        root: the run folder (created on demand).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def data(self) -> Path:
        return self._dir("data")

    @property
    def raw_data(self) -> Path:
        """Where the generated NIfTI dataset is written."""
        return self.data / "raw"

    @property
    def prepared(self) -> Path:
        """The preprocessed cache (``prepared.npz``) every later notebook reads."""
        return self.data / "prepared.npz"

    @property
    def models(self) -> Path:
        return self._dir("models")

    @property
    def tables(self) -> Path:
        return self._dir("tables")

    @property
    def figures(self) -> Path:
        return self._dir("figures")

    @property
    def notebooks(self) -> Path:
        return self._dir("notebooks")

    @property
    def report(self) -> Path:
        return self._dir("report")

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def checkpoint(self, name: str) -> Path:
        """Path of the deployed weights of model ``name`` (e.g. ``baseline``)."""
        return self.models / f"{name}.pt"

    def table(self, name: str) -> Path:
        """Path of tidy table ``name`` (e.g. ``results_03_fgsm``)."""
        return self.tables / f"{name}.csv"

    def figure(self, name: str) -> Path:
        return self.figures / f"{name}.png"
