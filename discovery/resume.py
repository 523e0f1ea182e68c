"""Resumable stages: what a discovery run keeps in its run folder so that an interrupted run
picks up where it stopped and a finished stage is never redone.

Layout under ``run_dir/stages/``::

    run.json                  fingerprint of the run (data hash, settings, seed)
    <stage>/last.ckpt         Lightning's full checkpoint at the last finished epoch
    <stage>/best-*.ckpt       (predictors) weights of the best validation epoch
    <stage>.json              written once the stage has finished: its metrics
    <stage>.pt                the stage's result tensors (state dict), weights-only loadable

A stage is *done* when ``<stage>.json`` exists; it is resumed from ``<stage>/last.ckpt`` when
that exists but the stage is not done; otherwise it starts fresh. The fingerprint guards against
resuming with other data or settings: a mismatch is an error naming the differing entries,
never a silent mix of two runs. Only the global-zero process writes (DDP), all processes read.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from atlasd.io import is_global_zero, json_safe, write_atomic, write_json_atomic

__all__ = ["STAGES", "StageStore", "checkpoint_stage", "tensor_digest"]

STAGES = ("predictors", "basis", "cosets")

# Trainer options that change how a run looks, never what it computes.
_COSMETIC = {"logger", "callbacks", "enable_progress_bar", "enable_model_summary"}


def tensor_digest(*tensors: Tensor | None) -> str:
    """SHA-256 of tensors' shapes, dtypes and bytes (None allowed): identifies a dataset."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """JSON-comparable form of a settings value (tensors by digest, others by their repr)."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if torch.is_tensor(value):
        return f"tensor:{tensor_digest(value)}"
    return type(value).__name__


class StageStore:
    """The resumable state of one discovery run in ``run_dir/stages``.

    Args:
        run_dir: the run folder, or None for a run that keeps nothing (every stage runs).
        fingerprint: what must match for a resume (settings, seed, data digest): any JSON-able
            mapping; entries of ``trainer_kwargs`` that only change the output's look are ignored.
        resume: False deletes earlier stage state first (a fresh run in the same folder).
    """

    def __init__(
        self, run_dir: str | Path | None, fingerprint: Mapping[str, Any], resume: bool = True
    ) -> None:
        self.root = None if run_dir is None else Path(run_dir) / "stages"
        fp = dict(fingerprint)
        if isinstance(fp.get("trainer_kwargs"), Mapping):
            fp["trainer_kwargs"] = {
                k: v for k, v in fp["trainer_kwargs"].items() if k not in _COSMETIC
            }
        self.fingerprint = _plain(fp)
        self.resumed: list[str] = []
        if self.root is None:
            return
        if not resume and self.root.exists() and is_global_zero():
            shutil.rmtree(self.root)
        self._check_fingerprint()

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _check_fingerprint(self) -> None:
        path = self.root / "run.json"
        if path.exists():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"unreadable run state {path}: {exc}") from exc
            if saved != self.fingerprint:
                keys = sorted(
                    k
                    for k in set(saved) | set(self.fingerprint)
                    if saved.get(k) != self.fingerprint.get(k)
                )
                raise ValueError(
                    f"{self.root.parent} holds a run with other settings (differing: "
                    f"{', '.join(keys)}); pass --fresh to start over or choose another --run_dir"
                )
        elif is_global_zero():
            write_json_atomic(path, self.fingerprint)

    def stage_dir(self, stage: str) -> Path | None:
        """Folder for the stage's Lightning checkpoints (None without a run folder)."""
        _check_stage(stage)
        return None if self.root is None else self.root / stage

    def last_checkpoint(self, stage: str) -> Path | None:
        """The stage's last full checkpoint, if an earlier attempt left one."""
        folder = self.stage_dir(stage)
        if folder is None:
            return None
        path = folder / "last.ckpt"
        return path if path.is_file() else None

    def done(self, stage: str) -> dict[str, Any] | None:
        """The metrics saved when the stage finished, or None if it has not finished."""
        _check_stage(stage)
        if self.root is None:
            return None
        path = self.root / f"{stage}.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"unreadable stage record {path}: {exc}") from exc

    def tensors(self, stage: str) -> dict[str, Tensor]:
        """The result tensors saved with a finished stage (weights-only loading, no pickle)."""
        path = self.root / f"{stage}.pt"
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt files
            raise ValueError(f"cannot load stage result {path}: {exc}") from exc

    def finish(
        self, stage: str, metrics: Mapping[str, Any], tensors: Mapping[str, Tensor] | None = None
    ) -> None:
        """Record a finished stage: tensors first, then the marker (so a marker implies both)."""
        _check_stage(stage)
        if self.root is None or not is_global_zero():
            return
        if tensors is not None:
            buf = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buf)
            write_atomic(self.root / f"{stage}.pt", buf.getvalue())
        write_json_atomic(self.root / f"{stage}.json", json_safe(dict(metrics)))


def checkpoint_stage(path: str | Path) -> str:
    """The stage ("predictors" or "basis") a Lightning checkpoint written by atlasd belongs to.

    Loaded weights-only (no code is unpickled). ValueError for a missing file, a file that is not
    a checkpoint, or a checkpoint without atlasd's stage tag.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for files that are not checkpoints
        detail = " ".join(str(exc).split())[:200]
        raise ValueError(f"{path} is not a readable checkpoint: {detail}") from exc
    stage = ckpt.get("atlasd_stage") if isinstance(ckpt, dict) else None
    if stage not in ("predictors", "basis"):
        raise ValueError(f"{path} is not an atlasd stage checkpoint (no 'atlasd_stage' entry)")
    return stage


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
