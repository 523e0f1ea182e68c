"""Downstream comparison: a baseline model against a model built from a discovered group.

:func:`run_downstream` builds a task's DataModule, reads its
:class:`~atlasd.datasets.base.TaskSpec`, builds a BASELINE model (unconstrained layers) and an
EQUIVARIANT model (layers solved from the group), trains both with the same budget (epochs,
learning rate, batch size, optimiser) and the same seeds through a thin LightningModule, and
evaluates them on the test split. :func:`write_report` writes ``report.json`` and
``report.md`` atomically.

Tasks and models (by the task's spec)
-------------------------------------
- ``spec.inputs == "sets"`` (e.g. jets, a group of 4x4 matrices acting on (E, px, py, pz)):
  sets (N, P, d), zero-padded; the mask marks elements with any non-zero component.
  Baseline: a DeepSet (per-element MLP, masked sum, MLP); equivariant:
  :class:`~atlasd.downstream.equivariant.EquivariantDeepSet` with invariant logits.
- ``spec.inputs == "fields"`` (e.g. sphere_digits, climate; a group of 2x2 chart
  transformations): per-pixel segmentation (N, C, H, W) -> (N, H, W) labels. Baseline: a stack
  of ``nn.Conv2d`` with SiLU; equivariant: a stack of
  :class:`~atlasd.downstream.equivariant.EquivariantConv2d` whose hidden channels carry a
  representation such as ``"8*S + 4*V"``, with invariant gates, and scalar logits.

The task must be classification (``spec.n_classes`` classes); the loss is cross-entropy with
``spec.class_weights``. Scores by ``spec.metric``: ``"auc"``: accuracy and ROC AUC (probability
of class 1); ``"accuracy"``: accuracy outside ``spec.ignore_class`` (e.g. the background of
digit maps); ``"mean_iou"``: mean IoU over the classes (a class absent from both the
prediction and the truth is left out of the mean). The models live in
:mod:`atlasd.downstream.models`.

Seeds
-----
The data are the same for every seed (``config.data["seed"]``); a run's seed sets the initial
weights (through a ``torch.Generator``, for both models) and the order of the training batches.
No global RNG is touched, so the same seed gives the same numbers.

Names are imported lazily: :mod:`~atlasd.downstream.experiments.config` imports without torch.
"""

from __future__ import annotations

from atlasd.lazy import lazy_getattr

# public name -> module of atlasd.downstream.experiments that defines it
_EXPORTS: dict[str, str] = {
    "DownstreamConfig": "config",
    "ModelConfig": "config",
    "ModelsConfig": "config",
    "TrainingConfig": "config",
    "binary_auc": "metrics",
    "mean_iou": "metrics",
    "DownstreamModule": "run",
    "check_task": "run",
    "evaluate": "run",
    "run_downstream": "run",
    "DownstreamReport": "report",
    "write_report": "report",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
