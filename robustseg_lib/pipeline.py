"""``robustseg reproduce``: run the notebook chain headless with papermill.

Each notebook (stage) runs in order into the run folder with the parameters of a named
profile (``notebooks/profiles/<name>.yaml``) plus ``--set`` overrides. A stage is skipped
when the manifest says it finished with the same fingerprint (its notebook's code, its
parameters, the library's code, the fingerprints of the stages before it and, with a data
folder, a signature of its files) and its executed notebook is still there; a killed run
therefore resumes from the last finished stage. A failing cell stops the run, naming the
notebook and the cell; the partial notebook is kept.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import errno
import functools
import hashlib
import json
import math
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .artefacts import RunPaths, atomic_write_json, read_json_object
from .checks import check_float, check_int

__all__ = [
    "STAGES",
    "REPO_ROOT",
    "NOTEBOOK_DIR",
    "PROFILE_DIR",
    "load_profile",
    "notebook_parameters",
    "stage_parameters",
    "parse_overrides",
    "data_dir_signature",
    "reproduce",
    "default_run_dir",
    "stale_stages",
    "check_device",
    "main",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PROFILE_DIR = NOTEBOOK_DIR / "profiles"

#: The chain, in order: stage name → notebook file.
STAGES: dict[str, str] = {
    "01_data": "01_data.ipynb",
    "02_unet": "02_unet.ipynb",
    "03_fgsm": "03_fgsm.ipynb",
    "04_ifgsm": "04_ifgsm.ipynb",
    "05_tifgsm": "05_tifgsm.ipynb",
    "06_distillation": "06_distillation.ipynb",
    "07_adversarial_training": "07_adversarial_training.ipynb",
    "08_statistics": "08_statistics.ipynb",
}
#: Short names accepted by --only and --set (``unet`` = ``02_unet`` = ``02``).
_ALIASES = {**{s: s for s in STAGES}, **{s[:2]: s for s in STAGES}, **{s[3:]: s for s in STAGES}}
#: Parameters the pipeline itself sets in every notebook.
_RUNNER_KEYS = ("run_dir", "device")


class PipelineError(RuntimeError):
    """A stage failed or the request was invalid; the message says which and why."""


def stage_name(name: str, where: str = "") -> str:
    """Canonical stage name for ``name`` (``"unet"``, ``"02"`` or ``"02_unet"``).

    Args:
        name: the stage as given.
        where: what gave it (``--only nosuch``, ``--set 'nosuch.epochs=1'``), put first in the message.
    """
    try:
        return _ALIASES[name]
    except (KeyError, TypeError):
        raise PipelineError(f"{where + ': ' if where else ''}unknown stage {name!r}; known: {', '.join(STAGES)} (or "
                            "their number or name alone: 02 or unet for 02_unet)") from None


def load_profile(name_or_path: str) -> dict[str, Any]:
    """Load a profile: ``{"description", "common": {...}, "notebooks": {stage: {...}}}``.

    Args:
        name_or_path: ``smoke``, ``teaching``, ``paper`` or a path to a YAML file.

    Returns:
        The profile with stage keys canonicalised.

    Raises:
        PipelineError: naming the file (and the key) for a file that is missing, not UTF-8, not YAML, not a mapping,
            sets nothing (no ``common`` or ``notebooks`` entries: it would run every notebook's defaults without a
            word), or whose ``common``, ``notebooks`` or a stage's section is not a mapping.
    """
    path = Path(name_or_path)
    if not path.suffix and not path.is_file() and "/" not in str(name_or_path):  # a name, not a path
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not PROFILE_DIR.is_dir():  # a plain `pip install .` copies the library, not the notebooks and profiles
        raise PipelineError(f"{NOTEBOOK_DIR}: no notebooks here; robustseg reproduce runs the notebooks of a "
                            "repository checkout: clone it and install it with `python3 -m pip install -e .`")
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        hint = f"; for the shipped profile pass --profile {path.stem}" if path.stem in known and path.suffix else ""
        raise PipelineError(f"profile {name_or_path!r} not found ({path}); known: {', '.join(known)}{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path}: not a profile (not UTF-8 text: {exc.reason} at byte {exc.start}); a profile is "
                            "a YAML file") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read the profile: {exc.strerror or exc}") from None
    try:
        prof = load_yaml(text)
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    example = f"see {PROFILE_DIR / 'smoke.yaml'}"
    if prof is None or not isinstance(prof, dict):
        got = "empty" if prof is None else f"a {type(prof).__name__}"
        raise PipelineError(f"{path}: a profile must be a mapping with notebooks: and/or common: ({got}); {example}")
    unknown = set(prof) - {"description", "common", "notebooks"}
    if unknown:
        raise PipelineError(f"{path}: unknown top-level keys {sorted(unknown, key=str)} (allowed: description, common, "
                            "notebooks)")
    for key in ("common", "notebooks"):
        if prof.get(key) is not None and not isinstance(prof[key], dict):
            what = "{parameter: value}" if key == "common" else "{stage: {parameter: value}}"
            raise PipelineError(f"{path}: {key} must be a mapping {what}, got a {type(prof[key]).__name__} "
                                f"{prof[key]!r}; {example}")
    nbs: dict[str, dict[str, Any]] = {}
    for key, section in (prof.get("notebooks") or {}).items():
        if not isinstance(key, str):  # YAML reads `02:` as the number 2
            raise PipelineError(f"{path}: notebooks: stage key {key!r} is not a name; quote it ('02') or write the "
                                "stage's name (unet or 02_unet)")
        stage = stage_name(key, f"{path}: notebooks: {key}")
        if section is not None and not isinstance(section, dict):
            raise PipelineError(f"{path}: notebooks: {key} must be a mapping {{parameter: value}}, got a "
                                f"{type(section).__name__} {section!r}")
        if stage in nbs:
            first = next(k for k in prof["notebooks"] if isinstance(k, str) and k in _ALIASES and _ALIASES[k] == stage)
            raise PipelineError(f"{path}: notebooks: {first} and {key} are the same stage ({stage}); merge them")
        nbs[stage] = section or {}
    if not prof.get("common") and not any(nbs.values()):  # it would run the notebooks' defaults without a word
        raise PipelineError(f"{path}: sets no parameter (no common: or notebooks: entries); for the notebooks' own "
                            f"defaults use --profile teaching; {example}")
    return {"name": path.stem, "path": str(path), "description": prof.get("description", ""), "common": prof.get("common") or {}, "notebooks": nbs}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (line and column, 1-based)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return " ".join(str(exc).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-3`` and ``5e-1`` are numbers (PyYAML's YAML 1.1 rules need a dot)."""


_Yaml12Loader.add_implicit_resolver(  # after PyYAML issue 173: the 1.1 float regex without the mandatory dot
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (profiles and ``--set`` values)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 (a SafeLoader subclass)


#: Allowed values of the notebooks' enumerated parameters, ``{(stage, name): values}``; a ``list`` parameter
#: allows any of them per element. Literal here because the CLI must not import torch or MONAI to check a ``--set``;
#: tests/test_pipeline.py keeps them equal to the library's own constants (data.LAYOUTS, models.MODEL_NAMES, ...).
PARAMETER_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("01_data", "layout"): ("brats2021", "brats2023", "msd"),
    ("02_unet", "arch"): ("unet", "basicunet", "dynunet"),
    ("02_unet", "inference"): ("sliding", "whole"),
    ("05_tifgsm", "policy"): ("erase", "et_to_ncr", "ed_to_et"),
    ("05_tifgsm", "extra_policies"): ("erase", "et_to_ncr", "ed_to_et"),
    ("07_adversarial_training", "adv_attack"): ("fgsm", "ifgsm", "mixed"),
    ("07_adversarial_training", "label_source"): ("truth", "predicted"),
    ("08_statistics", "region"): ("WT", "TC", "ET"),
}


#: A value rule: a function that raises ValueError or TypeError for a value its notebook would refuse, and what it
#: expects, for the message.
_Rule = tuple[Callable[[Any], object], str]


def _count(minimum: int) -> _Rule:
    """An int >= ``minimum`` (``checks.check_int``, as the library checks it)."""
    return (lambda v: check_int(v, "value", minimum=minimum)), f"an integer >= {minimum}"


def _number(low: float, *, above: bool = False, high: float | None = None, up_to: bool = False) -> _Rule:
    """A finite number >= ``low`` (> with ``above``) and, where ``high`` is given, < ``high`` (<= with ``up_to``)."""

    def check(v: Any) -> None:
        x = check_float(v, "value", minimum=low, strict=above)
        if high is not None and not (x <= high if up_to else x < high):
            raise ValueError(v)

    if high is None:
        return check, f"a number {'>' if above else '>='} {low:g}"
    return check, f"a number in {'(' if above else '['}{low:g}, {high:g}{']' if up_to else ')'}"


def _sides(minimum: int) -> _Rule:
    """3 ints >= ``minimum`` (``synthetic._check_shape`` for shapes, ``TrainConfig`` for the crop)."""

    def check(v: Any) -> None:
        if len(v) != 3:
            raise ValueError(v)
        for side in v:
            check_int(side, "value", minimum=minimum)

    return check, f"3 integers >= {minimum}, e.g. [{max(minimum, 48)}, {max(minimum, 48)}, {max(minimum, 48)}]"


def _fractions(v: Any) -> None:
    """``data._check_fractions``: 3 finite non-negative numbers summing to 1 (within 1e-6), train > 0."""
    fr = np.asarray(v, dtype=np.float64)
    if fr.shape != (3,) or not np.all(np.isfinite(fr)) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0, atol=1e-6) \
            or fr[0] <= 0:
        raise ValueError(v)


def _eps_grid(v: Any) -> None:
    """``evaluation.AttackSpec``: a non-empty list of values ``float()`` reads as finite numbers >= 0."""
    grid = [float(e) for e in v]
    if not grid or not all(math.isfinite(e) and e >= 0 for e in grid):
        raise ValueError(v)


def _each_above_zero(v: Any) -> None:
    """Each item a finite number > 0 (notebook 06 trains with ``TrainConfig(temperature=T)`` for each)."""
    for t in v:
        check_float(t, "value", minimum=0, strict=True)


def _eps_range(v: Any) -> None:
    """``defenses._check_eps_range``: a pair (lo, hi) of finite numbers with 0 <= lo <= hi."""
    if len(v) != 2:
        raise ValueError(v)
    lo, hi = (check_float(e, "value", minimum=0) for e in v)
    if lo > hi:
        raise ValueError(v)


_EPS_GRID: _Rule = (_eps_grid, "a non-empty list of numbers >= 0, e.g. [0, 0.1, 0.3]")

#: Value ranges of the notebooks' parameters, ``{(stage, name): rule}``, checked up front (:func:`check_parameter`) so
#: that ``--set unet.epochs=-1`` fails at once instead of when notebook 02 runs, after hours of earlier stages. Each is
#: the rule the library applies when the notebook runs (named in a comment or the rule's docstring), never stricter:
#: tests/test_pipeline.py checks each boundary against the library. Literal for the reason PARAMETER_CHOICES is.
PARAMETER_RULES: dict[tuple[str, str], _Rule] = {
    **{(s, "seed"): _count(0) for s in STAGES},  # runtime.setup_run
    ("01_data", "train_seed"): ((lambda v: check_int(v, "value", minimum=-1)), "-1 (the data seed) or a seed >= 0"),
    ("01_data", "work_shape"): _sides(1),  # data.prepare_dataset, prepare_synthetic
    ("01_data", "fractions"): (_fractions, "3 non-negative numbers (train > 0) summing to 1, e.g. [0.55, 0.15, 0.3]"),
    ("01_data", "workers"): _count(1),  # data.prepare_dataset, prepare_synthetic
    ("01_data", "threshold_cases"): _count(0),  # data.threshold_baseline(max_cases=threshold_cases or None)
    ("02_unet", "width"): _count(1),  # models.model_spec
    ("02_unet", "levels"): _count(2),
    ("02_unet", "crop"): _sides(1),  # training.TrainConfig
    ("02_unet", "sw_overlap"): _number(0, high=1),
    **{(s, k): rule for s in ("02_unet", "06_distillation", "07_adversarial_training")  # training.TrainConfig
       for k, rule in (("epochs", _count(1)), ("steps_per_epoch", _count(1)), ("lr", _number(0, above=True)))},
    **{(s, "batch_size"): _count(1) for s in list(STAGES)[1:7]},  # TrainConfig (02), attacks.attack_sweep (03-07)
    **{(s, "eps_grid"): _EPS_GRID for s in ("03_fgsm", "04_ifgsm", "05_tifgsm")},
    **{(s, "steps"): _count(1) for s in ("04_ifgsm", "05_tifgsm")},  # evaluation.AttackSpec
    **{(s, "alpha_frac"): _number(0, above=True) for s in ("04_ifgsm", "05_tifgsm")},
    ("04_ifgsm", "curve_eps"): _number(0),  # attacks.ifgsm's budget
    ("06_distillation", "temperature"): _number(0, above=True),  # TrainConfig, defenses.DistillationObjective
    ("06_distillation", "compare_temperatures"): (_each_above_zero, "a list of numbers > 0, e.g. [1.0, 5.0]"),
    ("06_distillation", "hard_weight"): _number(0),  # defenses.DistillationObjective
    ("07_adversarial_training", "eps_range"): (_eps_range, "a pair [lo, hi] of numbers with 0 <= lo <= hi"),
    ("07_adversarial_training", "mix"): _number(0, above=True, high=1, up_to=True),  # defenses.AdversarialAugmenter
    ("07_adversarial_training", "adv_steps"): _count(1),
    ("08_statistics", "alpha"): _number(0, above=True, high=1),  # stats.compare, claims, claim_rules_md
    ("08_statistics", "n_resamples"): _count(1),  # stats.bootstrap_mean_ci
}
#: Rules of the parameters notebook 01 reads only to generate synthetic cases (``data_dir`` empty): with a data
#: folder it never looks at them, so they are checked only without one (:func:`_check_together`).
SYNTHETIC_DATA_RULES: dict[tuple[str, str], _Rule] = {
    ("01_data", "n_cases"): _count(1),  # data.make_synthetic_dataset, prepare_synthetic
    ("01_data", "shape"): _sides(16),  # synthetic.MIN_SIDE: the generator's smallest grid
}


def _check_rule(stage: str, name: str, value: Any, rule: _Rule, why: str = "") -> None:
    """Apply a value rule; PipelineError naming ``stage.name`` and what it expects when the value breaks it."""
    try:
        rule[0](value)
    except (TypeError, ValueError):
        raise PipelineError(f"{stage}.{name} = {value!r}: expected {rule[1]}{why}") from None


def check_parameter(stage: str, name: str, value: Any, raw: str | None = None, notebook_dir: Path = NOTEBOOK_DIR) -> Any:
    """Check a parameter value against the type its notebook declares (``name: type = default``), for the
    enumerated ones (:data:`PARAMETER_CHOICES`) against the values it allows, and against its range
    (:data:`PARAMETER_RULES`; the synthetic-data ones are checked with the other parameters, in stage_parameters).

    Args:
        stage: stage name.
        name: parameter name.
        value: the parsed value.
        raw: the text it was parsed from (``--set``), used as is for ``str`` parameters (``layout=no``).
        notebook_dir: where the notebooks are.

    Returns:
        The value, converted where that loses nothing (an int for a float parameter).

    Raises:
        PipelineError: naming the stage and parameter when the value does not fit.
    """
    typ = notebook_parameter_types(stage, notebook_dir).get(name)
    bad = None
    if typ == "str" and not isinstance(value, str):
        if raw is None:
            bad = "a string (quote it in YAML)"
        else:
            value = raw
    elif typ == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        bad = "an integer"
    elif typ == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad = "a number"
        else:
            value = float(value)
    elif typ == "bool" and not isinstance(value, bool):
        bad = "true or false"
    elif typ == "list" and not isinstance(value, list):
        bad = "a list, e.g. [1, 2]"
    if bad:
        raise PipelineError(f"{stage}.{name} = {value!r}: expected {bad} ({name}: {typ} in the notebook)")
    choices = PARAMETER_CHOICES.get((stage_name(stage), name))
    if choices is not None:
        items = value if isinstance(value, list) else [value]
        wrong = [v for v in items if not isinstance(v, str) or v not in choices]
        if wrong:
            what = "each item one of" if isinstance(value, list) else "one of"
            raise PipelineError(f"{stage}.{name} = {value!r}: expected {what} {', '.join(choices)}")
        if len(set(items)) < len(items):
            raise PipelineError(f"{stage}.{name} = {value!r}: expected each item once")
    rule = PARAMETER_RULES.get((stage_name(stage), name))
    if rule is not None:
        _check_rule(stage_name(stage), name, value, rule)
    return value


def _check_together(stage: str, params: dict[str, Any], declared: dict[str, Any]) -> None:
    """Checks that involve two parameters of a stage (values not given fall back to the notebook's defaults)."""
    if stage == "05_tifgsm" and {"policy", "extra_policies"} <= set(params) | set(declared):
        value = {k: params[k] if k in params else ast.literal_eval(declared[k]) for k in ("policy", "extra_policies")}
        if value["policy"] in value["extra_policies"]:
            raise PipelineError(f"05_tifgsm.extra_policies = {value['extra_policies']!r} repeats the main policy "
                                f"{value['policy']!r} (its rows would be written twice)")
    if stage == "01_data":
        data_dir = params["data_dir"] if "data_dir" in params else ast.literal_eval(declared.get("data_dir", "''"))
        for (_, name), rule in SYNTHETIC_DATA_RULES.items():
            if name in params and not data_dir:
                _check_rule(stage, name, params[name], rule, " (with synthetic data: no data_dir)")


def notebook_parameter_types(stage: str, notebook_dir: Path = NOTEBOOK_DIR) -> dict[str, str]:
    """The declared type of each parameter of a notebook (``int``, ``float``, ``str``, ``bool``, ``list``...)."""
    nb = notebook_dir / STAGES[stage_name(stage)]
    if not nb.is_file():
        raise PipelineError(f"{nb}: notebook missing")
    return {k: t for k, _, t in _inspect(str(nb), nb.stat().st_mtime_ns)}


def notebook_parameters(stage: str, notebook_dir: Path = NOTEBOOK_DIR) -> dict[str, Any]:
    """The parameters declared in a notebook's ``parameters`` cell (papermill.inspect_notebook).

    Returns:
        ``{name: default}`` (defaults as papermill reads them, as strings).
    """
    nb = notebook_dir / STAGES[stage_name(stage)]
    if not nb.is_file():
        raise PipelineError(f"{nb}: notebook missing")
    return {k: d for k, d, _ in _inspect(str(nb), nb.stat().st_mtime_ns)}


@functools.lru_cache(maxsize=64)
def _inspect(path: str, mtime_ns: int) -> tuple[tuple[str, Any, str], ...]:
    """papermill.inspect_notebook, cached per file version (the pipeline asks many times per run)."""
    import papermill

    return tuple((k, v["default"], v.get("inferred_type_name") or "") for k, v in papermill.inspect_notebook(path).items())


def parse_overrides(sets: Sequence[str], notebook_dir: Path = NOTEBOOK_DIR) -> dict[str, dict[str, Any]]:
    """Parse ``--set NOTEBOOK.PARAM=VALUE`` items (VALUE read as YAML), refusing unknown keys.

    Returns:
        ``{stage: {param: value}}``.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in sets:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise PipelineError(f"--set {item!r}: expected NOTEBOOK.PARAM=VALUE, e.g. unet.epochs=5")
        key, raw = item.split("=", 1)
        nb, param = key.split(".", 1)
        stage = stage_name(nb, f"--set {item!r}")
        valid = [p for p in notebook_parameters(stage, notebook_dir) if p not in _RUNNER_KEYS]
        if param not in valid:
            raise PipelineError(f"--set {item!r}: {stage} has no parameter {param!r}; valid: {', '.join(valid)}")
        typ = notebook_parameter_types(stage, notebook_dir).get(param)
        if not raw.strip() and typ != "str":  # YAML reads nothing as null: `epochs = None` would hide the slip
            raise PipelineError(f"--set {item!r}: empty value for {stage}.{param} ({param}: {typ} in the notebook)")
        try:
            value = load_yaml(raw)
        except yaml.YAMLError as exc:
            raise PipelineError(f"--set {item!r}: value is not valid YAML ({exc})") from None
        out.setdefault(stage, {})[param] = check_parameter(stage, param, value, raw, notebook_dir)
    return out


def stage_parameters(
    profile: dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None, notebook_dir: Path = NOTEBOOK_DIR
) -> dict[str, dict[str, Any]]:
    """Merge common keys, per-notebook keys and overrides; each notebook gets only its own parameters.

    Returns:
        ``{stage: params}`` for every stage. Raises PipelineError for a key a notebook does not declare, and for
        ``device`` or ``run_dir`` in the profile (``--device`` and ``--out`` set them).
    """
    overrides = overrides or {}
    own_keys = [*profile["common"], *(k for nb in profile["notebooks"].values() for k in nb)]
    runner = sorted({k for k in own_keys if k in _RUNNER_KEYS})
    if runner:  # the call's --device and --out would replace them in every notebook without a word
        raise PipelineError(f"profile {profile['name']}: {', '.join(runner)} cannot be set by a profile (every notebook "
                            "gets them from reproduce: pass --device auto|cpu|cuda and --out DIR instead)")
    merged: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        declared = notebook_parameters(stage, notebook_dir)
        params = {k: check_parameter(stage, k, v, None, notebook_dir) for k, v in profile["common"].items() if k in declared}
        own = profile["notebooks"].get(stage, {})
        bad = [k for k in own if k not in declared]
        if bad:
            raise PipelineError(f"profile {profile['name']}: {stage} has no parameter(s) {bad}; valid: {', '.join(declared)}")
        params.update({k: check_parameter(stage, k, v, None, notebook_dir) for k, v in own.items()})
        params.update(overrides.get(stage, {}))
        _check_together(stage, params, declared)
        merged[stage] = params
    unused = [k for k in profile["common"] if not any(k in notebook_parameters(s, notebook_dir) for s in STAGES)]
    if unused:
        raise PipelineError(f"profile {profile['name']}: common key(s) {unused} are parameters of no notebook")
    return merged


def _code_hash(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return hashlib.sha256(code.encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def library_hash() -> str:
    """Hash of the library's source (every ``robustseg_lib/*.py``): a stage's outputs depend on it as much as on its notebook."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def data_dir_signature(path: str | os.PathLike[str]) -> str:
    """A cheap signature of a data folder's contents: changes when a file is added, removed, renamed, resized or touched.

    Every regular file under ``path`` (recursively) contributes its path relative to ``path`` (POSIX form), its size and
    its modification time in nanoseconds, in order of relative path. The file bytes are *not* read: a real BraTS folder
    holds 10+ GB, while one ``stat`` per file (a few thousand) is cheap. So an edit that keeps both size and mtime (a
    tool that restores mtimes, or a same-size rewrite within the file system's mtime resolution) goes unnoticed, and a
    copy of the folder that does not keep mtimes (``cp`` without ``-p``) counts as a change.

    Symbolic links are followed, to files and to folders, as the loaders (``robustseg_lib.data``) follow them: a folder
    of links into a shared dataset is signed by the files it points to; a folder reached twice (a link cycle) is walked
    once; a broken link is skipped here (the loaders refuse one where they look for cases, naming it, so a run on such
    a folder stops in notebook 01). Hidden entries (names starting with ``.``: ``.DS_Store``,
    ``.git/``, macOS ``._*`` forks) are skipped at every level, as the loaders skip them.

    Args:
        path: the data folder (``--data-dir``).

    Returns:
        A hex digest (sha256).

    Raises:
        TypeError: ``path`` is not a str or path.
        NotADirectoryError: ``path`` is not an existing folder (named).
        OSError: a folder under it cannot be listed (named).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"data folder must be a str or path, got {type(path).__name__}")
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: data folder does not exist or is not a folder")

    def fail(err: OSError) -> None:  # os.walk would skip an unreadable folder silently
        raise err

    files: list[tuple[str, int, int]] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=fail):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # a link back to a folder already walked
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # sorted: which alias of a folder is walked is fixed
        for name in filenames:
            if name.startswith("."):
                continue
            file = Path(dirpath, name)
            try:
                st = file.stat()
            except OSError as exc:  # a broken or self-referential link: notebook 01's loaders refuse it where it matters
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    continue
                raise
            if stat.S_ISREG(st.st_mode):
                files.append((file.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    h = hashlib.sha256()
    for rel, size, mtime_ns in sorted(files):
        h.update(os.fsencode(rel) + b"\0" + f"{size}\0{mtime_ns}\n".encode())
    return h.hexdigest()


def _data_signature(params: dict[str, Any], notebook_dir: Path) -> str | None:
    """``data_dir_signature`` of a stage's ``data_dir`` parameter; None when it has none or it is empty (synthetic data).

    A relative ``data_dir`` from a profile is read from the notebook folder, the notebooks' working folder (``reproduce``
    makes one from ``--data-dir`` or ``--set`` absolute, from the caller's folder).
    """
    data_dir = params.get("data_dir")
    if not data_dir:
        return None
    try:
        return data_dir_signature(Path(notebook_dir, data_dir))  # an absolute data_dir stays as it is
    except (TypeError, OSError) as exc:
        raise PipelineError(f"data_dir {data_dir!r}: {exc}") from None


def _fingerprint(stage: str, params: dict[str, Any], upstream: str, notebook_dir: Path, data: str | None = None) -> str:
    """A stage's fingerprint; ``data`` is the signature of its data folder, left out when None so that runs on synthetic
    data keep the fingerprints they had before data folders were signed."""
    fields = {"stage": stage, "code": _code_hash(notebook_dir / STAGES[stage]), "library": library_hash(),
              "params": params, "upstream": upstream}  # fmt: skip
    if data is not None:
        fields["data"] = data
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: Training checkpoints (under ``models/``) each stage resumes from after a kill; removed when the stage starts afresh.
STAGE_CHECKPOINTS: dict[str, tuple[str, ...]] = {
    "02_unet": ("baseline_ckpt",),
    "06_distillation": ("teacher_T*_ckpt", "student_T*_ckpt"),
    "07_adversarial_training": ("advtrain_ckpt", "advtrain_static_ckpt"),
}


def _clear_checkpoints(run: RunPaths, stage: str) -> list[str]:
    """Remove the stage's training checkpoints, so that a rerun trains afresh instead of resuming an older training."""
    import shutil

    gone = []
    for pattern in STAGE_CHECKPOINTS.get(stage, ()):
        for d in sorted(run.models.glob(pattern)):
            if d.is_dir():
                shutil.rmtree(d)
                gone.append(d.name)
    return gone


def _failed_cell(nb_path: Path) -> str:
    """Describe the first cell with an error output in an executed notebook."""
    try:
        nb = json.loads(nb_path.read_text())
    except (OSError, ValueError):
        return "unknown cell"
    n = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        n += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = "".join(cell.get("source", "")).strip().splitlines()
                return f"code cell {n} ({first[0][:60] if first else ''!r}): {out.get('ename')}: {out.get('evalue')}"
    return "unknown cell"


def stale_stages(manifest: dict[str, Any]) -> list[str]:
    """The stages of a run that are not ``done`` for its last request, in chain order.

    Args:
        manifest: a run's ``manifest.json``.

    Returns:
        Stage names whose status is not ``done`` (``stale`` after an ``--only`` call changed a stage before them,
        ``failed``, ``running``, ``interrupted``) or that never ran.
    """
    return [s for s in STAGES if manifest.get("stages", {}).get(s, {}).get("status") != "done"]


def _refuse_other_data(root: Path, manifest: dict[str, Any], data_params: dict[str, Any], asked: dict[str, Any]) -> None:
    """Refuse a request whose own data settings would replace a default run folder's finished run.

    ``runs/<profile>-seed<N>`` is the default of ``--seed N`` with or without ``--set data.seed=...`` or
    ``data.train_seed=...``: without this check the second command would rerun every stage in the first one's folder
    and replace that replicate without a word. Only the data parameters this request sets (``--set data.*``,
    ``--seed``, ``--data-dir``) count: a profile file changed by an update, a later stage's parameters or the code
    rerun in place as before.
    """
    rec = manifest.get("stages", {}).get("01_data", {})
    before = rec.get("parameters")
    if rec.get("status") != "done" or before is None:
        return
    keys = [k for k in sorted(asked) if before.get(k) != data_params.get(k)]
    if not keys:
        return
    diff = ", ".join(f"{k}: {before.get(k, '(unset)')!r} -> {data_params.get(k, '(unset)')!r}" for k in keys)
    raise PipelineError(
        f"{root} holds a run on other data (01_data {diff}); this request would replace every stage of it. "
        f"Pass --out DIR to run it beside that one, or --out {root} to replace it"
    )


def default_run_dir(profile_name: str, seed: int | None = None) -> Path:
    """The run folder ``reproduce`` writes when ``--out`` is not given: ``runs/<profile>``, or ``runs/<profile>-seed<N>``
    for a ``--seed`` replicate (so that it does not overwrite the profile's own run)."""
    return Path("runs") / (profile_name if seed is None else f"{profile_name}-seed{seed}")


def _same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name one folder (links resolved; ``samefile`` also catches bind mounts and case-insensitive
    file systems where both exist)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_run_folder(root: Path, out: str | Path | None, notebook_dir: Path) -> None:
    """Refuse a run folder that would write among the source notebooks, before anything is created.

    papermill writes each executed notebook to ``<run>/notebooks/<name>.ipynb``: a run folder whose ``notebooks/`` is
    the source folder (``--out .`` in the repository) would overwrite the committed notebooks with executed copies.
    An ``--out`` that is the source folder or inside it would put a run's data, models and executed notebooks among
    the sources; refused too. The default folder (``runs/<profile>`` under the current folder) is only checked for the
    first: from inside ``notebooks/`` it is ``notebooks/runs/...``, which git ignores and which overwrites nothing.
    """
    src = notebook_dir.resolve()
    what = f"--out {out}" if out is not None else f"the default run folder {root}"
    fix = ("leave --out out (runs/<profile> under the current folder) or give another folder, e.g. --out runs/NAME"
           if out is not None else f"pass --out DIR outside {src}")
    if _same_folder(root / "notebooks", notebook_dir):
        raise PipelineError(f"{what}: its notebooks/ folder is the source notebooks' folder {src}, which the run would "
                            f"overwrite with its executed copies; {fix}")
    if out is not None and (_same_folder(root, notebook_dir) or src in root.resolve().parents):
        raise PipelineError(f"{what}: the source notebooks' folder {src} or a folder inside it; a run's data, models "
                            f"and executed notebooks do not belong among the notebooks: {fix}")


def _make_run_folder(root: Path, out: str | Path | None) -> list[Path]:
    """Create the run folder (and its parents), naming the option when that fails.

    Returns:
        The folders this call created, deepest first (empty when the run folder was there already), for
        :func:`_remove_made_folders`.
    """
    what = f"--out {out}" if out is not None else f"run folder {root}"
    try:  # exists() too may fail (a parent folder we may not enter)
        if root.exists() and not root.is_dir():
            raise PipelineError(f"{what}: not a folder; give a folder (it is created if missing)")
        made, p = [], root
        while not p.exists() and not p.is_symlink() and p != p.parent:
            made.append(p)
            p = p.parent
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"{what}: cannot create {exc.filename or root}: {exc.strerror or exc}") from None
    return made


def _remove_made_folders(root: Path, made: list[Path]) -> None:
    """Remove the folders a refused call created, when the run folder holds nothing but its lock file.

    A refusal after the folder was made (``--only`` on a stage whose upstream is missing, a ``data_dir`` that is not
    there) would otherwise leave an empty run folder behind. Called while the lock is held, so that no other call
    can have started writing there; a folder that is not empty (another call's lock file) stops the removal.
    """
    if not made:
        return
    try:
        if {p.name for p in root.iterdir()} - {".robustseg.lock"}:
            return
        (root / ".robustseg.lock").unlink(missing_ok=True)
        for d in made:  # deepest first
            d.rmdir()
    except OSError:
        pass


def check_device(device: str) -> str:
    """Refuse a ``--device`` this machine cannot run, before any stage runs (notebook 01 would fail on it otherwise).

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (the values :func:`runtime.resolve_device` takes as text).

    Returns:
        ``device``, unchanged.

    Raises:
        PipelineError: naming ``--device`` and what to pass instead, for another value, or for ``cuda`` where torch
            sees no CUDA GPU (a CPU-only torch build, or no GPU visible) or not GPU ``N``.
    """
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", device):
        raise PipelineError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "torch sees no CUDA GPU"
            raise PipelineError(f"--device {device}: CUDA is not available on this machine ({why}, torch "
                                f"{torch.__version__}); use --device auto (the GPU where there is one, else the CPU) "
                                "or --device cpu")
        index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise PipelineError(f"--device {device}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1}); "
                                "use one of those, or --device auto")
    return device


def reproduce(
    profile: str = "teaching",
    out: str | Path | None = None,
    *,
    data_dir: str | None = None,
    device: str = "auto",
    sets: Sequence[str] = (),
    only: Sequence[str] = (),
    force: bool = False,
    seed: int | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    log=None,
) -> dict[str, Any]:
    """Run the chain. See the module docstring; the CLI is a thin wrapper.

    Args:
        profile: profile name or YAML path.
        out: run folder (default ``runs/<profile>``, or ``runs/<profile>-seed<N>`` with ``seed``).
        data_dir: a real BraTS/MSD folder for notebook 01 (instead of synthetic data); files added, removed or
            changed in it (``data_dir_signature``) rerun the chain.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, passed to every notebook; one this machine lacks (``cuda``
            without a CUDA GPU) is refused before any stage runs (:func:`check_device`).
        sets: ``NOTEBOOK.PARAM=VALUE`` overrides; a relative ``data.data_dir`` is read from the current folder, as
            ``data_dir`` is (giving both is refused).
        only: run only these stages (others untouched).
        force: rerun stages even when their fingerprint matches.
        seed: the seed of every stage (a replicate of the whole experiment: other synthetic cases, split,
            initialisation, batches and attack draws), in place of the profile's; a ``--set STAGE.seed=`` still wins.
            The default run folder becomes ``runs/<profile>-seed<N>``, also when ``seed`` is the profile's own seed (the
            shipped profiles' 0): that request repeats ``runs/<profile>``'s, which a note in the log says.
        notebook_dir: where the notebooks are.
        log: where progress lines go.

    Returns:
        The manifest (also written to ``<out>/manifest.json``).
    """
    log = log or (lambda line: print(line, flush=True))
    check_device(device)
    if out is not None and not str(out).strip():  # `--out "$DIR"` with DIR unset: not a request for the default folder
        raise PipelineError(f"--out {str(out)!r}: empty; give a run folder, or leave the option out for runs/<profile>")
    prof = load_profile(profile)
    overrides = parse_overrides(sets, notebook_dir)
    if "data_dir" in overrides.get("01_data", {}):
        set_dir = overrides["01_data"]["data_dir"]
        if data_dir is not None:  # one of the two would be dropped without a word
            raise PipelineError(f"--data-dir {data_dir} and --set data.data_dir={set_dir}: give the data folder once, "
                                "with --data-dir")
        if set_dir and not Path(set_dir).is_absolute():  # as --data-dir: from the caller's folder, not notebooks/
            overrides["01_data"]["data_dir"] = str(Path(set_dir).resolve())
    unseeded = copy.deepcopy(overrides)  # the same request without --seed
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise PipelineError(f"--seed {seed!r}: expected an integer in [0, 2**31)")
        for stage in STAGES:
            if "seed" in notebook_parameters(stage, notebook_dir):
                overrides.setdefault(stage, {}).setdefault("seed", seed)
    if data_dir is not None:
        if not str(data_dir).strip():  # `--data-dir "$VAR"` with VAR unset: not a request for synthetic data
            raise PipelineError(f"--data-dir {data_dir!r}: empty; give the data folder, or leave the option out for synthetic data")
        if not Path(data_dir).is_dir():
            raise PipelineError(f"--data-dir {data_dir}: not a folder")
        for o in (overrides, unseeded):
            o.setdefault("01_data", {})["data_dir"] = str(Path(data_dir).resolve())
    params = stage_parameters(prof, overrides, notebook_dir)
    if seed is not None and out is None and stage_parameters(prof, unseeded, notebook_dir) == params:
        log(f"note: --seed {seed} is the profile's own seed, so this is the request that {default_run_dir(prof['name'])} "
            f"is made for; it still runs into {default_run_dir(prof['name'], seed)} (every --seed N gets its own "
            f"folder); pass --out {default_run_dir(prof['name'])} instead to reuse a finished run there")
    run = RunPaths(Path(out) if out is not None else default_run_dir(prof["name"], seed))
    selected = [stage_name(s, f"--only {s}") for s in only] if only else list(STAGES)
    _check_run_folder(run.root, out, notebook_dir)
    made = _make_run_folder(run.root, out)
    with _run_lock(run.root):  # the manifest is read, updated and written by one call at a time
        try:
            return _reproduce_locked(run, prof, params, overrides, selected, out=out, device=device, force=force,
                                     notebook_dir=notebook_dir, log=log)
        except BaseException:
            _remove_made_folders(run.root, made)  # refused before any stage wrote there: leave no empty folder
            raise


def _read_manifest(path: Path) -> dict[str, Any]:
    """A run's manifest (``{}`` when there is none yet); PipelineError naming it when it cannot be read."""
    if not path.is_file():
        return {}
    try:
        return read_json_object(path)
    except ValueError as exc:
        raise PipelineError(f"{exc}; restore it or pass another --out") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot be read ({exc}); restore it or pass another --out") from None


#: Environment variable naming the run folder (and process) holding its lock; inherited by the notebooks' kernels.
_LOCK_ENV = "ROBUSTSEG_RUN_LOCK"


@contextlib.contextmanager
def _run_lock(root: Path):
    """Hold ``<root>/.robustseg.lock`` (``flock``) for one ``reproduce`` call.

    Two calls on one folder at once would run the same stages into the same files and checkpoints (the second takes
    the first one's ``running`` record for a killed run and resumes it) and overwrite each other's manifest; the
    second is refused. A notebook's own headless call on the same folder (the Colab setup cell, run by a kernel of the
    call holding the lock: the holder's pid, not ours, in ``ROBUSTSEG_RUN_LOCK``) is let through, as before. Where
    ``flock`` is missing (Windows) or refused by the file system, the call runs unlocked.
    """
    key = str(root.resolve())
    holder_pid, _, held = os.environ.get(_LOCK_ENV, "").partition(":")
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        fcntl = None
    if fcntl is None or (held == key and holder_pid != str(os.getpid())):
        yield
        return
    lock = root / ".robustseg.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise PipelineError(f"{root}: cannot create the run folder's lock file {lock.name} ({exc.strerror or exc}); "
                            "give a folder you can write in with --out DIR") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f"{root}: another robustseg reproduce is running in this run folder (it holds {lock}); "
                                "wait for it to finish, or pass --out DIR to run beside it") from None
        except OSError:  # a file system without locks (some network mounts): run unlocked
            pass
        before = os.environ.get(_LOCK_ENV)
        os.environ[_LOCK_ENV] = f"{os.getpid()}:{key}"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(_LOCK_ENV, None)
            else:
                os.environ[_LOCK_ENV] = before
    finally:
        os.close(fd)  # releases the lock


def _reproduce_locked(run: RunPaths, prof: dict[str, Any], params: dict[str, dict[str, Any]],
                      overrides: dict[str, dict[str, Any]], selected: list[str], *, out, device: str, force: bool,
                      notebook_dir: Path, log) -> dict[str, Any]:
    """The body of :func:`reproduce`, under the run folder's lock."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from .runtime import git_sha, machine_info, package_versions

    manifest = _read_manifest(run.manifest)
    if out is None:  # a default folder is shared by every command of one profile and seed: never replace its data silently
        _refuse_other_data(run.root, manifest, params["01_data"], overrides.get("01_data", {}))
    fps: dict[str, str] = {}
    upstream = ""
    for stage in STAGES:
        fps[stage] = upstream = _fingerprint(stage, params[stage], upstream, notebook_dir,
                                             _data_signature(params[stage], notebook_dir))

    def up_to_date(stage: str) -> bool:
        rec = manifest.get("stages", {}).get(stage, {})
        return rec.get("status") in ("done", "stale") and rec.get("fingerprint") == fps[stage] and \
            (run.notebooks / STAGES[stage]).is_file()

    behind: list[str] = []  # refused up front: the fingerprints say it all before anything runs
    for stage in STAGES:
        if stage not in selected:
            if not up_to_date(stage):
                behind.append(stage)
        elif behind:  # every stage reads what the stages before it wrote
            raise PipelineError(
                f"--only {stage}: it reads the outputs of {', '.join(behind)}, which are missing, failed, or were made with "
                f"other parameters, code or data than this request's; run without --only, or add {', '.join(behind)} to --only"
            )
    manifest.update(
        profile=prof["name"], profile_path=prof["path"], parameters=params, git_sha=git_sha(), versions=package_versions(),
        seeds={s: p["seed"] for s, p in params.items() if "seed" in p}, device=device, machine=machine_info(),
    )
    manifest.setdefault("stages", {})
    manifest["started_last_call"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    kcfg = kernel_config()
    t_all = time.perf_counter()
    for stage in STAGES:
        fp = fps[stage]
        dst = run.notebooks / STAGES[stage]
        rec = manifest["stages"].get(stage, {})
        # "stale": done, then an --only call reran a stage before it; its outputs still match its own fingerprint
        fresh = up_to_date(stage)
        if fresh and rec.get("status") == "stale":  # this request is again the one it was made for
            rec["status"] = "done"
            rec.pop("stale_because", None)
        if stage not in selected:
            if not fresh:
                if rec.get("status") == "done":  # made for another request (an upstream stage or its own parameters)
                    rec.update(status="stale", stale_because=(
                        f"made with other parameters, code or data than the call of {manifest['started_last_call']}"
                        f" (--only {' '.join(selected)}); rerun it"))
            continue
        if not force and fresh:
            log(f"[{stage}] up to date, skipped (ran {rec.get('seconds', 0):.1f} s)")
            continue
        # a killed or failed run of the same request resumes its trainings; anything else starts them afresh
        resumable = not force and rec.get("status") in ("running", "failed", "interrupted") and rec.get("fingerprint") == fp
        cleared = [] if resumable else _clear_checkpoints(run, stage)
        full = {**params[stage], "run_dir": str(run.root.resolve()), "device": device}
        manifest["stages"][stage] = {
            "status": "running", "fingerprint": fp, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": manifest["machine"]["summary"],  # a resumed run may mix machines
            "git_sha": manifest["git_sha"], "parameters": params[stage],  # what this stage ran with (the top level is the last call's)
            "resumed_checkpoints": resumable,
        }
        if cleared:
            manifest["stages"][stage]["cleared_checkpoints"] = cleared
        atomic_write_json(run.manifest, manifest)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(notebook_dir / STAGES[stage]), str(dst), parameters=full, kernel_name="python3",
                cwd=str(notebook_dir), progress_bar=False, log_output=False, config=kcfg,
            )
        except PapermillExecutionError as exc:
            secs = time.perf_counter() - t0
            where = f"code cell {exc.exec_count}" if exc.exec_count else _failed_cell(dst)
            msg = f"{stage} ({STAGES[stage]}) failed in {where}: {exc.ename}: {exc.evalue}; partial notebook kept at {dst}"
            manifest["stages"][stage].update(status="failed", seconds=round(secs, 2), error=msg)
            atomic_write_json(run.manifest, manifest)
            raise PipelineError(msg) from None
        except KeyboardInterrupt:
            manifest["stages"][stage].update(status="interrupted", seconds=round(time.perf_counter() - t0, 2))
            atomic_write_json(run.manifest, manifest)
            raise
        except Exception as exc:  # a dead kernel (out of memory, killed), a timeout, papermill itself
            secs = time.perf_counter() - t0
            msg = f"{stage} ({STAGES[stage]}) failed: {type(exc).__name__}: {exc}; partial notebook (if any) at {dst}"
            manifest["stages"][stage].update(status="failed", seconds=round(secs, 2), error=msg)
            atomic_write_json(run.manifest, manifest)
            raise PipelineError(msg) from exc
        secs = time.perf_counter() - t0
        manifest["stages"][stage].update(status="done", seconds=round(secs, 2), finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        atomic_write_json(run.manifest, manifest)
        log(f"[{stage}] done in {secs:6.1f} s")
    manifest["total_seconds_last_call"] = round(time.perf_counter() - t_all, 2)
    atomic_write_json(run.manifest, manifest)
    return manifest


def kernel_config() -> Any:
    """Configuration for the kernel manager that papermill (through nbclient) starts each notebook's kernel with.

    ipykernel 7.3 and newer print a warning on every start that the kernel's loopback TCP sockets are not encrypted
    (eight times per run of the chain). Where jupyter_client can provision CurveZMQ keys
    (``KernelManager.transport_encryption``) and pyzmq has CURVE, ask for them ("auto": only kernels whose kernelspec
    declares support get keys): the sockets are encrypted and the warning is not printed. Elsewhere (older
    jupyter_client, pyzmq without libsodium) the defaults stay, since "auto" would be refused there.

    Returns:
        A ``traitlets.config.Config``; empty where encryption cannot be provisioned.
    """
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if "transport_encryption" in KernelManager.class_trait_names() and zmq.has("curve"):
        return Config({"KernelManager": {"transport_encryption": "auto"}})
    return Config()


def _print_claims(run: RunPaths, log=print, profile: dict[str, Any] | None = None) -> None:
    claims = run.tables / "claims.csv"
    if claims.is_file():
        import pandas as pd

        df = pd.read_csv(claims)
        cols = [c for c in ("claim", "verdict", "evidence") if c in df.columns]
        log("\nClaims of Liu et al. (2021), re-measured on this run:")
        if profile is not None:  # the smoke profile's numbers mean nothing: say so next to its verdicts
            log(f"(profile {profile['name']}: {' '.join(str(profile.get('description', '')).split())})")
        with pd.option_context("display.max_colwidth", 160, "display.width", 200):
            log(df[cols].to_string(index=False))
    report = run.root / "report" / "report.md"
    if report.is_file():
        log(f"\nReport: {report}")


def build_parser() -> argparse.ArgumentParser:
    """The ``robustseg`` command line: ``reproduce``, ``stages`` and ``compare``."""
    p = argparse.ArgumentParser(
        prog="robustseg",
        description="Adversarial attacks on 3D brain-tumour segmentation, reproduced in notebooks. 'reproduce' runs the "
                    "notebook chain headless into a run folder, 'stages' lists the notebooks and their parameters, "
                    "'compare' sets finished runs side by side. 'robustseg COMMAND --help' describes each.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser(
        "reproduce", help="run the notebook chain with a profile",
        description="Run the eight notebooks (stages 01_data to 08_statistics) in order with papermill, with the "
                    "parameters of a profile and --set overrides, into a run folder (executed notebooks, data, models, "
                    "tables, figures, report, manifest.json). A stage whose notebook, parameters, library code, data "
                    "and earlier stages are unchanged since it finished is skipped, so a killed run resumes. Prints the "
                    "claims of Liu et al. (2021) as re-measured by the run.")
    r.add_argument("--profile", default="teaching", metavar="P",
                   help="smoke | teaching | paper | path/to/profile.yaml (default: teaching)")
    r.add_argument("--out", default=None, metavar="DIR",
                   help="run folder (default: runs/<profile>, or runs/<profile>-seed<N> with --seed); not the notebooks "
                        "folder nor one whose notebooks/ is it")
    r.add_argument("--data-dir", default=None, metavar="PATH",
                   help="real BraTS 2018-21/2023 or MSD Task01 folder (default: synthetic data)")
    r.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="where the notebooks compute (default: auto, the first CUDA GPU if there is one, else the CPU); "
                        "checked before anything runs")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="NOTEBOOK.PARAM=VALUE",
                   help="override a notebook parameter, replacing the profile's value (repeatable); NOTEBOOK is a "
                        "stage, its number or its name (02_unet, 02 or unet); VALUE is read as YAML (5, 1e-3, [0, 0.5], "
                        "true, text); 'robustseg stages' lists the parameters")
    r.add_argument("--only", nargs="+", action="extend", default=[], metavar="STAGE",
                   help="run only these stages, e.g. --only unet fgsm (repeatable: --only unet --only fgsm is the same)")
    r.add_argument("--force", action="store_true", help="rerun stages even if up to date")
    r.add_argument("--seed", type=int, default=None, metavar="N",
                   help="seed of every stage, replacing the profile's (a replicate: other cases, initialisation and "
                        "draws); default run folder runs/<profile>-seed<N>, for every N: --seed 0 (the shipped "
                        "profiles' own seed) repeats runs/<profile>'s run in runs/<profile>-seed0")
    sub.add_parser(
        "stages", help="list the stages and their parameters",
        description="List the stages in chain order with the parameters each notebook declares: what "
                    "'robustseg reproduce --set NOTEBOOK.PARAM=VALUE' and a profile's notebooks: section accept.")
    c = sub.add_parser(
        "compare", help="the verdicts of finished runs side by side (e.g. seeds), pooled, and with the runs as units",
        description="Set the claims' verdicts of finished run folders (e.g. --seed replicates) side by side, judge "
                    "the claims again on the runs' test cases pooled and with the runs as units, and write "
                    "comparison.md and its tables to --out.")
    c.add_argument("runs", nargs="+", metavar="RUN", help="finished run folders (at least two)")
    c.add_argument("--out", default="runs/comparison", metavar="DIR",
                   help="where to write the tables and comparison.md (default: runs/comparison)")
    c.add_argument("--labels", nargs="+", action="extend", default=None, metavar="NAME",
                   help="one name per run, in the order of the runs (default: the folder names)")
    c.add_argument("--no-pooled", dest="pooled", action="store_false", help="skip the claims judged across runs (pooled cases, runs as units, case means over trainings)")
    return p


def _compare(args: argparse.Namespace) -> int:
    from .replicates import write_comparison

    try:
        agree = write_comparison(args.runs, args.out, labels=args.labels, pooled=args.pooled)
    except (OSError, ValueError) as exc:
        raise PipelineError(str(exc)) from None
    import pandas as pd

    with pd.option_context("display.max_colwidth", 40, "display.width", 200):
        print(agree.to_string(index=False))
    if args.pooled and "pooled" not in agree.columns and "run_level" in agree.columns:
        print("\n(no pooled verdicts: every run evaluated the same test cases; the run_level column judges the claims "
              "over the trainings)")
    elif args.pooled and "pooled" not in agree.columns:
        print("\n(no pooled verdicts: some runs may share patients; comparison.md names them and their roles)")
    print(f"\nComparison: {Path(args.out) / 'comparison.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``robustseg`` command."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "stages":
            for s in STAGES:
                print(f"{s}: {', '.join(k for k in notebook_parameters(s) if k not in _RUNNER_KEYS)}")
            print(f"(every notebook also takes {' and '.join(_RUNNER_KEYS)}, set by --out and --device)")
            return 0
        if args.command == "compare":
            return _compare(args)
        manifest = reproduce(
            args.profile, args.out, data_dir=args.data_dir, device=args.device, sets=args.sets, only=args.only,
            force=args.force, seed=args.seed,
        )
    except PipelineError as exc:
        print(f"robustseg: error: {exc}", file=sys.stderr)
        return 2
    run = RunPaths(args.out if args.out is not None else default_run_dir(manifest["profile"], args.seed))
    total = sum(s.get("seconds", 0) for s in manifest["stages"].values())
    behind = stale_stages(manifest) if args.only else []
    if behind:  # an --only call: what it did not rerun is not this request's
        print(f"\nDone: {', '.join(stage_name(s) for s in args.only)} (run folder {run.root}). Not up to date for this "
              f"request: {', '.join(behind)} (rerun without --only); the claims table is not printed")
        return 0
    print(f"\nAll stages done; run folder {run.root} (stage time {total:.0f} s)")
    _print_claims(run, profile=load_profile(args.profile))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
