"""Ranks cut at the precision of the data (issue 19, item 4): the default tolerance of
:func:`functional_dimension` and of the Gauss-Newton rank follows the coarser of the inputs' and
the parameters' dtypes, so float32 inputs in a subspace lose exactly the directions they never
reach (``h (d - r)`` for a dense first layer of ``h`` units), as float64 inputs do; the gap at
the cut and the tolerance are reported; data of size ``eps`` off the subspace, well above the
working precision, counts again (the gradual regime).

Every model and input is drawn from an explicit ``torch.Generator`` (no global RNG).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from atlasd.downstream import functional_dimension
from atlasd.downstream.degeneracy.ranks import jacobian_spectrum, working_eps

F32, F64 = torch.float32, torch.float64
EPS32, EPS64 = torch.finfo(F32).eps, torch.finfo(F64).eps


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mlp(widths: list[int], act: type[nn.Module], seed: int, bias: bool = True) -> nn.Sequential:
    """``widths[0] -> ... -> widths[-1]`` with ``act`` between layers, N(0, 1) entries."""
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if i:
            layers.append(act())
        layers.append(nn.Linear(a, b, bias=bias))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model


def subspace_inputs(
    n: int, d: int, r: int, seed: int, dtype: torch.dtype, noise: float = 0.0
) -> torch.Tensor:
    """``(n, d)`` inputs in a random (not axis-aligned) ``r``-dimensional subspace of R^d, built
    in float64 and rounded to ``dtype``, plus ``noise`` times N(0, 1) along the ``d - r``
    orthogonal directions. In float32 the rounding leaves components of about ``1e-7`` off the
    subspace."""
    gen = torch.Generator().manual_seed(seed + 1000)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
    z = torch.randn(n, d, generator=gen, dtype=F64)
    z[:, r:] *= noise
    return (z @ q.T).to(dtype)


def relu_inputs(model: nn.Sequential, n: int, seed: int) -> torch.Tensor:
    """Generic inputs for a one-hidden-layer ReLU net: each unit's hyperplane is moved to its
    own quantile of the inputs (25%..75%), so no unit is linear or dead on the whole sample and
    no two share a hyperplane (the case ``d - h`` describes)."""
    gen = torch.Generator().manual_seed(seed + 2000)
    first = model[0]
    x = torch.randn(n, first.in_features, generator=gen)
    h = first.out_features
    with torch.no_grad():
        z = x @ first.weight.T
        q = 0.25 + 0.5 * (torch.randperm(h, generator=gen) + 0.5) / h
        q = torch.where(first.weight[:, 0] > 0, q, 1 - q)
        first.bias.copy_(-torch.stack([z[:, k].quantile(q[k]) for k in range(h)]))
    return x


# --- the 6-4-1 tanh network of the issue ------------------------------------------------------


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_tanh_6_4_1_on_a_float32_subspace_loses_the_missing_directions(seed):
    """Bias-free 6-4-1 tanh: 28 parameters, all felt on full-rank inputs; on a 3-dimensional
    subspace the 4 x 3 first-layer weights on the missing directions are not, 16. The float32
    rounding off the subspace (about 1e-8 s_max in the spectrum) must not count."""
    model = mlp([6, 4, 1], nn.Tanh, seed, bias=False)
    assert n_params(model) == 28
    full = torch.randn(200, 6, generator=torch.Generator().manual_seed(seed + 1))
    assert functional_dimension(model, full) == 28

    x32 = subspace_inputs(200, 6, 3, seed, F32)
    spec = jacobian_spectrum(model, x32)
    assert spec.rank == 16
    assert spec.gap > 1e2  # smallest over 200 seeds: 1.8e3; typically 1e5
    assert spec.eps_working == EPS32
    assert EPS32 <= spec.tol <= 200 * EPS32

    # the same Jacobian computed from the float32 inputs with a float64 model: the data are
    # still only float32-precise, so the working precision stays float32
    model64 = model.to(F64)
    assert jacobian_spectrum(model64, x32).eps_working == EPS32
    assert functional_dimension(model64, x32) == 16
    # float64 throughout, the same subspace: rounding at 1e-16, cut at float64 precision
    spec64 = jacobian_spectrum(model64, subspace_inputs(200, 6, 3, seed, F64))
    assert (spec64.rank, spec64.eps_working) == (16, EPS64)
    assert spec64.gap > 1e8


def test_tanh_6_4_1_on_exactly_zero_coordinates_in_float64():
    model = mlp([6, 4, 1], nn.Tanh, 3, bias=False).to(F64)
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(4), dtype=F64)
    x[:, 3:] = 0.0
    spec = jacobian_spectrum(model, x)
    assert spec.rank == 16
    assert math.isinf(spec.gap) or spec.gap > 1e8
    assert EPS64 <= spec.tol <= 200 * EPS64


def test_explicit_tol_overrides_the_precision_cut():
    model = mlp([6, 4, 1], nn.Tanh, 0, bias=False)
    x32 = subspace_inputs(200, 6, 3, 0, F32)
    # at float64's old default the float32 rounding is counted: the bug of the issue
    spec = jacobian_spectrum(model, x32, tol=200 * EPS64)
    assert spec.rank == 28 and spec.tol == 200 * EPS64
    assert functional_dimension(model, x32, tol=200 * EPS64) == 28
    assert functional_dimension(model, x32, tol=0.999) == 1
    with pytest.raises(ValueError, match="0 <= tol < 1"):
        functional_dimension(model, x32, tol=-1e-3)


def test_working_eps_is_the_coarser_dtype():
    m32, m64 = nn.Linear(3, 2), nn.Linear(3, 2).to(F64)
    x32, x64 = torch.zeros(4, 3), torch.zeros(4, 3, dtype=F64)
    assert working_eps(m32, x32) == working_eps(m32, x64) == working_eps(m64, x32) == EPS32
    assert working_eps(m64, x64) == EPS64
    assert working_eps(m64, x64.to(torch.bfloat16)) == torch.finfo(torch.bfloat16).eps


# --- REFERENCE_VALUES "Functional dimension", in float32 and in float64 -----------------------


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("n_in", "h", "n_out", "seed"), [(3, 5, 2, 0), (4, 6, 1, 1), (2, 4, 3, 2)])
def test_relu_one_hidden_layer_d_minus_h_and_dead_units(dtype, n_in, h, n_out, seed):
    model = mlp([n_in, h, n_out], nn.ReLU, seed)
    x = relu_inputs(model, 600, seed)
    model, x = model.to(dtype), x.to(dtype)
    d = n_params(model)
    spec = jacobian_spectrum(model, x)
    assert spec.rank == d - h
    assert spec.gap > 1e3
    with torch.no_grad():
        model[0].bias[:2] = -1e3  # dead on every input
    assert functional_dimension(model, x) == d - h - 2 * (n_in + n_out)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("widths", "seed"), [([5, 3, 4, 6], 0), ([4, 6, 2, 5], 1), ([6, 5, 4], 2)])
def test_deep_linear_r_min_times_m_plus_n_minus_r_min(dtype, widths, seed):
    model = mlp(widths, nn.Identity, seed, bias=False).to(dtype)
    m, n, r = widths[0], widths[-1], min(widths)
    x = torch.randn(200, m, generator=torch.Generator().manual_seed(seed + 5), dtype=dtype)
    spec = jacobian_spectrum(model, x)
    assert spec.rank == r * (m + n - r)
    assert spec.gap > 1e3
    assert spec.eps_working == torch.finfo(dtype).eps


# --- low-rank control (a): exact drops of h (d - r) -------------------------------------------


SHAPES = [(8, 3, 4, 1), (6, 4, 5, 2), (7, 2, 3, 1)]  # (d, r, h, n_out)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("d", "r", "h", "n_out"), SHAPES)
def test_low_rank_inputs_drop_the_functional_dimension_by_h_d_minus_r(dtype, d, r, h, n_out):
    model = mlp([d, h, n_out], nn.Tanh, seed=d + r).to(dtype)
    full = torch.randn(300, d, generator=torch.Generator().manual_seed(d), dtype=dtype)
    low = subspace_inputs(300, d, r, seed=d + h, dtype=dtype)
    spec_full, spec_low = jacobian_spectrum(model, full), jacobian_spectrum(model, low)
    assert spec_full.rank == n_params(model)
    assert spec_full.rank - spec_low.rank == h * (d - r)
    assert spec_low.gap > 1e3


@pytest.mark.parametrize(("d", "r", "h", "n_out"), SHAPES)
def test_low_rank_inputs_drop_the_gauss_newton_rank_by_h_d_minus_r(d, r, h, n_out):
    """Gauss-Newton rank of the NLL (the whitened Jacobian of :mod:`degeneracy`), regression
    and cross-entropy over ``n_out + 1`` classes (only logit differences matter, so the
    common shift of the last layer's rows and biases, ``h + 1`` directions, is not seen): the
    same drop, in float32."""
    from atlasd.downstream.degeneracy import NLLOutputs

    for kind, out in (("regression", n_out), ("classification", n_out + 1)):
        model = mlp([d, h, out], nn.Tanh, seed=d + r)
        full = torch.randn(300, d, generator=torch.Generator().manual_seed(d))
        low = subspace_inputs(300, d, r, seed=d + h, dtype=F32)
        whitened = NLLOutputs(model, kind, 0.5)
        rank_full = jacobian_spectrum(whitened, full).rank
        rank_low = jacobian_spectrum(whitened, low).rank
        unseen = h + 1 if kind == "classification" else 0
        assert rank_full == n_params(model) - unseen, kind
        assert rank_full - rank_low == h * (d - r), kind


# --- off-subspace data above the working precision: the gradual regime ------------------------


def test_noise_well_above_the_precision_counts_again_in_float64():
    """Inputs ``eps`` off the subspace are data, not rounding: the 12 missing directions come
    back with singular values proportional to ``eps`` (the gradual regime: the Hessian along
    them, and with it the learning coefficient's drop, fades smoothly with ``eps``), so the
    rank is the full 28 at ``eps = 1e-4`` and ``1e-3`` (nothing cut) and 16 with exact
    zeros."""
    model = mlp([6, 4, 1], nn.Tanh, 7, bias=False).to(F64)
    exact = jacobian_spectrum(model, subspace_inputs(300, 6, 3, 7, F64))
    assert exact.rank == 16
    tails = []
    for eps in (1e-4, 1e-3):
        spec = jacobian_spectrum(model, subspace_inputs(300, 6, 3, 7, F64, noise=eps))
        assert spec.rank == 28
        assert math.isinf(spec.gap)  # nothing is cut
        s = spec.singular_values
        tails.append(s[16:] / s[0])
        # the 16 data directions barely move; the 12 new ones sit below them
        assert float(s[15] / s[16]) > 3.0
        assert torch.allclose(s[:16], exact.singular_values[:16], rtol=1e-2)
    ratio = tails[1] / tails[0]
    assert torch.allclose(ratio, torch.full_like(ratio, 10.0), rtol=0.1)
