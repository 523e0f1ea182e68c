"""Slow end-to-end run of `atlasd discover` on digits on the sphere (reduced settings).

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


def test_sphere_digits_discovery_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "sphere_digits"
    argv = [
        "discover",
        "--config",
        str(CONFIGS / "sphere_digits.yaml"),
        "--data.n",
        "1000",
        "--data.n_test",
        "10",
        "--discovery.training.predictor_epochs",
        "10",
        "--discovery.training.basis_epochs",
        "2",
        "--discovery.training.coset_candidates",
        "8",
        "--run_dir",
        str(run_dir),
        "--seed",
        "0",
        "--logger",
        "none",
    ]
    assert main(argv) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["similarity_to_truth"] >= 0.95
    group = atlasd.load_group(run_dir / "group.json")
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    assert group.contains(torch.linalg.matrix_exp(0.5 * rotation), tol=0.15)
    # a mirrored digit is not a digit: no reflection coset
    assert metrics["n_components"] == 1 and metrics["cosets_match_truth"]
    assert not group.contains(torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)))
    assert "similarity to truth" in capsys.readouterr().out
