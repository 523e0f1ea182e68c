"""``atlasd show GROUP.json``: print a saved group's summary and write its plot.

Torch-free (atlasd.group_file): a saved group prints and plots in well under a second.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from atlasd.cli.common import subparser

__all__ = ["HELP", "build", "run"]

HELP = "print and plot a discovered group"


def build() -> ArgumentParser:
    parser = subparser("Print a DiscoveredGroup's summary and write its plot.")
    parser.add_argument("group", type=str, help="path to a group.json file")
    parser.add_argument(
        "--plot",
        type=str | None,
        default=None,
        help="where to write the plot (default: next to the file, .png)",
    )
    parser.add_argument("--no_plot", type=bool, default=False, help="only print the summary")
    parser.add_argument("--json", type=bool, default=False, help="print the file's JSON instead")
    return parser


def run(cfg: Namespace) -> int:
    from atlasd import group_file

    path = Path(cfg.group)
    if not path.is_file():
        raise FileNotFoundError(f"no group file at {path}")
    doc = group_file.read_document(path)
    try:
        parts = group_file.parts_from_document(doc)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    # the readable form and closure residual are stored by the writer (computed with torch);
    # a file that lacks them shows the standard form, and no residual
    stored = doc.get("algebra_sparse")
    readable = (  # empty when k = 0, like the algebra
        group_file.check_matrices(stored, "algebra_sparse") if stored else parts.algebra
    )
    if cfg.json:
        print(json.dumps(doc, indent=1))
    else:
        print(
            group_file.summary_text(
                group_file.header(parts),
                readable,
                parts.cosets,
                parts.metadata,
                doc.get("closure_residual"),
            )
        )
    if not cfg.no_plot:
        plot = Path(cfg.plot) if cfg.plot else path.with_suffix(".png")
        group_file.plot_generators(readable, plot, cosets=parts.cosets)
        print(f"plot written to {plot}", file=sys.stderr)
    return 0
