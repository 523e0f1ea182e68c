"""A user's own data: the ``files`` task (docs/own_data.md).

One file holds the samples; the YAML names the arrays in it and says what kind of discovery to
run::

    task: files
    data:
      path: fields.npz        # .npz | .nc | .h5 / .hdf5 | .pt
      x: x                    # input array (or a list of arrays, stacked as channels / columns)
      y: y                    # optional targets
      kind: local             # local | global | distribution
      atlas: {centers: [[20, 20], [40, 44]], radius: 10}    # local (and field distribution)

Formats (chosen by the file's extension, case-insensitive)
    ``.npz``: :func:`numpy.load` with ``allow_pickle=False``; names are the archive's keys.
    ``.nc``: :func:`xarray.open_dataset`; names are variables (data variables or coordinates),
    decoded by xarray (fill values become NaN, which is then reported).  ``.h5`` / ``.hdf5``:
    h5py; names are dataset paths, nested ones written ``"group/dataset"``.  ``.pt``:
    :func:`torch.load` with ``weights_only=True`` of a dict of tensors (nested dicts addressed
    ``"outer/inner"``); numpy arrays inside a ``.pt`` are refused by ``weights_only``, so save
    ``torch.from_numpy(a)`` instead.  The first axis of every array is the sample axis ``N``.
    A relative ``path`` is relative to the working directory.

Shapes, per kind (``N`` samples)
    ``local``: ``x`` fields ``(N, C, H, W)``; ``(N, H, W)`` is read as one channel
    ``(N, 1, H, W)``.  ``y``: float fields ``(N, C', H, W)`` (or ``(N, H, W)``, one channel) for
    regression, or integer class maps ``(N, H, W)`` (or ``(N, 1, H, W)``) for segmentation, on
    the same ``H x W`` grid.  ``y`` is required (the predictors are trained on it).
    ``global``: ``x`` vectors ``(N, d)`` or sets of vectors ``(N, P, d)``; the group acts on the
    last axis.  ``y``: float ``(N,)`` or ``(N, c)`` (regression) or integer ``(N,)`` class
    indices.  ``y`` is required.
    ``distribution``: ``x`` points ``(N, d)`` (the group acts on the raw coordinates: centre
    them first if the symmetry is about the mean), or fields ``(N, C, H, W)`` / ``(N, H, W)``
    together with an ``atlas`` (transformed chart patches are compared with the data).  No
    targets: ``q(g x) = q(x)`` is a property of ``x`` alone, so a ``y`` given here is an error
    (it would otherwise be silently unused; use kind ``global`` to discover symmetries of a
    function of ``x``).

    Floating inputs and targets become float32, integer (and boolean) targets int64 class
    indices, which must be non-negative; integer inputs are converted to float32.

Atlas
    A mapping with ``centers`` (a list of pairs), ``radius`` (the chart radius in pixels: each
    patch is ``(2 radius + 1)`` pixels wide) and optional ``manifold``: ``"plane"`` (default;
    centres are ``(row, col)`` pixels) or ``"sphere"`` (the field is an equirectangular
    latitude-longitude grid as in :mod:`atlasd.atlas`, row 0 next to the north pole, column 0
    starting at longitude 0; centres are ``(lat, lon)`` in degrees, east-positive, and each chart
    is centred on the pixel whose grid cell contains that point, see :func:`sphere_pixel`).  A
    chart that leaves the field raises ``ValueError`` naming the chart and the field shape.

Ground truth (optional)
    ``ground_truth: {algebra: [[[0, -1], [1, 0]]], cosets: [...]}``: a known algebra
    ``(k, d, d)`` (and cosets ``(m, d, d)``), in chart coordinates for fields (``d = 2``) or on
    the last axis of ``x`` for vectors.  When given, ``atlasd discover`` reports the
    similarity of the discovered group to it.

Errors
    Everything is checked before any discovery runs and raises ``FileNotFoundError`` (no file)
    or ``ValueError`` with one line naming the problem: an unknown extension (the supported ones
    are listed), an unknown kind, a missing array (the ones present are listed), a wrong rank for
    the kind (expected and found shapes), NaN or Inf (how many, in which array), ``x`` and ``y``
    with different ``N``, a missing, misplaced or malformed atlas, a chart leaving the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from atlasd.checks import check_fraction, check_int
from atlasd.datasets.base import TaskSpec, derive_spec, not_set_up
from atlasd.datasets.splits import SplitsDataModule

__all__ = [
    "KINDS",
    "SUPPORTED_EXTENSIONS",
    "FilesData",
    "FilesDataModule",
    "build_atlas",
    "check_ground_truth",
    "load_files",
    "prepare_inputs",
    "prepare_targets",
    "read_arrays",
    "sphere_pixel",
]

#: File extensions the ``files`` task reads, and the reader each one uses.
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".npz", ".nc", ".h5", ".hdf5", ".pt")
#: Discovery kinds.
KINDS: tuple[str, ...] = ("local", "global", "distribution")
_ATLAS_KEYS = ("centers", "radius", "manifold")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NEEDS_TARGETS = (
    "kind {kind} needs targets: set data.y to the array the predictors learn from x "
    "(or use kind distribution for a symmetry of x's distribution alone)"
)
_NO_TARGETS = (
    "kind distribution takes no targets y (it finds g with q(g x) = q(x) from x alone); "
    "remove data.y, or use kind global / local for a function of x"
)


# --------------------------------------------------------------------------------------------
# Readers: path + names -> {name: numpy array}
# --------------------------------------------------------------------------------------------


class _DataError(ValueError):
    """A problem this module found and named (passed through as is, unlike a library's errors,
    which :func:`read_arrays` rewords to name the file)."""


def _missing(name: str, path: Path, present: Sequence[str], what: str = "variable") -> ValueError:
    listed = ", ".join(sorted(present)) if present else "nothing"
    return _DataError(f"{what} {name!r} not found in {path}; it holds: {listed}")


def _read_npz(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        present = list(archive.files)
        for name in names:
            if name not in present:
                raise _missing(name, path, present, "array")
        return {name: archive[name] for name in names}


def _read_netcdf(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    import xarray as xr

    with xr.open_dataset(path) as ds:
        present = [str(v) for v in ds.variables]
        for name in names:
            if name not in present:
                raise _missing(name, path, present)
        return {name: np.asarray(ds[name].values) for name in names}


def _read_hdf5(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as handle:
        datasets: list[str] = []
        handle.visititems(
            lambda key, node: datasets.append(key) if isinstance(node, h5py.Dataset) else None
        )
        out = {}
        for name in names:
            node = handle.get(name.strip("/"))
            if not isinstance(node, h5py.Dataset):
                raise _missing(name, path, datasets, "dataset")
            out[name] = np.asarray(node[()])
        return out


def _read_torch(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _DataError(
            f"cannot load {path} with torch.load(weights_only=True) (a .pt file must hold a dict "
            f"of tensors; numpy arrays are refused, save torch.from_numpy(a)): {first}"
        ) from None
    if not isinstance(content, Mapping):
        raise _DataError(
            f"{path} holds a {type(content).__name__}, expected a dict of tensors (name -> tensor)"
        )
    present = _tensor_keys(content)
    out = {}
    for name in names:
        node: Any = content
        for part in name.strip("/").split("/"):
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Tensor):
            raise _missing(name, path, present, "tensor")
        node = node.detach().cpu()
        if node.dtype in (torch.float16, torch.bfloat16):
            node = node.float()  # numpy has no bfloat16; float32 holds both exactly
        out[name] = node.numpy()
    return out


def _tensor_keys(content: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for key, value in content.items():
        if isinstance(value, Mapping):
            keys += _tensor_keys(value, f"{prefix}{key}/")
        elif isinstance(value, Tensor):
            keys.append(f"{prefix}{key}")
    return keys


_READERS = {
    ".npz": _read_npz,
    ".nc": _read_netcdf,
    ".h5": _read_hdf5,
    ".hdf5": _read_hdf5,
    ".pt": _read_torch,
}


def _check_path(path: Any) -> Path:
    """``path`` as an existing file with a supported extension (checked before any reading)."""
    if path is None:
        raise ValueError(
            "task files needs data.path: a " + ", ".join(SUPPORTED_EXTENSIONS) + " file"
        )
    if not isinstance(path, str | Path):
        raise ValueError(f"data.path must be a file name, got {type(path).__name__} {path!r}")
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise ValueError(
            f"unsupported file extension {path.suffix or '(none)'!r} of {path}; supported: "
            + ", ".join(SUPPORTED_EXTENSIONS)
        )
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path} (working directory {Path.cwd()})")
    return path


def read_arrays(path: str | Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Read the arrays ``names`` from ``path``, chosen by its extension (SUPPORTED_EXTENSIONS).

    Returns ``{name: numpy array}`` with the stored shapes and dtypes. Raises FileNotFoundError
    for a missing file and ValueError for an unsupported extension, an unreadable file or a
    missing name (the message lists the names the file holds).
    """
    path = _check_path(path)
    reader = _READERS[path.suffix.lower()]
    try:
        return reader(path, list(names))
    except _DataError:
        raise
    except Exception as exc:  # each format's library raises its own types
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"cannot read {path} as {path.suffix} file: {message}") from None


# --------------------------------------------------------------------------------------------
# Validation: numpy arrays -> tensors of the documented shapes
# --------------------------------------------------------------------------------------------


def _numeric(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} has dtype {a.dtype}, expected real numbers (float or integer)")
    if a.ndim == 0 or a.shape[0] == 0:
        raise ValueError(f"{what} has shape {a.shape}: no samples along the first axis")
    return a


def _finite_float32(a: np.ndarray, what: str) -> Tensor:
    """A float32 tensor of ``a``; ValueError counting NaN / Inf (also those float32 overflow)."""
    if a.dtype.kind == "f":
        n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        if n_nan or n_inf:
            raise ValueError(f"{what} contains {n_nan} NaN and {n_inf} Inf values (of {a.size})")
    big = int((np.abs(a.astype(np.float64, copy=False)) > _FLOAT32_MAX).sum())
    if big:
        raise ValueError(f"{what} has {big} values beyond float32's range (|v| > 3.4e38)")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _fields_layout(kind: str, has_atlas: bool) -> bool:
    return kind == "local" or (kind == "distribution" and has_atlas)


def _expected_x(kind: str, has_atlas: bool) -> str:
    if _fields_layout(kind, has_atlas):
        return "fields (N, C, H, W) or (N, H, W)"
    if kind == "global":
        return "vectors (N, d) or sets of vectors (N, P, d)"
    return "points (N, d) (or fields (N, C, H, W) together with an atlas)"


def _stack(arrays: Sequence[np.ndarray], names: Sequence[str], fields: bool) -> np.ndarray:
    """Several arrays as one: channels of fields (axis 1) or columns of vectors (last axis)."""
    if len(arrays) == 1:
        return arrays[0]
    if fields:
        parts = [a[:, None] if a.ndim == 3 else a for a in arrays]
        axis, what = 1, "channels"
    else:
        parts = [a[..., None] if a.ndim == 1 else a for a in arrays]
        axis, what = -1, "columns"
    shapes = [tuple(np.delete(np.array(p.shape), axis % p.ndim)) for p in parts]
    if len({p.ndim for p in parts}) > 1 or len(set(shapes)) > 1:
        listed = ", ".join(f"{n} {a.shape}" for n, a in zip(names, arrays, strict=True))
        raise ValueError(f"x arrays cannot be stacked as {what}: shapes {listed}")
    return np.concatenate([p.astype(np.result_type(*parts), copy=False) for p in parts], axis)


def prepare_inputs(x: np.ndarray, kind: str, has_atlas: bool, what: str = "x") -> Tensor:
    """Validate inputs ``x`` for ``kind`` and return them as float32.

    Fields (kind local, or distribution with an atlas): ``(N, C, H, W)``; ``(N, H, W)`` becomes
    ``(N, 1, H, W)``. Global: ``(N, d)`` or ``(N, P, d)``. Distribution without atlas: ``(N, d)``.
    ValueError for a wrong rank, non-numeric dtype, no samples, NaN / Inf.
    """
    x = _numeric(np.asarray(x), what)
    if _fields_layout(kind, has_atlas):
        ok = x.ndim in (3, 4)
    elif kind == "global":
        ok = x.ndim in (2, 3)
    else:
        ok = x.ndim == 2
    if not ok:
        raise ValueError(
            f"{what} for kind {kind} must be {_expected_x(kind, has_atlas)}, "
            f"got shape {x.shape} ({x.ndim}-D)"
        )
    out = _finite_float32(x, what)
    if _fields_layout(kind, has_atlas) and out.ndim == 3:
        out = out[:, None]
    return out


def prepare_targets(y: np.ndarray | None, x: Tensor, kind: str, what: str = "y") -> Tensor | None:
    """Validate targets ``y`` against prepared inputs ``x`` (:func:`prepare_inputs`).

    Float targets become float32 (regression), integer and boolean ones int64 class indices
    (classification; must be >= 0). Local: float ``(N, C', H, W)`` (``(N, H, W)`` becomes one
    channel) or integer ``(N, H, W)`` (``(N, 1, H, W)`` is squeezed), on x's grid. Global: float
    ``(N,)`` / ``(N, c)`` or integer ``(N,)``. Local and global need targets; distribution takes
    none. ValueError naming the problem otherwise.
    """
    if kind == "distribution":
        if y is not None:
            raise ValueError(_NO_TARGETS)
        return None
    if y is None:
        raise ValueError(_NEEDS_TARGETS.format(kind=kind))
    y = _numeric(np.asarray(y), what)
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"x has {x.shape[0]} samples but {what} has {y.shape[0]} (shapes {tuple(x.shape)} and "
            f"{y.shape}); the first axis must match"
        )
    classes = y.dtype.kind in "biu"
    if kind == "local":
        grid = tuple(x.shape[-2:])
        if classes:
            if y.ndim == 4 and y.shape[1] == 1:
                y = y[:, 0]
            ok, expected = y.ndim == 3, "integer class maps (N, H, W)"
        else:
            ok, expected = y.ndim in (3, 4), "float fields (N, C, H, W) or (N, H, W)"
        if ok and tuple(y.shape[-2:]) != grid:
            raise ValueError(
                f"{what} fields are {y.shape[-2]}x{y.shape[-1]} but x fields are "
                f"{grid[0]}x{grid[1]}; targets must be on the inputs' grid"
            )
    else:
        if classes:
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            ok, expected = y.ndim == 1, "integer class indices (N,)"
        else:
            ok, expected = y.ndim in (1, 2), "float targets (N,) or (N, c)"
    if not ok:
        raise ValueError(
            f"{what} for kind {kind} must be {expected}, got shape {y.shape} ({y.ndim}-D, "
            f"dtype {y.dtype})"
        )
    if classes:
        if int(y.min()) < 0:
            raise ValueError(
                f"{what} holds integer class labels, which must be >= 0; found {int(y.min())} "
                "(store float targets for regression)"
            )
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    out = _finite_float32(y, what)
    return out[:, None] if kind == "local" and out.ndim == 3 else out


# --------------------------------------------------------------------------------------------
# Atlas and ground truth
# --------------------------------------------------------------------------------------------


def _check_atlas_spec(spec: Any) -> dict[str, Any]:
    """The ``atlas`` option as ``{"centers", "radius", "manifold"}``; structure checked only."""
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"data.atlas must be a mapping {{centers: [[row, col], ...], radius: r}}, got {spec!r}"
        )
    unknown = sorted(set(spec) - set(_ATLAS_KEYS))
    if unknown:
        raise ValueError(
            f"unknown data.atlas key(s) {', '.join(map(str, unknown))}; keys are "
            + ", ".join(_ATLAS_KEYS)
        )
    missing = [k for k in ("centers", "radius") if k not in spec]
    if missing:
        raise ValueError(f"data.atlas needs {' and '.join(missing)}")
    manifold = spec.get("manifold", "plane")
    if manifold not in ("plane", "sphere"):
        raise ValueError(f"data.atlas.manifold must be plane or sphere, got {manifold!r}")
    centers = spec["centers"]
    try:
        pairs = [tuple(c) for c in centers]
    except TypeError:
        raise ValueError(f"data.atlas.centers must be a list of pairs, got {centers!r}") from None
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError(f"data.atlas.centers must be a non-empty list of pairs, got {centers!r}")
    for p in pairs:
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in p):
            raise ValueError(f"data.atlas.centers must hold numbers, got {list(p)!r}")
        if manifold == "plane" and any(not float(v).is_integer() for v in p):
            raise ValueError(f"plane chart centres are (row, col) pixel indices, got {list(p)!r}")
        if manifold == "sphere":
            lat, lon = (float(v) for v in p)
            if not (-90.0 <= lat <= 90.0 and math.isfinite(lon)):
                raise ValueError(
                    f"sphere chart centres are (lat, lon) in degrees with -90 <= lat <= 90, got "
                    f"{list(p)!r}"
                )
    radius = check_int("data.atlas.radius", spec["radius"], 1)
    return {"centers": pairs, "radius": radius, "manifold": manifold}


def sphere_pixel(lat: float, lon: float, shape: tuple[int, int]) -> tuple[int, int]:
    """The ``(row, col)`` pixel of an ``(H, W)`` equirectangular grid whose cell holds the point
    ``(lat, lon)`` (degrees, east-positive).

    Row ``i`` covers latitudes ``90 - (i, i + 1) * 180 / H`` and column ``j`` longitudes
    ``(j, j + 1) * 360 / W`` (the grid of :mod:`atlasd.atlas`, whose pixel centres sit in the
    middle of these cells); a point on a cell boundary goes to the southern / eastern cell, the
    south pole to the last row, and longitudes wrap modulo 360.
    """
    h, w = shape
    row = min(math.floor((90.0 - lat) * h / 180.0), h - 1)
    col = math.floor((lon % 360.0) * w / 360.0) % w
    return row, col


def build_atlas(spec: Mapping[str, Any], shape: tuple[int, int]):
    """``atlasd.Atlas`` of the ``atlas`` option on fields of ``shape = (H, W)``.

    Plane centres are ``(row, col)``; sphere centres ``(lat, lon)`` in degrees, placed with
    :func:`sphere_pixel`. ValueError for a malformed option or a chart that leaves the field
    (:meth:`atlasd.Atlas.check_shape` names the chart and the field).
    """
    from atlasd.atlas import Atlas

    spec = _check_atlas_spec(spec)
    if spec["manifold"] == "plane":
        centers = [(int(r), int(c)) for r, c in spec["centers"]]
    else:
        centers = [sphere_pixel(float(a), float(b), shape) for a, b in spec["centers"]]
    return Atlas.grid(
        shape=shape, centers=centers, radius=spec["radius"], manifold=spec["manifold"]
    )


def check_ground_truth(truth: Any, d: int) -> dict[str, Tensor] | None:
    """The optional ``ground_truth`` option as ``{"algebra": (k, d, d), "cosets": (m, d, d)}``
    float64 tensors (cosets only when given); None passes through."""
    if truth is None:
        return None
    if not isinstance(truth, Mapping) or "algebra" not in truth:
        raise ValueError(f"data.ground_truth must be a mapping with an algebra, got {truth!r}")
    unknown = sorted(set(truth) - {"algebra", "cosets"})
    if unknown:
        raise ValueError(f"unknown data.ground_truth key(s) {', '.join(map(str, unknown))}")
    out = {}
    for key in ("algebra", "cosets"):
        if truth.get(key) is None:
            continue
        try:
            t = torch.as_tensor(np.asarray(truth[key], dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(f"data.ground_truth.{key} must be numbers (k, d, d)") from None
        if t.ndim != 3 or tuple(t.shape[1:]) != (d, d) or t.shape[0] < 1:
            raise ValueError(
                f"data.ground_truth.{key} must have shape (k, {d}, {d}), got {tuple(t.shape)}"
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"data.ground_truth.{key} contains NaN or Inf")
        out[key] = t
    return out


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass
class FilesData:
    """What :func:`load_files` returns: ``x`` float32, ``y`` float32 / int64 / None, ``atlas``
    (an ``atlasd.Atlas`` or None) and ``ground_truth`` (or None)."""

    x: Tensor
    y: Tensor | None
    atlas: Any
    ground_truth: dict[str, Tensor] | None


def _names(x: Any) -> list[str]:
    names = [x] if isinstance(x, str) else x
    if (
        not isinstance(names, Sequence)
        or not names
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise ValueError(f"data.x must be an array name or a list of names, got {x!r}")
    return list(names)


def _check_options(kind: Any, x: Any, y: Any, atlas: Any) -> list[str]:
    if kind not in KINDS:
        raise ValueError(f"unknown data.kind {kind!r}; kinds are {', '.join(KINDS)}")
    names = _names(x)
    if y is not None and (not isinstance(y, str) or not y):
        raise ValueError(f"data.y must be an array name or absent, got {y!r}")
    if kind == "local" and atlas is None:
        raise ValueError(
            "kind local needs data.atlas: {centers: [[row, col], ...], radius: r} "
            "(the charts the local symmetry is looked for in)"
        )
    if kind == "global" and atlas is not None:
        raise ValueError("data.atlas is for fields (kind local or distribution); remove it")
    if atlas is not None:
        _check_atlas_spec(atlas)
    if kind == "distribution" and y is not None:
        raise ValueError(_NO_TARGETS)
    if kind != "distribution" and y is None:
        raise ValueError(_NEEDS_TARGETS.format(kind=kind))
    return names


def load_files(
    path: str | Path,
    x: str | Sequence[str] = "x",
    y: str | None = None,
    kind: str = "local",
    atlas: Mapping[str, Any] | None = None,
    ground_truth: Mapping[str, Any] | None = None,
    n: int | None = None,
) -> FilesData:
    """Read, validate and convert a user's data file (module docstring: formats, shapes, errors).

    ``x`` is one array name or a list (stacked as channels of fields or columns of vectors);
    ``n`` keeps the first ``n`` samples. Everything is checked here, before any training.
    """
    names = _check_options(kind, x, y, atlas)
    if n is not None:
        n = check_int("data.n", n, 1)
    arrays = read_arrays(path, list(dict.fromkeys(names + ([y] if y else []))))
    fields = _fields_layout(kind, atlas is not None)
    label = names[0] if len(names) == 1 else "+".join(names)
    for name in names:
        _numeric(arrays[name], f"x ({name!r} in {Path(path).name})")
    xs = _stack([arrays[k] for k in names], names, fields)
    if n is not None:
        xs = xs[:n]
    x_t = prepare_inputs(xs, kind, atlas is not None, f"x ({label!r} in {Path(path).name})")
    y_arr = None
    if y is not None:
        y_arr = arrays[y][:n] if n is not None else arrays[y]
    y_t = prepare_targets(y_arr, x_t, kind, f"y ({y!r} in {Path(path).name})")
    atlas_obj = build_atlas(atlas, tuple(x_t.shape[-2:])) if fields else None
    d = 2 if fields else x_t.shape[-1]
    return FilesData(x_t, y_t, atlas_obj, check_ground_truth(ground_truth, d))


# --------------------------------------------------------------------------------------------
# Lightning data module
# --------------------------------------------------------------------------------------------


class FilesDataModule(SplitsDataModule):
    """A user's own data file as a LightningDataModule (the ``files`` task).

    Options (module docstring for the details): ``path``, ``x``, ``y``, ``kind``, ``atlas``,
    ``ground_truth``; ``n`` keeps the first ``n`` samples (all when None); ``val_fraction`` of
    the samples, the last ones in file order, form the validation split (no shuffling: a file's
    order is often time, and a split by time does not leak neighbours into validation);
    ``batch_size``, ``num_workers`` and ``seed`` (of the training loader's shuffling) serve the
    loaders.

    The options are checked when the module is built (file present, extension, kind, atlas
    structure); ``setup()`` reads the file and checks the data. After ``setup()``: ``x`` float32,
    ``y`` float32 / int64 / None, ``kind``, ``atlas`` (``atlasd.Atlas`` for fields, else None),
    ``ground_truth`` (the option's tensors, or None), ``class_weights = None``, ``n_classes``
    (integer targets, else None), ``train_dataset`` and ``val_dataset`` (batches ``(x, y)``, or
    ``(x,)`` without targets), ``spec`` (the task contract, :class:`atlasd.datasets.base.TaskSpec`).
    """

    def __init__(
        self,
        path: str | None = None,
        x: str | list[str] = "x",
        y: str | None = None,
        kind: str = "local",
        atlas: dict[str, Any] | None = None,
        ground_truth: dict[str, Any] | None = None,
        n: int | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 16,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.path = _check_path(path)
        self.names = _check_options(kind, x, y, atlas)
        self.kind = kind
        self.x_name, self.y_name = x, y
        self.atlas_spec = atlas
        self.truth_spec = ground_truth
        self.n = None if n is None else check_int("data.n", n, 1)
        self.val_fraction = check_fraction("data.val_fraction", val_fraction)
        self.batch_size = check_int("data.batch_size", batch_size, 1)
        self.num_workers = check_int("data.num_workers", num_workers, 0)
        self.seed = check_int("data.seed", seed, -(2**63))
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.atlas = None
        self.ground_truth: dict[str, Tensor] | None = None
        self.class_weights = None
        self.n_classes: int | None = None
        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None

    @property
    def spec(self) -> TaskSpec:
        """The task contract, derived from the file and the options
        (:func:`atlasd.datasets.base.derive_spec`): kind and atlas from the options; fields act
        on R^2, vectors and sets on their last axis; int64 targets are classification scored by
        accuracy, float targets regression scored by MSE."""
        if self.x is None:
            raise not_set_up(self)
        return derive_spec(self, "files")

    def setup(self, stage: str | None = None) -> None:
        if self.x is not None:
            return
        data = load_files(
            self.path,
            self.x_name,
            self.y_name,
            self.kind,
            self.atlas_spec,
            self.truth_spec,
            self.n,
        )
        n = data.x.shape[0]
        n_val = 0 if self.val_fraction == 0.0 else max(1, round(n * self.val_fraction))
        if n - n_val < 1:
            raise ValueError(
                f"{n} sample(s) with val_fraction={self.val_fraction} leave no training samples"
            )
        tensors = (data.x,) if data.y is None else (data.x, data.y)
        self.train_dataset = TensorDataset(*(t[: n - n_val] for t in tensors))
        self.val_dataset = TensorDataset(*(t[n - n_val :] for t in tensors))
        if data.y is not None and not data.y.is_floating_point():
            self.n_classes = int(data.y.max()) + 1
        self.x, self.y, self.atlas, self.ground_truth = (
            data.x,
            data.y,
            data.atlas,
            data.ground_truth,
        )
