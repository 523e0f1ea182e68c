"""Test-wide isolation: wandb never reaches a network or the user's folders."""

from __future__ import annotations

import os
import random

import pytest

# Before torch is imported by any test module: on a shared 2-core machine OpenMP's spin-waiting
# threads make small tensor ops tens of times slower whenever another process holds a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True)
def _restore_global_rng():
    """Save torch's, numpy's and python's global RNG state and restore it after each test.

    Several tests call ``torch.manual_seed`` (or the library seeds the global generators); without
    this, what one test leaves behind would feed the next one's draws and the suite's outcome would
    depend on test order. numpy and torch are imported here, not at the top, so that
    ``OMP_WAIT_POLICY`` is set before either loads.
    """
    import numpy as np
    import torch

    python_state = random.getstate()
    numpy_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is the one restored)
    torch_state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)  # noqa: NPY002
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None and torch.cuda.is_initialized():
            torch.cuda.set_rng_state_all(cuda_states)


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "wandb"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        path = root / var.lower()
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(path))
