"""``import robustseg_lib`` loads jsonschema without the rfc3987_syntax IRI grammar (see the package docstring)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("rfc3987_syntax") is None or importlib.util.find_spec("jsonschema") is None,
    reason="jsonschema with rfc3987_syntax not installed: nothing is skipped",
)


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_robustseg_import_leaves_out_the_iri_grammar_and_keeps_it_importable() -> None:
    loaded, iri, later = _run(
        "import sys, robustseg_lib, jsonschema\n"
        "print('rfc3987_syntax' in sys.modules, 'iri' in jsonschema.FormatChecker().checkers)\n"
        "import rfc3987_syntax\n"
        "print(rfc3987_syntax.is_valid_syntax('iri', 'http://example.org/x'))\n"
    )
    assert (loaded, iri) == ("False", "False")  # jsonschema's fallback when the optional package is absent
    assert later == "True"  # importing it on purpose afterwards still works


def test_jsonschema_imported_first_is_left_alone() -> None:
    iri, = _run(
        "import jsonschema, robustseg_lib\n"
        "print('iri' in jsonschema.FormatChecker().checkers)\n"
    )
    assert iri == "True"


def test_the_environment_can_keep_the_iri_checker() -> None:
    iri, = _run(
        "import os; os.environ['ROBUSTSEG_KEEP_IRI_CHECKER'] = '1'\n"
        "import robustseg_lib, jsonschema\n"
        "print('iri' in jsonschema.FormatChecker().checkers)\n"
    )
    assert iri == "True"


def test_a_broken_jsonschema_does_not_stop_the_package_import(tmp_path) -> None:
    """A jsonschema whose import raises something other than ImportError leaves `import robustseg_lib` working."""
    (tmp_path / "jsonschema").mkdir()
    (tmp_path / "jsonschema" / "__init__.py").write_text("raise RuntimeError('broken install')\n")
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import robustseg_lib; print('ok')"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == ["ok"]
