"""Test-wide isolation: wandb never reaches a network or the user's folders."""

from __future__ import annotations

import os

import pytest

# Before torch is imported by any test module: on a shared 2-core machine OpenMP's spin-waiting
# threads make small tensor ops tens of times slower whenever another process holds a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "wandb"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        path = root / var.lower()
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(path))
