"""AtlasD's heat-equation task, re-implemented.

The task (Bhat et al., "AtlasD: Automatic Local Symmetry Discovery", ICML 2025, section on partial
differential equations): a scalar field on a square grid diffuses for a fixed number of explicit
time steps around a rectangular obstacle that is held at a constant temperature.  The map
``initial field -> field after the steps`` is, away from the obstacle and the border, equivariant
to rotations and reflections of local patches, but not globally (the obstacle and the border break
the global symmetry).  Local symmetry discovery should therefore find so(2) plus a reflection
coset.

What follows matches the published AtlasD code (``experiment_pde.py`` of Rose-STL-Lab/ATLAS),
re-written here from its description:

Initial condition
    ``x(u, v) = c sin(a u + b) + f cos(d v + e)`` with ``u = row / size`` and ``v = col / size``
    (both in ``[0, 1)``), one draw per sample of

    - ``a ~ 15 + 6 N(0, 1)``, ``b ~ 3 N(0, 1)``, ``c ~ (|N(0, 1)| + 1) / 2``
    - ``d ~ 12 + 5 N(0, 1)``, ``e ~ 3 N(0, 1)``, ``f ~ (|N(0, 1)| + 1) / 2``

    so the sine term varies down the rows and the cosine term across the columns.  Our choice:
    the draws come, in the order a, b, c, d, e, f, from one seeded ``torch.Generator`` in float64
    (AtlasD draws float32 on its device from the global generator, so the samples are equal in
    distribution, not bit for bit).

Obstacle
    The pixels with ``0.1 < row / size < 0.3`` and ``0.2 < col / size < 0.5`` (strict), i.e. rows
    13..38 and columns 26..63 of the 128 x 128 grid (the upper left part of the field), are held at
    ``sqrt(2)``: they are set in the initial field ``x`` and reset after every step, so they read
    ``sqrt(2)`` in both ``x`` and ``y``.

Border
    Dirichlet: the field is padded every step by a ring of two ghost pixels held at ``sqrt(2)``
    (the obstacle's value), so the border behaves like the obstacle.

Operator and time step
    ``du/dt = alpha * laplacian(u)`` with ``alpha = 1``, ``dx = 0.1``, ``dt = 0.01``, 50 forward
    Euler steps.  AtlasD takes each second derivative as the central first difference applied
    twice, ``u_xx ~ (u[j + 2] - 2 u[j] + u[j - 2]) / (2 dx)^2``: a "wide" five-point stencil
    that reaches two pixels out.  With ``alpha dt / dx^2 = 1`` one step is exactly::

        u_new[i, j] = (u[i - 2, j] + u[i + 2, j] + u[i, j - 2] + u[i, j + 2]) / 4

    i.e. one pixel squared of diffusion per step (diffusion length ``sqrt(2 * 50) = 10`` pixels
    over the 50 steps).  We use the same operator.  Consequences, documented rather than hidden:

    - Stability.  A Fourier mode ``exp(i (tx x + ty y))`` is multiplied per step by
      ``G = 1 - (alpha dt / dx^2) (sin^2 tx + sin^2 ty)`` (see :func:`amplification_factor`).
      We report the CFL number ``nu = max |1 - G| / 2`` (:func:`heat_cfl_number`); the scheme is
      stable for ``nu <= 1``.  AtlasD's isotropic setting has ``nu = 1`` exactly, the stability
      limit (equivalently the classical ``r = alpha dt / (2 dx)^2 = 1/4`` with its 2-D limit 1/4):
      no mode grows, but the period-4 checkerboard mode ``tx = ty = pi / 2`` has ``G = -1`` and
      does not decay.  Smooth initial conditions barely excite it.
    - The update is an average of four pixels two apart, so in the isotropic case the four
      sub-lattices (row parity x column parity) evolve independently; the maximum principle holds
      (every output lies between the extremes of the input and ``sqrt(2)``).
    - The discrete operator is rotation invariant only to second order:
      ``sin^2 tx + sin^2 ty = |t|^2 - (tx^4 + ty^4) / 3 + ...``; the fourth-order term is
      anisotropic.  It is exactly invariant under the dihedral group of the grid (rot90 and
      reflections); our sums are ordered so that this holds bit for bit in floating point.

Anisotropy (our extension, for a symmetry-broken version of the task)
    ``anisotropy`` replaces ``alpha`` by a symmetric positive semi-definite diffusion tensor
    ``K`` written in the project's chart coordinates (x = column to the right, y = row upward):
    ``du/dt = div(K grad u) = K_xx u_xx + 2 K_xy u_xy + K_yy u_yy``, each derivative taken as
    AtlasD's central difference (applied twice, so ``u_xy`` uses the four diagonal neighbours).
    A pair ``(kx, ky)`` means ``diag(kx, ky)``.  Stability needs ``K_xx + K_yy + 2 |K_xy| <= 2``
    (``nu <= 1``); ``(1.5, 0.5)`` keeps the mean diffusivity of the isotropic task and breaks
    rotations (but keeps the reflections x -> -x and y -> -y).

Atlases (:func:`heat_atlas`)
    Chart centres are fractions ``(row_frac, col_frac)`` of the field, converted with
    ``int(frac * H)``, ``int(frac * W)`` (truncation, as in AtlasD).

    - Atlas 1: 19 charts, input radius 14, output radius 10: a 3 x 3 block of centres at
      row and column fractions {0.5, 0.675, 0.85} x {0.15, 0.325, 0.5}, plus two rows of five at
      row fractions {0.675, 0.85} and column fractions {0.15, 0.325, 0.5, 0.675, 0.85}
      (the upper left part, where the obstacle sits, is left out).
    - Atlas 2: 3 charts, input radius 26, output radius 20, centres (0.65, 0.3), (0.675, 0.625),
      (0.35, 0.75).

    AtlasD does not check anything about the charts; its centres were placed by hand so that,
    on the 128 x 128 grid, every chart lies inside the field and no chart (at its input radius)
    touches the obstacle.  We check both and raise ``ValueError`` otherwise (for other sizes).

Ground truth (:func:`heat_ground_truth`): so(2), ``[[0, -1], [1, 0]]``, and the cosets
{identity, ``diag(1, -1)``}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import TensorDataset

from atlasd.checks import check_fraction, check_int, check_shape
from atlasd.datasets.base import TaskSpec, not_set_up
from atlasd.datasets.splits import SplitsDataModule

__all__ = [
    "HEAT_ALPHA",
    "HEAT_DT",
    "HEAT_DX",
    "OBSTACLE_COL_FRACTION",
    "OBSTACLE_ROW_FRACTION",
    "OBSTACLE_VALUE",
    "HeatAtlasSpec",
    "HeatDataModule",
    "amplification_factor",
    "build_heat_atlas",
    "generate_heat",
    "heat_atlas",
    "heat_cfl_number",
    "heat_ground_truth",
    "heat_obstacle_bounds",
    "heat_obstacle_mask",
    "heat_solve",
]

#: Value at which the obstacle and the ghost ring around the field are held.
OBSTACLE_VALUE: float = math.sqrt(2.0)
#: Open interval of ``row / H`` covered by the obstacle.
OBSTACLE_ROW_FRACTION: tuple[float, float] = (0.1, 0.3)
#: Open interval of ``col / W`` covered by the obstacle.
OBSTACLE_COL_FRACTION: tuple[float, float] = (0.2, 0.5)
#: Diffusion coefficient, grid spacing and time step of AtlasD's solver.
HEAT_ALPHA: float = 1.0
HEAT_DX: float = 0.1
HEAT_DT: float = 0.01

# alpha * dt / dx^2 for the central-difference-applied-twice operator; 1.0 for AtlasD.
_STEP_SCALE: float = round(HEAT_ALPHA * HEAT_DT / HEAT_DX**2, 12)  # exactly 1.0, not 1 - 2e-16
# Samples evolved together; about 0.5 MiB of float32 per block fits the L2 cache (measured fastest
# of 8 / 32 / 128 / 512 on the 2-core development machine).
_CHUNK: int = 32
_MIN_SIZE: int = 8
_STABILITY_TOL: float = 1e-9

# Chart centre fractions (row_frac, col_frac) and radii of AtlasD's two heat atlases.
_ATLAS1_FRACTIONS: tuple[tuple[float, float], ...] = (
    (0.5, 0.15), (0.675, 0.15), (0.85, 0.15),
    (0.5, 0.325), (0.675, 0.325), (0.85, 0.325),
    (0.5, 0.5), (0.675, 0.5), (0.85, 0.5),
    (0.15, 0.675), (0.325, 0.675), (0.5, 0.675), (0.675, 0.675), (0.85, 0.675),
    (0.15, 0.85), (0.325, 0.85), (0.5, 0.85), (0.675, 0.85), (0.85, 0.85),
)  # fmt: skip
_ATLAS2_FRACTIONS: tuple[tuple[float, float], ...] = ((0.65, 0.3), (0.675, 0.625), (0.35, 0.75))
_ATLASES: dict[int, tuple[tuple[tuple[float, float], ...], int, int]] = {
    1: (_ATLAS1_FRACTIONS, 14, 10),
    2: (_ATLAS2_FRACTIONS, 26, 20),
}


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _diffusion_tensor(anisotropy: Any) -> torch.Tensor:
    """The 2 x 2 float64 diffusion tensor in (x, y) chart coordinates; validated."""
    if anisotropy is None:
        return torch.eye(2, dtype=torch.float64)
    try:
        k = torch.as_tensor(anisotropy, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"anisotropy must be None, a pair (kx, ky) or a 2x2 tensor, got {anisotropy!r}"
        ) from err
    if k.shape == (2,):
        k = torch.diag(k)
    elif k.shape != (2, 2):
        raise ValueError(
            f"anisotropy must be None, a pair (kx, ky) or a 2x2 tensor, got shape {tuple(k.shape)}"
        )
    if not torch.isfinite(k).all():
        raise ValueError(f"anisotropy has NaN or Inf entries: {k.tolist()}")
    scale = max(1.0, float(k.abs().max()))
    if abs(float(k[0, 1] - k[1, 0])) > 1e-12 * scale:
        raise ValueError(f"anisotropy tensor must be symmetric, got {k.tolist()}")
    k = 0.5 * (k + k.T)
    if float(torch.linalg.eigvalsh(k).min()) < -1e-12 * scale:
        raise ValueError(
            "anisotropy tensor must be positive semi-definite (negative diffusion is ill-posed), "
            f"got {k.tolist()}"
        )
    nu = _cfl(k)
    if nu > 1.0 + _STABILITY_TOL:
        raise ValueError(
            f"anisotropy {k.tolist()} makes the explicit scheme unstable: CFL number {nu:.4g} > 1 "
            "(need K_xx + K_yy + 2|K_xy| <= 2 with AtlasD's alpha*dt/dx^2 = 1)"
        )
    return k


def _cfl(k: torch.Tensor) -> float:
    # max over sin-vectors s in [-1, 1]^2 of s^T K s sits at a corner of the box.
    return _STEP_SCALE * float(k[0, 0] + k[1, 1] + 2.0 * k[0, 1].abs()) / 2.0


def heat_cfl_number(anisotropy: Any = None) -> float:
    """CFL number ``nu = max_t |1 - G(t)| / 2`` of the explicit scheme; stable iff ``nu <= 1``.

    ``1.0`` for AtlasD's isotropic setting (exactly at the limit).  Raises ``ValueError`` for an
    invalid or unstable ``anisotropy``.
    """
    return _cfl(_diffusion_tensor(anisotropy))


def amplification_factor(theta_x: float, theta_y: float, anisotropy: Any = None) -> float:
    """Exact per-step factor ``G`` of the Fourier mode ``exp(i (theta_x x + theta_y y))``.

    ``theta_x``, ``theta_y`` are wave numbers in radians per pixel along the chart axes
    (x = column to the right, y = row upward).  On the infinite lattice (or far enough from the
    border and the obstacle: ``2 * steps`` pixels) the mode's amplitude after ``s`` steps is
    ``G ** s`` times the initial one::

        G = 1 - (alpha dt / dx^2) * s^T K s,   s = (sin theta_x, sin theta_y)
    """
    k = _diffusion_tensor(anisotropy)
    s = torch.tensor([math.sin(theta_x), math.sin(theta_y)], dtype=torch.float64)
    return 1.0 - _STEP_SCALE * float(s @ k @ s)


# --------------------------------------------------------------------------------------------
# Obstacle
# --------------------------------------------------------------------------------------------


def _open_interval(lo: float, hi: float, n: int) -> tuple[int, int]:
    idx = torch.arange(n, dtype=torch.float64) / n
    inside = ((idx > lo) & (idx < hi)).nonzero().flatten()
    if inside.numel() == 0:
        return 0, 0
    return int(inside[0]), int(inside[-1]) + 1


def heat_obstacle_bounds(shape: Sequence[int] = (128, 128)) -> tuple[int, int, int, int]:
    """Half-open pixel bounds ``(row0, row1, col0, col1)`` of the obstacle on an H x W field.

    ``(13, 39, 26, 64)`` on 128 x 128.
    """
    h, w = check_shape(shape)
    r0, r1 = _open_interval(*OBSTACLE_ROW_FRACTION, h)
    c0, c1 = _open_interval(*OBSTACLE_COL_FRACTION, w)
    return r0, r1, c0, c1


def heat_obstacle_mask(shape: Sequence[int] = (128, 128)) -> torch.Tensor:
    """Boolean (H, W) mask of the obstacle (True where the field is held at ``sqrt(2)``)."""
    h, w = check_shape(shape)
    r0, r1, c0, c1 = heat_obstacle_bounds((h, w))
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[r0:r1, c0:c1] = True
    return mask


# --------------------------------------------------------------------------------------------
# Solver
# --------------------------------------------------------------------------------------------


def _evolve(block: torch.Tensor, steps: int, k: torch.Tensor, obstacle: Any) -> torch.Tensor:
    """Run ``steps`` explicit steps on a (B, H, W) block; returns a new (B, H, W) tensor."""
    b, h, w = block.shape
    # Two padded buffers (ping-pong); the two-pixel ghost ring stays at sqrt(2) throughout.
    cur = torch.full((b, h + 4, w + 4), OBSTACLE_VALUE, dtype=block.dtype, device=block.device)
    nxt = cur.clone()
    cur[:, 2:-2, 2:-2] = block
    if obstacle is not None:
        r0, r1, c0, c1 = obstacle
        cur[:, 2 + r0 : 2 + r1, 2 + c0 : 2 + c1] = OBSTACLE_VALUE
    if steps == 0:
        return cur[:, 2:-2, 2:-2].clone()

    kxx, kxy, kyy = float(k[0, 0]), float(k[0, 1]), float(k[1, 1])
    # Stencil weights (see the module docstring): row neighbours two apart carry K_yy / 4, column
    # neighbours K_xx / 4, the centre 1 - (K_xx + K_yy) / 2 and, with y pointing up, the diagonal
    # pairs (up-right, down-left) and (up-left, down-right) carry +K_xy / 2 and -K_xy / 2.
    w_row = _STEP_SCALE * kyy / 4.0
    w_col = _STEP_SCALE * kxx / 4.0
    w_ctr = 1.0 - _STEP_SCALE * (kxx + kyy) / 2.0
    w_diag = _STEP_SCALE * kxy / 2.0
    isotropic = kxx == kyy and kxy == 0.0

    for _ in range(steps):
        c = cur
        out = nxt[:, 2:-2, 2:-2]
        up2, down2 = c[:, 0:-4, 2:-2], c[:, 4:, 2:-2]
        left2, right2 = c[:, 2:-2, 0:-4], c[:, 2:-2, 4:]
        centre = c[:, 2:-2, 2:-2]
        if isotropic:
            # (up + down) + (left + right): rot90 swaps the two pairs, and IEEE addition is
            # commutative, so the result is exactly rot90- and reflection-equivariant.
            torch.add(up2, down2, out=out)
            out.add_(left2 + right2).mul_(w_row)
        else:
            torch.mul(up2 + down2, w_row, out=out)
            out.add_(left2 + right2, alpha=w_col)
            if w_diag != 0.0:
                up_right, down_left = c[:, 1:-3, 3:-1], c[:, 3:-1, 1:-3]
                up_left, down_right = c[:, 1:-3, 1:-3], c[:, 3:-1, 3:-1]
                out.add_((up_right + down_left) - (up_left + down_right), alpha=w_diag)
        if w_ctr != 0.0:
            out.add_(centre, alpha=w_ctr)
        if obstacle is not None:
            out[:, r0:r1, c0:c1] = OBSTACLE_VALUE
        cur, nxt = nxt, cur
    return cur[:, 2:-2, 2:-2].clone()


def heat_solve(
    x0: torch.Tensor,
    *,
    steps: int = 50,
    anisotropy: Any = None,
    obstacle: bool = True,
) -> torch.Tensor:
    """Evolve fields ``x0`` (..., H, W) by ``steps`` explicit heat-equation steps.

    Uses AtlasD's operator and constants (module docstring): Dirichlet border at ``sqrt(2)``,
    and, when ``obstacle`` is True, the rectangular obstacle held at ``sqrt(2)`` (it is also
    imposed on the initial field).  ``x0`` is not modified; the result has its shape and dtype.
    Batched over all leading dimensions (in blocks of a few samples, no per-sample loop).
    """
    if not isinstance(x0, torch.Tensor):
        raise ValueError(f"x0 must be a torch.Tensor, got {type(x0).__name__}")
    if not x0.is_floating_point():
        raise ValueError(f"x0 must have a floating dtype, got {x0.dtype}")
    if x0.dim() < 2:
        raise ValueError(f"x0 must have shape (..., H, W), got {tuple(x0.shape)}")
    h, w = x0.shape[-2:]
    if h < 5 or w < 5:
        raise ValueError(f"field must be at least 5 x 5 for the 5-pixel stencil, got {h} x {w}")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or Inf")
    steps = check_int("steps", steps, 0)
    k = _diffusion_tensor(anisotropy)
    bounds = heat_obstacle_bounds((h, w)) if obstacle else None

    flat = x0.detach().reshape(-1, h, w)
    out = torch.empty(flat.shape, dtype=x0.dtype, device=flat.device)
    for start in range(0, flat.shape[0], _CHUNK):
        block = flat[start : start + _CHUNK]
        out[start : start + _CHUNK] = _evolve(block, steps, k, bounds)
    return out.reshape(x0.shape)


def _initial_fields(n: int, size: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """AtlasD's random initial fields (n, size, size), obstacle not yet imposed.

    The two separable terms are evaluated in float64 and summed in ``dtype`` (no float64 copy of
    the whole data set: 10,000 samples at 128 x 128 would need 1.3 GB for it).
    """
    gen = torch.Generator().manual_seed(seed)

    def normal() -> torch.Tensor:
        return torch.randn(n, 1, generator=gen, dtype=torch.float64)

    a = 15.0 + 6.0 * normal()
    b = 3.0 * normal()
    c = (normal().abs() + 1.0) / 2.0
    d = 12.0 + 5.0 * normal()
    e = 3.0 * normal()
    f = (normal().abs() + 1.0) / 2.0
    t = torch.arange(size, dtype=torch.float64) / size  # u for rows, v for columns
    rows = c * torch.sin(a * t + b)  # (n, size): varies down the rows
    cols = f * torch.cos(d * t + e)  # (n, size): varies across the columns
    return rows.to(dtype)[:, :, None] + cols.to(dtype)[:, None, :]


def generate_heat(
    n: int,
    *,
    size: int = 128,
    steps: int = 50,
    seed: int = 0,
    anisotropy: Any = None,
    obstacle: bool = True,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``n`` samples of AtlasD's heat task.

    Returns ``(x, y)``, both (n, 1, size, size) of ``dtype``: ``x`` the random initial field
    ``c sin(a u + b) + f cos(d v + e)`` with the obstacle set to ``sqrt(2)``, ``y`` the field
    after ``steps`` explicit steps (:func:`heat_solve`).  The same ``seed`` gives bit-identical
    data.  ``obstacle=False`` removes the obstacle (the border stays at ``sqrt(2)``), which makes
    the whole map exactly equivariant to the dihedral group of the square grid.
    """
    n = check_int("n", n, 1)
    size = check_int("size", size, _MIN_SIZE)
    steps = check_int("steps", steps, 0)
    seed = check_int("seed", seed)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
    _diffusion_tensor(anisotropy)  # validate before spending time

    x = _initial_fields(n, size, seed, dtype)
    if obstacle:
        r0, r1, c0, c1 = heat_obstacle_bounds((size, size))
        x[:, r0:r1, c0:c1] = OBSTACLE_VALUE
    y = heat_solve(x, steps=steps, anisotropy=anisotropy, obstacle=obstacle)
    return x.unsqueeze(1), y.unsqueeze(1)


# --------------------------------------------------------------------------------------------
# Atlases and ground truth
# --------------------------------------------------------------------------------------------


@dataclass
class HeatAtlasSpec:
    """Chart layout of one of AtlasD's heat atlases on a given field shape.

    ``centers``: chart centres as (row, col) pixel indices; ``in_radius``: radius of the input
    patches (the charts); ``out_radius``: radius of the predicted output patches.
    """

    centers: list[tuple[int, int]]
    in_radius: int
    out_radius: int
    shape: tuple[int, int] = field(default=(128, 128))

    @property
    def n_charts(self) -> int:
        return len(self.centers)


def heat_atlas(which: int = 1, shape: Sequence[int] = (128, 128)) -> HeatAtlasSpec:
    """AtlasD's heat atlas ``which`` (1: 19 charts, radius 14 / 10; 2: 3 charts, 26 / 20).

    Centres are ``(int(row_frac * H), int(col_frac * W))``.  Raises ``ValueError`` when a chart
    (at its input radius) leaves the field or overlaps the obstacle, which can happen on fields
    smaller than AtlasD's 128 x 128.
    """
    if isinstance(which, bool) or which not in _ATLASES:
        raise ValueError(f"atlas must be 1 or 2, got {which!r}")
    h, w = check_shape(shape)
    fractions, r_in, r_out = _ATLASES[which]
    centers = [(int(fr * h), int(fc * w)) for fr, fc in fractions]
    o_r0, o_r1, o_c0, o_c1 = heat_obstacle_bounds((h, w))
    for idx, (r, c) in enumerate(centers):
        if r - r_in < 0 or c - r_in < 0 or r + r_in >= h or c + r_in >= w:
            raise ValueError(
                f"heat atlas {which}: chart {idx} at (row {r}, col {c}) with radius {r_in} leaves "
                f"the {h} x {w} field; the field is too small for this atlas"
            )
        rows_overlap = r - r_in < o_r1 and o_r0 <= r + r_in
        cols_overlap = c - r_in < o_c1 and o_c0 <= c + r_in
        if rows_overlap and cols_overlap and o_r1 > o_r0 and o_c1 > o_c0:
            raise ValueError(
                f"heat atlas {which}: chart {idx} at (row {r}, col {c}) with radius {r_in} "
                f"overlaps the obstacle (rows {o_r0}..{o_r1 - 1}, cols {o_c0}..{o_c1 - 1}) on the "
                f"{h} x {w} field"
            )
    return HeatAtlasSpec(centers=centers, in_radius=r_in, out_radius=r_out, shape=(h, w))


def build_heat_atlas(which: int = 1, shape: Sequence[int] = (128, 128)):
    """``atlasd.Atlas`` of heat atlas ``which`` (charts at the input radius)."""
    spec = heat_atlas(which, shape)
    from atlasd.atlas import Atlas  # lazy: core module, imported only when an atlas is needed

    return Atlas.grid(shape=spec.shape, centers=spec.centers, radius=spec.in_radius)


def heat_ground_truth() -> dict[str, torch.Tensor]:
    """Ground-truth local symmetry: so(2) and the cosets {identity, reflection diag(1, -1)}.

    ``{"algebra": (1, 2, 2) float64, "cosets": (2, 2, 2) float64}``; fresh tensors each call.
    """
    algebra = torch.tensor([[[0.0, -1.0], [1.0, 0.0]]], dtype=torch.float64)
    cosets = torch.stack(
        [torch.eye(2, dtype=torch.float64), torch.diag(torch.tensor([1.0, -1.0]))]
    ).to(torch.float64)
    return {"algebra": algebra, "cosets": cosets}


# --------------------------------------------------------------------------------------------
# Lightning data module
# --------------------------------------------------------------------------------------------


class HeatDataModule(SplitsDataModule):
    """AtlasD's heat task as a LightningDataModule.

    ``setup()`` generates the ``n`` samples once (seeded, :func:`generate_heat`) and splits them
    deterministically: the last ``round(n * val_fraction)`` samples (at least one when
    ``val_fraction > 0``) are the validation set.  Batches are ``(x, y)``, each
    (B, 1, size, size).  The training loader shuffles with a generator seeded by ``seed``.

    Attributes: ``atlas`` (an ``atlasd.Atlas``, built on first access), ``atlas_spec``,
    ``in_radius``, ``out_radius``, ``ground_truth`` (:func:`heat_ground_truth`),
    ``kind = "local"``; after ``setup()`` also ``x``, ``y`` (all samples), ``train_dataset``,
    ``val_dataset`` and ``spec`` (the task contract, :class:`atlasd.datasets.base.TaskSpec`).
    """

    kind = "local"

    def __init__(
        self,
        n: int = 1000,
        size: int = 128,
        steps: int = 50,
        seed: int = 0,
        val_fraction: float = 0.1,
        batch_size: int = 16,
        atlas: int = 1,
        anisotropy: Any = None,
        obstacle: bool = True,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.n = check_int("n", n, 1)
        self.size = check_int("size", size, _MIN_SIZE)
        self.steps = check_int("steps", steps, 0)
        self.seed = check_int("seed", seed)
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.anisotropy = anisotropy
        _diffusion_tensor(anisotropy)
        self.obstacle = bool(obstacle)
        self.atlas_spec = heat_atlas(atlas, (self.size, self.size))
        self.atlas_index = atlas
        self.in_radius = self.atlas_spec.in_radius
        self.out_radius = self.atlas_spec.out_radius
        self.ground_truth = heat_ground_truth()
        self.n_val = self._n_val()
        self._atlas = None
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None

    def _n_val(self) -> int:
        if self.val_fraction == 0.0:
            return 0
        n_val = max(1, round(self.n * self.val_fraction))
        if n_val >= self.n:
            raise ValueError(
                f"n={self.n} with val_fraction={self.val_fraction} leaves no training samples"
            )
        return n_val

    @property
    def atlas(self):
        if self._atlas is None:
            self._atlas = build_heat_atlas(self.atlas_index, (self.size, self.size))
        return self._atlas

    @property
    def spec(self) -> TaskSpec:
        """The task contract: local so(2) (and a reflection) on one field channel, regression
        scored by MSE; broken variant: the anisotropic diffusion ``diag(1.5, 0.5)``."""
        if self.x is None:
            raise not_set_up(self)
        return TaskSpec(
            name="heat",
            kind="local",
            inputs="fields",
            d=2,
            in_channels=int(self.x.shape[1]),
            target="regression",
            metric="mse",
            ground_truth=self.ground_truth,
            atlas=self.atlas,
            broken={"anisotropy": [1.5, 0.5]},
        )

    def setup(self, stage: str | None = None) -> None:
        if self.x is not None:
            return
        x, y = generate_heat(
            self.n,
            size=self.size,
            steps=self.steps,
            seed=self.seed,
            anisotropy=self.anisotropy,
            obstacle=self.obstacle,
        )
        n_train = self.n - self.n_val
        self.x, self.y = x, y
        self.train_dataset = TensorDataset(x[:n_train], y[:n_train])
        self.val_dataset = TensorDataset(x[n_train:], y[n_train:])
