"""Every degeneracy measurement of one trained model at its weights ``w*``: ranks, the
Gauss-Newton spectrum, the LLC, the symmetry and control directions, emulability.

See :mod:`atlasd.downstream.degeneracy` for what the figures mean.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from atlasd.downstream.degeneracy.emulate import emulation, lie_derivative
from atlasd.downstream.degeneracy.likelihood import NLLOutputs, flat_gradient, mean_nll
from atlasd.downstream.degeneracy.llc import (
    LLCHealthError,
    default_llc_settings,
    estimate_llc,
    step_dependence,
)
from atlasd.downstream.degeneracy.ranks import (
    effective_dimension,
    effective_weight,
    float64_copy,
    gauss_newton_probe,
    hessian_vector_product,
    jacobian_spectrum,
    llc_rank_bounds,
)

__all__ = [
    "control_generators",
    "conv_rotation_tangent",
    "gradient_bias",
    "measure_degeneracy",
    "second_order_copy",
    "symmetry_direction",
]


def conv_rotation_tangent(model: nn.Module, generator: Tensor) -> Tensor | None:
    """Tangent ``(d,)`` (float64, ``named_parameters`` order of the trainable parameters) of
    transforming every ``nn.Conv2d`` kernel of ``model`` by ``exp(t A)``: ``K -> K(exp(tA) z)``.

    For a stack of convolutions between scalar channels this is the weight-space image of the
    chart transformation: the network with kernels ``K(g z)`` computes ``g^-1 . f(g . x)``, so
    when ``f`` is equivariant to ``g`` the tangent is a flat direction of the loss (the notes'
    ``p(x | w*) = p(x | rho(g) w*)``). Kernels are transformed as fields on their pixel grid
    (:func:`lie_derivative`, central differences, zero outside the kernel), biases are left
    alone. Returns None when the model has no trainable ``nn.Conv2d`` weight, or a parameter
    that is neither a conv weight nor a bias (the tangent is then unknown).
    """
    convs = {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    parts, found = [], False
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in convs:
            k = p.detach().to(torch.float64)
            dk = -lie_derivative(k.reshape(-1, 1, *k.shape[-2:]), generator.to(torch.float64))
            parts.append(dk.reshape(-1))
            found = True
        elif name.endswith(".bias"):
            parts.append(torch.zeros(p.numel(), dtype=torch.float64))
        else:
            return None
    return torch.cat(parts) if found else None


def second_order_copy(
    model: nn.Module, x: Tensor, y: Tensor, dtype: str
) -> tuple[nn.Module, Tensor, Tensor]:
    """``(model, x, y)`` for second-order measurements: float64 copies when ``dtype`` is
    ``"float64"`` (integer labels stay as they are), else unchanged. Why: on the heat conv
    stack (steps 2, anisotropic, polished) Lanczos on float32 Hessian-vector products gave a
    most negative eigenvalue of -3.6e7, the float64 copy of the same weights -4.7e6: float32
    rounding in products against a largest eigenvalue of 1.9e13 invents negative curvature,
    and the localisation gamma built from it would be 8x too large."""
    if dtype == "float32":
        return model, x, y
    return float64_copy(model), x.double(), y.double() if y.is_floating_point() else y


def control_generators(generators: Tensor, tol: float = 1e-6) -> Tensor:
    """``(m, 2, 2)`` float64 control generators for the symmetry-direction curvature: the two
    shears ``diag(1, -1)`` and ``[[0, 1], [1, 0]]`` with their components along the span of
    ``generators`` ``(k, 2, 2)`` removed (Frobenius inner product), unit Frobenius norm; a
    shear left with norm below ``tol`` is dropped (then ``m < 2``).

    Why shears: transforming every kernel by a shear is the same construction as by the
    discovered rotation (area-preserving, same kernels, same weights), but isotropic data gives
    it no reason to be flat. The ratio of the two curvatures on one set of weights therefore
    compares the symmetry's direction with a matched non-symmetry on the same model and data,
    which the susceptibility across data versions cannot (there the function to learn changes
    too)."""
    gens = torch.as_tensor(generators, dtype=torch.float64)
    if gens.ndim != 3 or gens.shape[1:] != (2, 2):
        raise ValueError(f"generators must be (k, 2, 2), got {tuple(gens.shape)}")
    gens = gens.reshape(-1, 4)
    if gens.shape[0]:
        u, sv, _ = torch.linalg.svd(gens.T, full_matrices=False)
        q = u[:, sv > tol * max(float(sv[0]), 1.0)]
    else:
        q = gens.new_zeros(4, 0)
    shears = torch.tensor([[1.0, 0.0, 0.0, -1.0], [0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    out = []
    for c in shears:
        for basis in [*q.T, *out]:
            c = c - (c @ basis) * basis
        if float(c.norm()) > tol:
            out.append(c / c.norm())
    return torch.stack(out).reshape(-1, 2, 2) if out else torch.zeros(0, 2, 2, dtype=torch.float64)


def symmetry_direction(
    model: nn.Module,
    generator: Tensor,
    g: Tensor,
    mean_mu: float,
    mu: Tensor,
    w_norm: float,
    hvp: Callable[[Tensor], Tensor],
) -> dict[str, Any]:
    """Curvature of the loss along the kernel-transformation tangent of one ``(2, 2)``
    generator: Gauss-Newton ``t^T G t / |t|^2`` (against a random direction and as a quantile of
    ``G``'s spectrum ``mu``) and Hessian ``t^T H t / |t|^2`` (``hvp``: ``v -> H v``)."""
    t = conv_rotation_tangent(model, generator)
    if t is None or float(t.norm()) == 0.0:
        return {"available": False}
    tt = float(t @ t)
    q = float(t @ g @ t) / tt
    return {
        "available": True,
        # how far the weights move along the orbit: ~0 when every kernel is already
        # invariant, and then there is no orbit direction to be flat
        "tangent_norm_relative": float(t.norm()) / w_norm,
        "curvature": q,
        "relative_to_random": q / mean_mu if mean_mu > 0 else math.nan,
        "spectrum_quantile": float((mu < q).double().mean()),
        "hessian_curvature": float(t @ hvp(t)) / tt,
    }


def gradient_bias(grad: Tensor, g: Tensor, n_beta: float, localization: float) -> float:
    """Quadratic-model bias of the LLC estimate at a ``w*`` with non-zero gradient.

    With ``L_n(w* + delta) ~ L_n(w*) + grad . delta + delta^T G delta / 2`` the localised
    posterior is Gaussian with mean ``-n_beta (n_beta G + gamma)^-1 grad``, and
    ``n_beta E[L_n - L_n(w*)]`` is half the effective dimension plus
    ``-n_beta^2 sum_i grad_i^2 (n_beta mu_i / 2 + gamma) / (n_beta mu_i + gamma)^2`` (eigenbasis
    of ``G``), which this returns (<= 0: the chains slide downhill)."""
    mu, v = torch.linalg.eigh(g)
    mu = mu.clamp_min(0.0)
    gi2 = (v.T @ grad).square()
    a = n_beta * mu + localization
    return float(-(n_beta**2) * (gi2 * (n_beta * mu / 2 + localization) / a.square()).sum())


def measure_degeneracy(
    model: nn.Module,
    kind: str,
    nll: Callable[[Tensor, Tensor], Tensor],
    sigma: float,
    data: tuple[Tensor, Tensor],
    heldout: tuple[Tensor, Tensor],
    generators: Tensor,
    llc: dict[str, Any],
    *,
    n_rank: int,
    n_emulate: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Every degeneracy measurement of one trained model at its current weights ``w*``.

    Args:
        model: trained field model ``(B, C, h, h) -> (B, C_out, h', h')``.
        kind: ``"regression"`` or ``"classification"`` (how the Gauss-Newton matrix is formed).
        nll: the per-sample mean negative log-likelihood the LLC is of.
        sigma: regression noise level of ``nll`` (ignored for classification).
        data: ``(x, y)`` the ``n`` training samples (the LLC's data).
        heldout: ``(x, y)`` held-out samples (held-out NLL, emulability).
        generators: ``(k, 2, 2)`` chart generators (emulability and symmetry directions).
        llc: ``chains, draws, burn_in, batch_size, step_size, localization, full_batch_every``
            and optionally ``hessian_dtype`` (of the Hessian curvature along directions;
            default ``"float64"``) and ``step_check`` (a factor ``f`` in ``[0, 1)``: a second
            estimate at step ``f * step_size``, burn-in ``ceil(burn_in / f)``, sampler seed
            ``seed + 1``; default 0, none).
        n_rank: samples for the functional dimension, the Gauss-Newton matrix ``G`` and its
            rank (the first ``n_rank`` training samples: ``G`` approximates the Hessian of
            ``L_n``).
        n_emulate: held-out samples for emulability.
        seed: the sampler's and the emulability split's seed.

    Returns:
        a JSON-ready dict: ``train_nll``, ``heldout_nll``, ``grad_norm`` (of the NLL at ``w*``),
        ``functional_dimension`` and its ``rank_gap``, ``gauss_newton`` (``rank``: of the
        whitened Jacobian ``J~`` at :func:`jacobian_spectrum`'s tolerance; ``top``, ``trace``,
        ``eigenvalues`` descending),
        ``effective_dimension``, ``rank_bounds``, ``llc`` (``mean``, ``std``, ``stderr``,
        ``per_chain``, ``healthy``, ``problems``, settings, ``time_s``, ``step_check``: None
        or the second estimate with :func:`step_dependence`'s fields), ``emulability``,
        ``symmetry_directions`` (one entry per generator: Gauss-Newton and Hessian curvature,
        their ratios to a random direction and to the shear controls) and
        ``control_directions`` (one entry per :func:`control_generators` shear).
    """

    x, y = data
    xh, yh = heldout
    n = x.shape[0]
    train_nll, grad = flat_gradient(model, nll, x, y)
    out: dict[str, Any] = {
        "train_nll": train_nll,
        "heldout_nll": mean_nll(model, nll, xh, yh),
        "grad_norm": float(grad.norm()),
    }
    start = time.perf_counter()
    # one pass gives the Gauss-Newton matrix and its rank (from the singular values of J~:
    # forming J~^T J~ first would square away half the resolution); for regression J~ = J /
    # sigma, so the functional dimension is the same rank
    gn_spec = jacobian_spectrum(NLLOutputs(model, kind, sigma), x[:n_rank])
    spec = gn_spec if kind == "regression" else jacobian_spectrum(model, x[:n_rank])
    gn_rank = gn_spec.rank
    # the curvature itself over all n samples, by random probes: G of a few samples misses
    # directions that other samples make stiff, and a preconditioner built from it let the
    # chains diverge along them (measured on digits with 8 samples)
    g = gauss_newton_probe(NLLOutputs(model, kind, sigma), x, seed=seed)
    d = g.shape[0]
    mu = torch.linalg.eigvalsh(g).flip(0).clamp_min(0.0)
    out["functional_dimension"] = spec.rank
    out["rank_gap"] = spec.gap
    out["gauss_newton"] = {
        "rank": gn_rank,
        "top": float(mu[0]),
        "trace": float(mu.sum()),
        "eigenvalues": mu.tolist(),
    }
    out["rank_bounds"] = list(llc_rank_bounds(spec.rank, spec.n_parameters))
    out["ranks_time_s"] = time.perf_counter() - start

    directions, controls = _symmetry_directions(model, generators, g, mu, nll, (x, y), llc)
    out["symmetry_directions"] = directions
    out["control_directions"] = controls

    n_beta = float(default_llc_settings(n)["n_beta"])
    gamma = float(llc["localization"])
    for entry in (*directions, *controls):
        if entry["available"]:
            # the direction's share of the effective dimension at this localisation: what it
            # adds to the LLC on a quadratic basin (0: below the resolution, 1: fully counted)
            entry["effective_weight"] = effective_weight(entry["curvature"], n_beta, gamma)
    out["effective_dimension"] = effective_dimension(mu, n_beta, gamma)
    out["gradient_bias"] = gradient_bias(grad, g, n_beta, gamma)
    pre = torch.linalg.inv(n_beta * g + gamma * torch.eye(d, dtype=g.dtype))
    out["llc"] = _sample_llc(model, (x, y), nll, n_beta, gamma, (pre + pre.T) / 2, llc, seed)
    start = time.perf_counter()
    out["emulability"] = _emulability(model, generators, xh[:n_emulate], seed)
    out["emulability_time_s"] = time.perf_counter() - start
    return out


def _symmetry_directions(
    model: nn.Module,
    generators: Tensor,
    g: Tensor,
    mu: Tensor,
    nll: Callable[[Tensor, Tensor], Tensor],
    data: tuple[Tensor, Tensor],
    llc: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(directions, controls)``: :func:`symmetry_direction` of every generator and of every
    shear control, with the generators' ratios to the controls' mean curvature."""
    x, y = data
    d = g.shape[0]
    # symmetry directions: curvature along the weight-space image of each generator, against
    # a random direction's (trace / d), as a quantile of the spectrum, and against the same
    # construction with shears (control_generators) on the same weights
    trainable = [p.detach() for p in model.parameters() if p.requires_grad]
    w_norm = float(nn.utils.parameters_to_vector(trainable).to(torch.float64).norm())
    mean_mu = float(mu.sum()) / d

    curv_model, xc, yc = second_order_copy(model, x, y, llc.get("hessian_dtype", "float64"))

    def hvp(v: Tensor) -> Tensor:
        return hessian_vector_product(curv_model, nll, xc, yc, v)

    def along(a: Tensor) -> dict[str, Any]:
        return symmetry_direction(model, a, g, mean_mu, mu, w_norm, hvp)

    controls = [{"generator": c.tolist(), **along(c)} for c in control_generators(generators)]
    usable = [c for c in controls if c["available"]]
    directions = []
    for i, a in enumerate(generators):
        entry = {"generator": i, **along(a)}
        if entry["available"] and usable:
            entry["relative_to_control"] = entry["curvature"] / statistics.fmean(
                c["curvature"] for c in usable
            )
            entry["hessian_relative_to_control"] = entry["hessian_curvature"] / statistics.fmean(
                c["hessian_curvature"] for c in usable
            )
        directions.append(entry)
    return directions, controls


def _sample_llc(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    nll: Callable[[Tensor, Tensor], Tensor],
    n_beta: float,
    gamma: float,
    pre: Tensor,
    llc: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """The preconditioned, gradient-corrected LLC estimate at the run's settings, with the
    step check's second estimate (``llc["step_check"]``) under ``"step_check"``."""
    x, y = data
    n = x.shape[0]
    settings = {
        "n_beta": n_beta,
        "localization": gamma,
        "preconditioned": True,
        "gradient_correction": True,
        "chains": int(llc["chains"]),
        "draws": int(llc["draws"]),
        "full_batch_every": int(llc["full_batch_every"]),
    }

    def sample(step: float, burn_in: int, sampler_seed: int) -> dict[str, Any]:
        recorded = {"step_size": step, "burn_in": burn_in, **settings}
        try:
            est = estimate_llc(
                model,
                (x, y),
                nll,
                n_beta=n_beta,
                localization=gamma,
                step_size=step,
                chains=int(llc["chains"]),
                draws=int(llc["draws"]),
                burn_in=burn_in,
                batch_size=min(int(llc["batch_size"]), n),
                seed=sampler_seed,
                check="off",
                preconditioner=pre,
                gradient_correction=True,
                full_batch_every=int(llc["full_batch_every"]),
            )
        except LLCHealthError as exc:
            # every chain diverged: recorded as a failed measurement, not hidden
            return {
                "mean": math.nan,
                "std": math.nan,
                "stderr": math.nan,
                "per_chain": [],
                "healthy": False,
                "problems": [str(exc)],
                "below_fraction": [],
                "time_s": math.nan,
                **recorded,
            }
        return {
            "mean": est.mean,
            "std": est.std,
            "stderr": est.stderr,
            "per_chain": [float(v) for v in est.per_chain],
            "healthy": est.healthy,
            "problems": list(est.problems),
            "below_fraction": est.diagnostics["below_fraction"].tolist(),
            "time_s": est.wall_s,
            **recorded,
        }

    step, burn_in = float(llc["step_size"]), int(llc["burn_in"])
    result = sample(step, burn_in, seed)
    factor = float(llc.get("step_check", 0.0))
    if factor > 0:
        # same simulated time: the preconditioned chains relax in about 2 / step steps, so the
        # burn-in grows by 1 / factor; an independent sampler seed keeps the two independent
        fine = sample(step * factor, math.ceil(burn_in / factor), seed + 1)
        fine.update(
            step_dependence(
                (result["mean"], result["stderr"], step),
                (fine["mean"], fine["stderr"], step * factor),
            )
        )
        result["step_check"] = fine
    else:
        result["step_check"] = None
    return result


def _emulability(
    model: nn.Module, generators: Tensor, xh: Tensor, seed: int
) -> list[dict[str, Any]]:
    """:func:`emulation` of every generator on the held-out inputs ``xh``."""
    emulate = []
    for i, a in enumerate(generators):
        e = emulation(model, a.to(torch.float64), xh, action="field", seed=seed)
        emulate.append(
            {
                "generator": i,
                "residual": e.residual,
                "fit_residual": e.fit_residual,
                "outside_symmetries": e.outside_symmetries,
                "output_change": e.output_change,
                "method": e.method,
            }
        )
    return emulate
