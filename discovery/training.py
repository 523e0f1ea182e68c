"""Stage 1 of discovery: training the chart predictors with Lightning.

:class:`PredictorModule` is a thin LightningModule around any predictor (e.g.
:class:`~atlasd.discovery.predictors.ChartCNN`) and a loss from
:mod:`atlasd.discovery.predictors`. :func:`train_predictors` validates the data, splits it with a
seeded generator, runs a :class:`lightning.Trainer` with early stopping and best-checkpointing,
loads the best weights back and freezes the model for stage 2.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from atlasd.discovery.basis import placement, to_placement
from atlasd.discovery.predictors import LOSS_KINDS, LossKind, loss_terms

__all__ = [
    "EpochSampler",
    "LastCheckpoint",
    "NaNLossError",
    "PredictorModule",
    "checkpoint_errors",
    "evaluate_predictor",
    "last_checkpoint",
    "train_predictors",
    "trainer_defaults",
]


class NaNLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class LastCheckpoint(Callback):
    """Keep ``folder/last.ckpt``: the full state after every finished epoch (weights, optimiser,
    scheduler, callbacks, loop counters), which is what a resume starts from.

    Written through a temp file and a rename, so a run killed while saving leaves the previous
    epoch's checkpoint intact instead of a truncated one.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: Any) -> None:
        tmp = self.folder / ".last.ckpt.tmp"
        # rank zero writes, every rank waits at the barrier inside save_checkpoint
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.folder / "last.ckpt")


def last_checkpoint(folder: str | Path) -> LastCheckpoint:
    """The callback that keeps ``folder/last.ckpt`` (see :class:`LastCheckpoint`)."""
    return LastCheckpoint(folder)


@contextlib.contextmanager
def checkpoint_errors(ckpt_path: str | Path | None) -> Iterator[None]:
    """Turn the errors of resuming from an unsuitable checkpoint into one clear ValueError."""
    if ckpt_path is not None and not Path(ckpt_path).is_file():
        raise ValueError(f"checkpoint not found: {ckpt_path}")
    try:
        yield
    except RuntimeError as exc:
        text = str(exc)
        if ckpt_path is None or "state_dict" not in text:
            raise
        detail = " ".join(text.split())[:300]
        raise ValueError(
            f"checkpoint {ckpt_path} does not fit this model (another architecture?): {detail}"
        ) from exc
    except (KeyError, EOFError, pickle.UnpicklingError) as exc:
        if ckpt_path is None:
            raise
        raise ValueError(
            f"checkpoint {ckpt_path} is not a usable Lightning checkpoint: {exc!r}"
        ) from exc


class PredictorModule(lightning.LightningModule):
    """Lightning wrapper: ``model`` trained with Adam on a prediction loss.

    Args:
        model: maps a batch of inputs ``x`` to predictions shaped like the targets ``y``
            (for ChartCNN: ``(B, K, C_in, h, w) -> (B, K, C_out, h', w')``).
        loss: ``"l1"``, ``"mse"`` or ``"cross_entropy"`` (see
            :func:`~atlasd.discovery.predictors.prediction_loss`).
        lr: Adam learning rate.
        class_weights: optional ``(C,)`` cross-entropy class weights.

    Logs ``train_loss`` and ``val_loss`` per epoch and ``val_loss/chart_{k}`` for every chart
    (dim 1 of the predictions).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossKind = "l1",
        lr: float = 1e-3,
        class_weights: Tensor | None = None,
    ) -> None:
        super().__init__()
        if loss not in LOSS_KINDS:
            raise ValueError(f"loss must be one of {LOSS_KINDS}, got {loss!r}")
        self.model = model
        self.loss_kind = loss
        self.lr = float(lr)
        # A buffer moves with the module across devices; persistent=False keeps the model's
        # checkpoint keys identical with and without weights.
        self.register_buffer(
            "class_weights",
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32),
            persistent=False,
        )
        # Plain values only, so the checkpoint stays loadable with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "loss": loss,
                "lr": self.lr,
                "class_weights": None if class_weights is None else self.class_weights.tolist(),
            }
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _terms(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = batch
        return loss_terms(self.model(x), y, self.loss_kind, self.class_weights)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        num, den = self._terms(batch)
        loss = num.sum() / den.sum()
        n = len(batch[0])
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        num, den = self._terms(batch)
        n = len(batch[0])
        # synced across processes, so early stopping and the best checkpoint agree under DDP
        self.log("val_loss", num.sum() / den.sum(), prog_bar=True, batch_size=n, sync_dist=True)
        per_chart = num / den
        if per_chart.numel() > 1:
            self.log_dict({f"val_loss/chart_{k}": v for k, v in enumerate(per_chart)}, batch_size=n)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["atlasd_stage"] = "predictors"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("atlasd_stage", "predictors") != "predictors":
            raise ValueError(
                f"not a predictor checkpoint (it is from stage {checkpoint['atlasd_stage']!r})"
            )


class _StopOnNonFiniteLoss(Callback):
    """Raise :class:`NaNLossError` as soon as a training batch's loss is NaN or infinite."""

    def on_train_batch_end(
        self,
        trainer: lightning.Trainer,
        pl_module: lightning.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if loss is not None and not bool(torch.isfinite(loss.detach())):
            raise NaNLossError(
                f"training loss became {float(loss):.3g} at epoch {trainer.current_epoch} "
                f"(batch {batch_idx}); lower the learning rate or check the data"
            )


class _History(Callback):
    """Record the epoch-level train/val losses that the module logged."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: Any) -> None:
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        for key in ("train_loss", "val_loss"):
            if key in m:
                row[key] = float(m[key])
        self.epochs.append(row)

    def state_dict(self) -> dict[str, Any]:
        # kept in checkpoints, so a resumed run reports every epoch, not only the resumed ones
        return {"epochs": list(self.epochs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict["epochs"])


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffles with a permutation that depends only on ``(seed, epoch)``.

    A sampler with one running generator makes epoch e's order depend on how many epochs ran
    in this process; Lightning calls ``set_epoch`` before every epoch, so with this sampler a run
    resumed at epoch e sees exactly the batches an uninterrupted run sees.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())

    def __len__(self) -> int:
        return self.n


def trainer_defaults(**overrides: Any) -> dict[str, Any]:
    """The Trainer arguments every discovery fit starts from, updated with ``overrides``.

    Quiet (no progress bar, model summary or sanity validation; callers add their own
    display) and on one device: ``accelerator="auto"`` takes a GPU when one is visible, else
    the CPU. ``trainer_kwargs`` (``--trainer.*``) override these.
    """
    kwargs: dict[str, Any] = {
        "accelerator": "auto",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    kwargs.update(overrides)
    return kwargs


# ----------------------------------------------------------------------------- validation


def _check_data(name: str, t: Any) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim < 1:
        raise ValueError(f"{name} must have a sample axis (N, ...), got a 0-d tensor")
    if t.is_floating_point():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(t.numel() - finite.sum()) - n_nan
            first = tuple(torch.nonzero(~finite)[0].tolist())
            raise ValueError(
                f"{name} contains non-finite values: {n_nan} NaN and {n_inf} Inf "
                f"(first at index {first})"
            )


def _validate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss: str,
    class_weights: Tensor | None,
    batch_size: int,
    val_fraction: float,
) -> int:
    """Check everything that can be checked before training; return the validation size."""
    if loss not in LOSS_KINDS:
        raise ValueError(f"loss must be one of {LOSS_KINDS}, got {loss!r}")
    _check_data("x", x)
    _check_data("y", y)
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point, got {x.dtype}")
    if len(x) != len(y):
        raise ValueError(
            f"x and y must have the same number of samples, got x {tuple(x.shape)} and "
            f"y {tuple(y.shape)}"
        )
    if loss != "cross_entropy" and not y.is_floating_point():
        raise ValueError(f"{loss} targets y must be floating point, got {y.dtype}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (isinstance(val_fraction, (int, float)) and 0.0 < val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    n = len(x)
    n_val = max(1, round(n * val_fraction))
    n_train = n - n_val
    if n_train < batch_size:
        raise ValueError(
            f"too few samples: N = {n} leaves {n_train} training samples after holding out "
            f"{n_val} for validation (val_fraction {val_fraction}), fewer than batch_size = "
            f"{batch_size}; lower batch_size or provide more data"
        )

    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes and x.dtype not in dtypes:
        raise ValueError(
            f"x is {x.dtype} but the model's parameters are {sorted(map(str, dtypes))}; "
            "convert the data or the model (e.g. model.to(x.dtype))"
        )
    # Probe the output shape on two samples in eval mode under no_grad, so that BatchNorm's
    # running statistics are not touched before training.
    was_training = model.training
    device = next((p.device for p in model.parameters()), x.device)
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2].to(device))
    finally:
        model.train(was_training)
    per_sample_out, per_sample_y = tuple(out.shape[1:]), tuple(y.shape[1:])
    margin = getattr(model, "margin", None)
    hint = f" (the model's margin is {margin} pixels per side)" if margin is not None else ""
    if loss == "cross_entropy" and not y.is_floating_point():
        cdim = 1 if out.ndim == 2 else 2
        expected = per_sample_out[: cdim - 1] + per_sample_out[cdim:]
        if per_sample_y != expected:
            raise ValueError(
                f"model(x) has shape (N, *{per_sample_out}) (logits, class axis {cdim}) so "
                f"class-index targets y must be (N, *{expected}), got y of shape "
                f"{tuple(y.shape)}{hint}"
            )
        n_cls = out.shape[cdim]
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n_cls:
            raise ValueError(
                f"class-index targets must lie in 0..{n_cls - 1}, got values in {lo}..{hi}"
            )
    elif per_sample_out != per_sample_y:
        raise ValueError(
            f"model(x) and y differ in shape: x {tuple(x.shape)} gives predictions "
            f"(N, *{per_sample_out}) but y is {tuple(y.shape)}; crop y to the model's output "
            f"size{hint}"
        )
    if class_weights is not None:
        if loss != "cross_entropy":
            raise ValueError(f"class_weights only apply to loss='cross_entropy', not {loss!r}")
        cw = torch.as_tensor(class_weights)
        n_cls = out.shape[1 if out.ndim == 2 else 2]
        if cw.shape != (n_cls,) or not bool(torch.isfinite(cw).all()) or bool((cw < 0).any()):
            raise ValueError(
                f"class_weights must be {n_cls} finite non-negative numbers (one per class), "
                f"got shape {tuple(cw.shape)}"
            )
    return n_val


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_predictor(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    loss: LossKind = "l1",
    class_weights: Tensor | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Exact loss of ``model`` on ``(x, y)`` in its current mode, accumulated over batches.

    Returns:
        ``{"loss": float, "loss_per_chart": list[float]}`` (per chart: dim 1 of the
        predictions, see :func:`~atlasd.discovery.predictors.loss_terms`).
    """
    # where the model is, in its precision (a fit at precision="64-true" leaves it in float64)
    place = placement(model)
    num = den = None
    for i in range(0, len(x), batch_size):
        xb = to_placement(x[i : i + batch_size], place)
        yb = to_placement(y[i : i + batch_size], place)
        n, d = loss_terms(model(xb), yb, loss, class_weights)
        num = n if num is None else num + n
        den = d if den is None else den + d
    if num is None or den is None:
        raise ValueError("evaluate_predictor needs at least one sample")
    return {
        "loss": float(num.sum() / den.sum()),
        "loss_per_chart": (num / den).tolist(),
    }


def _check_schedule(max_epochs: Any, patience: Any, lr: Any) -> None:
    for name, value, minimum in (("max_epochs", max_epochs, 1), ("patience", patience, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")


def _split(
    x: Tensor, y: Tensor, n_val: int, batch_size: int, seed: int
) -> tuple[DataLoader, DataLoader]:
    """Train and validation loaders of a seeded split (``n_val`` samples held out)."""
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    train_loader = DataLoader(
        TensorDataset(x[train_idx], y[train_idx]),
        batch_size=batch_size,
        # seeded from `seed` and the epoch only: never the global RNG, identical on resume
        sampler=EpochSampler(len(train_idx), seed + 1),
    )
    val_loader = DataLoader(TensorDataset(x[val_idx], y[val_idx]), batch_size=batch_size)
    return train_loader, val_loader


@contextlib.contextmanager
def _fit_folder(run_dir: str | Path | None) -> Iterator[Path]:
    """``run_dir`` (created), or a temporary folder removed afterwards when it is None."""
    if run_dir is not None:
        root = Path(run_dir)
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="atlasd-predictor-") as tmp:
        yield Path(tmp)


# ----------------------------------------------------------------------------- training


def train_predictors(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    loss: LossKind = "l1",
    lr: float = 1e-3,
    batch_size: int = 16,
    max_epochs: int = 20,
    val_fraction: float = 0.1,
    patience: int = 3,
    seed: int = 0,
    run_dir: str | Path | None = None,
    logger: Any = False,
    class_weights: Tensor | None = None,
    enable_progress_bar: bool = False,
    trainer_kwargs: Mapping[str, Any] | None = None,
    ckpt_path: str | Path | None = None,
) -> dict[str, Any]:
    """Train ``model`` (in place) to predict ``y`` from ``x``; return metrics.

    Args:
        model: e.g. a :class:`~atlasd.discovery.predictors.ChartCNN`; trained in place.
        x: ``(N, K, C_in, h, w)`` input patches (any ``(N, ...)`` the model accepts).
        y: ``(N, K, C_out, h', w')`` targets, already cropped to the model's output size
            (class indices ``(N, K, h', w')`` or probabilities for ``loss="cross_entropy"``).
        loss: ``"l1"``, ``"mse"`` or ``"cross_entropy"``.
        lr: Adam learning rate.
        batch_size: training batch size (validation uses the same).
        max_epochs: upper bound on epochs.
        val_fraction: share of the samples held out for validation (at least one sample),
            drawn by a ``torch.Generator`` seeded with ``seed``.
        patience: epochs without a val-loss improvement before early stopping.
        seed: seeds the split and the shuffling; with the same initial ``model`` weights, the
            same seed gives the same trained weights (on CPU).
        run_dir: if given, the best weights go to ``run_dir/best-*.ckpt``, the full state of
            the last finished epoch (optimiser, early stopping, history) to ``run_dir/last.ckpt``
            and Lightning's default logs under ``run_dir``; otherwise all go to a temporary
            folder that is removed afterwards (give a logger with its own ``save_dir`` then).
        logger: passed to :class:`lightning.Trainer` (False, True or a Logger, e.g. wandb).
        class_weights: ``(C,)`` cross-entropy class weights.
        enable_progress_bar: show Lightning's progress bar.
        trainer_kwargs: extra :class:`lightning.Trainer` arguments (``accelerator``,
            ``devices``, ``precision``, ... as given by ``--trainer.*`` on the command line);
            they override the defaults here (``accelerator="auto"``: a GPU when one is visible,
            else the CPU; ``devices=1``), ``callbacks`` are added to ours.
        ckpt_path: a ``last.ckpt`` of an interrupted run of the same model and data: training
            resumes after its epoch and ends with the weights an uninterrupted run would have.
            A checkpoint of another architecture raises ValueError naming the mismatch.

    Returns:
        ``{"train_loss", "val_loss", "val_loss_per_chart", "epochs", "best_epoch",
        "wall_time_s", "samples_per_s", "chart_samples_per_s", "best_checkpoint", "n_train",
        "n_val", "history"}``:
        ``train_loss`` is the (train-mode) epoch mean at the best epoch; ``val_loss`` and
        ``val_loss_per_chart`` are recomputed exactly with the best weights in eval mode;
        ``samples_per_s`` counts training samples (fields) per second of ``Trainer.fit``
        (validation included), ``chart_samples_per_s`` that times ``model.n_charts`` (None for
        models without charts); ``best_checkpoint`` is None without ``run_dir``;
        ``history`` lists ``{"epoch", "train_loss", "val_loss"}`` per epoch.

    Afterwards the model holds the best weights, is in eval mode and has
    ``requires_grad_(False)``: stage 2 may backpropagate through it into its inputs without
    changing it (BatchNorm uses its running statistics). It is on the CPU (Lightning hands a
    fitted module back there), in the precision it was trained in.

    Raises:
        ValueError: before any training, for non-finite data, mismatched shapes (naming them),
            too few samples for ``batch_size``, bad arguments.
        NaNLossError (a RuntimeError): the training loss became NaN/Inf (names the epoch and
            batch); the model is then left as it was at that step, not restored.
    """
    n_val = _validate(model, x, y, loss, class_weights, batch_size, val_fraction)
    _check_schedule(max_epochs, patience, lr)
    train_loader, val_loader = _split(x, y, n_val, batch_size, seed)
    x_val, y_val = val_loader.dataset.tensors
    n_train = len(x) - n_val

    module = PredictorModule(model, loss=loss, lr=lr, class_weights=class_weights)
    with _fit_folder(run_dir) as root:
        trainer_args = trainer_defaults(
            max_epochs=max_epochs,
            logger=logger,
            enable_progress_bar=enable_progress_bar,
            default_root_dir=str(root),
            log_every_n_steps=max(1, min(50, math.ceil(n_train / batch_size))),
        )
        loaders = (train_loader, val_loader)
        extra = trainer_kwargs
        fit = _fit_predictor(module, loaders, root, patience, trainer_args, extra, ckpt_path)

    model.eval()
    model.requires_grad_(False)
    val = evaluate_predictor(
        model, x_val, y_val, loss=loss, class_weights=class_weights, batch_size=batch_size
    )
    epochs = len(fit["history"])
    wall = fit["wall_time_s"]
    samples_per_s = n_train * epochs / wall if wall > 0 else float("nan")
    n_charts = getattr(model, "n_charts", None)
    train_at_best = next(
        (r.get("train_loss") for r in fit["history"] if r["epoch"] == fit["best_epoch"]), None
    )
    return {
        "train_loss": train_at_best,
        "val_loss": val["loss"],
        "val_loss_per_chart": val["loss_per_chart"],
        "epochs": epochs,
        "best_epoch": fit["best_epoch"],
        "wall_time_s": wall,
        "samples_per_s": samples_per_s,
        "chart_samples_per_s": None if n_charts is None else samples_per_s * n_charts,
        "best_checkpoint": None if run_dir is None else fit["best_checkpoint"],
        "n_train": n_train,
        "n_val": n_val,
        "history": fit["history"],
        "world_size": fit["world_size"],
    }


def _fit_predictor(
    module: PredictorModule,
    loaders: tuple[DataLoader, DataLoader],
    root: Path,
    patience: int,
    trainer_args: dict[str, Any],
    trainer_kwargs: Mapping[str, Any] | None,
    ckpt_path: str | Path | None,
) -> dict[str, Any]:
    """Fit ``module`` on ``(train, val)`` loaders with early stopping and best-checkpointing
    under ``root``, then load the best weights into ``module.model``. Returns its history,
    best epoch and checkpoint, the wall time of ``Trainer.fit`` and the world size."""
    checkpoint = ModelCheckpoint(
        dirpath=root,
        filename="best-{epoch:03d}",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        save_weights_only=True,
        # at validation end, i.e. before the last checkpoint is taken at train-epoch end
        # (Lightning runs ModelCheckpoints after all other callbacks), so a resumed run
        # restores a best path that exists
        save_on_train_epoch_end=False,
    )
    history = _History()
    callbacks: list[Callback] = [
        _StopOnNonFiniteLoss(),
        EarlyStopping(monitor="val_loss", mode="min", patience=patience),
        checkpoint,
        history,  # before the last checkpoint, so the saved state holds this epoch's row
        last_checkpoint(root),
    ]
    extra = dict(trainer_kwargs or {})
    callbacks += list(extra.pop("callbacks", None) or [])
    trainer_args.update(extra)
    trainer = lightning.Trainer(callbacks=callbacks, **trainer_args)

    model = module.model
    model.train()
    model.requires_grad_(True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # In-memory tensors need no loader workers; Lightning's advice does not apply.
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        # Lightning 2.6 itself trips a torch 2.13 deprecation; nothing a caller can act on.
        warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
        with checkpoint_errors(ckpt_path):
            trainer.fit(
                module,
                train_dataloaders=loaders[0],
                val_dataloaders=loaders[1],
                ckpt_path=ckpt_path,
                weights_only=True,
            )
    wall = time.perf_counter() - start

    best_path = checkpoint.best_model_path
    if not best_path:
        raise RuntimeError("training produced no checkpoint (no validation epoch completed)")
    # Weights-only loading: a checkpoint is data, never code to unpickle.
    ckpt = torch.load(best_path, map_location="cpu", weights_only=True)
    prefix = "model."
    model.load_state_dict({k[len(prefix) :]: v for k, v in ckpt["state_dict"].items()})
    return {
        "history": history.epochs,
        "best_epoch": int(ckpt["epoch"]),
        "best_checkpoint": str(best_path),
        "wall_time_s": wall,
        "world_size": trainer.world_size,
    }
