"""Argument checks shared by the modules: one rule and one message for each kind of value."""

from __future__ import annotations

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
