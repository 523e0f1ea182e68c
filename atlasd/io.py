"""Atomic file output: results are either fully written or not there at all."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["check_writable", "is_global_zero", "json_safe", "write_atomic", "write_json_atomic"]


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, then rename.

    The rename is atomic on POSIX file systems, so a failure at any point (full disk, read-only
    folder, interruption) leaves whatever was at ``path`` before untouched and no temp file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Serialise ``obj`` as indented JSON (NaN/Inf rejected) and write it atomically."""
    return write_atomic(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None, so strict JSON can hold it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def is_global_zero() -> bool:
    """True in the process that writes results: rank 0 of a distributed run, or a plain run.

    Uses torch.distributed once it is initialised, else the environment Lightning gives the
    processes it launches (``NODE_RANK``, ``LOCAL_RANK``), so it is right even before the
    first fit of a DDP child process.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("RANK", "NODE_RANK", "LOCAL_RANK"))


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove it takes a file, before hours of work go into it.

    Writes and removes a small probe file (so a read-only or full file system is caught here,
    with the OS's reason, not when the results are ready). Raises OSError naming the folder.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = write_atomic(folder / f".atlasd-probe-{os.getpid()}", b"0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise OSError(f"cannot write to the output folder {folder}: {exc.strerror or exc}") from exc
    return folder
