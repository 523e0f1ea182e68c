"""Gauge-equivariant convolution on the equirectangular sphere grid: gauge equivariance, sphere
geometry (positions, transports, poles) and agreement with the planar layer at the equator."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from equivariance import assert_equivariant, equivariance_errors
from known_groups import gl2, so2

from atlasd import DiscoveredGroup
from atlasd.downstream.equivariant import GaugeEquivariantConv, sphere_neighbourhood

F64 = torch.float64
# a discovered-looking rotation generator (AtlasD's heat run, REFERENCE_VALUES.md)
HEAT_LIKE = torch.tensor([[[-0.026, -0.374], [0.425, 0.021]]], dtype=F64)


def gauge_transform(rep, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Express fields x (B, C, H, W) in frames rotated by phi (H, W): rho(R(-phi)) x."""
    c, s = torch.cos(-phi), torch.sin(-phi)
    R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    return torch.einsum("hwij,bjhw->bihw", rep.element(R), x)


@pytest.mark.parametrize(("spec_in", "spec_out"), [("2*S + 2*V", "S + 2*V"), ("V", "S + V*V")])
def test_gauge_equivariance_is_exact(spec_in, spec_out):
    H, W = 12, 24
    gen = torch.Generator().manual_seed(0)
    layer = GaugeEquivariantConv(spec_in, spec_out, 5, (H, W), dtype=F64, generator=gen)
    with torch.no_grad():
        if layer.bias is not None:
            layer.bias.normal_(generator=gen)
    phi = 2 * math.pi * torch.rand(H, W, generator=gen, dtype=F64)
    moved = GaugeEquivariantConv(spec_in, spec_out, 5, (H, W), gauge=phi, dtype=F64)
    moved.load_state_dict(layer.state_dict())
    x = torch.randn(2, layer.rep_in.dim, H, W, generator=gen, dtype=F64)
    # the element is the gauge field phi: it acts on inputs and outputs, and the layer seen in
    # the new gauge is the same weights on rotated frames
    gauge = {
        "act_in": lambda p, t: gauge_transform(layer.rep_in, t, p),
        "act_out": lambda p, t: gauge_transform(layer.rep_out, t, p),
        "elements": [phi],
    }
    assert_equivariant(layer, x, transformed=lambda p: moved, tol=1e-12, **gauge)
    # a different gauge without transforming the input gives a different answer
    [(_, err)] = equivariance_errors(
        layer,
        x,
        act_in=lambda p, t: t,
        act_out=gauge["act_out"],
        elements=[phi],
        transformed=lambda p: moved,
    )
    assert err > 0.1


def test_rotations_about_the_axis_commute():
    H, W = 10, 20
    layer = GaugeEquivariantConv("S + V", "S + V", 3, (H, W), dtype=F64)
    x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(1), dtype=F64)
    # the element is a rotation by 7 grid steps of longitude
    roll = {"act_in": lambda k, t: t.roll(k, -1), "act_out": lambda k, t: t.roll(k, -1)}
    assert_equivariant(layer, x, elements=[7, 13], tol=1e-13, **roll)


def test_agrees_with_the_planar_layer_at_the_equator():
    """Near the equator transports vanish and neighbours sit at integer offsets: the layer
    matches F.conv2d with its planar kernel; measured 3.2e-2 (H=16, latitude 5.6 degrees),
    7e-3 (H=32, 2.8) and 1.4e-3 (H=64, 1.4) relative error on the row next to the equator."""
    errors = []
    for H in (16, 32):
        W = 2 * H
        layer = GaugeEquivariantConv(
            "2*S + 2*V", "S + 2*V", 5, (H, W), dtype=F64, generator=torch.Generator().manual_seed(0)
        )
        rows, cols = torch.meshgrid(
            torch.arange(H, dtype=F64), torch.arange(W, dtype=F64), indexing="ij"
        )
        x = torch.stack(
            [torch.sin(2 * math.pi * (k + 1) * cols / W + 0.2 * rows + k) for k in range(6)]
        )
        x = x[None]
        with torch.no_grad():
            y = layer(x)
            padded = torch.cat([x[..., -2:], x, x[..., :2]], dim=-1)  # longitude wraps
            planar = F.conv2d(padded, layer.planar_kernel(), layer.bias_vector(), padding=(2, 0))
        row = H // 2 - 1
        errors.append(float((y - planar)[..., row, :].norm() / planar[..., row, :].norm()))
        far = H // 4  # latitude ~ 45 degrees: the sphere's metric matters there
        assert float((y - planar)[..., far, :].norm() / planar[..., far, :].norm()) > 0.1
    assert errors[0] < 0.05 and errors[1] < 0.012 and errors[1] < errors[0] / 3


def test_scalar_kernel_count():
    layer = GaugeEquivariantConv("S", "S", 5, (8, 16), bias=False)
    assert layer.n_free_parameters == 3  # centre + rings at 1 and 2, as the planar so(2) layer
    assert GaugeEquivariantConv("V", "V", 5, (8, 16), bias=False).n_free_parameters == 2 + 4 * 2


def test_neighbourhood_geometry():
    H, W, r = 16, 32, 2
    nb = sphere_neighbourhood((H, W), r)
    pos, mask, transport = nb["position"][:, 0], nb["mask"][:, 0], nb["transport"][:, 0]
    dist = pos.norm(dim=-1)
    assert bool((dist[mask] <= r + 0.5 + 1e-9).all())
    # equator: 21 neighbours, at nearly integer offsets (on a fine grid), nearly untransported
    row = H // 2 - 1
    assert int(mask[row].sum()) == 21
    fine = sphere_neighbourhood((64, 128), r)
    p, m = fine["position"][31, 0], fine["mask"][31, 0]
    assert float((p[m] - p[m].round()).abs().max()) < 0.02
    assert float(fine["transport"][31, 0][m].abs().max()) < 0.02
    # same-latitude neighbours: transport angle 2 atan(tan(dlon / 2) sin(lat))
    lat = math.pi / 2 - (torch.arange(H, dtype=F64) + 0.5) * math.pi / H
    offsets = nb["offsets"]
    same_row = (torch.arange(offsets.numel()) // (offsets.numel() // (2 * r + 1))) == r
    for i in (1, 4, 11):
        dlon = offsets[same_row].to(F64) * 2 * math.pi / W
        expected = 2 * torch.atan(torch.tan(dlon / 2) * math.sin(lat[i]))
        assert torch.allclose(transport[i][same_row].abs(), expected.abs(), atol=1e-12)
    # across the north pole: row -1 is row 0 half way round
    idx = nb["index"]
    top = idx[0, 0].reshape(2 * r + 1, -1)
    c = top.shape[1] // 2
    assert int(top[r - 1, c]) == 0 * W + W // 2


def test_discovered_group_check_and_errors():
    noisy = DiscoveredGroup(HEAT_LIKE)
    GaugeEquivariantConv("S", "S", 3, (8, 16), group=noisy)  # close enough to so(2)
    with pytest.raises(ValueError, match="so\\(2\\)"):
        GaugeEquivariantConv("S", "S", 3, (8, 16), group=DiscoveredGroup(gl2()))
    with pytest.raises(ValueError, match="W even"):
        GaugeEquivariantConv("S", "S", 3, (8, 15))
    with pytest.raises(ValueError, match="odd"):
        GaugeEquivariantConv("S", "S", 4, (8, 16))
    with pytest.raises(ValueError, match="gauge must be"):
        GaugeEquivariantConv("S", "S", 3, (8, 16), gauge=torch.zeros(8, 8))
    layer = GaugeEquivariantConv("S + V", "S", 3, (8, 16), group=DiscoveredGroup(so2()))
    with pytest.raises(ValueError, match=r"\(B, 3, 8, 16\)"):
        layer(torch.zeros(1, 3, 8, 8))
