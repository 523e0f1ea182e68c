"""Datasets: LightningDataModules for the discovery tasks, synthetic generators and real loaders.

Every task's DataModule exposes, after ``setup()``, the tensors ``x`` and ``y``, its ``kind``
("local", "global" or "distribution"), its ``atlas`` for local tasks, and ``ground_truth`` (a dict
with "algebra" (k, d, d) and "cosets" (m, d, d) tensors, and "in_rep" (k, c, c) where the channels
carry a known representation) where the symmetry is known.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TASKS", "make_datamodule"]

# name -> "module:ClassName", imported lazily so that one task's dependencies never load another's
TASKS: dict[str, str] = {
    "heat": "atlasd.datasets.heat:HeatDataModule",
    "sphere_digits": "atlasd.datasets.sphere_digits:SphereDigitsDataModule",
    "jets": "atlasd.datasets.jets:JetsDataModule",
    "climate": "atlasd.datasets.climate:ClimateDataModule",
}


def make_datamodule(task: str, **kwargs: Any):
    """Instantiate the DataModule of a registered task by name; ValueError for unknown names."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    import importlib
    import inspect

    module_name, cls_name = TASKS[task].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        known = [k for k in params if k != "self"]
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise ValueError(
                f"unknown data option(s) for task {task!r}: {', '.join(unknown)}; "
                f"options are {', '.join(known)}"
            )
    return cls(**kwargs)
