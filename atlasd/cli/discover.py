"""``atlasd discover``: discover the symmetry group of a task's data and write DIR/group.json,
group.png and metrics.json (one folder per seed with ``--seeds``).

The domain work (which entry point, the truth metrics, the group's metadata) is
:func:`atlasd.discovery.task.discover_task`'s; this module loads the data, writes the files,
logs and prints.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from jsonargparse import ActionYesNo, ArgumentParser, Namespace

from atlasd.cli.common import (
    add_trainer_section,
    check_creatable,
    check_task_name,
    coerce,
    subparser,
)
from atlasd.discovery.config import DiscoverySettings

__all__ = ["HELP", "build", "check", "run"]

HELP = "run discovery on a task and save the group"


def build() -> ArgumentParser:
    parser = subparser("Discover the symmetry group of a task's data and write DIR/group.json.")
    parser.add_argument("--task", type=str, default="heat", help="dataset name (atlasd.datasets)")
    parser.add_argument("--data", type=dict, default={}, help="options of the task's DataModule")
    parser.add_argument(
        "--discovery",
        type=DiscoverySettings,
        default=DiscoverySettings(),
        help="kind (default: the task's own), n_generators, representations, and the "
        "predictor, basis and cosets sections",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        type=list[int] | None,
        default=None,
        help="several seeds: one run each in DIR/seed_N and a summary",
    )
    parser.add_argument(
        "--run_dir", type=str | None, default=None, help="output folder (default runs/<task>)"
    )
    parser.add_argument(
        "--logger",
        type=str,
        default="wandb",
        help="'wandb' (offline unless logged in; WANDB_MODE=disabled turns it off) or 'none'",
    )
    parser.add_argument("--wandb_project", type=str, default="atlasd")
    parser.add_argument(
        "--progress",
        type=str,
        default="auto",
        help="'bar' (Rich progress bars), 'lines' (one line per epoch, for logs), 'none', or "
        "'auto': bars when stderr is a terminal, lines otherwise",
    )
    parser.add_argument(
        "--fresh",
        action=ActionYesNo,
        default=False,
        help="start over: discard the stage state an earlier run left in the run folder "
        "(default: resume it, skipping finished stages)",
    )
    parser.add_argument(
        "--ckpt_path",
        type=str | None,
        default=None,
        help="resume the stage this Lightning checkpoint belongs to (predictors or basis)",
    )
    add_trainer_section(parser)
    return parser


# jsonargparse lets a config file's `key: null` through for plain-typed options
_REQUIRED_TYPES: dict[str, type] = {
    "task": str,
    "seed": int,
    "logger": str,
    "progress": str,
    "wandb_project": str,
    "fresh": bool,
}


def check(cfg: Namespace) -> None:
    """Checks jsonargparse cannot make: null in plain options, the progress mode."""
    cfg.data = cfg.data or {}  # an empty YAML section (`data:`) reads as null: no options
    for key, kind in _REQUIRED_TYPES.items():
        value = cfg[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{key} must be {kind.__name__}, got {value!r}")
    if cfg.progress not in ("auto", "bar", "lines", "none"):
        raise ValueError(f"progress must be auto, bar, lines or none, got {cfg.progress!r}")


def _load_datamodule(cfg: Namespace) -> Any:
    """The task's DataModule, set up (its tensors loaded and checked)."""
    from atlasd.datasets import check_datamodule, make_datamodule

    dm = make_datamodule(cfg.task, **coerce(cfg.data))
    dm.setup()
    check_datamodule(dm)  # a user's DataModule that lacks x fails here in one line
    return dm


def run(cfg: Namespace) -> int:
    from atlasd.io import check_writable, is_global_zero, write_json_atomic

    check_task_name(cfg.task, cfg.data)
    run_dir = Path(cfg.run_dir or f"runs/{cfg.task}")
    check_creatable(run_dir)
    # the data first: a bad file or option fails here and leaves no run folder behind
    start = time.perf_counter()
    dm = _load_datamodule(cfg)
    data_time = time.perf_counter() - start
    check_writable(run_dir)
    seeds = cfg.seeds if cfg.seeds else [cfg.seed]
    progress = cfg.progress
    if progress == "auto":
        progress = "bar" if sys.stderr.isatty() else "lines"
    results = []
    for seed in seeds:
        out = run_dir / f"seed_{seed}" if len(seeds) > 1 else run_dir
        results.append(_discover_one(cfg, dm, data_time, seed, out, progress))
    if len(seeds) > 1:
        summary = _seed_summary(cfg.task, seeds, results)
        if is_global_zero():
            write_json_atomic(run_dir / "summary.json", summary)
    return 0


def _seed_summary(task: str, seeds: list[int], results: list[dict]) -> dict[str, Any]:
    sims = [r["similarity_to_truth"] for r in results if "similarity_to_truth" in r]
    summary: dict[str, Any] = {"task": task, "seeds": seeds, "runs": results}
    if sims:
        summary["similarity_mean"] = statistics.fmean(sims)
        summary["similarity_sd"] = statistics.stdev(sims) if len(sims) > 1 else 0.0
        print(
            f"similarity to the ground truth over {len(sims)} seeds: "
            f"{summary['similarity_mean']:.4f} +- {summary['similarity_sd']:.4f}"
        )
    return summary


def _discover_one(
    cfg: Namespace, dm: Any, data_time: float, seed: int, run_dir: Path, progress: str
) -> dict:
    """One discovery run into run_dir: group.json, group.png, metrics.json."""
    from atlasd.discovery.task import discover_task
    from atlasd.io import is_global_zero, json_safe, write_json_atomic

    run_dir.mkdir(parents=True, exist_ok=True)
    logger = None
    if cfg.logger == "wandb":
        from atlasd.cli.dashboards import discovery_logger

        config = {"task": cfg.task, "seed": seed, "data": coerce(cfg.data),
                  "discovery": dataclasses.asdict(cfg.discovery)}  # fmt: skip
        logger = discovery_logger(cfg.wandb_project, f"{cfg.task}-seed{seed}", run_dir, config)
    trainer_kwargs = dict(cfg.trainer)
    if logger is not None:
        trainer_kwargs["logger"] = logger
    group, metrics = discover_task(
        dm,
        cfg.discovery,
        name=cfg.task,
        seed=seed,
        run_dir=run_dir,
        trainer_kwargs=trainer_kwargs,
        progress=progress,
        resume=not cfg.fresh,
        ckpt_path=cfg.ckpt_path,
        data_time=data_time,
    )
    if not is_global_zero():
        return metrics  # DDP: the other processes computed the same group; rank zero writes
    group.save(run_dir / "group.json")
    group.plot(run_dir / "group.png")
    write_json_atomic(run_dir / "metrics.json", json_safe(metrics))
    if logger is not None:
        from atlasd.cli.dashboards import log_discovery_summary

        log_discovery_summary(logger, group, metrics, run_dir)
    print(group.summary())
    sim = metrics.get("similarity_to_truth")
    print(
        f"run folder: {run_dir}  |  seed {seed}  |  "
        + (f"similarity to truth {sim:.4f}  |  " if sim is not None else "")
        + f"{group.n_components} component(s)  |  {metrics['wall_time_s']['total']:.1f} s"
    )
    return metrics
