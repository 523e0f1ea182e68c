"""Discovery on a task: the entry point its spec calls for, truth metrics and the run's metrics.

:func:`discover_task` is what ``atlasd discover`` runs for one seed: it reads the task's
:class:`~atlasd.datasets.base.TaskSpec` (kind, ground truth, class weights, atlas), calls
:func:`~atlasd.discover_local`, :func:`~atlasd.discover_global` or
:func:`~atlasd.discover_distribution` with the typed settings, compares the group with the
ground truth (:func:`evaluate_against_truth`) and assembles the metrics that the CLI writes to
``metrics.json``. Writing files, wandb and printing stay with the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from atlasd.datasets.base import TaskSpec, task_spec
from atlasd.discovery.api import discover_distribution, discover_global, discover_local
from atlasd.discovery.config import DiscoverySettings, RunConfig
from atlasd.group import DiscoveredGroup

__all__ = ["discover_task", "evaluate_against_truth"]


def evaluate_against_truth(group: DiscoveredGroup, truth: Mapping[str, Any]) -> dict[str, Any]:
    """How a discovered group compares with a known symmetry.

    Args:
        group: the discovered group (algebra (k, d, d), cosets (m, d, d), in_rep or None).
        truth: ``{"algebra": (j, d, d)}`` with optional ``"cosets"`` (m', d, d) and
            ``"in_rep"`` (j, c, c) (a task's ``ground_truth``).

    Returns:
        ``{"similarity_to_truth": float}`` (subspace similarity of the algebras, 1 = same),
        plus, where the truth has cosets, ``"truth_cosets_found"`` (one bool per true coset:
        is it in the group, at the group's ``membership_tol``) and ``"cosets_match_truth"``
        (all found and as many components as true cosets), and, where both have an input
        representation, ``"in_rep_vs_truth"`` (:func:`atlasd.lie.representation_error`).
    """
    metrics: dict[str, Any] = {"similarity_to_truth": group.similarity(truth["algebra"])}
    expected = truth.get("cosets")
    if expected is not None:
        tol = group.metadata.get("membership_tol")
        found = [bool(group.contains(h, tol=tol)) for h in expected]
        metrics["truth_cosets_found"] = found
        metrics["cosets_match_truth"] = all(found) and group.n_components == len(expected)
    truth_rep = truth.get("in_rep")
    if truth_rep is not None and group.in_rep is not None:
        from atlasd.lie import representation_error

        metrics["in_rep_vs_truth"] = representation_error(
            group.algebra, group.in_rep, truth["algebra"], truth_rep
        )
    return metrics


def _discover(dm: Any, spec: TaskSpec, settings: DiscoverySettings, seed: int, training: dict):
    """The entry point of the settings' kind (else the task's) on the DataModule's data."""
    kind = settings.kind or spec.kind
    common: dict[str, Any] = dict(n_generators=settings.n_generators, seed=seed, **training)
    if settings.cosets.search is not None:
        common["cosets"] = settings.cosets.search
    atlas = spec.atlas if spec.atlas is not None else getattr(dm, "atlas", None)
    if kind == "local":
        return discover_local(
            dm.x,
            dm.y,
            atlas=atlas,
            out_radius=settings.out_radius,
            learn_in_rep=settings.learn_in_rep,
            learn_out_rep=settings.learn_out_rep,
            **common,
        )
    if kind == "global":
        return discover_global(dm.x, dm.y, **common)
    fields = dm.x.ndim == 4 and atlas is not None
    return discover_distribution(dm.x, atlas=atlas if fields else None, **common)


def discover_task(
    dm: Any,
    settings: DiscoverySettings,
    *,
    name: str | None = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
    progress: bool | str = False,
    resume: bool = True,
    ckpt_path: str | None = None,
    data_time: float = 0.0,
    spec: TaskSpec | None = None,
) -> tuple[DiscoveredGroup, dict[str, Any]]:
    """Discover the symmetry group of a set-up task and measure it against the task's truth.

    Args:
        dm: a set-up DataModule: ``x`` (fields (N, C, H, W), vectors (N, d) or sets
            (N, P, d)), ``y`` (targets or None) and what its spec gives.
        settings: the ``discovery`` section (kind None: the task's own kind; class weights
            None: the task's; cosets.search None: the kind's default).
        name: the task's name in the metrics and the group's metadata (default: spec.name).
        seed: seeds everything.
        run_dir: the run folder of the stage state (see :mod:`atlasd.discovery.resume`).
        trainer_kwargs: passed to every Lightning Trainer (``--trainer.*``, a logger).
        progress, resume, ckpt_path: as in :class:`~atlasd.discovery.config.RunConfig`.
        data_time: seconds the data stage took; counted in ``wall_time_s`` (``data``, and
            the ``total``).
        spec: the task's spec, when the caller has it (default: ``task_spec(dm, name)``).

    Returns:
        ``(group, metrics)``: with a ground truth, the group's metadata gains ``dataset``
        and ``similarity_to_truth``. ``metrics`` holds ``task``, ``seed``, ``dim``,
        ``n_components``, ``resumed_stages``, the truth metrics of
        :func:`evaluate_against_truth` (with a ground truth), ``wall_time_s`` (``data``, every
        stage's, ``total``) and ``losses`` (``basis_per_epoch``, ``predictor_val``,
        ``coset_identity``): what ``metrics.json`` holds.
    """
    start = time.perf_counter() - data_time  # the total counts the (shared) data stage
    spec = spec if spec is not None else task_spec(dm, name)
    name = name if name is not None else spec.name
    truth = spec.ground_truth
    run = RunConfig(
        trainer_kwargs=dict(trainer_kwargs or {}),
        run_dir=None if run_dir is None else str(run_dir),
        progress=progress,
        resume=resume,
        ckpt_path=ckpt_path,
        reference_algebra=None if truth is None else truth["algebra"],
    )
    if settings.predictor.class_weights is None and spec.class_weights is not None:
        weights = [float(w) for w in spec.class_weights]
        settings = replace(settings, predictor=replace(settings.predictor, class_weights=weights))
    group = _discover(dm, spec, settings, seed, settings.training(run))

    metrics: dict[str, Any] = {
        "task": name,
        "seed": seed,
        "dim": group.dim,
        "n_components": group.n_components,
        "resumed_stages": group.metadata.get("resumed_stages", []),
    }
    if truth is not None:
        metrics.update(evaluate_against_truth(group, truth))
        group = DiscoveredGroup(
            group.algebra,
            cosets=group.cosets,
            in_rep=group.in_rep,
            out_rep=group.out_rep,
            metadata={
                **group.metadata,
                "dataset": name,
                "similarity_to_truth": metrics["similarity_to_truth"],
            },
            standardize=False,
        )
    meta = group.metadata
    metrics["wall_time_s"] = {
        "data": data_time,
        **meta.get("wall_time_s", {}),
        "total": time.perf_counter() - start,
    }
    metrics["losses"] = {
        "basis_per_epoch": meta.get("basis", {}).get("equivariance_loss_per_epoch"),
        "predictor_val": meta.get("predictor", {}).get("val_loss"),
        "coset_identity": meta.get("cosets", {}).get("identity_loss"),
    }
    return group, metrics
