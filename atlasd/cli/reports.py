"""What the two report commands (downstream, degeneracy) share: their common options, the
group they load, and printing and logging a finished report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace

from atlasd.cli.common import add_trainer_section

__all__ = ["add_run_options", "load_group", "log", "publish"]


def add_run_options(parser: ArgumentParser, default_dir: str) -> None:
    """``--group``, ``--run_dir``, ``--logger``, ``--wandb_project`` and ``--trainer.*``."""
    parser.add_argument(
        "--group", type=str | None, default=None, help="a group.json written by `atlasd discover`"
    )
    parser.add_argument(
        "--run_dir", type=str | None, default=None, help=f"default runs/{default_dir}"
    )
    parser.add_argument("--logger", type=str, default="wandb", help="'wandb' or 'none'")
    parser.add_argument("--wandb_project", type=str, default="atlasd")
    add_trainer_section(parser)


def load_group(cfg: Namespace) -> Any:
    """The ``--group`` of a report command, loaded (a clear error when missing)."""
    from atlasd.group import DiscoveredGroup

    if not cfg.group:
        raise ValueError("--group GROUP.json is required (a group written by `atlasd discover`)")
    path = Path(cfg.group)
    if not path.is_file():
        raise FileNotFoundError(f"no group file at {path}")
    return DiscoveredGroup.load(path)


def log(message: str) -> None:
    print(f"[atlasd] {message}", file=sys.stderr, flush=True)


def publish(cfg: Namespace | None, report: Any, run_dir: Path, reading: bool) -> None:
    """Log a written report on wandb (``cfg`` None: never) and print its table (and reading)."""
    if cfg is not None and cfg.logger == "wandb":
        from atlasd.cli.dashboards import log_report

        log_report(cfg.wandb_project, f"{report.task}-report", report.to_json(), run_dir)
    print(report.table)
    if reading:
        print()
        print(report.reading)
