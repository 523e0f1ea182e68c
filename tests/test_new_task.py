"""A new task is one module: tests/new_world.py defines a DataModule with a TaskSpec and nothing
in atlasd changes; discovery (through the CLI), the downstream comparison and the degeneracy
study all run on it, reading only its spec."""

from __future__ import annotations

import json

import pytest
import torch
from new_world import CurvedWorld, labels

import atlasd
from atlasd.cli import main
from atlasd.datasets import TASKS, task_spec
from atlasd.downstream.degeneracy import run_degeneracy
from atlasd.downstream.experiments import run_downstream

DATA = {"class_path": "new_world.CurvedWorld", "init_args": {"n": 48, "n_test": 8}}


@pytest.fixture(scope="module")
def o2() -> atlasd.DiscoveredGroup:
    truth = CurvedWorld().ground_truth
    return atlasd.DiscoveredGroup(truth["algebra"], cosets=truth["cosets"])


def test_the_world_is_o2_equivariant_and_not_in_the_registry():
    assert "curved_world" not in TASKS
    dm = CurvedWorld(n=8, n_test=2)
    dm.setup()
    spec = task_spec(dm)
    assert (spec.kind, spec.d, spec.n_classes, spec.metric) == ("local", 2, 2, "accuracy")
    assert 0.05 < dm.y.float().mean() < 0.6  # both classes occur
    # quarter turns and a mirror of a field turn and mirror its label map exactly (the
    # stencil swaps f_xx and f_yy); the anisotropic variant breaks it
    x = dm.x
    for g in (lambda t: torch.rot90(t, 1, (-2, -1)), lambda t: torch.flip(t, (-1,))):
        assert torch.equal(labels(g(x), (1.0, 1.0)), g(labels(x, (1.0, 1.0))))
    turn = lambda t: torch.rot90(t, 1, (-2, -1))  # noqa: E731
    assert not torch.equal(labels(turn(x), (1.5, 0.5)), turn(labels(x, (1.5, 0.5))))


def test_discover_runs_on_a_task_defined_outside_atlasd(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = [
        "discover", "--task", "curved_world", "--data", json.dumps(DATA),
        "--discovery", json.dumps({"batch_size": 8, "predictor": {"epochs": 2},
                                   "basis": {"epochs": 2, "init_candidates": 2},
                                   "cosets": {"candidates": 2, "steps": 4}}),
        "--run_dir", str(run_dir), "--logger", "none", "--progress", "none",
    ]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    group = atlasd.load_group(run_dir / "group.json")
    assert metrics["task"] == "curved_world" and group.metadata["dataset"] == "curved_world"
    assert 0.0 <= metrics["similarity_to_truth"] <= 1.0  # the spec's ground truth was read
    assert group.metadata["atlas"]["radius"] == 6


def test_downstream_and_degeneracy_read_only_the_spec(tmp_path, o2):
    models = {
        "baseline": {"hidden": [4], "kernel_size": 3},
        "equivariant": {"hidden": ["2*S + 1*V"], "kernel_size": 3},
    }
    down = run_downstream(
        {"task": "curved_world", "data": DATA, "training": {"epochs": 1, "batch_size": 8},
         "models": models},
        o2, tmp_path / "down", [0],
    )  # fmt: skip
    for name in ("baseline", "equivariant"):
        accuracy = down.models[name]["metrics"]["accuracy"]["values"][0]
        assert 0.0 <= accuracy <= 1.0
    assert (
        down.models["equivariant"]["free_parameters"] < down.models["baseline"]["free_parameters"]
    )
    report = run_degeneracy(
        {
            "task": "curved_world",
            "data": DATA,  # no `broken`: the spec's symmetry-broken variant
            "samples": {"n": 60, "n_heldout": 20, "n_rank": 4, "n_emulate": 4},
            "models": {"baseline": {"hidden": [2], "kernel_size": 3},
                       "equivariant": {"hidden": ["1*S + 1*V"], "kernel_size": 3}},
            "training": {"epochs": 1, "batch_size": 20, "polish_steps": 2, "polish_rounds": 1},
            "llc": {"chains": 2, "burn_in": 3, "draws": 6, "batch_size": 20, "step_check": 0},
        },
        o2, tmp_path / "deg",
    )  # fmt: skip
    assert report.config["broken"] == {"anisotropy": [1.5, 0.5]}
    assert set(report.summary) == {
        f"{v}/{m}" for v in ("symmetric", "broken") for m in ("baseline", "equivariant")
    }
