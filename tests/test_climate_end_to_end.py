"""Slow end-to-end run of `atlasd discover` on the synthetic climate task (reduced settings).

Marked `slow`: excluded from the default test run, run by .ci/run. Checks the documented ground
truth of atlasd.datasets.climate: so(2), its vector representation on (U850, V850) (learned,
compared after removing the generators' sign and scale) and no reflection coset.
"""

from __future__ import annotations

import pytest
import torch
from end_to_end import discover

from atlasd.datasets.climate import climate_ground_truth, representation_error

pytestmark = pytest.mark.slow


def test_climate_discovery_end_to_end(tmp_path, capsys):
    run = discover(
        tmp_path,
        "climate",
        {
            "data.n": 600,
            "discovery.predictor.epochs": 8,
            "discovery.basis.epochs": 3,
            "discovery.cosets.candidates": 6,
        },
        capsys=capsys,
        logger="wandb",
    )
    metrics, group = run.metrics, run.group
    assert metrics["similarity_to_truth"] >= 0.97
    assert metrics["n_components"] == 1 and metrics["cosets_match_truth"]
    truth = climate_ground_truth()
    rep = representation_error(group.algebra, group.in_rep, truth["algebra"], truth["in_rep"])
    assert rep["rep_cosine"] > 0.9 and rep["rep_relative_error"] < 0.4, rep
    # a mirror (acting on the chart only) is not in the group: it turns cyclones into decoys
    assert not group.contains(torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    assert group.contains(torch.linalg.matrix_exp(2.0 * truth["algebra"][0]))
    assert "similarity to truth" in run.stdout
