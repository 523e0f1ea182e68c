"""``atlasd downstream``: train a baseline and a group-built model on a task, same budget and
seeds, and write DIR/report.json and DIR/report.md."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from atlasd.cli.common import check_task_name, coerce, subparser
from atlasd.cli.reports import add_run_options, load_group, publish
from atlasd.downstream.experiments.config import DownstreamConfig, ModelsConfig, TrainingConfig

__all__ = ["HELP", "build", "run"]

HELP = "compare a baseline with a group-built model"


def build() -> ArgumentParser:
    parser = subparser(
        "Train a baseline and a model built from a discovered group on a task's data, with the "
        "same budget and seeds, and write DIR/report.json and DIR/report.md."
    )
    parser.add_argument("--task", type=str, default="sphere_digits", help="dataset name")
    parser.add_argument("--data", type=dict, default={}, help="options of the task's DataModule")
    parser.add_argument("--training", type=TrainingConfig, default=TrainingConfig())
    parser.add_argument("--models", type=ModelsConfig, default=ModelsConfig())
    parser.add_argument("--seeds", type=list[int], default=[0, 1, 2])
    add_run_options(parser, "<task>-downstream")
    return parser


def run(cfg: Namespace) -> int:
    from atlasd.io import check_writable

    check_task_name(cfg.task, cfg.data or {})
    group = load_group(cfg)
    config = DownstreamConfig(
        task=cfg.task,
        data=coerce(cfg.data or {}),
        training=cfg.training,
        models=cfg.models,
        seeds=list(cfg.seeds),
    )
    run_dir = check_writable(Path(cfg.run_dir or f"runs/{cfg.task}-downstream"))
    from atlasd.downstream.experiments import run_downstream, write_report

    report = run_downstream(config, group, run_dir, trainer_kwargs=dict(cfg.trainer))
    write_report(report, run_dir)
    publish(cfg, report, run_dir, reading=False)
    print(f"report written to {run_dir / 'report.md'}")
    return 0
