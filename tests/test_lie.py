"""Lie algebra core: spans, standard forms, similarity, closure and membership, with numbers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from known_groups import J, gl2, rotation, sl2, so2, so3_in_4, so13

from atlasd import lie

F64 = torch.float64


# --- sampling ---------------------------------------------------------------------------------


def test_sample_group_shapes_and_reproducibility():
    g1 = lie.sample_group(so13(), (5, 3), scale=0.3, generator=torch.Generator().manual_seed(1))
    g2 = lie.sample_group(so13(), (5, 3), scale=0.3, generator=torch.Generator().manual_seed(1))
    assert g1.shape == (5, 3, 4, 4)
    assert torch.equal(g1, g2)
    # exp of so(1,3) preserves the Minkowski metric
    eta = torch.diag(torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=F64))
    err = (g1.transpose(-1, -2) @ eta @ g1 - eta).abs().max()
    assert err < 1e-10


def test_sample_coefficients_per_generator_scale():
    c = lie.sample_coefficients(
        2, 20000, scale=torch.tensor([1.0, 0.1]), generator=torch.Generator().manual_seed(0)
    )
    std = c.std(dim=0)
    assert abs(std[0] - 1.0) < 0.03 and abs(std[1] - 0.1) < 0.003


def test_exp_combination_is_differentiable():
    L = so2().clone().requires_grad_(True)
    c = torch.tensor([[0.3], [1.1]], dtype=F64)
    lie.exp_combination(c, L).sum().backward()
    assert L.grad is not None and torch.isfinite(L.grad).all() and L.grad.abs().sum() > 0


def test_zero_generators_are_the_trivial_algebra():
    # k = 0 is a valid answer (no continuous symmetry): its only element is the identity
    empty = torch.zeros(0, 2, 2, dtype=F64)
    assert torch.equal(lie.sample_group(empty, 3), torch.eye(2, dtype=F64).expand(3, 2, 2))
    assert lie.similarity(empty, empty) == 1.0 and lie.similarity(empty, so2()) == 0.0
    assert lie.standard_form(empty).shape == (0, 2, 2) == lie.sparse_form(empty).shape
    assert lie.closure_residual(empty) == 0.0
    assert lie.in_identity_component(torch.eye(2, dtype=F64), empty)
    assert not lie.in_identity_component(torch.tensor([[0.0, -1.0], [1.0, 0.0]]), empty)
    with pytest.raises(ValueError, match="shape \\(k, d, d\\)"):
        lie.sample_group(torch.zeros(0, 2), 3)
    with pytest.raises(ValueError, match="NaN or Inf"):
        lie.orthonormal_basis(torch.full((1, 2, 2), float("nan")))


# --- spans and standard forms -----------------------------------------------------------------


def test_orthonormal_basis_drops_dependent_generators():
    L = torch.stack([J, 2 * J, torch.eye(2, dtype=F64)])
    Q = lie.orthonormal_basis(L)
    assert Q.shape == (2, 2, 2)
    G = Q.flatten(1) @ Q.flatten(1).T
    assert torch.allclose(G, torch.eye(2, dtype=F64), atol=1e-12)


def test_sparse_form_is_readable():
    assert torch.allclose(lie.sparse_form(-3.7 * so2()), so2(), atol=1e-12)
    S = lie.sparse_form(so13() @ torch.eye(4, dtype=F64) * 0.1)
    assert S.shape == (6, 4, 4)
    # every entry is 0 or +-1, as in the textbook basis
    assert set(S.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert lie.similarity(S, so13()) > 1 - 1e-12


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 4))
def test_standard_form_depends_only_on_the_span(seed, k):
    gen = torch.Generator().manual_seed(seed)
    L = torch.randn(k, 3, 3, generator=gen, dtype=F64)
    mix = torch.randn(k, k, generator=gen, dtype=F64) + 3 * torch.eye(k, dtype=F64)
    L2 = torch.einsum("ab,bij->aij", mix, L)
    A, B = lie.standard_form(L), lie.standard_form(L2)
    assert A.shape == (k, 3, 3)
    assert torch.allclose(A, B, atol=1e-8)
    assert torch.allclose(A.flatten(1) @ A.flatten(1).T, torch.eye(k, dtype=F64), atol=1e-10)


# --- similarity -------------------------------------------------------------------------------


def test_similarity_same_span_other_basis_is_one():
    L = so13()
    mix = torch.linalg.qr(torch.randn(6, 6, dtype=F64, generator=torch.Generator().manual_seed(3)))[
        0
    ]
    L2 = torch.einsum("ab,bij->aij", mix @ torch.diag(torch.arange(1.0, 7.0, dtype=F64)), L)
    assert lie.similarity(L, L2) == pytest.approx(1.0, abs=1e-12)


def test_similarity_orthogonal_spans_is_zero():
    assert lie.similarity(so2(), torch.eye(2, dtype=F64)[None]) == pytest.approx(0.0, abs=1e-15)


def test_similarity_missing_and_extra_generators():
    rot = so13()[:3]
    # 3 of the 6 generators found: 3 / 6
    assert lie.similarity(rot, so13()) == pytest.approx(0.5, abs=1e-12)
    # so(2) plus a spurious scaling: 1 / 2
    extra = torch.cat([so2(), torch.eye(2, dtype=F64)[None]])
    assert lie.similarity(extra, so2()) == pytest.approx(0.5, abs=1e-12)
    assert lie.similarity(so2(), extra) == pytest.approx(0.5, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(scale=st.floats(1e-4, 1e4), angle=st.floats(0.0, math.pi / 2))
def test_similarity_is_scale_invariant_and_cos_squared(scale, angle):
    tilted = math.cos(angle) * J + math.sin(angle) * torch.eye(2, dtype=F64)
    s = lie.similarity(scale * so2(), tilted[None])
    # J and I are orthogonal with equal norms, so the principal angle is `angle` itself
    assert s == pytest.approx(math.cos(angle) ** 2, abs=1e-9)


def test_similarity_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="size 2 .* size 4"):
        lie.similarity(so2(), so13())


# --- closure ----------------------------------------------------------------------------------


def test_closure_residual():
    assert lie.closure_residual(so13()) < 1e-12
    assert lie.closure_residual(sl2()) < 1e-12
    assert lie.closure_residual(gl2()) < 1e-12
    # a rotation and a boost do not close: their bracket is another boost
    assert lie.closure_residual(so13()[[2, 3]]) == pytest.approx(1 / math.sqrt(2), rel=1e-9)
    # scale invariant
    assert lie.closure_residual(1e-6 * so13()) < 1e-12


# --- membership -------------------------------------------------------------------------------


@pytest.mark.parametrize("theta", [0.0, 0.4, -2.5, math.pi - 1e-9, 3 * math.pi / 2])
def test_rotations_are_in_exp_so2(theta):
    assert lie.in_identity_component(rotation(theta), so2())


def test_minus_identity_is_in_so2():
    # no real principal logarithm: the numerical fallback must find exp(pi J)
    assert lie.membership_residual(-torch.eye(2, dtype=F64), so2()) < 1e-10


def test_reflection_and_scaling_are_not_in_so2():
    assert not lie.in_identity_component(torch.diag(torch.tensor([1.0, -1.0])), so2())
    assert lie.membership_residual(2.0 * torch.eye(2, dtype=F64), so2()) == pytest.approx(0.5)


def test_lorentz_boost_in_so13():
    L = so13()
    boost = torch.linalg.matrix_exp(1.7 * L[3] - 0.8 * L[4] + 0.5 * L[0])
    assert lie.membership_residual(boost, L) < 1e-10
    parity = torch.diag(torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=F64))
    assert not lie.in_identity_component(parity @ boost, L)


def test_membership_beyond_single_exponentials():
    # -diag(2, 1/2) is in SL(2, R) but is not the exponential of any sl(2) element
    g = -torch.diag(torch.tensor([2.0, 0.5], dtype=F64))
    assert lie.membership_residual(g, sl2()) < 1e-10


@settings(max_examples=15, deadline=None)
@given(gen_scale=st.floats(1e-3, 1e3), theta=st.floats(-3.0, 3.0))
def test_membership_does_not_depend_on_generator_scale(gen_scale, theta):
    assert lie.in_identity_component(rotation(theta), gen_scale * so2())
    assert not lie.in_identity_component(1.5 * rotation(theta), gen_scale * so2())


def test_membership_with_noisy_generators_is_graded_not_binary():
    noisy = so2() + 1e-3 * torch.tensor([[1.0, 0.2], [0.0, -1.0]], dtype=F64)
    r = lie.membership_residual(rotation(1.0), noisy)
    # a little off the group, by roughly the size of the noise
    assert 1e-6 < r < 1e-2


def test_normalize_det():
    M = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=F64)
    assert abs(torch.linalg.det(lie.normalize_det(M))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="singular"):
        lie.normalize_det(torch.tensor([[1.0, 2.0], [2.0, 4.0]]))


# --- canonical coset representatives ----------------------------------------------------------


@pytest.mark.parametrize("theta", [0.0, 0.7, 2.9])
def test_reflection_coset_canonical(theta):
    any_reflection = rotation(theta) @ torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    P = lie.canonical_coset_representative(3.0 * any_reflection, so2())
    assert torch.equal(P, torch.diag(torch.tensor([1.0, -1.0], dtype=F64)))
    assert torch.equal(
        lie.canonical_coset_representative(rotation(theta), so2()), torch.eye(2, dtype=F64)
    )


def test_parity_coset_canonical_is_a_spatial_reflection():
    L = so13()
    g = torch.linalg.matrix_exp(0.9 * L[5] + 0.3 * L[1])
    parity = torch.diag(torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=F64))
    P = lie.canonical_coset_representative(parity @ g, L)
    # diag(1, 1, 1, -1) = parity times a rotation by pi, so it is the same component
    assert torch.equal(P, torch.diag(torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=F64)))
    time_reversal = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=F64))
    T = lie.canonical_coset_representative(time_reversal @ g, L)
    assert not lie.in_identity_component(P.T @ T, L)


def test_so3_in_4_has_no_parity_in_its_component():
    # a sanity check that the 3d rotations do not reach the 4d coordinate flips
    assert not lie.in_identity_component(
        torch.diag(torch.tensor([1.0, 1.0, 1.0, -1.0])), so3_in_4()
    )
