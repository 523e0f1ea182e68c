"""Ranks and spectra of the parameter-to-output map: functional dimension, Gauss-Newton spectrum,
effective dimension and the rank bounds on the learning coefficient.

All linear algebra is in float64 on a float64 copy of the model (the model itself is untouched);
ranks are cut at the precision of the data (below).

* The Jacobian ``J = d f(inputs) / d params`` has one row per output entry (``n`` samples times the
  output size) and one column per trainable parameter (``d``). It is formed with per-sample
  ``torch.func.jacrev``, vmapped over chunks of inputs; when it has more rows than ``2 d`` the
  rows are folded into the ``d x d`` triangular factor of a QR decomposition, which has the same
  singular values, so memory stays ``O(d^2 + chunk rows * d)``.
* Rank tolerance (documented, used by every rank here: :attr:`JacobianSpectrum.rank`, hence
  :func:`functional_dimension` and the Gauss-Newton rank). A singular value ``s_i`` of ``J``
  counts when ``s_i > tol * s_max``. The default relative ``tol`` (:func:`precision_cut`)
  follows the *working precision* of the data, not float64's, although ``J`` is formed in
  float64::

      eps = max(finfo(inputs.dtype).eps, finfo(parameter dtype).eps)   # the coarser dtype
      lo, hi = eps, max(rows, d) * eps                                  # the precision band

  values above ``hi s_max`` (NumPy's ``matrix_rank`` cut at that precision) always count,
  values at or below ``lo s_max`` never do, and inside the band the cut goes to the lowest drop
  ``s_k / max(s_{k+1}, lo s_max)`` of at least a decade (:data:`CLEAN_DROP`), else to the
  largest drop there; ``tol`` is the geometric middle of that drop, capped at ``hi``. Why:
  float32 data pin a point only to about ``eps32`` of a subspace, and its rounding puts the
  directions the data never reach at ``<= 0.1 eps32 s_max`` (``~1e-8``); float64 arithmetic
  puts exact zeros at ``~eps64 s_max``. Measured on a bias-free 6-4-1 tanh network (28
  parameters) on 200 inputs in a 3-dimensional subspace of R^6, seeds 0-4: the 16 true values
  lie above ``7e-4 s_max``, the 12 rounding ones of float32 data at ``<= 9e-9 s_max`` (gap
  ``6e4`` to ``1e6``), where the old float64 cut ``4.4e-14`` counted them and gave 28. A pure
  cut at ``hi`` (``2.4e-5`` there) is robust to rounding but drops small genuine directions of
  ill-conditioned float32 networks (a 1-2-1 tanh net with a value at ``5e-5``); the largest gap
  of the whole spectrum cuts a full-rank spectrum, which has no gap, at random. An explicit
  ``tol`` overrides all of this. :attr:`JacobianSpectrum.gap` (``s_r / s_{r+1}`` at the cut)
  says how cleanly the rank separates: ``>= 1e3`` in every exact case of the tests, ``inf``
  when nothing is cut.

  Limits. Values within a decade of ``eps`` are at the edge of what the data can resolve and
  may go either way: one-input tanh nets with several units have genuine values down to
  ``1e-12 s_max``, so their float32 rank falls short of ``d`` (about 5 % of the small float32
  nets of the tests; all reach ``d`` in float64). Off-subspace *data* of size ``eps_x`` well
  above the working precision (``1e-4``, ``1e-3``) is signal, not rounding: its directions have
  singular values proportional to ``eps_x`` and count, so the rank returns to the full value
  (the gradual regime of the notes, where the Hessian along those directions and with it the
  learning coefficient's drop fade smoothly with ``eps_x``).
* Gauss-Newton matrix for the per-sample loss ``0.5 |f(x) - y|^2`` (the default of
  :func:`atlasd.downstream.estimate_llc`): ``G = J^T J / n``, the Hessian of ``L_n`` at a
  zero-residual parameter. Its eigenvalues are ``s_i^2 / n`` and its rank, at the same
  tolerance on ``s_i``, is the functional dimension (:attr:`JacobianSpectrum.rank`).
* Effective dimension at inverse temperature ``n_beta`` and localisation ``gamma``:
  ``sum_i n_beta mu_i / (n_beta mu_i + gamma)``. On a quadratic basin with Hessian eigenvalues
  ``mu_i`` the localised posterior is Gaussian and the LLC estimator converges to *half* of it.
* Rank bounds (Watanabe): with ``r`` the rank of the Hessian of ``K`` at a true parameter and
  ``d`` parameters, ``r / 2 <= lambda <= r / 2 + (d - r) / 4``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacfwd, jacrev, vmap

from atlasd.checks import check_int

__all__ = [
    "FlatModel",
    "JacobianSpectrum",
    "effective_dimension",
    "effective_weight",
    "functional_dimension",
    "gauss_newton_matrix",
    "gauss_newton_probe",
    "gauss_newton_spectrum",
    "hessian_extreme_eigenvalue",
    "hessian_vector_product",
    "jacobian_spectrum",
    "llc_rank_bounds",
    "loss_hessian",
    "parameter_jacobian",
    "working_eps",
]

F64 = torch.float64
# a drop of at least a decade between neighbours inside the precision band is a clean cut
CLEAN_DROP = 10.0


class FlatModel:
    """A module's trainable parameters as one flat vector, evaluated functionally.

    ``flat(theta, x)`` runs ``model`` with parameters ``theta`` ``(d,)`` (split into views of the
    parameter shapes, so gradients reach ``theta``) and its own buffers and frozen parameters.
    Under ``torch.func.vmap`` ``theta`` may be one row of a stack of parameter vectors.

    Attributes:
        w: ``(d,)`` detached copy of the current trainable parameters (flattened in
            ``named_parameters`` order).
        names, shapes, sizes: the trainable parameters' names, shapes and sizes, in that order.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model has no trainable parameters")
        dtypes = sorted({str(p.dtype) for _, p in named})
        if len(dtypes) != 1 or not named[0][1].is_floating_point():
            raise ValueError(f"trainable parameters must share one floating dtype, got {dtypes}")
        self.model = model
        self.names = [k for k, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.w = torch.cat([p.detach().reshape(-1) for _, p in named]).clone()
        if not bool(torch.isfinite(self.w).all()):
            raise ValueError("model parameters contain NaN or Inf")
        # frozen parameters and buffers are passed explicitly so functional_call sees all state
        self.fixed = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
        self.fixed.update(dict(model.named_buffers()))

    @property
    def n_parameters(self) -> int:
        return int(self.w.numel())

    def params(self, theta: Tensor) -> dict[str, Tensor]:
        """``theta`` ``(d,)`` split into named views of the parameter shapes."""
        parts = theta.split(self.sizes)
        return {k: t.view(s) for k, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def slices(self) -> dict[str, slice]:
        """Where each named parameter lives in the flat vector."""
        out, start = {}, 0
        for k, size in zip(self.names, self.sizes, strict=True):
            out[k] = slice(start, start + size)
            start += size
        return out

    def __call__(self, theta: Tensor, x: Tensor) -> Tensor:
        return functional_call(self.model, {**self.params(theta), **self.fixed}, (x,))


def float64_copy(model: nn.Module) -> nn.Module:
    """A float64 deep copy of ``model`` (floating parameters and buffers), in eval mode."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return copy.deepcopy(model).to(F64).eval()


def check_inputs(inputs: Any, name: str = "inputs") -> Tensor:
    """``inputs`` as a float64 tensor ``(n, ...)`` with ``n >= 1`` and no NaN/Inf."""
    if not isinstance(inputs, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (n, ...), got {type(inputs).__name__}")
    if inputs.ndim == 0 or inputs.shape[0] == 0:
        raise ValueError(
            f"{name} must have a non-empty sample dimension, got {tuple(inputs.shape)}"
        )
    if not inputs.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {inputs.dtype}")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError(f"{name} contain NaN or Inf")
    return inputs.to(F64)


def _chunk_jacobians(
    flat: FlatModel, inputs: Tensor, rows_per_chunk: int
) -> tuple[Iterator[Tensor], int]:
    """Jacobian blocks ``(rows_c, d)`` for consecutive chunks of ``inputs`` (a lazy iterator, so
    only one block is held at a time), and the output size per sample.

    Per-sample Jacobians (``vmap`` over samples of ``jacrev`` of one sample's output): the work
    grows like ``n * out``, where one ``jacrev`` of the whole batch's output would cost
    ``(n * out) * n``. Assumes samples do not interact (true for eval-mode models).
    """
    with torch.no_grad():
        out0 = flat(flat.w, inputs[:1])
    per_sample = max(1, out0.numel())
    chunk = max(1, rows_per_chunk // per_sample)

    def one(theta: Tensor, x: Tensor) -> Tensor:
        return flat(theta, x.unsqueeze(0)).reshape(-1)

    # reverse mode costs one backward pass per output, forward mode one forward pass per
    # parameter: take the cheaper (per-pixel outputs of field models far outnumber parameters)
    jac = vmap(jacfwd(one) if per_sample > flat.n_parameters else jacrev(one), in_dims=(None, 0))
    blocks = (
        jac(flat.w, inputs[s : s + chunk]).reshape(-1, flat.n_parameters)
        for s in range(0, inputs.shape[0], chunk)
    )
    return blocks, per_sample


def parameter_jacobian(model: nn.Module, inputs: Tensor, *, chunk_rows: int = 4096) -> Tensor:
    """Jacobian of the model's outputs on ``inputs`` w.r.t. its trainable parameters, in float64.

    Args:
        model: maps ``(n, ...)`` to ``(n, ...)``; a float64 copy is differentiated.
        inputs: ``(n, ...)`` samples.
        chunk_rows: about this many output rows are differentiated per ``jacrev`` call.

    Returns:
        ``(n * out, d)`` float64, rows ordered sample-major (the model's flattened output), columns
        in ``named_parameters`` order.
    """
    x = check_inputs(inputs)
    flat = FlatModel(float64_copy(model))
    blocks, _ = _chunk_jacobians(flat, x, check_int("chunk_rows", chunk_rows, 1))
    return torch.cat(list(blocks), dim=0)


def gauss_newton_matrix(model: nn.Module, inputs: Tensor, *, chunk_rows: int = 4096) -> Tensor:
    """``(d, d)`` float64 Gauss-Newton matrix ``J^T J / n`` of the model's outputs on ``n``
    ``inputs``, from :func:`jacobian_spectrum`'s factor (memory ``O(d^2)`` plus one Jacobian
    block). Its eigenvalues are :func:`gauss_newton_spectrum`'s."""
    return jacobian_spectrum(model, inputs, chunk_rows=chunk_rows).gauss_newton_matrix()


@dataclass(frozen=True)
class JacobianSpectrum:
    """Singular values of the parameter Jacobian and the ranks derived from them.

    Attributes:
        singular_values: ``(min(rows, d),)`` float64, descending.
        n_samples: ``n``, the number of inputs.
        n_rows: ``rows = n * out``, the Jacobian's row count.
        n_parameters: ``d``.
        tol: the relative tolerance used for :attr:`rank` (by default
            ``max(rows, d) * eps_working``, see the module docstring).
        eps_working: machine epsilon of the working precision, the coarser of the inputs' and
            the parameters' dtypes (``1.19e-7`` for float32, ``2.2e-16`` for float64).
        factor: ``(k, d)`` float64 with ``factor^T factor = J^T J`` (the R factor of a QR
            decomposition of the stacked rows, or the rows themselves), ``k <= 2 d``.
    """

    singular_values: Tensor
    n_samples: int
    n_rows: int
    n_parameters: int
    tol: float
    factor: Tensor | None = None
    eps_working: float = torch.finfo(F64).eps

    def gauss_newton_matrix(self) -> Tensor:
        """``(d, d)`` float64 ``J^T J / n`` from the same pass as the singular values."""
        if self.factor is None:
            raise ValueError("this JacobianSpectrum was built without its factor")
        return self.factor.T @ self.factor / self.n_samples

    @property
    def rank(self) -> int:
        """Number of singular values above ``tol * s_max`` (the functional dimension)."""
        s = self.singular_values
        if s.numel() == 0 or float(s[0]) == 0.0:
            return 0
        return int((s > self.tol * s[0]).sum())

    @property
    def gap(self) -> float:
        """``s[rank - 1] / s[rank]`` (``sigma_r / sigma_{r+1}``, 1-based): how cleanly the rank
        separates; ``inf`` when nothing is cut (full rank, or the next value is exactly 0)."""
        k, s = self.rank, self.singular_values
        if k == 0 or k >= s.numel() or float(s[k]) == 0.0:
            return math.inf
        return float(s[k - 1] / s[k])

    @property
    def gauss_newton_eigenvalues(self) -> Tensor:
        """``(d,)`` eigenvalues of ``J^T J / n``, descending (zeros padded to length ``d``)."""
        mu = torch.zeros(self.n_parameters, dtype=F64)
        s = self.singular_values
        mu[: s.numel()] = s.square() / self.n_samples
        return mu


def jacobian_spectrum(
    model: nn.Module, inputs: Tensor, tol: float | None = None, *, chunk_rows: int = 4096
) -> JacobianSpectrum:
    """Singular values of ``d f(inputs) / d params`` (float64) and the rank at ``tol``.

    Args:
        model: maps ``(n, ...)`` to ``(n, ...)``; a float64 copy is used, the model is untouched.
        inputs: ``(n, ...)`` samples (use more output rows than parameters for a full-rank test).
        tol: relative tolerance on singular values; default ``max(rows, d) * eps_working``
            with ``eps_working`` the machine epsilon of the coarser of ``inputs.dtype`` and the
            trainable parameters' dtype (:func:`working_eps`; module docstring for why).
        chunk_rows: output rows differentiated per ``jacrev`` call (memory bound).

    Returns:
        :class:`JacobianSpectrum`: ``.rank`` (the functional dimension; of the whitened outputs,
        the Gauss-Newton rank), ``.tol``, ``.gap`` (``sigma_r / sigma_{r+1}`` at the cut),
        ``.eps_working`` and ``.singular_values``.
    """
    eps = working_eps(model, inputs)
    x = check_inputs(inputs)
    flat = FlatModel(float64_copy(model))
    d = flat.n_parameters
    blocks, per_sample = _chunk_jacobians(flat, x, check_int("chunk_rows", chunk_rows, 1))
    rows = x.shape[0] * per_sample
    # Fold rows into an R factor whenever the stack exceeds 2d rows: singular values are kept.
    stack: list[Tensor] = []
    count = 0
    for block in blocks:
        stack.append(block)
        count += block.shape[0]
        if count > 2 * d:
            stack = [torch.linalg.qr(torch.cat(stack), mode="r").R]
            count = stack[0].shape[0]
    factor = torch.cat(stack)
    s = torch.linalg.svdvals(factor)
    if tol is None:
        tol = precision_cut(s, max(rows, d), eps)
    else:
        tol = float(tol)
        if not (math.isfinite(tol) and 0.0 <= tol < 1.0):
            raise ValueError(
                f"tol is relative to the largest singular value: need 0 <= tol < 1, got {tol}"
            )
    return JacobianSpectrum(s, int(x.shape[0]), rows, d, tol, factor, eps)


def precision_cut(singular_values: Tensor, size: int, eps: float) -> float:
    """Default relative tolerance of the ranks here: where the singular values are cut at the
    working precision ``eps`` (module docstring).

    Values above ``hi = size * eps`` (relative to ``s_max``) always count, values at or below
    ``lo = eps`` never do. In between, over ``k`` from ``#{s > hi s_max}`` (at least 1) to
    ``#{s > lo s_max}``, the drop at ``k`` is ``s_k / max(s_{k+1}, lo s_max)`` (``lo s_max``
    stands in for a missing or smaller ``s_{k+1}``: anything under it is rounding); the cut is
    at the largest ``k`` whose drop is at least :data:`CLEAN_DROP`, else at the largest drop.

    Args:
        singular_values: ``(m,)`` non-negative, descending.
        size: ``max(rows, d)`` of the matrix (NumPy's ``matrix_rank`` factor).
        eps: machine epsilon of the working precision.

    Returns:
        ``tol`` with ``s_{k+1} <= tol s_max < s_k`` at the chosen ``k``: the geometric mean of
        the two sides of the gap, capped at ``hi``, so ``lo <= tol <= hi`` (``hi`` when ``s``
        is empty or zero).
    """
    lo, hi = float(eps), float(size) * float(eps)
    s = singular_values.to(F64)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return hi
    rel = (s / s[0]).tolist()
    first = max(1, sum(v > hi for v in rel))
    last = max(first, sum(v > lo for v in rel))
    # lo stands in below the band: a value under it is rounding, however far under
    below = [max(v, lo) for v in rel[1:]] + [lo]
    drops = {j: rel[j - 1] / below[j - 1] for j in range(first, last + 1)}
    # the lowest clean drop keeps small genuine directions that stand clear of the rounding
    clean = [j for j, g in drops.items() if g >= CLEAN_DROP]
    k = max(clean) if clean else max(drops, key=drops.__getitem__)
    return min(hi, math.sqrt(rel[k - 1] * below[k - 1]))


def working_eps(model: nn.Module, inputs: Tensor) -> float:
    """Machine epsilon of the working precision: the coarser of ``inputs.dtype`` and the dtype
    of ``model``'s trainable parameters (``max`` of the two ``finfo(...).eps``). Non-floating
    inputs or a model without trainable parameters fall through to :func:`check_inputs` and
    :class:`FlatModel`, which name the problem."""
    eps = torch.finfo(F64).eps
    if isinstance(inputs, Tensor) and inputs.is_floating_point():
        eps = max(eps, torch.finfo(inputs.dtype).eps)
    if isinstance(model, nn.Module):
        for p in model.parameters():
            if p.requires_grad and p.is_floating_point():
                eps = max(eps, torch.finfo(p.dtype).eps)
    return float(eps)


def functional_dimension(model: nn.Module, inputs: Tensor, tol: float | None = None) -> int:
    """Rank of ``d f(inputs) / d params``, formed in float64 and cut at the precision of the data:
    by default singular values above ``max(rows, d) * eps_working * s_max`` count, with
    ``eps_working`` that of the coarser of ``inputs.dtype`` and the parameters' dtype (float32
    inputs: ``1.19e-7``); an explicit relative ``tol`` overrides. For the tolerance used and the
    gap ``sigma_r / sigma_{r+1}`` at the cut, call :func:`jacobian_spectrum` with the same
    arguments (its ``.rank`` is this number).

    Exact on generic inputs: a one-hidden-layer ReLU network with ``h`` units and ``d``
    parameters gives ``d - h`` (one rescaling per unit), minus ``n_in + n_out`` per unit dead on
    all inputs; a deep linear network with input ``M``, output ``N`` and smallest width ``r``
    gives ``r (M + N - r)``. Inputs that span only an ``r``-dimensional subspace of the
    ``d_in``-dimensional input space take ``h (d_in - r)`` more from a dense first layer of ``h``
    units (its weights on the missing directions never meet data), in float32 as in float64.
    """
    return jacobian_spectrum(model, inputs, tol).rank


def gauss_newton_probe(
    model: nn.Module,
    inputs: Tensor,
    *,
    probes: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> Tensor:
    """Unbiased randomised estimate ``(d, d)`` (float64) of ``J^T J / n`` over ALL ``n`` inputs
    from vector-Jacobian products: for a batch ``B`` and ``v ~ N(0, I)`` on its outputs,
    ``u = J_B^T v`` has ``E[u u^T] = sum_{i in B} J_i^T J_i``. One reverse pass per probe
    (vectorised over the probes of a batch) instead of one per output or per parameter, so it
    covers the whole data where the exact :func:`gauss_newton_matrix` can afford a few samples.

    Args:
        model: maps ``(n, ...)`` to ``(n, ...)``; runs in its own dtype (untouched).
        inputs: ``(n, ...)`` samples.
        probes: total probes (default ``4 d``, spread evenly over the batches; the estimate has
            rank at most ``probes``).
        batch_size: inputs per batch.
        seed: seed of the probe vectors.
    """
    from torch.func import vjp

    x = check_inputs(inputs).to(next(model.parameters()).dtype)
    flat = FlatModel(model)
    w = flat.w.detach()
    d = flat.n_parameters
    n = x.shape[0]
    batch_size = check_int("batch_size", batch_size, 1)
    n_batches = math.ceil(n / batch_size)
    total = 4 * d if probes is None else check_int("probes", probes, 1)
    per_batch = max(1, math.ceil(total / n_batches))
    gen = torch.Generator().manual_seed(int(seed))
    g = torch.zeros(d, d, dtype=F64)
    for start in range(0, n, batch_size):
        xb = x[start : start + batch_size]
        out, pullback = vjp(lambda theta, xb=xb: flat(theta, xb), w)
        v = torch.randn((per_batch, *out.shape), generator=gen, dtype=out.dtype)
        (u,) = vmap(pullback)(v)
        u = u.to(F64)
        g.addmm_(u.T, u, alpha=1.0 / per_batch)
    return g.div_(n)


def hessian_vector_product(
    model: nn.Module,
    loss: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    v: Tensor,
    *,
    chunk: int = 512,
) -> Tensor:
    """``H v`` (``(d,)`` float64) for the Hessian ``H`` of the mean loss over ALL ``inputs`` at
    the model's parameters (trainable, ``named_parameters`` order): forward over reverse,
    accumulated over chunks of ``chunk`` samples so memory stays that of one chunk. ``v`` is
    ``(d,)``; the model runs in its own dtype."""
    from torch.func import grad, jvp

    flat = FlatModel(model)
    w = flat.w.detach()
    d, n = flat.n_parameters, inputs.shape[0]
    if v.shape != (d,):
        raise ValueError(
            f"v must have shape ({d},) (one entry per parameter), got {tuple(v.shape)}"
        )
    chunk = check_int("chunk", chunk, 1)
    t = v.to(w.dtype)
    out = torch.zeros(d, dtype=F64)
    for s in range(0, n, chunk):
        xb, yb = inputs[s : s + chunk], targets[s : s + chunk]
        h = jvp(grad(lambda theta, xb=xb, yb=yb: loss(flat(theta, xb), yb)), (w,), (t,))[1]
        out += h.to(F64) * (xb.shape[0] / n)
    return out


def hessian_extreme_eigenvalue(
    model: nn.Module,
    loss: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    which: str = "SA",
    chunk: int = 512,
    tol: float = 1e-3,
    max_products: int = 150,
) -> float:
    """Smallest (``which="SA"``) or largest (``"LA"``) eigenvalue of the Hessian of the mean
    loss over ALL ``inputs`` at the model's parameters, by Lanczos with full
    reorthogonalisation (float64) on Hessian-vector products (forward over reverse, accumulated
    over chunks of ``chunk`` samples). Never forms the ``(d, d)`` Hessian.

    Stops when the extreme Ritz value has moved by less than ``tol`` (relative) over the last
    5 products, after ``max_products`` products, or when the Krylov space is exhausted (exact
    then). A Ritz value never lies beyond the true extreme eigenvalue, so a truncated run
    understates its magnitude. Why not ARPACK: near a minimum the bottom of the spectrum is a
    dense cluster around 0, and ``eigsh(which="SA")`` needed over 25 min of products on the
    1817-parameter digits conv stack; the fixed budget keeps the cost predictable.
    """
    if which not in ("SA", "LA"):
        raise ValueError(f"which must be 'SA' or 'LA', got {which!r}")
    d = FlatModel(model).n_parameters
    chunk = check_int("chunk", chunk, 1)
    max_products = check_int("max_products", max_products, 1)

    def hvp(v: Tensor) -> Tensor:
        return hessian_vector_product(model, loss, inputs, targets, v, chunk=chunk)

    pick = (lambda e: float(e[0])) if which == "SA" else (lambda e: float(e[-1]))
    basis = [torch.ones(d, dtype=F64) / math.sqrt(d)]
    alphas: list[float] = []
    betas: list[float] = []
    ritz: list[float] = []
    for j in range(min(max_products, d)):
        v = hvp(basis[j])
        alphas.append(float(basis[j] @ v))
        q = torch.stack(basis)
        v = v - q.T @ (q @ v)
        v = v - q.T @ (q @ v)  # twice is enough (Kahan-Parlett)
        t = torch.diag(torch.tensor(alphas, dtype=F64))
        if betas:
            off = torch.tensor(betas, dtype=F64)
            t = t + torch.diag(off, 1) + torch.diag(off, -1)
        ritz.append(pick(torch.linalg.eigvalsh(t)))
        scale = max(abs(a) for a in alphas) + max(betas, default=0.0)
        beta = float(v.norm())
        if beta <= 1e-12 * max(scale, 1e-300):
            break  # invariant subspace: the Ritz values are exact eigenvalues
        if j >= 5 and abs(ritz[-1] - ritz[-6]) <= tol * max(abs(ritz[-1]), 1e-12 * scale):
            break
        betas.append(beta)
        basis.append(v / beta)
    return ritz[-1]


def loss_hessian(
    model: nn.Module,
    loss: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    chunk: int = 16,
) -> Tensor:
    """``(d, d)`` float64 Hessian of ``loss(model(inputs), targets)`` w.r.t. the trainable
    parameters (``named_parameters`` order), from forward-over-reverse Hessian-vector products
    with ``chunk`` basis vectors per vmapped call. Unlike the Gauss-Newton matrix it includes
    the residual term, so it is exact (and may be indefinite) away from zero residual. The
    model runs in its own dtype; the result is symmetrised."""
    from torch.func import grad, jvp

    flat = FlatModel(model)
    w = flat.w.detach()
    d = flat.n_parameters

    def value(theta: Tensor) -> Tensor:
        return loss(flat(theta, inputs), targets)

    def hvp(v: Tensor) -> Tensor:
        return jvp(grad(value), (w,), (v,))[1]

    eye = torch.eye(d, dtype=w.dtype, device=w.device)
    rows = [vmap(hvp)(eye[s : s + chunk]) for s in range(0, d, check_int("chunk", chunk, 1))]
    h = torch.cat(rows).to(F64)
    return (h + h.T) / 2


def gauss_newton_spectrum(model: nn.Module, inputs: Tensor) -> Tensor:
    """``(d,)`` eigenvalues of the Gauss-Newton matrix ``J^T J / n`` (float64, descending).

    For the loss ``0.5 |f(x) - y|^2`` averaged over ``n`` samples this is the Hessian of ``L_n``
    at a zero-residual parameter (and its expectation at a true parameter with noisy targets).
    """
    return jacobian_spectrum(model, inputs).gauss_newton_eigenvalues


def effective_dimension(eigenvalues: Tensor, n_beta: float, localization: float) -> float:
    """``sum_i n_beta mu_i / (n_beta mu_i + gamma)`` for Hessian eigenvalues ``mu_i >= 0``.

    Half of it is the value the localised-SGLD LLC estimate converges to on a quadratic basin
    ``L_n(w) = L_n(w*) + (1/2) (w - w*)^T H (w - w*)`` (the localised tempered posterior is then
    Gaussian with precision ``n_beta H + gamma I``), which separates sampler error from geometry.
    With ``gamma = 0`` it is the number of non-zero eigenvalues.
    """
    mu = _eigenvalues(eigenvalues)
    n_beta = float(n_beta)
    gamma = float(localization)
    if not (math.isfinite(n_beta) and n_beta > 0):
        raise ValueError(f"n_beta must be finite and > 0, got {n_beta}")
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"localization must be finite and >= 0, got {gamma}")
    a = n_beta * mu
    if gamma == 0:
        return float((a > 0).sum())
    return float((a / (a + gamma)).sum())


def effective_weight(curvature: float, n_beta: float, gamma: float) -> float:
    """``n_beta c / (n_beta c + gamma)``: the share of one direction of curvature ``c`` (of
    ``L_n``, per unit length) in the effective dimension at localisation ``gamma``; on a
    quadratic basin the LLC counts half of it. A symmetry that flattens the direction can
    lower the LLC by at most half the weight the direction has without the symmetry.

    Raises:
        ValueError: ``n_beta`` not positive or ``gamma`` negative.
    """
    if not n_beta > 0 or not gamma >= 0:
        raise ValueError(f"need n_beta > 0 and gamma >= 0, got {n_beta} and {gamma}")
    c = max(float(curvature), 0.0)
    return n_beta * c / (n_beta * c + gamma) if n_beta * c + gamma > 0 else 0.0


def llc_rank_bounds(rank: int, n_parameters: int) -> tuple[float, float]:
    """``(r / 2, r / 2 + (d - r) / 4)``: bounds on the learning coefficient at a true parameter
    whose Hessian of ``K`` has rank ``r``, for ``d`` parameters."""
    r = check_int("rank", rank, 0)
    d = check_int("n_parameters", n_parameters, 0)
    if r > d:
        raise ValueError(f"rank {r} cannot exceed the number of parameters {d}")
    return r / 2, r / 2 + (d - r) / 4


# ----------------------------------------------------------------------------------- helpers


def _eigenvalues(eigenvalues: Any) -> Tensor:
    if not isinstance(eigenvalues, Tensor):
        eigenvalues = torch.as_tensor(eigenvalues, dtype=F64)
    mu = eigenvalues.to(F64).reshape(-1)
    if not bool(torch.isfinite(mu).all()):
        raise ValueError("eigenvalues contain NaN or Inf")
    scale = float(mu.abs().max()) if mu.numel() else 0.0
    if bool((mu < -1e-10 * max(scale, 1e-300)).any()):
        raise ValueError(
            f"eigenvalues must be >= 0 (a Hessian at a minimum), min {float(mu.min())}"
        )
    return mu.clamp_min(0.0)
