"""The parser of the whole console script, and its entry point.

Every subcommand is one module of this package with ``HELP``, ``build() -> ArgumentParser``
and ``run(cfg) -> int``; this module only assembles them, parses (config files included) and
maps failures to exit statuses: 2 for a malformed command line or config (UsageError), 1 for a
failure while running, each with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from jsonargparse import ArgumentParser, Namespace

from atlasd.cli.common import UsageError, fail, one_line, resolve_config_names, trainer_options

__all__ = ["COMMANDS", "build_parser", "main", "parse"]

# subcommand -> module of atlasd.cli (HELP, build, run); imported when the parser is built
COMMANDS: dict[str, str] = {
    "discover": "discover",
    "downstream": "downstream",
    "degeneracy": "degeneracy",
    "degeneracy-merge": "merge",
    "show": "show",
    "configs": "listing",
    "check": "check",
}
# subcommands whose training takes --trainer.* and --logger
_TRAINING = ("discover", "downstream", "degeneracy")


def _module(command: str):
    return importlib.import_module(f"atlasd.cli.{COMMANDS[command]}")


def _version() -> str:
    from atlasd import __version__

    return f"atlasd {__version__}"


def build_parser() -> ArgumentParser:
    """The full argument parser, one subcommand per module of :data:`COMMANDS`."""
    parser = ArgumentParser(
        prog="atlasd",
        description="Automatic local symmetry discovery: atlases, Lie algebras, equivariant "
        "layers and the degeneracy of trained weights.",
        exit_on_error=False,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subcommands(dest="command", required=True)
    for command in COMMANDS:
        module = _module(command)
        sub.add_subcommand(command, module.build(), help=module.HELP)
    return parser


def parse(argv: Sequence[str]) -> Namespace:
    """Parse a command line (config files included) into a namespace; UsageError (a
    ValueError) names the problem for anything malformed, and nothing else escapes."""
    argv = resolve_config_names(list(argv))
    parser = build_parser()
    try:
        cfg = parser.parse_args(argv)
        _fill_sections(cfg[cfg.command], _module(cfg.command).build().get_defaults())
        # the typed sections become the stages' config dataclasses, which check themselves
        cfg = parser.instantiate(cfg)
    except (argparse.ArgumentError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"invalid arguments: {one_line(exc)}") from exc
    sub = cfg[cfg.command]
    check = getattr(_module(cfg.command), "check", None)
    if check is not None:
        try:
            check(sub)
        except (ValueError, TypeError) as exc:
            if isinstance(exc, UsageError):
                raise
            raise UsageError(f"invalid arguments: {one_line(exc)}") from exc
    if cfg.command in _TRAINING:
        if sub.logger not in ("wandb", "none"):
            raise UsageError(
                f"invalid arguments: logger must be 'wandb' or 'none', got {sub.logger!r}"
            )
        if not isinstance(sub.trainer or {}, dict):
            raise UsageError("invalid arguments: trainer must be a mapping of options")
        sub.trainer = trainer_options(sub.trainer)
    return cfg


def _fill_sections(cfg: Namespace, defaults: Namespace, prefix: str = "") -> None:
    """An empty YAML section (``llc:``) reads as null; for a typed section it means "no
    options", as it always did: the section's defaults, at any depth. A plain value where a
    section belongs (0.2.0's ``discovery.cosets: false``) is refused with the section's
    options named."""
    for key, default in vars(defaults).items():
        if not isinstance(default, Namespace) or key not in cfg:
            continue
        value = cfg[key]
        if value is None:
            cfg[key] = default.clone()
        elif isinstance(value, Namespace):
            _fill_sections(value, default, f"{prefix}{key}.")
        else:
            raise ValueError(
                f"{prefix}{key} is a section of options ({', '.join(vars(default))}), got {value!r}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        build_parser().print_help()
        return 2
    try:
        cfg = parse(args)
    except UsageError as exc:
        fail(str(exc))
        return 2
    try:
        return _module(cfg.command).run(cfg[cfg.command])
    except (ValueError, OSError, KeyError, RuntimeError, FloatingPointError) as exc:
        fail(one_line(exc))
        return 1
