"""The coset search gives exactly the right components on its defaults, for fixed functions whose
full symmetry group is known: only the data, the predictor and n_generators are chosen per case
(plus basis budgets where the *algebra* would otherwise be wrong, said at each place)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import atlasd
from atlasd import lie
from atlasd.atlas import Atlas
from atlasd.conventions import smooth_fields

F64 = torch.float64


def diag(*v: float) -> torch.Tensor:
    return torch.diag(torch.tensor(v, dtype=F64))


def check_components(G: atlasd.DiscoveredGroup, truth: list[torch.Tensor]) -> None:
    """Exactly the true components: the count, each true representative contained, and no kept
    representative (but the identity) in the identity component."""
    assert G.n_components == len(truth), G.cosets
    for h in truth:
        assert G.contains(h), h
    for h in G.cosets[1:]:
        assert lie.membership_residual(h, G.algebra) > 0.5, h
    assert torch.equal(G.cosets[0], torch.eye(G.cosets.shape[-1], dtype=F64))


def laplacian(a: float, b: float):
    """``a f_xx + b f_yy`` by central differences, valid convolution (margin 1)."""
    k = torch.tensor([[0.0, b, 0.0], [a, -2 * (a + b), a], [0.0, b, 0.0]])[None, None]

    def op(p: torch.Tensor) -> torch.Tensor:
        n, c, ch, h, w = p.shape
        return F.conv2d(p.reshape(n * c * ch, 1, h, w), k).reshape(n, c, ch, h - 2, w - 2)

    return op


@pytest.fixture(scope="module")
def fields():
    x = smooth_fields(64, 64, cycles=4.0, seed=0)
    atlas = Atlas.grid(shape=(64, 64), centers=[(20, 20), (32, 40), (44, 24)], radius=10)
    return x, atlas


def test_o2_on_two_of_three_coordinates():
    # f = x0^2 + x1^2 + x2: O(2) x {1}, components {I, diag(1, -1, 1)}; the same case covers a
    # function with a discrete symmetry besides its 1-d algebra
    x = torch.randn(2000, 3, generator=torch.Generator().manual_seed(0))
    G = atlasd.discover_global(
        x,
        predictor=lambda v: (v[..., 0] ** 2 + v[..., 1] ** 2 + v[..., 2]).unsqueeze(-1),
        n_generators=1,
        seed=0,
    )
    assert G.similarity(torch.tensor([[[0.0, -1, 0], [1, 0, 0], [0, 0, 0]]])) > 0.999
    check_components(G, [torch.eye(3, dtype=F64), diag(1, -1, 1)])
    assert not G.contains(diag(1, 1, -1))


def test_o2_invariant_function_on_the_plane():
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    G = atlasd.discover_global(x, predictor=lambda v: (v**2).sum(-1, keepdim=True), n_generators=1)
    check_components(G, [torch.eye(2, dtype=F64), diag(1, -1)])


@pytest.mark.slow
def test_minkowski_norm_has_the_four_components_of_o13():
    # E^2 - |p|^2 on symmetric data is invariant under all of O(1,3): identity, parity, time
    # reversal and both (the jets task has two because its energies are positive, see
    # tests/test_jets.py). basis_epochs / basis_lr: the 6-d algebra is wrong after 3 epochs.
    eta = torch.tensor([1.0, -1.0, -1.0, -1.0])
    x = torch.randn(1024, 4, generator=torch.Generator().manual_seed(0))
    G = atlasd.discover_global(
        x,
        predictor=lambda v: (v**2 * eta).sum(-1, keepdim=True),
        n_generators=6,
        seed=0,
        basis_epochs=12,
        basis_lr=0.03,
    )
    truth = [torch.eye(4, dtype=F64), diag(1, 1, 1, -1), diag(-1, 1, 1, 1), diag(-1, 1, 1, -1)]
    check_components(G, truth)


def _discover_laplacian(fields, a: float, b: float, n_generators: int):
    """discover_local with the fixed predictor a f_xx + b f_yy on the smooth fields; basis
    budgets as the tests below say (the algebra itself is not found in the default 3 epochs)."""
    x, atlas = fields
    return atlasd.discover_local(
        x,
        atlas=atlas,
        predictor=laplacian(a, b),
        n_generators=n_generators,
        out_radius=5,
        basis_epochs=12,
        basis_lr=0.03,
    )


def test_anisotropic_laplacian(fields):
    # f_xx + 4 f_yy commutes with the g that preserve the form diag(1, 4): a conjugate of O(2)
    # with algebra [[0, -1/2], [2, 0]] (up to scale); -I is in its identity component, the
    # reflections diag(1, -1) ~ diag(-1, 1) form the other. The swap of x and y is no symmetry.
    # basis_epochs / basis_lr: the algebra is not found in 3 epochs.
    G = _discover_laplacian(fields, 1.0, 4.0, n_generators=1)
    assert G.similarity(torch.tensor([[[0.0, -0.5], [2.0, 0.0]]])) > 0.99
    check_components(G, [torch.eye(2, dtype=F64), diag(1, -1)])
    assert G.contains(-torch.eye(2, dtype=F64)) and G.contains(diag(-1, 1))
    assert not G.contains(torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64))


def test_anisotropic_laplacian_with_a_spare_generator(fields):
    # the outside check's setting: two generators for a 1-d symmetry. Whatever the spare one
    # learns, no noisy element of the identity component may come out as a third component.
    G = _discover_laplacian(fields, 1.0, 4.0, n_generators=2)
    check_components(G, [torch.eye(2, dtype=F64), diag(1, -1)])


def test_isotropic_laplacian(fields):
    # basis_epochs / basis_lr: so(2) is not found in 3 epochs (similarity ~0.8)
    G = _discover_laplacian(fields, 1.0, 1.0, n_generators=1)
    assert G.similarity(torch.tensor([[[0.0, -1.0], [1.0, 0.0]]])) > 0.99
    check_components(G, [torch.eye(2, dtype=F64), diag(1, -1)])
