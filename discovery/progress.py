"""How a training stage reports progress: Rich bars in a terminal, one line per epoch in logs.

``progress`` settings (DiscoveryConfig.progress, ``atlasd --progress``):

- ``"bar"`` (or True): Lightning's RichProgressBar, for an interactive terminal;
- ``"lines"``: one plain line per epoch on stderr (stage, epoch, logged losses, seconds),
  no carriage returns, so CI logs stay readable;
- ``"none"`` (or False): silent.

Only the global-zero process prints (DDP).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning
from lightning.pytorch.callbacks import Callback

from atlasd.io import is_global_zero

__all__ = ["EpochLines", "progress_mode", "progress_trainer_kwargs", "stage_line"]

MODES = ("bar", "lines", "none")


def progress_mode(progress: bool | str | None) -> str:
    """Normalise a progress setting to one of ``MODES``."""
    if progress is True:
        return "bar"
    if progress is False or progress is None:
        return "none"
    if progress not in MODES:
        raise ValueError(f"progress must be one of {MODES} or a bool, got {progress!r}")
    return progress


def stage_line(mode: str, text: str) -> None:
    """One status line for a stage boundary (not in "none" mode, only on global zero)."""
    if mode != "none" and is_global_zero():
        print(f"[atlasd] {text}", file=sys.stderr, flush=True)


class EpochLines(Callback):
    """Print one line per finished training epoch: the stage, the epoch, the epoch-level
    metrics Lightning collected (``callback_metrics``) and the epoch's wall time."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._start = 0.0

    def on_train_epoch_start(self, trainer: lightning.Trainer, pl_module: Any) -> None:
        self._start = time.perf_counter()

    def on_validation_end(self, trainer: lightning.Trainer, pl_module: Any) -> None:
        # validation runs after the training epoch; print once its metrics exist
        if not trainer.sanity_checking:
            self._print(trainer)

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: Any) -> None:
        if not trainer.val_dataloaders:
            self._print(trainer)

    def _print(self, trainer: lightning.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if "/" not in k or k.endswith("_loss")
        }
        shown = "  ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        seconds = time.perf_counter() - self._start
        print(
            f"[atlasd] {self.stage} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  "
            f"{shown}  ({seconds:.1f} s)",
            file=sys.stderr,
            flush=True,
        )


def progress_trainer_kwargs(mode: str, stage: str) -> dict[str, Any]:
    """Trainer keyword arguments (progress bar flag and callbacks) for a progress mode."""
    if mode == "bar":
        from lightning.pytorch.callbacks import RichProgressBar

        return {"enable_progress_bar": True, "callbacks": [RichProgressBar(leave=True)]}
    callbacks = [EpochLines(stage)] if mode == "lines" else []
    return {"enable_progress_bar": False, "callbacks": callbacks}
