"""Slow end-to-end run of `atlasd discover` on the heat task (reduced settings).

Marked `slow`: excluded from the default test run, run by .ci/run.
"""

from __future__ import annotations

import pytest
import torch
from end_to_end import discover

pytestmark = pytest.mark.slow


def test_heat_discovery_end_to_end(tmp_path, capsys):
    run = discover(
        tmp_path,
        "heat",
        {"data.n": 500, "discovery.predictor.epochs": 6},
        capsys=capsys,
        logger="wandb",  # the offline dashboard path too
    )
    assert run.metrics["similarity_to_truth"] >= 0.95
    assert run.metrics["n_components"] == 2 and run.metrics["cosets_match_truth"]
    assert run.group.contains(torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64))
    assert list((run.run_dir / "stages" / "predictors").glob("best-*.ckpt"))
    assert {"predictors.json", "basis.json", "cosets.json", "run.json"} <= {
        p.name for p in (run.run_dir / "stages").iterdir()
    }
    assert "similarity to truth" in run.stdout
