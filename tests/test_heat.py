"""Tests of AtlasD's heat-equation task (atlasd.datasets.heat)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasd.atlas import Atlas
from atlasd.datasets.heat import (
    HeatDataModule,
    amplification_factor,
    build_heat_atlas,
    generate_heat,
    heat_atlas,
    heat_cfl_number,
    heat_ground_truth,
    heat_obstacle_bounds,
    heat_obstacle_mask,
    heat_solve,
)

SQRT2 = math.sqrt(2.0)


def _reference_atlasd_step(u: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
    """One explicit step written independently: central differences of central differences.

    dx = 0.1, dt = 0.01, alpha = 1, field padded by two ghost pixels at sqrt(2); x = column to the
    right, y = row upward.
    """
    dx, dt = 0.1, 0.01
    k = torch.eye(2, dtype=torch.float64) if k is None else k
    p = torch.nn.functional.pad(u, (2, 2, 2, 2), value=SQRT2)

    def d_x(f):  # d/dx along columns, loses one pixel on each side in both directions
        return (f[..., 1:-1, 2:] - f[..., 1:-1, :-2]) / (2 * dx)

    def d_y(f):  # y points up: row index decreases
        return (f[..., :-2, 1:-1] - f[..., 2:, 1:-1]) / (2 * dx)

    lap = k[0, 0] * d_x(d_x(p)) + 2 * k[0, 1] * d_x(d_y(p)) + k[1, 1] * d_y(d_y(p))
    return u + dt * lap


# ------------------------------------------------------------------------------------------------
# generate_heat: shapes, dtypes, determinism, obstacle
# ------------------------------------------------------------------------------------------------


def test_shapes_and_dtypes():
    x, y = generate_heat(3, size=32, steps=4)
    assert x.shape == y.shape == (3, 1, 32, 32)
    assert x.dtype == y.dtype == torch.float32
    x64, y64 = generate_heat(2, size=16, steps=2, dtype=torch.float64)
    assert x64.dtype == y64.dtype == torch.float64
    assert torch.isfinite(y).all()


def test_same_seed_bit_identical_different_seed_differs():
    x1, y1 = generate_heat(5, size=32, steps=10, seed=7)
    x2, y2 = generate_heat(5, size=32, steps=10, seed=7)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, y3 = generate_heat(5, size=32, steps=10, seed=8)
    assert (x1 - x3).abs().max() > 0.1
    assert (y1 - y3).abs().max() > 0.1
    # samples are not identical to each other either
    assert (x1[0] - x1[1]).abs().max() > 0.1


def test_initial_condition_distribution_matches_atlasd_form():
    """x = c sin(a u + b) + f cos(d v + e): rows-only plus columns-only, so mixed differences
    vanish away from the obstacle; amplitudes c, f lie in [1/2, inf) with mean about 0.9."""
    x, _ = generate_heat(200, size=64, steps=0, obstacle=False, dtype=torch.float64)
    x = x[:, 0]
    mixed = x[:, 1:, 1:] - x[:, 1:, :-1] - x[:, :-1, 1:] + x[:, :-1, :-1]
    assert mixed.abs().max() < 1e-12
    # c = (|N| + 1) / 2 has median (0.674 + 1) / 2 = 0.84; with a ~ 15 +- 6 rad over the field
    # most row profiles cover a full period, so the median peak-to-peak swing is about 2c
    swing = x[:, :, 0].amax(dim=1) - x[:, :, 0].amin(dim=1)
    assert 1.4 < swing.median() < 2.0
    assert swing.max() <= 2 * x[:, :, 0].abs().max()


def test_obstacle_held_at_sqrt2_in_x_and_y():
    assert heat_obstacle_bounds((128, 128)) == (13, 39, 26, 64)
    mask = heat_obstacle_mask((128, 128))
    assert mask.sum() == 26 * 38
    x, y = generate_heat(2, size=128, steps=50)
    assert torch.all(x[:, 0][:, mask] == torch.tensor(SQRT2, dtype=torch.float32))
    assert torch.all(y[:, 0][:, mask] == torch.tensor(SQRT2, dtype=torch.float32))
    assert not torch.any(x[:, 0][:, ~mask] == torch.tensor(SQRT2, dtype=torch.float32))
    # obstacle=False leaves those pixels free
    _, y0 = generate_heat(2, size=128, steps=5, obstacle=False)
    assert (y0[:, 0][:, mask] - SQRT2).abs().max() > 0.1


def test_steps_zero_is_identity_and_input_not_modified():
    x, y = generate_heat(2, size=32, steps=0)
    assert torch.equal(x, y)
    x0 = torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    before = x0.clone()
    heat_solve(x0, steps=3)
    assert torch.equal(x0, before)


# ------------------------------------------------------------------------------------------------
# the solver
# ------------------------------------------------------------------------------------------------


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_matches_independent_atlasd_reference_implementation(seed):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(3, 1, 40, 40, generator=gen, dtype=torch.float64)
    mask = heat_obstacle_mask((40, 40))
    u = x0.clone()
    u[..., mask] = SQRT2
    for _ in range(7):
        u = _reference_atlasd_step(u)
        u[..., mask] = SQRT2
    ours = heat_solve(x0, steps=7)
    assert (ours - u).abs().max() < 1e-12


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_anisotropic_matches_independent_reference(seed):
    k = torch.tensor([[1.1, 0.2], [0.2, 0.4]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, 24, 30, generator=gen, dtype=torch.float64)
    u = x0.clone()
    for _ in range(5):
        u = _reference_atlasd_step(u, k)
    ours = heat_solve(x0, steps=5, anisotropy=k, obstacle=False)
    assert (ours - u).abs().max() < 1e-12


@pytest.mark.parametrize(
    ("theta_x", "theta_y", "anisotropy"),
    [
        (0.3, 0.0, None),
        (0.2, 0.45, None),
        (0.7, -0.4, (1.5, 0.5)),
        (0.25, 0.6, [[1.0, 0.2], [0.2, 0.5]]),
    ],
)
def test_fourier_mode_decays_at_exact_discrete_rate(theta_x, theta_y, anisotropy):
    """Far (> 2 * steps pixels) from the border and the obstacle, a mode evolves as on the
    infinite lattice: amplitude times G ** steps, the constant offset untouched."""
    size, steps = 128, 6
    rows = torch.arange(size, dtype=torch.float64)[:, None]
    cols = torch.arange(size, dtype=torch.float64)[None, :]
    phase = theta_x * cols + theta_y * (-rows) + 0.3  # y = -row
    offset, amp = 0.25, 0.8
    x0 = offset + amp * torch.cos(phase)
    y = heat_solve(x0, steps=steps, anisotropy=anisotropy, obstacle=True)

    g = amplification_factor(theta_x, theta_y, anisotropy)
    expected = offset + amp * g**steps * torch.cos(phase)
    margin = 2 * steps + 1
    far = torch.ones(size, size, dtype=torch.bool)
    far[:margin] = far[-margin:] = far[:, :margin] = far[:, -margin:] = False
    r0, r1, c0, c1 = heat_obstacle_bounds((size, size))
    far[max(r0 - margin, 0) : r1 + margin, max(c0 - margin, 0) : c1 + margin] = False
    assert far.sum() > 1000
    assert g < 1.0 - 1e-3  # the mode really decays
    rel = (y - expected)[far].abs().max() / (amp * abs(g) ** steps)
    assert rel < 1e-5
    # and the prediction is not trivially satisfied: the undamped mode is far off
    assert (x0 - expected)[far].abs().max() > 1e-2


def test_isotropic_amplification_closed_form_and_checkerboard_mode():
    # G = 1 - (sin^2 tx + sin^2 ty) for AtlasD's alpha dt / dx^2 = 1
    assert amplification_factor(0.3, 0.5) == pytest.approx(
        1 - math.sin(0.3) ** 2 - math.sin(0.5) ** 2
    )
    # period-4 checkerboard: G = -1 (AtlasD's scheme sits exactly at the stability limit)
    assert amplification_factor(math.pi / 2, math.pi / 2) == pytest.approx(-1.0)
    assert heat_cfl_number() == 1.0
    assert heat_cfl_number((0.5, 0.5)) == pytest.approx(0.5)
    assert heat_cfl_number([[1.0, 0.25], [0.25, 0.5]]) == pytest.approx(1.0)


def test_constant_sqrt2_field_is_stationary_and_maximum_principle():
    const = torch.full((1, 32, 32), SQRT2, dtype=torch.float64)
    assert (heat_solve(const, steps=20) - SQRT2).abs().max() < 1e-14
    x, y = generate_heat(8, size=64, steps=50, dtype=torch.float64)
    lo = torch.minimum(x.amin(dim=(1, 2, 3)), torch.tensor(SQRT2, dtype=torch.float64))
    hi = torch.maximum(x.amax(dim=(1, 2, 3)), torch.tensor(SQRT2, dtype=torch.float64))
    assert torch.all(y.amin(dim=(1, 2, 3)) >= lo - 1e-12)
    assert torch.all(y.amax(dim=(1, 2, 3)) <= hi + 1e-12)
    # diffusion smooths: total variation of y well below that of x, away from the obstacle
    tv = lambda f: (f[..., 1:, :] - f[..., :-1, :]).abs().mean()  # noqa: E731
    assert tv(y[..., 64 - 20 :, :]) < 0.8 * tv(x[..., 64 - 20 :, :])


def test_rot90_and_reflection_equivariance_without_obstacle():
    x, _ = generate_heat(4, size=48, steps=0, obstacle=False, seed=3)
    y = heat_solve(x, steps=30, obstacle=False)
    y_rot = heat_solve(torch.rot90(x, 1, dims=(-2, -1)), steps=30, obstacle=False)
    assert (y_rot - torch.rot90(y, 1, dims=(-2, -1))).abs().max() < 1e-6
    y_flip = heat_solve(torch.flip(x, dims=(-1,)), steps=30, obstacle=False)
    assert (y_flip - torch.flip(y, dims=(-1,))).abs().max() < 1e-6
    # the obstacle breaks the global symmetry
    yo = heat_solve(x, steps=30, obstacle=True)
    yo_rot = heat_solve(torch.rot90(x, 1, dims=(-2, -1)), steps=30, obstacle=True)
    assert (yo_rot - torch.rot90(yo, 1, dims=(-2, -1))).abs().max() > 0.1


def test_anisotropic_diffusion_breaks_rotation_but_keeps_axis_reflections():
    x, _ = generate_heat(4, size=48, steps=0, obstacle=False, seed=3, dtype=torch.float64)
    k = (1.5, 0.5)
    y = heat_solve(x, steps=30, anisotropy=k, obstacle=False)
    y_rot = heat_solve(torch.rot90(x, 1, dims=(-2, -1)), steps=30, anisotropy=k, obstacle=False)
    err = (y_rot - torch.rot90(y, 1, dims=(-2, -1))).abs().max() / y.abs().max()
    assert err > 0.05
    y_flip = heat_solve(torch.flip(x, dims=(-2,)), steps=30, anisotropy=k, obstacle=False)
    assert (y_flip - torch.flip(y, dims=(-2,))).abs().max() < 1e-12
    # swapping kx and ky is exactly the rotated problem
    y_swapped = heat_solve(
        torch.rot90(x, 1, dims=(-2, -1)), steps=30, anisotropy=(0.5, 1.5), obstacle=False
    )
    assert (y_swapped - torch.rot90(y, 1, dims=(-2, -1))).abs().max() < 1e-12


# ------------------------------------------------------------------------------------------------
# atlases and ground truth
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("which", "n_charts", "r_in", "r_out"), [(1, 19, 14, 10), (2, 3, 26, 20)])
def test_heat_atlas_layout(which, n_charts, r_in, r_out):
    spec = heat_atlas(which)
    assert spec.n_charts == len(spec.centers) == n_charts
    assert (spec.in_radius, spec.out_radius) == (r_in, r_out)
    assert len(set(spec.centers)) == n_charts
    mask = heat_obstacle_mask((128, 128))
    for r, c in spec.centers:
        assert isinstance(r, int) and isinstance(c, int)
        assert 0 <= r - r_in and r + r_in < 128 and 0 <= c - r_in and c + r_in < 128
        assert not mask[r - r_in : r + r_in + 1, c - r_in : c + r_in + 1].any()


def test_heat_atlas_known_centres():
    assert heat_atlas(1).centers[:3] == [(64, 19), (86, 19), (108, 19)]
    assert heat_atlas(1).centers[-1] == (108, 108)
    assert heat_atlas(2).centers == [(83, 38), (86, 80), (44, 96)]


def test_heat_atlas_errors():
    with pytest.raises(ValueError, match="atlas must be 1 or 2"):
        heat_atlas(3)
    with pytest.raises(ValueError, match="leaves the 64 x 64 field"):
        heat_atlas(1, (64, 64))
    with pytest.raises(ValueError, match="shape must be a pair"):
        heat_atlas(1, 128)


def test_ground_truth():
    gt = heat_ground_truth()
    assert gt["algebra"].dtype == gt["cosets"].dtype == torch.float64
    assert torch.equal(
        gt["algebra"], torch.tensor([[[0.0, -1.0], [1.0, 0.0]]], dtype=torch.float64)
    )
    assert gt["cosets"].shape == (2, 2, 2)
    assert torch.equal(gt["cosets"][0], torch.eye(2, dtype=torch.float64))
    assert torch.equal(gt["cosets"][1], torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)))
    gt["algebra"].zero_()
    assert heat_ground_truth()["algebra"].abs().sum() == 2  # fresh tensors each call


def test_build_heat_atlas():
    atlas = build_heat_atlas(2)
    assert isinstance(atlas, Atlas)
    fields = torch.randn(2, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    patches = atlas.extract(fields)
    assert patches.shape == (2, 3, 1, 53, 53)
    r, c = heat_atlas(2).centers[0]
    assert torch.equal(patches[:, 0], fields[:, :, r - 26 : r + 27, c - 26 : c + 27])


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------


def test_bad_input_errors():
    with pytest.raises(ValueError, match="n must be >= 1"):
        generate_heat(0, size=16)
    with pytest.raises(ValueError, match="n must be an int"):
        generate_heat(2.0, size=16)
    with pytest.raises(ValueError, match="size must be >= 8"):
        generate_heat(2, size=4)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        generate_heat(2, size=16, steps=-1)
    with pytest.raises(ValueError, match="dtype must be a floating"):
        generate_heat(2, size=16, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"unstable: CFL number 1\.5 > 1"):
        generate_heat(2, size=16, anisotropy=(2.0, 1.0))
    with pytest.raises(ValueError, match="positive semi-definite"):
        generate_heat(2, size=16, anisotropy=(1.0, -0.5))
    with pytest.raises(ValueError, match="symmetric"):
        generate_heat(2, size=16, anisotropy=[[1.0, 0.2], [0.0, 0.5]])
    with pytest.raises(ValueError, match="got shape"):
        generate_heat(2, size=16, anisotropy=(1.0, 0.5, 0.2))
    with pytest.raises(ValueError, match="NaN or Inf"):
        generate_heat(2, size=16, anisotropy=(float("nan"), 0.5))
    with pytest.raises(ValueError, match="x0 contains NaN"):
        heat_solve(torch.full((1, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="floating dtype"):
        heat_solve(torch.zeros(1, 16, 16, dtype=torch.int32))
    with pytest.raises(ValueError, match="at least 5 x 5"):
        heat_solve(torch.zeros(1, 4, 16))


# ------------------------------------------------------------------------------------------------
# data module
# ------------------------------------------------------------------------------------------------


def test_data_module_split_and_loaders():
    dm = HeatDataModule(n=20, size=128, steps=3, seed=1, val_fraction=0.1, batch_size=4, atlas=2)
    assert dm.kind == "local"
    assert dm.out_radius == 20 and dm.in_radius == 26
    assert torch.equal(dm.ground_truth["cosets"], heat_ground_truth()["cosets"])
    dm.setup("fit")
    assert len(dm.train_dataset) == 18 and len(dm.val_dataset) == 2
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == yb.shape == (4, 1, 128, 128)
    xv, _ = next(iter(dm.val_dataloader()))
    x, y = generate_heat(20, size=128, steps=3, seed=1)
    assert torch.equal(dm.x, x) and torch.equal(dm.y, y)
    assert torch.equal(xv, x[18:])
    # deterministic shuffling
    order1 = torch.cat([b[0] for b in dm.train_dataloader()])
    order2 = torch.cat(
        [
            b[0]
            for b in HeatDataModule(n=20, steps=3, seed=1, atlas=2, batch_size=4).train_dataloader()
        ]
    )
    assert torch.equal(order1, order2)


def test_data_module_errors():
    with pytest.raises(ValueError, match="val_fraction must be in"):
        HeatDataModule(n=10, val_fraction=1.0)
    with pytest.raises(ValueError, match="leaves no training samples"):
        HeatDataModule(n=1, val_fraction=0.5)
    with pytest.raises(ValueError, match="too small for this atlas"):
        HeatDataModule(n=4, size=64)
    with pytest.raises(ValueError, match="unstable"):
        HeatDataModule(n=4, anisotropy=(3.0, 3.0))


def test_data_module_atlas_attribute():
    dm = HeatDataModule(n=4, steps=1, atlas=1)
    patches = dm.atlas.extract(torch.zeros(1, 1, 128, 128))
    assert patches.shape == (1, 19, 1, 29, 29)
