"""Lie algebra math as pure functions on tensors.

Conventions
-----------
- A *basis* (or *algebra*) is a tensor ``L`` of shape ``(k, d, d)``: ``k`` generators acting on
  ``R^d``. Inner products between generators are Frobenius: ``<A, B> = sum_ij A_ij B_ij``.
- Group elements near the identity are sampled as ``g = exp(sum_i c_i L_i)``.
- Linear algebra that needs it (spans, ranks, logarithms, membership) runs in float64 whatever the
  input dtype; results of those functions are float64.
- "Standard form" of a span is an orthonormal basis that depends on the span only (not on the
  basis it was given in): Gram-Schmidt applied to the rows of the reduced row echelon form of the
  vectorised generators. The "sparse form" is that echelon form itself, cleaned and scaled so that
  its largest entries are +-1, which is what a person reads (so(2) -> [[0, -1], [1, 0]]).
- Vectorisation is column-major (``vec(A) = A.T.flatten()``) so that echelon pivots fall on the
  lower triangle first: the sparse form of so(2) is ``[[0, -1], [1, 0]]``, not its negative.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import numpy as np
import scipy.linalg
import torch

__all__ = [
    "canonical_coset_representative",
    "closure_residual",
    "commutator",
    "exp_combination",
    "in_identity_component",
    "membership_residual",
    "normalize_basis",
    "normalize_det",
    "orthonormal_basis",
    "representation_error",
    "sample_coefficients",
    "sample_group",
    "similarity",
    "sparse_form",
    "standard_form",
]

_F64 = torch.float64


def _check_basis(L: torch.Tensor, name: str = "basis") -> torch.Tensor:
    if not isinstance(L, torch.Tensor):
        L = torch.as_tensor(L)
    if L.ndim == 2:
        L = L.unsqueeze(0)
    if L.ndim != 3 or L.shape[-1] != L.shape[-2]:
        raise ValueError(f"{name} must have shape (k, d, d), got {tuple(L.shape)}")
    if not torch.isfinite(L).all():
        raise ValueError(f"{name} contains NaN or Inf entries")
    return L


def _vec(L: torch.Tensor) -> torch.Tensor:
    """(k, d, d) -> (k, d*d), column-major vectorisation (k = 0 included)."""
    return L.transpose(-1, -2).reshape(L.shape[0], L.shape[-1] * L.shape[-2])


def _unvec(V: torch.Tensor, d: int) -> torch.Tensor:
    """(k, d*d) -> (k, d, d), inverse of :func:`_vec`."""
    return V.reshape(V.shape[0], d, d).transpose(-1, -2)


# ---------------------------------------------------------------------------------------------
# Sampling


def exp_combination(coefficients: torch.Tensor, algebra: torch.Tensor) -> torch.Tensor:
    """``exp(sum_i c_i L_i)`` for a batch of coefficient vectors.

    Args:
        coefficients: (..., k).
        algebra: (k, d, d).

    Returns:
        (..., d, d) in the promoted dtype of the inputs; differentiable in both.
    """
    A = torch.einsum("...k,kij->...ij", coefficients, algebra)
    return torch.linalg.matrix_exp(A)


def sample_coefficients(
    k: int,
    shape: tuple[int, ...] | int,
    scale: float | torch.Tensor = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Coefficients ``c ~ N(0, scale^2)`` of shape ``(*shape, k)``.

    ``scale`` may be a tensor of shape (k,) to give each generator its own sampling width (used
    for non-compact generators, whose orbits leave a chart quickly).
    """
    if isinstance(shape, int):
        shape = (shape,)
    c = torch.randn((*shape, k), generator=generator, dtype=dtype, device=device)
    return c * torch.as_tensor(scale, dtype=dtype, device=device)


def sample_group(
    algebra: torch.Tensor,
    shape: tuple[int, ...] | int,
    scale: float | torch.Tensor = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample ``g = exp(sum_i c_i L_i)`` with ``c ~ N(0, scale^2)`` i.i.d. per element.

    Args:
        algebra: (k, d, d).
        shape: batch shape, e.g. ``(B, K)`` for one element per sample and chart.

    Returns:
        (*shape, d, d), dtype of ``algebra``; differentiable with respect to ``algebra``.
    """
    algebra = _check_basis(algebra, "algebra")
    c = sample_coefficients(
        algebra.shape[0], shape, scale, generator, dtype=algebra.dtype, device=algebra.device
    )
    return exp_combination(c, algebra)


# ---------------------------------------------------------------------------------------------
# Bases, spans and standard forms


def normalize_basis(L: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each generator to unit Frobenius norm. (k, d, d) -> (k, d, d); zeros stay zero."""
    L = _check_basis(L)
    norms = L.flatten(1).norm(dim=1).clamp_min(eps)
    return L / norms[:, None, None]


def orthonormal_basis(L: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
    """An orthonormal (Frobenius) basis of span(L), via SVD in float64.

    Directions whose singular value is below ``rtol * s_max`` are dropped (exact linear
    dependence); this is a tolerance for *exact* dependence, not a noise threshold.

    Args:
        L: (k, d, d).

    Returns:
        (r, d, d) float64 with r = numerical rank; r may be 0 for an all-zero input.
    """
    L = _check_basis(L).to(_F64)
    d = L.shape[-1]
    _, s, Vh = torch.linalg.svd(_vec(L), full_matrices=False)
    if s.numel() == 0 or s[0] == 0:
        return L.new_zeros((0, d, d))
    r = int((s > rtol * s[0]).sum())
    return _unvec(Vh[:r], d)


def _rref(M: torch.Tensor, tol: float) -> torch.Tensor:
    """Reduced row echelon form of (r, n) with partial pivoting; zero rows removed."""
    M = M.clone()
    rows, cols = M.shape
    pivot_row = 0
    for col in range(cols):
        if pivot_row >= rows:
            break
        piv = int(torch.argmax(M[pivot_row:, col].abs())) + pivot_row
        if M[piv, col].abs() <= tol:
            M[pivot_row:, col] = 0.0
            continue
        if piv != pivot_row:
            M[[pivot_row, piv]] = M[[piv, pivot_row]]
        M[pivot_row] = M[pivot_row] / M[pivot_row, col]
        others = torch.arange(rows) != pivot_row
        M[others] -= M[others, col : col + 1] * M[pivot_row : pivot_row + 1]
        pivot_row += 1
    return M[:pivot_row]


def sparse_form(L: torch.Tensor, clean: float = 1e-3) -> torch.Tensor:
    """A readable basis of span(L): reduced row echelon form of the vectorised generators.

    Entries smaller than ``clean`` times the largest entry of their generator are set to zero,
    and each generator is scaled so its largest entry has magnitude 1, with the first entry
    (column-major) of magnitude at least 1/2 positive. The span is only approximately preserved
    when ``clean`` removes noise, which is the point.

    Args:
        L: (k, d, d).

    Returns:
        (r, d, d) float64.
    """
    Q = orthonormal_basis(L)
    d = Q.shape[-1]
    if Q.shape[0] == 0:
        return Q
    R = _rref(_vec(Q), tol=1e-9)
    scale = R.abs().amax(dim=1, keepdim=True)
    R = torch.where(R.abs() < clean * scale, torch.zeros_like(R), R)
    R = R / R.abs().amax(dim=1, keepdim=True)
    # sign: the first *significant* entry (column-major) is positive, so that float noise on a
    # small leading entry cannot flip a whole generator (noisy so(2) still reads [[0,-1],[1,0]])
    first = torch.argmax((R.abs() >= 0.5).to(torch.int8), dim=1)
    signs = torch.sign(R.gather(1, first[:, None]))
    # round away float dust so that exact structure (0, +-1, 1/2) prints and compares exactly
    return _unvec(torch.round(R * signs * 1e10) / 1e10, d)


def standard_form(L: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of span(L) that depends only on the span (float64, (r, d, d)).

    Gram-Schmidt (QR) of the echelon form: two bases of the same span give the same output up to
    floating point error, so discovered algebras can be compared and stored entry by entry.
    """
    Q = orthonormal_basis(L)
    d = Q.shape[-1]
    if Q.shape[0] == 0:
        return Q
    R = _rref(_vec(Q), tol=1e-9)
    q, r = torch.linalg.qr(R.T)
    # fix QR's sign freedom so the diagonal of r is positive
    signs = torch.sign(torch.diagonal(r))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return _unvec((q * signs).T.contiguous(), d)


def similarity(A: torch.Tensor, B: torch.Tensor) -> float:
    """Subspace similarity in [0, 1] between span(A) and span(B) (Frobenius inner product).

    ``sum_i cos^2(theta_i) / max(k, j)`` over the principal angles theta_i between the spans,
    with k, j the numbers of generators given. It is 1 only for equal spans given as bases of
    the same size; a missing or an extra (or linearly dependent) generator lowers it; it is
    invariant to the scale and to the choice of basis of each span.

    Args:
        A: (k, d, d).
        B: (j, d, d), same d.
    """
    A = _check_basis(A, "first basis")
    B = _check_basis(B, "second basis")
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(
            f"cannot compare generators of size {A.shape[-1]} with generators of size {B.shape[-1]}"
        )
    k, j = A.shape[0], B.shape[0]
    if k == j == 0:
        return 1.0  # two trivial algebras (no continuous symmetry) are equal spans
    Qa, Qb = orthonormal_basis(A), orthonormal_basis(B)
    if Qa.shape[0] == 0 or Qb.shape[0] == 0:
        return 0.0
    cosines = torch.linalg.svdvals(_vec(Qa) @ _vec(Qb).T)
    return float((cosines.clamp(0.0, 1.0) ** 2).sum() / max(k, j))


def commutator(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``[A, B] = AB - BA``, broadcasting over leading dimensions."""
    return A @ B - B @ A


def closure_residual(L: torch.Tensor) -> float:
    """How far span(L) is from being closed under the bracket (a Lie algebra).

    max over pairs i < j of ``|[Q_i, Q_j] - P [Q_i, Q_j]|_F`` with Q an orthonormal basis of the
    span and P the projection onto it. Scale-invariant; 0 for a Lie algebra, and of the order of
    the noise for a noisy discovered one. A single generator always closes.
    """
    Q = orthonormal_basis(L)
    r = Q.shape[0]
    if r < 2:
        return 0.0
    i, j = torch.triu_indices(r, r, offset=1)
    C = _vec(commutator(Q[i], Q[j]))
    V = _vec(Q)
    residual = C - (C @ V.T) @ V
    return float(residual.norm(dim=1).max())


def normalize_det(M: torch.Tensor) -> torch.Tensor:
    """Scale matrices to ``|det| = 1``: (..., d, d) -> (..., d, d) float64.

    Raises ValueError for (numerically) singular matrices.
    """
    M = torch.as_tensor(M).to(_F64)
    d = M.shape[-1]
    det = torch.linalg.det(M)
    scale = M.flatten(-2).norm(dim=-1) ** d
    if (det.abs() <= 1e-12 * scale).any():
        raise ValueError("cannot normalise a singular matrix to |det| = 1")
    return M / det.abs()[..., None, None] ** (1.0 / d)


# ---------------------------------------------------------------------------------------------
# Membership in exp(span) and cosets


def _real_log_coefficients(g: torch.Tensor, V: torch.Tensor) -> torch.Tensor | None:
    """Least-squares coefficients of the principal real logarithm of g in the basis V (k, d*d)."""
    try:
        log = scipy.linalg.logm(g.numpy())
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not np.all(np.isfinite(log)):
        return None
    if np.iscomplexobj(log):
        if np.abs(log.imag).max() > 1e-8 * max(1.0, np.abs(log).max()):
            return None
        log = log.real
    A = torch.from_numpy(np.ascontiguousarray(log)).to(_F64)
    return torch.linalg.lstsq(V.T, _vec(A[None])[0]).solution


@contextlib.contextmanager
def _single_thread():
    """Run tiny batched linear algebra on one thread and restore the setting afterwards.

    Intra-op threading on 8x8 matrices costs far more than it saves: with the other core busy,
    matrix_exp on such batches was measured 100x slower with two threads than with one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fit_exponentials(
    g: torch.Tensor,
    L: torch.Tensor,
    starts: torch.Tensor,
    n_factors: int,
    iters: int,
    stop_below: float = 1e-13,
) -> torch.Tensor:
    """Minimise ``|prod_f exp(sum c_f L) - g|_F / |g|_F`` from many starts with batched
    Levenberg-Marquardt in float64 (tiny problems: exact Jacobians are cheap and converge to
    machine precision, where first-order methods stall at ~1e-5 on ill-conditioned cosets).

    Args:
        g: (d, d); L: (k, d, d); starts: (S, n_factors, k).

    Returns:
        (S,) relative residuals at the end of the search.
    """
    S, n_f, k = starts.shape
    d = g.shape[-1]
    gnorm = g.norm()

    def residual_and_jacobian(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # c: (S, n_f * k) -> residual (S, d*d), Jacobian (S, d*d, n_f * k). Derivatives of exp come
        # from one matrix_exp of block matrices [[A, L_i], [0, A]], whose corner is dexp_A(L_i).
        A = torch.einsum("sfk,kij->sfij", c.reshape(S, n_f, k), L)
        blocks = A.new_zeros(S, n_f, k + 1, 2 * d, 2 * d)
        blocks[..., :d, :d] = A[:, :, None]
        blocks[..., d:, d:] = A[:, :, None]
        blocks[:, :, 1:, :d, d:] = L
        ex = torch.linalg.matrix_exp(blocks)
        E, D = ex[:, :, 0, :d, :d], ex[:, :, 1:, :d, d:]  # (S, n_f, d, d), (S, n_f, k, d, d)
        eye = torch.eye(d, dtype=_F64).expand(S, d, d)
        prefix, suffix = [eye], [eye]
        for f in range(n_f):
            prefix.append(prefix[-1] @ E[:, f])
            suffix.append(E[:, n_f - 1 - f] @ suffix[-1])
        M = prefix[-1]
        jac = [prefix[f][:, None] @ D[:, f] @ suffix[n_f - 1 - f][:, None] for f in range(n_f)]
        jac = torch.cat(jac, dim=1).flatten(2).transpose(1, 2) / gnorm
        return ((M - g) / gnorm).flatten(1), jac

    with _single_thread():
        return _levenberg_marquardt(residual_and_jacobian, starts.reshape(S, -1), iters, stop_below)


def _levenberg_marquardt(
    residual_and_jacobian, c: torch.Tensor, iters: int, stop_below: float
) -> torch.Tensor:
    """Batched Levenberg-Marquardt over S independent problems; c: (S, p). Returns (S,) norms
    of the final residuals."""
    S = c.shape[0]
    c = c.clone()
    lam = torch.full((S,), 1e-3, dtype=_F64)
    eye = torch.eye(c.shape[1], dtype=_F64)
    r, Jm = residual_and_jacobian(c)
    cost = (r**2).sum(1)
    history = [cost]
    for _ in range(iters):
        JtJ = Jm.transpose(1, 2) @ Jm
        Jtr = (Jm.transpose(1, 2) @ r[..., None])[..., 0]
        diag = torch.diagonal(JtJ, dim1=1, dim2=2)[:, None, :] * eye + 1e-12 * eye
        step = torch.linalg.solve(JtJ + lam[:, None, None] * diag, -Jtr)
        c_new = c + step
        r_new, J_new = residual_and_jacobian(c_new)
        cost_new = torch.nan_to_num((r_new**2).sum(1), nan=float("inf"))
        better = cost_new < cost
        c = torch.where(better[:, None], c_new, c)
        r = torch.where(better[:, None], r_new, r)
        Jm = torch.where(better[:, None, None], J_new, Jm)
        cost = torch.where(better, cost_new, cost)
        lam = torch.where(better, lam * 0.3, lam * 10.0).clamp(1e-12, 1e12)
        history.append(cost)
        if bool(cost.min() < stop_below**2):
            break
        # every start has stalled: a non-member converges to its (nonzero) distance quickly
        if len(history) > 6 and bool(((history[-6] - cost) <= 1e-6 * history[-6] + 1e-30).all()):
            break
    return cost.sqrt()


def membership_residual(
    g: torch.Tensor,
    algebra: torch.Tensor,
    *,
    n_starts: int = 12,
    seed: int = 0,
    max_factors: int = 2,
    stop_below: float = 1e-12,
) -> float:
    """Relative distance of ``g`` from the identity component generated by span(algebra).

    Returns ``min |exp(A_1) ... exp(A_f) - g|_F / |g|_F`` over A_i in the span and f <= max_factors
    (products of two exponentials reach elements that are not exponentials themselves, as in
    SL(2, R)). The search starts from the projection of the principal real logarithm of g (exact
    and fast when it exists) and falls back to seeded multi-start optimisation in float64.

    The residual is relative to |g| and the span is normalised first, so it depends neither on
    the scale of the generators nor on that of g's entries. A determinant of the wrong sign can
    never be reached by exponentials: that case returns ``inf`` at once.

    Args:
        g: (d, d).
        algebra: (k, d, d).
    """
    g = torch.as_tensor(g).to(_F64)
    L = orthonormal_basis(algebra)
    if g.shape != L.shape[-2:]:
        raise ValueError(
            f"group element of shape {tuple(g.shape)} does not match generators "
            f"of shape {tuple(L.shape[-2:])}"
        )
    if not torch.isfinite(g).all():
        raise ValueError("group element contains NaN or Inf entries")
    det = float(torch.linalg.det(g))
    if det <= 0:
        return math.inf
    k = L.shape[0]
    if k == 0:
        eye = torch.eye(g.shape[-1], dtype=_F64)
        return float((eye - g).norm() / g.norm())
    V = _vec(L)
    best = math.inf
    log_c = _real_log_coefficients(g, V)
    if log_c is not None:
        best = float(_fit_exponentials(g, L, log_c[None, None], 1, 20, stop_below).min())
        if best < stop_below:
            return best
    gen = torch.Generator().manual_seed(seed)
    # coefficient scale from the size of g's logarithm, so that far-away elements are reached
    spread = max(1.0, float(torch.log(g.norm() + 1.0)))
    for n_factors in range(1, max_factors + 1):
        widths = torch.tensor([0.5, 1.5, 3.0], dtype=_F64) * spread
        starts = torch.randn(n_starts, n_factors, k, generator=gen, dtype=_F64)
        starts = starts * widths.repeat_interleave(math.ceil(n_starts / 3))[:n_starts, None, None]
        if log_c is not None:
            starts[0, 0] = log_c
        best = min(best, float(_fit_exponentials(g, L, starts, n_factors, 100, stop_below).min()))
        if best < stop_below:
            break
    return best


def in_identity_component(
    g: torch.Tensor, algebra: torch.Tensor, tol: float = 1e-6, **kwargs
) -> bool:
    """Whether ``g`` (d, d) lies in the identity component generated by span(algebra), up to a
    relative tolerance ``tol`` on ``|g' - g|_F / |g|_F``. See :func:`membership_residual`."""
    return membership_residual(g, algebra, stop_below=min(tol, 1e-9), **kwargs) <= tol


def _signed_permutations(d: int) -> list[torch.Tensor]:
    """Signed permutation matrices in preference order: diagonal first, fewer -1 first, -1 last.

    For d > 4 only the 2^d diagonal sign matrices are listed (d! 2^d grows too fast)."""
    perms = list(itertools.permutations(range(d))) if d <= 4 else [tuple(range(d))]
    out = []
    for perm in perms:
        moved = sum(p != i for i, p in enumerate(perm))
        for signs in itertools.product((1.0, -1.0), repeat=d):
            n_neg = sum(s < 0 for s in signs)
            # prefer -1s in later positions: a reflection of the last axis reads as "flip z"
            neg_pos = tuple(-i for i, s in enumerate(signs) if s < 0)
            M = torch.zeros(d, d, dtype=_F64)
            M[list(perm), list(range(d))] = torch.tensor(signs, dtype=_F64)
            out.append(((moved, n_neg, neg_pos), M))
    out.sort(key=lambda t: t[0])
    return [M for _, M in out]


def canonical_coset_representative(
    h: torch.Tensor, algebra: torch.Tensor, tol: float = 1e-6
) -> torch.Tensor:
    """Canonical representative of the coset ``h G_0`` (G_0: identity component of the span).

    The first signed permutation matrix P (in the order: diagonal before permutations, fewer -1
    entries first, -1 entries as late as possible) with ``P^-1 h`` in G_0 up to ``tol``; so the
    reflection coset of O(2) gives diag(1, -1) and the identity component gives I. When no signed
    permutation lies in the coset (e.g. cosets of non-compact groups), ``h`` itself normalised to
    |det| = 1 is returned.

    Args:
        h: (d, d).
        algebra: (k, d, d).

    Returns:
        (d, d) float64.
    """
    h = normalize_det(torch.as_tensor(h))
    det_sign = torch.sign(torch.linalg.det(h))
    for P in _signed_permutations(h.shape[-1]):
        if torch.sign(torch.linalg.det(P)) != det_sign:
            continue
        if in_identity_component(P.T @ h, algebra, tol=tol):
            return P
    return h


def representation_error(
    algebra: torch.Tensor,
    in_rep: torch.Tensor,
    truth_algebra: torch.Tensor,
    truth_in_rep: torch.Tensor,
) -> dict[str, float]:
    """Compare a learned channel representation with the documented one.

    A representation is linear in the algebra element, so the learned generators are first
    written in the truth's basis, ``algebra ~ T truth_algebra`` (least squares, T (k, j)); the
    representation the truth predicts for them is ``T truth_in_rep``. This removes the sign and
    scale freedom of the learned generators.

    Args:
        algebra (k, d, d), in_rep (k, c, c): e.g. ``group.algebra``, ``group.in_rep``.
        truth_algebra (j, d, d), truth_in_rep (j, c, c).

    Returns:
        ``{"algebra_residual"}``: relative residual of ``algebra ~ T truth`` (0 when the
        algebras agree); ``{"rep_relative_error"}``: ``|in_rep - T truth_in_rep| /
        |T truth_in_rep|`` (Frobenius over all generators); ``{"rep_cosine"}``: cosine between
        the two (1 = same direction).
    """
    A = torch.as_tensor(algebra, dtype=torch.float64)
    R = torch.as_tensor(in_rep, dtype=torch.float64)
    A0 = torch.as_tensor(truth_algebra, dtype=torch.float64)
    R0 = torch.as_tensor(truth_in_rep, dtype=torch.float64)
    if A.shape[0] != R.shape[0] or A0.shape[0] != R0.shape[0] or R.shape[1:] != R0.shape[1:]:
        raise ValueError(
            f"shapes do not match: algebra {tuple(A.shape)}, in_rep {tuple(R.shape)}, truth "
            f"{tuple(A0.shape)}, {tuple(R0.shape)}"
        )
    T = torch.linalg.lstsq(A0.flatten(1).T, A.flatten(1).T).solution.T  # (k, j)
    fitted = torch.einsum("kj,jab->kab", T, A0)
    predicted = torch.einsum("kj,jab->kab", T, R0)
    denom = float(predicted.norm())
    if denom == 0.0:
        raise ValueError("the learned algebra has no component along the truth: nothing to compare")
    return {
        "algebra_residual": float((A - fitted).norm() / A.norm()),
        "rep_relative_error": float((R - predicted).norm()) / denom,
        "rep_cosine": float((R * predicted).sum()) / (float(R.norm()) * denom + 1e-300),
    }
