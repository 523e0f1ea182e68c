"""Self-check of the geometry conventions on this machine (``atlasd check``).

Measures, on random smooth fields, the three properties docs/conventions.md promises: rotation by
exp(pi/2 J) equals torch.rot90 counter-clockwise, the action composes (g.(h.f) = (gh).f up to
interpolation error) and the chart centre is a fixed point. Returns numbers, not booleans, so a
user can see how close to the tolerances a build is.
"""

from __future__ import annotations

import math

import torch

from atlasd.atlas import Atlas, act
from atlasd.lie import sample_group

__all__ = ["check_conventions", "smooth_fields"]

_J = torch.tensor([[0.0, -1.0], [1.0, 0.0]])


def smooth_fields(
    n: int, size: int, channels: int = 1, n_modes: int = 6, seed: int = 0, cycles: float = 1.0
) -> torch.Tensor:
    """Random band-limited fields: sums of ``n_modes`` plane waves of about ``cycles`` periods
    across the field, scaled to max |f| = 1 per field. Returns (n, channels, size, size) float32,
    seeded."""
    gen = torch.Generator().manual_seed(seed)
    coords = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    k = torch.randn(n, channels, n_modes, 2, generator=gen) * (2 * math.pi / size) * cycles
    phase = torch.rand(n, channels, n_modes, 1, 1, generator=gen) * 2 * math.pi
    amp = torch.randn(n, channels, n_modes, 1, 1, generator=gen)
    arg = k[..., 0, None, None] * rows + k[..., 1, None, None] * cols + phase
    f = (amp * torch.cos(arg)).sum(2)
    return f / f.flatten(1).abs().amax(1).clamp_min(1e-12)[:, None, None, None]


def check_conventions(seed: int = 0, radius: int = 10, n: int = 8) -> dict[str, float]:
    """Measure the action's conventions on ``n`` random smooth fields.

    Returns a dict of maximum errors: ``rot90_error`` (absolute, float32 data of unit scale),
    ``composition_error`` (relative, interior of the patch, g and h near the identity) and
    ``centre_error`` (absolute, for random invertible g including scalings and shears).
    """
    size = 4 * radius + 1
    # wavelengths of ~80 pixels: smooth at the pixel scale, where bilinear resampling is accurate
    fields = smooth_fields(n, size, seed=seed, cycles=0.5)
    atlas = Atlas.grid(shape=(size, size), centers=[(size // 2, size // 2)], radius=radius)
    patches = atlas.extract(fields)  # (n, 1, 1, h, w)

    rot = torch.linalg.matrix_exp(math.pi / 2 * _J)
    rot90 = float((act(rot, patches) - torch.rot90(patches, 1, dims=(-2, -1))).abs().max())

    gen = torch.Generator().manual_seed(seed + 1)
    algebra = torch.eye(4).reshape(4, 2, 2)  # gl(2): rotations, scalings and shears
    g = sample_group(algebra, (n, 1), scale=0.15, generator=gen)
    h = sample_group(algebra, (n, 1), scale=0.15, generator=gen)
    lhs = act(g, act(h, patches))
    rhs = act(g @ h, patches)
    m = radius // 2  # keep clear of the rim where zero padding enters
    inner = (slice(None),) * 3 + (slice(radius - m, radius + m + 1),) * 2
    composition = float((lhs - rhs)[inner].norm() / rhs[inner].norm())

    wild = sample_group(algebra, (n, 1), scale=0.8, generator=gen)
    centre = float((act(wild, patches) - patches)[..., radius, radius].abs().max())
    return {"rot90_error": rot90, "composition_error": composition, "centre_error": centre}
