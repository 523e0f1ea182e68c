"""Discovery stage: chart predictors, the Lie-basis learner and the coset search.

Entry points (re-exported as ``atlasd.discover_local`` etc.): :func:`discover_local`,
:func:`discover_global`, :func:`discover_distribution`, all run by one driver
(:func:`~atlasd.discovery.driver.run_discovery`); :func:`~atlasd.discovery.task.discover_task`
runs discovery on a task and measures the group against its ground truth. Settings are typed
(:mod:`atlasd.discovery.config`).

Names are imported lazily: ``atlasd.discovery.config`` (the typed configs the CLI parses at
start-up) must import without torch.
"""

from __future__ import annotations

from atlasd.lazy import lazy_getattr

# public name -> submodule of atlasd.discovery that defines it
_EXPORTS: dict[str, str] = {
    "BasisConfig": "config",
    "CosetConfig": "config",
    "DiscoveryConfig": "config",
    "DiscoverySettings": "config",
    "PredictorConfig": "config",
    "RunConfig": "config",
    "discover_distribution": "api",
    "discover_global": "api",
    "discover_local": "api",
    "discover_task": "task",
    "evaluate_against_truth": "task",
    "run_discovery": "driver",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
