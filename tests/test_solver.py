"""Constraint solver and representations: reference dimensions, noise robustness, cache, Rep
algebra, with numbers."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from equivariance import assert_equivariant
from hypothesis import given, settings
from hypothesis import strategies as st
from known_groups import J, so2, so3_in_4, so13

from atlasd import DiscoveredGroup
from atlasd.downstream.equivariant import (
    BasisCache,
    EquivariantSolver,
    Rep,
    equivariant_basis,
    generator_noise,
    invariant_forms,
    sample_elements,
)

F64 = torch.float64
ETA = torch.diag(torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=F64))
FAST = settings(max_examples=15, deadline=None)


def lorentz(parity: bool = False, scaling: bool = False) -> DiscoveredGroup:
    algebra = so13()
    if scaling:
        algebra = torch.cat([algebra, torch.eye(4, dtype=F64)[None]])
    cosets = torch.stack([torch.eye(4, dtype=F64), ETA]) if parity else None
    return DiscoveredGroup(algebra, cosets=cosets)


def kron_sum(L: torch.Tensor) -> torch.Tensor:
    """Generators of V⊗V from those of V (k, d, d)."""
    d = L.shape[-1]
    eye = torch.eye(d, dtype=F64)
    return torch.stack([torch.kron(A, eye) + torch.kron(eye, A) for A in L])


def solve(group: DiscoveredGroup, rep_in: Rep, rep_out: Rep, **kw):
    return EquivariantSolver(**kw).solve(
        rep_in.generators, rep_out.generators, rep_in.discrete, rep_out.discrete
    )


def constraint_residual(W, B_in, B_out, H_in=None, H_out=None) -> float:
    if W.shape[0] == 0:
        return 0.0
    res = float((B_out[:, None] @ W[None] - W[None] @ B_in[:, None]).abs().max())
    if H_in is not None:
        res = max(res, float((H_out[:, None] @ W[None] - W[None] @ H_in[:, None]).abs().max()))
    return res


# --- reference dimensions (REFERENCE_VALUES.md) --------------------------------------------------


@pytest.mark.parametrize(
    ("parity", "scaling", "spec_in", "spec_out", "expected"),
    [
        (False, False, "V", "V", 1),
        (False, False, "V*V", "V*V", 4),
        (False, False, "V*V", "S", 1),
        (False, False, "V", "S", 0),
        (True, False, "V*V", "V*V", 3),
        (True, False, "V*V", "S", 1),
        (False, True, "V*V", "S", 0),
        (False, True, "V*V", "V*V", 4),
    ],
)
def test_reference_dimensions(parity, scaling, spec_in, spec_out, expected):
    group = lorentz(parity, scaling)
    rin, rout = Rep.parse(group, spec_in), Rep.parse(group, spec_out)
    sol = solve(group, rin, rout)
    assert sol.rank == expected
    W = sol.basis
    assert W.shape == (expected, rout.dim, rin.dim) and W.dtype == F64
    assert (
        constraint_residual(W, rin.generators, rout.generators, rin.discrete, rout.discrete) < 1e-12
    )
    gram = W.flatten(1) @ W.flatten(1).T
    assert torch.allclose(gram, torch.eye(expected, dtype=F64), atol=1e-12)
    if expected:  # the map sum_r w_r W_r commutes with finite group elements, not only generators
        w = torch.randn(expected, generator=torch.Generator().manual_seed(0), dtype=F64)
        Wsum = torch.einsum("r,rmn->mn", w, W)
        x = torch.randn(5, rin.dim, generator=torch.Generator().manual_seed(1), dtype=F64)
        assert_equivariant(
            lambda v: v @ Wsum.T, x, act_in=rin, act_out=rout, group=group, tol=1e-10
        )


def test_lorentz_invariant_is_the_metric():
    group = lorentz()
    V = Rep.vector(group)
    forms = invariant_forms(V.blocks[0][1])
    assert forms.shape == (1, 4, 4)
    M = forms[0] / forms[0][0, 0]
    assert torch.allclose(M, ETA, atol=1e-12)


def test_contract_function_matches_solver_and_caches_nothing_by_default():
    L = so13()
    W = equivariant_basis(L, L)
    assert W.shape == (1, 4, 4)
    assert torch.allclose(W[0] / W[0, 0, 0], torch.eye(4, dtype=F64), atol=1e-12)
    parity = torch.stack([torch.eye(4, dtype=F64), ETA])
    assert equivariant_basis(kron_sum(L), kron_sum(L)).shape[0] == 4
    P2 = torch.stack([torch.kron(P, P) for P in parity])
    assert equivariant_basis(kron_sum(L), kron_sum(L), P2, P2).shape[0] == 3


@given(seed=st.integers(0, 10_000))
@FAST
def test_basis_follows_a_change_of_coordinates(seed):
    """Conjugating the representation by any invertible T maps the basis by T: W' = T W T^-1
    (the solver knows no preferred coordinates); the dimension never changes."""
    gen = torch.Generator().manual_seed(seed)
    # condition number up to e^2: the gap test assumes a reasonably conditioned representation
    # (with cond(T) ~ 150 true constraints fall to 1e-5 of the largest and look like noise)
    Q = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=F64)).Q
    T = Q @ torch.diag(torch.exp(2 * torch.rand(4, generator=gen, dtype=F64) - 1))
    L = T @ so13() @ torch.linalg.inv(T)
    W = equivariant_basis(L, L)
    assert W.shape[0] == 1
    assert torch.allclose(W[0] / W[0].trace() * 4, torch.eye(4, dtype=F64), atol=1e-9)


# --- noise ------------------------------------------------------------------------------------


def principal_cosines(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(A.flatten(1) @ B.flatten(1).T)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_noise_1e_3_keeps_the_true_basis(seed):
    """V⊗V -> V⊗V of so(1,3) with generators perturbed by 1e-3: the identity and the swap
    stay exact solutions and the two metric-built maps become slightly noisy; the solver keeps
    all four, and they lie within ~1e-3 of the true basis. Seeds 3-5 are held out (over seeds
    0-29: gap 4.42-4.84 decades, 1 - smallest cosine <= 2.8e-6)."""
    gen = torch.Generator().manual_seed(seed)
    L = so13()
    noisy = L + 1e-3 * torch.randn(L.shape, generator=gen, dtype=F64)
    exact = equivariant_basis(kron_sum(L), kron_sum(L))
    sol = EquivariantSolver().solve(kron_sum(noisy), kron_sum(noisy))
    assert sol.rank == 4
    assert sol.n_exact == 2  # identity and swap commute with any Kronecker sum
    assert sol.gap > 3.0  # decades between the noisy solutions and the constraints
    cos = principal_cosines(exact, sol.basis)
    assert float(cos.min()) > 1 - 1e-4
    # the largest gap of the raw spectrum sits between exact and noisy solutions: taking it
    # blindly would have kept only two maps
    # (at float64 resolution: an exact solution's eigenvalue is 0 or ~1e-16 depending on the
    # BLAS path, so floor both at eps * max before taking logs)
    eig = sol.eigenvalues
    lam = eig.clamp_min(torch.finfo(F64).eps * float(eig.max())).log10()
    assert int(torch.argmax(lam[1:] - lam[:-1])) + 1 == 2


def test_so3_invariant_survives_noise_where_an_absolute_cutoff_fails():
    gen = torch.Generator().manual_seed(0)
    L = so3_in_4()[:, 1:, 1:].contiguous()  # so(3) on R^3
    noisy = L + 1e-5 * torch.randn(L.shape, generator=gen, dtype=F64)
    B = kron_sum(noisy)
    zeros = torch.zeros(3, 1, 1, dtype=F64)
    W = equivariant_basis(B, zeros)
    assert W.shape[0] == 1
    M = W[0].reshape(3, 3)
    assert torch.allclose(M / M.trace() * 3, torch.eye(3, dtype=F64), atol=1e-4)
    # the constraint's smallest singular value exceeds 1e-5: an absolute cut-off loses it
    C = torch.cat([-A.T for A in B])  # rows of W B = 0 for the row vector W (1, 9)
    assert float(torch.linalg.svdvals(C)[-1]) > 1e-5


def test_noisy_discovered_group_reproduces_dimensions():
    gen = torch.Generator().manual_seed(3)
    L = so13() + 1e-3 * torch.randn(6, 4, 4, generator=gen, dtype=F64)
    group = DiscoveredGroup(L, cosets=torch.stack([torch.eye(4, dtype=F64), ETA]))
    V = Rep.vector(group)
    assert solve(group, V * V, V * V).rank == 3
    assert solve(group, V * V, Rep.scalar(group)).rank == 1
    assert solve(group, V, V).rank == 1


PARITY_Z = torch.diag(torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=F64))  # as discovered for jets


def noisy_lorentz(noise: float, seed: int) -> DiscoveredGroup:
    """so(1,3) with Gaussian noise of size ``noise`` on every generator entry (seeded) and the
    parity coset diag(1, 1, 1, -1), as ``atlasd discover`` reports it for jets."""
    gen = torch.Generator().manual_seed(seed)
    L = so13() + noise * torch.randn(6, 4, 4, generator=gen, dtype=F64)
    return DiscoveredGroup(L, cosets=torch.stack([torch.eye(4, dtype=F64), PARITY_Z]))


# noise_factor (downstream/equivariant/solver.py) was calibrated on seeds 0-2; seeds 3-9 are held
# out. Over seeds 0-29 (measured when this test was written) V⊗V -> S of noisy_lorentz(noise, seed)
# has:
#   noise  gap above the metric  tau / metric eigenvalue  next eigenvalue / tau  plain rule
#   1e-3   4.73-5.07 decades     >= 2.40                   >= 18200              rank 1 (all 30)
#   1e-2   2.72-3.07             >= 2.40                   >= 172                rank 1 (all 30)
#   3e-2   1.75-2.10             >= 2.45                   >= 18.7               rank 0 on 26 of 30
#   5e-2   1.28-1.64             >= 2.47                   >= 6.0                rank 0 (all 30)
# so the plain rule's failure is asserted at 5e-2 (0.36 decades below min_gap = 2), not at 3e-2
# where the gap straddles 2 decades.
NOISE_SEEDS = range(10)  # 0-2 tuned on, 3-9 held out


@pytest.mark.parametrize("noise", [1e-3, 1e-2, 3e-2, 5e-2])
def test_noisy_lorentz_keeps_the_metric_invariant(noise):
    """V⊗V -> S of a noisy so(1,3) (similarity 0.994 at 3e-2) has one solution, the
    Minkowski metric, found to cosine > 0.99. Past about 3e-2 the gap above the metric falls
    under 2 decades, so the plain gap rule (noise_factor=0) lost it and the gates of a
    discovered jets group saw no invariant; the measured noise bound keeps it, with margin on
    both sides (table above)."""
    for seed in NOISE_SEEDS:
        group = noisy_lorentz(noise, seed)
        V, S = Rep.vector(group), Rep.scalar(group)
        sol = solve(group, V * V, S)
        assert sol.rank == 1, seed
        M = sol.basis[0].reshape(4, 4)
        cos = abs(float((M * ETA).sum())) / (float(M.norm()) * float(ETA.norm()))
        assert cos > 0.99, seed  # measured >= 0.9979 at 5e-2
        # the metric sits below the noise bound and the first constraint above it, each by a
        # factor (measured >= 2.4 and >= 6.0) that leaves room for other seeds
        assert float(sol.eigenvalues[0]) * 1.5 <= sol.threshold, seed
        assert sol.threshold * 3.0 < float(sol.eigenvalues[1]), seed
        # the same through invariant_forms, which the gates use
        forms = invariant_forms(V.blocks[0][1])
        assert forms.shape == (1, 4, 4)
        plain = solve(group, V * V, S, noise_factor=0.0)
        gap = float(torch.log10(sol.eigenvalues[1] / sol.eigenvalues[0]))
        if noise == 5e-2:
            assert plain.rank == 0, seed  # the failure this rule fixes
            assert gap < 1.8, seed  # measured <= 1.64
        elif noise <= 1e-2:
            assert plain.rank == 1, seed
            assert gap > 2.4, seed  # measured >= 2.72


@pytest.mark.parametrize("noise", [1e-2, 3e-2, 5e-2])
def test_noise_rule_adds_no_spurious_solutions(noise):
    """Maps with no solution for so(1,3) + parity stay empty under noise, and the others keep
    the exact dimensions (V⊗V -> V⊗V: 3, V -> V⊗V⊗V: 3, V⊗V⊗V -> S: 0, V⊗V -> V: 0), on
    the seeds the noise rule was tuned on (0-2) and held-out ones (3-9; all right on seeds
    0-29 at noise up to 5e-2 when measured)."""
    for seed in NOISE_SEEDS:
        group = noisy_lorentz(noise, seed)
        V, S = Rep.vector(group), Rep.scalar(group)
        for rin, rout, expected in [
            (V * V, V * V, 3),
            (V, V * V * V, 3),
            (V * V * V, S, 0),
            (V * V, V, 0),
            (V, S, 0),
            (V, V, 1),
        ]:
            assert solve(group, rin, rout).rank == expected, (seed, rin, rout)


def test_generator_noise_measures_closure():
    """0 for exact algebras and their tensor representations, proportional to the noise,
    independent of the scale and nearly of the basis of the generators."""
    L = so13()
    assert generator_noise(L) < 1e-12
    assert generator_noise(kron_sum(L)) < 1e-12
    assert generator_noise(so2()) == 0.0  # a single generator always closes
    gen = torch.Generator().manual_seed(0)
    E = torch.randn(6, 4, 4, generator=gen, dtype=F64)
    r1, r2 = generator_noise(L + 1e-3 * E), generator_noise(L + 1e-2 * E)
    assert 1e-3 < r1 < 1e-2 and 8.0 < r2 / r1 < 12.0
    T = torch.randn(6, 6, generator=gen, dtype=F64)  # another basis of the same span
    mixed = 3.0 * torch.einsum("ak,kij->aij", T, L + 1e-2 * E)
    assert abs(generator_noise(mixed) - r2) < 0.02 * r2  # measured 0.4 %
    # exact abelian algebra (commuting generators): 0; with noise: of the order of the noise
    ab = torch.stack([J, torch.eye(2, dtype=F64)])
    assert generator_noise(ab) < 1e-12
    assert 1e-3 < generator_noise(ab + 1e-2 * torch.randn(2, 2, 2, generator=gen, dtype=F64)) < 0.1


def test_no_constraints_and_no_solutions():
    sol = EquivariantSolver().solve(torch.zeros(2, 3, 3), torch.zeros(2, 2, 2))
    assert sol.rank == 6 and math.isnan(sol.gap)
    assert torch.allclose(
        sol.basis.flatten(1) @ sol.basis.flatten(1).T, torch.eye(6, dtype=F64), atol=1e-12
    )
    # generic generators: only zero commutes
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(2, 3, 3, generator=gen, dtype=F64)
    assert equivariant_basis(A, torch.zeros(2, 1, 1, dtype=F64)).shape == (0, 1, 3)
    # discrete only (k = 0): invariants of a sign flip
    H = torch.stack([torch.eye(2, dtype=F64), torch.diag(torch.tensor([1.0, -1.0], dtype=F64))])
    W = equivariant_basis(torch.zeros(0, 2, 2), torch.zeros(0, 1, 1), H, torch.ones(2, 1, 1))
    assert W.shape == (1, 1, 2) and torch.allclose(
        W[0, 0].abs(), torch.tensor([1.0, 0.0], dtype=F64)
    )


def test_spectrum_is_logged(caplog):
    with caplog.at_level(logging.DEBUG, logger="atlasd.downstream.equivariant.solver"):
        equivariant_basis(so13(), so13())
    assert any("rank 1" in r.message and "spectrum" in r.message for r in caplog.records)


# --- canonical output and cache ---------------------------------------------------------------


def test_basis_depends_on_the_span_not_on_the_generators_given():
    gen = torch.Generator().manual_seed(5)
    L = kron_sum(so13())
    mix = torch.randn(6, 6, generator=gen, dtype=F64)  # another basis of the same algebra
    L2 = torch.einsum("ab,bij->aij", mix, L)
    W1, W2 = equivariant_basis(L, L), equivariant_basis(L2, L2)
    assert torch.allclose(W1, W2, atol=1e-9)


def test_cache_hits_are_keyed_by_values_and_bounded():
    solver = EquivariantSolver(cache_size=2)
    L = so13()
    solver.basis(L, L)
    solver.basis(L.clone(), L.clone())
    assert solver.cache.hits == 1 and len(solver.cache) == 1
    # values, not reprs, make the key: a 1e-8 change is a different entry
    solver.basis(L + 1e-8, L + 1e-8)
    assert solver.cache.misses == 2
    solver.basis(so2(), so2())
    assert len(solver.cache) == 2  # bounded: the oldest entry was evicted
    solver.basis(L, L)
    assert solver.cache.misses == 4
    k1 = BasisCache.key([L, None], decimals=10)
    assert k1 == BasisCache.key([L.clone(), None], decimals=10)
    assert k1 != BasisCache.key([L, L], decimals=10)


def test_solver_input_errors():
    L = so13()
    with pytest.raises(ValueError, match="6 generators but gens_out has 1"):
        equivariant_basis(L, L[:1])
    with pytest.raises(ValueError, match="NaN or Inf"):
        equivariant_basis(torch.full((1, 2, 2), float("nan")), so2())
    with pytest.raises(ValueError, match="together"):
        equivariant_basis(L, L, discrete_in=torch.eye(4)[None])
    with pytest.raises(ValueError, match=r"shape \(k, d, d\)"):
        equivariant_basis(torch.zeros(2, 3), so2())
    with pytest.raises(ValueError, match="max_size"):
        EquivariantSolver(max_size=10).basis(L, L)
    with pytest.raises(ValueError, match="singular"):
        equivariant_basis(so2(), so2(), torch.zeros(1, 2, 2), torch.eye(2)[None])
    with pytest.raises(ValueError, match="min_gap"):
        EquivariantSolver(min_gap=0)


# --- representations ----------------------------------------------------------------------------


def test_rep_algebra_and_layout():
    group = lorentz(parity=True)
    S, V = Rep.scalar(group), Rep.vector(group)
    rep = 3 * V + 2 * S + V * V
    assert repr(rep) == "3*V + 2*S + V⊗V" and rep.dim == 12 + 2 + 16
    assert Rep.parse(group, "3*V + 2*S + V^2") == rep
    assert Rep.parse(group, "dual(V)").dim == 4 and repr(V.dual()) == "V*"
    assert V.dual().dual() == V
    assert V * 2 + V == 3 * V and sum([V, V, S]) == 2 * V + S
    assert (V + S) * (V + S) == V * V + V + V + S  # blocks in order, left outer
    assert (V**3).dim == 64
    assert Rep.coerce(group, 5) == 5 * S
    assert rep.is_trivial is False and (4 * S).is_trivial


def test_rep_matrices_are_the_group_elements():
    group = lorentz(parity=True)
    V = Rep.vector(group)
    c, comp = sample_elements(group, 6, scale=1.0, generator=torch.Generator().manual_seed(0))
    g = group.cosets[comp] @ torch.linalg.matrix_exp(torch.einsum("nk,kij->nij", c, group.algebra))
    assert torch.allclose(V.matrices(c, comp), g, atol=1e-12)
    # tensor product: Kronecker product of elements (generators are Kronecker sums)
    VV = (V * V).matrices(c, comp)
    assert torch.allclose(VV, torch.stack([torch.kron(a, a) for a in g]), atol=1e-10)
    assert torch.allclose((V * V).element(g), VV, atol=1e-10)
    # dual: inverse transpose; Lorentz group: eta g eta
    assert torch.allclose(V.dual().matrices(c, comp), torch.linalg.inv(g).mT, atol=1e-10)
    # direct sum with multiplicity: block diagonal
    R = (2 * V + Rep.scalar(group)).matrices(c, comp)
    assert torch.allclose(R[:, 4:8, 4:8], g, atol=1e-12) and torch.allclose(
        R[:, 8, 8], torch.ones(6, dtype=F64)
    )
    assert float(R[:, :4, 4:].abs().max()) == 0.0


def test_rep_parse_and_coerce_errors():
    group = lorentz()
    with pytest.raises(ValueError, match="cannot parse"):
        Rep.parse(group, "3*W")
    with pytest.raises(ValueError, match="cannot parse"):
        Rep.parse(group, "3*V +")
    with pytest.raises(ValueError, match="no in_rep"):
        Rep.parse(group, "in")
    with pytest.raises(ValueError, match="different group"):
        Rep.vector(group) + Rep.vector(DiscoveredGroup(so2()))
    with pytest.raises(ValueError, match="different group"):
        Rep.coerce(group, Rep.vector(DiscoveredGroup(so2())))
    with pytest.raises(ValueError, match="algebra has 6"):
        Rep.from_generators(group, torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="non-identity"):
        Rep.channels(
            DiscoveredGroup(
                so2(), cosets=torch.stack([torch.eye(2), -torch.eye(2)]), in_rep=J[None]
            ),
            "in",
        ).matrices(torch.zeros(1, 1), torch.ones(1, dtype=torch.long))


def test_channel_reps_from_the_group():
    group = DiscoveredGroup(so2(), in_rep=J[None], out_rep=torch.zeros(1, 1, 1))
    rin = Rep.parse(group, "2*in + out")
    assert rin.dim == 5 and rin.discrete is not None  # one component: identity is known
    assert Rep.channels(group, "in").element(torch.eye(2)) is None  # known by generators only
