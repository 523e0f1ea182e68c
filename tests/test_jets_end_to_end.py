"""Slow end-to-end run of `atlasd discover` on the synthetic jets task (reduced settings).

Marked `slow`: excluded from the default test run, run by .ci/run.
"""

from __future__ import annotations

import pytest
import torch
from end_to_end import discover

from atlasd.datasets.jets import lorentz_generators

pytestmark = pytest.mark.slow

F64 = torch.float64


def test_jets_discovery_end_to_end(tmp_path, capsys):
    """configs/jets.yaml was tuned on seeds 0-2; this run uses the held-out seed 3."""
    run = discover(
        tmp_path,
        "jets",
        {"data.n": 10000, "discovery.predictor.epochs": 20},
        seed=3,
        capsys=capsys,
        logger="wandb",
    )
    metrics, group = run.metrics, run.group
    assert metrics["dim"] == 6
    assert metrics["similarity_to_truth"] >= 0.9
    assert metrics["n_components"] == 2 and metrics["cosets_match_truth"]
    assert group.similarity(lorentz_generators()) == pytest.approx(
        metrics["similarity_to_truth"], abs=1e-9
    )
    parity = torch.diag(torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=F64))
    boost = torch.linalg.matrix_exp(0.4 * lorentz_generators()[0])
    assert group.contains(parity) and group.contains(parity @ boost)
    # time reversal flips the sign of the energies: no jet classifier is invariant under it
    assert not group.contains(-parity) and not group.contains(-torch.eye(4, dtype=F64))
    assert list((run.run_dir / "stages" / "predictors").glob("best-*.ckpt"))
    assert "similarity to truth" in run.stdout
