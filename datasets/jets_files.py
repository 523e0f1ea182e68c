"""The real top-tagging data set: a reader of its HDF5 files.

:func:`read_top_tagging` reads the top-quark tagging reference data set (Kasieczka et
al., SciPost Phys. 7, 014 (2019)), HDF5 files written by pandas ``to_hdf(key="table")`` with the
columns ``E_0, PX_0, PY_0, PZ_0, ..., E_199, ..., PZ_199, truthE, truthPX, truthPY, truthPZ,
ttv, is_signal_new``; constituents sorted by pT and zero-padded.  Both pandas layouts are read
with PyTables ("fixed": hyperslabs of the needed columns of the ``blockN_values`` arrays;
"table": reads of the ``values_block_N`` fields, whose records hold whole rows), ``chunk_rows``
rows at a time, keeping only the needed columns, so memory stays ``O(n P)`` plus one chunk, never
the whole 806-column file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from atlasd.checks import check_int

__all__ = [
    "COMPONENTS",
    "LABEL_COLUMN",
    "MAX_CONSTITUENTS",
    "read_top_tagging",
    "top_tagging_columns",
]

#: Columns of one constituent in the real files, in this order.
COMPONENTS: tuple[str, ...] = ("E", "PX", "PY", "PZ")
#: Label column of the real files (1 = top).
LABEL_COLUMN: str = "is_signal_new"
#: Constituents stored per jet in the real files.
MAX_CONSTITUENTS: int = 200

_IO_BUFFER_BYTES = 1 << 20


def top_tagging_columns(n_constituents: int) -> list[str]:
    """Column names of the first P constituents, in the order they fill x's (P, 4) rows:
    ``["E_0", "PX_0", "PY_0", "PZ_0", "E_1", ...]``."""
    p = check_int("n_constituents", n_constituents, 1, MAX_CONSTITUENTS)
    return [f"{c}_{i}" for i in range(p) for c in COMPONENTS]


def _decode(names: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in names.tolist()]


def _layout(path: Path, key: str) -> str:
    """'fixed' or 'table': the pandas storage format of ``key`` in the HDF5 file at ``path``."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file: {exc}") from None
    with handle:
        if key not in handle:
            raise KeyError(
                f"{path} has no key {key!r} (keys: {', '.join(sorted(handle.keys())) or 'none'})"
            )
        kind = handle[key].attrs.get("pandas_type", b"")
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind == "frame":
        return "fixed"
    if kind == "frame_table":
        return "table"
    raise ValueError(
        f"{path}:{key} is not a pandas DataFrame written by to_hdf (pandas_type {kind!r})"
    )


def _runs(indices: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """Split sorted unique indices into runs of consecutive ones: (lo, hi, positions)."""
    out = []
    start = 0
    for i in range(1, len(indices) + 1):
        if i == len(indices) or indices[i] != indices[i - 1] + 1:
            out.append((int(indices[start]), int(indices[i - 1]) + 1, np.arange(start, i)))
            start = i
    return out


class _FixedReader:
    """Row-chunk reads of selected columns of a pandas "fixed" frame, straight from PyTables.

    pandas stores a frame as blocks of same-dtype columns: ``blockN_items`` (names) and
    ``blockN_values`` (rows x columns).  Each needed column is read as part of a run of adjacent
    columns (one hyperslab per run), so a chunk costs ``rows x needed columns`` of memory.
    PyTables (which wrote the file for pandas) decodes every compression filter pandas offers,
    blosc included, which h5py alone does not.
    """

    def __init__(self, path: Path, key: str, columns: list[str]) -> None:
        import tables

        self.handle = tables.open_file(str(path), mode="r", io_buffer_size=_IO_BUFFER_BYTES)
        try:
            self._index(path, key, columns)
        except tables.NoSuchNodeError as exc:
            self.handle.close()
            raise ValueError(
                f"{path}:{key} lacks a node of pandas' fixed layout ({exc}); not a pandas frame"
            ) from None
        except BaseException:
            self.handle.close()
            raise

    def _index(self, path: Path, key: str, columns: list[str]) -> None:
        group = self.handle.get_node(f"/{key}")
        where: dict[str, tuple[int, int]] = {}
        n_rows = None
        blocks = []
        for b in range(int(getattr(group._v_attrs, "nblocks", 0))):
            values = self.handle.get_node(group, f"block{b}_values")
            items = _decode(self.handle.get_node(group, f"block{b}_items").read())
            if values.ndim != 2 or values.shape[1] != len(items):
                raise ValueError(
                    f"{path}:{key} block {b} has values of shape {values.shape} for "
                    f"{len(items)} columns; not a pandas frame of the expected layout"
                )
            if n_rows is None:
                n_rows = values.shape[0]
            elif values.shape[0] != n_rows:
                raise ValueError(
                    f"{path}:{key} blocks disagree on the number of rows "
                    f"({n_rows} vs {values.shape[0]})"
                )
            blocks.append(values)
            for j, name in enumerate(items):
                where[name] = (b, j)
        self.all_columns = list(where)
        _require_columns(path, columns, self.all_columns)
        self.n_rows = int(n_rows or 0)
        self.plan = []  # (block values, runs, output positions)
        for b, values in enumerate(blocks):
            wanted = sorted((where[c][1], pos) for pos, c in enumerate(columns) if where[c][0] == b)
            if not wanted:
                continue
            idx = np.array([w[0] for w in wanted])
            out_pos = np.array([w[1] for w in wanted])
            self.plan.append((values, _runs(idx), out_pos))
        self.n_columns = len(columns)

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.n_columns), dtype=np.float64)
        for values, runs, out_pos in self.plan:
            for lo, hi, positions in runs:
                out[:, out_pos[positions]] = values[start:stop, lo:hi]
        return out

    def close(self) -> None:
        self.handle.close()


class _TableReader:
    """Row-chunk reads of selected columns of a pandas "table" frame, straight from PyTables.

    pandas stores such a frame as one PyTables table whose fields are ``index`` and either
    ``values_block_N`` (several same-dtype columns, their names in the field's ``_kind``
    attribute) or one field per data column.  Rows are compound records, so a chunk reads the
    fields that hold needed columns for ``chunk_rows`` rows and keeps only those columns
    (pandas' own ``select`` does the same but rebuilds every column of the frame per chunk,
    20x slower on the 806-column files).
    """

    def __init__(self, path: Path, key: str, columns: list[str]) -> None:
        import tables

        # PyTables keeps one I/O buffer per table, 16 MiB by default whatever the read size;
        # 1 MiB bounds it (measured no slower on 806-column files)
        self.handle = tables.open_file(str(path), mode="r", io_buffer_size=_IO_BUFFER_BYTES)
        try:
            node = self.handle.get_node(f"/{key}/table")
            where: dict[str, tuple[str, int | None]] = {}
            for field in node.colnames:
                if field == "index":
                    continue
                names = node.attrs[f"{field}_kind"] if f"{field}_kind" in node.attrs else None
                if not isinstance(names, list):
                    raise ValueError(
                        f"{path}:{key} field {field!r} has no column names; not a pandas table"
                    )
                width = node.coldtypes[field].shape
                if width == () and len(names) == 1:
                    where[str(names[0])] = (field, None)
                elif width == (len(names),):
                    where.update({str(c): (field, j) for j, c in enumerate(names)})
                else:
                    raise ValueError(
                        f"{path}:{key} field {field!r} holds shape {width} for "
                        f"{len(names)} columns; not a pandas frame of the expected layout"
                    )
            self.all_columns = list(where)
            _require_columns(path, columns, self.all_columns)
        except tables.NoSuchNodeError:
            self.handle.close()
            raise ValueError(f"{path}:{key} has no PyTables table; not a pandas table") from None
        except BaseException:
            self.handle.close()
            raise
        self.node = node
        self.n_rows = int(node.nrows)
        self.plan: dict[str, list[tuple[int | None, int]]] = {}
        for pos, c in enumerate(columns):
            field, j = where[c]
            self.plan.setdefault(field, []).append((j, pos))
        self.n_columns = len(columns)

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.n_columns), dtype=np.float64)
        for field, wanted in self.plan.items():
            values = self.node.read(start, stop, field=field)
            for j, pos in wanted:
                out[:, pos] = values if j is None else values[:, j]
        return out

    def close(self) -> None:
        self.handle.close()


def _require_columns(path: Path, columns: list[str], available: list[str]) -> None:
    have = set(available)
    missing = [c for c in columns if c not in have]
    if missing:
        n_const = sum(1 for c in available if c.startswith("E_") and c[2:].isdigit())
        raise KeyError(
            f"{path} lacks column(s) {', '.join(missing[:4])}"
            + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            + f"; the file has {n_const} constituents (E_i columns) and "
            f"{'a' if LABEL_COLUMN in have else 'no'} {LABEL_COLUMN!r} column"
        )


def read_top_tagging(
    path: str | Path,
    n_constituents: int = 20,
    *,
    n: int | None = None,
    start: int = 0,
    key: str = "table",
    chunk_rows: int = 50_000,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Read jets from a top-tagging HDF5 file (pandas ``to_hdf``, "fixed" or "table" format).

    Only the columns ``E_i, PX_i, PY_i, PZ_i`` (i < P) and ``is_signal_new`` of rows
    ``start .. start + n`` are read, ``chunk_rows`` rows at a time, so memory is
    ``O(n P)`` plus one chunk of the needed columns.

    Args:
        path: the .h5 file.
        n_constituents: P, 1..200 (the files hold 200 per jet, sorted by pT, zero-padded).
        n: rows to read (None: all rows from ``start``).
        start: first row.
        key: the pandas key ("table" in the published files).
        chunk_rows: rows per read.
        dtype: dtype of the returned 4-vectors.

    Returns:
        ``x`` (n, P, 4) 4-vectors (E, px, py, pz) as stored (GeV), ``y`` (n,) int64 labels
        (1 = top).

    Raises:
        FileNotFoundError: no file at ``path``.
        KeyError: the key or a needed column is missing (names them).
        ValueError: P outside 1..200, rows out of range, a malformed layout, NaN/Inf values, or
            labels other than 0/1.
    """
    p = check_int("n_constituents", n_constituents, 1, MAX_CONSTITUENTS)
    start = check_int("start", start, 0)
    chunk_rows = check_int("chunk_rows", chunk_rows, 1)
    if n is not None:
        n = check_int("n", n, 1)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no top-tagging file at {path}")
    columns = [*top_tagging_columns(p), LABEL_COLUMN]
    layout = _layout(path, key)
    reader = (_FixedReader if layout == "fixed" else _TableReader)(path, key, columns)
    try:
        available = reader.n_rows - start
        if available <= 0 or (n is not None and n > available):
            raise ValueError(
                f"{path} has {reader.n_rows} rows; cannot read "
                f"{'all' if n is None else n} rows from row {start}"
            )
        count = available if n is None else n
        x = torch.empty(count, 4 * p, dtype=dtype)
        y = torch.empty(count, dtype=torch.int64)
        for lo in range(0, count, chunk_rows):
            hi = min(lo + chunk_rows, count)
            block = reader.read(start + lo, start + hi)
            bad = ~np.isfinite(block)
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise ValueError(
                    f"{path} has NaN/Inf values: {int(bad.sum())} in rows {start + lo}.."
                    f"{start + hi - 1}, the first at row {start + lo + int(row)}, column "
                    f"{columns[int(col)]!r}"
                )
            labels = block[:, -1]
            if not np.isin(labels, (0.0, 1.0)).all():
                odd = labels[~np.isin(labels, (0.0, 1.0))][0]
                raise ValueError(f"{path}: {LABEL_COLUMN} must be 0 or 1, found {odd!r}")
            x[lo:hi] = torch.from_numpy(block[:, :-1]).to(dtype)
            y[lo:hi] = torch.from_numpy(labels.astype(np.int64))
    finally:
        reader.close()
    return x.view(count, p, 4), y
