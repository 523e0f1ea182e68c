"""atlasd: automatic local symmetry discovery.

The public face of the package (docs/conventions.md holds the contract): charts and atlases, the
action of group elements on chart patches, the DiscoveredGroup and its loader, and the discovery
entry points. Every name is imported on first use, so that ``import atlasd`` (and the console
script's start-up, ``atlasd --help``) does not pay for torch or Lightning until it needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

from atlasd._version import __version__

__all__ = [
    "Atlas",
    "Chart",
    "DiscoveredGroup",
    "__version__",
    "act",
    "discover_distribution",
    "discover_global",
    "discover_local",
    "lie",
    "load_group",
]

# public name -> the module that defines it
_LAZY = {
    "Atlas": "atlasd.atlas",
    "Chart": "atlasd.atlas",
    "act": "atlasd.atlas",
    "DiscoveredGroup": "atlasd.group",
    "load_group": "atlasd.group",
    "discover_local": "atlasd.discovery",
    "discover_global": "atlasd.discovery",
    "discover_distribution": "atlasd.discovery",
}


def __getattr__(name: str) -> Any:
    if name == "lie":
        return importlib.import_module("atlasd.lie")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module 'atlasd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
