"""Argument checks shared by the task modules: each raises ValueError naming the argument."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_fraction", "check_int", "check_shape"]


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in ``minimum..maximum`` (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_fraction(name: str, value: Any) -> float:
    """``value`` as a float in ``[0, 1)`` (a share of the samples; bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def check_shape(
    shape: Any,
    min_h: int = 1,
    min_w: int = 1,
    names: tuple[str, str] = ("shape[0] (H)", "shape[1] (W)"),
) -> tuple[int, int]:
    """A grid shape ``(H, W)`` with ``H >= min_h`` and ``W >= min_w``."""
    try:
        h, w = shape
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair (H, W), got {shape!r}") from None
    return check_int(names[0], h, min_h), check_int(names[1], w, min_w)
