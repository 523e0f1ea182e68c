"""The discovery entry points: discover_local, discover_global and discover_distribution.

Pipeline: (1) predictors, trained on (x, y) or given as a fixed callable, frozen in eval mode;
(2) F(x) computed once and reused (the frozen predictor's untransformed output never changes);
(3) a LieBasis fitted so that F(g . x) ~ g . F(x); (4) coset search; (5) a DiscoveredGroup with the
losses, timings and settings in its metadata.

Devices: stages 1 and 2 run on the Trainer's accelerator (``trainer_kwargs``, "auto" by default);
the objective of stage 2 is an ``nn.Module`` (discovery/basis.py) holding the frozen predictor and
its masks, so the Trainer moves all of it. What runs outside Lightning (the probe and F(x) before
stage 2, the coset search after it) runs where the predictor / objective is, which is the CPU
after a Lightning fit, with inputs moved there; the group is built from CPU float64 tensors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

import atlasd
from atlasd import lie
from atlasd.atlas import Atlas, crop
from atlasd.discovery.basis import (
    DistributionObjective,
    GlobalObjective,
    LieBasis,
    LocalObjective,
    placement,
    to_placement,
)
from atlasd.discovery.cosets import Score, search_cosets
from atlasd.discovery.learner import (
    BasisModule,
    fit_basis,
    quiet_lightning,
    screen_initializations,
)
from atlasd.discovery.progress import progress_mode, progress_trainer_kwargs, stage_line
from atlasd.discovery.resume import StageStore, checkpoint_stage, tensor_digest
from atlasd.group import DiscoveredGroup

__all__ = ["DiscoveryConfig", "discover_distribution", "discover_global", "discover_local"]


@dataclass
class DiscoveryConfig:
    """Training settings shared by the discovery entry points (``**training`` keywords).

    Stage 1 (predictors): ``predictor_epochs``, ``predictor_lr``, ``predictor_loss`` ("l1", "mse"
    or "cross_entropy"), ``class_weights`` (one per class, cross-entropy only, e.g. to
    down-weight a dominant background), ``predictor_patience``, ``val_fraction``, ``hidden``.
    Stage 2 (basis): ``init_candidates`` random starts screened before training (the best one
    is trained; 1 disables screening), ``basis_epochs`` passes over the data, ``basis_lr``,
    ``scale`` (std of the
    coefficients of unit-norm generators), ``loss`` ("l1"/"mse"), ``overlap_weight``,
    ``overlap_kind``, ``magnitude_weight``, ``magnitude_clamp``, ``normalize``.
    Stage 3 (cosets): ``coset_candidates`` random starts, ``coset_steps`` Adam steps at
    ``coset_lr`` on all of them, then at most ``coset_polish_steps`` more on the unresolved ones
    (each stops when its loss plateaus; default: as many as ``coset_steps``), ``coset_batch``
    samples per score. Which candidates are kept and merged is decided by tolerances measured on
    the problem (see :mod:`atlasd.discovery.cosets`); ``coset_threshold`` (absolute, on the loss
    excess over the identity) replaces the measured keep threshold. ``merge_tol`` is the group's
    default membership tolerance (``DiscoveredGroup.contains``).
    General: ``batch_size``, ``trainer_kwargs`` (passed to every Lightning Trainer, overriding
    its defaults: ``accelerator="auto"``, a GPU when one is visible, ``devices=1``),
    ``run_dir`` (stage checkpoints and results, see :mod:`atlasd.discovery.resume`: a rerun with
    the same folder resumes the interrupted stage and skips finished ones), ``resume`` (False
    starts over), ``ckpt_path`` (resume the stage this Lightning checkpoint belongs to),
    ``progress`` (True/"bar", "lines" or False/"none", see :mod:`atlasd.discovery.progress`),
    ``reference_algebra`` (a known algebra (j, d, d): similarity logged per epoch).
    """

    batch_size: int = 16
    predictor_epochs: int = 20
    predictor_lr: float = 1e-3
    predictor_loss: str = "l1"
    class_weights: list[float] | None = None
    predictor_patience: int = 3
    val_fraction: float = 0.1
    hidden: int = 16
    basis_epochs: int = 3
    init_candidates: int = 32
    basis_lr: float = 1e-2
    scale: float = 0.5
    loss: str = "l1"
    overlap_weight: float = 0.1
    overlap_kind: str = "cosine"
    magnitude_weight: float = 0.0
    magnitude_clamp: float = 1.0
    normalize: bool = True
    coset_candidates: int = 16
    coset_steps: int = 60
    coset_lr: float = 0.05
    coset_batch: int = 8
    coset_polish_steps: int | None = None
    coset_threshold: float | None = None
    merge_tol: float = 0.15
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None
    progress: bool | str = False
    resume: bool = True
    ckpt_path: str | None = None
    reference_algebra: Any = None

    @classmethod
    def from_kwargs(cls, training: dict[str, Any]) -> DiscoveryConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(training) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        cfg = cls(**training)
        if cfg.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
        if cfg.scale <= 0:
            raise ValueError(f"scale must be positive, got {cfg.scale}")
        return cfg


def _settings(cfg: DiscoveryConfig) -> dict[str, Any]:
    """The settings by name, values as given: unlike dataclasses.asdict, nothing is deep-copied
    (trainer_kwargs may hold the caller's callbacks and loggers)."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


def _check_finite(t: Tensor, name: str) -> None:
    if not torch.is_tensor(t):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN/Inf values")


def _batched(
    fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 256, where: Any = None
) -> Tensor:
    """``fn`` over ``x`` in chunks, without gradients, computed where ``where`` (default
    ``fn``) is (:func:`~atlasd.discovery.basis.placement`); the result on the CPU."""
    place = placement(fn if where is None else where)
    with torch.no_grad():
        return torch.cat(
            [fn(to_placement(x[i : i + chunk], place)).cpu() for i in range(0, x.shape[0], chunk)]
        )


def _on(place: tuple[torch.device, torch.dtype | None], *ts: Tensor | None) -> list[Tensor | None]:
    """Tensors moved to ``place`` (device and dtype), None kept."""
    return [None if t is None else to_placement(t, place) for t in ts]


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
    done = store.done("cosets") if coset_score is not None else None
    if done is not None:
        cosets = store.tensors("cosets")["cosets"]
        metadata["cosets"] = done
        store.resumed.append("cosets")
        stage_line(progress_mode(cfg.progress), "stage 3/3 cosets: finished earlier, loaded")
    elif coset_score is not None:
        stage_line(progress_mode(cfg.progress), "stage 3/3 cosets")
        start = time.perf_counter()
        report = search_cosets(
            coset_score,
            algebra,
            n_candidates=cfg.coset_candidates,
            steps=cfg.coset_steps,
            lr=cfg.coset_lr,
            polish_steps=(
                cfg.coset_steps if cfg.coset_polish_steps is None else cfg.coset_polish_steps
            ),
            threshold=cfg.coset_threshold,
            scale=cfg.scale,
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
    metadata["membership_tol"] = cfg.merge_tol
    metadata["versions"] = {"atlasd": atlasd.__version__, "torch": torch.__version__}
    return DiscoveredGroup(L, cosets=cosets, in_rep=r_in, out_rep=r_out, metadata=metadata)


def _stage_trainer_kwargs(cfg: DiscoveryConfig, stage: str) -> dict[str, Any]:
    """Trainer arguments of one stage: its progress display plus the user's overrides."""
    kwargs = progress_trainer_kwargs(progress_mode(cfg.progress), stage)
    user = dict(cfg.trainer_kwargs)
    kwargs["callbacks"] = kwargs["callbacks"] + list(user.pop("callbacks", None) or [])
    kwargs.update(user)
    return kwargs


def _resume_from(store: StageStore, stage: str, cfg: DiscoveryConfig) -> str | None:
    """The checkpoint a stage resumes from: ``cfg.ckpt_path`` when it belongs to this stage,
    else the stage's ``last.ckpt`` in the run folder, else None (start fresh)."""
    if cfg.ckpt_path is not None:
        if checkpoint_stage(cfg.ckpt_path) == stage:
            return str(cfg.ckpt_path)
    last = store.last_checkpoint(stage)
    return None if last is None else str(last)


def _fit(
    basis: LieBasis,
    objective,
    group_shape,
    tensors: tuple[Tensor, ...],
    cfg: DiscoveryConfig,
    seed: int,
    store: StageStore,
) -> dict[str, Any]:
    mode = progress_mode(cfg.progress)
    done = store.done("basis")
    if done is not None:
        basis.load_state_dict(store.tensors("basis"))
        store.resumed.append("basis")
        stage_line(mode, "stage 2/3 basis: finished earlier, loaded from the run folder")
        return done
    module = BasisModule(
        basis,
        objective,
        group_shape,
        scale=cfg.scale,
        lr=cfg.basis_lr,
        overlap_weight=cfg.overlap_weight,
        overlap_kind=cfg.overlap_kind,
        magnitude_weight=cfg.magnitude_weight,
        magnitude_clamp=cfg.magnitude_clamp,
        seed=seed,
        reference=cfg.reference_algebra,
    )
    ckpt = _resume_from(store, "basis", cfg)
    screening = None
    # a resumed fit takes its generators from the checkpoint: screening would be overwritten
    if cfg.init_candidates > 1 and ckpt is None:
        screening = screen_initializations(
            module,
            tensors,
            n_candidates=cfg.init_candidates,
            batch_size=min(cfg.batch_size, tensors[0].shape[0]),
            seed=seed,
        )
    stage_line(mode, "stage 2/3 basis" + (f": resuming from {ckpt}" if ckpt else ""))
    metrics = fit_basis(
        module,
        tensors,
        batch_size=cfg.batch_size,
        epochs=cfg.basis_epochs,
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


def _train_stage1(
    model: torch.nn.Module,
    inputs: Tensor,
    target: Tensor,
    loss: str,
    cfg: DiscoveryConfig,
    seed: int,
    metadata: dict[str, Any],
    store: StageStore,
) -> torch.nn.Module:
    """Train predictors (stage 1), or load them when the run folder holds a finished stage 1;
    record their metrics and wall time in metadata. Returns the frozen model (eval mode)."""
    from atlasd.discovery.training import train_predictors

    mode = progress_mode(cfg.progress)
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
        with quiet_lightning(mode != "bar"):
            metrics = train_predictors(
                model,
                inputs,
                target,
                loss=loss,
                class_weights=cfg.class_weights,
                lr=cfg.predictor_lr,
                batch_size=cfg.batch_size,
                max_epochs=cfg.predictor_epochs,
                val_fraction=cfg.val_fraction,
                patience=cfg.predictor_patience,
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


def _make_store(
    kind: str,
    cfg: DiscoveryConfig,
    seed: int,
    n_generators: int,
    data: tuple[Tensor | None, ...],
    **extra: Any,
) -> StageStore:
    """The run folder's stage state, fingerprinted by everything that shapes the result."""
    settings = {
        k: v
        for k, v in _settings(cfg).items()
        if k not in ("trainer_kwargs", "run_dir", "progress", "resume", "ckpt_path")
    }
    fingerprint = {
        "kind": kind,
        "seed": seed,
        "n_generators": n_generators,
        "data": tensor_digest(*data),
        "settings": settings,
        "trainer_kwargs": cfg.trainer_kwargs,
        **extra,
    }
    if cfg.ckpt_path is not None:
        checkpoint_stage(cfg.ckpt_path)  # a bad checkpoint fails before any state is touched
    return StageStore(cfg.run_dir, fingerprint, resume=cfg.resume)


def _base_metadata(
    kind: str, cfg: DiscoveryConfig, seed: int, n: int, n_generators: int, **extra: Any
) -> dict[str, Any]:
    """The metadata every discovered group starts from (settings, seed, sizes, timings)."""
    return {
        "kind": kind,
        **extra,
        "seed": seed,
        "n_samples": n,
        "n_generators": n_generators,
        "config": {
            k: v
            for k, v in _settings(cfg).items()
            if k not in ("trainer_kwargs", "reference_algebra")
        },
        "wall_time_s": {},
    }


def _check_inputs(
    x: Tensor, y: Tensor | None, predictor: Any, n_generators: int, cfg: DiscoveryConfig
) -> None:
    """Checks shared by the entry points; each raises ValueError naming the problem."""
    if n_generators < 1:
        raise ValueError(f"n_generators must be >= 1, got {n_generators}")
    _check_finite(x, "x")
    if y is not None:
        _check_finite(y, "y")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    if predictor is None and y is None:
        raise ValueError("y is needed to train predictors (or pass a fixed predictor)")
    if predictor is not None and not callable(predictor):
        raise ValueError("predictor must be callable or None")
    if x.shape[0] < cfg.batch_size:
        raise ValueError(f"{x.shape[0]} samples is fewer than one batch of {cfg.batch_size}")


def discover_local(
    x: Tensor,
    y: Tensor | None = None,
    *,
    atlas: Atlas,
    predictor: Callable[[Tensor], Tensor] | None = None,
    n_generators: int = 1,
    out_radius: int | None = None,
    learn_in_rep: bool = False,
    learn_out_rep: bool = False,
    cosets: bool = True,
    seed: int = 0,
    **training: Any,
) -> DiscoveredGroup:
    """Discover a local symmetry group of fields: F(g . x) ~ g . F(x) on every chart.

    Args:
        x: input fields (N, C_in, H, W).
        y: target fields (N, C_out, H, W) (float, regression) or class maps (N, H, W) (integer:
            classification, cross-entropy, compared as softmax probabilities in stage 2);
            needed when ``predictor`` is None.
        atlas: the charts (atlasd.Atlas).
        predictor: None trains one CNN per chart on (x, y); a callable is a fixed F mapping
            patches (B, K, C_in, h, w) -> (B, K, C_out, h', w'), odd h' <= h.
        n_generators: k >= 1 generators (2x2, in chart coordinates).
        out_radius: radius of the compared output crop (default: the predictor's output radius).
        learn_in_rep, learn_out_rep: learn channel representations.
        cosets: run the coset search.
        seed: seeds everything (same seed -> same group).
        **training: see DiscoveryConfig.

    Returns:
        DiscoveredGroup with (k, 2, 2) algebra; metadata holds losses and timings.
    """
    cfg = DiscoveryConfig.from_kwargs(training)
    if not isinstance(atlas, Atlas):
        raise ValueError(f"atlas must be an atlasd.Atlas, got {type(atlas).__name__}")
    _check_inputs(x, y, predictor, n_generators, cfg)
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    n = x.shape[0]
    if out_radius is not None and not 0 <= out_radius <= atlas.radius:
        raise ValueError(f"out_radius {out_radius} must be in 0..{atlas.radius} (the chart radius)")
    metadata = _base_metadata("local", cfg, seed, n, n_generators, atlas=atlas.to_dict())
    store = _make_store(
        "local",
        cfg,
        seed,
        n_generators,
        (x, y),
        atlas=atlas.to_dict(),
        out_radius=out_radius,
        learn_in_rep=learn_in_rep,
        learn_out_rep=learn_out_rep,
        fixed_predictor=predictor is not None,
    )
    timings = metadata["wall_time_s"]

    start = time.perf_counter()
    patches = atlas.extract(x.float())  # (N, K, C, h, w)
    timings["extract"] = time.perf_counter() - start

    if predictor is None:
        from atlasd.discovery.predictors import ChartCNN

        r_out = out_radius if out_radius is not None else max(atlas.radius - 4, 0)
        c_out = y.shape[1] if y.ndim == 4 else int(y.max()) + 1
        # seeded initialisation without touching the caller's global RNG state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ChartCNN.for_radii(
                atlas.n_charts, x.shape[1], c_out, atlas.radius, r_out, hidden=cfg.hidden
            )
        classes = y.ndim == 3
        if classes and y.is_floating_point():
            raise ValueError("y of shape (N, H, W) must hold integer class labels")
        if classes:
            target = crop(atlas.extract_labels(y, c_out), r_out)
        else:
            target = crop(atlas.extract(y.float()), r_out)
        loss = "cross_entropy" if classes else cfg.predictor_loss
        F = _train_stage1(model, patches, target, loss, cfg, seed, metadata, store)
    else:
        F = predictor

    probe = _batched(F, patches[:2])
    h = patches.shape[-1]
    if not (
        torch.is_tensor(probe)
        and probe.ndim == 5
        and probe.shape[:2] == patches[:2].shape[:2]
        and probe.shape[-1] == probe.shape[-2]
        and probe.shape[-1] % 2 == 1
        and probe.shape[-1] <= h
    ):
        shape = tuple(probe.shape) if torch.is_tensor(probe) else type(probe).__name__
        raise ValueError(
            f"predictor returned {shape} for patches {tuple(patches[:2].shape)}; expected "
            "(B, K, C_out, h', h') with odd h' <= h"
        )
    pred_radius = (probe.shape[-1] - 1) // 2
    r_out = pred_radius if out_radius is None else out_radius
    if r_out > pred_radius:
        raise ValueError(
            f"out_radius {r_out} is larger than the predictor's output radius {pred_radius}"
        )

    # classifiers are compared on class probabilities, which transform like fields; raw
    # logits carry an arbitrary per-pixel offset that equivariance has no reason to respect
    objective = LocalObjective(
        F, r_out, kind=cfg.loss, probabilities=predictor is None and y.ndim == 3
    )

    start = time.perf_counter()
    base = _batched(objective.predict, patches, where=objective)
    timings["base_predictions"] = time.perf_counter() - start

    basis = LieBasis(
        n_generators,
        2,
        in_channels=patches.shape[2],
        out_channels=base.shape[2],
        learn_in_rep=learn_in_rep,
        learn_out_rep=learn_out_rep,
        normalize=cfg.normalize,
        generator=torch.Generator().manual_seed(seed),
    )
    start = time.perf_counter()
    basis_metrics = _fit(
        basis, objective, lambda b: tuple(b[0].shape[:2]), (patches, base), cfg, seed, store
    )
    timings["basis"] = time.perf_counter() - start
    metadata["basis"] = basis_metrics

    coset_score = None
    if cosets:
        algebra32 = lie.standard_form(basis.effective()[0].detach().cpu().double()).float()

        # sampled on the CPU with the search's generator, computed where the objective is
        place = placement(objective)

        def coset_score(hs: Tensor, gen: torch.Generator, scale: float = cfg.scale) -> Tensor:
            n_c, b = hs.shape[0], cfg.coset_batch
            idx = torch.randint(n, (b,), generator=gen)
            xb, bb = patches[idx], base[idx]
            K = xb.shape[1]
            r_in = r_out = None
            # one g0 per sample and chart, shared by all candidates: their losses are paired
            if basis.in_rep is None and basis.out_rep is None:
                g0 = lie.sample_group(algebra32, (1, b, K), scale=scale, generator=gen)
            else:
                # with learned representations the identity component acts on the channels too
                # (rotating a wind field rotates its vectors); the candidate h acts on channels
                # trivially, since no representation of a discrete element is learned
                with torch.no_grad():
                    g0, r_in, r_out = basis.sample((1, b, K), scale, gen)
                r_in, r_out = (
                    None
                    if r is None
                    else r.expand(n_c, -1, -1, -1, -1).reshape(n_c * b, K, *r.shape[-2:])
                    for r in (r_in, r_out)
                )
            g = (hs[:, None, None] @ g0.to(hs.dtype)).reshape(n_c * b, K, 2, 2)
            xr = xb.repeat(n_c, 1, 1, 1, 1)
            br = bb.repeat(n_c, 1, 1, 1, 1)
            xr, br, g, r_in, r_out = _on(place, xr, br, g, r_in, r_out)
            per = objective((xr, br), g, r_in, r_out, per_sample=True)
            return per.view(n_c, b).mean(1).to(device=hs.device, dtype=hs.dtype)

    return _finish(basis, coset_score, cfg, seed, metadata, store)


def discover_global(
    x: Tensor,
    y: Tensor | None = None,
    *,
    predictor: Callable[[Tensor], Tensor] | None = None,
    n_generators: int = 1,
    cosets: bool = True,
    seed: int = 0,
    **training: Any,
) -> DiscoveredGroup:
    """Discover a global linear symmetry: f(g x) ~ f(x), g acting on the last axis of x.

    Args:
        x: inputs (N, ..., d), e.g. vectors (N, d) or particle sets (N, P, d).
        y: targets (N, c) (regression) or (N,) class indices; needed when predictor is None.
        predictor: None trains an MLP on (x, y); a callable is a fixed f: (B, ..., d) -> (B, c).
        n_generators, cosets, seed, **training: as in discover_local.

    Returns:
        DiscoveredGroup with (k, d, d) algebra.
    """
    cfg = DiscoveryConfig.from_kwargs(training)
    _check_inputs(x, y, predictor, n_generators, cfg)
    if x.ndim < 2:
        raise ValueError(f"x must be (N, ..., d), got shape {tuple(x.shape)}")
    n, d = x.shape[0], x.shape[-1]
    metadata = _base_metadata("global", cfg, seed, n, n_generators)
    store = _make_store(
        "global", cfg, seed, n_generators, (x, y), fixed_predictor=predictor is not None
    )
    timings = metadata["wall_time_s"]
    x = x.float()
    if predictor is None:
        from atlasd.discovery.predictors import MLPPredictor

        classes = not y.is_floating_point()
        n_out = int(y.max()) + 1 if classes else (y.shape[1] if y.ndim > 1 else 1)
        target = y if classes else y.float().reshape(n, n_out)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MLPPredictor(tuple(x.shape[1:]), n_out)
        loss = "cross_entropy" if classes else "mse"
        F = _train_stage1(model, x, target, loss, cfg, seed, metadata, store)
    else:
        F = predictor

    probe = _batched(F, x[:2])
    if not (torch.is_tensor(probe) and probe.shape[0] == 2):
        shape = tuple(probe.shape) if torch.is_tensor(probe) else type(probe).__name__
        raise ValueError(f"predictor returned {shape} for inputs {tuple(x[:2].shape)}")

    objective = GlobalObjective(F, kind=cfg.loss)
    base = _batched(objective.predict, x, chunk=4096, where=objective)

    basis = LieBasis(
        n_generators,
        d,
        out_channels=base.shape[1],
        normalize=cfg.normalize,
        generator=torch.Generator().manual_seed(seed),
    )
    start = time.perf_counter()
    metadata["basis"] = _fit(
        basis, objective, lambda b: (b[0].shape[0],), (x, base), cfg, seed, store
    )
    timings["basis"] = time.perf_counter() - start

    coset_score = None
    if cosets:
        algebra32 = lie.standard_form(basis.effective()[0].detach().cpu().double()).float()

        place = placement(objective)

        def coset_score(hs: Tensor, gen: torch.Generator, scale: float = cfg.scale) -> Tensor:
            n_c, b = hs.shape[0], max(cfg.coset_batch, 64)
            idx = torch.randint(n, (b,), generator=gen)
            # one g0 per sample, shared by all candidates: their losses are paired
            g0 = lie.sample_group(algebra32, (1, b), scale=scale, generator=gen)
            g = (hs[:, None] @ g0.to(hs.dtype)).reshape(n_c * b, d, d)
            xr = x[idx].repeat((n_c,) + (1,) * (x.ndim - 1))
            br = base[idx].repeat(n_c, 1)
            xr, br, g = _on(place, xr, br, g)
            per = objective((xr, br), g, per_sample=True)
            return per.view(n_c, b).mean(1).to(device=hs.device, dtype=hs.dtype)

    return _finish(basis, coset_score, cfg, seed, metadata, store)


def discover_distribution(
    x: Tensor,
    *,
    atlas: Atlas | None = None,
    n_generators: int = 1,
    cosets: bool = False,
    seed: int = 0,
    blur: float = 0.05,
    **training: Any,
) -> DiscoveredGroup:
    """Discover linear symmetries of a distribution: q(g x) = q(x) for samples x (N, d).

    The objective is the debiased Sinkhorn divergence (geomloss, tensorized backend) between a
    transformed batch {g_i x_i} and an *independent* batch of the data: comparing a batch with
    its own transform would reward small transformations for the sample noise they share, so the
    two halves of every loader batch are used as the two independent samples. ``batch_size``
    (default 1024 here, at most ~2k for the tensorized backend) counts points per half.

    Args:
        x: samples (N, d), used as given: the group acts on the raw coordinates (centre the
            data first if the symmetry is about the mean); or, with ``atlas``, fields
            (N, C, H, W): each sample is then the stack of its chart patches, transformed by
            ``atlasd.act`` (2x2 generators, one element per sample and chart) and compared inside
            the charts' inscribed discs, so corners that rotate out of a patch do not count.
            One chart covering the whole field asks LieGAN's question: is a global
            transformation of the picture a symmetry of the data distribution?
        atlas: the charts for field samples (cosets are not searched in this mode).
        n_generators, cosets, seed, **training: as in discover_local.
        blur: Sinkhorn blur (length scale of the transport cost), in units of x.

    Returns:
        DiscoveredGroup with (k, d, d) algebra.
    """
    from geomloss import SamplesLoss

    training = {"batch_size": 1024, **training}
    cfg = DiscoveryConfig.from_kwargs(training)
    if n_generators < 1:
        raise ValueError(f"n_generators must be >= 1, got {n_generators}")
    _check_finite(x, "x")
    if atlas is not None:
        if x.ndim != 4:
            raise ValueError(f"with an atlas, x must be fields (N, C, H, W), got {tuple(x.shape)}")
        if cosets:
            raise ValueError("cosets are not searched for fields in distribution mode")
    elif x.ndim != 2:
        raise ValueError(f"x must be (N, d) samples, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n < 2 * cfg.batch_size:
        raise ValueError(f"{n} samples is fewer than two independent batches of {cfg.batch_size}")
    if cfg.batch_size > 4096:
        raise ValueError(f"batch_size {cfg.batch_size} is too large for the tensorized backend")
    x = x.float()
    sinkhorn = SamplesLoss("sinkhorn", p=2, blur=blur, backend="tensorized")
    extra = {"blur": blur} if atlas is None else {"blur": blur, "atlas": atlas.to_dict()}
    metadata = _base_metadata("distribution", cfg, seed, n, n_generators, **extra)
    store = _make_store("distribution", cfg, seed, n_generators, (x,), **extra)

    if atlas is None:
        d = x.shape[1]
        samples = x
        objective = DistributionObjective(sinkhorn)

        def group_shape(b: tuple[Tensor, ...]) -> tuple[int, ...]:
            return (b[0].shape[0],)

    else:
        d = 2
        samples = atlas.extract(x)  # (N, K, C, h, w)
        objective = DistributionObjective(sinkhorn, radius=atlas.radius)

        def group_shape(b: tuple[Tensor, ...]) -> tuple[int, ...]:
            return tuple(b[0].shape[:2])  # one element per sample and chart

    basis = LieBasis(
        n_generators, d, normalize=cfg.normalize, generator=torch.Generator().manual_seed(seed)
    )
    # a shallow copy: the caller's callbacks and loggers in trainer_kwargs must stay the caller's
    cfg2 = replace(cfg, batch_size=2 * cfg.batch_size)
    start = time.perf_counter()
    metadata["basis"] = _fit(basis, objective, group_shape, (samples,), cfg2, seed, store)
    metadata["wall_time_s"]["basis"] = time.perf_counter() - start

    coset_score = None
    if cosets:
        algebra32 = lie.standard_form(basis.effective()[0].detach().cpu().double()).float()
        m = min(cfg.batch_size, 512)
        place = placement(objective)

        def coset_score(hs: Tensor, gen: torch.Generator, scale: float = cfg.scale) -> Tensor:
            idx = torch.randperm(n, generator=gen)[: 2 * m]
            a, b = x[idx[:m]], x[idx[m:]]
            # one g0 per sample, shared by all candidates: their losses are paired
            g0 = lie.sample_group(algebra32, (m,), scale=scale, generator=gen)
            moved = torch.einsum("cij,bjk,bk->cbi", hs, g0.to(hs.dtype), a)
            # geomloss batches (C, m, d) point clouds: all candidates in one call
            per = objective.candidates(*_on(place, moved, b))
            return per.to(device=hs.device, dtype=hs.dtype)

    return _finish(basis, coset_score, cfg, seed, metadata, store)
