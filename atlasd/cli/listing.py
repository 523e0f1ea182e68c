"""``atlasd configs``: list the configs that ship with atlasd (usable as ``--config NAME``)."""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from atlasd.cli.common import bundled_configs, subparser

__all__ = ["HELP", "build", "run"]

HELP = "list the bundled configs"


def build() -> ArgumentParser:
    return subparser("List the configs that ship with atlasd (usable as --config NAME).")


def _description(path: Path) -> str:
    """The first comment line of a config: what it runs."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def run(cfg: Namespace) -> int:
    configs = bundled_configs()
    width = max(map(len, configs), default=0)
    for name, path in configs.items():
        print(f"{name:<{width}}  {_description(path)}")
    print(f"\n(in {next(iter(configs.values())).parent}; use as --config NAME)", file=sys.stderr)
    return 0
