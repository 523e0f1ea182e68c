"""Lorentz-boosted jets: a synthetic top-tagging task and a loader for the real data set.

Global symmetry discovery on particle sets: every sample is a jet, ``P`` constituent 4-vectors
``(E, px, py, pz)`` (GeV divided by ``energy_unit``), sorted by transverse momentum
``pT = sqrt(px^2 + py^2)`` (hardest first) and zero-padded, shaped (N, P, 4); the label is 1 for
a top jet and 0 for a QCD jet.  The group acts on the last axis, ``x -> g x``.  A classifier that
only uses Minkowski products ``p_i . p_j = E_i E_j - px_i px_j - py_i py_j - pz_i pz_j``
(masses, pair masses) is
invariant under the Lorentz group O(1,3); discovery should find its identity component's algebra
so(1,3) and, of its four components, the identity and parity (time reversal flips the sign of the
energies, which no jet has, so a classifier trained on jets is not invariant under it).

Synthetic generator (:func:`generate_jets`), built so that *only* Lorentz invariants separate
the classes:

1.  **Rest-frame decay.**  In the jet's rest frame,

    - top-like: ``t -> b W``, ``W -> q q'`` (three prongs).  The top and W masses are drawn from
      Breit-Wigner (Cauchy) line shapes around ``m_t = 173`` and ``m_W = 80.4`` GeV with
      widths 1.4 and 2.1 GeV, truncated to 8 widths either side; ``m_b = 4.8`` GeV.
    - QCD-like: one parton of mass ``m_J`` from a falling spectrum (truncated exponential,
      ``m_J = 20 + Exp(60)`` GeV up to 300 GeV, so it overlaps the top peak) splits into a
      massless parton and a lighter system of mass ``u m_J``, ``u`` falling on [0.05, 0.95]
      (density ``2 (1 - u)``), which splits into two massless partons: three prongs as well,
      with a hierarchical (not W-like) pair-mass pattern.

    Every two-body decay is isotropic in its parent's rest frame.
2.  **Shower.**  Each prong becomes 1..``max_per_prong`` massless constituents (count uniform,
    the same distribution for both classes, so multiplicity does not separate them): energy
    fractions uniform on the simplex, directions tilted from the prong's by an angle
    ``shower_angle * |N(0, 1)|`` (radians, in the jet rest frame) at a uniform azimuth, and
    energies smeared by ``exp(energy_resolution N(0, 1))`` (also in the rest frame), which
    broadens the top peak to about 162..185 GeV (10%..90%).
3.  **Boost.**  The constituents are boosted to the exact rest frame of their sum (showering
    moves it slightly), then to the lab: the jet momentum has a uniformly random direction and a
    magnitude ``|P|`` log-uniform on ``momentum_range`` (GeV), drawn independently of the class.
    Optionally all 4-vectors are multiplied by a random energy scale ``exp(scale_spread N(0,1))``
    (off by default; with it the classes differ only in mass *ratios*, and scaling becomes a
    symmetry too).
4.  **Sorting.**  Constituents are sorted by pT (hardest first) and zero-padded (or truncated)
    to ``P``.

Why only invariants separate the classes: the rest-frame configuration is O(3)-invariant in
distribution, and the lab momentum of the jet is drawn from the same distribution for both
classes, so the likelihood ratio ``p(x | top) / p(x | QCD)`` equals that of the rest-frame
configurations up to rotation, which are functions of the Minkowski products only (when ``P``
keeps all constituents, ``P >= 3 max_per_prong``).  The jet's pT, energy and direction carry
(almost) no information: |P| is class-independent and ``E = sqrt(|P|^2 + m^2)`` differs only by
the mass term.  Detector smearing in the lab frame is deliberately left out: it would make the
optimal classifier frame-dependent.

Real data (:func:`read_top_tagging`, in :mod:`atlasd.datasets.jets_files`): the top-quark
tagging reference data set (Kasieczka et al., SciPost Phys. 7, 014 (2019)), pandas HDF5 files
of which only the needed columns are read, a chunk of rows at a time.

Ground truth (:func:`jets_ground_truth`): so(1,3) in (E, px, py, pz), metric
``diag(1, -1, -1, -1)``: three boosts then three rotations, and the cosets {identity, parity
``diag(1, -1, -1, -1)``}.  Note that ``atlasd.lie.canonical_coset_representative`` reports the
parity component by ``diag(1, 1, 1, -1)`` (a rotation by pi about z times parity: the same
component of O(1,3)); ``DiscoveredGroup.contains`` treats both alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from atlasd.checks import check_fraction, check_int
from atlasd.datasets.base import TaskSpec, not_set_up
from atlasd.datasets.jets_files import (
    COMPONENTS,
    LABEL_COLUMN,
    MAX_CONSTITUENTS,
    read_top_tagging,
    top_tagging_columns,
)
from atlasd.datasets.splits import SplitsDataModule

__all__ = [
    "B_MASS",
    "COMPONENTS",
    "LABEL_COLUMN",
    "MAX_CONSTITUENTS",
    "METRIC",
    "TOP_MASS",
    "TOP_WIDTH",
    "W_MASS",
    "W_WIDTH",
    "JetsDataModule",
    "boost_from_rest",
    "generate_jets",
    "invariant_mass",
    "jet_momentum",
    "jets_ground_truth",
    "lorentz_generators",
    "minkowski_dot",
    "read_top_tagging",
    "top_tagging_columns",
    "transverse_momentum",
]

#: Top and W pole masses and widths, b mass (GeV).
TOP_MASS: float = 173.0
TOP_WIDTH: float = 1.4
W_MASS: float = 80.4
W_WIDTH: float = 2.1
B_MASS: float = 4.8
#: Breit-Wigner draws are truncated to this many widths either side of the pole.
_BW_TRUNCATION: float = 8.0
#: QCD jet mass spectrum: m_min + Exp(scale), truncated at m_max (GeV).
_QCD_MASS_MIN, _QCD_MASS_SCALE, _QCD_MASS_MAX = 20.0, 60.0, 300.0
#: Range of the QCD sub-system mass fraction u = m_X / m_J.
_QCD_FRACTION = (0.05, 0.95)

#: Minkowski metric in (E, px, py, pz).
METRIC: tuple[float, float, float, float] = (1.0, -1.0, -1.0, -1.0)

_F64 = torch.float64
#: Entropy words of the generator's and the split's random streams (see _derived_seed).
_DATA_STREAM = 0x1E75
_SPLIT_STREAM = 0x5B17


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_positive(name: str, value: Any, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


def _check_vectors(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != 4:
        raise ValueError(f"{name} must be 4-vectors (..., 4), got shape {tuple(x.shape)}")


def _derived_seed(stream: int, seed: int) -> int:
    """A 64-bit torch seed for (stream, seed) from numpy's SeedSequence.

    Seeding ``torch.Generator`` with ``seed`` itself would make the labels (drawn first, by
    ``randperm(n)``) equal to any other ``randperm(n)`` seeded alike, e.g. the training /
    validation split of ``atlasd.discover_global`` run with the same seed: one part would hold a
    single class.  Derived seeds keep the streams independent.
    """
    return int(np.random.SeedSequence([stream, seed]).generate_state(1, dtype=np.uint64)[0])


# --------------------------------------------------------------------------------------------
# Lorentz kinematics (pure functions, batched over all leading axes)
# --------------------------------------------------------------------------------------------


def minkowski_dot(a: Tensor, b: Tensor) -> Tensor:
    """``a . b = a_E b_E - a_x b_x - a_y b_y - a_z b_z`` over the last axis: (..., 4) -> (...)."""
    _check_vectors(a, "a")
    _check_vectors(b, "b")
    return a[..., 0] * b[..., 0] - (a[..., 1:] * b[..., 1:]).sum(-1)


def jet_momentum(x: Tensor) -> Tensor:
    """Total 4-momentum of each jet: (..., P, 4) -> (..., 4) (padding contributes zero)."""
    _check_vectors(x)
    return x.sum(-2)


def invariant_mass(p: Tensor) -> Tensor:
    """Invariant mass ``sqrt(max(p . p, 0))`` of 4-vectors (..., 4) -> (...).

    For a jet, pass :func:`jet_momentum` of its constituents; for a pair, their sum.
    """
    return minkowski_dot(p, p).clamp_min(0.0).sqrt()


def transverse_momentum(p: Tensor) -> Tensor:
    """``pT = sqrt(px^2 + py^2)``: (..., 4) -> (...)."""
    _check_vectors(p, "p")
    return p[..., 1:3].square().sum(-1).sqrt()


def boost_from_rest(p: Tensor) -> Tensor:
    """The pure boost taking a particle of 4-momentum ``p`` from its rest frame to this frame.

    ``Lambda (m, 0, 0, 0) = p`` with ``m = sqrt(p . p) > 0``; with ``gamma = E / m`` and
    ``gamma beta = p_vec / m``::

        Lambda = [[E / m,      p_vec^T / m],
                  [p_vec / m,  I + p_vec p_vec^T / (m (E + m))]]

    (the second form avoids dividing by ``|p_vec|``, so ``p`` at rest gives the identity).
    Its inverse is ``boost_from_rest((E, -p_vec))``.

    Args:
        p: (..., 4) time-like with E > 0 (float64 recommended).

    Returns:
        (..., 4, 4) matrices in (E, px, py, pz).
    """
    _check_vectors(p, "p")
    m = invariant_mass(p)
    if bool((m <= 0).any()) or bool((p[..., 0] <= 0).any()):
        raise ValueError("boost_from_rest needs time-like 4-momenta with E > 0")
    e, v = p[..., 0], p[..., 1:]
    out = p.new_empty((*p.shape[:-1], 4, 4))
    out[..., 0, 0] = e / m
    out[..., 0, 1:] = v / m[..., None]
    out[..., 1:, 0] = v / m[..., None]
    eye = torch.eye(3, dtype=p.dtype, device=p.device)
    out[..., 1:, 1:] = eye + v[..., :, None] * v[..., None, :] / (m * (e + m))[..., None, None]
    return out


def lorentz_generators(dtype: torch.dtype = _F64) -> Tensor:
    """so(1,3) in (E, px, py, pz): boosts K_x, K_y, K_z then rotations J_x, J_y, J_z.

    (6, 4, 4); every generator ``A`` satisfies ``A^T eta + eta A = 0``, ``eta`` = :data:`METRIC`.
    """
    gens = torch.zeros(6, 4, 4, dtype=dtype)
    for i in range(3):
        gens[i, 0, i + 1] = gens[i, i + 1, 0] = 1.0  # boost along axis i
    for k, (i, j) in enumerate(((2, 3), (3, 1), (1, 2))):
        gens[3 + k, i, j], gens[3 + k, j, i] = -1.0, 1.0  # rotation about x, y, z
    return gens


def jets_ground_truth() -> dict[str, Tensor]:
    """so(1,3) ``(6, 4, 4)`` and the cosets {identity, parity ``diag(1,-1,-1,-1)``} ``(2, 4, 4)``.

    float64, fresh tensors each call.
    """
    cosets = torch.stack([torch.eye(4, dtype=_F64), torch.diag(torch.tensor(METRIC, dtype=_F64))])
    return {"algebra": lorentz_generators(), "cosets": cosets}


# --------------------------------------------------------------------------------------------
# Synthetic generator
# --------------------------------------------------------------------------------------------


def _uniform(n: int, gen: torch.Generator) -> Tensor:
    return torch.rand(n, generator=gen, dtype=_F64)


def _directions(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Uniform unit vectors on the sphere, (*shape, 3)."""
    v = torch.randn((*shape, 3), generator=gen, dtype=_F64)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _breit_wigner(n: int, mass: float, width: float, gen: torch.Generator) -> Tensor:
    """Cauchy line shape around ``mass`` truncated to ``_BW_TRUNCATION`` widths (inverse CDF)."""
    t = math.atan(2.0 * _BW_TRUNCATION)
    return mass + 0.5 * width * torch.tan((2.0 * _uniform(n, gen) - 1.0) * t)


def _two_body(
    parent: Tensor, m1: Tensor, m2: Tensor, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Isotropic two-body decay of ``parent`` (n, 4) into masses m1, m2 (n,), in its frame.

    The daughters are generated in the parent's rest frame and boosted with it; returns their
    4-momenta (n, 4) each, summing to ``parent``.
    """
    big_m = invariant_mass(parent)
    q2 = (big_m**2 - (m1 + m2) ** 2) * (big_m**2 - (m1 - m2) ** 2)
    q = q2.clamp_min(0.0).sqrt() / (2.0 * big_m)
    u = _directions((parent.shape[0],), gen) * q[:, None]
    d1 = torch.cat([(q**2 + m1**2).sqrt()[:, None], u], dim=1)
    d2 = torch.cat([(q**2 + m2**2).sqrt()[:, None], -u], dim=1)
    lab = boost_from_rest(parent)
    return (
        torch.einsum("nij,nj->ni", lab, d1),
        torch.einsum("nij,nj->ni", lab, d2),
    )


def _prongs(y: Tensor, gen: torch.Generator) -> Tensor:
    """Three prongs (n, 3, 4) in the jet rest frame: t -> b (W -> q q') or QCD-like."""
    n = y.shape[0]
    top = y.bool()
    m_t = _breit_wigner(n, TOP_MASS, TOP_WIDTH, gen)
    m_w = _breit_wigner(n, W_MASS, W_WIDTH, gen)
    lo, hi = _QCD_MASS_MIN, _QCD_MASS_MAX
    cut = 1.0 - math.exp(-(hi - lo) / _QCD_MASS_SCALE)
    m_j = lo - _QCD_MASS_SCALE * torch.log1p(-_uniform(n, gen) * cut)
    u_lo, u_hi = _QCD_FRACTION
    u = u_lo + (u_hi - u_lo) * (1.0 - _uniform(n, gen).sqrt())  # density 2 (1 - u), falling
    big_m = torch.where(top, m_t, m_j)
    m1 = torch.where(top, torch.full_like(m_t, B_MASS), torch.zeros_like(m_t))
    m2 = torch.where(top, m_w, u * m_j)
    rest = torch.zeros(n, 4, dtype=_F64)
    rest[:, 0] = big_m
    first, system = _two_body(rest, m1, m2, gen)
    zero = torch.zeros(n, dtype=_F64)
    second, third = _two_body(system, zero, zero, gen)
    return torch.stack([first, second, third], dim=1)


def _shower(
    prongs: Tensor, max_per_prong: int, angle: float, resolution: float, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Split each prong (n, 3, 4) into 1..max_per_prong massless constituents.

    Each constituent's energy is then multiplied by ``exp(resolution N(0, 1))`` (a resolution
    applied in the jet rest frame, so that it smears the invariants without making the
    optimal classifier frame-dependent).

    Returns constituents (n, 3 * max_per_prong, 4) (zero where inactive) and the activity
    mask (n, 3 * max_per_prong).
    """
    n, k, s = prongs.shape[0], prongs.shape[1], max_per_prong
    count = torch.randint(1, s + 1, (n, k, 1), generator=gen)
    active = torch.arange(s)[None, None, :] < count  # (n, k, s)
    z = -torch.log1p(-torch.rand((n, k, s), generator=gen, dtype=_F64))  # Exp(1)
    z = torch.where(active, z, torch.zeros_like(z))
    z = z / z.sum(-1, keepdim=True)  # uniform on the simplex of the active slots
    axis = prongs[..., 1:] / prongs[..., 1:].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # any orthonormal pair perpendicular to the axis: the azimuth below is uniform, so the
    # choice does not matter for the distribution (which stays rotation-equivariant)
    helper = torch.zeros_like(axis)
    use_x = axis[..., 0].abs() < 0.9
    helper[..., 0] = use_x.to(_F64)
    helper[..., 1] = (~use_x).to(_F64)
    e1 = torch.linalg.cross(axis, helper)
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    e2 = torch.linalg.cross(axis, e1)
    theta = angle * torch.randn((n, k, s), generator=gen, dtype=_F64).abs()
    phi = 2.0 * math.pi * torch.rand((n, k, s), generator=gen, dtype=_F64)
    direction = (
        theta.cos()[..., None] * axis[:, :, None]
        + (theta.sin() * phi.cos())[..., None] * e1[:, :, None]
        + (theta.sin() * phi.sin())[..., None] * e2[:, :, None]
    )
    smear = torch.exp(resolution * torch.randn((n, k, s), generator=gen, dtype=_F64))
    energy = z * prongs[..., 0:1] * smear  # (n, k, s)
    const = torch.cat([energy[..., None], energy[..., None] * direction], dim=-1)
    return const.reshape(n, k * s, 4), active.reshape(n, k * s)


def _sort_pad(x: Tensor, active: Tensor, n_constituents: int) -> Tensor:
    """Sort constituents by pT (hardest first, padding last) and pad/truncate to P."""
    key = torch.where(active, transverse_momentum(x), torch.full_like(x[..., 0], -1.0))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    x = torch.take_along_dim(x * active[..., None], order[..., None], dim=1)
    m = x.shape[1]
    if n_constituents <= m:
        return x[:, :n_constituents]
    return torch.cat([x, x.new_zeros(x.shape[0], n_constituents - m, 4)], dim=1)


def generate_jets(
    n: int,
    *,
    n_constituents: int = 9,
    seed: int = 0,
    momentum_range: Sequence[float] = (200.0, 1000.0),
    max_per_prong: int = 3,
    shower_angle: float = 0.1,
    energy_resolution: float = 0.1,
    scale_spread: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """``n`` synthetic jets, half top-like and half QCD-like (module docstring for the physics).

    Args:
        n: number of jets (>= 2).
        n_constituents: P, constituents kept per jet (hardest first; zero-padded). With
            ``P >= 3 * max_per_prong`` every constituent is kept.
        seed: seeds one ``torch.Generator``; the same seed gives bit-identical data.
        momentum_range: (low, high) GeV; the jet momentum |P| is log-uniform on it, the same
            for both classes.
        max_per_prong: each of the three prongs showers into 1..max_per_prong constituents.
        shower_angle: angular spread of a prong's constituents (radians, jet rest frame).
        energy_resolution: relative (log-normal) smearing of each constituent's energy in the
            jet rest frame; it broadens the top and W mass peaks.
        scale_spread: std of the log of a random overall energy scale (0: none).
        dtype: dtype of the returned 4-vectors (the kinematics run in float64).

    Returns:
        ``x`` (n, P, 4) 4-vectors (E, px, py, pz) in GeV, ``y`` (n,) int64 labels (1 = top),
        exactly ``n // 2`` of them 1, in a seeded random order.
    """
    n = check_int("n", n, 2)
    p_max = check_int("n_constituents", n_constituents, 1, MAX_CONSTITUENTS)
    seed = check_int("seed", seed)
    s = check_int("max_per_prong", max_per_prong, 1)
    angle = _check_positive("shower_angle", shower_angle, allow_zero=True)
    resolution = _check_positive("energy_resolution", energy_resolution, allow_zero=True)
    spread = _check_positive("scale_spread", scale_spread, allow_zero=True)
    try:
        lo, hi = (float(v) for v in momentum_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"momentum_range must be a pair (low, high), got {momentum_range!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo <= hi):
        raise ValueError(f"momentum_range must satisfy 0 < low <= high, got {(lo, hi)}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")

    gen = torch.Generator().manual_seed(_derived_seed(_DATA_STREAM, seed))
    y = torch.zeros(n, dtype=torch.int64)
    y[torch.randperm(n, generator=gen)[: n // 2]] = 1
    const, active = _shower(_prongs(y, gen), s, angle, resolution, gen)

    # to the exact rest frame of the constituents' sum, then to the lab
    total = const.sum(1)
    to_rest = boost_from_rest(torch.cat([total[:, :1], -total[:, 1:]], dim=1))
    mass = invariant_mass(total)
    momentum = lo * (hi / lo) ** _uniform(n, gen)
    lab_p = _directions((n,), gen) * momentum[:, None]
    lab = torch.cat([(momentum**2 + mass**2).sqrt()[:, None], lab_p], dim=1)
    transform = boost_from_rest(lab) @ to_rest
    if spread > 0:
        scale = torch.exp(spread * torch.randn(n, generator=gen, dtype=_F64))
        transform = transform * scale[:, None, None]
    x = torch.einsum("nij,ncj->nci", transform, const)
    x = _sort_pad(x, active, p_max)
    return x.to(dtype), y


# --------------------------------------------------------------------------------------------
# Lightning data module
# --------------------------------------------------------------------------------------------


class JetsDataModule(SplitsDataModule):
    """Top tagging as a LightningDataModule for global discovery (``kind = "global"``).

    ``source="synthetic"`` (default) generates ``n`` jets with :func:`generate_jets`;
    ``source="h5"`` reads ``n`` rows (all when None) from ``start`` of the file at ``path`` with
    :func:`read_top_tagging`.  4-vectors are divided by ``energy_unit`` (GeV; a global unit
    change commutes with every Lorentz transformation, and keeps network inputs of order one).

    After ``setup()``: ``x`` (N, P, 4) float32 and ``y`` (N,) int64 (1 = top), all samples;
    a seeded random split into ``x_train``/``y_train``, ``x_val``/``y_val`` and
    ``x_test``/``y_test`` (``val_fraction``, ``test_fraction`` of the samples, at least one
    each when the fraction is positive), and matching ``train_dataset``, ``val_dataset``,
    ``test_dataset``.  Batches are ``(x, y)``.  ``ground_truth`` is :func:`jets_ground_truth`;
    ``spec`` (after ``setup()``) the task contract, :class:`atlasd.datasets.base.TaskSpec`.
    """

    kind = "global"

    def __init__(
        self,
        source: str = "synthetic",
        path: str | None = None,
        n: int | None = 20_000,
        n_constituents: int = 9,
        seed: int = 0,
        energy_unit: float = 100.0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        num_workers: int = 0,
        start: int = 0,
        momentum_range: Sequence[float] = (200.0, 1000.0),
        max_per_prong: int = 3,
        shower_angle: float = 0.1,
        energy_resolution: float = 0.1,
        scale_spread: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if source not in ("synthetic", "h5"):
            raise ValueError(f"source must be 'synthetic' or 'h5', got {source!r}")
        self.source = source
        if source == "h5" and path is None:
            raise ValueError("source='h5' needs a path to a top-tagging .h5 file")
        if source == "synthetic" and path is not None:
            raise ValueError("path is only used with source='h5'")
        self.path = None if path is None else Path(path)
        if self.path is not None and not self.path.is_file():
            raise FileNotFoundError(f"no top-tagging file at {self.path}")
        if n is None and source == "synthetic":
            raise ValueError("source='synthetic' needs n (the number of jets)")
        self.n = None if n is None else check_int("n", n, 3)
        self.n_constituents = check_int("n_constituents", n_constituents, 1, MAX_CONSTITUENTS)
        self.seed = check_int("seed", seed)
        self.energy_unit = _check_positive("energy_unit", energy_unit)
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.start = check_int("start", start, 0)
        self.generator_options = {
            "momentum_range": tuple(momentum_range),
            "max_per_prong": max_per_prong,
            "shower_angle": shower_angle,
            "energy_resolution": energy_resolution,
            "scale_spread": scale_spread,
        }
        if source == "synthetic":  # validate the physics options before any work
            generate_jets(2, n_constituents=1, **self.generator_options)
        self.ground_truth = jets_ground_truth()
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        for part in ("train", "val", "test"):
            setattr(self, f"x_{part}", None)
            setattr(self, f"y_{part}", None)
            setattr(self, f"{part}_dataset", None)

    @property
    def spec(self) -> TaskSpec:
        """The task contract: global so(1,3) on sets of 4-vectors, binary top tagging scored
        by AUC; no atlas, no broken variant."""
        if self.x is None:
            raise not_set_up(self)
        return TaskSpec(
            name="jets",
            kind="global",
            inputs="sets",
            d=4,
            in_channels=4,
            target="classification",
            n_classes=2,
            metric="auc",
            ground_truth=self.ground_truth,
        )

    def _split_sizes(self, n: int) -> tuple[int, int]:
        sizes = [
            0 if f == 0.0 else max(1, round(n * f)) for f in (self.val_fraction, self.test_fraction)
        ]
        if n - sum(sizes) < 1:
            raise ValueError(
                f"{n} samples with val_fraction={self.val_fraction} and "
                f"test_fraction={self.test_fraction} leave no training samples"
            )
        return sizes[0], sizes[1]

    def setup(self, stage: str | None = None) -> None:
        if self.x is not None:
            return
        if self.source == "synthetic":
            x, y = generate_jets(
                self.n, n_constituents=self.n_constituents, seed=self.seed, **self.generator_options
            )
        else:
            x, y = read_top_tagging(
                self.path, self.n_constituents, n=self.n, start=self.start, dtype=torch.float64
            )
        x = (x.to(_F64) / self.energy_unit).to(torch.float32)
        n = x.shape[0]
        n_val, n_test = self._split_sizes(n)
        # a stream of its own, independent of the data's (see _derived_seed)
        split = torch.Generator().manual_seed(_derived_seed(_SPLIT_STREAM, self.seed))
        perm = torch.randperm(n, generator=split)
        parts = {
            "val": perm[:n_val],
            "test": perm[n_val : n_val + n_test],
            "train": perm[n_val + n_test :],
        }
        self.x, self.y = x, y
        for part, idx in parts.items():
            setattr(self, f"x_{part}", x[idx])
            setattr(self, f"y_{part}", y[idx])
            setattr(self, f"{part}_dataset", TensorDataset(x[idx], y[idx]))
