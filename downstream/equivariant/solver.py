"""The equivariance constraint solver: the null space of the stacked constraints of a linear map
between two representations, its rank selection and the solver's cache. Representations
(direct sums, tensor products, duals) live in :mod:`atlasd.downstream.equivariant.reps`.

Conventions
-----------
- A representation is given by generators ``B`` (k, n, n), one per generator of the group's Lie
  algebra (in the order of ``group.algebra``), and discrete matrices ``H`` (c, n, n), one per
  coset representative of ``group.cosets`` (identity first). A map ``W`` (m, n) from a
  representation (B_in, H_in) to (B_out, H_out) is equivariant when
  ``B_out W - W B_in = 0`` for every generator and ``H_out W H_in^-1 = W`` for every coset.
- ``vec(W) = W.flatten()`` (row-major), so ``vec(B W) = (B kron I) vec(W)`` and
  ``vec(W B) = (I kron B^T) vec(W)``.
- Tensor products use the Kronecker sum for generators (``B kron I + I kron B'``) and the
  Kronecker product for group elements; the feature of ``x kron y`` at index ``i * dim(y) + j``
  is ``x_i y_j`` (row-major outer product). The dual of (B, H) is (-B^T, H^-T).
- A :class:`Rep` is a direct sum of blocks ``mult * base``; channels are laid out block by block
  and, inside a block, copy by copy: channel ``offset + copy * base.dim + component``.

Rank selection
--------------
The basis is the null space of the Gram matrix ``G = sum_k C_k^T C_k + sum_c D_c^T D_c`` of the
stacked constraints, solved in float64 with ``eigh``. Discovered generators carry noise, so the
null space is not exactly null and an absolute cut-off (say 1e-5) either keeps spurious
directions or loses true ones. The rank is picked at the largest relative gap of the spectrum:

1. eigenvalues at the float64 floor (below ``exact_rtol * lambda_max``) are exact solutions
   (maps such as the identity or the swap of a tensor square commute with noisy generators
   exactly, so an exact and a noisy part of the null space often coexist);
2. among the remaining eigenvalues, the largest ratio ``lambda_{j+1} / lambda_j`` between
   neighbours marks the end of the (noisy) null space, provided it spans at least ``min_gap``
   decades; otherwise the remaining eigenvalues are all constraints.

Taking the largest gap of the whole spectrum instead would, in the mixed case, cut between the
exact and the noisy solutions and lose the latter; step 1 prevents that.

Noise-aware cuts. A fixed ``min_gap`` fails for generators as noisy as discovered ones: with
so(1,3) generators perturbed by Gaussian noise of 3e-2 per entry (similarity to the true
algebra 0.994, like the discovered jets group's 0.996) the Minkowski metric of ``V⊗V -> S``
sits at 8e-4 of ``lambda_max`` and the first constraint at 5e-2, a gap of 1.8 decades, so the
metric was dropped and invariant gates saw no invariant. The noise of the generators is
therefore measured and used:

3. ``rho`` (:func:`generator_noise`) is the closure defect of the generators being solved: the
   part of their commutators outside their span, relative to the size of the products that
   form the commutators (0 for any exact representation of a Lie algebra and for a single
   generator; about 3x the relative entry noise for noisy so(3) and so(1,3)). A true solution
   of the nearby exact group then has a Gram eigenvalue of order ``rho^2 lambda_gen``, with
   ``lambda_gen`` the largest eigenvalue of the generator part of G (coset constraints are
   exact, discovered cosets being snapped to signed permutations, and can dominate
   ``lambda_max``). Measured on so(3), so(1,3) (with and without a parity coset), so(1,3) +
   scaling and so(2) + scaling with Gaussian entry noise 1e-2 to 1e-1, seeds 0-2, maps between
   S, V, V⊗V, V⊗V⊗V: true solutions lie below ``0.82 rho^2 lambda_gen`` (2.6 for the abelian
   so(2) + scaling, whose commutators vanish and so measure the noise less well), constraints
   above ``1.6 rho^2 lambda_gen`` at noise <= 3e-2. Discovered noise is not Gaussian: the
   metric of the group found by ``atlasd discover --config configs/jets.yaml`` (similarity
   0.996, rho 0.052) sits at ``1.33 rho^2 lambda_gen``. The noise bound is
   ``tau = (noise_factor * rho)^2 lambda_gen / lambda_max`` (relative) with
   ``noise_factor = 1.5``, which leaves that metric a factor 1.7 of margin;
4. a cut whose lower eigenvalue is at most ``tau`` is also admissible when its gap spans at
   least ``noise_gap`` decades (0.5 by default, a factor 3 in eigenvalues), and the rank is the
   admissible cut with the largest gap.

Over those synthetic groups and maps (seeds 0-4, 7 maps each; 1050 cases from noise 1e-3 to
1e-1) the ranks of the exact group were recovered for so(3) and so(1,3), with or without
parity, in every case up to noise 6e-2 per entry (the plain gap rule got 84 of 140 wrong at
3e-2); the failures left are at 1e-1, the abelian so(2) + scaling (5 of 35 wrong at 3e-2, 9
with the plain gap rule) and three spurious solutions of ``V -> V⊗V⊗V`` for so(1,3) + scaling
at 3e-2 (that constraint spectrum reaches down to ``1.6 rho^2 lambda_gen``); 56 wrong in all,
319 with the plain gap rule. ``noise_factor = 1`` misses the discovered metric (it is kept
there only because its gap is 2.07 decades); 2 with ``noise_gap = 1`` loses more than it
gains (145 wrong).

For exact generators and for one-generator groups ``rho = 0`` and the rule is the plain gap
rule. The noise rule cannot separate solutions from constraints once ``tau`` reaches the
smallest constraint eigenvalues (noise of about 0.1 per entry on so(1,3), similarity about
0.93); noise on coset matrices is not measured. The spectrum, ``rho``, the cut and the gap
are logged at DEBUG level and returned by :meth:`EquivariantSolver.solve`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BasisCache",
    "BasisSolution",
    "EquivariantSolver",
    "as_matrices",
    "equivariant_basis",
    "generator_noise",
    "kron",
]

_F64 = torch.float64
logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Input checks


def as_matrices(x: Any, name: str, ndim: int = 3) -> Tensor:
    """``x`` as a float64 tensor of ``ndim`` dims with square trailing matrices, all finite."""
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must be a tensor of matrices, got {type(x).__name__}"
            ) from None
    # contiguous: torch.kron fails on some strided views
    x = x.detach().to(device="cpu", dtype=_F64).contiguous()
    if x.ndim != ndim or (ndim >= 2 and x.shape[-1] != x.shape[-2]):
        want = "(k, d, d)" if ndim == 3 else "(d, d)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf entries")
    return x


def kron(a: Tensor, b: Tensor) -> Tensor:
    """Kronecker product of matrices (p, q) x (r, s) -> (p*r, q*s), or of a matrix with a
    batch of matrices (m, m) x (n, d, d) -> (n, m*d, m*d) (torch.kron fails on some strided
    views)."""
    if a.ndim == 2 and b.ndim == 2:
        return (a[:, None, :, None] * b[None, :, None, :]).reshape(
            a.shape[0] * b.shape[0], a.shape[1] * b.shape[1]
        )
    out = a[..., :, None, :, None] * b[..., None, :, None, :]
    return out.reshape(*out.shape[:-4], a.shape[-2] * b.shape[-2], a.shape[-1] * b.shape[-1])


# ---------------------------------------------------------------------------------------------
# Cache


class BasisCache:
    """Bounded least-recently-used cache of solved bases.

    Keys are SHA-256 digests of the shapes and of the float64 values rounded to ``decimals``
    (never a repr, which prints few digits and hides values). A cache belongs to whoever
    creates it (usually an :class:`EquivariantSolver` shared by the layers of one model), so
    nothing is kept between unrelated models and nothing is global.
    """

    def __init__(self, maxsize: int = 256) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, got {maxsize}")
        self.maxsize = int(maxsize)
        self._data: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(arrays: Sequence[Tensor | None], decimals: int, extra: str = "") -> str:
        """Digest of ``arrays`` (None allowed) rounded to ``decimals`` and of ``extra``."""
        h = hashlib.sha256(extra.encode())
        for a in arrays:
            if a is None:
                h.update(b"none;")
                continue
            arr = np.round(a.detach().to("cpu", _F64).numpy(), decimals) + 0.0  # -0.0 -> 0.0
            h.update(str(tuple(arr.shape)).encode() + b";")
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def get(self, key: str) -> Any | None:
        if key in self._data:
            self._data.move_to_end(key)
            self.hits += 1
            return self._data[key]
        self.misses += 1
        return None

    def put(self, key: str, value: Any) -> None:
        if self.maxsize == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)


# ---------------------------------------------------------------------------------------------
# Solver


@dataclass(frozen=True)
class BasisSolution:
    """A solved basis and how its rank was chosen.

    Attributes:
        basis: (r, m, n) float64, orthonormal in the Frobenius inner product.
        eigenvalues: (m * n,) ascending eigenvalues of the normalised Gram matrix of the stacked
            constraints (the squared singular values of the constraint operator).
        rank: r.
        n_exact: how many of the r solutions are exact (at the float64 floor).
        gap: decades (log10 of the eigenvalue ratio) of the gap at the cut above the noisy
            solutions; ``inf`` when all solutions are exact, ``nan`` when there is no cut (every
            direction is a solution).
        noise: measured closure noise ``rho`` of the generators (:func:`generator_noise`, the
            larger of input and output); 0 for exact generators.
        threshold: ``tau = (noise_factor * rho)^2 lambda_gen / lambda_max``, the largest
            relative eigenvalue that the noise can explain (cuts below it need only
            ``noise_gap`` decades); 0 for exact generators.
    """

    basis: Tensor
    eigenvalues: Tensor
    rank: int
    n_exact: int
    gap: float
    noise: float = 0.0
    threshold: float = 0.0


class EquivariantSolver:
    """Solves equivariance constraints in float64 and caches the bases it has solved.

    Args:
        min_gap: smallest gap, in decades of the Gram eigenvalues (twice the decades of the
            singular values), that separates noisy solutions from constraints. 2.0 means the
            constraint singular values jump by 10x; the spectra of genuine constraints (weights
            of the representations) rarely jump by that much between neighbours.
        exact_rtol: eigenvalues below ``exact_rtol * lambda_max`` are exact solutions (float64
            ``eigh`` has an error of about 1e-16 * lambda_max * size).
        noise_factor: the noise bound is ``tau = (noise_factor * rho)^2 lambda_gen``, with
            ``rho`` the measured closure noise of the generators and ``lambda_gen`` the largest
            eigenvalue of the generator constraints (see the module docstring); 0 disables
            the noise rule (the plain gap rule).
        noise_gap: smallest gap, in decades, of a cut whose lower eigenvalue is below ``tau``.
        cache_size: number of solved bases kept (least recently used first out); 0 disables.
        decimals: generator values are rounded to this many decimals for the cache key.
        max_size: largest ``m * n`` solved densely; bigger maps must be split into blocks
            (:class:`Rep` does so for the layers).
    """

    def __init__(
        self,
        *,
        min_gap: float = 2.0,
        exact_rtol: float = 1e-12,
        noise_factor: float = 1.5,
        noise_gap: float = 0.5,
        cache_size: int = 256,
        decimals: int = 10,
        max_size: int = 2500,
    ) -> None:
        if min_gap <= 0:
            raise ValueError(f"min_gap must be positive (decades), got {min_gap}")
        if not 0 < exact_rtol < 1:
            raise ValueError(f"exact_rtol must be in (0, 1), got {exact_rtol}")
        if noise_factor < 0:
            raise ValueError(f"noise_factor must be >= 0, got {noise_factor}")
        if not 0 < noise_gap <= min_gap:
            raise ValueError(f"noise_gap must be in (0, min_gap={min_gap}], got {noise_gap}")
        self.min_gap = float(min_gap)
        self.exact_rtol = float(exact_rtol)
        self.noise_factor = float(noise_factor)
        self.noise_gap = float(noise_gap)
        self.decimals = int(decimals)
        self.max_size = int(max_size)
        self.cache = BasisCache(cache_size)

    def basis(
        self,
        gens_in: Tensor,
        gens_out: Tensor,
        discrete_in: Tensor | None = None,
        discrete_out: Tensor | None = None,
    ) -> Tensor:
        """Orthonormal basis (r, m, n) float64 of the equivariant maps; see :meth:`solve`."""
        return self.solve(gens_in, gens_out, discrete_in, discrete_out).basis

    def solve(
        self,
        gens_in: Tensor,
        gens_out: Tensor,
        discrete_in: Tensor | None = None,
        discrete_out: Tensor | None = None,
    ) -> BasisSolution:
        """Solve ``B_out W = W B_in`` (all generators) and ``H_out W H_in^-1 = W`` (all cosets).

        Args:
            gens_in: (k, n, n) generators on the input space; k may be 0.
            gens_out: (k, m, m) generators on the output space, same k.
            discrete_in, discrete_out: (c, n, n) and (c, m, m) coset matrices, both or neither;
                the identity may be included (it adds no constraint).

        Returns:
            A :class:`BasisSolution`; its basis is canonical for the solution space (it depends
            on the space, not on how ``eigh`` happened to rotate degenerate eigenvectors).
        """
        B_in = as_matrices(gens_in, "gens_in")
        B_out = as_matrices(gens_out, "gens_out")
        if B_in.shape[0] != B_out.shape[0]:
            raise ValueError(
                f"gens_in has {B_in.shape[0]} generators but gens_out has {B_out.shape[0]}; "
                "they must represent the same algebra elements"
            )
        if (discrete_in is None) != (discrete_out is None):
            raise ValueError("give discrete_in and discrete_out together (or neither)")
        H_in = H_out = None
        if discrete_in is not None:
            H_in = as_matrices(discrete_in, "discrete_in")
            H_out = as_matrices(discrete_out, "discrete_out")
            if H_in.shape[0] != H_out.shape[0]:
                raise ValueError(
                    f"discrete_in has {H_in.shape[0]} matrices but discrete_out has "
                    f"{H_out.shape[0]}; they must represent the same coset representatives"
                )
            if H_in.shape[-1] != B_in.shape[-1] or H_out.shape[-1] != B_out.shape[-1]:
                raise ValueError(
                    f"discrete matrices {tuple(H_in.shape)} -> {tuple(H_out.shape)} do not match "
                    f"the generators {tuple(B_in.shape)} -> {tuple(B_out.shape)}"
                )
        n, m = B_in.shape[-1], B_out.shape[-1]
        if m * n > self.max_size:
            raise ValueError(
                f"a {m}x{n} map has {m * n} entries, more than max_size={self.max_size} for a "
                "dense solve; split the representations into blocks (Rep does this for layers)"
            )
        key = BasisCache.key(
            [B_in, B_out, H_in, H_out],
            self.decimals,
            extra=(
                f"gap={self.min_gap};exact={self.exact_rtol};"
                f"noise={self.noise_factor};noise_gap={self.noise_gap}"
            ),
        )
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        solution = self._solve(B_in, B_out, H_in, H_out)
        self.cache.put(key, solution)
        return solution

    def _solve(
        self, B_in: Tensor, B_out: Tensor, H_in: Tensor | None, H_out: Tensor | None
    ) -> BasisSolution:
        n, m = B_in.shape[-1], B_out.shape[-1]
        N = m * n
        eye_n = torch.eye(n, dtype=_F64)
        eye_m = torch.eye(m, dtype=_F64)
        G = torch.zeros(N, N, dtype=_F64)
        for Bo, Bi in zip(B_out, B_in, strict=True):
            # scale each generator's constraint to O(1): the null space does not depend on it,
            # but the gap test compares eigenvalues of different constraints
            scale = max(float(Bo.norm()), float(Bi.norm()))
            if scale == 0.0:
                continue
            C = (kron(Bo, eye_n) - kron(eye_m, Bi.T.contiguous())) / scale
            G += C.T @ C
        rho = max(generator_noise(B_in), generator_noise(B_out))
        # the noise bound scales with the generator constraints only (coset constraints are
        # exact and can dominate lambda_max)
        lam_gen = _top_eigenvalue(G) if rho > 0.0 else 0.0
        if H_in is not None:
            for Ho, Hi in zip(H_out, H_in, strict=True):
                try:
                    Hi_inv = torch.linalg.inv(Hi)
                except torch.linalg.LinAlgError:
                    raise ValueError("a discrete_in matrix is singular") from None
                K = kron(Ho, Hi_inv.T.contiguous())
                D = (K - torch.eye(N, dtype=_F64)) / max(1.0, float(torch.linalg.norm(K, 2)))
                G += D.T @ D
        G = 0.5 * (G + G.T)
        lam, U = torch.linalg.eigh(G)
        lam = lam.clamp_min(0.0)
        lam_max = float(lam[-1])
        tau = (self.noise_factor * rho) ** 2 * lam_gen / lam_max if lam_max > 1e-300 else 0.0
        if lam_max <= 1e-300:
            rank, n_exact, gap = N, N, math.nan
        else:
            exact = lam <= self.exact_rtol * lam_max
            n_exact = int(exact.sum())
            rank, gap = n_exact, (math.inf if n_exact else math.nan)
            rest = lam[n_exact:] / lam_max
            if rest.numel() >= 2:
                log_rest = torch.log10(rest)
                gaps = log_rest[1:] - log_rest[:-1]
                # a cut j (after rest[j]) is a plain gap of min_gap decades, or a smaller gap
                # (noise_gap) whose lower side the measured noise can explain (<= tau)
                admissible = (gaps >= self.min_gap) | (
                    (rest[:-1] <= tau) & (gaps >= self.noise_gap)
                )
                if bool(admissible.any()):
                    j = int(torch.argmax(torch.where(admissible, gaps, -math.inf)))
                    rank, gap = n_exact + j + 1, float(gaps[j])
        lam_rel = lam / lam_max if lam_max > 0 else lam
        if logger.isEnabledFor(logging.DEBUG):
            shown = ", ".join(f"{v:.2e}" for v in lam_rel[: min(N, rank + 6)].tolist())
            logger.debug(
                "equivariant_basis %dx%d: rank %d (%d exact, gap %.2f decades, noise %.2e, "
                "noise bound %.2e); relative spectrum starts %s",
                m,
                n,
                rank,
                n_exact,
                gap,
                rho,
                tau,
                shown,
            )
        basis = _canonical_rows(U[:, :rank].T).reshape(rank, m, n)
        return BasisSolution(
            basis=basis,
            eigenvalues=lam_rel,
            rank=rank,
            n_exact=n_exact,
            gap=gap,
            noise=rho,
            threshold=tau,
        )


def _top_eigenvalue(G: Tensor, iterations: int = 60) -> float:
    """Largest eigenvalue of a symmetric positive semi-definite G (N, N) by power iteration
    from a fixed pseudo-random start (deterministic; a slight underestimate at worst, which
    only makes the noise bound stricter)."""
    start = torch.Generator().manual_seed(0)
    v = torch.randn(G.shape[0], generator=start, dtype=_F64)
    v = v / v.norm()
    lam = 0.0
    for _ in range(iterations):
        w = G @ v
        lam = float(v @ w)
        norm = float(w.norm())
        if norm <= 1e-300:
            return 0.0
        v = w / norm
    return lam


def generator_noise(generators: Tensor, rtol: float = 1e-10) -> float:
    """Closure noise ``rho`` of generators (k, n, n) of a (possibly noisy) representation.

    With Q an orthonormal basis (Frobenius) of their span and P the projection onto it::

        rho^2 = sum_{i<j} |[Q_i, Q_j] - P [Q_i, Q_j]|^2
                / sum_{i<j} (|Q_i Q_j|^2 + |Q_j Q_i|^2)

    0 for the generators of any exact representation of a Lie algebra (the bracket closes)
    and for fewer than two independent generators; for Gaussian entry noise of size s on
    so(3) or so(1,3) it is about 3 s (the module docstring says how it bounds the eigenvalues of
    noisy solutions). Dividing by the products rather than
    by the commutators keeps it small for noisy abelian algebras, whose exact commutators
    vanish. Scale-invariant; Q is the SVD basis of the generators given, and another basis of the
    same span changes rho slightly (the numerator is basis-independent, the denominator omits
    the squares Q_i Q_i, whose inclusion made the noise bound separate solutions from
    constraints less well: 1.3x instead of 2x in the calibration above; measured change under
    a random basis of a noisy so(1,3): 0.4 %).

    Args:
        generators: (k, n, n), any dtype; zero generators are ignored.
        rtol: singular values of the stacked generators below ``rtol * max`` are dropped.
    """
    B = torch.as_tensor(generators).detach().to("cpu", _F64)
    if B.ndim != 3 or B.shape[0] < 2 or B.shape[-1] < 2:
        return 0.0
    flat = B.reshape(B.shape[0], -1)
    _, sv, Vh = torch.linalg.svd(flat, full_matrices=False)
    if float(sv[0]) <= 0.0:
        return 0.0
    Qf = Vh[sv > rtol * sv[0]]  # (r, n*n) orthonormal rows
    r = Qf.shape[0]
    if r < 2:
        return 0.0
    Q = Qf.reshape(r, B.shape[-1], B.shape[-1])
    i, j = torch.triu_indices(r, r, offset=1)
    AB, BA = Q[i] @ Q[j], Q[j] @ Q[i]
    C = (AB - BA).reshape(i.numel(), -1)
    outside = C - (C @ Qf.T) @ Qf
    scale = float(AB.square().sum() + BA.square().sum())
    if scale <= 0.0:
        return 0.0
    return math.sqrt(float(outside.square().sum()) / scale)


def _canonical_rows(Q: Tensor) -> Tensor:
    """A canonical orthonormal basis (rows) of the row space of ``Q`` (r, N) with orthonormal rows.

    Greedy column pivoting (the column of largest norm, then of largest residual norm after
    projecting out the chosen ones, ties to the first) uses only the projector ``Q^T Q``, so
    the echelon form ``E`` with ``E[:, pivots] = I`` and its Gram-Schmidt orthonormalisation
    depend on the space, not on the rotation ``eigh`` chose inside a degenerate eigenspace.
    """
    r = Q.shape[0]
    if r == 0:
        return Q
    residual = Q.clone()
    pivots: list[int] = []
    for _ in range(r):
        norms = residual.norm(dim=0)
        if pivots:
            norms[pivots] = -1.0
        # ties (common: exact bases have many columns of equal norm) go to the first column,
        # so that float noise cannot pick a different pivot for the same space
        p = int(torch.nonzero(norms >= (1 - 1e-8) * norms.max())[0, 0])
        pivots.append(p)
        v = residual[:, p] / residual[:, p].norm()
        residual = residual - v[:, None] * (v @ residual)[None, :]
    piv = sorted(pivots)
    E = torch.linalg.solve(Q[:, piv], Q)
    q, R = torch.linalg.qr(E.T)
    signs = torch.sign(torch.diagonal(R))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    out = (q * signs).T.contiguous()
    # float dust below 1e-14 would print as noise in exact bases (identity, metric)
    return torch.where(out.abs() < 1e-14, torch.zeros_like(out), out)


def equivariant_basis(
    gens_in: Tensor,
    gens_out: Tensor,
    discrete_in: Tensor | None = None,
    discrete_out: Tensor | None = None,
    *,
    solver: EquivariantSolver | None = None,
) -> Tensor:
    """Orthonormal basis of the equivariant linear maps between two representations.

    ``{W (m, n) : B_out W - W B_in = 0 for all k;  H_out W H_in^-1 = W for all c}``, solved in
    float64 from the Gram matrix of the stacked constraints with the rank at the largest
    relative gap of its spectrum (see the module docstring); robust to noisy generators.

    Args:
        gens_in: (k, n, n) generators acting on the input.
        gens_out: (k, m, m) generators acting on the output (same algebra elements).
        discrete_in: (c, n, n) coset representatives acting on the input, or None.
        discrete_out: (c, m, m) the same coset representatives acting on the output, or None.
        solver: an :class:`EquivariantSolver` (thresholds and a shared cache); None solves
            with default settings and no cache.

    Returns:
        (r, m, n) float64, orthonormal in the Frobenius inner product; r may be 0.
    """
    if solver is None:
        solver = EquivariantSolver(cache_size=0)
    return solver.basis(gens_in, gens_out, discrete_in, discrete_out)
