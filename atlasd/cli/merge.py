"""``atlasd degeneracy-merge``: one degeneracy report from reports of the same experiment on
different seeds (run in separate processes or on separate machines)."""

from __future__ import annotations

import json
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from atlasd.cli.common import subparser
from atlasd.cli.reports import publish

__all__ = ["HELP", "build", "run"]

HELP = "one degeneracy report from reports on different seeds"


def build() -> ArgumentParser:
    parser = subparser(
        "Merge degeneracy reports of the same experiment on different seeds (run in separate "
        "processes or on separate machines, with one fixed llc.localization) into one report "
        "over all seeds: DIR/report.json, report.md and report.png."
    )
    parser.add_argument("reports", type=str, nargs="+", help="report folders or report.json files")
    parser.add_argument("--run_dir", type=str, help="folder for the merged report")
    return parser


def run(cfg: Namespace) -> int:
    from atlasd.io import check_writable

    if not cfg.run_dir:
        raise ValueError("--run_dir DIR is required (where the merged report goes)")
    paths = [Path(p) / "report.json" if Path(p).is_dir() else Path(p) for p in cfg.reports]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no degeneracy report at {', '.join(missing)}")
    run_dir = check_writable(Path(cfg.run_dir))
    from atlasd.downstream.degeneracy import merge_degeneracy_reports, write_degeneracy_report

    report = merge_degeneracy_reports([json.loads(p.read_text()) for p in paths])
    write_degeneracy_report(report, run_dir)
    publish(None, report, run_dir, reading=True)
    print(f"merged report over seeds {report.seeds} written to {run_dir / 'report.md'}")
    return 0
