"""The downstream comparison's report: a dataclass whose ``to_json()`` is ``report.json``,
its Markdown table, and :func:`write_report`."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlasd.io import json_safe, write_atomic, write_json_atomic

__all__ = ["DownstreamReport", "markdown_table", "summary", "write_report"]


def summary(values: list[float]) -> dict[str, Any]:
    """``{"mean", "sd", "values"}`` over seeds (non-finite values left out of mean and sd;
    one value: sd 0)."""
    finite = [v for v in values if math.isfinite(v)]
    mean = statistics.fmean(finite) if finite else math.nan
    sd = statistics.stdev(finite) if len(finite) > 1 else (0.0 if finite else math.nan)
    return {"mean": mean, "sd": sd, "values": values}


@dataclass
class DownstreamReport:
    """What :func:`~atlasd.downstream.experiments.run_downstream` measured.

    Attributes:
        task: the task's name.
        seeds: the model seeds.
        group: ``{"dim", "d", "n_components"}`` of the group.
        training: the training options used (:class:`TrainingConfig` as a dict).
        n_train, n_test: sizes of the training and test splits.
        models: name -> ``metrics`` (name -> mean, sd, values over seeds),
            ``raw_parameters``, ``free_parameters``, ``wall_time_s`` and ``cpu_time_s`` (mean,
            sd, values; training + evaluation per seed).
        table: the Markdown table of ``models``.
    """

    task: str
    seeds: list[int]
    group: dict[str, Any]
    training: dict[str, Any]
    n_train: int
    n_test: int
    models: dict[str, dict[str, Any]]
    table: str

    def to_json(self) -> dict[str, Any]:
        """The ``report.json`` dict (non-finite numbers still as floats: see ``json_safe``)."""
        return {
            "task": self.task,
            "seeds": list(self.seeds),
            "group": dict(self.group),
            "training": dict(self.training),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "models": self.models,
            "table": self.table,
        }


def markdown_table(models: dict[str, dict[str, Any]]) -> str:
    """One row per model: metrics (mean ± sd), parameter counts, wall time."""
    metrics = list(next(iter(models.values()))["metrics"])
    header = ["model", *metrics, "raw params", "free params", "wall time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in models.items():
        cells = [name]
        for m in metrics:
            s = entry["metrics"][m]
            cells.append(f"{s['mean']:.4f} ± {s['sd']:.4f}")
        w = entry["wall_time_s"]
        cells += [
            str(entry["raw_parameters"]),
            str(entry["free_parameters"]),
            f"{w['mean']:.1f} ± {w['sd']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(report: DownstreamReport, run_dir: Path) -> tuple[Path, Path]:
    """Write ``run_dir/report.json`` (non-finite numbers as null) and ``run_dir/report.md``
    atomically; returns both paths."""
    if not isinstance(report, DownstreamReport):
        raise ValueError(
            "report must be the DownstreamReport of run_downstream (needs 'models' and 'table')"
        )
    run_dir = Path(run_dir)
    json_path = write_json_atomic(run_dir / "report.json", json_safe(report.to_json()))
    seeds = ", ".join(str(s) for s in report.seeds)
    md = (
        f"# Downstream comparison: {report.task}\n\n"
        f"Seeds: {seeds}; metrics are mean ± sd over seeds on the test split "
        f"({report.n_test} samples, {report.n_train} for training).\n\n"
        f"{report.table}\n"
    )
    return json_path, write_atomic(run_dir / "report.md", md)
