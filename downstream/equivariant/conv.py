"""Convolutions on charts that are equivariant to a discovered group of 2x2 matrices.

Convention (docs/conventions.md): ``(g . f)(p) = rho(g) f(g^-1 p)`` in chart coordinates
``x = column - r`` (right), ``y = r - row`` (up), as :func:`atlasd.act`. ``F.conv2d`` computes
``out(p) = sum_z K(z) f(p + z)`` with ``z`` the local coordinates of the kernel pixel, so
``conv(g . f) = g . conv(f)`` holds exactly when

    K(g z) = |det g|^-1 rho_out(g) K(z) rho_in(g)^-1,

infinitesimally ``(A z) . grad K + tr(A) K = B_out K - K B_in`` for every generator A (with
channel generators B_in, B_out).

Kernel basis (built numerically for any generator, :func:`kernel_basis`)
-----------------------------------------------------------------------
K is represented on a smooth basis: Gaussian radial basis functions (width ``sigma`` = 1 pixel)
centred on the pixels of the kernel's disc ``|z| <= r + 1/2``, times every channel matrix.
The constraint residual is measured at collocation points on a 0.2-pixel grid inside the
disc, plus a boundary term: the kernel is zero outside the disc, so where the flow ``A z``
crosses the rim (``A z . n != 0``) the kernel must vanish on it (the jump of the zero-extended
kernel). The basis is spanned by the lowest generalised eigenvectors of the Rayleigh quotient
``residual^2 / kernel^2`` (both integrated over the disc), kept while the quotient is at most
``threshold`` (default 0.25). Scale: generators have unit Frobenius norm (the group's standard
form), and a kernel of angular frequency m under a rotation generator scores ``m^2 / 2``, so
0.25 is half the score of the first non-invariant harmonic. Measured with this
discretisation: for so(2) between scalar fields the invariant (radial) kernels score below
0.02 and the next ones 0.49, giving 3 kernels for size 5 and 4 for size 7 (escnn's counts).

Measured equivariance (O(2), 5x5, 2 scalar + 2 vector fields in and out, float32): 2e-7
under rotations by 90 degrees and flips (exact pixel permutations), 3e-3 under rotations by
45 degrees of smooth fields (bilinear resampling, central 25x25 block) where unconstrained 5x5
kernels give 0.9; 7x7 kernels give 1.6e-2 (their outermost high-frequency kernels score up to
0.19).

Coset representatives are imposed at the collocation points as well (``K(H z)`` against
``|det H|^-1 rho_out(H) K(z) rho_in(H)^-1``). Grid-preserving elements of the group (the
rotations by 90 degrees and the flips that the group contains, found with
:meth:`DiscoveredGroup.component_of` within ``grid_tol``) are then imposed exactly, as pixel
permutations: the pixel kernels are projected onto the invariants of that finite group.

Non-compact generators (scalings, shears) admit no smooth compactly supported kernel. Modes:

- ``"smooth"``: the construction above (the Jacobian factor and the rim condition included).
- ``"center"``: exact, a 1x1 (centre tap) kernel ``W`` with ``B_out W = W B_in``: every group
  element fixes the centre, so this is equivariant for any group, and it is all that is exact.
- ``"uniform"``: AtlasD's "uniform kernel": the constraint without the Jacobian factor and
  without the rim condition, i.e. ``K(g z) = rho_out K(z) rho_in^-1`` inside the disc
  (constant along orbits for scalars). Approximate. Measured for gl(2) between scalar fields
  (5x5, smooth fields, central 17x17 block, tests/test_conv.py): relative equivariance error
  1.4e-2 (scaling by 1.2), 2.6e-2 (by 0.8), 1.3e-2 (shear 0.3), 1.5e-3 (rotation by 0.5 rad),
  against 0.07-0.21 for unconstrained 5x5 kernels; the centre tap is exact (5e-8).
- ``"auto"`` (default): ``"smooth"`` when it yields at least one kernel, else ``"center"``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from atlasd.atlas import local_coordinates
from atlasd.downstream.equivariant.invariants import invariant_bias_vector, register_invariant_bias
from atlasd.downstream.equivariant.reps import BaseRep, Rep
from atlasd.downstream.equivariant.solver import BasisCache, EquivariantSolver, kron

if TYPE_CHECKING:
    from atlasd.group import DiscoveredGroup

__all__ = [
    "EquivariantConv2d",
    "KernelBasis",
    "kernel_basis",
    "pixel_symmetries",
]

_F64 = torch.float64
Mode = Literal["auto", "smooth", "center", "uniform"]


def _d4() -> list[Tensor]:
    """The 8 signed permutation matrices of the square grid, identity first."""
    mats = []
    for perm in ((0, 1), (1, 0)):
        for sx in (1.0, -1.0):
            for sy in (1.0, -1.0):
                M = torch.zeros(2, 2, dtype=_F64)
                M[0, perm[0]], M[1, perm[1]] = sx, sy
                mats.append(M)
    return mats


def pixel_symmetries(group: DiscoveredGroup, tol: float = 0.1) -> list[tuple[Tensor, int]]:
    """Grid-preserving elements of a group of 2x2 matrices: rotations by multiples of 90 degrees
    and flips ``h`` that the group contains within relative distance ``tol``, each with the
    index of its component. Returns [(h (2, 2) float64, component), ...], identity first."""
    if group.d != 2:
        raise ValueError(f"pixel symmetries need a group of 2x2 matrices, got d = {group.d}")
    out = []
    # membership uses SciPy's logm on 2x2 matrices; OpenBLAS threads only cost there (measured
    # 5x slower with two threads than one on a loaded 2-core machine)
    with threadpool_limits(1):
        for h in _d4():
            comp = group.component_of(h, tol=tol)
            if comp is not None:
                out.append((h, comp))
    return out


@dataclass(frozen=True)
class KernelBasis:
    """Kernel basis of one pair of channel blocks.

    Attributes:
        basis: (r, m, n, s, s) float64, orthonormal over all entries; ``basis[i, :, :, a, b]``
            is the kernel at local coordinates ``x = b - s//2``, ``y = s//2 - a``.
        quotients: (r,) Rayleigh quotients of the kept eigenvectors (before the exact pixel
            projection); zeros for the centre mode.
        spectrum: all Rayleigh quotients, ascending (empty for the centre mode).
        mode: "smooth", "uniform" or "center".
    """

    basis: Tensor
    quotients: Tensor
    spectrum: Tensor
    mode: str


def _rbf(points: Tensor, centres: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """Gaussian RBF values (P, n) and gradients (P, n, 2) at points (P, 2)."""
    diff = points[:, None, :] - centres[None]
    phi = torch.exp(-(diff**2).sum(-1) / (2 * sigma**2))
    return phi, -diff / sigma**2 * phi[..., None]


def _channel_op(Bo: Tensor, Bi: Tensor) -> Tensor:
    """Operator on row-major vec(K) (m*n) for ``K -> Bo K - K Bi``."""
    m, n = Bo.shape[-1], Bi.shape[-1]
    return kron(Bo, torch.eye(n, dtype=_F64)) - kron(torch.eye(m, dtype=_F64), Bi.T.contiguous())


def _gram_of_rows(D: Tensor, Phi: Tensor, C: Tensor, w: float) -> Tensor:
    """``w M^T M`` for ``M = kron(D, I) - kron(Phi, C)`` without forming M.

    D, Phi: (P, n_rbf); C: (q, q) channel operator. Returns (n_rbf * q, n_rbf * q)."""
    eye = torch.eye(C.shape[0], dtype=_F64)
    return w * (
        kron(D.T @ D, eye)
        - kron(D.T @ Phi, C)
        - kron(Phi.T @ D, C.T.contiguous())
        + kron(Phi.T @ Phi, C.T @ C)
    )


def kernel_basis(
    algebra: Tensor,
    gens_in: Tensor,
    gens_out: Tensor,
    kernel_size: int,
    *,
    cosets: Tensor | None = None,
    discrete_in: Tensor | None = None,
    discrete_out: Tensor | None = None,
    pixel_group: list[tuple[Tensor, Tensor, Tensor]] | None = None,
    mode: Literal["smooth", "uniform", "center"] = "smooth",
    threshold: float = 0.25,
    sigma: float = 1.0,
    spacing: float = 0.2,
    solver: EquivariantSolver | None = None,
) -> KernelBasis:
    """Basis of kernels ``K: disc -> R^{m x n}`` with ``K(g z) = |det g|^-1 rho_out K rho_in^-1``.

    Args:
        algebra: (k, 2, 2) generators acting on chart coordinates (x right, y up).
        gens_in, gens_out: (k, n, n), (k, m, m) channel generators.
        kernel_size: odd s = 2r + 1.
        cosets: (c, 2, 2) coset representatives (identity first) with their channel actions
            ``discrete_in`` (c, n, n) and ``discrete_out`` (c, m, m); imposed at collocation
            points. None: identity component only.
        pixel_group: [(h (2, 2), rho_in(h), rho_out(h)), ...], a finite group of grid-preserving
            elements (closed under products) imposed exactly as pixel permutations.
        mode: "smooth", "uniform" or "center" (see the module docstring).
        threshold: largest Rayleigh quotient kept (unit-norm generators; see module docstring).
        sigma: RBF width in pixels; spacing: collocation grid spacing in pixels.
        solver: used for the centre mode (its equivariant_basis and cache).

    Returns:
        :class:`KernelBasis`.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    A = torch.as_tensor(algebra, dtype=_F64)
    Bi = torch.as_tensor(gens_in, dtype=_F64)
    Bo = torch.as_tensor(gens_out, dtype=_F64)
    if A.ndim != 3 or A.shape[-2:] != (2, 2):
        raise ValueError(f"algebra must be (k, 2, 2), got {tuple(A.shape)}")
    if Bi.shape[0] != A.shape[0] or Bo.shape[0] != A.shape[0]:
        raise ValueError(
            f"channel generators ({Bi.shape[0]}, {Bo.shape[0]}) must match the algebra's "
            f"{A.shape[0]} generators"
        )
    r = kernel_size // 2
    m, n = Bo.shape[-1], Bi.shape[-1]
    s = kernel_size
    if mode == "center":
        return _centre_basis(Bi, Bo, s, cosets, discrete_in, discrete_out, solver)
    if mode not in ("smooth", "uniform"):
        raise ValueError(f"mode must be 'smooth', 'uniform' or 'center', got {mode!r}")
    if r == 0:
        # a 1x1 kernel is all centre: no spatial freedom to solve for
        return kernel_basis(
            A,
            Bi,
            Bo,
            1,
            cosets=cosets,
            discrete_in=discrete_in,
            discrete_out=discrete_out,
            mode="center",
            solver=solver,
        )
    q = m * n
    R = r + 0.5
    pix = local_coordinates(r, dtype=_F64).reshape(-1, 2)  # (s*s, 2), row-major pixels
    inside = pix.norm(dim=1) <= R
    centres = pix[inside]
    n_rbf = centres.shape[0]
    if n_rbf * q > 4000:
        raise ValueError(
            f"a {s}x{s} kernel between blocks of size {n} and {m} has {n_rbf * q} unknowns "
            "(more than 4000); use smaller channel blocks"
        )
    pts = _collocation_points(R, spacing)
    w_area = spacing**2
    phi, grad = _rbf(pts, centres, sigma)
    gram = torch.zeros(n_rbf * q, n_rbf * q, dtype=_F64)
    _add_generator_constraints(gram, A, Bo, Bi, pts, phi, grad, centres, r, sigma, w_area, mode)
    if cosets is not None and discrete_in is not None and discrete_out is not None:
        _add_coset_constraints(
            gram, cosets, discrete_in, discrete_out, pts, phi, centres, R, sigma, w_area, mode
        )
    norm = w_area * kron(phi.T @ phi, torch.eye(q, dtype=_F64))
    gram = 0.5 * (gram + gram.T)
    lam_t, vecs = _generalised_eigh(gram, norm)
    keep = lam_t <= threshold
    basis = _kernels_on_pixels(vecs[:, keep], pix, inside, centres, sigma, m, n)
    if pixel_group:
        basis = _project_pixel_group(basis, pixel_group, r)
    # exact zeros outside the disc (the SVD leaves float dust there)
    basis = basis * inside.reshape(s, s).to(_F64)
    return KernelBasis(basis, lam_t[keep], lam_t, mode)


def _centre_basis(
    Bi: Tensor,
    Bo: Tensor,
    s: int,
    cosets: Tensor | None,
    discrete_in: Tensor | None,
    discrete_out: Tensor | None,
    solver: EquivariantSolver | None,
) -> KernelBasis:
    """The exact centre-tap kernels (r, m, n, s, s): ``W`` with ``B_out W = W B_in`` (and the
    coset constraints when ``cosets`` is given) at the centre pixel, zero elsewhere."""
    r = s // 2
    m, n = Bo.shape[-1], Bi.shape[-1]
    solver = solver if solver is not None else EquivariantSolver(cache_size=0)
    W = (
        solver.basis(Bi, Bo, discrete_in, discrete_out)
        if cosets is not None
        else (solver.basis(Bi, Bo))
    )
    out = torch.zeros(W.shape[0], m, n, s, s, dtype=_F64)
    out[..., r, r] = W
    return KernelBasis(out, torch.zeros(W.shape[0], dtype=_F64), torch.zeros(0), "center")


def _collocation_points(R: float, spacing: float) -> Tensor:
    """(p, 2) float64: the points of a square grid of step ``spacing`` inside the disc of
    radius R, where the constraint residual is measured."""
    g = torch.arange(-R, R + 1e-9, spacing, dtype=_F64)
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([gx.flatten(), gy.flatten()], dim=1)
    return pts[pts.norm(dim=1) <= R]


def _add_generator_constraints(
    gram: Tensor,
    A: Tensor,
    Bo: Tensor,
    Bi: Tensor,
    pts: Tensor,
    phi: Tensor,
    grad: Tensor,
    centres: Tensor,
    r: int,
    sigma: float,
    w_area: float,
    mode: str,
) -> None:
    """Add to ``gram`` (n_rbf * q, n_rbf * q), in place, the squared residual of the
    infinitesimal constraint of every generator (A (k, 2, 2), channel actions Bo (k, m, m),
    Bi (k, n, n)) at the collocation points ``pts`` (p, 2) with RBF values ``phi`` (p, n_rbf)
    and gradients ``grad`` (p, n_rbf, 2); in smooth mode also the Jacobian term and the rim
    condition."""
    q = Bo.shape[-1] * Bi.shape[-1]
    R = r + 0.5
    n_rim = max(64, 24 * r)
    theta = torch.arange(n_rim, dtype=_F64) * (2 * math.pi / n_rim)
    rim = R * torch.stack([theta.cos(), theta.sin()], dim=1)
    phi_rim, _ = _rbf(rim, centres, sigma)
    w_rim = 2 * math.pi * R / n_rim
    for Ak, Bok, Bik in zip(A, Bo, Bi, strict=True):
        scale = float(Ak.norm())
        if scale == 0.0:
            continue
        # normalise each generator (and its channel action) to a unit-norm spatial part, so
        # that the threshold has the meaning given in the module docstring
        Ak, Bok, Bik = Ak / scale, Bok / scale, Bik / scale
        D = ((pts @ Ak.T)[:, None, :] * grad).sum(-1)
        if mode == "smooth":
            D = D + torch.trace(Ak) * phi
        gram += _gram_of_rows(D, phi, _channel_op(Bok, Bik), w_area)
        if mode == "smooth":
            flux = ((rim @ Ak.T) * rim).sum(-1) / R  # (A z) . n on the rim
            Mr = flux[:, None] * phi_rim
            gram += w_rim * kron(Mr.T @ Mr, torch.eye(q, dtype=_F64))


def _add_coset_constraints(
    gram: Tensor,
    cosets: Tensor,
    discrete_in: Tensor,
    discrete_out: Tensor,
    pts: Tensor,
    phi: Tensor,
    centres: Tensor,
    R: float,
    sigma: float,
    w_area: float,
    mode: str,
) -> None:
    """Add to ``gram``, in place, the squared residual of ``K(H z) = |det H|^-1 rho_out(H) K(z)
    rho_in(H)^-1`` (no Jacobian in uniform mode) for every coset representative but the
    identity (cosets (c, 2, 2), discrete_in (c, n, n), discrete_out (c, m, m)) at the
    collocation points whose image stays inside the disc."""
    for H, Hi, Ho in zip(cosets[1:], discrete_in[1:], discrete_out[1:], strict=True):
        Hz = pts @ H.T
        keep = Hz.norm(dim=1) <= R
        if not bool(keep.any()):
            continue
        phi_h, _ = _rbf(Hz[keep], centres, sigma)
        jac = 1.0 if mode == "uniform" else 1.0 / abs(float(torch.linalg.det(H)))
        Kh = jac * kron(Ho, torch.linalg.inv(Hi).T.contiguous())
        # rows: K(H z) - Kh K(z)  ==  kron(phi_h, I) - kron(phi, Kh)
        gram += _gram_of_rows(phi_h, phi[keep], Kh, w_area)


def _kernels_on_pixels(
    theta_kept: Tensor,
    pix: Tensor,
    inside: Tensor,
    centres: Tensor,
    sigma: float,
    m: int,
    n: int,
) -> Tensor:
    """The solved RBF coefficients ``theta_kept`` (n_rbf * m * n, r) sampled on the pixels of
    the disc (pixels outside stay zero) and orthonormalised: (r, m, n, s, s) float64."""
    q = m * n
    s = math.isqrt(pix.shape[0])
    phi_pix, _ = _rbf(pix[inside], centres, sigma)
    vals = kron(phi_pix, torch.eye(q, dtype=_F64)) @ theta_kept  # (n_in * q, r_kept)
    kernels = torch.zeros(theta_kept.shape[1], s * s, q, dtype=_F64)
    kernels[:, inside] = vals.T.reshape(-1, int(inside.sum()), q)
    kernels = kernels.reshape(-1, s, s, m, n).permute(0, 3, 4, 1, 2)  # (r, m, n, s, s)
    return _orthonormalise(kernels)


def _generalised_eigh(A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenpairs of ``A v = lambda B v`` (B positive definite, with a 1e-12 ridge), ascending,
    B-orthonormal. Cholesky + torch eigh (torch's threads honour OMP_WAIT_POLICY; SciPy's
    OpenBLAS threads were measured 50x slower on a loaded 2-core machine)."""
    B = B + 1e-12 * float(torch.diagonal(B).mean()) * torch.eye(B.shape[0], dtype=B.dtype)
    L = torch.linalg.cholesky(B)
    C = torch.linalg.solve_triangular(L, A, upper=False)
    C = torch.linalg.solve_triangular(L, C.T, upper=False)
    lam, y = torch.linalg.eigh(0.5 * (C + C.T))
    v = torch.linalg.solve_triangular(L.T, y, upper=True)
    return lam.clamp_min(0.0), v


def _orthonormalise(kernels: Tensor, keep_above: float | None = None) -> Tensor:
    """Orthonormal basis of the span of kernels (r, ...) via SVD. With ``keep_above``, keep the
    directions whose singular value is at least that (the inputs being orthonormal before a
    projection); otherwise drop only numerically dependent ones."""
    if kernels.shape[0] == 0:
        return kernels
    shape = kernels.shape[1:]
    flat = kernels.reshape(kernels.shape[0], -1)
    _, S, Vh = torch.linalg.svd(flat, full_matrices=False)
    cut = keep_above if keep_above is not None else 1e-8 * float(S[0])
    rank = int((cut <= S).sum()) if S.numel() else 0
    out = Vh[:rank]
    # sign convention: the entry of largest magnitude is positive (deterministic output)
    idx = out.abs().argmax(dim=1)
    signs = torch.sign(out.gather(1, idx[:, None]))
    return (out * signs).reshape(rank, *shape)


def _pixel_permutation(h: Tensor, r: int) -> Tensor:
    """Index map (s*s,) with ``[p] = index of the pixel at h z_p`` (h grid-preserving)."""
    s = 2 * r + 1
    z = local_coordinates(r, dtype=_F64).reshape(-1, 2)
    hz = torch.round(z @ h.T).long()  # (x, y)
    cols, rows = hz[:, 0] + r, r - hz[:, 1]
    return rows * s + cols


def _project_pixel_group(
    basis: Tensor, group: list[tuple[Tensor, Tensor, Tensor]], r: int
) -> Tensor:
    """Project kernels (b, m, n, s, s) onto those with ``K(h z) = |det h|^-1 rho_out(h) K(z)
    rho_in(h)^-1`` for all h of a finite pixel group, i.e. average ``T_h K = |det h|
    rho_out(h)^-1 K(h z) rho_in(h)`` over the group; keep directions that survive with singular
    value >= 1/2 (kernels that were nearly invariant already)."""
    if basis.shape[0] == 0:
        return basis
    b, m, n, s, _ = basis.shape
    flat = basis.reshape(b, m, n, s * s)
    acc = torch.zeros_like(flat)
    for h, rho_in, rho_out in group:
        perm = _pixel_permutation(h, r)
        moved = flat[..., perm]  # K(h z)
        det = abs(float(torch.linalg.det(h)))
        acc += det * torch.einsum("ij,bjkp,kl->bilp", torch.linalg.inv(rho_out), moved, rho_in)
    proj = (acc / len(group)).reshape(b, m, n, s, s)
    return _orthonormalise(proj, keep_above=0.5)


def _pixel_group_reps(
    group: DiscoveredGroup,
    base_in: BaseRep,
    base_out: BaseRep,
    symmetries: list[tuple[Tensor, int]],
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """[(h, rho_in(h), rho_out(h))] for the grid-preserving elements of the group on which both
    blocks can be evaluated, closed under products (so the average is a projector)."""
    found: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
    for h, comp in symmetries:
        mats = []
        for base in (base_in, base_out):
            e = base.element(h)
            if e is None:
                e = _element_from_generators(group, base, h, comp)
            mats.append(e)
        if mats[0] is not None and mats[1] is not None:
            found[tuple(h.flatten().tolist())] = (h, mats[0], mats[1])
    # close under products (rho of a product is the product of rhos)
    changed = True
    while changed:
        changed = False
        for a in list(found.values()):
            for b in list(found.values()):
                h = a[0] @ b[0]
                key = tuple(h.flatten().tolist())
                if key not in found:
                    found[key] = (h, a[1] @ b[1], a[2] @ b[2])
                    changed = True
    return list(found.values())


def _element_from_generators(
    group: DiscoveredGroup, base: BaseRep, h: Tensor, comp: int
) -> Tensor | None:
    """rho(h) for a block known by generators only: h in the identity component with a real
    principal logarithm (rotations by +-90 degrees) -> exp(sum a_i B_i) with a the least-squares
    coefficients of log h in the algebra. None otherwise (products are found by closure)."""
    if comp != 0:
        return None
    log = scipy.linalg.logm(h.numpy())
    if np.iscomplexobj(log):
        if np.abs(log.imag).max() > 1e-8:
            return None
        log = log.real
    L = group.algebra
    a = torch.linalg.lstsq(L.reshape(L.shape[0], -1).T, torch.from_numpy(log).reshape(-1, 1))
    coeff = a.solution[:, 0]
    return torch.linalg.matrix_exp(torch.einsum("k,kij->ij", coeff, base.generators))


# ---------------------------------------------------------------------------------------------
# Layer


def _channel_rep(group: DiscoveredGroup, spec, channels: int, which: str) -> Rep:
    if spec is None:
        gens = group.in_rep if which == "in" else group.out_rep
        rep = Rep.channels(group, which) if gens is not None else Rep.scalar(group)
    else:
        rep = Rep.coerce(group, spec)
    if channels < 1 or channels % rep.dim != 0:
        raise ValueError(
            f"{which}_channels = {channels} is not a positive multiple of the dimension "
            f"{rep.dim} of {which}_rep = {rep}"
        )
    return (channels // rep.dim) * rep


class EquivariantConv2d(nn.Module):
    """2-D convolution equivariant to a discovered group of 2x2 chart transformations.

    Args:
        group: DiscoveredGroup with 2x2 algebra (chart coordinates x right, y up).
        in_channels, out_channels: numbers of channels; each is a multiple of its rep's
            dimension and carries that many copies of it.
        kernel_size: odd kernel size s.
        in_rep, out_rep: channel representations (Rep, string such as ``"4*S + 2*V"``, or
            generators (k, c, c)); default: the group's in_rep / out_rep if present, else
            scalars. Hidden layers of a stack carry e.g. ``"8*S + 4*V"``.
        mode: "auto", "smooth", "center" or "uniform" (see the module docstring).
        threshold: Rayleigh-quotient cut for smooth/uniform kernels (default 0.25).
        grid_tol: tolerance for recognising rotations by 90 degrees / flips as group elements.
        bias: equivariant bias (invariant vectors of out_rep, constant over space).
        padding: "same" (zero padding s // 2, the default) or an int.
        solver, dtype, generator: as for
            :class:`~atlasd.downstream.equivariant.layers.EquivariantLinear`.

    Attributes:
        n_free_parameters: trainable scalars (kernel coefficients + bias coefficients).
        mode: the mode used (auto resolved).

    The forward pass builds the full kernel (out, in, s, s) from the stored bases by one
    contraction per pair of blocks and calls ``F.conv2d`` once: (B, C_in, H, W) -> (B, C_out,
    H', W').
    """

    def __init__(
        self,
        group: DiscoveredGroup,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        in_rep=None,
        out_rep=None,
        *,
        mode: Mode = "auto",
        threshold: float = 0.25,
        grid_tol: float = 0.1,
        bias: bool = True,
        padding: str | int = "same",
        solver: EquivariantSolver | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if group.d != 2:
            raise ValueError(
                f"EquivariantConv2d needs a group of 2x2 chart transformations, got d = {group.d}"
            )
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size!r}")
        if mode not in ("auto", "smooth", "center", "uniform"):
            raise ValueError(f"mode must be auto, smooth, center or uniform, got {mode!r}")
        if padding != "same" and not (isinstance(padding, int) and padding >= 0):
            raise ValueError(f"padding must be 'same' or a non-negative int, got {padding!r}")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        solver = solver if solver is not None else EquivariantSolver()
        self.rep_in = _channel_rep(group, in_rep, in_channels, "in")
        self.rep_out = _channel_rep(group, out_rep, out_channels, "out")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        self.padding = kernel_size // 2 if padding == "same" else padding
        in_blocks = list(self.rep_in.slices())
        out_blocks = list(self.rep_out.slices())

        def solve_all(m: str) -> dict[tuple[str, str], KernelBasis]:
            out = {}
            for _, _, bo in out_blocks:
                for _, _, bi in in_blocks:
                    if (bi.key, bo.key) not in out:
                        out[(bi.key, bo.key)] = self._basis_for(
                            group, bi, bo, m, threshold, grid_tol, solver
                        )
            return out

        if mode == "auto":
            bases = solve_all("smooth")
            resolved = "smooth"
            if all(kb.basis.shape[0] == 0 for kb in bases.values()):
                bases, resolved = solve_all("center"), "center"
        else:
            bases, resolved = solve_all(mode), mode
        self.mode = resolved
        # store each distinct basis once; remember (out block, in block, basis, offset)
        names: dict[tuple[str, str], int] = {}
        self._pairs: list[tuple[int, int, int, int]] = []
        self.kernel_info: dict[tuple[str, str], KernelBasis] = {}
        n_w = 0
        init: list[tuple[int, int, float]] = []
        for j, (_, m_out, bo) in enumerate(out_blocks):
            for i, (_, m_in, bi) in enumerate(in_blocks):
                kb = bases[(bi.key, bo.key)]
                self.kernel_info[(bi.name, bo.name)] = kb
                r = kb.basis.shape[0]
                if r == 0:
                    continue
                if (bi.key, bo.key) not in names:
                    names[(bi.key, bo.key)] = len(names)
                    self.register_buffer(
                        f"basis_{len(names) - 1}", kb.basis.to(dtype), persistent=False
                    )
                size = r * m_out * m_in
                self._pairs.append((j, i, names[(bi.key, bo.key)], n_w))
                init.append((n_w, size, math.sqrt(bo.dim * bi.dim / (r * in_channels))))
                n_w += size
        if n_w == 0:
            warnings.warn(
                f"EquivariantConv2d: no equivariant kernel exists from {self.rep_in} to "
                f"{self.rep_out} in mode {resolved!r}; the layer outputs only its bias",
                stacklevel=2,
            )
        self.weight = nn.Parameter(torch.empty(n_w, dtype=dtype))
        with torch.no_grad():
            for off, size, std in init:
                self.weight[off : off + size].normal_(0.0, std, generator=generator)
        register_invariant_bias(self, out_blocks, solver, group.dim, dtype, bias)
        self._in_shapes = [(m, b.dim) for _, m, b in in_blocks]
        self._out_shapes = [(m, b.dim) for _, m, b in out_blocks]

    def _basis_for(
        self,
        group: DiscoveredGroup,
        bi: BaseRep,
        bo: BaseRep,
        mode: str,
        threshold: float,
        grid_tol: float,
        solver: EquivariantSolver,
    ) -> KernelBasis:
        """Kernel basis for one pair of blocks, through the solver's cache."""
        known = bi.discrete is not None and bo.discrete is not None
        if not known and group.n_components > 1:
            warnings.warn(
                "EquivariantConv2d: the action of the group's non-identity components on "
                f"{bi.name if bi.discrete is None else bo.name} is unknown, so only the identity "
                "component is imposed on that block",
                stacklevel=3,
            )
        key = BasisCache.key(
            [group.algebra, group.cosets, bi.generators, bo.generators, bi.discrete, bo.discrete],
            solver.decimals,
            extra=f"kernel;{self.kernel_size};{mode};{threshold};{grid_tol};{bi.expr};{bo.expr}",
        )
        cached = solver.cache.get(key)
        if cached is not None:
            return cached
        pixel_group = None
        if mode in ("smooth", "uniform") and self.kernel_size > 1:
            sym_key = BasisCache.key(
                [group.algebra, group.cosets], solver.decimals, extra=f"pixel;{grid_tol}"
            )
            symmetries = solver.cache.get(sym_key)
            if symmetries is None:
                symmetries = pixel_symmetries(group, grid_tol)
                solver.cache.put(sym_key, symmetries)
            if not known:  # coset elements need the coset action on channels
                symmetries = [(h, c) for h, c in symmetries if c == 0]
            pixel_group = _pixel_group_reps(group, bi, bo, symmetries)
        kb = kernel_basis(
            group.algebra,
            bi.generators,
            bo.generators,
            self.kernel_size,
            cosets=group.cosets if known else None,
            discrete_in=bi.discrete if known else None,
            discrete_out=bo.discrete if known else None,
            pixel_group=pixel_group,
            mode=mode,  # type: ignore[arg-type]
            threshold=threshold,
            solver=solver,
        )
        solver.cache.put(key, kb)
        return kb

    @property
    def n_free_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def kernel(self) -> Tensor:
        """The full kernel (out_channels, in_channels, s, s)."""
        s = self.kernel_size
        ref = self.weight
        blocks: dict[tuple[int, int], Tensor] = {}
        for j, i, b, off in self._pairs:
            Q = getattr(self, f"basis_{b}")  # (r, d_out, d_in, s, s)
            (m_out, d_out), (m_in, d_in) = self._out_shapes[j], self._in_shapes[i]
            r = Q.shape[0]
            w = ref[off : off + r * m_out * m_in].view(r, m_out, m_in)
            blk = torch.einsum("rab,rcdxy->acbdxy", w, Q)
            blocks[(j, i)] = blk.reshape(m_out * d_out, m_in * d_in, s, s)
        rows = []
        for j, (m_out, d_out) in enumerate(self._out_shapes):
            cols = [
                blocks.get((j, i), ref.new_zeros(m_out * d_out, m_in * d_in, s, s))
                for i, (m_in, d_in) in enumerate(self._in_shapes)
            ]
            rows.append(torch.cat(cols, dim=1))
        return torch.cat(rows, dim=0)

    def bias_vector(self) -> Tensor | None:
        """The invariant bias (out_channels,), or None."""
        return invariant_bias_vector(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return F.conv2d(x, self.kernel(), self.bias_vector(), padding=self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.rep_in} -> {self.rep_out}, kernel_size={self.kernel_size}, "
            f"mode={self.mode!r}, n_free_parameters={self.n_free_parameters}"
        )
