"""Discovery on ground-truth toy cases with fixed predictors, and its bad-input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from known_groups import J, so13

import atlasd
from atlasd.atlas import Atlas
from atlasd.conventions import smooth_fields
from atlasd.discovery.basis import (
    LieBasis,
    disc_mask,
    local_equivariance_loss,
    magnitude_reward,
    overlap_penalty,
)
from atlasd.discovery.cosets import normalize_det_torch

F64 = torch.float64
SO2 = J[None]
REFLECT = torch.diag(torch.tensor([1.0, -1.0], dtype=F64))


def _gaussian_kernel(width: float = 2.0, radius: int = 3) -> torch.Tensor:
    ax = torch.arange(-radius, radius + 1.0)
    k = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * width))
    return (k / k.sum())[None, None]


def isotropic_operator(patches: torch.Tensor) -> torch.Tensor:
    """A nonlinear isotropic map: squared Gaussian blur, valid convolution (margin 3)."""
    b, k, c, h, w = patches.shape
    out = F.conv2d(patches.reshape(b * k * c, 1, h, w), _gaussian_kernel()) ** 2
    return out.reshape(b, k, c, h - 6, w - 6)


@pytest.fixture(scope="module")
def plane_data():
    x = smooth_fields(128, 64, cycles=4.0, seed=0)
    atlas = Atlas.grid(
        shape=(64, 64), centers=[(20, 20), (20, 44), (44, 20), (44, 44), (32, 32)], radius=10
    )
    return x, atlas


@pytest.fixture(scope="module")
def isotropic_group(plane_data):
    x, atlas = plane_data
    return atlasd.discover_local(
        x,
        atlas=atlas,
        predictor=isotropic_operator,
        n_generators=1,
        seed=0,
        basis_epochs=8,
        basis_lr=0.03,
        coset_steps=40,
        coset_candidates=12,
    )


def test_isotropic_operator_gives_o2(isotropic_group):
    G = isotropic_group
    assert G.dim == 1
    assert G.similarity(SO2) >= 0.99
    assert G.n_components == 2
    assert torch.equal(G.cosets[1], REFLECT)
    report = G.metadata["cosets"]
    # non-symmetries exist among the candidates and were rejected by the threshold
    assert any(not c["kept"] for c in report["candidates"])
    assert G.metadata["kind"] == "local" and G.metadata["seed"] == 0


def test_discovered_group_round_trips_and_plots(isotropic_group, tmp_path):
    path = isotropic_group.save(tmp_path / "group.json")
    H = atlasd.load_group(path)
    assert torch.equal(H.algebra, isotropic_group.algebra)
    assert H.contains(REFLECT @ torch.linalg.matrix_exp(0.7 * J))


def test_same_seed_same_group(plane_data):
    x, atlas = plane_data
    kw = dict(atlas=atlas, predictor=isotropic_operator, seed=3, basis_epochs=1, cosets=False)
    a = atlasd.discover_local(x, **kw)
    b = atlasd.discover_local(x, **kw)
    assert torch.equal(a.algebra, b.algebra)
    assert a.metadata["raw_generators"] == b.metadata["raw_generators"]


def test_anisotropic_operator_is_not_rotation_invariant(plane_data):
    # derivative along x squared: only x -> -x, y -> anything... the learned generator avoids so(2)
    x, atlas = plane_data
    dx = torch.tensor([[[[-0.5, 0.0, 0.5]]]])

    def op(p):
        b, k, c, h, w = p.shape
        out = F.conv2d(p.reshape(b * k * c, 1, h, w), dx)[..., 1:-1, :] ** 2
        return out.reshape(b, k, c, h - 2, w - 2)

    G = atlasd.discover_local(
        x, atlas=atlas, predictor=op, seed=0, basis_epochs=6, basis_lr=0.03, cosets=False
    )
    assert G.similarity(SO2) < 0.5


# --- global discovery -------------------------------------------------------------------------


def test_lorentz_invariant_function_gives_so13():
    eta = torch.tensor([1.0, -1.0, -1.0, -1.0])
    x = torch.randn(1024, 4, generator=torch.Generator().manual_seed(0))
    G = atlasd.discover_global(
        x,
        predictor=lambda v: (v**2 * eta).sum(-1, keepdim=True),
        n_generators=6,
        seed=0,
        batch_size=64,
        basis_epochs=12,
        basis_lr=0.03,
        cosets=False,
    )
    assert G.dim == 6
    assert G.similarity(so13()) >= 0.95


def test_trained_mlp_recovers_so13():
    # the default path of discover_global: an MLP trained on (x, Minkowski norm), then the basis
    eta = torch.tensor([1.0, -1.0, -1.0, -1.0])
    x = torch.randn(4096, 4, generator=torch.Generator().manual_seed(0))
    G = atlasd.discover_global(
        x,
        (x**2 * eta).sum(-1, keepdim=True),
        n_generators=6,
        seed=0,
        batch_size=64,
        predictor_epochs=30,
        predictor_lr=3e-3,
        predictor_patience=5,
        basis_epochs=6,
        basis_lr=0.03,
        scale=0.3,
        cosets=False,
    )
    assert G.similarity(so13()) >= 0.95
    assert G.metadata["predictor"]["val_loss"] < 0.1


def test_noncompact_squeeze():
    x = torch.randn(1024, 2, generator=torch.Generator().manual_seed(1))
    G = atlasd.discover_global(
        x,
        predictor=lambda v: (v[:, 0] * v[:, 1])[:, None],
        seed=0,
        batch_size=64,
        basis_epochs=4,
        basis_lr=0.03,
        coset_steps=40,
    )
    squeeze = torch.diag(torch.tensor([1.0, -1.0], dtype=F64))[None]
    assert G.similarity(squeeze) >= 0.99
    # the coordinate swap leaves x1 x2 invariant and is not in exp(span): a second component
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    assert G.n_components >= 2 and G.contains(swap)


# --- objectives and regularisers --------------------------------------------------------------


def test_equivariance_loss_is_zero_for_exact_symmetries():
    # quarter turns are exact pixel permutations, and the operator is isotropic
    x = smooth_fields(4, 21, cycles=2.0, seed=2)[:, None]  # (4, 1, 1, 21, 21)
    base = isotropic_operator(x)
    g = torch.linalg.matrix_exp(math.pi / 2 * J.float())
    loss = local_equivariance_loss(isotropic_operator, x, base, g, mask=disc_mask(7))
    assert loss < 1e-6
    shear = torch.tensor([[1.0, 0.6], [0.0, 1.0]])
    assert local_equivariance_loss(isotropic_operator, x, base, shear, mask=disc_mask(7)) > 1e-3


def test_lie_basis_sampling_normalised_and_reps():
    basis = LieBasis(2, 2, learn_in_rep=True, in_channels=3, generator=torch.Generator())
    with torch.no_grad():
        basis.generators.mul_(10.0)
    L, r_in, r_out = basis.effective()
    assert torch.allclose(L.flatten(1).norm(dim=1), torch.ones(2))
    assert r_in.shape == (2, 3, 3) and r_out is None
    g, rho_in, _ = basis.sample((5, 4), 0.3, torch.Generator().manual_seed(0))
    assert g.shape == (5, 4, 2, 2) and rho_in.shape == (5, 4, 3, 3)
    # representations start trivial
    assert torch.allclose(rho_in, torch.eye(3).expand(5, 4, 3, 3))


def test_regularisers():
    L = torch.stack([J.float(), J.float() * 2])
    assert overlap_penalty(L, "cosine") == pytest.approx(1.0)
    assert overlap_penalty(torch.stack([J.float(), torch.eye(2)]), "cosine") == pytest.approx(0.0)
    assert overlap_penalty(L[:1]) == 0.0
    # standard form penalises shared support even between orthogonal generators
    A = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]]])
    assert overlap_penalty(A, "cosine") == pytest.approx(0.0, abs=1e-7)
    assert overlap_penalty(A, "standard") == pytest.approx(1.0)
    assert magnitude_reward(torch.stack([3 * J.float(), 0.1 * J.float()]), 1.0) == pytest.approx(
        1.0 + 0.1 * math.sqrt(2), rel=1e-6
    )
    with pytest.raises(ValueError, match="overlap kind"):
        overlap_penalty(L, "other")


def test_normalize_det_torch():
    M = torch.randn(7, 3, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.linalg.det(normalize_det_torch(M)).abs(), torch.ones(7), atol=1e-5)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_generators": 0}, "n_generators must be >= 1"),
        ({"out_radius": 11}, "out_radius 11 must be in 0..10"),
        ({"basis_lr_typo": 1.0}, "unknown training option"),
        ({"batch_size": 1000}, "fewer than one batch"),
    ],
)
def test_local_bad_options(plane_data, kwargs, message):
    x, atlas = plane_data
    with pytest.raises(ValueError, match=message):
        atlasd.discover_local(x, atlas=atlas, predictor=isotropic_operator, **kwargs)


def test_local_bad_data(plane_data):
    x, atlas = plane_data
    bad = x.clone()
    bad[3, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="x contains 1 NaN/Inf"):
        atlasd.discover_local(bad, atlas=atlas, predictor=isotropic_operator)
    y = x.clone()
    y[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="y contains 1 NaN/Inf"):
        atlasd.discover_local(x, y, atlas=atlas)
    with pytest.raises(ValueError, match="y is needed"):
        atlasd.discover_local(x, atlas=atlas)
    with pytest.raises(ValueError, match="x has 128 samples but y has 3"):
        atlasd.discover_local(x, x[:3], atlas=atlas)


def test_predictor_with_wrong_shape(plane_data):
    x, atlas = plane_data
    with pytest.raises(ValueError, match="predictor returned \\(2, 5, 1, 20, 20\\)"):
        atlasd.discover_local(x, atlas=atlas, predictor=lambda p: p[..., 1:, 1:])


def test_nan_during_training_stops_without_a_group(plane_data):
    x, atlas = plane_data

    def explodes(p):
        out = isotropic_operator(p)
        # finite on the identity-transformed probe, NaN once patches are resampled
        return out if out.requires_grad is False and p.grad_fn is None else out * float("nan")

    with pytest.raises(FloatingPointError, match="basis loss became nan"):
        atlasd.discover_local(x, atlas=atlas, predictor=explodes, cosets=False, basis_epochs=1)


# --- trained predictors -----------------------------------------------------------------------


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_trained_predictors_recover_so2(plane_data, task):
    x, atlas = plane_data
    blurred = F.conv2d(x, _gaussian_kernel(), padding=3)
    y = blurred**2 if task == "regression" else (blurred > 0.1).long()[:, 0]
    G = atlasd.discover_local(
        x,
        y,
        atlas=atlas,
        seed=0,
        predictor_epochs=6,
        predictor_lr=3e-3,
        basis_epochs=8,
        basis_lr=0.03,
        cosets=False,
    )
    assert G.similarity(SO2) >= 0.95
    assert G.metadata["predictor"]["val_loss"] < G.metadata["predictor"]["history"][0]["val_loss"]


# --- distribution discovery -------------------------------------------------------------------


def test_distribution_rotations_in_two_of_three_coordinates():
    # a ring in (x, y) times a skewed distribution in z: invariant under rotations of (x, y) only
    gen = torch.Generator().manual_seed(0)
    n = 4096
    r = 1.0 + 0.2 * torch.randn(n, generator=gen)
    theta = 2 * math.pi * torch.rand(n, generator=gen)
    z = -torch.log(torch.rand(n, generator=gen)) - 1.0
    x = torch.stack([r * torch.cos(theta), r * torch.sin(theta), z], dim=1)
    G = atlasd.discover_distribution(
        x, seed=0, batch_size=256, basis_epochs=12, basis_lr=0.03, blur=0.1
    )
    R = torch.zeros(1, 3, 3, dtype=F64)
    R[0, 0, 1], R[0, 1, 0] = -1.0, 1.0
    assert G.similarity(R) >= 0.95
    assert G.metadata["kind"] == "distribution"


def test_distribution_needs_two_batches():
    with pytest.raises(ValueError, match="fewer than two independent batches"):
        atlasd.discover_distribution(torch.randn(100, 3), batch_size=64)


def _gradient_field(p: torch.Tensor) -> torch.Tensor:
    """(B, K, 1, h, w) -> (B, K, 2, h-2, w-2): (d/dx, d/dy) with y pointing up."""
    dx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    dy = (p[..., :-2, 1:-1] - p[..., 2:, 1:-1]) / 2
    return torch.cat([dx, dy], dim=2)


@pytest.mark.parametrize("seed", [0, 1])
def test_learned_output_representation_is_contragredient(plane_data, seed):
    # grad(f o g^-1) = g^-T (grad f) o g^-1: every generator L is a symmetry of the gradient
    # with the channel representation -L^T, which the learner has to find with L
    x, atlas = plane_data
    G = atlasd.discover_local(
        x,
        atlas=atlas,
        predictor=_gradient_field,
        learn_out_rep=True,
        seed=seed,
        basis_epochs=8,
        basis_lr=0.03,
        cosets=False,
    )
    L, rho = G.algebra[0], G.out_rep[0]
    expected = -L.T
    cosine = float((rho * expected).sum() / (rho.norm() * expected.norm()))
    assert cosine > 0.98
    assert float((rho - expected).norm() / expected.norm()) < 0.25
    assert G.in_rep is None


def test_coset_search_checks_the_canonical_representative_it_reports():
    """A kept candidate is reported by its canonical form (a signed permutation times an
    identity-component element) only when that form passes the same test; a loose merge
    tolerance must not turn a non-orthogonal matrix into a spurious clean reflection."""
    from atlasd import lie
    from atlasd.discovery.cosets import search_cosets

    target = torch.tensor([[1.0, 0.5], [0.0, -1.0]])  # det -1, not in O(2)

    def score(hs, gen):
        return (hs - target).square().sum(dim=(1, 2))

    loose = lie.canonical_coset_representative(target.double(), SO2, tol=0.6)
    assert torch.allclose(loose, REFLECT)  # what the loose canonical form would claim
    report = search_cosets(
        score, SO2, n_candidates=6, steps=300, lr=0.05, threshold=1e-3, reference=0.0,
        merge_tol=0.6,
    )  # fmt: skip
    assert report["cosets"].shape[0] == 2
    assert torch.allclose(report["cosets"][1], target.double(), atol=1e-2)


# --- typed settings, the task driver and truth metrics ----------------------------------------


def test_config_reads_and_gives_back_the_flat_keywords():
    from atlasd.discovery.config import FLAT_NAMES, DiscoveryConfig

    cfg = DiscoveryConfig.from_kwargs({"predictor_epochs": 5, "coset_steps": 40, "loss": "mse"})
    assert cfg.predictor.epochs == 5 and cfg.cosets.steps == 40 and cfg.basis.loss == "mse"
    flat = cfg.to_flat()
    assert list(flat) == [name for name, _, _ in FLAT_NAMES]
    assert DiscoveryConfig.from_kwargs(flat) == cfg
    with pytest.raises(ValueError, match="unknown training option"):
        DiscoveryConfig.from_kwargs({"coset_step": 3})
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DiscoveryConfig.from_kwargs({"batch_size": 0})
    with pytest.raises(ValueError, match="basis.scale must be a positive number"):
        DiscoveryConfig.from_kwargs({"scale": 0.0})


def test_config_imports_without_torch():
    import subprocess
    import sys

    code = "import sys, atlasd.discovery.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_settings_give_the_entry_points_keywords():
    from atlasd.discovery.config import CosetConfig, DiscoverySettings, RunConfig

    settings = DiscoverySettings(n_generators=2, cosets=CosetConfig(search=False, steps=7))
    flat = settings.training(RunConfig(run_dir="runs/x"))
    assert "batch_size" not in flat  # the kind's default applies
    assert flat["coset_steps"] == 7 and flat["run_dir"] == "runs/x"
    assert DiscoverySettings(batch_size=8).training()["batch_size"] == 8
    with pytest.raises(ValueError, match="discovery.kind"):
        DiscoverySettings(kind="other")


class _VectorTask:
    """A user's DataModule as task_spec reads it: rotation-invariant targets of 2-D vectors."""

    kind = "global"

    def __init__(self) -> None:
        self.x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
        self.y = (self.x**2).sum(1, keepdim=True)
        self.ground_truth = {"algebra": SO2, "cosets": torch.stack([torch.eye(2, dtype=F64)])}


def test_discover_task_is_the_entry_point_plus_truth_metrics():
    from atlasd.discovery.config import (
        BasisConfig,
        CosetConfig,
        DiscoverySettings,
        PredictorConfig,
    )
    from atlasd.discovery.task import discover_task, evaluate_against_truth

    dm = _VectorTask()
    settings = DiscoverySettings(
        batch_size=32,
        predictor=PredictorConfig(epochs=2),
        basis=BasisConfig(epochs=2, init_candidates=2),
        cosets=CosetConfig(candidates=2, steps=3),
    )
    group, metrics = discover_task(dm, settings, name="vectors", seed=1, data_time=0.5)
    direct = atlasd.discover_global(
        dm.x, dm.y, seed=1, batch_size=32, predictor_epochs=2, basis_epochs=2, init_candidates=2,
        coset_candidates=2, coset_steps=3, reference_algebra=SO2,
    )  # fmt: skip
    assert torch.equal(group.algebra, direct.algebra)
    assert torch.equal(group.cosets, direct.cosets)
    assert group.metadata["dataset"] == "vectors"
    truth = evaluate_against_truth(direct, dm.ground_truth)
    assert group.metadata["similarity_to_truth"] == metrics["similarity_to_truth"]
    assert metrics["similarity_to_truth"] == truth["similarity_to_truth"]
    assert list(metrics) == [
        "task", "seed", "dim", "n_components", "resumed_stages", "similarity_to_truth",
        "truth_cosets_found", "cosets_match_truth", "wall_time_s", "losses",
    ]  # fmt: skip
    assert metrics["truth_cosets_found"] == [True]
    assert metrics["wall_time_s"]["data"] == 0.5 and metrics["wall_time_s"]["total"] >= 0.5
    assert set(metrics["losses"]) == {"basis_per_epoch", "predictor_val", "coset_identity"}
