"""Local learning coefficient (LLC) of a trained model, estimated with localised SGLD.

The estimator of Lau, Furman, Wang, Murfet and Wei ("Quantifying degeneracy in singular models via
the learning coefficient", arXiv 2308.12108)::

    lambda_hat(w*) = n_beta * (E_w[L_n(w)] - L_n(w*)),
    w ~ p(w) proportional to exp(-n_beta L_n(w) - (gamma / 2) |w - w*|^2),

with ``n_beta = n / log n`` (inverse temperature ``beta = 1 / log n`` times the number of samples
``n``) and ``gamma`` the localisation strength. The expectation is taken with stochastic-gradient
Langevin dynamics (SGLD), one independent chain per row of a stacked parameter matrix, all chains
advanced together by one vectorised call (``torch.func.vmap`` over ``functional_call``)::

    w <- w - (eps / 2) (n_beta grad L_B(w) + gamma (w - w*)) + N(0, eps I).

Conventions (tested):

* ``L_n`` is a per-sample *negative log-likelihood* averaged over the data. The default loss is
  ``0.5 * sum over output dims of (f(x) - y)^2``, averaged over samples: the Gaussian negative
  log-likelihood with unit noise variance, up to a constant. Data generated with noise variance
  ``sigma^2`` should be fitted with a loss divided by ``sigma^2`` (pass ``loss``), otherwise the
  posterior is at the wrong temperature. A custom ``loss(pred, target) -> scalar`` must likewise
  be a mean per-sample NLL (``torch.nn.functional.cross_entropy`` is one).
* ``E[L_n(w)] - L_n(w*)`` is estimated from the minibatch of each step with a control variate:
  every draw records ``L_B(w_t) - L_B(w*)`` on the same minibatch ``B``. Its mean is unbiased for
  ``E[L_n(w)] - L_n(w*)`` and its variance is far smaller than that of ``L_B(w_t) - L_n(w*)``
  (the noise in ``y`` cancels), at the cost of one gradient-free forward pass per step.
* ``w*`` is the model's current parameters. The estimator is meant for a trained ``w*`` (a local
  minimum of ``L_n``). The calibration tests use true parameters, where the theory is stated; the
  two differ by about ``n_beta (L_n(w_true) - L_n(w_trained))``, an ``O(1 / log n)`` relative
  effect. Measured at the exact empirical minimisers of two-layer linear networks (n = 10^4,
  seed 0): 5-3-5 rank 2 gives 9.89 there vs 9.07 at the true parameter (lambda 9.5), 10-5-10
  rank 2 31.2 vs 26.4 (lambda 29), 5-3-5 rank 0 6.45 vs 5.46 (lambda 6.5).

Defaults (calibrated on two-layer and deep linear networks against Aoyagi & Watanabe 2005 and
Aoyagi 2024 at n = 10^4; the measured table is in ``tests/test_llc.py``)::

    n_beta = n / log n          localization gamma = 1        chains = 4
    step_size = 6e-5 * 1086 / n_beta  (6e-5 at n = 10^4: eps * n_beta = 0.065 for every n)
    batch_size = min(n, 500)    burn_in = 1000                draws = 2000

Why these: the chains do not equilibrate along the flat directions of a singular model (at
``gamma = 1`` that takes about ``2 / (eps gamma)`` = 33000 steps), so the exploration
``eps * (burn_in + draws)`` acts as a localisation together with ``gamma``, and the four are
calibrated as a set: change one and the estimate moves. Measured on the calibration set (seed 0):
too little exploration under-fills the singular directions (``eps = 2e-5``: 0.72-0.97 of the
truth); too much drifts along the set of true parameters towards less singular points and adds
Euler-Maruyama bias on the stiffest directions (about ``eps n_beta mu / 4`` relative; with
``eps = 1e-4``: three of four deep linear networks +31% to +55%, a 10-5-10 rank-4 network
+45%). Stronger localisation cuts the quartic directions of the most singular points (5-3-5 at
rank 0: -22% at ``gamma = 10``, -76% at ``gamma = 100``). The fully degenerate point ``w* = 0``
(rank 0) remains ~16% low with the defaults: it converges slowest.

Health checks (per chain, reported in :class:`LLCEstimate` and warned about with
:class:`LLCHealthWarning`, or raised as :class:`LLCHealthError` with ``check="raise"``):

* a chain whose loss becomes NaN or Inf (excluded from the mean; all chains non-finite always
  raises);
* a chain whose loss is below the loss at ``w*`` on the same minibatch in more than
  ``below_tolerance`` (default 0.4) of its draws, or whose estimate is negative: ``w*`` is not a
  local minimum (train longer). Healthy chains at true parameters of the calibration set stay
  below 0.21: the posterior of a singular model sits close to the set of true parameters, where
  the excess loss fluctuates around 0; chains from an untrained ``w*`` go below in nearly all
  draws;
* an exploding chain: a loss above ``explode_factor * (L_n(w*) + d / n_beta)`` (default factor
  10; ``d`` parameters; ``d / n_beta`` is twice the mean excess loss of a quadratic basin).

Options
-------
* ``preconditioner``: optional ``(d, d)`` symmetric positive definite matrix ``P`` (parameter
  order of ``named_parameters``): preconditioned SGLD
  ``w <- w - (eps / 2) P (n_beta grad L_B + gamma (w - w*)) + sqrt(eps) C xi`` with
  ``C C^T = P``. A constant ``P`` leaves the stationary distribution unchanged; with
  ``P = (n_beta G + gamma I)^-1`` (``G`` a Gauss-Newton matrix at ``w*``) every
  quadratic direction relaxes at the same rate, so ``eps`` is then a dimensionless
  step (about 0.1) instead of one limited by the stiffest direction. The calibrated
  defaults above are for ``P = I``; pass ``step_size`` with a preconditioner.
* ``gradient_correction``: sample (and measure the excess of) the tilted loss
  ``L_n(w) - grad L_n(w*) . (w - w*)`` instead of ``L_n``: same curvature, but ``w*``
  is a critical point of it. For a trained ``w*`` that is not an exact minimum
  (ill-conditioned losses never get there) the chains otherwise slide down the
  residual gradient and the estimate is dominated by it (negative values). On a
  quadratic loss the corrected estimate is exactly the one at the minimum; for
  singular directions it is a documented approximation, not the LLC of a minimum.
* ``full_batch_every``: 0 (default): each draw's excess is ``L_B(w_t) - L_B(w*)`` on the
  step's minibatch, the usual estimator. ``k > 0``: every ``k``-th draw after burn-in
  the excess is measured on ALL ``n`` samples, ``L_n(w_t) - L_n(w*)``, and only those
  enter the estimate and the below-``w*`` health check. Same expectation, without the
  minibatch term ``(grad L_B - grad L_n) . (w_t - w*)``, whose spread dominates the
  excess when the per-sample gradients at ``w*`` are large against the curvature
  (misspecified models, tight localisation); the below fraction then reflects the
  loss surface, not the minibatch. Costs about ``n / (k * batch_size)`` extra
  forward passes per chain and draw.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from atlasd.checks import check_finite, check_int
from atlasd.downstream.degeneracy.ranks import FlatModel

__all__ = [
    "LLCEstimate",
    "LLCHealthError",
    "LLCHealthWarning",
    "default_llc_settings",
    "estimate_llc",
    "mse_nll",
    "step_dependence",
]

Check = Literal["warn", "raise", "off"]
LossFn = Callable[[Tensor, Tensor], Tensor]

# Calibrated defaults (see the module docstring and tests/test_llc.py). Kept as constants of this
# module's math, not configuration: every one can be overridden per call.
_STEP_AT_1E4 = 6e-5  # SGLD step size at n = 10^4; other n keep eps * n_beta fixed
_LOCALIZATION = 1.0
_BATCH = 500
_BURN_IN = 1000
_DRAWS = 2000


class LLCHealthWarning(UserWarning):
    """An SGLD chain of :func:`estimate_llc` looks unhealthy (see the module docstring)."""


class LLCHealthError(RuntimeError):
    """Raised by :func:`estimate_llc` with ``check="raise"`` for an unhealthy chain, and always
    when every chain diverged."""


def mse_nll(pred: Tensor, target: Tensor) -> Tensor:
    """Default loss: ``0.5 * sum over non-batch dims of (pred - target)^2``, mean over the batch.

    The Gaussian negative log-likelihood per sample with unit noise variance (up to a constant).
    ``pred`` and ``target``: ``(B, ...)`` of equal shape. Returns a scalar.
    """
    diff = (pred - target).reshape(pred.shape[0], -1)
    return 0.5 * diff.square().sum(dim=1).mean()


@dataclass(frozen=True)
class LLCEstimate:
    """Result of :func:`estimate_llc`.

    Attributes:
        mean: mean of ``per_chain`` over the finite chains.
        std: standard deviation of ``per_chain`` over the finite chains (``ddof = 1``; 0 for one
            chain). The standard error of ``mean`` is ``std / sqrt(chains)``.
        per_chain: ``(chains,)`` float64, ``n_beta * mean_t (L_B(w_t) - L_B(w*))`` over the draws.
        trace: ``(chains, burn_in + draws)`` float64 minibatch losses ``L_B(w_t)`` at every step
            (the first ``burn_in`` columns are the burn-in).
        excess_trace: ``(chains, burn_in + draws)`` float64 ``n_beta (L_B(w_t) - L_B(w*))``.
        init_loss: ``L_n(w*)`` on the whole data set.
        diagnostics: per-chain health figures (tensors of shape ``(chains,)``): ``finite``,
            ``below_fraction`` (draws with ``L_B(w_t) < L_B(w*)``), ``max_loss_ratio`` (largest
            loss over the explosion threshold's base ``L_n(w*) + d / n_beta``).
        problems: human-readable health problems found (empty when healthy).
        settings: the values actually used (``n``, ``n_beta``, ``localization``, ``step_size``,
            ``chains``, ``draws``, ``burn_in``, ``batch_size``, ``seed``, ``n_parameters``).
        wall_s, cpu_s: wall-clock and process CPU seconds spent sampling.
    """

    mean: float
    std: float
    per_chain: Tensor
    trace: Tensor
    excess_trace: Tensor
    init_loss: float
    diagnostics: dict[str, Tensor]
    problems: tuple[str, ...]
    settings: dict[str, Any]
    wall_s: float
    cpu_s: float

    @property
    def healthy(self) -> bool:
        """True when no health problem was found."""
        return not self.problems

    @property
    def stderr(self) -> float:
        """Standard error of :attr:`mean` across chains."""
        k = int(self.diagnostics["finite"].sum())
        return self.std / math.sqrt(k) if k > 0 else math.nan

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"LLCEstimate(mean={self.mean:.4g}, std={self.std:.3g}, chains={s['chains']}, "
            f"draws={s['draws']}, n_beta={s['n_beta']:.4g}, localization={s['localization']:g}, "
            f"step_size={s['step_size']:.3g}, healthy={self.healthy})"
        )


def default_llc_settings(n: int) -> dict[str, float | int]:
    """The calibrated defaults of :func:`estimate_llc` for a data set of ``n`` samples."""
    n = check_int("n", n, 1)
    if n < 2:
        raise ValueError(f"the LLC needs at least 2 samples (n / log n), got n={n}")
    n_beta = n / math.log(n)
    n_beta_ref = 1e4 / math.log(1e4)
    return {
        "n_beta": n_beta,
        "localization": _LOCALIZATION,
        # eps * n_beta is what sets the stability of the stiff directions; keep it as calibrated
        "step_size": _STEP_AT_1E4 * n_beta_ref / n_beta,
        "batch_size": min(n, _BATCH),
        "burn_in": _BURN_IN,
        "draws": _DRAWS,
    }


def estimate_llc(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    loss: LossFn | None = None,
    *,
    n_beta: float | None = None,
    localization: float | None = None,
    step_size: float | None = None,
    chains: int = 4,
    draws: int | None = None,
    burn_in: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    check: Check = "warn",
    below_tolerance: float = 0.4,
    explode_factor: float = 10.0,
    preconditioner: Tensor | None = None,
    gradient_correction: bool = False,
    full_batch_every: int = 0,
) -> LLCEstimate:
    """Estimate the local learning coefficient of ``model`` at its current parameters ``w*``.

    Args:
        model: a module mapping a batch ``x[idx]`` ``(B, ...)`` to predictions ``(B, ...)``. Its
            trainable parameters are sampled; buffers stay fixed. Not modified. It runs in its
            current mode: call ``model.eval()`` first if it has dropout or batch norm.
        data: ``(x, y)`` with ``x`` ``(n, ...)`` and ``y`` ``(n, ...)``; same first dimension.
        loss: ``loss(pred, target) -> scalar`` mean per-sample negative log-likelihood; default
            :func:`mse_nll` (Gaussian, unit noise variance).
        n_beta: inverse temperature times ``n``; default ``n / log n``.
        localization: ``gamma`` of the Gaussian prior centred at ``w*``; default calibrated.
        step_size: SGLD step ``eps``; default calibrated (``6e-5`` at ``n = 10^4``, scaled so
            that ``eps * n_beta`` does not depend on ``n``).
        chains: independent chains, advanced together (vectorised).
        draws: SGLD steps recorded per chain after burn-in.
        burn_in: SGLD steps discarded per chain.
        batch_size: minibatch size (sampled with replacement, independently per chain and step);
            default ``min(n, 500)``.
        seed: seed of the sampler's own ``torch.Generator`` (same seed -> same result).
        check: ``"warn"`` (default) issues an :class:`LLCHealthWarning` per problem, ``"raise"``
            raises :class:`LLCHealthError`, ``"off"`` only records problems.
        below_tolerance: largest healthy fraction of draws below the loss at ``w*``.
        explode_factor: ``k`` in the explosion threshold ``k (L_n(w*) + d / n_beta)``.
        preconditioner: optional ``(d, d)`` symmetric positive definite ``P`` (parameter
            order of ``named_parameters``) for preconditioned SGLD; pass ``step_size`` with
            it (see "Options" in the module docstring).
        gradient_correction: sample the tilted loss ``L_n(w) - grad L_n(w*) . (w - w*)``, for
            a ``w*`` that is not an exact minimum (see "Options").
        full_batch_every: ``k > 0`` measures every ``k``-th draw's excess on all ``n``
            samples instead of the step's minibatch (0, default: minibatch; see "Options").

    Returns:
        :class:`LLCEstimate` (``.mean .std .per_chain .trace`` and diagnostics).

    Raises:
        ValueError: malformed data or settings (shape mismatch, NaN/Inf, non-positive sizes,
            a model without trainable parameters, a loss that is not a scalar).
        LLCHealthError: every chain diverged, or ``check="raise"`` and a chain is unhealthy.
    """
    x, y = _check_data(data)
    n = x.shape[0]
    opts = _resolve_settings(
        n,
        dict(n_beta=n_beta, localization=localization, step_size=step_size, chains=chains),
        dict(draws=draws, burn_in=burn_in, batch_size=batch_size, seed=seed),
        check=check,
        below_tolerance=below_tolerance,
        explode_factor=explode_factor,
        full_batch_every=full_batch_every,
    )
    loss_fn = mse_nll if loss is None else loss
    if not callable(loss_fn):
        raise ValueError(f"loss must be callable (pred, target) -> scalar, got {loss_fn!r}")
    flat_model = FlatModel(model)
    w_star = flat_model.w
    root = _preconditioner_root(
        preconditioner, flat_model.n_parameters, w_star.dtype, w_star.device
    )
    _need_step_size(root, step_size)
    chain_loss, x, y, init_loss = _chain_loss(flat_model, loss_fn, x, y, gradient_correction)

    burn_in, draws, every = opts["burn_in"], opts["draws"], opts["full_batch_every"]
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    trace, excess, full = _sgld(
        chain_loss,
        w_star,
        x,
        y,
        n_beta=opts["n_beta"],
        gamma=opts["localization"],
        eps=opts["step_size"],
        chains=opts["chains"],
        steps=burn_in + draws,
        batch_size=opts["batch_size"],
        seed=opts["seed"],
        root=root,
        full_at=range(burn_in, burn_in + draws, every) if every else range(0),
    )
    wall_s, cpu_s = time.perf_counter() - start_wall, time.process_time() - start_cpu

    keys = ("n_beta", "localization", "step_size", "chains", "draws", "burn_in", "batch_size")
    settings = {"n": n, **{k: opts[k] for k in (*keys, "seed")}}
    settings.update(n_parameters=flat_model.n_parameters, preconditioned=root is not None)
    settings.update(gradient_correction=bool(gradient_correction), full_batch_every=every)
    estimate = _estimate(
        trace,
        excess,
        full,
        init_loss,
        flat_model.n_parameters,
        below_tolerance=below_tolerance,
        explode_factor=opts["explode_factor"],
        settings=settings,
        times=(wall_s, cpu_s),
    )
    if estimate.problems and check == "raise":
        raise LLCHealthError("; ".join(estimate.problems))
    for p in estimate.problems if check == "warn" else ():
        warnings.warn(p, LLCHealthWarning, stacklevel=2)
    return estimate


def _chain_loss(
    flat_model: FlatModel, loss_fn: LossFn, x: Tensor, y: Tensor, gradient_correction: bool
) -> tuple[Callable[[Tensor, Tensor, Tensor], Tensor], Tensor, Tensor, float]:
    """``(chain_loss, x, y, L(w*))``: the loss the chains sample (tilted by the gradient at
    ``w*`` with ``gradient_correction``) and the data on the parameters' device and dtype."""
    w_star = flat_model.w
    x = x.to(w_star.device)
    y = y.to(w_star.device)
    # floating data follows the parameters' dtype (integer class labels stay as they are)
    if x.is_floating_point():
        x = x.to(w_star.dtype)
    if y.is_floating_point():
        y = y.to(w_star.dtype)

    def chain_loss(theta: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        out = flat_model(theta, xb)
        value = loss_fn(out, yb)
        if value.ndim != 0:
            raise ValueError(
                f"loss must return a scalar (mean over the batch), got shape {tuple(value.shape)}"
            )
        return value

    if gradient_correction:
        plain_loss = chain_loss
        slope = _full_gradient(plain_loss, w_star, x, y)

        def chain_loss(theta: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
            return plain_loss(theta, xb, yb) - slope @ (theta - w_star)

    init_loss = float(_full_losses(chain_loss, w_star[None], x, y)[0])
    if not math.isfinite(init_loss):
        raise ValueError(f"the loss at w* is not finite ({init_loss}); check the model and data")
    return chain_loss, x, y, init_loss


def _estimate(
    trace: Tensor,
    excess: Tensor,
    full: Tensor,
    init_loss: float,
    n_parameters: int,
    *,
    below_tolerance: float,
    explode_factor: float,
    settings: dict[str, Any],
    times: tuple[float, float],
) -> LLCEstimate:
    """The estimate from the chains' traces ``(chains, steps)``: per-chain means of the scaled
    excess over the draws, health problems, and the settings. Raises :class:`LLCHealthError`
    when every chain diverged."""
    n_beta, chains, eps = settings["n_beta"], settings["chains"], settings["step_size"]
    full_batch_every, burn_in = settings["full_batch_every"], settings["burn_in"]
    wall_s, cpu_s = times
    excess = excess * n_beta
    # full-data draws: the excess over L_n(w*) itself (same chunks and arithmetic as
    # init_loss), no minibatch term
    drawn = (full - init_loss) * n_beta if full_batch_every else excess[:, burn_in:]
    finite = torch.isfinite(trace).all(dim=1)
    per_chain = drawn.mean(dim=1)
    per_chain = torch.where(finite, per_chain, torch.full_like(per_chain, math.nan))
    below = (drawn < 0).double().mean(dim=1)
    base = init_loss + n_parameters / n_beta
    max_ratio = torch.nan_to_num(trace, nan=math.inf).amax(dim=1) / base

    problems = _health(finite, per_chain, below, max_ratio, below_tolerance, explode_factor)
    if not bool(finite.any()):
        raise LLCHealthError(
            f"all {chains} SGLD chains diverged (NaN/Inf loss); lower step_size (now {eps:.3g}) "
            "or raise localization"
        )
    good = per_chain[finite]
    mean = float(good.mean())
    std = float(good.std()) if good.numel() > 1 else 0.0
    estimate = LLCEstimate(
        mean=mean,
        std=std,
        per_chain=per_chain,
        trace=trace,
        excess_trace=excess,
        init_loss=init_loss,
        diagnostics={
            "finite": finite,
            "below_fraction": below,
            "max_loss_ratio": max_ratio,
            "full_batch_excess": drawn if full_batch_every else None,
        },
        problems=tuple(problems),
        settings=settings,
        wall_s=wall_s,
        cpu_s=cpu_s,
    )
    return estimate


def _resolve_settings(
    n: int,
    scales: dict[str, Any],
    lengths: dict[str, Any],
    *,
    check: str,
    below_tolerance: float,
    explode_factor: float,
    full_batch_every: int,
) -> dict[str, Any]:
    """The sampler's settings for ``n`` samples: defaults filled in, every value checked.
    ``scales``: n_beta, localization, step_size, chains; ``lengths``: draws, burn_in,
    batch_size, seed (None = the default for ``n``)."""
    n_beta, localization, step_size = (scales[k] for k in ("n_beta", "localization", "step_size"))
    chains = scales["chains"]
    draws, burn_in, batch_size, seed = (
        lengths[k] for k in ("draws", "burn_in", "batch_size", "seed")
    )
    defaults = default_llc_settings(n)
    n_beta = check_finite("n_beta", defaults["n_beta"] if n_beta is None else n_beta, positive=True)
    gamma = check_finite(
        "localization", defaults["localization"] if localization is None else localization
    )
    eps = check_finite(
        "step_size", defaults["step_size"] if step_size is None else step_size, positive=True
    )
    chains = check_int("chains", chains, 1)
    draws = check_int("draws", defaults["draws"] if draws is None else draws, 1)
    burn_in = check_int("burn_in", defaults["burn_in"] if burn_in is None else burn_in, 0)
    batch_size = check_int(
        "batch_size", defaults["batch_size"] if batch_size is None else batch_size, 1
    )
    seed = check_int("seed", seed, 0)
    if check not in ("warn", "raise", "off"):
        raise ValueError(f"check must be 'warn', 'raise' or 'off', got {check!r}")
    if not 0.0 <= below_tolerance <= 1.0:
        raise ValueError(f"below_tolerance must lie in [0, 1], got {below_tolerance}")
    full_batch_every = check_int("full_batch_every", full_batch_every, 0)
    explode_factor = check_finite("explode_factor", explode_factor, positive=True)
    return {
        "n_beta": n_beta,
        "localization": gamma,
        "step_size": eps,
        "chains": chains,
        "draws": draws,
        "burn_in": burn_in,
        "batch_size": batch_size,
        "seed": seed,
        "full_batch_every": full_batch_every,
        "explode_factor": explode_factor,
    }


def step_dependence(
    coarse: tuple[float, float, float], fine: tuple[float, float, float], z: float = 2.0
) -> dict[str, float | bool]:
    """Compare two LLC estimates of one model at two SGLD step sizes.

    Both the discretisation bias of SGLD and the excess temperature that minibatch gradient
    noise adds (its covariance per step is ``eps^2`` times the gradient covariance, against the
    ``eps`` of the injected noise) are first order in the step, so ``lambda(eps) ~ lambda_0 + c
    eps`` for small steps and two steps give a linear extrapolation to ``eps -> 0``.

    Args:
        coarse: ``(mean, stderr, step)`` of the estimate at the larger step.
        fine: ``(mean, stderr, step)`` at a smaller step (independent chains).
        z: how many standard errors of the difference count as a step dependence.

    Returns:
        ``difference`` (coarse - fine) and its ``difference_stderr`` (independent errors in
        quadrature), ``dependent`` (``|difference| > z * difference_stderr``), ``extrapolated``
        ``= (fine - f coarse) / (1 - f)`` with ``f = step_fine / step_coarse`` and its
        ``extrapolated_stderr`` (``sqrt(se_fine^2 + f^2 se_coarse^2) / (1 - f)``: the
        extrapolation amplifies the errors, by 2.2x at ``f = 0.5``).

    Raises:
        ValueError: steps not positive or not ``step_fine < step_coarse``.
    """
    (m_c, se_c, eps_c), (m_f, se_f, eps_f) = coarse, fine
    if not (0 < eps_f < eps_c):
        raise ValueError(
            f"the fine step must be positive and smaller than the coarse one, got {eps_f} and "
            f"{eps_c}"
        )
    f = eps_f / eps_c
    diff_se = math.hypot(se_c, se_f)
    diff = m_c - m_f
    return {
        "difference": diff,
        "difference_stderr": diff_se,
        "dependent": bool(math.isfinite(diff) and abs(diff) > z * diff_se),
        "extrapolated": (m_f - f * m_c) / (1 - f),
        "extrapolated_stderr": math.hypot(se_f, f * se_c) / (1 - f),
    }


# ----------------------------------------------------------------------------------- internals


@torch.no_grad()
def _full_losses(
    chain_loss: Callable[[Tensor, Tensor, Tensor], Tensor],
    thetas: Tensor,
    x: Tensor,
    y: Tensor,
    chunk: int = 512,
) -> Tensor:
    """``(c,)`` float64 ``L_n`` over all data at each row of ``thetas`` ``(c, d)``: one call
    vmapped over the rows per chunk of ``chunk`` samples (weighted by chunk size)."""
    per_row = vmap(chain_loss, in_dims=(0, None, None))
    n = x.shape[0]
    total = sum(
        per_row(thetas, x[s : s + chunk], y[s : s + chunk]).double() * x[s : s + chunk].shape[0]
        for s in range(0, n, chunk)
    )
    return total.cpu() / n


def _full_gradient(
    chain_loss: Callable[[Tensor, Tensor, Tensor], Tensor],
    w: Tensor,
    x: Tensor,
    y: Tensor,
    chunk: int = 1024,
) -> Tensor:
    """``grad L_n(w)`` over all data in chunks (weighted by chunk size), detached."""
    n = x.shape[0]
    total = torch.zeros_like(w)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        theta = w.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(chain_loss(theta, x[start:stop], y[start:stop]), theta)
        total += g * (stop - start)
    return total / n


def _sgld(
    chain_loss: Callable[[Tensor, Tensor, Tensor], Tensor],
    w_star: Tensor,
    x: Tensor,
    y: Tensor,
    *,
    n_beta: float,
    gamma: float,
    eps: float,
    chains: int,
    steps: int,
    batch_size: int,
    seed: int,
    root: Tensor | None = None,
    full_at: range = range(0),
) -> tuple[Tensor, Tensor, Tensor]:
    """Run ``chains`` localised SGLD chains from ``w*`` for ``steps`` steps, all at once
    (preconditioned by ``P = root root^T`` when ``root`` is given).

    Returns ``(trace, excess, full)``: ``(chains, steps)`` float64, the minibatch loss at each
    step's starting point and its excess over the loss at ``w*`` on the same minibatch; and
    ``(chains, len(full_at))`` float64, ``L_n(w_t)`` over all samples (:func:`_full_losses`)
    at the starting point of each step in ``full_at``, in step order.
    """
    gen = torch.Generator(device=w_star.device).manual_seed(seed)
    n = x.shape[0]

    def loss_and_reference(theta: Tensor, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        # the loss at w* on the same minibatch rides along as auxiliary output: one vmapped
        # call per step instead of two
        return chain_loss(theta, xb, yb), chain_loss(w_star, xb, yb).detach()

    step_fn = vmap(grad_and_value(loss_and_reference, has_aux=True))
    full_values: list[Tensor] = []
    theta = w_star.expand(chains, -1).clone()
    noise_scale = math.sqrt(eps)
    # per step: (loss, loss at w*) for every chain, kept in the parameters' dtype until the end
    record = torch.empty(steps, 2, chains, dtype=w_star.dtype, device=w_star.device)
    for t in range(steps):
        if t in full_at:
            full_values.append(_full_losses(chain_loss, theta, x, y))
        idx = torch.randint(0, n, (chains, batch_size), generator=gen, device=x.device)
        grads, (values, ref) = step_fn(theta, x[idx], y[idx])
        torch.stack((values, ref), out=record[t])
        # w <- w - (eps / 2) (n_beta grad + gamma (w - w*)) + sqrt(eps) xi, in place
        drift = grads.mul_(n_beta).add_(theta - w_star, alpha=gamma)
        noise = torch.randn(theta.shape, generator=gen, dtype=theta.dtype, device=theta.device)
        if root is not None:
            # rows are chains: P drift = drift (C C^T)^T, C xi = xi C^T
            drift = (drift @ root) @ root.T
            noise = noise @ root.T
        theta.add_(drift, alpha=-0.5 * eps)
        theta.add_(noise, alpha=noise_scale)
    record = record.double().cpu()
    trace = record[:, 0].T.contiguous()
    full = (
        torch.stack(full_values, dim=1)
        if full_values
        else torch.zeros(chains, 0, dtype=torch.float64)
    )
    return trace, (record[:, 0] - record[:, 1]).T.contiguous(), full


def _need_step_size(root: Tensor | None, step_size: float | None) -> None:
    if root is not None and step_size is None:
        raise ValueError(
            "a preconditioner changes the scale of the step: pass step_size (about 0.1 for "
            "P = (n_beta G + gamma I)^-1)"
        )


def _preconditioner_root(p: Any, d: int, dtype: torch.dtype, device: torch.device) -> Tensor | None:
    """Cholesky factor ``C`` (``C C^T = P``) of a symmetric positive definite ``(d, d)`` ``P``."""
    if p is None:
        return None
    if not isinstance(p, Tensor) or p.shape != (d, d):
        shape = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
        raise ValueError(f"preconditioner must be a ({d}, {d}) tensor (d parameters), got {shape}")
    p = p.to(torch.float64)
    if not bool(torch.isfinite(p).all()):
        raise ValueError("preconditioner has NaN or Inf entries")
    # an inverse computed in float64 is symmetric only to rounding: check loosely, then symmetrise
    if not torch.allclose(p, p.T, rtol=1e-6, atol=1e-9 * float(p.abs().max())):
        raise ValueError("preconditioner must be symmetric")
    root, info = torch.linalg.cholesky_ex((p + p.T) / 2)
    if int(info) != 0:
        raise ValueError("preconditioner must be positive definite (its Cholesky factor failed)")
    return root.to(device=device, dtype=dtype)


def _health(
    finite: Tensor,
    per_chain: Tensor,
    below: Tensor,
    max_ratio: Tensor,
    below_tolerance: float,
    explode_factor: float,
) -> list[str]:
    problems = []
    for c in range(finite.numel()):
        if not bool(finite[c]):
            problems.append(
                f"chain {c}: loss became NaN/Inf (excluded from the mean); lower step_size"
            )
            continue
        if float(per_chain[c]) < 0 or float(below[c]) > below_tolerance:
            problems.append(
                f"chain {c}: loss below the loss at w* in {float(below[c]):.0%} of draws "
                f"(estimate {float(per_chain[c]):.3g}); w* is not a local minimum: train longer "
                "(or, for very short runs, raise burn_in and draws)"
            )
        if float(max_ratio[c]) > explode_factor:
            problems.append(
                f"chain {c}: loss exploded to {float(max_ratio[c]):.3g} x (L_n(w*) + d / n_beta)"
                f" (> {explode_factor:g}); lower step_size or raise localization"
            )
    return problems


def _check_data(data: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("data must be a pair (x, y) of tensors with the same first dimension")
    x, y = data
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise ValueError(f"data {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim == 0:
            raise ValueError(f"data {name} must have a sample dimension, got a scalar")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"data {name} contains NaN or Inf")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same number of samples, got {x.shape[0]} and {y.shape[0]}"
        )
    return x, y
