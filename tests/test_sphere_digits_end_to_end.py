"""Slow end-to-end run of `atlasd discover` on digits on the sphere (reduced settings).

Marked `slow`: excluded from the default test run, run by .ci/run.
"""

from __future__ import annotations

import pytest
import torch
from end_to_end import discover

pytestmark = pytest.mark.slow


def test_sphere_digits_discovery_end_to_end(tmp_path, capsys):
    run = discover(
        tmp_path,
        "sphere_digits",
        {
            "data.n": 1000,
            "data.n_test": 10,
            "discovery.predictor.epochs": 10,
            "discovery.basis.epochs": 2,
            "discovery.cosets.candidates": 8,
        },
        capsys=capsys,
    )
    assert run.metrics["similarity_to_truth"] >= 0.95
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    assert run.group.contains(torch.linalg.matrix_exp(0.5 * rotation), tol=0.15)
    # a mirrored digit is not a digit: no reflection coset
    assert run.metrics["n_components"] == 1 and run.metrics["cosets_match_truth"]
    assert not run.group.contains(torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)))
    assert "similarity to truth" in run.stdout
