"""The ``atlasd`` console script: the one place that wires the stages together.

Every subcommand takes ``--config FILE.yaml`` and ``--print_config`` (jsonargparse), so a run is
reproducible from its config. Failures exit non-zero with a one-line reason on stderr.

    atlasd show  DIR/group.json [--plot PATH]     print a group's summary and write its plot
    atlasd check [--seed N]                       measure the geometry conventions here
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser

__all__ = ["build_parser", "main"]


def _subparser(description: str) -> ArgumentParser:
    parser = ArgumentParser(description=description, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with the options")
    return parser


def build_parser() -> ArgumentParser:
    """The full argument parser (subcommands show, check)."""
    parser = ArgumentParser(
        prog="atlasd",
        description="Automatic local symmetry discovery: atlases, Lie algebras, equivariant "
        "layers and the degeneracy of trained weights.",
        exit_on_error=False,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subcommands(dest="command", required=True)

    show = _subparser("Print a DiscoveredGroup's summary and write its plot.")
    show.add_argument("group", type=str, help="path to a group.json file")
    show.add_argument(
        "--plot",
        type=str | None,
        default=None,
        help="where to write the plot (default: next to the file, .png)",
    )
    show.add_argument("--no_plot", type=bool, default=False, help="only print the summary")
    show.add_argument("--json", type=bool, default=False, help="print the file's JSON instead")
    sub.add_subcommand("show", show, help="print and plot a discovered group")

    check = _subparser("Measure the geometry conventions (rot90, composition, centre) here.")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--radius", type=int, default=10)
    sub.add_subcommand("check", check, help="self-check of the chart and action conventions")
    return parser


def _version() -> str:
    from atlasd import __version__

    return f"atlasd {__version__}"


def _cmd_show(cfg) -> int:
    from atlasd.group import DiscoveredGroup

    path = Path(cfg.group)
    if not path.is_file():
        raise FileNotFoundError(f"no group file at {path}")
    group = DiscoveredGroup.load(path)
    if cfg.json:
        print(json.dumps(group.to_dict(), indent=1))
    else:
        print(group.summary())
    if not cfg.no_plot:
        plot = Path(cfg.plot) if cfg.plot else path.with_suffix(".png")
        group.plot(plot)
        print(f"plot written to {plot}", file=sys.stderr)
    return 0


_CHECK_TOLERANCES = {"rot90_error": 1e-5, "composition_error": 1e-2, "centre_error": 1e-5}


def _cmd_check(cfg) -> int:
    from atlasd.conventions import check_conventions

    errors = check_conventions(seed=cfg.seed, radius=cfg.radius)
    ok = True
    for name, value in errors.items():
        tol = _CHECK_TOLERANCES[name]
        status = "ok" if value < tol else "FAIL"
        ok &= value < tol
        print(f"{name:<20} {value:.2e}  (tolerance {tol:.0e})  {status}")
    return 0 if ok else 1


_COMMANDS = {"show": _cmd_show, "check": _cmd_check}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        parser.print_help()
        return 2
    try:
        cfg = parser.parse_args(args)
    except (argparse.ArgumentError, ValueError) as exc:
        _fail(f"invalid arguments: {_one_line(exc)}")
        return 2
    try:
        return _COMMANDS[cfg.command](cfg[cfg.command])
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        _fail(_one_line(exc))
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _fail(message: str) -> None:
    print(f"atlasd: error: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
