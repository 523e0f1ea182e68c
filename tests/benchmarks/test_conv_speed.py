"""Benchmark: forward + backward of EquivariantConv2d against nn.Conv2d of the same shape. Run with

    .venv/bin/pytest tests/benchmarks/test_conv_speed.py -m benchmark --benchmark-enable -s

A 16 -> 16 channel 5x5 layer on (32, 16, 64, 64) float32 inputs, equivariant (8*S + 4*V, O(2)) vs
nn.Conv2d; the equivariant layer adds one small kernel contraction per call, so it must stay within
3x of the plain layer (plus 50 ms for that contraction on a loaded machine).
"""

from __future__ import annotations

import time

import pytest
import torch

from atlasd import DiscoveredGroup
from atlasd.downstream import EquivariantConv2d

pytestmark = pytest.mark.benchmark


def _o2() -> DiscoveredGroup:
    flip = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    rotation = torch.tensor([[[0.0, -1.0], [1.0, 0.0]]], dtype=torch.float64)
    return DiscoveredGroup(rotation, cosets=torch.stack([torch.eye(2, dtype=torch.float64), flip]))


def test_speed_against_nn_conv2d():
    gen = torch.Generator().manual_seed(0)
    eq = EquivariantConv2d(_o2(), 16, 16, 5, in_rep="8*S + 4*V", out_rep="8*S + 4*V", generator=gen)
    plain = torch.nn.Conv2d(16, 16, 5, padding=2)
    x = torch.randn(32, 16, 64, 64, generator=gen)
    times = {}
    for name, layer in (("equivariant", eq), ("nn.Conv2d", plain)):
        layer(x).sum().backward()  # warm up
        start = time.perf_counter()
        for _ in range(3):
            layer(x).square().mean().backward()
        times[name] = (time.perf_counter() - start) / 3
    print(f"forward+backward per call: {times}")
    assert times["equivariant"] < 3 * times["nn.Conv2d"] + 0.05
