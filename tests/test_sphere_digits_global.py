"""Local versus global symmetry of digits on the sphere, asked of the data distribution (LieGAN's
criterion, `discovery.kind: distribution`): rotating each digit in its own chart is a symmetry,
rotating the whole picture is not (it moves the outer digits off the equator)."""

from __future__ import annotations

import pytest
from known_groups import so2

import atlasd
from atlasd.datasets.sphere_digits import SphereDigitsDataModule

pytestmark = pytest.mark.slow

SETTINGS = dict(
    seed=0, batch_size=256, basis_epochs=12, basis_lr=0.05, init_candidates=8, scale=0.5
)


def _distribution_group(charts: str):
    dm = SphereDigitsDataModule(n=4000, n_test=16, charts=charts, rotation_spread=180.0, seed=0)
    dm.setup()
    return atlasd.discover_distribution(dm.x, atlas=dm.atlas, cosets=False, **SETTINGS)


def test_rotation_is_a_local_not_a_global_symmetry_of_the_distribution():
    local = _distribution_group("local")
    global_ = _distribution_group("global")
    assert local.similarity(so2()) >= 0.95  # measured 0.9975
    assert global_.similarity(so2()) <= 0.8  # measured 0.53: a horizontal shear wins
    loss = lambda g: g.metadata["basis"]["equivariance_loss_per_epoch"][-1]  # noqa: E731
    assert loss(global_) > loss(local)
