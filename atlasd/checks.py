"""Argument checks shared by every stage: each returns the value normalised, or raises a
ValueError whose message names the argument and what it got.

Plain Python only (no torch, no numpy import): the configs that the CLI parses at start-up use
these checks. Anything with ``__index__`` counts as an int (numpy's integer scalars, 0-d integer
tensors); bools never count as numbers.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "check_bool",
    "check_choice",
    "check_finite",
    "check_fraction",
    "check_int",
    "check_keys",
    "check_nonnegative_int",
    "check_number",
    "check_positive",
    "check_positive_int",
    "check_seeds",
    "check_shape",
]


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool ("NAME must be true or false, got V")."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in ``minimum..maximum`` (bools and floats are refused)."""
    if not _is_int(value):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1 ("NAME must be a positive int, got V")."""
    if not _is_int(value) or operator.index(value) < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return operator.index(value)


def check_nonnegative_int(name: str, value: Any) -> int:
    """``value`` as an int >= 0 ("NAME must be an int >= 0, got V")."""
    if not _is_int(value) or operator.index(value) < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return operator.index(value)


def check_number(
    name: str, value: Any, minimum: float | None = None, maximum: float | None = None
) -> float:
    """``value`` as a float in ``[minimum, maximum]`` (ints are accepted, bools refused)."""
    if not _is_number(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float > 0 ("NAME must be a positive number, got V")."""
    if not _is_number(value) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_finite(name: str, value: Any, *, positive: bool = False) -> float:
    """``float(value)`` (numbers and scalar tensors alike), finite and ``>= 0``, or ``> 0`` with
    ``positive``: "NAME must be a number / finite and >= 0 / > 0, got V"."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    if positive and out == 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return out


def check_fraction(name: str, value: Any) -> float:
    """``value`` as a float in ``[0, 1)`` (a share of the samples; bools are refused)."""
    if not _is_number(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices`` ("NAME must be one of a, b, c, got V")."""
    options = list(choices)
    if value not in options:
        raise ValueError(
            f"{name} must be one of {', '.join(str(c) for c in options)}, got {value!r}"
        )
    return value


def check_keys(what: str, given: Iterable[str], options: Sequence[str], hint: str = "") -> None:
    """Refuse keys that are not options: "unknown WHAT option(s): a, b; options are x, y"
    (``what`` empty: "unknown option(s)"); ``options`` are listed in the order given."""
    bad = sorted(set(given) - set(options))
    if bad:
        label = f"unknown {what} option(s)" if what else "unknown option(s)"
        raise ValueError(f"{label}: {', '.join(bad)}; options are {', '.join(options)}{hint}")


def check_seeds(name: str, value: Any) -> list[int]:
    """A non-empty list of ints >= 0."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not value
        or any(not _is_int(s) or s < 0 for s in value)
    ):
        raise ValueError(f"{name} must be a non-empty list of ints >= 0, got {value!r}")
    return [int(s) for s in value]


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
