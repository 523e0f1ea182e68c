"""atlasd: automatic local symmetry discovery.

The public face of the package (see DESIGN.md, section 4): charts and atlases, the action of
group elements on chart patches, the DiscoveredGroup and its loader, and the discovery entry
points (imported lazily so that ``import atlasd`` stays light).
"""

from __future__ import annotations

from typing import Any

from atlasd import lie
from atlasd.atlas import Atlas, Chart, act
from atlasd.group import DiscoveredGroup, load_group

__version__ = "0.1.0"

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

_LAZY = {"discover_local", "discover_global", "discover_distribution"}


def __getattr__(name: str) -> Any:
    # the discovery stage imports Lightning; keep `import atlasd` fast for users of the group API
    if name in _LAZY:
        from atlasd import discovery

        return getattr(discovery, name)
    raise AttributeError(f"module 'atlasd' has no attribute {name!r}")
