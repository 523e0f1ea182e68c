"""What every subcommand shares: the usage error, one-line failures, bundled configs, the typed
``--trainer`` section, and the checks made before any work.

Imports jsonargparse only: ``atlasd --help`` must not pay for torch or Lightning.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

__all__ = [
    "UsageError",
    "add_trainer_section",
    "bundled_configs",
    "check_creatable",
    "check_task_name",
    "coerce",
    "fail",
    "one_line",
    "resolve_config_names",
    "subparser",
    "trainer_options",
]


class UsageError(ValueError):
    """The command line or a config file is malformed (exit status 2)."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def fail(message: str) -> None:
    print(f"atlasd: error: {message}", file=sys.stderr)


def subparser(description: str) -> ArgumentParser:
    """A subcommand's parser, with ``--config FILE.yaml`` (or a bundled config's name)."""
    parser = ArgumentParser(description=description, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with the options")
    return parser


def bundled_configs() -> dict[str, Path]:
    """The configs that ship with atlasd: ``{name: path}``, name = file name without .yaml."""
    from importlib.resources import files

    folder = Path(str(files("atlasd.configs")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_config_names(argv: list[str]) -> list[str]:
    """``--config NAME`` (no such file, no folder in it) becomes the bundled config of that name,
    so that ``atlasd discover --config heat`` works from any folder."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            j, value = i + 1, out[i + 1]
        elif arg.startswith("--config="):
            j, value = i, arg.split("=", 1)[1]
        else:
            continue
        if Path(value).exists() or "/" in value or "\\" in value or value.startswith("{"):
            continue  # a path (jsonargparse reports a missing one) or an inline config
        configs = bundled_configs()
        name = value.removesuffix(".yaml").removesuffix(".yml")
        if name not in configs:
            raise UsageError(
                f"invalid arguments: no config file {value!r} here and no bundled config of "
                f"that name; bundled configs: {', '.join(configs)}"
            )
        out[j] = str(configs[name]) if j == i + 1 else f"--config={configs[name]}"
    return out


# Trainer options atlasd sets itself (per stage), not the user
_TRAINER_SKIP = {
    "logger",
    "callbacks",
    "plugins",
    "enable_checkpointing",
    "default_root_dir",
    "model_registry",
}


def add_trainer_section(parser: ArgumentParser) -> None:
    """``--trainer.*``: Lightning Trainer options for every Trainer a command builds."""
    # A mapping here, typed against lightning.Trainer's signature only when a command runs
    # (trainer_options): building the typed section imports Lightning, which alone costs several
    # seconds, and --help / --print_config must not.
    parser.add_argument(
        "--trainer",
        type=dict,
        default={},
        help="lightning.Trainer options for every stage's Trainer, e.g. --trainer.accelerator gpu "
        "--trainer.devices 2 --trainer.strategy ddp (checked against lightning.Trainer's "
        "signature when the command runs; logger, callbacks and checkpointing are atlasd's)",
    )


def trainer_options(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``--trainer.*`` options of a command, typed by ``lightning.Trainer``'s signature.

    Values given on the command line arrive as strings and are parsed by jsonargparse against
    the Trainer's annotations; only the options given are returned (Lightning's defaults stay
    Lightning's). Raises UsageError naming an unknown or mistyped option.
    """
    given = dict(given or {})
    if not given:
        return {}
    import lightning

    typed = ArgumentParser(exit_on_error=False)
    typed.add_class_arguments(lightning.Trainer, "trainer", skip=_TRAINER_SKIP)
    argv = [
        f"--trainer.{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in given.items()
    ]
    try:
        parsed = typed.parse_args(argv)
    except (argparse.ArgumentError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"invalid arguments: {one_line(exc)}") from exc
    return {key: parsed.trainer[key] for key in given}


def coerce(options: Mapping[str, Any]) -> dict[str, Any]:
    """Values given on the command line in a free-form section (``--data.n 500``) arrive as
    strings, at any depth; read them as YAML."""
    import yaml

    return {
        k: yaml.safe_load(v) if isinstance(v, str) else coerce(v) if isinstance(v, dict) else v
        for k, v in options.items()
    }


def check_task_name(task: str, data: Mapping[str, Any]) -> None:
    """Fail before any work on a task name that is neither registered nor a label for a
    user's DataModule (``data.class_path``)."""
    from atlasd.datasets import TASKS

    if task not in TASKS and "class_path" not in data:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")


def check_creatable(folder: Path) -> None:
    """Fail before any work when the output folder could not be made (its nearest existing
    ancestor is not a writable folder), without creating anything yet."""
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OSError(f"cannot write to the output folder {folder}: {parent} is not writable")
