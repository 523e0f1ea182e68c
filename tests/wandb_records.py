"""Read an offline wandb run's record file (run-*.wandb) back: which history keys, summary keys
and config entries a run logged.

The file is wandb's transaction log: a 7-byte header (":W&B", magic, version), then 32 KiB
blocks of LevelDB-log records (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle,
4 last), whose payloads are wandb's protobuf ``Record`` messages. wandb >= 0.2x no longer ships
a Python reader, so the tests carry this small one.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_BLOCK = 32 * 1024
_HEADER = 7


def _payloads(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a wandb run file")
    pos, parts = _HEADER, []
    while pos + _HEADER <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER:  # block trailer: padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 0 and length == 0:
            continue
        parts.append(chunk)
        if kind in (1, 4):
            yield b"".join(parts)
            parts = []


def _records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    records = []
    for payload in _payloads(path.read_bytes()):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(payload)
        records.append(rec)
    return records


def read_offline_run(run: Path, timeout: float = 30.0) -> dict[str, Any]:
    """``{"history": set of keys, "summary": set of keys, "config": dict, "kinds": record kinds
    in order}`` of one offline run folder (``.../wandb/offline-run-*``).

    wandb's service process writes the file; ``run.finish()`` can return before it has flushed
    the tail, so this waits (up to ``timeout`` seconds) for the run's ``exit`` record."""
    from google.protobuf.message import DecodeError

    (path,) = run.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = _records(path)
        except DecodeError:  # a record still being written
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        if time.monotonic() > deadline:
            kinds = [r.WhichOneof("record_type") for r in records]
            raise TimeoutError(f"{path} has no exit record after {timeout} s; records: {kinds}")
        time.sleep(0.2)
    history: set[str] = set()
    summary: set[str] = set()
    config: dict[str, Any] = {}
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history |= {it.key or "/".join(it.nested_key) for it in rec.history.item}
        elif kind == "summary":
            summary |= {it.key or "/".join(it.nested_key) for it in rec.summary.update}
        elif kind in ("config", "run"):
            updates = rec.config.update if kind == "config" else rec.run.config.update
            for it in updates:
                config[it.key or "/".join(it.nested_key)] = json.loads(it.value_json)
    kinds = [r.WhichOneof("record_type") for r in records]
    return {"history": history, "summary": summary, "config": config, "kinds": kinds}
