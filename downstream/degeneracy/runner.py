"""The degeneracy study's run: chart samples of a field task, the two conv stacks trained on
symmetric and symmetry-broken data, the run's localisation, and every measurement.

See :mod:`atlasd.downstream.degeneracy` for what is measured and why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import lightning
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from atlasd.datasets import data_options, merge_data_options
from atlasd.datasets.base import TaskSpec, task_spec
from atlasd.downstream.degeneracy.config import DegeneracyConfig, DegeneracyTrainingConfig
from atlasd.downstream.degeneracy.likelihood import categorical_nll, gaussian_nll, whitened_polish
from atlasd.downstream.degeneracy.measure import measure_degeneracy, second_order_copy
from atlasd.downstream.degeneracy.summary import DegeneracyReport, summarise_degeneracy
from atlasd.downstream.models import build_field_pair, count_parameters, quiet_trainer

if TYPE_CHECKING:
    from atlasd.group import DiscoveredGroup

__all__ = ["ChartSamples", "chart_samples", "check_field_task", "fit_model", "run_degeneracy"]


class ChartSamples(NamedTuple):
    """Chart patches of a task (see :func:`chart_samples`)."""

    x: Tensor
    y: Tensor
    x_heldout: Tensor
    y_heldout: Tensor
    n_classes: int | None
    spec: TaskSpec


def check_field_task(spec: TaskSpec) -> TaskSpec:
    """``spec`` if the study can run on it: a local task on fields (charts of an atlas) with a
    regression or classification target; else a ValueError naming the task and the fact."""
    if spec.kind != "local" or spec.inputs != "fields" or spec.atlas is None:
        raise ValueError(
            f"degeneracy task {spec.name!r} is a {spec.kind} task on {spec.inputs} "
            "(spec.kind, spec.inputs); the degeneracy study needs a local task on fields "
            "with an atlas"
        )
    if spec.target not in ("regression", "classification"):
        raise ValueError(
            f"degeneracy task {spec.name!r} has no target (spec.target {spec.target!r}); "
            "the degeneracy study needs regression or classification"
        )
    return spec


def chart_samples(
    task: str, data: dict[str, Any], n: int, n_heldout: int, seed: int = 0
) -> ChartSamples:
    """Chart patches of a task's training fields, as independent samples.

    Builds the task's DataModule with ``data``, cuts every training field into its atlas's
    charts (:meth:`Atlas.extract` / :meth:`Atlas.extract_labels`), pools the patches of all
    charts, and draws ``n`` training and ``n_heldout`` held-out patches without replacement
    (seeded permutation; the held-out ones come from other fields than the training ones).

    Returns:
        :class:`ChartSamples` ``(x, y, x_heldout, y_heldout, n_classes, spec)``: ``x``
        float32 ``(n, C, h, h)`` input patches (``h = 2 r + 1`` with the atlas radius ``r``);
        ``y`` float32 ``(n, C_out, h, h)`` for regression or int64 ``(n, h, h)`` labels
        for classification (crop them to the model's output size); ``n_classes`` the task's
        ``spec.n_classes`` (classification; a class need not occur in the patches), None for
        regression; ``spec`` the task's spec.

    Raises:
        ValueError: a task that is not a local task on fields, or fewer patches than
            ``n + n_heldout``.
    """
    from atlasd.datasets import make_datamodule

    dm = make_datamodule(task, **data)
    dm.setup("fit")
    spec = check_field_task(task_spec(dm, task))
    fields, targets = dm.train_dataset.tensors[:2]
    atlas = spec.atlas
    k = atlas.n_charts
    n_fields = fields.shape[0]
    if n_fields * k < n + n_heldout:
        raise ValueError(
            f"{task}: {n_fields} training fields x {k} charts = {n_fields * k} patches, fewer "
            f"than samples.n + samples.n_heldout = {n + n_heldout}; raise data.n"
        )
    # held-out patches come from a seeded random set of fields, training patches from the rest
    n_held_fields = max(1, math.ceil(n_heldout / k))
    order = torch.randperm(n_fields, generator=torch.Generator().manual_seed(seed))
    train_f, held_f = order[n_held_fields:], order[:n_held_fields]
    if train_f.numel() * k < n:
        raise ValueError(
            f"{task}: {train_f.numel() * k} training patches after holding out "
            f"{n_held_fields} fields, fewer than samples.n = {n}; raise data.n"
        )

    def patches(index: Tensor, count: int, stream: int) -> tuple[Tensor, Tensor]:
        x = atlas.extract(fields[index].float()).flatten(0, 1)
        if targets.is_floating_point():
            y = atlas.extract(targets[index].float()).flatten(0, 1)
        else:
            y = atlas.extract_labels(targets[index], int(spec.n_classes)).flatten(0, 1)
        pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed + stream))
        pick = pick[:count]
        return x[pick].contiguous(), y[pick].contiguous()

    x, y = patches(train_f, n, 1)
    xh, yh = patches(held_f, n_heldout, 2)
    return ChartSamples(x, y, xh, yh, spec.n_classes, spec)


class _FitModule(lightning.LightningModule):
    """Thin Lightning wrapper: a model, an NLL, Adam with a cosine decay to 1 % of ``lr``."""

    def __init__(self, model: nn.Module, nll: Callable, lr: float, epochs: int) -> None:
        super().__init__()
        self.model, self.nll, self.lr, self.epochs = model, nll, float(lr), int(epochs)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.nll(self.model(x), y)
        self.log("train_nll", loss, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=self.epochs, eta_min=0.01 * self.lr
        )
        return {"optimizer": opt, "lr_scheduler": sched}


def fit_model(
    model: nn.Module,
    nll: Callable,
    x: Tensor,
    y: Tensor,
    kind: str,
    opts: DegeneracyTrainingConfig,
    seed: int,
    root: Path,
    trainer_kwargs: dict[str, Any] | None = None,
) -> tuple[float, dict[str, Any] | None]:
    """Train ``model`` in place (Adam, then :func:`whitened_polish`); returns the wall time (s)
    and the polish record (None without one).

    The Adam fit runs on the Trainer's device (``trainer_kwargs``, see
    :func:`~atlasd.downstream.models.quiet_trainer`); the model then goes back to the
    device and dtype it was built in (the CPU), where the polish and every later measurement
    (LLC sampling, Hessians, ranks) run."""
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=opts.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    trainer = quiet_trainer(opts.epochs, root, trainer_kwargs=trainer_kwargs)
    home = next(p for p in model.parameters() if p.is_floating_point())
    device, dtype = home.device, home.dtype
    start = time.perf_counter()
    trainer.fit(_FitModule(model, nll, opts.lr, opts.epochs), train_dataloaders=loader)
    # explicit, not left to Lightning's teardown (which moves to the CPU but keeps a "64-true"
    # fit's float64): the measurements below expect the model as it was built
    model.to(device=device, dtype=dtype)
    model.eval()
    polish = None
    if opts.polish_steps and opts.polish_rounds:
        polish = whitened_polish(
            model,
            nll,
            x,
            y,
            kind,
            steps=opts.polish_steps,
            rounds=opts.polish_rounds,
            seed=seed,
        )
    return time.perf_counter() - start, polish


def _train_all(
    cfg: DegeneracyConfig,
    group: DiscoveredGroup,
    data: dict[tuple[int, str], ChartSamples],
    run_dir: Path,
    say: Callable[[str], None],
    trainer_kwargs: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], Any]:
    """Train both models on both data versions of every seed: ``(trained, sigma)`` with the
    regression noise level (``"auto"`` resolved from the first fitted model)."""
    from atlasd.atlas import crop

    first = next(iter(data.values()))
    kind = first.spec.target
    in_channels, in_radius = int(first.x.shape[1]), (int(first.x.shape[-1]) - 1) // 2
    out_channels = int(first.y.shape[1]) if kind == "regression" else first.n_classes
    sigma = cfg.llc.noise_std
    trained: list[dict[str, Any]] = []
    for seed in cfg.seeds:
        for version in ("symmetric", "broken"):
            x, y, xh, yh, _, _ = data[(seed, version)]
            models, r_out = build_field_pair(
                group,
                cfg.model_options("baseline"),
                cfg.model_options("equivariant"),
                in_channels,
                out_channels,
                in_radius,
                seed,
            )
            y, yh = crop(y, r_out).contiguous(), crop(yh, r_out).contiguous()
            for name, model in models.items():
                # Adam is invariant to the loss scale, so regression trains on sigma = 1
                fit_nll = gaussian_nll(1.0) if kind == "regression" else categorical_nll
                wall, polish = fit_model(
                    model,
                    fit_nll,
                    x,
                    y,
                    kind,
                    cfg.training,
                    seed,
                    run_dir / name,
                    trainer_kwargs=trainer_kwargs,
                )
                if kind == "regression" and sigma == "auto":
                    # the first fitted model (seed 0, symmetric, baseline) sets the noise level
                    with torch.no_grad():
                        resid = torch.cat(
                            [model(x[i : i + 256]) - y[i : i + 256] for i in range(0, len(x), 256)]
                        )
                    sigma = float(resid.square().mean().sqrt())
                say(
                    f"seed {seed} {version} {name}: trained in {wall:.1f} s"
                    + (
                        f" (polish: NLL {polish['nll'][0]:.5g} -> {polish['nll'][-1]:.5g}, "
                        f"gradient norm {polish['grad_norm'][0]:.3g} -> "
                        f"{polish['grad_norm'][-1]:.3g})"
                        if polish
                        else ""
                    )
                )
                trained.append(
                    {
                        "seed": seed,
                        "data": version,
                        "model": name,
                        "module": model,
                        "split": ((x, y), (xh, yh)),
                        "train_time_s": wall,
                        "polish": polish,
                    }
                )
    return trained, sigma


def _localization(
    cfg: DegeneracyConfig,
    trained: list[dict[str, Any]],
    nll: Callable[[Tensor, Tensor], Tensor],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The LLC options with ``localization`` resolved: ``auto`` takes twice ``n_beta`` times
    the most negative Hessian eigenvalue over every trained model (at least 1); a fixed value
    below ``n_beta |lambda_min|`` is flagged. Records each model's eigenvalue in ``trained``."""
    from atlasd.downstream.degeneracy.llc import default_llc_settings
    from atlasd.downstream.degeneracy.ranks import hessian_extreme_eigenvalue

    llc_opts = cfg.llc.to_dict()
    n_beta = float(default_llc_settings(cfg.samples.n)["n_beta"])
    for t in trained:
        (x, y), _ = t["split"]
        m, xc, yc = second_order_copy(t["module"], x, y, cfg.llc.hessian_dtype)
        t["hessian_min_eigenvalue"] = hessian_extreme_eigenvalue(m, nll, xc, yc)
    # the localised posterior is proper only if gamma outweighs n_beta times the most negative
    # Hessian eigenvalue; one gamma for every model keeps their LLCs comparable
    worst = max(0.0, -min(t["hessian_min_eigenvalue"] for t in trained))
    auto_gamma = max(1.0, 2.0 * n_beta * worst)
    if llc_opts["localization"] == "auto":
        llc_opts["localization"] = auto_gamma
        say(
            f"localization gamma = {auto_gamma:.4g} (most negative Hessian eigenvalue "
            f"{-worst:.4g}, n_beta {n_beta:.4g})"
        )
    elif n_beta * worst > llc_opts["localization"]:
        say(
            f"warning: localization gamma = {llc_opts['localization']:.4g} is below n_beta "
            f"|lambda_min| = {n_beta * worst:.4g}: the localised posterior is improper along "
            f"that direction and chains can drift away; auto would take {auto_gamma:.4g}"
        )
    return llc_opts


def run_degeneracy(
    config: DegeneracyConfig | dict[str, Any],
    group: DiscoveredGroup,
    run_dir: Path,
    log: Callable[[str], None] | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
) -> DegeneracyReport:
    """Train the unconstrained and the group model on symmetric and symmetry-broken data and
    measure their degeneracy (see :mod:`atlasd.downstream.degeneracy`).

    Args:
        config: a :class:`DegeneracyConfig`, or its dict (read by
            :meth:`DegeneracyConfig.from_dict`); ``broken`` left out takes the task's
            ``spec.broken``.
        group: the discovered group (2x2 chart transformations).
        run_dir: folder for Lightning's files (created).
        log: optional progress printer (one line per measured model).
        trainer_kwargs: :class:`lightning.Trainer` arguments for every training fit
            (``accelerator``, ``devices``, ``precision``, ...; e.g. ``--trainer.*``), overriding
            the defaults of :func:`~atlasd.downstream.models.quiet_trainer`; ``callbacks``
            are added. Only the Adam fits use them: each trained model is moved back to the CPU
            (in the dtype it was built in) before the polish, the LLC sampling and the Hessians.

    Returns:
        :class:`DegeneracyReport` (``runs``: one entry per seed, data version and model;
        ``summary``: per data version and model, mean and sd over seeds; ``susceptibility``:
        per model, ``delta`` = LLC(symmetric) - LLC(broken) with its uncertainty, the predicted
        shift of the rank bound, ``attainable_drop`` and ``quadratic_drop``; ``table`` and
        ``reading``: Markdown). ``to_json()`` is ``report.json``.

    Raises:
        ValueError: malformed config, a task that is not a local task on fields, a task
            without a broken variant when the config names none, a group that does not act on
            R^2, too few samples.
    """
    cfg = config if isinstance(config, DegeneracyConfig) else DegeneracyConfig.from_dict(config)
    if group.d != 2:
        raise ValueError(f"group acts on R^{group.d}; the field tasks need 2x2 chart generators")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _m: None)
    samples = cfg.samples
    base_seed = int(data_options(cfg.data).get("seed", 0))
    first_seed = cfg.seeds[0]

    # every training seed gets its own fields (data seed + training seed) and its own patches,
    # so the spread over seeds includes the data's variability; both data versions of a seed
    # share the seed, so the pair differs only in the symmetry
    def draw(seed: int, opts: dict[str, Any]) -> ChartSamples:
        data = merge_data_options(opts, {"seed": base_seed + seed})
        return chart_samples(cfg.task, data, samples.n, samples.n_heldout, seed)

    first = draw(first_seed, cfg.data)
    broken = cfg.broken if cfg.broken is not None else first.spec.broken
    if not broken:
        raise ValueError(
            f"task {cfg.task!r} has no symmetry-broken variant (spec.broken is None): broken "
            "must name the DataModule options that break the symmetry"
        )
    versions = {"symmetric": cfg.data, "broken": merge_data_options(cfg.data, broken)}
    data = {
        (seed, v): first if (seed, v) == (first_seed, "symmetric") else draw(seed, opts)
        for seed in cfg.seeds
        for v, opts in versions.items()
    }
    kind = first.spec.target
    trained, sigma = _train_all(cfg, group, data, run_dir, say, trainer_kwargs)
    nll = gaussian_nll(float(sigma)) if kind == "regression" else categorical_nll
    llc_opts = _localization(cfg, trained, nll, say)
    runs = _measure_all(
        trained,
        kind,
        nll,
        float(sigma) if kind == "regression" else 1.0,
        group.algebra.to(torch.float64),
        llc_opts,
        cfg,
        say,
    )
    info = {
        "dim": group.dim,
        "n_components": group.n_components,
        "generators": group.algebra.tolist(),
    }
    stored = {**cfg.stored(broken), "seeds": cfg.seeds}
    return summarise_degeneracy(
        stored, info, runs, sigma if kind == "regression" else None, n_samples=samples.n
    )


def _measure_all(
    trained: list[dict[str, Any]],
    kind: str,
    nll: Callable[[Tensor, Tensor], Tensor],
    noise: float,
    generators: Tensor,
    llc_opts: dict[str, Any],
    cfg: DegeneracyConfig,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """:func:`measure_degeneracy` of every trained model, as the report's run records."""
    runs: list[dict[str, Any]] = []
    for t in trained:
        model = t.pop("module")
        (x, y), (xh, yh) = t.pop("split")
        raw, free = count_parameters(model)
        start = time.perf_counter()
        m = measure_degeneracy(
            model,
            kind,
            nll,
            noise,
            (x, y),
            (xh, yh),
            generators,
            llc_opts,
            n_rank=cfg.samples.n_rank,
            n_emulate=cfg.samples.n_emulate,
            seed=t["seed"],
        )
        m.update(t)  # seed, data, model, train time, Hessian's smallest eigenvalue
        m.update(
            {
                "raw_parameters": raw,
                "free_parameters": free,
                "measure_time_s": time.perf_counter() - start,
            }
        )
        say(
            f"seed {t['seed']} {t['data']} {t['model']}: LLC {m['llc']['mean']:.2f} +- "
            f"{m['llc']['std']:.2f} (half effective dim {m['effective_dimension'] / 2:.2f}), "
            f"functional dim {m['functional_dimension']} of {free}, GN rank "
            f"{m['gauss_newton']['rank']}, emulability "
            + ", ".join(f"{e['residual']:.3f}" for e in m["emulability"])
        )
        runs.append(m)
    return runs
