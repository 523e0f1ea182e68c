"""Tests of the task contract (atlasd.datasets.base): every built-in task's ``spec``, the spec
derived for a user's DataModule, and TaskSpec's own checks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from atlasd.atlas import Atlas
from atlasd.datasets import check_datamodule, make_datamodule
from atlasd.datasets.base import KINDS, METRICS, TaskSpec, derive_spec, task_spec
from atlasd.datasets.heat import heat_ground_truth
from atlasd.datasets.jets import jets_ground_truth
from atlasd.datasets.sphere_digits import BACKGROUND, sphere_digits_ground_truth

# the smallest data each task accepts, so the whole file runs in seconds
TINY = {
    "heat": {"n": 4, "size": 96, "steps": 2},
    "sphere_digits": {"n": 6, "n_test": 2, "seed": 1},
    "jets": {"n": 10, "seed": 2},
    "climate": {"n": 4, "shape": (32, 64), "seed": 3},
}


def _set_up(task: str, **options):
    dm = make_datamodule(task, **{**TINY.get(task, {}), **options})
    dm.setup()
    return dm


def _same_truth(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------
# the built-in tasks
# --------------------------------------------------------------------------------------------


def test_heat_spec():
    dm = _set_up("heat")
    spec = dm.spec
    assert (spec.name, spec.kind, spec.inputs, spec.d, spec.in_channels) == (
        "heat", "local", "fields", 2, 1,
    )  # fmt: skip
    assert (spec.target, spec.n_classes, spec.class_weights, spec.metric) == (
        "regression", None, None, "mse",
    )  # fmt: skip
    assert spec.ignore_class is None and not spec.is_classification
    assert spec.broken == {"anisotropy": [1.5, 0.5]}
    assert _same_truth(spec.ground_truth, heat_ground_truth())
    assert spec.atlas is dm.atlas and spec.atlas.n_charts == 19
    assert task_spec(dm) == spec
    # the broken variant is a valid option set of the same task
    broken = _set_up("heat", **spec.broken)
    assert broken.x.shape == dm.x.shape and not torch.equal(broken.y, dm.y)


def test_sphere_digits_spec():
    dm = _set_up("sphere_digits")
    spec = dm.spec
    assert (spec.kind, spec.inputs, spec.d, spec.in_channels) == ("local", "fields", 2, 1)
    assert (spec.target, spec.n_classes, spec.metric) == ("classification", 11, "accuracy")
    assert spec.class_weights == (1.0,) * 10 + (0.1,)
    assert spec.ignore_class == BACKGROUND == 10
    assert spec.broken == {"rotation_spread": 0.0}
    assert _same_truth(spec.ground_truth, sphere_digits_ground_truth())
    assert spec.atlas is dm.atlas and spec.atlas.n_charts == 3
    assert make_datamodule("sphere_digits", **TINY["sphere_digits"], **spec.broken)


def test_jets_spec():
    spec = _set_up("jets").spec
    assert (spec.kind, spec.inputs, spec.d, spec.in_channels) == ("global", "sets", 4, 4)
    assert (spec.target, spec.n_classes, spec.class_weights, spec.metric) == (
        "classification", 2, None, "auc",
    )  # fmt: skip
    assert spec.atlas is None and spec.broken is None and spec.ignore_class is None
    assert _same_truth(spec.ground_truth, jets_ground_truth())
    assert spec.ground_truth["algebra"].shape == (6, 4, 4)


def test_climate_spec():
    dm = _set_up("climate")
    spec = dm.spec
    assert (spec.kind, spec.inputs, spec.d, spec.in_channels) == ("local", "fields", 2, 4)
    assert (spec.target, spec.n_classes, spec.metric) == ("classification", 3, "mean_iou")
    assert spec.class_weights == tuple(dm.class_weights.tolist())
    assert len(spec.class_weights) == 3 and all(w > 0 for w in spec.class_weights)
    assert spec.broken is None and spec.ignore_class is None
    assert spec.ground_truth["in_rep"].shape == (1, 4, 4)
    assert spec.atlas is dm.atlas and spec.atlas.n_charts == 12
    # two channels: TMQ and PSL, no winds
    assert _set_up("climate", variables=["TMQ", "PSL"]).spec.in_channels == 2


def test_files_spec_follows_the_file(tmp_path):
    gen = np.random.default_rng(0)
    fields = tmp_path / "fields.npz"
    x = gen.normal(size=(6, 2, 16, 16))
    np.savez(fields, x=x, y=x.sum(1))
    atlas = {"centers": [[8, 8]], "radius": 4}
    truth = {"algebra": [[[0.0, -1.0], [1.0, 0.0]]]}
    spec = _set_up("files", path=str(fields), y="y", atlas=atlas, ground_truth=truth).spec
    assert (spec.name, spec.kind, spec.inputs, spec.d, spec.in_channels) == (
        "files", "local", "fields", 2, 2,
    )  # fmt: skip
    assert (spec.target, spec.n_classes, spec.metric) == ("regression", None, "mse")
    assert spec.atlas is not None and spec.ground_truth["algebra"].shape == (1, 2, 2)

    vectors = tmp_path / "vectors.npz"
    np.savez(vectors, v=gen.normal(size=(10, 3)), label=np.arange(10) % 4)
    spec = _set_up("files", path=str(vectors), x="v", y="label", kind="global").spec
    assert (spec.kind, spec.inputs, spec.d, spec.in_channels) == ("global", "vectors", 3, 3)
    assert (spec.target, spec.n_classes, spec.metric) == ("classification", 4, "accuracy")
    assert spec.atlas is None and spec.ground_truth is None

    points = tmp_path / "points.npz"
    np.savez(points, p=gen.normal(size=(10, 2)))
    spec = _set_up("files", path=str(points), x="p", kind="distribution").spec
    assert (spec.kind, spec.inputs, spec.d, spec.target) == ("distribution", "points", 2, "none")


@pytest.mark.parametrize("task", sorted(TINY))
def test_spec_before_setup_says_so(task):
    dm = make_datamodule(task, **TINY[task])
    with pytest.raises(RuntimeError, match=r"spec is known after setup\(\)"):
        dm.spec  # noqa: B018


def test_every_spec_uses_known_kinds_and_metrics():
    for task in TINY:
        spec = _set_up(task).spec
        assert spec.kind in KINDS and spec.metric in METRICS


# --------------------------------------------------------------------------------------------
# a user's DataModule without a spec
# --------------------------------------------------------------------------------------------


def _user(**attributes) -> SimpleNamespace:
    return SimpleNamespace(**{"y": None, "atlas": None, "ground_truth": None, **attributes})


def test_derived_spec_of_fields_with_float_targets():
    atlas = Atlas.grid(shape=(12, 12), centers=[(6, 6)], radius=3)
    dm = _user(kind="local", x=torch.zeros(5, 3, 12, 12), y=torch.zeros(5, 1, 12, 12), atlas=atlas)
    spec = task_spec(dm, "mine")
    assert (spec.name, spec.kind, spec.inputs, spec.d, spec.in_channels) == (
        "mine", "local", "fields", 2, 3,
    )  # fmt: skip
    assert (spec.target, spec.n_classes, spec.metric, spec.atlas) == (
        "regression", None, "mse", atlas,
    )  # fmt: skip
    assert task_spec(dm).name == "SimpleNamespace"  # the class name without a label


def test_derived_spec_of_vectors_with_int_labels():
    y = torch.tensor([0, 2, 1, 2])
    spec = task_spec(_user(kind="global", x=torch.zeros(4, 5), y=y))
    assert (spec.inputs, spec.d, spec.in_channels) == ("vectors", 5, 5)
    assert (spec.target, spec.n_classes, spec.class_weights, spec.metric) == (
        "classification", 3, None, "accuracy",
    )  # fmt: skip
    # class weights give the class count, also for classes absent from y
    weighted = task_spec(_user(kind="global", x=torch.zeros(4, 5), y=y, class_weights=[1, 1, 1, 2]))
    assert weighted.n_classes == 4 and weighted.class_weights == (1.0, 1.0, 1.0, 2.0)
    sets = task_spec(_user(kind="global", x=torch.zeros(4, 7, 3), y=y))
    assert (sets.inputs, sets.d, sets.in_channels) == ("sets", 3, 3)


def test_derived_spec_of_distribution_points():
    truth = {"algebra": torch.zeros(1, 2, 2)}
    spec = task_spec(_user(kind="distribution", x=torch.zeros(8, 2), ground_truth=truth))
    assert (spec.kind, spec.inputs, spec.d, spec.target, spec.n_classes) == (
        "distribution", "points", 2, "none", None,
    )  # fmt: skip
    assert spec.ground_truth is truth and spec.atlas is None


def test_derive_spec_ignores_an_own_spec():
    dm = _set_up("jets")
    derived = derive_spec(dm, "jets")
    assert (derived.kind, derived.inputs, derived.n_classes, derived.metric) == (
        "global", "sets", 2, "accuracy",
    )  # fmt: skip


def test_check_datamodule_checks_the_spec_in_one_line():
    dm = _user(kind="global", x=torch.zeros(4, 2), y=torch.tensor([0, 1, 1, 0]))
    check_datamodule(dm)
    no_class = _user(kind="global", x=torch.zeros(4, 2), y=torch.full((4,), -1))
    with pytest.raises(ValueError, match=r"spec.n_classes must be a positive int") as info:
        check_datamodule(no_class)
    assert "\n" not in str(info.value)
    dm.spec = {"kind": "global"}
    with pytest.raises(ValueError, match=r"SimpleNamespace.spec must be a TaskSpec"):
        check_datamodule(dm)


# --------------------------------------------------------------------------------------------
# TaskSpec's checks
# --------------------------------------------------------------------------------------------

GOOD = {
    "name": "t",
    "kind": "global",
    "inputs": "vectors",
    "d": 3,
    "in_channels": 3,
    "target": "classification",
    "n_classes": 2,
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "galactic"}, r"t: spec.kind must be one of local, global, distribution"),
        ({"inputs": "graphs"}, r"t: spec.inputs must be one of"),
        ({"target": "ranking"}, r"t: spec.target must be one of"),
        ({"metric": "f1"}, r"t: spec.metric must be one of accuracy, auc, mean_iou, mse"),
        ({"d": 0}, r"t: spec.d must be a positive int, got 0"),
        ({"in_channels": 1.5}, r"t: spec.in_channels must be a positive int"),
        ({"n_classes": None}, r"t: spec.n_classes must be a positive int, got None"),
        ({"class_weights": (1.0, 2.0, 3.0)}, r"t: spec.class_weights has 3 entries for 2 classes"),
        ({"target": "regression"}, r"t: spec.n_classes and class_weights need classification"),
        (
            {"kind": "local", "inputs": "fields", "d": 2},
            r"t: a local task on fields needs spec.atlas",
        ),
    ],
)
def test_task_spec_rejects(change, message):
    with pytest.raises(ValueError, match=message):
        TaskSpec(**{**GOOD, **change})


def test_task_spec_is_frozen():
    spec = TaskSpec(**GOOD)
    assert spec.is_classification
    with pytest.raises(AttributeError):
        spec.d = 4  # type: ignore[misc]
