"""Argument checks shared by the modules: one rule and one message for each kind of value."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def check_int(value: Any, name: str, *, minimum: int = 0, none_ok: bool = False) -> int | None:
    """``value`` as a Python int, or a ValueError that names the parameter.

    Bools are refused although Python counts them as ints (``seed=True`` is a mistake, not seed 1), and so are floats,
    even whole ones (``seed=2.0`` is a value computed or typed as a float, not a seed).

    Args:
        value: what the caller passed.
        name: the parameter's name, for the message.
        minimum: the smallest value allowed (0 for seeds, 1 for counts).
        none_ok: whether None is allowed (and returned as None).

    Returns:
        ``int(value)``, or None where ``none_ok`` and ``value`` is None.

    Raises:
        ValueError: ``<name> must be a non-negative int, got ...`` (minimum 0) or ``... an int >= <minimum> ...``,
            with ``or None`` where ``none_ok``.
    """
    if value is None and none_ok:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a non-negative int" if minimum == 0 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}{' or None' if none_ok else ''}, got {value!r}")
    return int(value)


def check_float(value: Any, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite Python float, or a ValueError that names the parameter.

    Python and numpy reals are accepted (ints too: ``lr=1`` is a learning rate of 1.0), and come back as a plain
    ``float``, so a config or a spec that stores them stays loadable with ``torch.load(weights_only=True)``. Bools
    (``hard_weight=True`` is a mistake), strings, None and NaN or infinite values are refused.

    Args:
        value: what the caller passed.
        name: the parameter's name, for the message.
        minimum: the smallest value allowed, or None for no bound.
        strict: the bound is exclusive (``> minimum``), e.g. a step size or a temperature that must be positive.

    Returns:
        ``float(value)``.

    Raises:
        ValueError: ``<name> must be a finite number, got ...``, with `` > <minimum>`` or `` >= <minimum>`` after
            ``number`` when there is a bound.
    """
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)
