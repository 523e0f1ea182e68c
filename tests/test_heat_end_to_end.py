"""Slow end-to-end run of `atlasd discover` on the heat task (reduced settings).

Marked `slow`: excluded from the default test run, run by .ci/run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import atlasd
from atlasd.cli import main

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_heat_discovery_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "heat"
    argv = [
        "discover",
        "--config",
        str(CONFIGS / "heat.yaml"),
        "--data.n",
        "500",
        "--discovery.training.predictor_epochs",
        "6",
        "--run_dir",
        str(run_dir),
        "--seed",
        "0",
    ]
    assert main(argv) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["similarity_to_truth"] >= 0.95
    assert metrics["n_components"] == 2 and metrics["cosets_match_truth"]
    group = atlasd.load_group(run_dir / "group.json")
    assert group.contains(torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64))
    assert (run_dir / "group.png").stat().st_size > 10_000
    assert list((run_dir / "stages" / "predictors").glob("best-*.ckpt"))
    assert {"predictors.json", "basis.json", "cosets.json", "run.json"} <= {
        p.name for p in (run_dir / "stages").iterdir()
    }
    assert set(metrics["wall_time_s"]) >= {"predictors", "basis", "cosets", "total"}
    assert "similarity to truth" in capsys.readouterr().out
