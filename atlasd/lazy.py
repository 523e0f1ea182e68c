"""Lazy package exports: a package names its public objects, and each is imported from its
module on first use, so that one part's dependencies never load another's (the typed config
modules the CLI parses at start-up import without torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``: ``name`` in ``exports`` is imported from
    the submodule ``package + "." + exports[name]``; anything else is an AttributeError naming
    the package, as for an ordinary module."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
