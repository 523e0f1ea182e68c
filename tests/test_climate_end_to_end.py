"""Slow end-to-end run of `atlasd discover` on the synthetic climate task (reduced settings).

Marked `slow`: excluded from the default test run, run by .ci/run. Checks the documented ground
truth of atlasd.datasets.climate: so(2), its vector representation on (U850, V850) (learned,
compared after removing the generators' sign and scale) and no reflection coset.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import atlasd
from atlasd.cli import main
from atlasd.datasets.climate import climate_ground_truth, representation_error

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_climate_discovery_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "climate"
    argv = [
        "discover",
        "--config",
        str(CONFIGS / "climate.yaml"),
        "--data.n",
        "600",
        "--discovery.training.predictor_epochs",
        "8",
        "--discovery.training.basis_epochs",
        "3",
        "--discovery.training.coset_candidates",
        "6",
        "--run_dir",
        str(run_dir),
        "--seed",
        "0",
    ]
    assert main(argv) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["similarity_to_truth"] >= 0.97
    assert metrics["n_components"] == 1 and metrics["cosets_match_truth"]

    group = atlasd.load_group(run_dir / "group.json")
    truth = climate_ground_truth()
    rep = representation_error(group.algebra, group.in_rep, truth["algebra"], truth["in_rep"])
    assert rep["rep_cosine"] > 0.9 and rep["rep_relative_error"] < 0.4, rep
    # a mirror (acting on the chart only) is not in the group: it turns cyclones into decoys
    assert not group.contains(torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    assert group.contains(torch.linalg.matrix_exp(2.0 * truth["algebra"][0]))
    assert (run_dir / "group.png").stat().st_size > 10_000
    assert set(metrics["wall_time_s"]) >= {"data", "predictors", "basis", "cosets", "total"}
    assert "similarity to truth" in capsys.readouterr().out
