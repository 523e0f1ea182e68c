"""Stage 2 as a Lightning module: fit a LieBasis to an equivariance objective.

The module is a thin wrapper: the objective is a plain function of a batch and sampled group
elements (discovery/basis.py); this file adds the optimiser, logging, a per-epoch history of the
generators, NaN detection and the Trainer plumbing (checkpoints, DDP, loggers come from Lightning).

Devices: everything a fit touches is registered with the module (the basis, an ``nn.Module``
objective holding the frozen predictor and its masks, the reference algebra as a buffer) or
comes through the DataLoader, so the Trainer's accelerator and precision apply to all of it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from atlasd.discovery.basis import LieBasis, placement, to_placement

__all__ = ["BasisModule", "fit_basis", "quiet_lightning", "screen_initializations"]

# objective(batch, g, rho_in, rho_out) -> scalar loss
Objective = Callable[[tuple[Tensor, ...], Tensor, Tensor | None, Tensor | None], Tensor]

# state-dict keys of the objective, wherever the module holding it sits in a load
_OBJECTIVE_KEY = re.compile(r"(^|\.)objective\.")


def _drop_objective_state(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "objective.")]:
        del state_dict[key]


def _ignore_objective_keys(module: nn.Module, incompatible: Any) -> None:
    for keys in (incompatible.missing_keys, incompatible.unexpected_keys):
        keys[:] = [k for k in keys if not _OBJECTIVE_KEY.search(k)]


@contextlib.contextmanager
def quiet_lightning(enabled: bool = True) -> Iterator[None]:
    """Silence Lightning's start-up chatter (accelerator lines, tips, deprecation warnings of its
    own internals) for the duration of a fit, restoring the logging levels afterwards."""
    if not enabled:
        yield
        return
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"lightning\..*")
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class BasisModule(L.LightningModule):
    """Trains ``basis`` to minimise ``objective`` + regularisers.

    Args:
        basis: the LieBasis to fit.
        objective: function of (batch, g, rho_in, rho_out) -> scalar loss. An ``nn.Module``
            (e.g. :class:`~atlasd.discovery.basis.LocalObjective`) is registered as the
            submodule ``objective``, so the Trainer moves its frozen predictor and buffers with
            the basis; a plain function must itself run on the device of its inputs. The
            objective is frozen and rebuilt by the caller, so checkpoints leave it out: they hold
            the basis only, whatever the size of the predictor.
        group_shape: function batch -> batch shape of the group elements to sample, e.g.
            (B, K) for one element per sample and chart.
        scale: std of the coefficients c.
        lr: Adam learning rate; regulariser weights as in LieBasis.regularization.
        seed: seeds the sampling of group elements (offset by the process rank under DDP).
        reference: optional ground-truth algebra (j, d, d): its similarity to the generators is
            logged every epoch (``basis/similarity_to_truth``), for dashboards only; a buffer
            (not saved), compared on the CPU in float64.
    """

    def __init__(
        self,
        basis: LieBasis,
        objective: Objective,
        group_shape: Callable[[tuple[Tensor, ...]], tuple[int, ...]],
        *,
        scale: float = 0.5,
        lr: float = 1e-2,
        overlap_weight: float = 0.1,
        overlap_kind: str = "cosine",
        magnitude_weight: float = 0.0,
        magnitude_clamp: float = 1.0,
        seed: int = 0,
        reference: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer(
            "reference",
            None if reference is None else torch.as_tensor(reference).double(),
            persistent=False,
        )
        self.basis = basis
        self.objective = objective
        self.register_state_dict_post_hook(_drop_objective_state)
        self.register_load_state_dict_post_hook(_ignore_objective_keys)
        self.group_shape = group_shape
        self.scale = scale
        self.lr = lr
        self.reg = {
            "overlap_weight": overlap_weight,
            "overlap_kind": overlap_kind,
            "magnitude_weight": magnitude_weight,
            "magnitude_clamp": magnitude_clamp,
        }
        self.seed = seed
        self._gen: torch.Generator | None = None
        self.history: list[dict[str, Any]] = []
        self._epoch_losses: list[float] = []

    def on_train_epoch_start(self) -> None:
        # seeded per (seed, rank, epoch), not one stream for the whole fit: a run resumed at
        # epoch e draws exactly the group elements an uninterrupted run draws there
        self._gen = torch.Generator(device=self.device).manual_seed(
            self.seed + 1000 * self.global_rank + 1_000_003 * self.current_epoch
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["atlasd_stage"] = "basis"
        checkpoint["basis_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("atlasd_stage") != "basis":
            raise ValueError("not a basis-stage checkpoint (no 'atlasd_stage': 'basis' entry)")
        self.history = list(checkpoint.get("basis_history", []))

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        g, r_in, r_out = self.basis.sample(self.group_shape(batch), self.scale, self._gen)
        eq = self.objective(batch, g, r_in, r_out)
        loss = eq + self.basis.regularization(**self.reg)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"basis loss became {float(loss.detach())} at epoch {self.current_epoch}, step "
                f"{batch_idx}; lower the learning rate or the sampling scale"
            )
        self.log("basis/equivariance_loss", eq, prog_bar=True, on_step=False, on_epoch=True)
        self.log("basis/loss", loss, on_step=False, on_epoch=True)
        self._epoch_losses.append(float(eq.detach()))
        return loss

    def on_train_epoch_end(self) -> None:
        # fit_basis calls this earlier, from a callback ahead of the checkpoint callback, so the
        # saved state holds this epoch's row; the guard makes the second call a no-op
        if self.history and self.history[-1]["epoch"] == int(self.current_epoch):
            return
        mean = sum(self._epoch_losses) / max(len(self._epoch_losses), 1)
        self._epoch_losses.clear()
        generators = self.basis.effective()[0].detach().cpu()
        self.history.append(
            {
                "epoch": int(self.current_epoch),
                "equivariance_loss": mean,
                "generators": generators.tolist(),
            }
        )
        if self.reference is not None:
            from atlasd.lie import similarity

            sim = similarity(generators.double(), self.reference.detach().cpu().double())
            self.history[-1]["similarity_to_truth"] = sim
            self.log("basis/similarity_to_truth", sim, on_step=False, on_epoch=True)
        if self.logger is not None and hasattr(self.logger, "log_image"):
            from atlasd.group import render_generators

            self.logger.log_image(
                key="basis/generators",
                images=[render_generators(generators, f"epoch {self.current_epoch}")],
                step=self.global_step,
            )

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.Adam(self.basis.parameters(), lr=self.lr)
        # cosine decay to 5% of the rate: the objective is a noisy expectation over sampled
        # group elements, and a constant rate leaves the generators jittering around the optimum
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=0.05 * self.lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _RecordEpoch(L.Callback):
    """Close the module's epoch (history row, logs) before the checkpoint callback runs:
    Lightning calls callbacks' epoch-end hooks before the module's own."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: BasisModule) -> None:
        pl_module.on_train_epoch_end()


def screen_initializations(
    module: BasisModule,
    tensors: tuple[Tensor, ...],
    *,
    n_candidates: int,
    batch_size: int,
    n_batches: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Start the basis from the best of ``n_candidates`` random initial generator sets.

    The objective over normalised generators has local minima (a trained predictor can be
    nearly invariant along a spurious direction it never saw data for), so gradient descent from
    one random start sometimes lands in the wrong basin. Each candidate is scored, without
    gradients, on the same ``n_batches`` batches and the same sampled coefficients (common random
    numbers, so score differences are not sampling noise); the best replaces the module's
    generators in place. Costs about n_candidates * n_batches / 3 training steps.

    Runs outside Lightning, before the fit: group elements are sampled where the basis is (the
    CPU, with a CPU generator, so the choice does not depend on the accelerator) and the batches
    and elements are moved to where the objective computes (:func:`placement`).

    Returns {"scores": [...], "chosen": index}.
    """
    basis = module.basis
    gen = torch.Generator().manual_seed(seed + 7919)
    n = tensors[0].shape[0]
    batches = [
        tuple(t[idx] for t in tensors)
        for idx in (torch.randperm(n, generator=gen)[:batch_size] for _ in range(n_batches))
    ]
    shape = basis.generators.shape
    candidates = torch.randn((n_candidates, *shape), generator=gen)
    candidates[0] = basis.generators.detach()
    scores = []
    original = basis.generators.detach().clone()

    def assign(value: Tensor) -> None:
        # unit-norm generators; its own no_grad: some objectives (geomloss) switch gradient
        # mode on internally
        with torch.no_grad():
            basis.generators.copy_(value / value.flatten(1).norm(dim=1)[:, None, None])

    place = placement(module.objective)

    def there(t: Tensor | None) -> Tensor | None:
        return None if t is None else to_placement(t, place)

    batches = [tuple(to_placement(t, place) for t in batch) for batch in batches]
    for cand in candidates:
        assign(cand)
        total = 0.0
        for b, batch in enumerate(batches):
            with torch.no_grad():
                g, r_in, r_out = basis.sample(
                    module.group_shape(batch), module.scale, torch.Generator().manual_seed(b)
                )
                total += float(module.objective(batch, there(g), there(r_in), there(r_out)))
                total += float(basis.regularization(**module.reg))
        scores.append(total / len(batches))
    best = int(torch.tensor(scores).nan_to_num(float("inf")).argmin())
    assign(candidates[best] if best else original)
    return {"scores": scores, "chosen": best}


def fit_basis(
    module: BasisModule,
    tensors: tuple[Tensor, ...],
    *,
    batch_size: int,
    epochs: int,
    seed: int = 0,
    trainer_kwargs: dict[str, Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    ckpt_path: str | Path | None = None,
) -> dict[str, Any]:
    """Run stage 2 with a Lightning Trainer over ``tensors`` (shuffled, seeded).

    ``checkpoint_dir`` keeps ``last.ckpt`` after every epoch; ``ckpt_path`` resumes from such a
    checkpoint and reaches the generators of an uninterrupted run (the shuffling and the
    sampled group elements depend only on the seed and the epoch).

    ``trainer_kwargs`` override the Trainer's defaults (``accelerator="auto"``: a GPU when one
    is visible, else the CPU; ``devices=1``); ``callbacks`` are added to ours. The Trainer moves
    the module (basis, objective, buffers) and the batches to its device and precision, and
    hands the module back on the CPU when the fit ends.

    Returns metrics: final and per-epoch equivariance loss, wall time, samples per second.
    """
    from atlasd.discovery.training import (
        EpochSampler,
        checkpoint_errors,
        last_checkpoint,
        trainer_defaults,
    )

    n = tensors[0].shape[0]
    loader = DataLoader(
        TensorDataset(*tensors),
        batch_size=batch_size,
        sampler=EpochSampler(n, seed),
        drop_last=n >= batch_size,
    )
    kwargs = trainer_defaults(max_epochs=epochs, logger=False, enable_checkpointing=False)
    extra = dict(trainer_kwargs or {})
    callbacks = list(extra.pop("callbacks", None) or [])
    if checkpoint_dir is not None:
        callbacks += [_RecordEpoch(), last_checkpoint(checkpoint_dir)]
    kwargs.update(extra)
    start = time.perf_counter()
    with quiet_lightning(not kwargs.get("enable_progress_bar", False)):
        trainer = L.Trainer(callbacks=callbacks, **kwargs)
        with checkpoint_errors(ckpt_path):
            trainer.fit(module, loader, ckpt_path=ckpt_path, weights_only=True)
    wall = time.perf_counter() - start
    losses = [h["equivariance_loss"] for h in module.history]
    return {
        "equivariance_loss": losses[-1] if losses else float("nan"),
        "equivariance_loss_per_epoch": losses,
        "wall_time_s": wall,
        "samples_per_s": n * len(losses) / wall if wall > 0 else float("nan"),
        "epochs": len(losses),
        "world_size": trainer.world_size,
    }
