"""Discovery stage: chart predictors, the Lie-basis learner and the coset search.

Entry points (re-exported as ``atlasd.discover_local`` etc.): :func:`discover_local`,
:func:`discover_global`, :func:`discover_distribution`.
"""

from atlasd.discovery.api import (
    DiscoveryConfig,
    discover_distribution,
    discover_global,
    discover_local,
)

__all__ = ["DiscoveryConfig", "discover_distribution", "discover_global", "discover_local"]
