"""Emulability: can a parameter change reproduce the effect of an input perturbation?

For a model ``f(x; w)`` at its current parameters ``w*`` and an infinitesimal input perturbation
``x -> x + t dx(x)`` (an input generator), the perturbation is *emulable* when some ``dw`` gives
``f(x + t dx; w*) = f(x; w* + t dw) + o(t)`` for all inputs, i.e. to first order

    J_w dw = J_x dx      (J_w = d f / d w,  J_x dx = d/dt f(x + t dx; w*) at t = 0)

on every input (the background notes' ``p(x + dx | w*) = p(x | w* + dw)``). We solve the least
squares problem ``min_dw |J_w dw - J_x dx|`` on one half of the inputs (minimum-norm solution) and
report the relative residual ``|J_w dw - J_x dx| / |J_x dx|`` on the other, held-out half:
0 means emulable, 1 means no parameter change does better than leaving ``w*`` alone (above 1:
the ``dw`` fitted on one half does harm on the other).

Input generators:

* a ``(D, D)`` matrix ``G`` acting on vectors ``(n, ..., D)`` on the last axis: ``dx = G x``;
* a ``(2, 2)`` chart generator ``A`` acting on fields ``(n, C, H, W)`` as the Lie derivative of
  ``atlasd.act``'s action ``(g . f)(p) = f(g^-1 p)``: ``dx = d/dt exp(tA) . f = -(A p) . grad f``,
  with ``p = (x, y)`` the chart coordinates about the field's centre pixel (``x = j - (W-1)/2``
  to the right, ``y = (H-1)/2 - i`` upward) and central differences with zero padding outside
  the field (the small-``t`` limit of ``act``'s bilinear resampling with zero padding);
* a callable ``generator(inputs) -> dx`` of the inputs' shape, for any other perturbation.

Known parameter symmetries: the continuous ones found from the module structure of
``nn.Sequential`` models (:func:`parameter_symmetries`): a positive rescaling per hidden unit
(channel) between two linear / convolutional layers joined by ReLU or LeakyReLU, and the whole
``GL(h)`` between two such layers joined by nothing (or ``nn.Identity``). Permutations of units are
discrete and have no tangent directions. Because these symmetries leave ``f`` unchanged, they lie
in the null space of ``J_w`` and the minimum-norm ``dw`` is orthogonal to them: a non-zero
emulating ``dw`` is therefore never a mere reparametrisation, and ``symmetry_fraction`` (the share
of ``|dw|^2`` inside their span) is ~0 whenever the perturbation changes the outputs at all. It
is reported as a check, not as a discovery.

What this does *not* show by itself: an emulable perturbation turns into a flat direction of the
loss only if the data distribution is also invariant under it; see the module docs of
:mod:`atlasd.downstream.degeneracy.llc` for measuring the degeneracy directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import vjp

from atlasd.downstream.degeneracy.ranks import (
    FlatModel,
    check_inputs,
    float64_copy,
    parameter_jacobian,
)

__all__ = [
    "Emulation",
    "emulability",
    "emulation",
    "input_perturbation",
    "lie_derivative",
    "parameter_symmetries",
    "span_fraction",
]

F64 = torch.float64
Generator = Tensor | Callable[[Tensor], Tensor]
Action = Literal["auto", "vector", "field"]
Method = Literal["auto", "dense", "iterative"]

# Dense least squares up to this many Jacobian entries (float64: 8 bytes each); beyond, CGLS.
_DENSE_LIMIT = 4_000_000
_INVARIANT_RTOL = 1e-12


@dataclass(frozen=True)
class Emulation:
    """Full result of :func:`emulation`.

    Attributes:
        residual: held-out relative residual ``|J_w dw - J_x dx| / |J_x dx|`` (0 = emulable;
            0 also when the perturbation does not change the outputs, see ``invariant``).
        fit_residual: the same on the inputs ``dw`` was fitted on.
        dw: ``(d,)`` float64 minimum-norm emulating direction (``named_parameters`` order).
        dw_by_name: ``dw`` split into parameter-shaped tensors.
        symmetry_fraction: share of ``|dw|^2`` inside the span of the known continuous parameter
            symmetries (``nan`` when ``dw = 0``).
        n_symmetries: dimension of that span.
        outside_symmetries: ``dw`` is non-zero and mostly (> 1/2 of ``|dw|^2``) outside the span.
        output_change: ``|J_x dx| / |f|`` on the held-out inputs.
        invariant: the perturbation leaves the outputs unchanged (``output_change <= 1e-12``).
        method: ``"dense"`` (SVD least squares) or ``"iterative"`` (CGLS with JVP/VJP).
        iterations: CGLS iterations (0 for dense).
        cutoff: dense: the relative singular-value cut-off used; iterative: the CGLS stopping
            tolerance (``nan`` when the iteration count was chosen on the validation split).
        n_fit, n_heldout: numbers of inputs used for fitting and for the residual.
    """

    residual: float
    fit_residual: float
    dw: Tensor
    dw_by_name: dict[str, Tensor]
    symmetry_fraction: float
    n_symmetries: int
    outside_symmetries: bool
    output_change: float
    invariant: bool
    method: str
    iterations: int
    cutoff: float
    n_fit: int
    n_heldout: int

    @property
    def outside_fraction(self) -> float:
        """Share of ``|dw|^2`` outside the span of the known parameter symmetries."""
        return 1.0 - self.symmetry_fraction


def emulability(model: nn.Module, generator: Generator, inputs: Tensor) -> float:
    """Held-out relative least-squares residual of emulating an input perturbation by a
    parameter perturbation at the model's current parameters (0 = emulable).

    Args:
        model: maps ``(n, ...)`` inputs to ``(n, ...)`` outputs; untouched (a float64 copy is used).
        generator: ``(D, D)`` matrix on vectors, ``(2, 2)`` chart generator on fields
            ``(n, C, H, W)``, or a callable ``inputs -> dx`` (see the module docstring).
        inputs: ``(n, ...)`` samples, ``n >= 2``; half fit ``dw``, half measure the residual.

    See :func:`emulation` for the full result (``dw``, symmetry check, options).
    """
    return emulation(model, generator, inputs).residual


def emulation(
    model: nn.Module,
    generator: Generator,
    inputs: Tensor,
    *,
    action: Action = "auto",
    holdout: float = 0.5,
    seed: int = 0,
    method: Method = "auto",
    rtol: float | None = None,
    max_iter: int | None = None,
) -> Emulation:
    """Solve ``min_dw |J_w dw - J_x dx|`` on a fit split and measure it on a held-out split.

    Args:
        model, generator, inputs: as in :func:`emulability`.
        action: how a tensor ``generator`` acts: ``"vector"`` (``dx = x G^T`` on the last axis),
            ``"field"`` (Lie derivative of a ``(2, 2)`` chart generator on ``(n, C, H, W)``), or
            ``"auto"``: ``"field"`` for a ``(2, 2)`` generator and 4-D inputs, else ``"vector"``.
        holdout: fraction of inputs held out (seeded random split), in ``(0, 1)``.
        seed: seed of the split.
        method: ``"dense"`` (full float64 Jacobian, SVD minimum-norm least squares),
            ``"iterative"`` (CGLS on the normal equations with Jacobian-vector products, for large
            models), or ``"auto"`` (dense up to 4e6 Jacobian entries).
        rtol: dense: relative singular-value cut-off of the truncated SVD; iterative: stop when
            ``|J_w^T r| <= rtol |J_w^T b|``. Default None: chosen on a validation quarter of
            the fit inputs (dense: the cut-off among 1e-10 ... 1e-1 and the float64 rank
            tolerance with the smallest validation residual, then refitted on all fit inputs;
            iterative: the CGLS iterate with the smallest validation residual).
        max_iter: CGLS iteration cap (default ``4 d``, at least 200 and at most 2000).

    Returns:
        :class:`Emulation`.

    Raises:
        ValueError: malformed inputs or generator (shape mismatch, NaN/Inf, too few inputs).
    """
    x = check_inputs(inputs)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 inputs (fit and held-out), got {n}")
    if not (isinstance(holdout, (int, float)) and 0.0 < float(holdout) < 1.0):
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout!r}")
    if method not in ("auto", "dense", "iterative"):
        raise ValueError(f"method must be 'auto', 'dense' or 'iterative', got {method!r}")
    dx = input_perturbation(generator, x, action=action)

    flat = FlatModel(float64_copy(model))
    d = flat.n_parameters
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_test = min(n - 1, max(1, round(n * float(holdout))))
    test, fit = perm[:n_test], perm[n_test:]

    b_fit = _input_jvp(flat, x[fit], dx[fit])
    use_dense = method == "dense" or (method == "auto" and b_fit.numel() * d <= _DENSE_LIMIT)
    if use_dense:
        dw, cutoff = _dense_emulation(flat, x[fit], b_fit, rtol)
        iterations, used = 0, "dense"
    else:
        dw, iterations, cutoff = _iterative_emulation(
            flat, x[fit], b_fit, rtol, max_iter or min(max(4 * d, 200), 2000)
        )
        used = "iterative"

    fit_res = _relative(_param_jvp(flat, x[fit], dw) - b_fit, b_fit)
    b_test = _input_jvp(flat, x[test], dx[test])
    with torch.no_grad():
        f_test = flat(flat.w, x[test]).reshape(-1)
    change = float(b_test.norm() / f_test.norm().clamp_min(1e-300))
    invariant = change <= _INVARIANT_RTOL
    residual = 0.0 if invariant else _relative(_param_jvp(flat, x[test], dw) - b_test, b_test)
    if invariant:
        fit_res = 0.0

    sym = parameter_symmetries(flat.model)
    frac = span_fraction(sym, dw)
    dw_norm = float(dw.norm())
    return Emulation(
        residual=residual,
        fit_residual=fit_res,
        dw=dw,
        dw_by_name=flat.params(dw),
        symmetry_fraction=frac,
        n_symmetries=int(sym.shape[0]),
        outside_symmetries=bool(dw_norm > 0 and not frac > 0.5),
        output_change=change,
        invariant=invariant,
        method=used,
        iterations=iterations,
        cutoff=cutoff,
        n_fit=int(fit.numel()),
        n_heldout=int(test.numel()),
    )


# ------------------------------------------------------------------------ input perturbations


def lie_derivative(fields: Tensor, generator: Tensor) -> Tensor:
    """``d/dt exp(tA) . f`` at ``t = 0`` for fields ``(..., H, W)``: ``-(A p) . grad f(p)``.

    Args:
        fields: ``(..., H, W)`` floating tensor; ``p = (x, y)`` with ``x = j - (W-1)/2`` and
            ``y = (H-1)/2 - i`` (the chart convention of :mod:`atlasd.atlas`, centred on the
            field's centre pixel when ``H`` and ``W`` are odd).
        generator: ``(2, 2)`` matrix ``A`` in ``(x, y)`` coordinates.

    Returns:
        ``(..., H, W)`` in the fields' dtype. Derivatives are central differences with zero
        padding outside the field, the small-``t`` limit of ``atlasd.act`` (bilinear, zero
        padding) averaged over ``t`` and ``-t``.
    """
    if not isinstance(fields, Tensor) or fields.ndim < 2 or not fields.is_floating_point():
        raise ValueError("fields must be a floating tensor (..., H, W)")
    a = _matrix(generator, "generator")
    if a.shape != (2, 2):
        raise ValueError(f"a chart generator must be (2, 2), got {tuple(a.shape)}")
    h, w = fields.shape[-2:]
    padded = torch.nn.functional.pad(fields, (1, 1, 1, 1))
    d_dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])  # along columns (x right)
    d_dy = 0.5 * (padded[..., :-2, 1:-1] - padded[..., 2:, 1:-1])  # along rows upward (y up)
    xs = torch.arange(w, dtype=F64) - (w - 1) / 2
    ys = (h - 1) / 2 - torch.arange(h, dtype=F64)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    vx = (a[0, 0] * xx + a[0, 1] * yy).to(fields)
    vy = (a[1, 0] * xx + a[1, 1] * yy).to(fields)
    return -(vx * d_dx + vy * d_dy)


def input_perturbation(generator: Generator, inputs: Tensor, action: Action = "auto") -> Tensor:
    """The input tangent ``dx`` of ``generator`` at ``inputs`` (same shape as ``inputs``).

    See :func:`emulation` for ``action``.
    """
    if action not in ("auto", "vector", "field"):
        raise ValueError(f"action must be 'auto', 'vector' or 'field', got {action!r}")
    if callable(generator) and not isinstance(generator, Tensor):
        dx = generator(inputs)
        if not isinstance(dx, Tensor) or dx.shape != inputs.shape:
            got = tuple(dx.shape) if isinstance(dx, Tensor) else type(dx).__name__
            raise ValueError(
                f"a callable generator must return dx of the inputs' shape "
                f"{tuple(inputs.shape)}, got {got}"
            )
        dx = dx.to(inputs.dtype)
        if not bool(torch.isfinite(dx).all()):
            raise ValueError("the generator's dx contains NaN or Inf")
        return dx
    g = _matrix(generator, "generator").to(inputs.dtype)
    if action == "auto":
        action = "field" if g.shape == (2, 2) and inputs.ndim == 4 else "vector"
    if action == "field":
        if inputs.ndim != 4:
            raise ValueError(
                f"a chart generator acts on fields (n, C, H, W), got inputs {tuple(inputs.shape)}"
            )
        return lie_derivative(inputs, g)
    if g.shape[0] != inputs.shape[-1]:
        raise ValueError(
            f"generator {tuple(g.shape)} does not act on inputs with last axis "
            f"{inputs.shape[-1]} (inputs {tuple(inputs.shape)})"
        )
    return inputs @ g.T


# ------------------------------------------------------------------------ parameter symmetries

_HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU)
_LINEAR_LIKE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def parameter_symmetries(model: nn.Module) -> Tensor:
    """Tangent vectors ``(k, d)`` (float64) of the known continuous symmetries at the current
    parameters, in the flat ``named_parameters`` order of the trainable parameters.

    Scans every ``nn.Sequential`` in ``model`` for a linear or convolutional layer ``A`` followed by
    a layer ``B`` of the same kind family whose input size is ``A``'s output size, with only
    ReLU / LeakyReLU (one rescaling per unit ``k``: ``A``'s row ``k`` and bias ``k`` times
    ``+1``, ``B``'s column ``k`` times ``-1``) or nothing / ``nn.Identity`` in between (all of
    ``gl(h)``: ``dA = E A``, ``db_A = E b_A``, ``dB = -B E``). Anything else between them (tanh,
    pooling, normalisation, Flatten) ends the search for that pair. Returns ``(0, d)`` when none
    are found.
    """
    flat = FlatModel(model)
    where = flat.slices()
    tangents: list[Tensor] = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        items = list(seq.named_children())
        for i, (name_a, layer_a) in enumerate(items):
            if not isinstance(layer_a, _LINEAR_LIKE):
                continue
            purely_linear, j = True, i + 1
            while j < len(items) and isinstance(items[j][1], (*_HOMOGENEOUS, nn.Identity)):
                purely_linear &= not isinstance(items[j][1], _HOMOGENEOUS)
                j += 1
            if j >= len(items) or not _compatible(layer_a, items[j][1]):
                continue
            # nothing nonlinear in between: the whole gl(h); else one rescaling per unit
            full = purely_linear
            pa = f"{prefix}.{name_a}" if prefix else name_a
            pb = f"{prefix}.{items[j][0]}" if prefix else items[j][0]
            tangents.extend(_pair_tangents(flat, where, pa, layer_a, pb, items[j][1], full))
    if not tangents:
        return torch.zeros(0, flat.n_parameters, dtype=F64)
    return torch.stack(tangents).to(F64)


def _compatible(a: nn.Module, b: nn.Module) -> bool:
    if isinstance(a, nn.Linear):
        return isinstance(b, nn.Linear) and a.out_features == b.in_features
    if type(a) is not type(b):
        return False
    return a.groups == 1 and b.groups == 1 and a.out_channels == b.in_channels


def _pair_tangents(
    flat: FlatModel,
    where: dict[str, slice],
    pa: str,
    a: nn.Module,
    pb: str,
    b: nn.Module,
    full: bool,
) -> list[Tensor]:
    wa, wb = a.weight.detach().to(F64), b.weight.detach().to(F64)
    ba = None if a.bias is None else a.bias.detach().to(F64)
    h = wa.shape[0]
    keys = (f"{pa}.weight", f"{pa}.bias", f"{pb}.weight")
    if f"{pa}.weight" not in where or f"{pb}.weight" not in where:
        return []  # frozen layers carry no symmetry of the sampled parameters
    pairs = [(k, m) for k in range(h) for m in range(h)] if full else [(k, k) for k in range(h)]
    out = []
    for k, m in pairs:
        t = torch.zeros(flat.n_parameters, dtype=F64)
        # E = e_k e_m^T: dA = E A (row k gets row m of A), dB = -B E (column m gets -column k)
        da = torch.zeros_like(wa)
        da[k] = wa[m]
        t[where[keys[0]]] = da.reshape(-1)
        if ba is not None and keys[1] in where:
            dba = torch.zeros_like(ba)
            dba[k] = ba[m]
            t[where[keys[1]]] = dba
        db = torch.zeros_like(wb)
        db[:, m] = -wb[:, k]
        t[where[keys[2]]] = db.reshape(-1)
        out.append(t)
    return out


def span_fraction(tangents: Tensor, v: Tensor) -> float:
    """Share of ``|v|^2`` inside the span of the rows of ``tangents`` ``(k, d)`` (``v``: ``(d,)``;
    nan for ``v = 0``, 0 for ``k = 0``)."""
    nv = float(v.norm())
    if nv == 0.0:
        return math.nan
    if tangents.shape[0] == 0:
        return 0.0
    u, s, _ = torch.linalg.svd(tangents.T, full_matrices=False)
    q = u[:, s > max(tangents.shape) * torch.finfo(F64).eps * s[0]]
    return float((q.T @ v).norm() ** 2 / nv**2)


# ------------------------------------------------------------------------ least squares


def _jvp(fn: Callable[[Tensor], Tensor], primal: Tensor, tangent: Tensor) -> Tensor:
    """Jacobian-vector product by reverse mode twice: ``v -> J^T v`` is linear, and its VJP with
    cotangent ``tangent`` is ``J tangent``. Avoids forward-mode AD, whose first use in a process
    loads (and jit-scripts) torch's decomposition tables for several seconds."""
    out, pullback = vjp(fn, primal)
    _, double = vjp(lambda u: pullback(u)[0], torch.zeros_like(out))
    return double(tangent)[0]


def _input_jvp(flat: FlatModel, x: Tensor, dx: Tensor) -> Tensor:
    """``J_x dx`` flattened, at the current parameters."""
    return _jvp(lambda inp: flat(flat.w, inp).reshape(-1), x, dx)


def _param_jvp(flat: FlatModel, x: Tensor, dw: Tensor) -> Tensor:
    """``J_w dw`` flattened."""
    return _jvp(lambda theta: flat(theta, x).reshape(-1), flat.w, dw)


# candidate relative cut-offs of the truncated SVD; None is the float64 rank tolerance
_CUTOFFS = (None, 1e-10, 1e-8, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
_VALIDATION = 0.25  # share of the fit split used to choose the cut-off


def _validation_split(n: int) -> tuple[slice, slice] | None:
    """``(train, validation)`` slices of the (already shuffled) fit rows, or None if too few."""
    n_val = round(n * _VALIDATION)
    if n_val < 1 or n - n_val < 1:
        return None
    return slice(0, n - n_val), slice(n - n_val, n)


def _svd_solutions(
    jac: Tensor, b: Tensor, cutoffs: tuple[float | None, ...]
) -> list[tuple[float, Tensor]]:
    """Minimum-norm truncated-SVD solutions ``(cutoff, dw)`` of ``jac dw = b``, one per cut-off
    (relative to the largest singular value; None = ``max(rows, d) * eps``)."""
    u, s, vh = torch.linalg.svd(jac, full_matrices=False)
    coef_all = u.T @ b
    out = []
    for c in cutoffs:
        c = max(jac.shape) * torch.finfo(F64).eps if c is None else c
        if s.numel() == 0 or float(s[0]) == 0.0:
            out.append((c, torch.zeros(jac.shape[1], dtype=F64)))
            continue
        keep = s > c * s[0]
        out.append((c, vh[keep].T @ (coef_all[keep] / s[keep])))
    return out


def _dense_emulation(
    flat: FlatModel, x: Tensor, b: Tensor, rtol: float | None
) -> tuple[Tensor, float]:  # (dw, cut-off used)
    """Dense minimum-norm least squares. With ``rtol=None`` the truncation is chosen on a
    validation quarter of the fit inputs (the solution with the smallest validation residual),
    then refitted on all fit inputs; an eps-level cut-off on an ill-conditioned Jacobian
    otherwise fits noise and fails on new inputs."""
    if rtol is not None:
        rtol = float(rtol)
        if not (math.isfinite(rtol) and 0.0 <= rtol < 1.0):
            raise ValueError(f"rtol must lie in [0, 1), got {rtol}")
        cutoff = rtol
    else:
        split = _validation_split(x.shape[0])
        cutoff = None
        if split is not None:
            tr, va = split
            per = b.numel() // x.shape[0]
            rows_tr = slice(0, tr.stop * per)
            rows_va = slice(tr.stop * per, None)
            candidates = _svd_solutions(parameter_jacobian(flat.model, x[tr]), b[rows_tr], _CUTOFFS)
            scores = [
                float((_param_jvp(flat, x[va], dw) - b[rows_va]).norm()) for _, dw in candidates
            ]
            cutoff = candidates[min(range(len(scores)), key=scores.__getitem__)][0]
    ((used, dw),) = _svd_solutions(parameter_jacobian(flat.model, x), b, (cutoff,))
    return dw, used


def _iterative_emulation(
    flat: FlatModel, x: Tensor, b: Tensor, rtol: float | None, max_iter: int
) -> tuple[Tensor, int, float]:
    """CGLS. With ``rtol=None`` the iterate with the smallest residual on a validation quarter of
    the fit inputs is returned (early stopping regularises like a truncation)."""
    if rtol is not None:
        dw, it = _cgls(flat, x, b, float(rtol), max_iter)
        return dw, it, float(rtol)
    split = _validation_split(x.shape[0])
    if split is None:
        dw, it = _cgls(flat, x, b, 1e-10, max_iter)
        return dw, it, 1e-10
    tr, va = split
    per = b.numel() // x.shape[0]
    b_va = b[tr.stop * per :]
    dw, it = _cgls(
        flat,
        x[tr],
        b[: tr.stop * per],
        1e-10,
        max_iter,
        score=lambda v: float((_param_jvp(flat, x[va], v) - b_va).norm()),
    )
    return dw, it, math.nan


def _cgls(
    flat: FlatModel,
    x: Tensor,
    b: Tensor,
    rtol: float,
    max_iter: int,
    score: Callable[[Tensor], float] | None = None,
) -> tuple[Tensor, int]:
    """CGLS (conjugate gradients on the normal equations) from ``dw = 0``: converges to the
    minimum-norm least-squares solution; ``J_w v`` by JVP, ``J_w^T u`` by VJP. With ``score``,
    returns the iterate (and its iteration number) with the lowest score instead of the last."""
    _, pullback = vjp(lambda theta: flat(theta, x).reshape(-1), flat.w)

    def at(u: Tensor) -> Tensor:
        return pullback(u)[0]

    dw = torch.zeros_like(flat.w)
    r = b.clone()
    s = at(r)
    p = s.clone()
    gamma = float(s @ s)
    stop = rtol**2 * gamma
    it = 0
    best = (score(dw), dw, 0) if score is not None else None
    while it < max_iter and gamma > stop and gamma > 0:
        q = _param_jvp(flat, x, p)
        qq = float(q @ q)
        if qq == 0.0:
            break
        alpha = gamma / qq
        dw = dw + alpha * p
        r = r - alpha * q
        s = at(r)
        gamma_new = float(s @ s)
        p = s + (gamma_new / gamma) * p
        gamma = gamma_new
        it += 1
        if best is not None:
            value = score(dw)
            if value < best[0]:
                best = (value, dw, it)
    if best is not None:
        return best[1], best[2]
    return dw, it


def _relative(residual: Tensor, reference: Tensor) -> float:
    ref = float(reference.norm())
    return float(residual.norm()) / ref if ref > 0 else 0.0


def _matrix(value: Any, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value, dtype=F64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a square matrix tensor, got {value!r}") from None
    if value.ndim != 2 or value.shape[0] != value.shape[1] or value.shape[0] == 0:
        raise ValueError(f"{name} must be a square matrix (D, D), got shape {tuple(value.shape)}")
    value = value.to(F64)
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return value
