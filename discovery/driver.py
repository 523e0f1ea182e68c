"""The one discovery driver: the stage sequence shared by local, global and distribution
discovery.

:func:`run_discovery` runs (1) the predictors, trained on ``(x, y)`` or given as a fixed
callable, frozen in eval mode; (2) ``F(x)`` computed once and reused; (3) a LieBasis fitted so
that ``F(g . x) ~ g . F(x)``; (4) the coset search; (5) a DiscoveredGroup with the losses,
timings and settings in its metadata. What differs between the problem kinds (the inputs, the
predictor, the objective, the basis, the coset score) is a :class:`~atlasd.discovery.problems.
Problem`; every stage's resumable state is kept in the run folder (:mod:`.resume`).

Devices: stages 1 and 2 run on the Trainer's accelerator (``trainer_kwargs``, "auto" by default).
What runs outside Lightning (the probe and F(x) before stage 2, the coset search after it) runs
where the predictor / objective is, which is the CPU after a Lightning fit; the group is built
from CPU float64 tensors.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

import atlasd
from atlasd import lie
from atlasd.discovery.basis import LieBasis
from atlasd.discovery.config import DiscoveryConfig
from atlasd.discovery.cosets import Score, search_cosets
from atlasd.discovery.learner import BasisModule, fit_basis, quiet_lightning, screen_initializations
from atlasd.discovery.problems import Problem
from atlasd.discovery.progress import progress_mode, progress_trainer_kwargs, stage_line
from atlasd.discovery.resume import StageStore, checkpoint_stage, tensor_digest
from atlasd.group import DiscoveredGroup

__all__ = ["run_discovery"]

# run settings that shape no result: left out of the fingerprint's settings
_RUNTIME = ("trainer_kwargs", "run_dir", "progress", "resume", "ckpt_path")


def run_discovery(
    problem: Problem, cfg: DiscoveryConfig, *, n_generators: int, cosets: bool, seed: int
) -> DiscoveredGroup:
    """Run the stage sequence on a checked problem.

    Args:
        problem: the inputs and what is particular to their kind (already validated).
        cfg: the settings (``DiscoveryConfig.from_kwargs`` of the entry point's keywords).
        n_generators: k >= 1 generators.
        cosets: run the coset search (stage 3).
        seed: seeds everything (same seed -> same group).

    Returns:
        DiscoveredGroup with a (k, d, d) algebra; metadata holds losses, timings and settings.
    """
    metadata = _base_metadata(problem, cfg, seed, n_generators)
    store = _make_store(problem, cfg, seed, n_generators)
    timings = metadata["wall_time_s"]
    problem.prepare(timings)
    predictor = problem.predictor
    stage1 = problem.stage1(cfg, seed)
    if stage1 is not None:
        model, inputs, target, loss = stage1
        predictor = _train_predictors(model, inputs, target, loss, cfg, seed, metadata, store)
    objective = problem.objective(predictor, cfg, timings)
    basis = problem.basis(n_generators, cfg, seed)
    start = time.perf_counter()
    metadata["basis"] = _fit(basis, objective, problem, problem.fit_config(cfg), seed, store)
    timings["basis"] = time.perf_counter() - start
    score = problem.coset_score(basis, objective, cfg) if cosets else None
    return _finish(basis, score, cfg, seed, metadata, store)


def _base_metadata(
    problem: Problem, cfg: DiscoveryConfig, seed: int, n_generators: int
) -> dict[str, Any]:
    """The metadata every discovered group starts from (settings, seed, sizes, timings)."""
    return {
        "kind": problem.kind,
        **problem.metadata_extra(),
        "seed": seed,
        "n_samples": problem.n,
        "n_generators": n_generators,
        "config": {
            k: v
            for k, v in cfg.to_flat().items()
            if k not in ("trainer_kwargs", "reference_algebra")
        },
        "wall_time_s": {},
    }


def _make_store(problem: Problem, cfg: DiscoveryConfig, seed: int, n_generators: int) -> StageStore:
    """The run folder's stage state, fingerprinted by everything that shapes the result."""
    settings = {k: v for k, v in cfg.to_flat().items() if k not in _RUNTIME}
    fingerprint = {
        "kind": problem.kind,
        "seed": seed,
        "n_generators": n_generators,
        "data": tensor_digest(*problem.data()),
        "settings": settings,
        "trainer_kwargs": cfg.run.trainer_kwargs,
        **problem.fingerprint_extra(),
    }
    if cfg.run.ckpt_path is not None:
        checkpoint_stage(cfg.run.ckpt_path)  # a bad checkpoint fails before any state is touched
    return StageStore(cfg.run.run_dir, fingerprint, resume=cfg.run.resume)


def _stage_trainer_kwargs(cfg: DiscoveryConfig, stage: str) -> dict[str, Any]:
    """Trainer arguments of one stage: its progress display plus the user's overrides."""
    kwargs = progress_trainer_kwargs(progress_mode(cfg.run.progress), stage)
    user = dict(cfg.run.trainer_kwargs)
    kwargs["callbacks"] = kwargs["callbacks"] + list(user.pop("callbacks", None) or [])
    kwargs.update(user)
    return kwargs


def _resume_from(store: StageStore, stage: str, cfg: DiscoveryConfig) -> str | None:
    """The checkpoint a stage resumes from: ``ckpt_path`` when it belongs to this stage,
    else the stage's ``last.ckpt`` in the run folder, else None (start fresh)."""
    if cfg.run.ckpt_path is not None:
        if checkpoint_stage(cfg.run.ckpt_path) == stage:
            return str(cfg.run.ckpt_path)
    last = store.last_checkpoint(stage)
    return None if last is None else str(last)


def _train_predictors(
    model: torch.nn.Module,
    inputs: Tensor,
    target: Tensor,
    loss: str,
    cfg: DiscoveryConfig,
    seed: int,
    metadata: dict[str, Any],
    store: StageStore,
) -> torch.nn.Module:
    """Stage 1: train the predictors, or load them when the run folder holds a finished stage
    1; record their metrics and wall time in metadata. Returns the frozen model (eval mode)."""
    from atlasd.discovery.training import train_predictors

    mode = progress_mode(cfg.run.progress)
    start = time.perf_counter()
    done = store.done("predictors")
    if done is not None:
        model.load_state_dict(store.tensors("predictors"))
        model.eval()
        model.requires_grad_(False)
        store.resumed.append("predictors")
        stage_line(mode, "stage 1/3 predictors: finished earlier, loaded from the run folder")
        metrics = done
    else:
        ckpt = _resume_from(store, "predictors", cfg)
        stage_line(mode, "stage 1/3 predictors" + (f": resuming from {ckpt}" if ckpt else ""))
        p = cfg.predictor
        with quiet_lightning(mode != "bar"):
            metrics = train_predictors(
                model,
                inputs,
                target,
                loss=loss,
                class_weights=p.class_weights,
                lr=p.lr,
                batch_size=cfg.batch_size,
                max_epochs=p.epochs,
                val_fraction=p.val_fraction,
                patience=p.patience,
                seed=seed,
                run_dir=store.stage_dir("predictors"),
                trainer_kwargs=_stage_trainer_kwargs(cfg, "predictors"),
                ckpt_path=ckpt,
            )
        metrics = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | list)}
        store.finish("predictors", metrics, model.state_dict())
    metadata["wall_time_s"]["predictors"] = time.perf_counter() - start
    metadata["predictor"] = metrics
    return model


def _fit(
    basis: LieBasis,
    objective: Any,
    problem: Problem,
    cfg: DiscoveryConfig,
    seed: int,
    store: StageStore,
) -> dict[str, Any]:
    """Stage 2: fit the basis (after screening random starts), or load a finished fit."""
    mode = progress_mode(cfg.run.progress)
    done = store.done("basis")
    if done is not None:
        basis.load_state_dict(store.tensors("basis"))
        store.resumed.append("basis")
        stage_line(mode, "stage 2/3 basis: finished earlier, loaded from the run folder")
        return done
    b = cfg.basis
    module = BasisModule(
        basis,
        objective,
        problem.group_shape,
        scale=b.scale,
        lr=b.lr,
        overlap_weight=b.overlap_weight,
        overlap_kind=b.overlap_kind,
        magnitude_weight=b.magnitude_weight,
        magnitude_clamp=b.magnitude_clamp,
        seed=seed,
        reference=cfg.run.reference_algebra,
    )
    tensors = problem.tensors()
    ckpt = _resume_from(store, "basis", cfg)
    screening = None
    # a resumed fit takes its generators from the checkpoint: screening would be overwritten
    if b.init_candidates > 1 and ckpt is None:
        screening = screen_initializations(
            module,
            tensors,
            n_candidates=b.init_candidates,
            batch_size=min(cfg.batch_size, tensors[0].shape[0]),
            seed=seed,
        )
    stage_line(mode, "stage 2/3 basis" + (f": resuming from {ckpt}" if ckpt else ""))
    metrics = fit_basis(
        module,
        tensors,
        batch_size=cfg.batch_size,
        epochs=b.epochs,
        seed=seed,
        trainer_kwargs=_stage_trainer_kwargs(cfg, "basis"),
        checkpoint_dir=store.stage_dir("basis"),
        ckpt_path=ckpt,
    )
    metrics["history"] = module.history
    if screening is not None:
        metrics["init_screening"] = screening
    if ckpt is not None:
        metrics["resumed_from"] = ckpt
    store.finish("basis", metrics, basis.state_dict())
    return metrics


def _finish(
    basis: LieBasis,
    coset_score: Score | None,
    cfg: DiscoveryConfig,
    seed: int,
    metadata: dict[str, Any],
    store: StageStore,
) -> DiscoveredGroup:
    """Stages 3 and 5: cosets from the fitted basis, and the DiscoveredGroup."""
    L, r_in, r_out = (
        None if t is None else t.detach().cpu().to(torch.float64) for t in basis.effective()
    )
    if not bool(torch.isfinite(L).all()):
        raise RuntimeError("basis learning produced NaN/Inf generators; no group was written")
    algebra = lie.standard_form(L)
    timings = metadata.setdefault("wall_time_s", {})
    mode = progress_mode(cfg.run.progress)
    done = store.done("cosets") if coset_score is not None else None
    if done is not None:
        cosets = store.tensors("cosets")["cosets"]
        metadata["cosets"] = done
        store.resumed.append("cosets")
        stage_line(mode, "stage 3/3 cosets: finished earlier, loaded")
    elif coset_score is not None:
        stage_line(mode, "stage 3/3 cosets")
        start = time.perf_counter()
        c = cfg.cosets
        report = search_cosets(
            coset_score,
            algebra,
            n_candidates=c.candidates,
            steps=c.steps,
            lr=c.lr,
            polish_steps=c.steps if c.polish_steps is None else c.polish_steps,
            threshold=c.threshold,
            scale=cfg.basis.scale,
            seed=seed,
        )
        cosets = report.pop("cosets")
        metadata["cosets"] = report
        timings["cosets"] = time.perf_counter() - start
        store.finish("cosets", report, {"cosets": cosets})
    else:
        cosets = None
    metadata["resumed_stages"] = list(store.resumed)
    metadata["raw_generators"] = L.tolist()
    metadata["membership_tol"] = cfg.cosets.merge_tol
    metadata["versions"] = {"atlasd": atlasd.__version__, "torch": torch.__version__}
    return DiscoveredGroup(L, cosets=cosets, in_rep=r_in, out_rep=r_out, metadata=metadata)
