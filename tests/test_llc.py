"""LLC estimator: calibration against the theoretical learning coefficients of linear networks
(Aoyagi & Watanabe 2005; Aoyagi 2024, formulas in known_llc.py), the quadratic-basin limit,
health checks, reproducibility and input errors.

Calibration problems: w* is the true parameter (the most singular point of its rank, balanced
factors; see known_llc.linear_network), data x ~ N(0, I), y = f(x; w*) + N(0, I), n = 10^4, the
default loss (Gaussian NLL with unit noise variance) and all sampler defaults.

Accuracy table with the defaults (seed 0; 4 chains x 2000 draws after 1000 burn-in; CPU seconds
per estimate on the shared 2-core machine under light load; `pytest tests/test_llc.py -m slow -s`
prints it; the whole table takes ~105 s):

    widths        r   lambda   estimate +- std (chains)   ratio   tol   CPU s
    5-3-5         1     8.00      7.79 +- 0.40            0.974   15%   11.3
    5-3-5         2     9.50      9.07 +- 0.25            0.955   15%   10.2
    5-3-5         3    10.50     11.16 +- 0.29            1.063   15%   10.7
    10-5-10       2    29.00     26.44 +- 0.36            0.912   15%    9.8
    10-5-10       4    35.00     33.04 +- 0.50            0.944   15%    7.6
    8-4-6         2    16.00     15.65 +- 0.65            0.978   15%    7.3
    4-8-4         1     8.00      7.63 +- 0.57            0.954   15%    7.3
    6-5-4-5-6     2    12.50     13.15 +- 0.41            1.052   25%    9.7
    4-4-4-4       2     7.50      7.74 +- 0.73            1.032   25%    7.6
    8-6-4-6-8     3    21.00     23.40 +- 1.16            1.114   25%   10.1
    5-4-4-5       1     8.50      7.36 +- 0.63            0.865   25%    8.9
    5-3-5         0     6.50      5.46 +- 0.13            0.839   (25%)   7.8   w* = 0: known low

"""

from __future__ import annotations

import math
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from known_llc import deep_linear_lambda, linear_network, regression_data, rrr_lambda
from torch import nn

from atlasd.downstream import LLCEstimate, estimate_llc
from atlasd.downstream.degeneracy.llc import LLCHealthError, LLCHealthWarning, default_llc_settings
from atlasd.downstream.degeneracy.ranks import effective_dimension, gauss_newton_spectrum

N = 10_000


def calibration_case(widths: list[int], r: int, seed: int = 0) -> tuple[nn.Module, tuple]:
    model = linear_network(widths, r, seed=seed)
    return model, regression_data(model, widths[0], N, seed=seed + 1000)


# --- the theoretical values themselves --------------------------------------------------------


def test_formula_examples_of_the_reference_values():
    assert rrr_lambda(5, 3, 5, 2) == 9.5
    assert rrr_lambda(5, 3, 5, 0) == 6.5
    assert rrr_lambda(10, 5, 10, 2) == 29.0
    assert deep_linear_lambda([6, 5, 4, 5, 6], 2) == 12.5


def test_deep_formula_reduces_to_reduced_rank_regression():
    """Aoyagi (2024) with one hidden layer is Aoyagi & Watanabe (2005), for all sizes up to 7."""
    for m in range(1, 8):
        for h in range(1, 8):
            for n in range(1, 8):
                for r in range(min(m, h, n) + 1):
                    assert deep_linear_lambda([m, h, n], r) == rrr_lambda(m, h, n, r)


def test_regular_limits_of_the_formulas():
    # full rank, no bottleneck: the identifiable part is r (M + N - r) parameters -> half of it
    assert rrr_lambda(4, 2, 3, 2) == 2 * (4 + 3 - 2) / 2
    # a huge hidden layer: lambda = M N / 2 (the case M + N < H + r)
    assert rrr_lambda(2, 9, 3, 1) == 2 * 3 / 2


# --- quadratic basin: sampler error separated from geometry -----------------------------------


def test_quadratic_basin_matches_half_the_effective_dimension():
    """Linear regression f = W x is a quadratic basin with Hessian I (x) X^T X / n. At the
    empirical minimiser (least squares) the localised tempered posterior is Gaussian, and the
    estimator's limit is exactly (1/2) sum n_beta mu / (n_beta mu + gamma) < d / 2: what is left
    is sampler error."""
    scales = torch.tensor([0.25, 0.5, 1.0, 1.7])
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(N, 4, generator=gen) * scales
    y = x @ torch.randn(4, 2, generator=gen) + torch.randn(N, 2, generator=gen)
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x.double(), y.double()).solution.T.float())
    gamma = 200.0
    # Euler-Maruyama and minibatch-gradient noise inflate the posterior variance by about
    # eps n_beta mu / 4 and n_beta^2 eps mu / (4 B) (<= 2% here); 16 chains (one vectorised
    # run) bring the standard error to ~3-4% (measured: ratio 0.9995 +- 0.027 at 1500 draws)
    est = estimate_llc(
        model, (x, y), localization=gamma, step_size=2e-5, burn_in=800, draws=1000, chains=16
    )
    n_beta = N / math.log(N)
    target = 0.5 * effective_dimension(gauss_newton_spectrum(model, x), n_beta, gamma)
    assert target < 0.85 * 4  # the localization visibly removes dimensions
    assert est.mean == pytest.approx(target, rel=0.08)
    assert est.stderr < 0.05 * target
    assert est.healthy


def test_preconditioned_sgld_equilibrates_an_ill_conditioned_basin():
    """Input scales over four decades make the Hessian's eigenvalues span eight: plain SGLD with
    a step stable on the stiffest direction barely moves along the softest within the budget,
    while the preconditioner (n_beta G + gamma I)^-1 relaxes every direction alike and lands on
    the quadratic limit (1/2) sum n_beta mu / (n_beta mu + gamma)."""
    from atlasd.downstream.degeneracy.ranks import gauss_newton_matrix

    scales = torch.tensor([1e-2, 1e-1, 1.0, 1e1, 1e2])
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(N, 5, generator=gen) * scales
    y = x @ torch.randn(5, 2, generator=gen) + torch.randn(N, 2, generator=gen)
    model = nn.Linear(5, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x.double(), y.double()).solution.T.float())
    n_beta = N / math.log(N)
    gamma = 1.0
    g = gauss_newton_matrix(model, x)
    target = 0.5 * effective_dimension(torch.linalg.eigvalsh(g).clamp_min(0), n_beta, gamma)
    mu_max = float(torch.linalg.eigvalsh(g)[-1])
    pre = torch.linalg.inv(n_beta * g + gamma * torch.eye(10, dtype=g.dtype))
    kw = {"localization": gamma, "burn_in": 200, "draws": 600, "chains": 8, "check": "off"}
    plain = estimate_llc(model, (x, y), step_size=0.1 / (n_beta * mu_max), **kw)
    # eps/4 (Euler-Maruyama) and eps n_beta / (4 B) (minibatch noise) inflate it by ~4%
    est = estimate_llc(model, (x, y), step_size=0.05, preconditioner=pre, **kw)
    # the two softest directions (scale 1e-2 and 1e-1) stay unexplored without preconditioning
    assert plain.mean < 0.75 * target
    assert est.mean == pytest.approx(target, rel=0.08)
    assert est.settings["preconditioned"] and not plain.settings["preconditioned"]
    with pytest.raises(ValueError, match="pass step_size"):
        estimate_llc(model, (x, y), preconditioner=pre, **kw)
    with pytest.raises(ValueError, match=r"\(10, 10\) tensor"):
        estimate_llc(model, (x, y), step_size=0.1, preconditioner=pre[:3, :3], **kw)
    with pytest.raises(ValueError, match="positive definite"):
        estimate_llc(model, (x, y), step_size=0.1, preconditioner=-pre, **kw)


def _misfit_regression_at_minimum(n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 4 -> 2 linear model at the least-squares minimum of data with noise sd 3 (misspecified
    for ``mse_nll``'s unit variance, so the per-sample gradients at w* are large)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, 4, generator=gen) * torch.tensor([0.25, 0.5, 1.0, 1.7])
    y = x @ torch.randn(4, 2, generator=gen) + 3 * torch.randn(n, 2, generator=gen)
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x.double(), y.double()).solution.T.float())
    return model, x, y


def test_full_batch_excess_removes_the_minibatch_term_at_tight_localisation():
    """Tight localisation (gamma = 1e4, noisy linear regression at its least-squares minimum):
    the minibatch excess is dominated by (grad L_B - grad L_n) . (w - w*), so half the draws
    fall below w* and the health check fails, though w* is the exact minimum. The same chains
    measured on all samples every 10th draw have no draw below w*, land on the quadratic limit
    and have a several times smaller standard error (measured: 0.119 +- 0.027 with 50% below,
    against 0.109 +- 0.008 with 0% below; limit 0.106)."""
    from atlasd.downstream.degeneracy.ranks import gauss_newton_matrix

    n = 2000
    model, x, y = _misfit_regression_at_minimum(n)
    n_beta, gamma = n / math.log(n), 1e4
    g = gauss_newton_matrix(model, x)
    target = 0.5 * effective_dimension(torch.linalg.eigvalsh(g).clamp_min(0), n_beta, gamma)
    kw = {
        "localization": gamma,
        "step_size": 0.05,
        "preconditioner": torch.linalg.inv(n_beta * g + gamma * torch.eye(8, dtype=g.dtype)),
        "burn_in": 200,
        "draws": 400,
        "chains": 8,
        "batch_size": 64,
        "check": "off",
    }
    mini = estimate_llc(model, (x, y), **kw)
    full = estimate_llc(model, (x, y), full_batch_every=10, **kw)
    assert float(mini.diagnostics["below_fraction"].mean()) > 0.4 and not mini.healthy
    assert float(full.diagnostics["below_fraction"].max()) < 0.05 and full.healthy
    assert full.mean == pytest.approx(target, rel=0.15)
    assert full.stderr < 0.5 * mini.stderr
    assert full.diagnostics["full_batch_excess"].shape == (8, 40)
    assert full.settings["full_batch_every"] == 10 and mini.diagnostics["full_batch_excess"] is None
    with pytest.raises(ValueError, match="full_batch_every"):
        estimate_llc(model, (x, y), full_batch_every=-1, **kw)


# --- calibrated defaults ----------------------------------------------------------------------


# Seed-to-seed spread of the default estimate on 5-3-5 rank 2 (model and data seed s, chains
# seeded s; measured over s = 0-5: ratios 0.955, 1.069, 1.013, 0.900, 0.940, 0.936 to lambda =
# 9.5, sd 0.062). The chains' own standard error (0.13-0.26) is 2-4x smaller: a new data set and
# w* move the estimate by more than the sampler's noise, so a held-out seed is judged against
# both.
SEED_SD_535 = 0.062


@pytest.mark.parametrize("seed", [0, 3])
def test_default_estimate_two_layer_linear_within_15_percent(seed):
    """The defaults were calibrated on seed 0; seed 3 is held out (measured 8.55 +- 0.26 against
    lambda 9.5, 1.5 standard errors of chains and seeds together)."""
    model, data = calibration_case([5, 3, 5], 2, seed=seed)
    est = estimate_llc(model, data, seed=seed)
    lam = rrr_lambda(5, 3, 5, 2)
    assert isinstance(est, LLCEstimate)
    assert est.mean == pytest.approx(lam, rel=0.15)
    assert abs(est.mean - lam) < 3 * math.hypot(est.stderr, SEED_SD_535 * lam)
    assert est.per_chain.shape == (4,) and est.trace.shape == (4, 3000)
    assert est.std > 0 and est.healthy


def test_defaults_are_recorded():
    settings = default_llc_settings(N)
    assert settings["n_beta"] == pytest.approx(N / math.log(N))
    assert settings["step_size"] == pytest.approx(6e-5)
    assert default_llc_settings(10**5)["step_size"] * (1e5 / math.log(1e5)) == pytest.approx(
        6e-5 * N / math.log(N)
    )
    assert default_llc_settings(120)["batch_size"] == 120
    model, data = calibration_case([3, 2, 3], 1)
    est = estimate_llc(model, data, draws=20, burn_in=5, check="off")
    assert est.settings["n_beta"] == pytest.approx(N / math.log(N))
    assert est.settings["n_parameters"] == 12
    assert est.trace.shape == (4, 25) and est.excess_trace.shape == (4, 25)


def test_softmax_regression_with_cross_entropy_at_a_trained_minimum():
    """A custom loss: cross-entropy (a mean per-sample NLL) with integer labels, at a trained w*
    (the estimator's intended use). Softmax regression x (4) -> 3 logits without bias: adding one
    vector to every row of W leaves the softmax unchanged (4 flat directions), so the model is
    regular on the other 8 and lambda = 8 / 2 = 4."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, 4, generator=gen)
    probs = torch.softmax(x @ torch.randn(4, 3, generator=gen), dim=1)
    y = torch.multinomial(probs, 1, generator=gen).squeeze(1)
    model = nn.Linear(4, 3, bias=False)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200, tolerance_grad=1e-9)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    # a regular basin mixes within a few hundred steps (relaxation 2 / (eps n_beta mu) <= 750
    # steps for the Fisher eigenvalues here): a shorter run than the defaults suffices
    est = estimate_llc(
        model, (x, y), nn.functional.cross_entropy, chains=8, burn_in=400, draws=1200
    )
    assert est.mean == pytest.approx(4.0, rel=0.1)
    assert est.healthy


# --- reproducibility and vectorisation ---------------------------------------------------------


def test_same_seed_same_result_and_chains_differ():
    model, data = calibration_case([3, 2, 3], 1)
    # runs this short sit next to w* (excess loss ~ 0): health checks would rightly object
    a = estimate_llc(model, data, draws=60, burn_in=10, seed=5, check="off")
    b = estimate_llc(model, data, draws=60, burn_in=10, seed=5, check="off")
    c = estimate_llc(model, data, draws=60, burn_in=10, seed=6, check="off")
    assert torch.equal(a.per_chain, b.per_chain) and torch.equal(a.trace, b.trace)
    assert not torch.equal(a.per_chain, c.per_chain)
    assert len(set(a.per_chain.tolist())) == 4  # independent chains


def test_model_is_untouched():
    model, data = calibration_case([3, 2, 3], 1)
    before = [p.detach().clone() for p in model.parameters()]
    estimate_llc(model, data, draws=20, burn_in=0, check="off")
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))


# --- health checks -----------------------------------------------------------------------------


def test_untrained_w_star_is_reported():
    model, data = calibration_case([3, 2, 3], 1)
    with torch.no_grad():
        model[0].weight.add_(0.5)  # far from the minimum
    with pytest.warns(LLCHealthWarning, match="not a local minimum"):
        est = estimate_llc(model, data, draws=200, burn_in=50)
    assert not est.healthy
    assert float(est.diagnostics["below_fraction"].min()) > 0.9
    with pytest.raises(LLCHealthError, match="not a local minimum"):
        estimate_llc(model, data, draws=200, burn_in=50, check="raise")
    quiet = estimate_llc(model, data, draws=200, burn_in=50, check="off")
    assert quiet.problems and quiet.mean < 0


def test_divergent_chains_fail_clearly():
    model, data = calibration_case([3, 2, 3], 1)
    with pytest.raises(LLCHealthError, match="all 4 SGLD chains diverged"):
        estimate_llc(model, data, step_size=0.05, draws=200, burn_in=0)


def test_exploding_chain_is_reported():
    model, data = calibration_case([3, 2, 3], 1)
    # at eps = 2e-3 (33x the default) the chains stay finite but the loss nearly doubles
    with pytest.warns(LLCHealthWarning, match="exploded"):
        est = estimate_llc(model, data, step_size=2e-3, draws=100, burn_in=0, explode_factor=1.5)
    assert float(est.diagnostics["max_loss_ratio"].min()) > 1.5


def test_healthy_default_run_has_no_warning(recwarn):
    model, data = calibration_case([3, 2, 3], 1)
    est = estimate_llc(model, data, draws=300, burn_in=100)
    assert est.healthy
    assert not [w for w in recwarn if issubclass(w.category, LLCHealthWarning)]
    assert float(est.diagnostics["below_fraction"].max()) < 0.4


# --- input errors ------------------------------------------------------------------------------


def test_bad_inputs_fail_early():
    model, (x, y) = calibration_case([3, 2, 3], 1)
    with pytest.raises(ValueError, match="same number of samples"):
        estimate_llc(model, (x, y[:-1]))
    bad = x.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        estimate_llc(model, (bad, y))
    with pytest.raises(ValueError, match="pair"):
        estimate_llc(model, x)
    with pytest.raises(ValueError, match="chains must be >= 1"):
        estimate_llc(model, (x, y), chains=0)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        estimate_llc(model, (x, y), step_size=0.0)
    with pytest.raises(ValueError, match="scalar"):
        estimate_llc(model, (x, y), lambda p, t: (p - t) ** 2, draws=2)
    with pytest.raises(ValueError, match="check must be"):
        estimate_llc(model, (x, y), check="loud")
    with pytest.raises(ValueError, match="no trainable parameters"):
        estimate_llc(nn.ReLU(), (x, y))


# --- the calibration table (slow) --------------------------------------------------------------

TWO_LAYER = [([5, 3, 5], 1), ([5, 3, 5], 2), ([5, 3, 5], 3), ([10, 5, 10], 2), ([10, 5, 10], 4)]
TWO_LAYER += [([8, 4, 6], 2), ([4, 8, 4], 1)]
DEEP = [([6, 5, 4, 5, 6], 2), ([4, 4, 4, 4], 2), ([8, 6, 4, 6, 8], 3), ([5, 4, 4, 5], 1)]


@pytest.mark.slow
def test_calibration_table():
    """Every two-layer case within 15% of Aoyagi & Watanabe, every deep case within 25% of
    Aoyagi; the fully degenerate w* = 0 is reported (and bounded at 25%) but is the known slow
    case. Prints the table."""
    rows, failures = [], []
    cases = [(w, r, 0.15) for w, r in TWO_LAYER] + [(w, r, 0.25) for w, r in DEEP]
    cases.append(([5, 3, 5], 0, 0.25))
    for widths, r, tol in cases:
        model, data = calibration_case(widths, r)
        start = time.process_time()
        est = estimate_llc(model, data)
        cpu = time.process_time() - start
        lam = deep_linear_lambda(widths, r)
        ratio = est.mean / lam
        name = "-".join(map(str, widths))
        rows.append(
            f"{name:>12} r={r}  lambda={lam:6.2f}  estimate={est.mean:6.2f} +- {est.std:4.2f}"
            f"  ratio={ratio:5.3f}  tol={tol:.0%}  cpu={cpu:5.1f}s"
        )
        if abs(ratio - 1) > tol:
            failures.append(rows[-1])
    print("\n" + "\n".join(rows))
    assert not failures, failures


# Held-out seeds (the defaults were calibrated on seed 0). Measured with the defaults, model,
# data and chains seeded s = 1-5 (ratio to lambda):
#   5-3-5 r=2 (9.5)       1.069 1.013 0.900 0.940 0.936   mean 0.972
#   8-4-6 r=2 (16)        0.991 0.954 0.942 1.023 0.974   mean 0.977
#   10-5-10 r=2 (29)      0.959 0.931 0.901 1.010 0.962   mean 0.953 (seed 0: 0.912)
#   6-5-4-5-6 r=2 (12.5)  1.082 1.057 0.934 1.135 1.174   mean 1.076
# The chains' standard errors are 2-7x smaller than the spread between seeds (z up to 6.7 for
# one seed), so the statistical check is across seeds. 10-5-10 is low by 4.7 +- 1.8% (seeds
# 1-5; 5.4 +- 1.6% with seed 0): a systematic error within the table's 15%, which the bound
# allows for explicitly.
HELD_OUT_SEEDS = [1, 2, 3, 4, 5]
HELD_OUT_CASES = [([5, 3, 5], 2, 0.15), ([8, 4, 6], 2, 0.15), ([10, 5, 10], 2, 0.15)]
HELD_OUT_CASES += [([6, 5, 4, 5, 6], 2, 0.25)]
SYSTEMATIC = 0.06  # relative error the defaults are allowed on average (measured up to 5.4%)


@pytest.mark.slow
def test_calibration_on_held_out_seeds():
    """On seeds the defaults were not tuned on, every estimate is within the calibration table's
    tolerance, and the mean over seeds lies within 3 standard errors (across seeds) of lambda
    plus the stated systematic allowance. About 2 minutes; prints the values."""
    rows, failures = [], []
    for widths, r, tol in HELD_OUT_CASES:
        lam = deep_linear_lambda(widths, r)
        means = []
        for seed in HELD_OUT_SEEDS:
            model, data = calibration_case(widths, r, seed=seed)
            means.append(estimate_llc(model, data, seed=seed).mean)
        ratios = [m / lam for m in means]
        avg = sum(means) / len(means)
        se = math.sqrt(sum((m - avg) ** 2 for m in means) / (len(means) - 1) / len(means))
        name = "-".join(map(str, widths))
        rows.append(
            f"{name:>12} r={r}  lambda={lam:6.2f}  ratios={' '.join(f'{q:.3f}' for q in ratios)}"
            f"  mean={avg:6.2f} +- {se:4.2f}  z={(avg - lam) / se:+.2f}"
        )
        if any(abs(q - 1) > tol for q in ratios):
            failures.append(rows[-1] + f"  (a seed beyond {tol:.0%})")
        if abs(avg - lam) > 3 * se + SYSTEMATIC * lam:
            failures.append(rows[-1] + "  (mean beyond 3 standard errors + systematic)")
    print("\n" + "\n".join(rows))
    assert not failures, failures


@pytest.mark.parametrize(("coarse_seed", "fine_seed"), [(0, 1), (4, 5)])
def test_step_check_extrapolates_the_minibatch_heating_away(coarse_seed, fine_seed):
    """Minibatch gradient noise heats preconditioned SGLD by a factor 1 + O(step): on a
    misspecified linear regression (noise sd 3 against the unit variance of ``mse_nll``,
    batch 256) the estimate at step 0.1 lands about 28% above the quadratic limit, at step
    0.05 6-22% above, and the linear extrapolation to step 0 near the limit. Measured over the
    chain seed pairs (0, 1) ... (10, 11) with these settings: coarse 1.24-1.33x the limit and
    8.8-13.4 of its standard errors above it; coarse - fine positive, 2.2-5.2 standard errors;
    extrapolation 0.84-1.07x, within 2.2 of its standard errors (6-8% of the limit). With 32
    chains over 8 pairs one pair had coarse - fine at 0.9 standard errors and the extrapolation
    3.0 above, so the flag ``dependent`` (2 standard errors) is not asserted here: its rule is
    checked exactly by test_step_dependence_is_exact_for_a_linear_bias. (4, 5) is held out."""
    from atlasd.downstream.degeneracy.llc import step_dependence
    from atlasd.downstream.degeneracy.ranks import gauss_newton_matrix

    n = 2000
    model, x, y = _misfit_regression_at_minimum(n)
    n_beta = n / math.log(n)
    g = gauss_newton_matrix(model, x)
    target = 0.5 * effective_dimension(torch.linalg.eigvalsh(g).clamp_min(0), n_beta, 1.0)
    kw = {
        "localization": 1.0,
        "preconditioner": torch.linalg.inv(n_beta * g + torch.eye(8, dtype=g.dtype)),
        "draws": 600,
        "chains": 16,
        "batch_size": 256,
        "check": "off",
        "full_batch_every": 10,
    }
    coarse = estimate_llc(model, (x, y), step_size=0.1, burn_in=100, seed=coarse_seed, **kw)
    fine = estimate_llc(model, (x, y), step_size=0.05, burn_in=200, seed=fine_seed, **kw)
    check = step_dependence((coarse.mean, coarse.stderr, 0.1), (fine.mean, fine.stderr, 0.05))
    # the heating is there, by many standard errors and a clear fraction of the limit
    assert coarse.mean - target > 4 * coarse.stderr
    assert coarse.mean > 1.1 * target
    assert check["difference"] > 0
    assert abs(check["extrapolated"] - target) < 3 * check["extrapolated_stderr"]
    assert check["extrapolated_stderr"] < 0.12 * target


@given(
    lam0=st.floats(-10, 100),
    slope=st.floats(-500, 500),
    step=st.floats(1e-3, 1.0),
    f=st.floats(0.05, 0.95),
    se=st.floats(0.0, 5.0),
)
def test_step_dependence_is_exact_for_a_linear_bias(lam0, slope, step, f, se):
    """lambda(eps) = lambda_0 + c eps is extrapolated to lambda_0 exactly; the flag fires only
    beyond 2 standard errors of the difference; the error propagation is the stated one."""
    from atlasd.downstream.degeneracy.llc import step_dependence

    coarse = (lam0 + slope * step, se, step)
    fine = (lam0 + slope * f * step, 2 * se, f * step)
    out = step_dependence(coarse, fine)
    assert out["extrapolated"] == pytest.approx(lam0, abs=1e-6 * (1 + abs(slope) + abs(lam0)))
    assert out["difference"] == pytest.approx(slope * step * (1 - f), abs=1e-9 * (1 + abs(slope)))
    assert out["difference_stderr"] == pytest.approx(math.sqrt(5) * se)
    assert out["extrapolated_stderr"] == pytest.approx(math.hypot(2 * se, f * se) / (1 - f))
    assert out["dependent"] == (abs(out["difference"]) > 2 * out["difference_stderr"])


@pytest.mark.parametrize(("coarse_step", "fine_step"), [(0.1, 0.1), (0.1, 0.2), (0.1, 0.0)])
def test_step_dependence_needs_a_smaller_positive_second_step(coarse_step, fine_step):
    from atlasd.downstream.degeneracy.llc import step_dependence

    with pytest.raises(ValueError, match="fine step must be positive and smaller"):
        step_dependence((1.0, 0.1, coarse_step), (1.0, 0.1, fine_step))
