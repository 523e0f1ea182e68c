"""Functional dimension, Gauss-Newton spectra, effective dimension and rank bounds, with exact
numbers: ReLU nets give d - h (minus n_in + n_out per dead unit), tanh nets d, deep linear nets
r (M + N - r)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from known_llc import deep_linear_lambda
from torch import nn

from atlasd.downstream import functional_dimension
from atlasd.downstream.degeneracy.ranks import (
    effective_dimension,
    gauss_newton_spectrum,
    jacobian_spectrum,
    llc_rank_bounds,
    parameter_jacobian,
)

F64 = torch.float64


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def one_hidden(n_in: int, h: int, n_out: int, act: nn.Module, seed: int) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(n_in, h), act, nn.Linear(h, n_out))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model


def inputs_for(model: nn.Module, n_in: int, n_out: int, seed: int) -> torch.Tensor:
    """Generic inputs, at least three times more output rows than parameters. Each hidden unit's
    hyperplane is moved to its own quantile of the inputs, evenly spread over 25%..75% (the
    generic case "d - h" describes: a ReLU unit active on all inputs would act linearly and lose
    more directions, and two units whose hyperplanes nearly coincide on the sample would not be
    told apart by it)."""
    gen = torch.Generator().manual_seed(seed + 7)
    n = max(3 * n_params(model) // n_out + 30, 600)
    x = torch.randn(n, n_in, generator=gen)
    first = model[0]
    h = first.out_features
    with torch.no_grad():
        z = x @ first.weight.T  # (n, h)
        q = 0.25 + 0.5 * (torch.randperm(h, generator=gen) + 0.5) / h
        # quantiles along a common orientation, so that no two units share a hyperplane (in 1-D
        # two opposite units with one kink would add up to a linear function)
        q = torch.where(first.weight[:, 0] > 0, q, 1 - q)
        first.bias.copy_(-torch.stack([z[:, k].quantile(q[k]) for k in range(h)]))
    return x


def deep_linear(widths: list[int], seed: int, rank: int | None = None) -> nn.Sequential:
    """Bias-free linear network in float64; with ``rank``, every factor has exactly that rank
    (exact zeros in float64) and the end-to-end matrix too."""
    gen = torch.Generator().manual_seed(seed)
    layers = [nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:], strict=False)]
    model = nn.Sequential(*layers).to(F64)
    with torch.no_grad():
        if rank is None:
            for layer in layers:
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen, dtype=F64))
        else:
            frames = [torch.randn(w, rank, generator=gen, dtype=F64) for w in widths]
            for i, layer in enumerate(layers):
                layer.weight.copy_(frames[i + 1] @ frames[i].T)
    return model


# --- functional dimension -------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(
    n_in=st.integers(1, 4), h=st.integers(1, 6), n_out=st.integers(1, 3), seed=st.integers(0, 99)
)
def test_relu_one_hidden_layer_is_d_minus_h(n_in, h, n_out, seed):
    model = one_hidden(n_in, h, n_out, nn.ReLU(), seed)
    x = inputs_for(model, n_in, n_out, seed)
    spec = jacobian_spectrum(model, x)
    assert spec.rank == n_params(model) - h
    assert spec.gap > 1e6  # the rank is cut at a clean gap, not at noise


@pytest.mark.parametrize("dead", [1, 2])
def test_dead_relu_units_remove_n_in_plus_n_out_more(dead):
    n_in, h, n_out = 3, 5, 2
    model = one_hidden(n_in, h, n_out, nn.ReLU(), seed=3)
    x = inputs_for(model, n_in, n_out, 3)
    assert functional_dimension(model, x) == n_params(model) - h
    with torch.no_grad():
        model[0].bias[:dead] = -1e3  # dead on every input
    expected = n_params(model) - h - dead * (n_in + n_out)
    assert functional_dimension(model, x) == expected


@settings(max_examples=8, deadline=None)
@given(
    n_in=st.integers(1, 3), h=st.integers(1, 4), n_out=st.integers(1, 2), seed=st.integers(0, 99)
)
def test_tanh_network_has_full_functional_dimension(n_in, h, n_out, seed):
    # float64, as the exact value is stated: some one-input tanh networks have genuine singular
    # values below float32's resolution (n_in=1, h=2, seed=81: 2.2e-6 of the largest), which
    # the rank at float32's working precision rightly does not count
    model = one_hidden(n_in, h, n_out, nn.Tanh(), seed)
    x = inputs_for(model, n_in, n_out, seed).to(F64)
    model = model.to(F64)
    assert functional_dimension(model, x) == n_params(model)


@settings(max_examples=12, deadline=None)
@given(widths=st.lists(st.integers(1, 6), min_size=3, max_size=5), seed=st.integers(0, 99))
def test_deep_linear_is_r_min_times_m_plus_n_minus_r_min(widths, seed):
    model = deep_linear(widths, seed)
    m, n, r = widths[0], widths[-1], min(widths)
    gen = torch.Generator().manual_seed(seed + 1000)
    x = torch.randn(3 * n_params(model) // n + 10, m, generator=gen, dtype=F64)
    assert functional_dimension(model, x) == r * (m + n - r)


def test_rank_deficient_true_parameter_of_a_linear_network():
    """At an exactly rank-r parameter the image of the differential is the tangent space of the
    rank-r matrices: r (M + N - r), whatever the hidden widths."""
    widths, r = [6, 5, 4, 5, 6], 2
    model = deep_linear(widths, seed=1, rank=r)
    x = torch.randn(400, 6, dtype=F64)
    spec = jacobian_spectrum(model, x)
    assert spec.rank == r * (6 + 6 - r)
    assert spec.gap > 1e8
    # a generic (full-rank) parameter of the same network: min width 4, so 4 (6 + 6 - 4)
    assert functional_dimension(deep_linear(widths, seed=1), x) == 4 * (6 + 6 - 4)


def test_jacobian_matches_finite_differences_and_rows_are_sample_major():
    model = one_hidden(3, 4, 2, nn.Tanh(), seed=0).to(F64)
    x = torch.randn(5, 3, dtype=F64)
    jac = parameter_jacobian(model, x)
    assert jac.shape == (5 * 2, n_params(model))
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    v = torch.randn(flat.numel(), dtype=F64)

    def out_at(w):
        torch.nn.utils.vector_to_parameters(w, model.parameters())
        with torch.no_grad():
            return model(x).reshape(-1)

    h = 1e-6
    fd = (out_at(flat + h * v) - out_at(flat - h * v)) / (2 * h)
    out_at(flat)
    assert torch.allclose(jac @ v, fd, atol=1e-8)


def test_chunked_qr_folding_keeps_the_singular_values():
    model = one_hidden(4, 6, 3, nn.Tanh(), seed=2)
    x = torch.randn(300, 4)
    full = torch.linalg.svdvals(parameter_jacobian(model, x))
    folded = jacobian_spectrum(model, x, chunk_rows=40).singular_values
    assert torch.allclose(full, folded, rtol=1e-9, atol=1e-12 * float(full[0]))


def test_model_is_left_untouched():
    model = one_hidden(2, 3, 1, nn.ReLU(), seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    functional_dimension(model, torch.randn(50, 2))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


# --- Gauss-Newton spectrum, effective dimension, bounds -------------------------------------


def test_gauss_newton_spectrum_of_linear_regression_is_the_input_covariance():
    """f = W x: J^T J / n = I_N (x) (X^T X / n), so every covariance eigenvalue appears N times."""
    m, n_out, n = 4, 3, 500
    x = torch.randn(n, m, dtype=F64) * torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=F64)
    model = nn.Linear(m, n_out, bias=False).to(F64)
    mu = gauss_newton_spectrum(model, x)
    cov = torch.linalg.eigvalsh(x.T @ x / n).flip(0)
    assert mu.shape == (m * n_out,)
    assert torch.allclose(mu, cov.repeat_interleave(n_out), rtol=1e-10)


def test_effective_dimension_formula():
    mu = torch.tensor([0.0, 1.0, 1.0, 9.0], dtype=F64)
    assert effective_dimension(mu, n_beta=10.0, localization=0.0) == 3.0
    expected = 2 * 10 / (10 + 10) + 90 / (90 + 10)
    assert effective_dimension(mu, n_beta=10.0, localization=10.0) == pytest.approx(expected)
    with pytest.raises(ValueError, match="must be >= 0"):
        effective_dimension(torch.tensor([-1.0, 2.0]), 10.0, 1.0)
    with pytest.raises(ValueError, match="n_beta"):
        effective_dimension(mu, 0.0, 1.0)


def test_llc_rank_bounds_contain_aoyagi_values():
    """lambda of deep linear networks lies within r/2 <= lambda <= r/2 + (d - r)/4, with r the
    Gauss-Newton (Hessian of K) rank at an exactly rank-r true parameter."""
    for widths, r in [([5, 3, 5], 2), ([5, 3, 5], 0), ([10, 5, 10], 2), ([6, 5, 4, 5, 6], 2)]:
        model = deep_linear(widths, seed=0, rank=r)
        d = n_params(model)
        x = torch.randn(3 * d // widths[-1] + 10, widths[0], dtype=F64)
        rank = functional_dimension(model, x) if r > 0 else 0
        assert rank == r * (widths[0] + widths[-1] - r)
        lo, hi = llc_rank_bounds(rank, d)
        lam = deep_linear_lambda(widths, r)
        assert lo <= lam <= hi, (widths, r, lo, lam, hi)
    assert llc_rank_bounds(4, 10) == (2.0, 3.5)
    with pytest.raises(ValueError, match="cannot exceed"):
        llc_rank_bounds(11, 10)


def test_bad_inputs_fail_early():
    model = one_hidden(2, 3, 1, nn.ReLU(), seed=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        functional_dimension(model, torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match="torch.Tensor"):
        functional_dimension(model, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="0 <= tol < 1"):
        functional_dimension(model, torch.randn(5, 2), tol=2.0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        functional_dimension(nn.ReLU(), torch.randn(5, 2))


def test_gauss_newton_probe_is_an_unbiased_estimate_over_all_samples():
    """Random vector-Jacobian probes: the estimate converges to J^T J / n like 1 / sqrt(probes),
    and its trace is unbiased."""
    from atlasd.downstream.degeneracy.ranks import gauss_newton_matrix, gauss_newton_probe

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 2, 3, padding=1))
    model = model.double()
    x = torch.randn(64, 2, 6, 6, dtype=torch.float64)
    exact = gauss_newton_matrix(model, x)
    errors = []
    for probes in (500, 8000):
        estimate = gauss_newton_probe(model, x, probes=probes, batch_size=8, seed=1)
        errors.append(float((estimate - exact).norm() / exact.norm()))
        assert float(torch.trace(estimate) / torch.trace(exact)) == pytest.approx(1.0, abs=0.05)
    assert errors[1] < 0.12
    assert errors[1] < 0.5 * errors[0]  # 16x the probes: about 4x smaller


def test_hessian_extreme_eigenvalues_by_lanczos_match_the_full_hessian():
    """Lanczos on chunked Hessian-vector products gives the extreme eigenvalues of the exact
    Hessian (indefinite away from a minimum) without forming it."""
    from atlasd.downstream.degeneracy.likelihood import gaussian_nll
    from atlasd.downstream.degeneracy.ranks import hessian_extreme_eigenvalue, loss_hessian

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 2, 3, padding=1))
    model = model.double()
    x = torch.randn(64, 2, 6, 6, dtype=torch.float64)
    y = torch.randn(64, 2, 6, 6, dtype=torch.float64)
    nll = gaussian_nll(1.0)
    eigenvalues = torch.linalg.eigvalsh(loss_hessian(model, nll, x, y))
    assert float(eigenvalues[0]) < 0  # an untrained model: indefinite
    low = hessian_extreme_eigenvalue(model, nll, x, y, chunk=16, tol=1e-12)
    high = hessian_extreme_eigenvalue(model, nll, x, y, which="LA", tol=1e-12)
    assert low == pytest.approx(float(eigenvalues[0]), rel=1e-6)
    assert high == pytest.approx(float(eigenvalues[-1]), rel=1e-6)
    # default tolerance: within 1e-2; a truncated run never overshoots the true extreme
    default = hessian_extreme_eigenvalue(model, nll, x, y)
    assert default == pytest.approx(float(eigenvalues[0]), rel=1e-2)
    for budget in (3, 8):
        short = hessian_extreme_eigenvalue(model, nll, x, y, max_products=budget)
        assert float(eigenvalues[0]) - 1e-9 <= short <= float(eigenvalues[-1])
        short_high = hessian_extreme_eigenvalue(model, nll, x, y, which="LA", max_products=budget)
        assert short_high <= float(eigenvalues[-1]) + 1e-9
    with pytest.raises(ValueError, match="max_products"):
        hessian_extreme_eigenvalue(model, nll, x, y, max_products=0)
    with pytest.raises(ValueError, match="which must be"):
        hessian_extreme_eigenvalue(model, nll, x, y, which="BE")


@settings(max_examples=15, deadline=None)
@given(chunk=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_hessian_vector_product_is_the_full_hessian_times_v_for_any_chunking(chunk, seed):
    """Chunked over samples or not, H v equals the exact Hessian (residual term included)
    applied to v."""
    from atlasd.downstream.degeneracy.likelihood import gaussian_nll
    from atlasd.downstream.degeneracy.ranks import hessian_vector_product, loss_hessian

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Conv2d(2, 1, 1)).double()
    x = torch.randn(20, 1, 5, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(20, 1, 5, 5, generator=gen, dtype=torch.float64)
    nll = gaussian_nll(0.5)
    h = loss_hessian(model, nll, x, y)
    v = torch.randn(h.shape[0], generator=gen, dtype=torch.float64)
    hv = hessian_vector_product(model, nll, x, y, v, chunk=chunk)
    assert torch.allclose(hv, h @ v, rtol=1e-9, atol=1e-9 * float((h @ v).abs().max()))


def test_hessian_vector_product_names_a_wrong_vector_shape():
    from atlasd.downstream.degeneracy.likelihood import gaussian_nll
    from atlasd.downstream.degeneracy.ranks import hessian_vector_product

    model = nn.Conv2d(1, 1, 3).double()
    x = torch.zeros(4, 1, 5, 5, dtype=torch.float64)
    y = torch.zeros(4, 1, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"v must have shape \(10,\)"):
        hessian_vector_product(model, gaussian_nll(1.0), x, y, torch.zeros(9))


@given(
    c=st.floats(0, 1e8, allow_nan=False),
    n_beta=st.floats(1e-3, 1e5),
    gamma=st.floats(0, 1e8, allow_nan=False),
)
def test_effective_weight_is_the_directions_share_of_the_effective_dimension(c, n_beta, gamma):
    """For an eigenvector of G with eigenvalue c the weight is exactly its term of
    effective_dimension; it lies in [0, 1] and grows with the curvature."""
    from atlasd.downstream.degeneracy.ranks import effective_dimension, effective_weight

    w = effective_weight(c, n_beta, gamma)
    assert 0 <= w <= 1
    if gamma > 0:
        mu = torch.tensor([c], dtype=torch.float64)
        assert w == pytest.approx(effective_dimension(mu, n_beta, gamma), rel=1e-9, abs=1e-12)
        assert effective_weight(2 * c + 1, n_beta, gamma) >= w
    assert effective_weight(-1.0, n_beta, gamma) == 0.0


def test_effective_weight_rejects_bad_settings():
    from atlasd.downstream.degeneracy.ranks import effective_weight

    with pytest.raises(ValueError, match="n_beta > 0 and gamma >= 0"):
        effective_weight(1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="n_beta > 0 and gamma >= 0"):
        effective_weight(1.0, 1.0, -1.0)
