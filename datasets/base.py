"""The task contract: what a task gives to discovery, downstream and the degeneracy study.

Every task's DataModule exposes, after ``setup()``, a :class:`TaskSpec` as its ``spec``
property. The CLI, downstream and the degeneracy study read the spec and nothing else about a
task: no per-task tables, no ``task == ...`` branches. A new task is one module (a
LightningDataModule with ``spec``), one line in ``atlasd.datasets.TASKS`` and one config.

A user's DataModule (``data.class_path``) need not define ``spec``: :func:`task_spec` derives
one from the attributes the module docstring of :mod:`atlasd.datasets` lists.

This module imports neither torch nor Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from atlasd.checks import check_choice, check_positive_int

__all__ = ["KINDS", "METRICS", "TaskSpec", "derive_spec", "not_set_up", "task_spec"]

Kind = Literal["local", "global", "distribution"]
Inputs = Literal["fields", "sets", "vectors", "points"]
Target = Literal["regression", "classification", "none"]

KINDS: tuple[str, ...] = ("local", "global", "distribution")
# the downstream metric of a task: higher is better for all but mse
METRICS: tuple[str, ...] = ("accuracy", "auc", "mean_iou", "mse")


@dataclass(frozen=True)
class TaskSpec:
    """What a task gives (after ``setup()``).

    Attributes:
        name: the task's registry name (``atlasd.datasets.TASKS``), or a user's label.
        kind: the discovery problem: ``"local"`` (fields and an atlas; the group acts on chart
            coordinates), ``"global"`` (vectors or sets of vectors and a target), or
            ``"distribution"`` (samples whose distribution is invariant).
        inputs: the shape of one sample: ``"fields"`` ``(C, H, W)``, ``"sets"`` ``(P, d)``,
            ``"vectors"`` ``(d,)`` or ``"points"`` ``(d,)`` (unlabelled).
        d: the dimension of the space the group acts on (2 for chart coordinates).
        in_channels: channels of a field (``C``), or ``d`` for vectors and sets.
        target: ``"regression"`` (float targets), ``"classification"`` (int64 labels) or
            ``"none"`` (distribution tasks).
        n_classes: the class count of a classification task (a class need not occur in a
            given split), else None.
        class_weights: one weight per class for cross-entropy (e.g. to down-weight a
            background class), or None.
        metric: the downstream score: ``"accuracy"``, ``"auc"`` (binary), ``"mean_iou"`` or
            ``"mse"``.
        ignore_class: a class the metric skips (e.g. the background of digit maps), or None.
        ground_truth: ``{"algebra": (k, d, d), "cosets": (m, d, d), "in_rep": (k, c, c)}``
            tensors where the symmetry is known (cosets and in_rep optional), else None.
        atlas: the :class:`atlasd.Atlas` of field tasks, else None.
        broken: DataModule options that make the symmetry-broken variant of the task (the
            degeneracy study's control, e.g. ``{"anisotropy": [1.5, 0.5]}``), or None where
            the task has none.
    """

    name: str
    kind: Kind
    inputs: Inputs
    d: int
    in_channels: int
    target: Target
    n_classes: int | None = None
    class_weights: tuple[float, ...] | None = None
    metric: str = "mse"
    ignore_class: int | None = None
    ground_truth: Mapping[str, Any] | None = field(default=None, repr=False)
    atlas: Any = field(default=None, repr=False)
    broken: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        check_choice(f"{self.name}: spec.kind", self.kind, KINDS)
        check_choice(
            f"{self.name}: spec.inputs", self.inputs, ("fields", "sets", "vectors", "points")
        )
        check_choice(
            f"{self.name}: spec.target", self.target, ("regression", "classification", "none")
        )
        check_choice(f"{self.name}: spec.metric", self.metric, METRICS)
        check_positive_int(f"{self.name}: spec.d", self.d)
        check_positive_int(f"{self.name}: spec.in_channels", self.in_channels)
        if self.target == "classification":
            check_positive_int(f"{self.name}: spec.n_classes", self.n_classes)
            if self.class_weights is not None and len(self.class_weights) != self.n_classes:
                raise ValueError(
                    f"{self.name}: spec.class_weights has {len(self.class_weights)} entries for "
                    f"{self.n_classes} classes"
                )
        elif self.n_classes is not None or self.class_weights is not None:
            raise ValueError(f"{self.name}: spec.n_classes and class_weights need classification")
        if self.inputs == "fields" and self.kind == "local" and self.atlas is None:
            raise ValueError(f"{self.name}: a local task on fields needs spec.atlas")

    @property
    def is_classification(self) -> bool:
        return self.target == "classification"


def not_set_up(dm: Any) -> RuntimeError:
    """The error a task's ``spec`` raises before ``setup()`` (its shapes come from the data)."""
    return RuntimeError(
        f"{type(dm).__name__}.spec is known after setup(): call setup() before reading it"
    )


def task_spec(dm: Any, name: str | None = None) -> TaskSpec:
    """The :class:`TaskSpec` of a set-up DataModule.

    A task of this package returns its own ``dm.spec``; a user's DataModule without one gets
    :func:`derive_spec`. Raises ValueError for a ``spec`` that is not a TaskSpec, or for
    attributes that make no valid spec (the message names the module).
    """
    spec = getattr(dm, "spec", None)
    if spec is not None:
        if not isinstance(spec, TaskSpec):
            raise ValueError(f"{type(dm).__name__}.spec must be a TaskSpec, got {spec!r}")
        return spec
    return derive_spec(dm, name)


def derive_spec(dm: Any, name: str | None = None) -> TaskSpec:
    """A :class:`TaskSpec` derived from a set-up DataModule's attributes.

    Reads ``kind``, ``x``, ``y``, ``atlas``, ``ground_truth`` and ``class_weights``: fields
    ``(N, C, H, W)`` act on R^2 with ``C`` channels; vectors ``(N, d)`` and sets ``(N, P, d)``
    on R^d (points ``(N, d)`` for kind distribution); float targets are regression (metric
    mse); int64 targets are classification (metric accuracy) with ``len(class_weights)``
    classes, or ``max(y) + 1`` without weights; no targets, ``"none"``. ``name`` defaults to
    the class name.
    """
    label = name or type(dm).__name__
    kind = dm.kind
    x, y = dm.x, getattr(dm, "y", None)
    atlas = getattr(dm, "atlas", None)
    fields = x.ndim == 4
    if fields:
        inputs, d, channels = "fields", 2, int(x.shape[1])
    else:
        d = int(x.shape[-1])
        inputs = "points" if kind == "distribution" else "sets" if x.ndim == 3 else "vectors"
        channels = d
    weights = getattr(dm, "class_weights", None)
    if y is None:
        target, n_classes, metric = "none", None, "mse"
    elif y.is_floating_point():
        target, n_classes, metric = "regression", None, "mse"
    else:
        target, metric = "classification", "accuracy"
        n_classes = len(weights) if weights is not None else int(y.max()) + 1
    return TaskSpec(
        name=label,
        kind=kind,
        inputs=inputs,
        d=d,
        in_channels=channels,
        target=target,
        n_classes=n_classes,
        class_weights=(
            tuple(float(w) for w in weights)
            if weights is not None and target == "classification"
            else None
        ),
        metric=metric,
        ground_truth=getattr(dm, "ground_truth", None),
        atlas=atlas if fields else None,
    )
