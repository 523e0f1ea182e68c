"""``atlasd degeneracy``: train an unconstrained and a group-built model on a task's data and on
its symmetry-broken variant; measure LLC, ranks, effective dimension and emulability; write
DIR/report.json, report.md and report.png."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from atlasd.cli.common import check_task_name, coerce, subparser
from atlasd.cli.reports import add_run_options, load_group, log, publish
from atlasd.downstream.degeneracy.config import (
    DegeneracyConfig,
    DegeneracyTrainingConfig,
    LLCConfig,
    SamplesConfig,
)
from atlasd.downstream.experiments.config import ModelsConfig

__all__ = ["HELP", "build", "run"]

HELP = "measure the degeneracy a discovered group predicts"


def build() -> ArgumentParser:
    parser = subparser(
        "Train an unconstrained and a group-built model on a task's data and on a "
        "symmetry-broken version of it; measure LLC, ranks, effective dimension and "
        "emulability; write DIR/report.json, DIR/report.md and DIR/report.png."
    )
    parser.add_argument("--task", type=str, default="heat", help="a local task on fields")
    parser.add_argument("--data", type=dict, default={}, help="options of the task's DataModule")
    parser.add_argument(
        "--broken",
        type=dict,
        default={},
        help="DataModule options that break the symmetry (default: the task's own, TaskSpec)",
    )
    parser.add_argument("--samples", type=SamplesConfig, default=SamplesConfig())
    parser.add_argument("--models", type=ModelsConfig, default=ModelsConfig())
    parser.add_argument(
        "--training", type=DegeneracyTrainingConfig, default=DegeneracyTrainingConfig()
    )
    parser.add_argument(
        "--llc",
        type=LLCConfig,
        default=LLCConfig(),
        help="estimate_llc's keywords (chains, draws, burn_in, batch_size, step_size, ...)",
    )
    parser.add_argument("--seeds", type=list[int], default=[0])
    add_run_options(parser, "<task>-degeneracy")
    return parser


def run(cfg: Namespace) -> int:
    from atlasd.io import check_writable

    check_task_name(cfg.task, cfg.data or {})
    group = load_group(cfg)
    config = DegeneracyConfig(
        task=cfg.task,
        group=cfg.group,
        data=coerce(cfg.data or {}),
        broken=coerce(cfg.broken) if cfg.broken else None,
        samples=cfg.samples,
        models=cfg.models,
        training=cfg.training,
        llc=cfg.llc,
        seeds=list(cfg.seeds),
    )
    run_dir = check_writable(Path(cfg.run_dir or f"runs/{cfg.task}-degeneracy"))
    from atlasd.downstream.degeneracy import run_degeneracy, write_degeneracy_report

    report = run_degeneracy(config, group, run_dir, log=log, trainer_kwargs=dict(cfg.trainer))
    write_degeneracy_report(report, run_dir)
    publish(cfg, report, run_dir, reading=True)
    print(f"report written to {run_dir / 'report.md'}")
    return 0
