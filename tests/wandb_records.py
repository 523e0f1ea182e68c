"""Record what code under test hands to wandb, through wandb's public API only.

An offline run of the installed wandb (0.31) writes its history, summary and config only into
the binary transaction log ``run-*.wandb`` (checked: no ``files/wandb-summary.json`` nor
``files/config.yaml``; those appear when a run is synced), wandb ships no reader for that file,
and ``wandb.Api`` needs a server. So the tests record at the documented API instead:
``wandb.Run.log`` (every key logged to the history, whoever calls it: Lightning's
``WandbLogger`` does too), and, just before ``wandb.Run.finish``, the run's public ``summary``
(the service's current summary: explicit summary values and the last value of every logged
key), ``config`` and ``dir``. The files wandb writes into the run folder itself (media,
tables) are public artefacts and are checked directly by the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def record_wandb_runs() -> Iterator[list[dict[str, Any]]]:
    """Within the block, every finished wandb run appends ``{"history": set of logged keys,
    "summary": dict, "config": dict, "dir": Path of the run's files folder, "n_log_calls":
    int}`` to the yielded list (in the order the runs finish). The wrapped methods call the
    real ones, so the runs are written exactly as without the recorder."""
    import wandb

    runs: list[dict[str, Any]] = []
    logged: dict[int, dict[str, Any]] = {}
    original_log, original_finish = wandb.Run.log, wandb.Run.finish

    def entry(run: wandb.Run) -> dict[str, Any]:
        return logged.setdefault(id(run), {"history": set(), "n_log_calls": 0})

    def log(self: wandb.Run, data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        record = entry(self)
        record["history"] |= set(data)
        record["n_log_calls"] += 1
        return original_log(self, data, *args, **kwargs)

    def finish(self: wandb.Run, *args: Any, **kwargs: Any) -> Any:
        record = logged.pop(id(self), None) or {"history": set(), "n_log_calls": 0}
        record["summary"] = dict(self.summary)
        record["config"] = dict(self.config)
        record["dir"] = Path(self.dir)
        runs.append(record)
        return original_finish(self, *args, **kwargs)

    wandb.Run.log, wandb.Run.finish = log, finish
    try:
        yield runs
    finally:
        wandb.Run.log, wandb.Run.finish = original_log, original_finish
