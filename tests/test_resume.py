"""Resume after interruption: a crashed discovery run, re-run with the same run folder, continues
from the last checkpoint of the interrupted stage, never redoes a finished stage, and ends with
exactly the group of an uninterrupted run with the same seed."""

from __future__ import annotations

import json

import pytest
import torch
from end_to_end import discovery_flags
from lightning.pytorch.callbacks import Callback

import atlasd
from atlasd.cli import main
from atlasd.datasets.heat import HeatDataModule
from atlasd.discovery.learner import BasisModule
from atlasd.discovery.training import PredictorModule

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class SimulatedCrash(RuntimeError):
    pass


class CrashAt(Callback):
    """Raise after ``step`` optimiser steps of the stage whose module type is ``module_type``."""

    def __init__(self, module_type: type, step: int) -> None:
        self.module_type = module_type
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if isinstance(pl_module, self.module_type) and trainer.global_step >= self.step:
            raise SimulatedCrash(f"simulated crash at step {trainer.global_step}")


TRAINING = dict(
    batch_size=8,
    predictor_epochs=3,
    predictor_patience=5,
    basis_epochs=3,
    init_candidates=4,
    coset_candidates=3,
    coset_steps=3,
)


@pytest.fixture(scope="module")
def heat():
    dm = HeatDataModule(n=40, seed=0)
    dm.setup()
    return dm


def _discover(dm, run_dir, **extra):
    return atlasd.discover_local(
        dm.x, dm.y, atlas=dm.atlas, seed=3, run_dir=str(run_dir), **TRAINING, **extra
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module_type", "step", "stage", "kept"),
    [
        (PredictorModule, 7, "predictors", []),  # 5 steps per epoch: crash in epoch 2
        (BasisModule, 6, "basis", ["predictors"]),  # 4 steps per epoch: crash in epoch 2
    ],
)
def test_interrupted_run_resumes_to_the_uninterrupted_result(
    heat, tmp_path, module_type, step, stage, kept
):
    reference = _discover(heat, tmp_path / "reference")

    run_dir = tmp_path / "crashed"
    crash = CrashAt(module_type, step)
    with pytest.raises(SimulatedCrash):
        _discover(heat, run_dir, trainer_kwargs={"callbacks": [crash]})
    stages = run_dir / "stages"
    assert sorted(p.stem for p in stages.glob("*.json") if p.stem != "run") == kept
    last = torch.load(stages / stage / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0  # the crash came in epoch 1 (0-based): epoch 0 is saved

    resumed = _discover(heat, run_dir)
    assert resumed.metadata["resumed_stages"] == kept
    assert torch.allclose(resumed.algebra, reference.algebra, atol=1e-6)
    assert resumed.n_components == reference.n_components
    assert torch.allclose(resumed.cosets, reference.cosets, atol=1e-6)
    history = resumed.metadata["basis"]["equivariance_loss_per_epoch"]
    assert history == pytest.approx(reference.metadata["basis"]["equivariance_loss_per_epoch"])
    assert resumed.metadata["predictor"]["val_loss"] == pytest.approx(
        reference.metadata["predictor"]["val_loss"]
    )


class CountBatches(Callback):
    """Count the training batches of every Lightning stage it is given to."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1


def test_finished_run_is_not_redone_and_other_settings_are_refused(heat, tmp_path, monkeypatch):
    from atlasd.discovery import driver

    searches = []
    real_search = driver.search_cosets

    def counted_search(*args, **kwargs):
        searches.append(1)
        return real_search(*args, **kwargs)

    monkeypatch.setattr(driver, "search_cosets", counted_search)
    trained = CountBatches()
    first = _discover(heat, tmp_path, trainer_kwargs={"callbacks": [trained]})
    assert trained.batches > 0 and len(searches) == 1
    idle = CountBatches()
    again = _discover(heat, tmp_path, trainer_kwargs={"callbacks": [idle]})
    # nothing is trained or searched again (counted, not timed: callbacks are cosmetic settings)
    assert idle.batches == 0 and len(searches) == 1
    assert again.metadata["resumed_stages"] == ["predictors", "basis", "cosets"]
    assert torch.equal(again.algebra, first.algebra)
    assert torch.equal(again.cosets, first.cosets)

    with pytest.raises(ValueError, match=r"other settings \(differing: settings\).*--fresh"):
        atlasd.discover_local(
            heat.x, heat.y, atlas=heat.atlas, seed=3, run_dir=str(tmp_path),
            **{**TRAINING, "basis_epochs": 4},
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"differing: data, seed"):
        atlasd.discover_local(
            heat.x[:-1], heat.y[:-1], atlas=heat.atlas, seed=4, run_dir=str(tmp_path), **TRAINING
        )
    fresh = _discover(heat, tmp_path, resume=False)
    assert fresh.metadata["resumed_stages"] == []
    assert torch.allclose(fresh.algebra, first.algebra, atol=1e-6)


def test_cli_resume_flags_and_checkpoint_errors(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = [
        "discover", "--task", "heat", "--data", json.dumps({"n": 40}), "--run_dir", str(run_dir),
        "--logger", "none", "--progress", "lines",
        *discovery_flags(TRAINING),
    ]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    # CI-friendly progress: one line per epoch and stage, no carriage returns
    assert "\r" not in err
    assert "[atlasd] predictors epoch 1/3" in err and "[atlasd] basis epoch 3/3" in err
    assert "[atlasd] stage 3/3 cosets" in err

    assert main(argv) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_stages"] == ["predictors", "basis", "cosets"]
    assert "finished earlier" in capsys.readouterr().err

    # a checkpoint of another stage or another architecture: one line, exit 1, results intact
    before = (run_dir / "group.json").read_bytes()
    ckpt = torch.load(run_dir / "stages" / "basis" / "last.ckpt", weights_only=True)
    assert main([*argv, "--fresh", "--ckpt_path", str(tmp_path / "missing.ckpt")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    assert (run_dir / "stages" / "basis.json").is_file()  # the failed call touched nothing
    other = tmp_path / "other.ckpt"
    ckpt["atlasd_stage"] = "predictors"  # claims to be a predictor, holds a LieBasis
    torch.save(ckpt, other)
    assert main([*argv, "--fresh", "--ckpt_path", str(other)]) == 1
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("atlasd: error")]
    assert len(errors) == 1 and "does not fit this model (another architecture?)" in errors[0]
    assert (run_dir / "group.json").read_bytes() == before


def test_resume_from_the_final_checkpoint_finds_the_best_weights(tmp_path):
    """A run killed after its last epoch but before its stage record resumes from last.ckpt:
    nothing is trained again and the best checkpoint it restores still exists (the best
    checkpoint is taken before the last one, so the saved state never names a deleted file)."""
    from atlasd.discovery.predictors import ChartCNN
    from atlasd.discovery.training import train_predictors

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 1, 9, 9, generator=gen)
    y = 2 * x[..., 2:7, 2:7]

    def model():
        with torch.random.fork_rng():
            torch.manual_seed(1)
            return ChartCNN.for_radii(3, 1, 1, 4, 2, hidden=4)

    kw = dict(max_epochs=3, patience=10, batch_size=8, run_dir=tmp_path)
    first = train_predictors(model(), x, y, **kw)
    again = train_predictors(model(), x, y, ckpt_path=tmp_path / "last.ckpt", **kw)
    assert again["best_checkpoint"] == first["best_checkpoint"]
    assert again["val_loss"] == first["val_loss"]
    assert [r["epoch"] for r in again["history"]] == [0, 1, 2]
