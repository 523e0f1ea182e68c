"""The scaffold of the slow end-to-end tests: one `atlasd discover` run through the CLI, and
the checks every run must pass whatever the task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

import atlasd
from atlasd.cli import main
from atlasd.group_file import group_schema

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STAGE_TIMES = {"data", "predictors", "basis", "cosets", "total"}


@dataclass
class Discovery:
    """What one end-to-end discovery left behind."""

    run_dir: Path
    metrics: dict[str, Any]
    group: atlasd.DiscoveredGroup
    stdout: str


def discover(
    tmp_path: Path,
    config: str,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    capsys: Any = None,
    logger: str = "none",
) -> Discovery:
    """Run ``atlasd discover --config configs/CONFIG.yaml`` with ``--KEY VALUE`` overrides into
    a fresh run folder, and check what every run writes: exit status 0, a group.json that
    validates against the schema and loads, a plot, metrics with every stage's wall time, and
    the one-line result. ``logger="wandb"`` runs the offline dashboard path too."""
    run_dir = tmp_path / config
    argv = ["discover", "--config", str(CONFIGS / f"{config}.yaml")]
    for key, value in (overrides or {}).items():
        argv += [f"--{key}", str(value)]
    argv += ["--run_dir", str(run_dir), "--seed", str(seed), "--logger", logger]
    assert main(argv) == 0
    doc = json.loads((run_dir / "group.json").read_text())
    jsonschema.Draft202012Validator(group_schema()).validate(doc)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["wall_time_s"]) >= STAGE_TIMES
    assert (run_dir / "group.png").stat().st_size > 10_000
    group = atlasd.load_group(run_dir / "group.json")
    assert metrics["dim"] == group.dim and metrics["n_components"] == group.n_components
    if "similarity_to_truth" in metrics:
        assert group.metadata["similarity_to_truth"] == metrics["similarity_to_truth"]
    stdout = capsys.readouterr().out if capsys is not None else ""
    if capsys is not None:
        assert f"run folder: {run_dir}" in stdout
    return Discovery(run_dir, metrics, group, stdout)


def discovery_flags(flat: dict[str, Any]) -> list[str]:
    """``--discovery.*`` flags (DiscoverySettings' nesting) of the library's flat training
    keywords, e.g. ``{"basis_epochs": 2}`` -> ``["--discovery.basis.epochs", "2"]``."""
    from atlasd.discovery.config import FLAT_NAMES

    where = {name: (section, key) for name, section, key in FLAT_NAMES}
    flags = []
    for name, value in flat.items():
        section, key = where[name]
        path = key if section is None else f"{section}.{key}"
        flags += [f"--discovery.{path}", json.dumps(value)]
    return flags
