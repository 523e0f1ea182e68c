"""Tests for atlasd.atlas: charts, plane/sphere extraction and the action on patches."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from atlasd.atlas import Atlas, Chart, act, act_vectors, crop, local_coordinates

J = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rotation(angle: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """exp(angle J), computed in float64: float32 matrix_exp is off by up to 7e-7 per entry."""
    return torch.linalg.matrix_exp(angle * J.double()).to(dtype)


def interior(t: torch.Tensor, margin: int) -> torch.Tensor:
    """Central (2 * margin + 1)^2 block of (..., s, s)."""
    r = (t.shape[-1] - 1) // 2
    return t[..., r - margin : r + margin + 1, r - margin : r + margin + 1]


def smooth_patches(b: int, k: int, c: int, radius: int, seed: int) -> torch.Tensor:
    """Sums of four plane waves with wavelengths of 25-125 pixels, shape (b, k, c, s, s)."""
    gen = torch.Generator().manual_seed(seed)
    xy = local_coordinates(radius)
    out = torch.zeros(b, k, c, 2 * radius + 1, 2 * radius + 1)
    for _ in range(4):
        freq = torch.rand(b, k, c, 1, 1, generator=gen) * 0.2 + 0.05
        ang = torch.rand(b, k, c, 1, 1, generator=gen) * 2 * math.pi
        phase = torch.rand(b, k, c, 1, 1, generator=gen) * 2 * math.pi
        arg = freq * (ang.cos() * xy[..., 0] + ang.sin() * xy[..., 1]) + phase
        out += torch.sin(arg)
    return out


def random_generator_matrix(gen: torch.Generator, norm: float) -> torch.Tensor:
    a = torch.randn(2, 2, generator=gen)
    return torch.linalg.matrix_exp(norm * a / a.norm())


# --------------------------------------------------------------------------- charts and atlases


def test_chart_normalises_and_validates():
    chart = Chart(center=(np.int64(3), torch.tensor(4)), radius=np.int32(2))
    assert chart.center == (3, 4) and type(chart.center[0]) is int and chart.radius == 2
    assert chart.size == 5
    assert chart == Chart(center=(3, 4), radius=2) and hash(chart) == hash(Chart((3, 4), 2))
    with pytest.raises(ValueError, match="radius must be >= 1"):
        Chart(center=(3, 3), radius=0)
    with pytest.raises(ValueError, match="chart center row must be an int, got float 3.0"):
        Chart(center=(3.0, 3), radius=1)
    with pytest.raises(ValueError, match="chart radius must be an int, got bool True"):
        Chart(center=(3, 3), radius=True)
    with pytest.raises(ValueError, match="pair"):
        Chart(center=(3, 3, 3), radius=1)
    with pytest.raises(ValueError, match=re.escape("(-1, 3)")):
        Chart(center=(-1, 3), radius=1)


def test_atlas_properties_and_validation():
    atlas = Atlas.grid(shape=(20, 30), centers=[(5, 5), (10, 20), (14, 25)], radius=4)
    assert atlas.radius == 4 and atlas.patch_size == 9 and atlas.n_charts == 3 == len(atlas)
    assert atlas.centers.dtype == torch.long
    assert atlas.centers.tolist() == [[5, 5], [10, 20], [14, 25]]
    assert atlas.shape == (20, 30) and atlas.manifold == "plane"
    with pytest.raises(ValueError, match="at least one chart"):
        Atlas([])
    with pytest.raises(ValueError, match="manifold"):
        Atlas([Chart((5, 5), 2)], manifold="torus")
    with pytest.raises(ValueError, match=r"share one radius.*chart 1 at \(6, 6\)"):
        Atlas([Chart((5, 5), 2), Chart((6, 6), 3), Chart((7, 7), 2)])


def test_atlas_dict_round_trip_is_json_safe():
    atlas = Atlas.grid((32, 64), [(8, 0), (16, 63)], radius=3, manifold="sphere")
    d = json.loads(json.dumps(atlas.to_dict()))
    assert d == {
        "manifold": "sphere",
        "radius": 3,
        "centers": [[8, 0], [16, 63]],
        "shape": [32, 64],
    }
    assert Atlas.from_dict(d) == atlas
    no_shape = Atlas([Chart((4, 4), 2)])
    assert Atlas.from_dict(json.loads(json.dumps(no_shape.to_dict()))) == no_shape
    with pytest.raises(ValueError, match="missing key"):
        Atlas.from_dict({"manifold": "plane", "radius": 2})
    with pytest.raises(ValueError, match="unknown key"):
        Atlas.from_dict({**d, "radii": 3})
    with pytest.raises(ValueError, match="radius must be >= 1"):
        Atlas.from_dict({**d, "radius": 0})


# --------------------------------------------------------------------------- plane extraction


@st.composite
def plane_case(draw):
    radius = draw(st.integers(1, 4))
    h = draw(st.integers(2 * radius + 1, 24))
    w = draw(st.integers(2 * radius + 1, 24))
    n = draw(st.integers(1, 6))
    rows = draw(st.lists(st.integers(radius, h - 1 - radius), min_size=n, max_size=n))
    cols = draw(st.lists(st.integers(radius, w - 1 - radius), min_size=n, max_size=n))
    return radius, h, w, list(zip(rows, cols, strict=True))


@FAST
@given(case=plane_case(), seed=st.integers(0, 2**31 - 1))
def test_plane_extract_matches_slicing(case, seed):
    radius, h, w, centers = case
    gen = torch.Generator().manual_seed(seed)
    fields = torch.randn(3, 2, h, w, generator=gen, dtype=torch.float64)
    for atlas in (Atlas.grid((h, w), centers, radius), Atlas([Chart(c, radius) for c in centers])):
        patches = atlas.extract(fields)
        assert patches.shape == (3, len(centers), 2, 2 * radius + 1, 2 * radius + 1)
        assert patches.is_contiguous()
        for k, (r0, c0) in enumerate(centers):
            expected = fields[:, :, r0 - radius : r0 + radius + 1, c0 - radius : c0 + radius + 1]
            assert torch.equal(patches[:, k], expected)
    ints = torch.randint(-1000, 1000, (1, 1, h, w), generator=gen)
    r0, c0 = centers[0]
    got = Atlas.grid((h, w), centers, radius).extract(ints)[0, 0, 0]
    assert torch.equal(
        got, ints[0, 0, r0 - radius : r0 + radius + 1, c0 - radius : c0 + radius + 1]
    )


def test_plane_patch_orientation_matches_local_coordinates():
    h, w, r = 11, 13, 3
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    fields = torch.stack([cols, rows]).unsqueeze(0).double()  # channel 0 = column, 1 = row
    patches = Atlas.grid((h, w), [(5, 6)], r).extract(fields)[0, 0]
    xy = local_coordinates(r, dtype=torch.float64)
    assert torch.equal(patches[0] - 6, xy[..., 0])  # x = column offset, to the right
    assert torch.equal(5 - patches[1], xy[..., 1])  # y = minus the row offset, upward


@FAST
@given(
    h=st.integers(5, 20),
    w=st.integers(5, 20),
    radius=st.integers(1, 3),
    row=st.integers(0, 25),
    col=st.integers(0, 25),
)
def test_chart_leaving_the_plane_is_named(h, w, radius, row, col):
    assume(row - radius < 0 or row + radius >= h or col - radius < 0 or col + radius >= w)
    good = (h // 2, w // 2)
    assume(good[0] - radius >= 0 and good[1] - radius >= 0)
    assume(good[0] + radius < h and good[1] + radius < w)
    pattern = re.escape(f"chart 1 (center ({row}, {col})")
    with pytest.raises(ValueError, match=pattern):
        Atlas.grid((h, w), [good, (row, col)], radius)
    # Without a shape the same check happens at extract time against the field.
    lazy = Atlas([Chart(good, radius), Chart((row, col), radius)])
    with pytest.raises(ValueError, match=pattern):
        lazy.extract(torch.zeros(1, 1, h, w))


def test_extract_rejects_bad_fields():
    atlas = Atlas.grid((9, 9), [(4, 4)], 2)
    with pytest.raises(ValueError, match=r"4-D \(B, C, H, W\)"):
        atlas.extract(torch.zeros(9, 9))
    bad = torch.zeros(2, 1, 9, 9)
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN and 0 Inf"):
        atlas.extract(bad)
    bad[1, 0, 3, 3] = float("-inf")
    with pytest.raises(ValueError, match="0 NaN and 1 Inf"):
        atlas.extract(bad)
    with pytest.raises(ValueError, match=r"built for \(9, 9\)"):
        atlas.extract(torch.zeros(1, 1, 10, 9))
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        atlas.extract(np.zeros((1, 1, 9, 9)))
    # Huge but finite values overflow a float32 sum; they must still be accepted.
    big = torch.full((1, 1, 9, 9), 3e38)
    assert torch.equal(atlas.extract(big)[0, 0, 0], big[0, 0, 2:7, 2:7])


def test_extract_caches_are_autograd_safe():
    for manifold in ("plane", "sphere"):
        atlas = Atlas.grid(
            (16, 32), [(8, 8), (8, 0)] if manifold == "sphere" else [(8, 8)], 3, manifold=manifold
        )
        with torch.inference_mode():
            atlas.extract(torch.randn(1, 1, 16, 32))
        fields = torch.randn(2, 1, 16, 32, requires_grad=True)
        atlas.extract(fields).sum().backward()
        assert fields.grad is not None and fields.grad.abs().sum() > 0
        # A second dtype gets its own cached grid.
        assert atlas.extract(torch.randn(1, 1, 16, 32, dtype=torch.float64)).dtype == torch.float64


def test_local_coordinates_and_crop():
    xy = local_coordinates(3)
    assert xy.shape == (7, 7, 2)
    assert xy[0, 0].tolist() == [-3, 3]  # top-left
    assert xy[3, 3].tolist() == [0, 0]  # centre
    assert xy[6, 4].tolist() == [1, -3]  # bottom row, one right of centre
    p = torch.randn(2, 3, 4, 9, 9)
    assert torch.equal(crop(p, 2), p[..., 2:7, 2:7])
    assert torch.equal(crop(p, 4), p) and crop(p, 0).shape[-2:] == (1, 1)
    with pytest.raises(ValueError, match=r"out_radius must be in 0\.\.4"):
        crop(p, 5)
    with pytest.raises(ValueError, match="odd"):
        crop(torch.zeros(8, 8), 1)


# --------------------------------------------------------------------------- sphere extraction

H, W = 63, 126  # row 10 is at latitude 60 degrees, row 31 at the equator


def lat_lon_grid(h: int = H, w: int = W) -> tuple[torch.Tensor, torch.Tensor]:
    lat = torch.pi / 2 - (torch.arange(h, dtype=torch.float64) + 0.5) * torch.pi / h
    lon = (torch.arange(w, dtype=torch.float64) + 0.5) * 2 * torch.pi / w
    return torch.meshgrid(lat, lon, indexing="ij")


def test_sphere_row_latitudes():
    lat, _ = lat_lon_grid()
    assert math.isclose(math.degrees(lat[10, 0]), 60.0, abs_tol=1e-12)
    assert math.isclose(math.degrees(lat[31, 0]), 0.0, abs_tol=1e-12)


@pytest.mark.parametrize("row", [31, 10])
def test_sphere_chart_axes_point_east_and_north(row):
    r = 5
    lat, lon = lat_lon_grid()
    col = W // 4  # longitude about 90 degrees: far from the wrap, so lon is a smooth field
    atlas = Atlas.grid((H, W), [(row, col)], r, manifold="sphere")
    p_lon = atlas.extract(lon[None, None])[0, 0, 0]
    p_lat = atlas.extract(lat[None, None])[0, 0, 0]
    lat0, lon0 = lat[row, col].item(), lon[row, col].item()
    assert p_lon[r, r].item() == pytest.approx(lon0, abs=1e-12)
    assert p_lat[r, r].item() == pytest.approx(lat0, abs=1e-12)
    # x points east: longitude increases along the central row, antisymmetric about the centre.
    assert (p_lon[r].diff() > 0).all()
    assert torch.allclose(p_lon[r] - lon0, -(p_lon[r].flip(0) - lon0), atol=1e-12)
    # y points north: the central column stays on the meridian, latitude increases upward.
    assert (p_lon[:, r] - lon0).abs().max() < 1e-4
    assert (p_lat[:, r].flip(0).diff() > 0).all()
    # One pixel step is pi / H of tangent-plane distance at the tangent point.
    step = math.pi / H
    assert p_lat[r - 1, r].item() - lat0 == pytest.approx(math.atan(step), abs=1e-4)
    assert p_lon[r, r + 1].item() - lon0 == pytest.approx(
        math.atan2(step, math.cos(lat0)), abs=1e-4
    )
    # East-west mirror symmetry of latitude on the central row.
    assert torch.allclose(p_lat[r], p_lat[r].flip(0), atol=1e-12)
    if row == 31:  # on the equator the eastward great circle keeps latitude 0
        assert p_lat[r].abs().max() < 1e-4


def inverse_gnomonic(lat0: float, lon0: float, x: torch.Tensor, y: torch.Tensor):
    """Textbook inverse gnomonic projection (Snyder 1987, eqs. 20-14, 20-15)."""
    rho = torch.hypot(x, y)
    c = torch.atan(rho)
    safe = torch.where(rho > 0, rho, torch.ones_like(rho))
    lat = torch.asin(c.cos() * math.sin(lat0) + y * c.sin() * math.cos(lat0) / safe)
    lon = lon0 + torch.atan2(
        x * c.sin(), safe * math.cos(lat0) * c.cos() - y * math.sin(lat0) * c.sin()
    )
    return lat, lon


def test_sphere_patches_match_inverse_gnomonic_projection():
    r = 6
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, generator=gen, dtype=torch.float64)
    lat, lon = lat_lon_grid()

    def field(la, lo):  # a smooth (linear in R^3) function on the sphere
        return a[0] * la.cos() * lo.cos() + a[1] * la.cos() * lo.sin() + a[2] * la.sin()

    centers = [(10, 0), (31, 40), (45, 125), (20, 63)]
    atlas = Atlas.grid((H, W), centers, r, manifold="sphere")
    fields = torch.stack([field(lat, lon), -field(lat, lon)])[None].float()  # (1, 2, H, W)
    patches = atlas.extract(fields)
    assert patches.shape == (1, 4, 2, 13, 13) and patches.dtype == torch.float32
    xy = local_coordinates(r, dtype=torch.float64) * math.pi / H
    for k, (row, col) in enumerate(centers):
        plat, plon = inverse_gnomonic(lat[row, col].item(), lon[row, col].item(), *xy.unbind(-1))
        expected = field(plat, plon)
        err = (patches[0, k, 0].double() - expected).abs().max().item()
        assert err < 1e-3 * a.norm().item(), (k, err)
        assert torch.equal(patches[0, k, 1], -patches[0, k, 0])


def test_sphere_longitude_wraps():
    h, w, r = 16, 32, 4
    fields = torch.randn(
        2, 3, h, w, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    rolled = torch.roll(fields, shifts=w // 2, dims=-1)
    for col in (0, 1, w - 1):
        a = Atlas.grid((h, w), [(5, col), (12, col)], r, manifold="sphere")
        b = Atlas.grid(
            (h, w), [(5, (col + w // 2) % w), (12, (col + w // 2) % w)], r, manifold="sphere"
        )
        pa, pb = a.extract(fields), b.extract(rolled)
        assert (pa - pb).abs().max() < 1e-9
    # Across the date line a field that is continuous in longitude gives a smooth patch.
    _, lon = lat_lon_grid(h, w)
    patch = Atlas.grid((h, w), [(8, 0)], r, manifold="sphere").extract(lon.cos()[None, None])
    centre_row = patch[0, 0, 0, r]
    assert (centre_row.diff().abs() < 0.5).all()


def test_sphere_validation():
    with pytest.raises(ValueError, match=re.escape("chart 1 (center (16, 0)")):
        Atlas.grid((16, 32), [(3, 3), (16, 0)], 3, manifold="sphere")
    with pytest.raises(ValueError, match=re.escape("(3, 32)")):
        Atlas([Chart((3, 3), 3), Chart((3, 32), 3)], manifold="sphere").extract(
            torch.zeros(1, 1, 16, 32)
        )
    with pytest.raises(ValueError, match="too wide"):
        Atlas.grid((16, 32), [(8, 8)], 8, manifold="sphere")
    # Crossing the date line, or a pole, is fine.
    atlas = Atlas.grid((16, 32), [(0, 0), (15, 31)], 7, manifold="sphere")
    out = atlas.extract(torch.randn(3, 2, 16, 32))
    assert out.shape == (3, 2, 2, 15, 15) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="floating point"):
        atlas.extract(torch.zeros(1, 1, 16, 32, dtype=torch.long))
    # Constant fields stay constant: latitude is clamped at the poles (no zeros leak in) and
    # the wrapped longitude columns are real data.
    const = atlas.extract(torch.full((1, 1, 16, 32), 2.5))
    assert (const - 2.5).abs().max() < 1e-6


# --------------------------------------------------------------------------- act on patches


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_rotation_by_quarter_turns_equals_rot90(quarter_turns):
    patches = torch.rand(2, 3, 2, 21, 21, generator=torch.Generator().manual_seed(0))
    g = rotation(quarter_turns * math.pi / 2)
    out = act(g, patches)
    expected = torch.rot90(patches, quarter_turns, dims=(-2, -1))
    assert (out - expected).abs().max() < 1e-5
    if quarter_turns == 1:  # the contract's literal form, float32 all the way
        g32 = torch.linalg.matrix_exp(math.pi / 2 * J)
        assert (act(g32, patches) - expected).abs().max() < 1e-5
    # With the exact integer matrix in float64 the resampling is an exact permutation.
    g64 = torch.linalg.matrix_power(J.double().round(), quarter_turns)
    out64 = act(g64, patches.double())
    assert (out64 - expected.double()).abs().max() < 1e-12


def test_rotation_turns_counter_clockwise():
    # A bright pixel on the positive x axis ends up on the positive y axis (above the centre).
    patches = torch.zeros(1, 1, 1, 7, 7)
    patches[..., 3, 5] = 1.0  # (x, y) = (2, 0)
    out = act(rotation(math.pi / 2), patches)[0, 0, 0]
    assert out[1, 3].item() == pytest.approx(1.0, abs=1e-6)  # (x, y) = (0, 2)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_action_samples_at_inverse_point():
    # Bilinear interpolation is exact on linear fields, so g . f equals f(g^-1 p) exactly.
    r = 8
    xy = local_coordinates(r, dtype=torch.float64)
    coeff = torch.tensor([0.7, -1.3], dtype=torch.float64)
    f = (xy @ coeff)[None, None, None]
    g = torch.tensor([[1.5, 0.4], [-0.2, 0.8]], dtype=torch.float64)
    out = act(g, f)[0, 0, 0]
    expected = (xy @ torch.linalg.inv(g).T) @ coeff
    assert (interior(out, 4) - interior(expected, 4)).abs().max() < 1e-12
    # Scaling by 2 magnifies: the value at x = 2 is the old value at x = 1.
    zoom = act(2 * torch.eye(2, dtype=torch.float64), f)[0, 0, 0]
    assert zoom[r, r + 2].item() == pytest.approx(f[0, 0, 0, r, r + 1].item(), abs=1e-12)


@FAST
@given(seed=st.integers(0, 2**31 - 1))
def test_composition_of_actions(seed):
    gen = torch.Generator().manual_seed(seed)
    f = smooth_patches(2, 3, 1, 12, seed)
    g = random_generator_matrix(gen, 0.2)
    h = random_generator_matrix(gen, 0.2)
    lhs = interior(act(g, act(h, f)), 5)
    rhs = interior(act(g @ h, f), 5)
    assert ((lhs - rhs).norm() / rhs.norm()).item() < 1e-2


def test_composition_order_is_a_left_action():
    f = smooth_patches(2, 3, 1, 12, 0)
    g = rotation(0.3)
    h = torch.tensor([[1.0, 0.3], [0.0, 1.0]])
    lhs = interior(act(g, act(h, f)), 5)
    right = interior(act(g @ h, f), 5)
    wrong = interior(act(h @ g, f), 5)
    assert ((lhs - right).norm() / right.norm()).item() < 1e-2
    assert ((lhs - wrong).norm() / right.norm()).item() > 3e-2


@FAST
@given(
    entries=st.lists(st.floats(-3, 3, allow_nan=False), min_size=4, max_size=4),
    padding=st.sampled_from(["zeros", "border", "reflection"]),
    seed=st.integers(0, 1000),
)
def test_centre_pixel_is_fixed(entries, padding, seed):
    g = torch.tensor(entries).reshape(2, 2)
    assume(abs(torch.linalg.det(g.double()).item()) > 0.05)
    patches = torch.randn(2, 3, 2, 11, 11, generator=torch.Generator().manual_seed(seed))
    out = act(g, patches, padding_mode=padding)
    assert torch.allclose(out[..., 5, 5], patches[..., 5, 5], rtol=1e-6, atol=1e-6)


def test_rep_acts_on_channels():
    gen = torch.Generator().manual_seed(3)
    patches = torch.randn(2, 4, 2, 9, 9, generator=gen)
    rot = rotation(0.7)
    # Identity g: only the channels mix.
    out = act(torch.eye(2), patches, rep=rot)
    assert torch.allclose(out, torch.einsum("cd,bkdij->bkcij", rot, patches), atol=1e-6)
    # General g: resample, then mix channels.
    g = torch.tensor([[0.9, 0.3], [-0.2, 1.1]])
    out = act(g, patches, rep=rot)
    assert torch.allclose(out, torch.einsum("cd,bkdij->bkcij", rot, act(g, patches)), atol=1e-6)
    # A 2-channel vector field rotated by a quarter turn: rotate the arrows and the positions.
    quarter = rotation(math.pi / 2)
    vec = act(quarter, patches, rep=quarter)
    expected = torch.einsum("cd,bkdij->bkcij", quarter, torch.rot90(patches, 1, dims=(-2, -1)))
    assert (vec - expected).abs().max() < 1e-5
    # Per-chart reps broadcast over the batch.
    reps = torch.stack([rotation(0.1 * k) for k in range(4)])  # (K, C, C)
    out = act(g, patches, rep=reps)
    for k in range(4):
        assert torch.allclose(out[:, k], act(g, patches, rep=reps[k])[:, k], atol=1e-6)
    with pytest.raises(ValueError, match="rep must have shape"):
        act(g, patches, rep=torch.eye(3))
    with pytest.raises(ValueError, match="rep of shape"):
        act(g, patches, rep=torch.eye(2).expand(3, 2, 2))


@pytest.mark.parametrize("g_shape", [(2, 2), (1, 2, 2), (4, 2, 2), (3, 4, 2, 2), (3, 1, 2, 2)])
def test_g_broadcasting_matches_per_patch_action(g_shape):
    gen = torch.Generator().manual_seed(4)
    patches = torch.randn(3, 4, 2, 7, 7, generator=gen)
    g = torch.eye(2) + 0.3 * torch.randn(g_shape, generator=gen)
    out = act(g, patches)
    full = g.expand(3, 4, 2, 2)
    for b in range(3):
        for k in range(4):
            single = act(full[b, k], patches[b : b + 1, k : k + 1])
            assert torch.allclose(out[b, k], single[0, 0], atol=1e-6)


def test_act_rejects_bad_input():
    patches = torch.randn(2, 3, 1, 7, 7)
    with pytest.raises(ValueError, match="singular"):
        act(torch.tensor([[1.0, 2.0], [2.0, 4.0]]), patches)
    batch = torch.eye(2).repeat(2, 3, 1, 1)
    batch[1, 2] = 0.0
    with pytest.raises(ValueError, match=r"singular.*\(1, 2\)"):
        act(batch, patches)
    with pytest.raises(ValueError, match="NaN or Inf"):
        act(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), patches)
    with pytest.raises(ValueError, match=r"does not broadcast to \(2, 3, 2, 2\)"):
        act(torch.eye(2).repeat(4, 1, 1), patches)
    with pytest.raises(ValueError, match=r"does not broadcast"):
        act(torch.eye(2).repeat(5, 2, 3, 1, 1), patches)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 2\)"):
        act(torch.eye(3), patches)
    with pytest.raises(ValueError, match="5-D"):
        act(torch.eye(2), patches[0])
    with pytest.raises(ValueError, match="odd side"):
        act(torch.eye(2), torch.randn(2, 3, 1, 8, 8))
    with pytest.raises(ValueError, match="odd side"):
        act(torch.eye(2), torch.randn(2, 3, 1, 7, 9))
    with pytest.raises(ValueError, match="padding_mode"):
        act(torch.eye(2), patches, padding_mode="circular")


def test_gradients_flow_to_g_and_rep():
    patches = smooth_patches(2, 3, 2, 6, 1)
    g = (torch.eye(2) + 0.1 * torch.randn(2, 3, 2, 2)).requires_grad_(True)
    rep = rotation(0.2).requires_grad_(True)
    act(g, patches, rep=rep).square().sum().backward()
    for t in (g, rep):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 1e-3


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(5)
    g = torch.eye(2, dtype=torch.float64) + 0.2 * torch.randn(
        2, 2, 2, generator=gen, dtype=torch.float64
    )
    patches = torch.randn(1, 2, 2, 5, 5, generator=gen, dtype=torch.float64)
    rep = torch.randn(2, 2, generator=gen, dtype=torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (g, patches, rep))
    # Full Jacobian w.r.t. g and rep, seen through 6 random output projections (each output
    # costs one backward pass, and tiny ops are slow on a busy 2-core machine).
    proj = torch.randn(100, 6, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, c: act(a, patches.detach(), rep=c).reshape(-1) @ proj, (inputs[0], inputs[2])
    )
    # All three inputs, random projections of inputs and outputs.
    assert torch.autograd.gradcheck(lambda a, p, c: act(a, p, rep=c), inputs, fast_mode=True)


# --------------------------------------------------------------------------- act on vectors


def test_act_vectors():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(5, 7, 4, generator=gen)
    g = torch.randn(4, 4, generator=gen)
    h = torch.randn(4, 4, generator=gen)
    assert torch.allclose(act_vectors(g, x), torch.einsum("ij,npj->npi", g, x), atol=1e-5)
    assert torch.allclose(act_vectors(g, act_vectors(h, x)), act_vectors(g @ h, x), atol=1e-4)
    batched = torch.randn(5, 4, 4, generator=gen)
    out = act_vectors(batched, x)
    for n in range(5):
        assert torch.allclose(out[n], x[n] @ batched[n].T, atol=1e-5)
    assert act_vectors(g.double(), x).dtype == torch.float64
    with pytest.raises(ValueError, match="d = 4"):
        act_vectors(torch.eye(3), x)
    with pytest.raises(ValueError, match="B = 3"):
        act_vectors(torch.eye(4).repeat(3, 1, 1), x)
