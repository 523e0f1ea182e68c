"""Devices: every Trainer the project builds picks its accelerator ("auto"), and every tensor a
stage uses during a fit is registered with the LightningModule (or comes through the DataLoader),
so that the Trainer moves it.

Without a GPU, two proxies catch a tensor captured outside the module: a walk over everything
reachable from the fitted module, which must find registered parameters and buffers only, and
fits at ``precision="64-true"``, which converts registered state to float64 and leaves a captured
float32 predictor to fail on float64 batches. The CUDA tests run where a GPU is visible.
"""

from __future__ import annotations

import functools
import types

import lightning
import pytest
import torch
import torch.nn.functional as F
from known_groups import J

import atlasd
from atlasd.atlas import Atlas
from atlasd.conventions import smooth_fields
from atlasd.datasets.jets import jets_ground_truth
from atlasd.discovery.basis import LieBasis
from atlasd.discovery.learner import BasisModule
from atlasd.discovery.training import PredictorModule
from atlasd.downstream.experiments.report import DownstreamReport

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SO2 = J[None]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

LOCAL = dict(
    batch_size=8,
    hidden=4,
    predictor_epochs=2,
    basis_epochs=2,
    init_candidates=2,
    coset_candidates=2,
    coset_steps=3,
)
GLOBAL = dict(
    batch_size=32,
    predictor_epochs=2,
    basis_epochs=2,
    init_candidates=2,
    coset_candidates=2,
    coset_steps=3,
)
DISTRIBUTION = dict(batch_size=32, basis_epochs=2, init_candidates=2)


class Record(lightning.Callback):
    """Remember every module fitted, with the device and dtypes of its state at fit start."""

    def __init__(self) -> None:
        self.modules: list[lightning.LightningModule] = []
        self.devices: list[str] = []
        self.dtypes: list[set[torch.dtype]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.modules.append(pl_module)
        self.devices.append(pl_module.device.type)
        state = [*pl_module.parameters(), *pl_module.buffers()]
        self.dtypes.append({t.dtype for t in state if t.is_floating_point()})

    def of(self, kind: type) -> list[lightning.LightningModule]:
        return [m for m in self.modules if isinstance(m, kind)]


def _blur(x: torch.Tensor) -> torch.Tensor:
    ax = torch.arange(-3, 4.0)
    k = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / 4)
    return F.conv2d(x, (k / k.sum())[None, None], padding=3)


@pytest.fixture(scope="module")
def fields():
    x = smooth_fields(32, 32, cycles=3.0, seed=0)
    atlas = Atlas.grid(shape=(32, 32), centers=[(10, 10), (16, 20), (21, 11)], radius=7)
    return x, _blur(x) ** 2, atlas


@pytest.fixture(scope="module")
def vectors():
    # 2-D: the coset search's canonical forms cost seconds in 3-D
    v = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    return v, (v**2).sum(1, keepdim=True)  # rotation invariant


@pytest.fixture(scope="module")
def ring():
    gen = torch.Generator().manual_seed(1)
    r = 1.0 + 0.1 * torch.randn(256, generator=gen)
    theta = 6.283185307179586 * torch.rand(256, generator=gen)
    return torch.stack([r * theta.cos(), r * theta.sin()], dim=1)


class FixedConv(torch.nn.Module):
    """A fixed nn.Module predictor (isotropic blur, squared), float32: (B, K, 1, h, w) ->
    (B, K, 1, h - 4, w - 4)."""

    def __init__(self) -> None:
        super().__init__()
        ax = torch.arange(-2, 3.0)
        k = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / 3)
        self.register_buffer("kernel", (k / k.sum())[None, None])

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        b, k, c, h, w = p.shape
        out = F.conv2d(p.reshape(b * k * c, 1, h, w), self.kernel) ** 2
        return out.reshape(b, k, c, h - 4, w - 4)


# --- proxy 1: nothing reachable from a fitted module is an unregistered tensor ---------------


def _reachable_tensors(root: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Tensors reachable from the plain attributes of ``root`` and its registered submodules:
    through containers, functions' closures and defaults, bound methods, partials and modules
    that are not registered (all of whose tensors count). Lightning's own private attributes
    (the trainer, loggers) are skipped, the module's own private ones are not."""
    lightning_private = set(vars(lightning.LightningModule())) | {"_trainer", "_fabric"}
    found: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def visit(obj, path: str) -> None:
        if id(obj) in seen or isinstance(obj, str | bytes | int | float | bool | type(None)):
            return
        seen.add(id(obj))
        if torch.is_tensor(obj):
            found[path] = obj
        elif isinstance(obj, torch.nn.Module):
            for name, t in [*obj.named_parameters(), *obj.named_buffers()]:
                visit(t, f"{path}.{name}")
            walk(obj, path)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                visit(v, f"{path}[{k!r}]")
        elif isinstance(obj, list | tuple | set | frozenset):
            for i, v in enumerate(obj):
                visit(v, f"{path}[{i}]")
        elif isinstance(obj, types.FunctionType):
            for i, cell in enumerate(obj.__closure__ or ()):
                visit(cell.cell_contents, f"{path}.<closure {obj.__code__.co_freevars[i]}>")
            visit(obj.__defaults__, f"{path}.<defaults>")
            visit(obj.__kwdefaults__, f"{path}.<kwdefaults>")
        elif isinstance(obj, types.MethodType):
            visit(obj.__self__, f"{path}.<self>")
            visit(obj.__func__, f"{path}.<func>")
        elif isinstance(obj, functools.partial):
            visit((obj.func, obj.args, obj.keywords), f"{path}.<partial>")

    def walk(module: torch.nn.Module, path: str) -> None:
        for name, value in vars(module).items():
            if name in ("_parameters", "_buffers", "_modules") or name in lightning_private:
                continue
            visit(value, f"{path}.{name}")

    for name, module in root.named_modules():
        walk(module, name or "<module>")
    return found


def _unregistered(module: torch.nn.Module) -> list[str]:
    registered = {id(t) for t in [*module.parameters(), *module.buffers()]}
    return sorted(p for p, t in _reachable_tensors(module).items() if id(t) not in registered)


def test_reachable_tensor_walk_finds_captured_tensors():
    """The walk itself: a tensor in a closure or a plain attribute is found, a buffer is not."""
    from atlasd.discovery.basis import LocalObjective

    mask = torch.ones(3)

    def objective(batch, g, r_in, r_out):
        return (batch[0] * mask).sum()

    module = BasisModule(LieBasis(1, 2), objective, lambda b: (1,))
    module.extra = {"weights": [torch.zeros(2)]}
    assert _unregistered(module) == [
        "<module>.extra['weights'][0]",
        "<module>.objective.<closure mask>",
    ]
    module = BasisModule(
        LieBasis(1, 2),
        LocalObjective(FixedConv(), 1),
        lambda b: (1,),
        reference=SO2,
    )
    assert _unregistered(module) == []


def _basis_modules(run) -> list[BasisModule]:
    record = Record()
    run({"callbacks": [record]})
    modules = record.of(BasisModule)
    assert len(modules) == 1
    return modules


@pytest.mark.parametrize(
    "case", ["local_trained", "local_fixed_module", "global_trained", "distribution_fields"]
)
def test_stage_2_module_holds_every_tensor_it_uses(case, fields, vectors):
    x, y, atlas = fields
    v, t = vectors
    runs = {
        "local_trained": lambda tk: atlasd.discover_local(
            x, y, atlas=atlas, reference_algebra=SO2, trainer_kwargs=tk, **LOCAL
        ),
        "local_fixed_module": lambda tk: atlasd.discover_local(
            x, atlas=atlas, predictor=FixedConv(), trainer_kwargs=tk, **LOCAL
        ),
        "global_trained": lambda tk: atlasd.discover_global(
            v, t, trainer_kwargs=tk, **{**GLOBAL, "cosets": False}
        ),
        "distribution_fields": lambda tk: atlasd.discover_distribution(
            x, atlas=atlas, trainer_kwargs=tk, blur=0.1, **{**DISTRIBUTION, "batch_size": 8}
        ),
    }
    (module,) = _basis_modules(runs[case])
    assert _unregistered(module) == []
    # the frozen objective travels with the module but stays out of its checkpoints
    assert isinstance(module.objective, torch.nn.Module)
    assert not any(k.startswith("objective.") for k in module.state_dict())
    assert set(module.state_dict()) == {f"basis.{k}" for k in module.basis.state_dict()}


def test_stage_1_module_holds_every_tensor_it_uses(fields):
    x, y, atlas = fields
    record = Record()
    atlasd.discover_local(
        x, (y > 0.05).long()[:, 0], atlas=atlas, class_weights=[1.0, 2.0], cosets=False,
        trainer_kwargs={"callbacks": [record]}, **LOCAL,
    )  # fmt: skip
    (module,) = record.of(PredictorModule)
    assert _unregistered(module) == []


# --- proxy 2: a fit at precision="64-true" converts registered state only --------------------


def _close(a: atlasd.DiscoveredGroup, b: atlasd.DiscoveredGroup, tol: float) -> None:
    """Same group up to ``tol``: generators (standard form) and coset representatives."""
    assert a.algebra.dtype == b.algebra.dtype == torch.float64
    assert a.algebra.device.type == b.algebra.device.type == "cpu"
    assert float((a.algebra - b.algebra).abs().max()) < tol
    assert a.similarity(b) > 1 - tol
    if a.cosets is not None:
        assert a.cosets.device.type == "cpu" and a.cosets.dtype == torch.float64
        assert a.n_components == b.n_components
        assert float((a.cosets - b.cosets).abs().max()) < tol


# float32 and float64 fits from the same start and the same sampled coefficients differ by
# accumulated rounding only: here by at most 1.4e-5 in the (unit-norm) generators and 1.9e-4 in
# the coset representatives (trained predictors; about 1e-7 with fixed ones); 1e-3 is far
# below any difference between two groups
F64_TOL = 1e-3


def test_precision_64_true_local_trained(fields):
    x, y, atlas = fields
    record = Record()
    f32 = atlasd.discover_local(x, y, atlas=atlas, seed=1, **LOCAL)
    f64 = atlasd.discover_local(
        x, y, atlas=atlas, seed=1,
        trainer_kwargs={"precision": "64-true", "callbacks": [record]}, **LOCAL,
    )  # fmt: skip
    assert record.dtypes == [{torch.float64}, {torch.float64}]  # stage 1, stage 2
    _close(f64, f32, F64_TOL)


def test_precision_64_true_stage_2_with_a_fixed_module_predictor(fields):
    """Stage 2 alone: the fixed float32 predictor is converted with the module; captured in a
    closure it would meet float64 batches (conv2d: input and weight dtypes differ)."""
    x, _, atlas = fields
    f32 = atlasd.discover_local(x, atlas=atlas, predictor=FixedConv(), seed=2, **LOCAL)
    predictor = FixedConv()
    f64 = atlasd.discover_local(
        x, atlas=atlas, predictor=predictor, seed=2,
        trainer_kwargs={"precision": "64-true"}, **LOCAL,
    )  # fmt: skip
    _close(f64, f32, F64_TOL)
    # Lightning converts what it is given to fit, the caller's predictor included
    assert predictor.kernel.dtype == torch.float64


def test_precision_64_true_global_and_distribution(vectors, ring):
    v, t = vectors
    tk = {"precision": "64-true"}
    _close(
        atlasd.discover_global(v, t, seed=0, trainer_kwargs=tk, **GLOBAL),
        atlasd.discover_global(v, t, seed=0, **GLOBAL),
        F64_TOL,
    )
    kw = dict(seed=0, blur=0.1, cosets=True, coset_candidates=2, coset_steps=2, **DISTRIBUTION)
    _close(
        atlasd.discover_distribution(ring, trainer_kwargs=tk, **kw),
        atlasd.discover_distribution(ring, **kw),
        F64_TOL,
    )


# --- the default accelerator --------------------------------------------------------------


@pytest.fixture
def recording_trainer(monkeypatch) -> list[dict]:
    """The keyword arguments of every lightning.Trainer built during the test."""
    built: list[dict] = []

    class Recording(lightning.Trainer):
        def __init__(self, *args, **kwargs) -> None:
            built.append(dict(kwargs))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(lightning, "Trainer", Recording)
    return built


def _expected_accelerator() -> type:
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

    return CUDAAccelerator if torch.cuda.is_available() else CPUAccelerator


def test_every_trainer_defaults_to_auto(recording_trainer, fields, tmp_path):
    from atlasd.downstream.models import quiet_trainer

    x, y, atlas = fields
    record = Record()
    atlasd.discover_local(
        x, y, atlas=atlas, cosets=False, trainer_kwargs={"callbacks": [record]}, **LOCAL
    )
    trainer = quiet_trainer(1, tmp_path)
    assert [kw["accelerator"] for kw in recording_trainer] == ["auto"] * 3
    assert all(kw["devices"] == 1 for kw in recording_trainer)
    assert isinstance(trainer.accelerator, _expected_accelerator())
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert record.devices == [expected, expected]  # stage 1, stage 2

    # the caller's options win, callbacks are added
    recording_trainer.clear()
    trainer = quiet_trainer(1, tmp_path, trainer_kwargs={"accelerator": "cpu", "max_epochs": 3})
    assert recording_trainer[0]["accelerator"] == "cpu" and trainer.max_epochs == 3


# --- downstream and degeneracy ------------------------------------------------------------


def _jets_config() -> dict:
    return {
        "task": "jets",
        "data": {"n": 200, "n_constituents": 4, "test_fraction": 0.2},
        "training": {"epochs": 1, "batch_size": 64},
        "models": {
            "baseline": {"phi_hidden": [12], "rho_hidden": [8]},
            "equivariant": {"phi_hidden": ["4*S + 2*V"], "rho_hidden": ["4*S + 2*V"]},
        },
    }


def _metrics(report: DownstreamReport) -> dict[str, list[float]]:
    return {
        f"{name}/{metric}": summary["values"]
        for name, model in report.models.items()
        for metric, summary in model["metrics"].items()
    }


def test_run_downstream_passes_trainer_kwargs(tmp_path):
    from atlasd.downstream.experiments import run_downstream

    group = atlasd.DiscoveredGroup(**jets_ground_truth())
    plain = run_downstream(_jets_config(), group, tmp_path / "a", [0])
    record = Record()
    f64 = run_downstream(
        _jets_config(), group, tmp_path / "b", [0],
        trainer_kwargs={"precision": "64-true", "callbacks": [record]},
    )  # fmt: skip
    # every fit got the options; the equivariant model's basis buffers were converted too
    assert len(record.modules) == 2 and record.dtypes == [{torch.float64}] * 2
    # one epoch of Adam in float64 instead of float32: the same predictions up to rounding
    for key, values in _metrics(plain).items():
        assert _metrics(f64)[key] == pytest.approx(values, abs=1e-4), key


def test_degeneracy_fit_passes_trainer_kwargs_and_returns_the_model_as_built(tmp_path):
    from atlasd.downstream.degeneracy.config import DegeneracyTrainingConfig
    from atlasd.downstream.degeneracy.likelihood import gaussian_nll
    from atlasd.downstream.degeneracy.runner import fit_model

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 9, 9, generator=gen)
    y = x[:, :, 2:7, 2:7] * 0.5
    model = torch.nn.Conv2d(1, 1, 5)
    record = Record()
    opts = DegeneracyTrainingConfig(
        batch_size=16, epochs=2, lr=0.01, polish_steps=2, polish_rounds=1
    )
    fit_model(
        model, gaussian_nll(1.0), x, y, "regression", opts, 0, tmp_path,
        trainer_kwargs={"precision": "64-true", "callbacks": [record]},
    )  # fmt: skip
    assert record.dtypes == [{torch.float64}]
    # back as built for the polish, LLC and Hessians: CPU float32
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cpu", torch.float32)}


# --- CUDA ---------------------------------------------------------------------------------

GPU = {"accelerator": "gpu", "devices": 1}


def _on_gpu(run):
    record = Record()
    group = run({**GPU, "callbacks": [record]})
    assert record.devices and set(record.devices) == {"cuda"}
    return group


# Cases that converge within a few seconds (measured on the CPU: similarity to the truth 0.999
# local, 0.99999 squeeze, 0.993 distribution). The GPU draws its group elements from a CUDA
# generator, so it follows another sample path to the same group: compared by similarity.


@CUDA
def test_cuda_discover_local_matches_cpu():
    x = smooth_fields(128, 64, cycles=4.0, seed=0)
    atlas = Atlas.grid(
        shape=(64, 64), centers=[(20, 20), (20, 44), (44, 20), (44, 44), (32, 32)], radius=10
    )
    y = _blur(x) ** 2
    kw = dict(
        atlas=atlas, seed=0, predictor_epochs=6, predictor_lr=3e-3, basis_epochs=8,
        basis_lr=0.03, coset_candidates=4, coset_steps=10,
    )  # fmt: skip
    cpu = atlasd.discover_local(x, y, **kw)
    gpu = _on_gpu(lambda tk: atlasd.discover_local(x, y, trainer_kwargs=tk, **kw))
    assert gpu.algebra.device.type == "cpu" and gpu.algebra.dtype == torch.float64
    assert gpu.cosets.device.type == "cpu" and gpu.cosets.dtype == torch.float64
    assert cpu.similarity(SO2) > 0.95 and gpu.similarity(cpu) > 0.95


@CUDA
def test_cuda_discover_global_matches_cpu(vectors):
    x = torch.randn(1024, 2, generator=torch.Generator().manual_seed(1))
    kw = dict(
        predictor=lambda v: (v[:, 0] * v[:, 1])[:, None], seed=0, batch_size=64,
        basis_epochs=4, basis_lr=0.03, coset_steps=40,
    )  # fmt: skip
    cpu = atlasd.discover_global(x, **kw)
    gpu = _on_gpu(lambda tk: atlasd.discover_global(x, trainer_kwargs=tk, **kw))
    assert gpu.similarity(cpu) > 0.99
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    assert cpu.contains(swap) and gpu.contains(swap)
    # stage 1 on the GPU too: a trained MLP
    v, t = vectors
    group = _on_gpu(lambda tk: atlasd.discover_global(v, t, trainer_kwargs=tk, **GLOBAL))
    assert group.algebra.device.type == "cpu" and torch.isfinite(group.algebra).all()


@CUDA
def test_cuda_discover_distribution_matches_cpu():
    gen = torch.Generator().manual_seed(1)
    r = 1.0 + 0.1 * torch.randn(2048, generator=gen)
    theta = 6.283185307179586 * torch.rand(2048, generator=gen)
    ring = torch.stack([r * theta.cos(), r * theta.sin()], dim=1)
    kw = dict(
        seed=0, blur=0.1, batch_size=256, basis_epochs=6, basis_lr=0.03, init_candidates=4,
        cosets=True, coset_candidates=2, coset_steps=2,
    )  # fmt: skip
    cpu = atlasd.discover_distribution(ring, **kw)
    gpu = _on_gpu(lambda tk: atlasd.discover_distribution(ring, trainer_kwargs=tk, **kw))
    assert cpu.similarity(SO2) > 0.95 and gpu.similarity(cpu) > 0.95
    assert gpu.cosets.device.type == "cpu" and gpu.cosets.dtype == torch.float64


@CUDA
def test_cuda_run_downstream(tmp_path):
    from atlasd.downstream.experiments import run_downstream

    group = atlasd.DiscoveredGroup(**jets_ground_truth())
    record = Record()
    report = run_downstream(
        _jets_config(), group, tmp_path, [0], trainer_kwargs={**GPU, "callbacks": [record]}
    )
    assert set(record.devices) == {"cuda"} and len(record.devices) == 2
    cpu = run_downstream(_jets_config(), group, tmp_path / "cpu", [0])
    for key, values in _metrics(cpu).items():
        assert _metrics(report)[key] == pytest.approx(values, abs=0.1), key
