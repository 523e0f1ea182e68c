"""Degeneracy report (downstream/degeneracy/): likelihood factors, the Hessian, symmetry
directions in weight space, and a small end-to-end report on the heat task."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from known_groups import so2
from torch import nn

from atlasd.downstream.degeneracy import (
    NLLOutputs,
    categorical_nll,
    control_generators,
    conv_rotation_tangent,
    gaussian_nll,
    merge_degeneracy_reports,
    run_degeneracy,
    symmetry_direction,
    write_degeneracy_report,
)
from atlasd.downstream.degeneracy.ranks import (
    gauss_newton_matrix,
    hessian_vector_product,
    loss_hessian,
)
from atlasd.group import DiscoveredGroup
from atlasd.io import json_safe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def o2_group() -> DiscoveredGroup:
    return DiscoveredGroup(
        so2(), cosets=torch.stack([torch.eye(2), torch.diag(torch.tensor([1.0, -1.0]))])
    )


def test_nll_outputs_give_the_exact_hessian_of_models_linear_in_their_parameters():
    """For logits / predictions linear in the parameters the NLL's Hessian has no residual term:
    J~^T J~ / n from NLLOutputs must equal the Hessian from Hessian-vector products."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 2, 5, 5, generator=gen, dtype=torch.float64)
    model = nn.Conv2d(2, 3, 3, padding=1).double()
    y_cls = torch.randint(0, 3, (12, 5, 5), generator=gen)
    h = loss_hessian(model, categorical_nll, x, y_cls)
    g = gauss_newton_matrix(NLLOutputs(model, "classification"), x)
    assert torch.allclose(h, g, rtol=1e-9, atol=1e-9 * float(h.abs().max()))
    # regression: H = J^T J / (n sigma^2)
    y_reg = torch.randn(12, 3, 5, 5, generator=gen, dtype=torch.float64)
    h = loss_hessian(model, gaussian_nll(0.3), x, y_reg)
    g = gauss_newton_matrix(NLLOutputs(model, "regression", 0.3), x)
    assert torch.allclose(h, g, rtol=1e-9, atol=1e-9 * float(h.abs().max()))
    # the residual term makes a nonlinear model's Hessian differ from its Gauss-Newton matrix
    deep = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 3, 1)).double()
    h = loss_hessian(deep, gaussian_nll(0.3), x, y_reg)
    g = gauss_newton_matrix(NLLOutputs(deep, "regression", 0.3), x)
    assert float((h - g).norm() / h.norm()) > 1e-3
    assert float(torch.linalg.eigvalsh(g)[0]) > -1e-8  # Gauss-Newton is PSD


def test_rotation_tangent_of_a_ramp_kernel_is_the_rotated_ramp():
    """K(z) = x (a ramp to the right): K(exp(tA) z) with A the rotation generator gives
    d/dt = (A z) . grad K = -y, a ramp downward; central differences are exact on the interior."""
    conv = nn.Conv2d(1, 1, 5, bias=True)
    r = torch.arange(5.0) - 2
    with torch.no_grad():
        conv.weight.copy_(r.expand(5, 5)[None, None])  # value x = column - 2
        conv.bias.fill_(0.7)
    t = conv_rotation_tangent(nn.Sequential(conv), so2()[0])
    dk, db = t[:25].reshape(5, 5), t[25:]
    y = (2 - torch.arange(5.0))[:, None].expand(5, 5).double()  # value y = 2 - row
    assert torch.allclose(dk[1:4, 1:4], -y[1:4, 1:4], atol=1e-12)
    assert torch.equal(db, torch.zeros(1, dtype=torch.float64))
    # an isotropic kernel has (almost) no rotation tangent on the interior
    with torch.no_grad():
        conv.weight.copy_(torch.exp(-(r[None] ** 2 + r[:, None] ** 2) / 2)[None, None])
    t = conv_rotation_tangent(nn.Sequential(conv), so2()[0])
    assert float(t[:25].reshape(5, 5)[1:4, 1:4].abs().max()) < 1e-12
    assert conv_rotation_tangent(nn.Sequential(nn.Linear(3, 2)), so2()[0]) is None


def _small_heat_config() -> dict:
    return {
        "task": "heat",
        "data": {"n": 12, "seed": 0, "val_fraction": 0.1},
        "broken": {"anisotropy": [1.5, 0.5]},
        "samples": {"n": 120, "n_heldout": 40, "n_rank": 6, "n_emulate": 8},
        "models": {
            "baseline": {"hidden": [4], "kernel_size": 5},
            "equivariant": {"hidden": ["2*S + 1*V"], "kernel_size": 5},
        },
        "training": {
            "epochs": 2,
            "lr": 0.01,
            "batch_size": 32,
            "polish_steps": 5,
            "polish_rounds": 1,
        },
        "llc": {"chains": 2, "burn_in": 5, "draws": 10, "batch_size": 32},
        "seeds": [0],
    }


@pytest.fixture(scope="module")
def heat_report(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("degeneracy")
    report = run_degeneracy(_small_heat_config(), o2_group(), run_dir)
    return report, run_dir


@pytest.fixture(scope="module")
def heat_report_seed1(heat_report, tmp_path_factory):
    """The heat_report experiment on seed 1, run on its own with the gamma and noise level
    that seed 0's run chose (as a user runs further seeds to merge)."""
    first, _ = heat_report
    config = _small_heat_config()
    config["llc"].update(localization=first.localization, noise_std=first.noise_std)
    config["seeds"] = [1]
    return run_degeneracy(config, o2_group(), tmp_path_factory.mktemp("degeneracy1"))


def test_report_counts_and_ranks(heat_report):
    report, _ = heat_report
    summary = report.summary
    assert set(summary) == {
        "symmetric/baseline",
        "symmetric/equivariant",
        "broken/baseline",
        "broken/equivariant",
    }
    base, eq = summary["symmetric/baseline"], summary["symmetric/equivariant"]
    # conv 1->4 (5x5) and 4->1 (5x5) with biases
    assert base["raw_parameters"] == base["free_parameters"] == 4 * 25 + 4 + 4 * 25 + 1
    assert eq["free_parameters"] < base["free_parameters"]
    for run in report.runs:
        d = run["free_parameters"]
        assert 0 < run["functional_dimension"] <= d
        assert run["gauss_newton"]["rank"] <= d
        assert len(run["gauss_newton"]["eigenvalues"]) == d
        lo, hi = run["rank_bounds"]
        assert lo == run["functional_dimension"] / 2 and hi >= lo
        assert 0 <= run["effective_dimension"] <= d
        assert run["llc"]["preconditioned"] and run["llc"]["chains"] == 2
        (emulated,) = run["emulability"]
        # least squares on its fit split can always take dw = 0, so the fit residual is <= 1; the
        # rotation of the inputs is not emulable by these stacks (held-out residual measured
        # 0.96-1.69 over seeds 0-2, both models and data versions; 0 would mean emulable)
        assert 0.0 <= emulated["fit_residual"] <= 1.0 + 1e-9
        assert emulated["residual"] > 0.5
        direction = run["symmetry_directions"][0]
        # only the unconstrained stack has a known weight-space image of the generator
        assert direction["available"] == (run["model"] == "baseline")
        if direction["available"]:
            # a Rayleigh quotient of the Gauss-Newton matrix, placed in its stored spectrum
            mu = torch.tensor(run["gauss_newton"]["eigenvalues"], dtype=torch.float64)
            q = direction["curvature"]
            assert float(mu.min()) * (1 - 1e-9) <= q <= float(mu.max()) * (1 + 1e-9)
            assert direction["spectrum_quantile"] == pytest.approx(float((mu < q).double().mean()))
            assert direction["relative_to_random"] == pytest.approx(q / float(mu.mean()), rel=1e-6)
            # the same construction with the two shears on the same weights is the control
            controls = run["control_directions"]
            assert len(controls) == 2 and all(c["available"] for c in controls)
            mean_g = sum(c["curvature"] for c in controls) / 2
            mean_h = sum(c["hessian_curvature"] for c in controls) / 2
            assert direction["relative_to_control"] == pytest.approx(
                direction["curvature"] / mean_g, rel=1e-12
            )
            assert direction["hessian_relative_to_control"] == pytest.approx(
                direction["hessian_curvature"] / mean_h, rel=1e-12
            )
        else:
            assert "relative_to_control" not in direction
    for key in ("symmetric/baseline", "broken/baseline"):
        ratio = summary[key]["symmetry_vs_control"][0]
        assert math.isfinite(ratio["mean"]) and ratio["mean"] > 0
    assert summary["symmetric/equivariant"]["symmetry_vs_control"] == [None]
    assert "against shears on the same weights (Gauss-Newton, mean of the shears)" in report.reading
    assert "(Gauss-Newton, flattest shear)" in report.reading
    flattest = summary["symmetric/baseline"]["symmetry_vs_flattest_control"][0]
    assert flattest["mean"] >= summary["symmetric/baseline"]["symmetry_vs_control"][0]["mean"]
    # noise_std "auto" is the RMS residual of the unconstrained model on the symmetric data of
    # the first seed, so that model's NLL per sample is half its output pixels (21 x 21: charts
    # of radius 14 through two 5x5 convolutions)
    (reference,) = [
        r for r in report.runs if (r["seed"], r["data"], r["model"]) == (0, "symmetric", "baseline")
    ]
    assert reference["train_nll"] == pytest.approx(0.5 * 21**2, rel=1e-5)
    assert 0.05 < report.noise_std < 1.0  # measured 0.21-0.36 on seeds 0-2
    s = report.susceptibility["baseline"]
    assert s["predicted_drop"] == [0.25, 0.5]
    assert s["uncertainty_from"] == "chains"
    # the default step check: a second, independent estimate at half the step, with the burn-in
    # doubled, compared with the first
    for run in report.runs:
        main, check = run["llc"], run["llc"]["step_check"]
        assert check["step_size"] == pytest.approx(0.5 * main["step_size"])
        assert check["burn_in"] == 2 * main["burn_in"] and check["chains"] == main["chains"]
        f = 0.5
        assert check["extrapolated"] == pytest.approx((check["mean"] - f * main["mean"]) / (1 - f))
        assert check["difference"] == pytest.approx(main["mean"] - check["mean"])
    entry = summary["symmetric/baseline"]
    assert entry["step_checked"] == 1 and entry["fine_step"] == pytest.approx(0.025)
    # the symmetry direction's weight in the effective dimension at the run's gamma, and the
    # drop it allows
    gamma = report.localization
    weights = {}
    for run in report.runs:
        if run["model"] != "baseline":
            continue
        d = run["symmetry_directions"][0]
        nb = run["llc"]["n_beta"]
        expected = nb * d["curvature"] / (nb * d["curvature"] + gamma)
        assert d["effective_weight"] == pytest.approx(expected, rel=1e-12)
        assert all("effective_weight" in c for c in run["control_directions"])
        weights[run["data"]] = d["effective_weight"]
    assert s["attainable_drop"] == pytest.approx(weights["broken"] / 2)
    assert s["quadratic_drop"] == pytest.approx((weights["broken"] - weights["symmetric"]) / 2)
    assert report.susceptibility["equivariant"]["attainable_drop"] is None
    cs, cb = (
        next(
            r["symmetry_directions"][0]["curvature"]
            for r in report.runs
            if r["model"] == "baseline" and r["data"] == v
        )
        for v in ("symmetric", "broken")
    )
    assert s["best_gamma_drop"] == pytest.approx(
        (math.sqrt(cb) - math.sqrt(cs)) / (2 * (math.sqrt(cb) + math.sqrt(cs)))
    )
    assert "the symmetry can lower the LLC by at most" in report.reading
    assert "attainable at this γ (quadratic estimate)" in report.table
    assert "Step check:" in report.reading
    assert "LLC at the smaller step; extrapolated to step 0" in report.table


def test_report_files(heat_report):
    report, run_dir = heat_report
    paths = write_degeneracy_report(report, run_dir)
    assert [p.name for p in paths] == ["report.json", "report.md", "report.png"]
    doc = json.loads(paths[0].read_text())
    assert doc["task"] == "heat" and len(doc["runs"]) == 4
    md = paths[1].read_text()
    assert "Δ LLC" in md and "## Reading" in md and "free parameters" in md
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run_dir.glob("*.tmp*"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"broken": {}}, "broken must name"),
        ({"task": "jets"}, "needs a local task on fields"),
        ({"llc": {"stepsize": 0.1}}, "unknown llc option"),
        ({"samples": {"n": 0}}, "samples.n must be a positive int"),
        ({"samples": {"n": 40, "n_rank": 41}}, "n_rank cannot exceed samples.n"),
        ({"models": {"baseline": {"kernel_size": 4}}}, "kernel_size must be an odd"),
        ({"seeds": []}, "seeds must be a non-empty list"),
        ({"training": {"polish_steps": -1}}, "polish_steps must be an int >= 0"),
        ({"samples": {"n": 10_000, "n_heldout": 10, "n_emulate": 8}}, "raise data.n"),
        ({"models": {"baseline": {"hidden": [4, 4]}}}, "same depth and kernel size"),
        ({"llc": {"step_check": 1.0}}, r"llc.step_check must be a number in \[0, 1\)"),
        ({"llc": {"step_check": "half"}}, "llc.step_check must be a number"),
    ],
)
def test_bad_config_fails_early(tmp_path, change, message):
    config = {
        "task": "heat",
        "data": {"n": 8, "seed": 0},
        "broken": {"anisotropy": [1.5, 0.5]},
        "samples": {"n": 40, "n_heldout": 10, "n_rank": 8, "n_emulate": 8},
        "training": {"epochs": 1},
        **change,
    }
    with pytest.raises(ValueError, match=message):
        run_degeneracy(config, o2_group(), tmp_path)


def test_gaussian_nll_scale():
    pred, target = torch.zeros(2, 1, 3, 3), torch.ones(2, 1, 3, 3)
    assert float(gaussian_nll(0.5)(pred, target)) == pytest.approx(0.5 * 9 / 0.25)
    assert math.isclose(
        float(categorical_nll(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))),
        4 * math.log(4),
        rel_tol=1e-6,
    )


def test_cli_degeneracy_names_a_missing_group(tmp_path, capsys):
    from atlasd.cli import main

    assert main(["degeneracy", "--task", "heat", "--run_dir", str(tmp_path / "r")]) == 1
    assert "--group GROUP.json is required" in capsys.readouterr().err
    missing = str(tmp_path / "none.json")
    assert main(["degeneracy", "--group", missing, "--run_dir", str(tmp_path / "r")]) == 1
    assert "no group file" in capsys.readouterr().err
    assert main(["degeneracy", "--llc", "[1]"]) == 2


def test_gradient_bias_and_its_correction_away_from_the_minimum():
    """Linear regression moved off its least-squares solution: the loss is exactly quadratic,
    so the plain estimate must equal half the effective dimension plus gradient_bias, and the
    gradient-corrected estimate half the effective dimension (the value at the minimum)."""
    from atlasd.downstream.degeneracy import gradient_bias
    from atlasd.downstream.degeneracy.llc import estimate_llc
    from atlasd.downstream.degeneracy.ranks import effective_dimension

    n = 2000
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=gen) * torch.tensor([0.1, 0.3, 1.0, 2.0])
    y = x @ torch.randn(4, 1, generator=gen) + torch.randn(n, 1, generator=gen)
    model = nn.Linear(4, 1, bias=False)
    g = gauss_newton_matrix(model, x)
    soft = torch.linalg.eigh(g)[1][:, 0]
    with torch.no_grad():
        w = torch.linalg.lstsq(x.double(), y.double()).solution.T
        model.weight.copy_((w + soft).float())  # off the minimum along the softest direction
    nll = gaussian_nll(1.0)
    loss = nll(model(x), y)
    grad = torch.autograd.grad(loss, [model.weight])[0].reshape(-1).double()
    n_beta = n / math.log(n)
    gamma = 1.0
    half = 0.5 * effective_dimension(torch.linalg.eigvalsh(g), n_beta, gamma)
    bias = gradient_bias(grad, g, n_beta, gamma)
    assert bias < -1.0  # the offset matters at this gamma
    pre = torch.linalg.inv(n_beta * g + gamma * torch.eye(4, dtype=g.dtype))
    kw = {
        "n_beta": n_beta, "localization": gamma, "step_size": 0.05, "preconditioner": pre,
        "chains": 8, "burn_in": 200, "draws": 800, "batch_size": 500, "check": "off",
    }  # fmt: skip
    plain = estimate_llc(model, (x, y), nll, **kw)
    corrected = estimate_llc(model, (x, y), nll, gradient_correction=True, **kw)
    assert plain.mean == pytest.approx(half + bias, abs=0.15 + 0.08 * abs(half + bias))
    assert corrected.mean == pytest.approx(half, rel=0.08)
    assert corrected.settings["gradient_correction"]
    # at the least-squares solution there is nothing to correct
    assert gradient_bias(torch.zeros(4, dtype=torch.float64), g, n_beta, gamma) == 0.0


@pytest.mark.slow
def test_cli_degeneracy_end_to_end_with_wandb(tmp_path, capsys):
    """`atlasd degeneracy --config configs/degeneracy_heat.yaml` shrunk to seconds: report files,
    the printed table and reading, and an offline wandb run with the table and the plot."""
    from wandb_records import record_wandb_runs

    from atlasd.cli import main

    group_path = o2_group().save(tmp_path / "group.json")
    run_dir = tmp_path / "deg"
    argv = [
        "degeneracy", "--config", str(CONFIGS / "degeneracy_heat.yaml"), "--group", str(group_path),
        "--run_dir", str(run_dir), "--data", '{"n": 12, "seed": 0}',
        "--samples", '{"n": 120, "n_heldout": 40, "n_rank": 6, "n_emulate": 8}',
        "--training", '{"epochs": 1, "polish_steps": 2, "polish_rounds": 1}',
        "--llc", '{"chains": 2, "burn_in": 4, "draws": 8, "batch_size": 32, "step_check": 0.5}',
    ]  # fmt: skip
    with record_wandb_runs() as runs:
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Δ LLC" in out and "free parameters" in out
    assert {p.name for p in run_dir.glob("report.*")} == {"report.json", "report.md", "report.png"}
    report = json.loads((run_dir / "report.json").read_text())
    assert report["config"]["samples"]["n"] == 120
    (run,) = (run_dir / "wandb").glob("offline-run-*")
    assert len(list(run.glob("files/media/images/report/plot_*.png"))) == 1
    (logged,) = runs
    assert logged["dir"].resolve() == (run / "files").resolve()
    assert {"report/plot", "report/table"} <= logged["history"]
    assert logged["config"]["samples"]["n"] == 120
    summary, s = logged["summary"], report["susceptibility"]["baseline"]
    assert summary["susceptibility/baseline/delta_llc"] == pytest.approx(s["delta"])
    assert summary["susceptibility/baseline/delta_llc_step0"] == pytest.approx(s["delta_step0"])


def _badly_scaled_regression(seed: int, n: int = 120):
    """A tanh conv stack and a teacher of the same shape on inputs whose channels differ in
    scale by 1e3 each way: a loss whose curvature spans many decades."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0, 30.0, 0.03]).view(1, 3, 1, 1)
    x = torch.randn(n, 3, 7, 7, generator=gen) * scale

    def stack() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Conv2d(4, 1, 3))

    torch.manual_seed(seed)
    teacher, model = stack(), stack()
    with torch.no_grad():
        y = teacher(x / scale) + 0.05 * torch.randn(n, 1, 3, 3, generator=gen)
    return model, x, y


@pytest.mark.parametrize("seed", [0, 1])
def test_whitened_polish_beats_plain_lbfgs_on_an_ill_conditioned_loss(seed):
    """Same number of full-batch L-BFGS iterations: in Gauss-Newton-whitened coordinates the
    NLL ends several times lower than in raw coordinates, and never rises between rounds."""
    from atlasd.downstream.degeneracy.likelihood import flat_gradient, whitened_polish

    nll = gaussian_nll(1.0)
    model, x, y = _badly_scaled_regression(seed)
    record = whitened_polish(model, nll, x, y, "regression", steps=30, rounds=2, seed=seed)
    assert len(record["nll"]) == len(record["grad_norm"]) == 3
    assert all(b <= a for a, b in zip(record["nll"], record["nll"][1:], strict=False))
    assert record["nll"][-1] == pytest.approx(flat_gradient(model, nll, x, y)[0], rel=1e-5)

    plain, x, y = _badly_scaled_regression(seed)
    opt = torch.optim.LBFGS(
        list(plain.parameters()), max_iter=60, history_size=50, line_search_fn="strong_wolfe",
        tolerance_grad=1e-12, tolerance_change=1e-14,
    )  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = nll(plain(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    plain_nll = flat_gradient(plain, nll, x, y)[0]
    assert record["nll"][-1] < 0.5 * plain_nll, (record["nll"], plain_nll)


def test_control_generators_for_so2_are_the_two_shears():
    c = control_generators(so2())
    expected = torch.tensor([[[1.0, 0.0], [0.0, -1.0]], [[0.0, 1.0], [1.0, 0.0]]]) / math.sqrt(2)
    assert torch.allclose(c, expected.double(), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_control_generators_are_orthonormal_and_orthogonal_to_the_group(k, seed):
    """Whatever the discovered algebra, the controls are unit shears-minus-projection,
    orthogonal to each other and to every generator (Frobenius), and as many as the span of
    the generators leaves room for (a full gl(2) leaves none)."""
    gens = torch.randn(k, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    c = control_generators(gens).reshape(-1, 4)
    flat = gens.reshape(k, 4)
    assert torch.allclose(c @ c.T, torch.eye(c.shape[0], dtype=torch.float64), atol=1e-10)
    if k and c.shape[0]:
        assert float((c @ flat.T).abs().max()) < 1e-10
    # the shears' span minus what the generators cover: 2 for k = 0, at most 4 - k in general
    shears = torch.tensor([[1.0, 0, 0, -1], [0, 1, 1, 0]], dtype=torch.float64)
    q = torch.linalg.qr(flat.T).Q if k else torch.zeros(4, 0, dtype=torch.float64)
    left = shears - (shears @ q) @ q.T
    assert c.shape[0] == int(torch.linalg.matrix_rank(left, atol=1e-6))


def test_control_generators_drop_a_shear_the_group_contains():
    shear = torch.tensor([[[1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64)
    c = control_generators(shear)
    assert c.shape == (1, 2, 2)
    assert torch.allclose(c[0], torch.tensor([[0.0, 1.0], [1.0, 0.0]]).double() / math.sqrt(2))
    with pytest.raises(ValueError, match=r"generators must be \(k, 2, 2\)"):
        control_generators(torch.zeros(3, 3))


def test_direction_curvatures_are_the_exact_quadratic_forms():
    """Along a kernel-transformation tangent t: G-curvature t^T G t / |t|^2 with the given G,
    Hessian curvature t^T H t / |t|^2 from Hessian-vector products, equal to the full
    Hessian's quadratic form; the ratio to a random direction uses trace / d."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.SiLU(), nn.Conv2d(2, 1, 3)).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(30, 1, 7, 7, generator=gen, dtype=torch.float64)
    y = torch.randn(30, 1, 3, 3, generator=gen, dtype=torch.float64)
    nll = gaussian_nll(0.4)
    h = loss_hessian(model, nll, x, y)
    g = gauss_newton_matrix(NLLOutputs(model, "regression", 0.4), x)
    mu = torch.linalg.eigvalsh(g).flip(0)
    w_norm = float(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).norm())
    d = symmetry_direction(
        model,
        so2()[0],
        g,
        float(mu.sum()) / g.shape[0],
        mu,
        w_norm,
        lambda v: hessian_vector_product(model, nll, x, y, v),
    )
    t = conv_rotation_tangent(model, so2()[0])
    tt = float(t @ t)
    assert d["curvature"] == pytest.approx(float(t @ g @ t) / tt, rel=1e-10)
    assert d["hessian_curvature"] == pytest.approx(float(t @ h @ t) / tt, rel=1e-8)
    assert d["relative_to_random"] == pytest.approx(d["curvature"] * g.shape[0] / float(mu.sum()))
    assert d["tangent_norm_relative"] == pytest.approx(math.sqrt(tt) / w_norm)
    assert 0 <= d["spectrum_quantile"] <= 1


def test_chart_samples_take_the_class_count_from_the_datamodule():
    """The classifier's output size is the task's class count (10 digits + background), not
    the largest label that happens to be drawn; regression has none."""
    from atlasd.downstream.degeneracy import chart_samples

    x, y, xh, yh, n_classes, spec = chart_samples(
        "sphere_digits", {"n": 12, "n_test": 2, "seed": 0}, 20, 6, seed=0
    )
    assert spec.n_classes == n_classes and spec.ignore_class == 10
    assert n_classes == 11
    assert x.shape[0] == 20 and xh.shape[0] == 6 and y.dtype == torch.int64
    assert 0 <= int(y.min()) and int(torch.cat([y.flatten(), yh.flatten()]).max()) < n_classes
    *_, none, spec = chart_samples("heat", {"n": 4, "seed": 0}, 10, 4, seed=0)
    assert none is None and spec.target == "regression"


def _stored(report: dict) -> dict:
    """A report as written to and read back from report.json."""
    doc = report.to_json() if hasattr(report, "to_json") else report
    return json.loads(json.dumps(json_safe(doc)))


def test_step0_delta_pairs_the_extrapolated_llcs(heat_report):
    report, _ = heat_report
    by = {(r["data"], r["model"]): r["llc"]["step_check"] for r in report.runs}
    for name in ("baseline", "equivariant"):
        s = report.susceptibility[name]
        sym, brk = by[("symmetric", name)], by[("broken", name)]
        assert s["delta_step0"] == pytest.approx(sym["extrapolated"] - brk["extrapolated"])
        assert s["stderr_step0"] == pytest.approx(
            math.hypot(sym["extrapolated_stderr"], brk["extrapolated_stderr"])
        )
    assert "Δ LLC extrapolated to step 0" in report.table
    assert "baseline: extrapolated to step 0 (free of the sampler's" in report.reading


def test_merge_pairs_seeds_run_in_separate_processes(heat_report, heat_report_seed1):
    one, two = _stored(heat_report[0]), _stored(heat_report_seed1)
    merged = merge_degeneracy_reports([two, one])
    assert merged.seeds == [0, 1] and len(merged.runs) == 8
    assert [r["seed"] for r in merged.runs] == [0] * 4 + [1] * 4
    assert merged.localization == pytest.approx(one["localization"])
    for key, entry in merged.summary.items():
        values = [rep["summary"][key]["llc"]["mean"] for rep in (one, two)]
        assert entry["llc"]["values"] == pytest.approx(values)
        assert entry["llc"]["mean"] == pytest.approx(sum(values) / 2)
    for name, s in merged.susceptibility.items():
        per_seed = [rep["susceptibility"][name]["delta"] for rep in (one, two)]
        assert s["per_seed"] == pytest.approx(per_seed)
        assert s["uncertainty_from"] == "seeds"
        # two seeds: the sd of the differences over sqrt(2) is half their distance
        assert s["stderr"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2)
        step0 = [rep["susceptibility"][name]["delta_step0"] for rep in (one, two)]
        assert s["delta_step0"] == pytest.approx(sum(step0) / 2)
        assert s["stderr_step0"] == pytest.approx(abs(step0[0] - step0[1]) / 2)
    assert merge_degeneracy_reports([one, two]).summary == merged.summary


def _changed(report: dict, path: tuple[str, ...], value) -> dict:
    out = copy.deepcopy(report)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("localization",), 1e9, "sampled at localisation gamma 1e\\+09"),
        (("noise_std",), 123.0, "noise sigma 123.0"),
        (("task",), "sphere_digits", "on task 'sphere_digits'"),
        (
            ("config", "training", "epochs"),
            3,
            r"different config than report 0 \(in \['training'\]\)",
        ),
        (("group", "generators"), [[[0.0, 2.0], [-2.0, 0.0]]], "different group"),
        (("n_samples",), 7, "has n = 7"),
        (("seeds",), [0], "seed 0 is in report 0 and in report 1"),
    ],
)
def test_merge_refuses_reports_that_are_not_comparable(
    heat_report, heat_report_seed1, path, value, message
):
    one, two = _stored(heat_report[0]), _stored(heat_report_seed1)
    with pytest.raises(ValueError, match=message):
        merge_degeneracy_reports([one, _changed(two, path, value)])


def test_merge_accepts_auto_settings_that_resolved_alike(heat_report, heat_report_seed1):
    # seed 0 ran with localization/noise_std 'auto', seed 1 with the numbers they chose
    one, two = _stored(heat_report[0]), _stored(heat_report_seed1)
    assert one["config"]["llc"]["localization"] == "auto"
    assert two["config"]["llc"]["localization"] == pytest.approx(one["localization"])
    assert merge_degeneracy_reports([one, two]).seeds == [0, 1]


def test_merge_rejects_empty_and_foreign_input():
    with pytest.raises(ValueError, match="no reports to merge"):
        merge_degeneracy_reports([])
    with pytest.raises(ValueError, match=r"report 0 is not a degeneracy report \(missing"):
        merge_degeneracy_reports([{"task": "heat", "runs": []}])


def test_cli_degeneracy_merge(heat_report, heat_report_seed1, tmp_path, capsys):
    from atlasd.cli import main

    dirs = [tmp_path / "a", tmp_path / "b"]
    write_degeneracy_report(heat_report[0], dirs[0])
    write_degeneracy_report(heat_report_seed1, dirs[1])
    out_dir = tmp_path / "merged"
    assert main(["degeneracy-merge", str(dirs[0]), str(dirs[1] / "report.json"),
                 "--run_dir", str(out_dir)]) == 0  # fmt: skip
    assert "merged report over seeds [0, 1]" in capsys.readouterr().out
    doc = json.loads((out_dir / "report.json").read_text())
    assert doc["seeds"] == [0, 1] and len(doc["runs"]) == 8
    assert "Seeds: 0, 1." in (out_dir / "report.md").read_text()
    assert main(["degeneracy-merge", str(dirs[0]), str(tmp_path / "nowhere"),
                 "--run_dir", str(out_dir)]) == 1  # fmt: skip
    assert "no degeneracy report at" in capsys.readouterr().err
    assert main(["degeneracy-merge", str(dirs[0]), str(dirs[0])]) == 1
    assert "--run_dir DIR is required" in capsys.readouterr().err


@pytest.mark.slow
def test_merged_seeds_equal_the_seeds_run_together(heat_report, heat_report_seed1, tmp_path):
    """Seeds run in separate processes and merged give the report of one run over both seeds:
    each seed's training, patches and chains depend on the seed alone."""
    first, _ = heat_report
    config = _small_heat_config()
    config["llc"].update(localization=first.localization, noise_std=first.noise_std)
    config["seeds"] = [0, 1]
    together = run_degeneracy(config, o2_group(), tmp_path)
    merged = merge_degeneracy_reports([_stored(first), _stored(heat_report_seed1)])
    for key, entry in together.summary.items():
        assert merged.summary[key]["llc"]["values"] == pytest.approx(
            entry["llc"]["values"], rel=1e-6
        )
        assert merged.summary[key]["train_nll"]["values"] == pytest.approx(
            entry["train_nll"]["values"], rel=1e-6
        )
    for name, s in together.susceptibility.items():
        assert merged.susceptibility[name]["delta"] == pytest.approx(s["delta"], rel=1e-6)
        assert merged.susceptibility[name]["delta_step0"] == pytest.approx(
            s["delta_step0"], rel=1e-6
        )


def test_reading_flags_a_localisation_below_the_negative_curvature(heat_report):
    report = _stored(heat_report[0])
    worst = min(r["hessian_min_eigenvalue"] for r in report["runs"])
    n_beta = report["runs"][0]["llc"]["n_beta"]
    assert worst < 0 and report["localization"] >= 2 * n_beta * -worst  # auto's choice
    assert "improper" not in report["reading"]
    gamma = 0.5 * n_beta * -worst
    for run in report["runs"]:
        run["llc"]["localization"] = gamma
    low = merge_degeneracy_reports([{**report, "localization": gamma}])
    assert low.localization == gamma
    assert f"below n_beta |lambda_min| = {n_beta * -worst:.3g}" in low.reading
    assert "the localised posterior is improper" in low.reading


def test_reading_counts_step_checks_that_failed_their_health_check(heat_report):
    report = _stored(heat_report[0])
    assert "The step check's own estimates failed" not in report["reading"]
    run = next(r for r in report["runs"] if r["data"] == "broken" and r["model"] == "baseline")
    run["llc"]["step_check"]["healthy"] = False
    merged = merge_degeneracy_reports([report])
    assert merged.summary["broken/baseline"]["step_check_unhealthy"] == 1
    assert merged.summary["symmetric/baseline"]["step_check_unhealthy"] == 0
    assert "failed the health check in broken/baseline (1 run(s))" in merged.reading
    # the step check's sentence counts the estimates flagged step-dependent: none, then two
    for run in report["runs"]:
        run["llc"]["step_check"]["dependent"] = False
    quiet = merge_degeneracy_reports([report])
    assert sum(e["step_dependent"] for e in quiet.summary.values()) == 0
    assert "Step check: no LLC estimate moved by more than 2 stderr" in quiet.reading
    for run in report["runs"][:2]:
        run["llc"]["step_check"]["dependent"] = True
    moved = merge_degeneracy_reports([report])
    assert sum(e["step_dependent"] for e in moved.summary.values()) == 2
    assert "Step check: 2 of 4 LLC estimates moved by more than 2 stderr" in moved.reading
