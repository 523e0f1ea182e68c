"""Datasets: LightningDataModules for the discovery tasks, synthetic generators and real loaders.

The task contract is :class:`atlasd.datasets.base.TaskSpec`. Every task's DataModule exposes,
after ``setup()``, the tensors ``x`` and ``y``, its ``kind`` and a ``spec`` property: a frozen
TaskSpec that says what the task gives to discovery, downstream and the degeneracy study --
the kind of problem (local, global or distribution), the inputs (fields, sets, vectors or
points), the dimension ``d`` the group acts on, the channels, the target (regression,
classification with ``n_classes`` and optional ``class_weights``, or none), the downstream
metric, a class the metric ignores, the ground truth (``{"algebra": (k, d, d), "cosets":
(m, d, d), "in_rep": (k, c, c)}`` where known), the atlas of field tasks and the DataModule
options of the symmetry-broken variant. Callers read the spec through
:func:`atlasd.datasets.base.task_spec` and nothing else about a task. A new task is one module
(a DataModule with ``spec``), one line in :data:`TASKS` and one config.

The built-in tasks: ``heat``, ``sphere_digits``, ``climate`` (local), ``jets`` (global) and
``files`` (a user's file, any kind).

A user's own data comes in two ways:

* the ``files`` task (:mod:`atlasd.datasets.files`): a .npz, .nc, .h5 / .hdf5 or .pt file and
  the names of its arrays (``task: files``, ``data: {path: ..., x: ..., y: ..., kind: ...}``);
  its spec is derived from the file and the options;
* a user's own DataModule, LightningCLI style: data options ``{class_path: "pkg.mod.MyData",
  init_args: {...}}`` make :func:`make_datamodule` import ``pkg.mod.MyData`` (it must be
  importable: installed, or on ``PYTHONPATH``), check that it subclasses
  ``lightning.LightningDataModule`` and build it with ``init_args``.  The task name is then only
  a label.  Such a DataModule may define ``spec``; without it,
  :func:`atlasd.datasets.base.derive_spec` derives one from the attributes below, which it must
  expose after ``setup()`` (:func:`check_datamodule` checks them and the spec):

  - ``x``: a float tensor; fields ``(N, C, H, W)`` for kind local, vectors ``(N, d)`` or
    ``(N, P, d)`` for global, points ``(N, d)`` (or fields with an atlas) for distribution;
  - ``y``: targets with the same ``N`` (float ``(N, C', H, W)`` or int64 class maps
    ``(N, H, W)`` for local; float ``(N,)`` / ``(N, c)`` or int64 ``(N,)`` for global), or None
    for distribution;
  - ``kind``: "local", "global" or "distribution";
  - ``atlas``: an ``atlasd.Atlas`` whose charts fit the fields (kind local, and distribution of
    fields);
  - optionally ``ground_truth`` (a dict with "algebra" (k, d, d) and optional "cosets"
    (m, d, d) tensors: the run then reports its similarity to it) and ``class_weights`` (one
    float per class, for cross-entropy predictors; their number is the class count); both None
    or absent when unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atlasd.datasets.base import KINDS, TaskSpec, task_spec

__all__ = [
    "TASKS",
    "TaskSpec",
    "check_datamodule",
    "data_options",
    "make_datamodule",
    "merge_data_options",
    "task_spec",
]

# name -> "module:ClassName", imported lazily so that one task's dependencies never load another's
TASKS: dict[str, str] = {
    "heat": "atlasd.datasets.heat:HeatDataModule",
    "sphere_digits": "atlasd.datasets.sphere_digits:SphereDigitsDataModule",
    "jets": "atlasd.datasets.jets:JetsDataModule",
    "climate": "atlasd.datasets.climate:ClimateDataModule",
    "files": "atlasd.datasets.files:FilesDataModule",
}


def make_datamodule(task: str, **kwargs: Any):
    """Instantiate the DataModule of a registered task by name, or a user's own DataModule.

    ``make_datamodule(task, **options)`` builds ``TASKS[task]`` with the options (ValueError
    for an unknown task or option). ``make_datamodule(task, class_path="pkg.mod.Cls",
    init_args={...})`` imports ``pkg.mod.Cls`` (``"pkg.mod:Cls"`` also works), checks it is a
    ``lightning.LightningDataModule`` subclass and returns ``Cls(**init_args)``; ``task`` is only
    a label then. Every failure is a one-line ValueError naming the problem.
    """
    if "class_path" in kwargs:
        return _user_datamodule(**kwargs)
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


def data_options(data: Mapping[str, Any]) -> dict[str, Any]:
    """The DataModule's own options in ``data``: ``init_args`` for a user's DataModule
    (``class_path``), ``data`` itself otherwise."""
    if "class_path" in data:
        return dict(data.get("init_args") or {})
    return dict(data)


def merge_data_options(data: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (a task's DataModule options, as :func:`make_datamodule` takes them) with
    ``options`` set on top: into ``init_args`` for a user's DataModule (``class_path``), at the
    top level otherwise. How the degeneracy study makes a task's symmetry-broken variant."""
    data = dict(data)
    if "class_path" in data:
        data["init_args"] = {**dict(data.get("init_args") or {}), **options}
        return data
    return {**data, **options}


def _import_class(class_path: Any) -> type:
    import importlib

    if not isinstance(class_path, str) or not class_path.strip():
        raise ValueError(f"data.class_path must be 'package.module.ClassName', got {class_path!r}")
    path = class_path.strip()
    module_name, sep, cls_name = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not sep or not module_name or not cls_name:
        raise ValueError(
            f"data.class_path {class_path!r} must be 'package.module.ClassName' (a module and a "
            "class in it)"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import can fail with any error the module raises
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"cannot import data.class_path {class_path!r}: {reason}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ValueError(
            f"data.class_path {class_path!r}: module {module_name!r} has no attribute {cls_name!r}"
        )
    return cls


def _user_datamodule(class_path: Any = None, init_args: Any = None, **extra: Any):
    """A user's LightningDataModule from ``class_path`` and ``init_args`` (LightningCLI style)."""
    import lightning

    if extra:
        raise ValueError(
            f"with data.class_path, options go under data.init_args; unexpected data option(s) "
            f"{', '.join(sorted(extra))}"
        )
    cls = _import_class(class_path)
    if not (isinstance(cls, type) and issubclass(cls, lightning.LightningDataModule)):
        raise ValueError(
            f"data.class_path {class_path!r} is a {type(cls).__name__}, not a subclass of "
            "lightning.LightningDataModule"
        )
    if init_args is None:
        init_args = {}
    if not isinstance(init_args, Mapping):
        raise ValueError(f"data.init_args must be a mapping of options, got {init_args!r}")
    try:
        return cls(**init_args)
    except TypeError as exc:  # wrong or missing arguments: a usage error, not a crash
        reason = " ".join(str(exc).split())
        raise ValueError(
            f"cannot build {class_path} with init_args {dict(init_args)}: {reason}"
        ) from exc


def check_datamodule(dm: Any) -> None:
    """Check what the CLI reads from a DataModule after ``setup()`` (module docstring).

    Raises ValueError naming the first missing or malformed attribute: ``kind``, ``x`` (a float
    tensor of a rank the kind takes), ``y`` (None or a tensor with x's ``N``), ``atlas`` (an
    ``atlasd.Atlas`` for kind local), ``ground_truth`` (None or a dict with an "algebra"),
    then the task's :class:`~atlasd.datasets.base.TaskSpec` (its own ``spec``, or the one
    derived from these attributes), so a malformed module fails here in one line.
    """
    import torch

    from atlasd.atlas import Atlas

    name = type(dm).__name__
    kind = getattr(dm, "kind", None)
    if kind not in KINDS:
        raise ValueError(f"{name}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    x = getattr(dm, "x", None)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        found = f"{x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}.x must be a float tensor after setup(), got {found}")
    ranks = {"local": (4,), "global": (2, 3), "distribution": (2, 4)}[kind]
    if x.ndim not in ranks:
        raise ValueError(
            f"{name}.x has shape {tuple(x.shape)}; kind {kind} takes "
            + " or ".join(f"{r}-D" for r in ranks)
        )
    y = getattr(dm, "y", None)
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape[:1] != x.shape[:1]):
        found = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"{name}.y must be None or a tensor with x's N = {x.shape[0]}, got {found}"
        )
    if y is None and kind != "distribution":
        raise ValueError(f"{name}.y is None, but kind {kind} trains predictors on targets y")
    atlas = getattr(dm, "atlas", None)
    if (kind == "local" or (kind == "distribution" and x.ndim == 4)) and not isinstance(
        atlas, Atlas
    ):
        raise ValueError(f"{name}.atlas must be an atlasd.Atlas for fields, got {atlas!r}")
    truth = getattr(dm, "ground_truth", None)
    if truth is not None and not (isinstance(truth, Mapping) and "algebra" in truth):
        raise ValueError(f"{name}.ground_truth must be None or a dict with an 'algebra'")
    task_spec(dm)
