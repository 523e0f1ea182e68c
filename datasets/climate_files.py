"""ClimateNet files: the layout, a loader, a writer and normalisation statistics.

ClimateNet file layout (Prabhat et al., "ClimateNet: an expert-labeled open dataset and deep
learning architecture for enabling high-precision analyses of extreme weather", GMD 2021)
    One netCDF-4 file per time step and labelling (``data-YYYY-MM-DD-HH-1_K.nc``): dimensions
    ``time`` (length 1), ``lat`` (768, ascending from the south pole) and ``lon`` (1152, east from
    0 degrees); float variables ``TMQ, U850, V850, UBOT, VBOT, QREFHT, PS, PSL, T200, T500, PRECT,
    TS, TREFHT, Z1000, Z200, ZBOT`` shaped ``(time, lat, lon)`` and the integer ``LABELS``
    ``(lat, lon)``: 0 background, 1 tropical cyclone (TC), 2 atmospheric river (AR).

Loader (:func:`scan_climatenet`, :func:`read_climatenet_file`, :class:`ClimateNetFiles`)
    Files are opened one at a time with xarray (the ``h5netcdf`` backend for netCDF-4 files;
    xarray picks ``scipy`` for netCDF-3) and only the requested variables and ``LABELS`` are read;
    nothing else in a file is touched (tested: a NaN in a variable nobody asked for goes
    unnoticed). The scan reads only headers and coordinates and checks, for every file, that each
    requested variable exists with dims ``(lat, lon)`` or ``(time=1, lat, lon)`` and that the grid
    is the same global grid as in the first file. Reading checks for NaN/Inf and for labels
    outside {0, 1, 2}. Every error names the file and the problem. Grids are returned in the
    atlas convention of :mod:`atlasd.atlas` (row 0 next to the north pole, columns eastward
    from 0 degrees): ascending latitudes are flipped and longitudes are rolled to start at the
    smallest longitude modulo 360. The real grid includes both poles (latitude spacing
    180/767 degrees) and starts at longitude 0, so it sits within half a pixel of the atlas's
    cell-centred convention; this offset is ignored.

Normalisation (:class:`RunningMoments`, :func:`channel_statistics`)
    Statistics are computed from the data, never hard-coded: one streaming pass in float64 over
    the files (Chan et al.'s pairwise update of count, mean and sum of squared deviations), from
    the training split only in :class:`ClimateDataModule`. Scalars are standardised,
    ``(v - mean) / std``. Wind pairs ``(U850, V850)`` and ``(UBOT, VBOT)`` are *not*
    standardised component by component: subtracting a mean vector or dividing the two
    components by different numbers would turn a rotation of the physical wind into an affine,
    anisotropic map of the stored numbers and destroy the vector representation. Both components
    of a pair are divided by one shared scale, the root mean square of the pair
    ``sqrt(E[u^2 + v^2] / 2)``, and no mean is removed; the normalised pair has mean square 1.

Writing (:func:`write_climatenet_files`)
    Samples (e.g. from :func:`atlasd.datasets.climate_fields.generate_climate`) are written one
    file per time step in the layout above, so that the loader is tested on files of the real
    layout.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from atlasd.checks import check_int, check_shape

__all__ = [
    "CLASS_NAMES",
    "CLIMATENET_VARIABLES",
    "DEFAULT_VARIABLES",
    "LABEL_VARIABLE",
    "N_CLASSES",
    "VECTOR_PAIRS",
    "ClimateNetFiles",
    "ClimateNetIndex",
    "RunningMoments",
    "channel_statistics",
    "check_climate_shape",
    "check_variables",
    "class_weights_from_labels",
    "grid_coordinates",
    "normalize_fields",
    "read_climatenet_file",
    "scan_climatenet",
    "statistics_from_moments",
    "vector_slots",
    "write_climatenet_files",
]

#: The float variables of a ClimateNet file.
CLIMATENET_VARIABLES: tuple[str, ...] = (
    "TMQ", "U850", "V850", "UBOT", "VBOT", "QREFHT", "PS", "PSL",
    "T200", "T500", "PRECT", "TS", "TREFHT", "Z1000", "Z200", "ZBOT",
)  # fmt: skip
#: The integer label map: 0 background, 1 tropical cyclone, 2 atmospheric river.
LABEL_VARIABLE: str = "LABELS"
CLASS_NAMES: tuple[str, ...] = ("background", "tropical_cyclone", "atmospheric_river")
#: Channels used by default (those of ClimateNet's own baseline, CGNet).
DEFAULT_VARIABLES: tuple[str, ...] = ("TMQ", "U850", "V850", "PSL")
#: Variables that form wind vectors (eastward, northward): transformed as vectors.
VECTOR_PAIRS: tuple[tuple[str, str], ...] = (("U850", "V850"), ("UBOT", "VBOT"))
#: Number of classes of the label map.
N_CLASSES: int = 3
_UNITS = {"TMQ": "kg m-2", "U850": "m/s", "V850": "m/s", "PSL": "Pa", "UBOT": "m/s", "VBOT": "m/s"}
_LONG_NAMES = {
    "TMQ": "Total (vertically integrated) precipitable water",
    "U850": "Zonal wind at 850 mbar pressure surface",
    "V850": "Meridional wind at 850 mbar pressure surface",
    "PSL": "Sea level pressure",
}


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def check_climate_shape(shape: Any) -> tuple[int, int]:
    """A grid shape ``(H, W)`` of at least 8 x 8."""
    return check_shape(shape, 8, 8)


def check_variables(variables: Any) -> tuple[str, ...]:
    """Input variable names: a non-empty sequence of distinct names, LABELS excluded."""
    if isinstance(variables, str):
        variables = (variables,)
    try:
        names = tuple(variables)
    except TypeError:
        raise ValueError(f"variables must be a sequence of names, got {variables!r}") from None
    if not names or not all(isinstance(v, str) and v for v in names):
        raise ValueError(f"variables must be a non-empty sequence of names, got {variables!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"variables contain duplicates: {list(names)}")
    if LABEL_VARIABLE in names:
        raise ValueError(f"{LABEL_VARIABLE} is the target, not an input variable")
    return names


# --------------------------------------------------------------------------------------------
# Grid geometry (atlas convention: row 0 next to the north pole, columns east from 0 degrees)
# --------------------------------------------------------------------------------------------


def grid_coordinates(shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre latitudes (H,) (descending, row 0 north) and longitudes (W,) in degrees of
    the atlas convention: ``lat_i = 90 - (i + 1/2) 180 / H``, ``lon_j = (j + 1/2) 360 / W``."""
    h, w = check_climate_shape(shape)
    lat = 90.0 - (np.arange(h) + 0.5) * 180.0 / h
    lon = (np.arange(w) + 0.5) * 360.0 / w
    return lat, lon


# --------------------------------------------------------------------------------------------
# Writing files in the ClimateNet layout
# --------------------------------------------------------------------------------------------


def _engine_for_writing() -> str:
    import importlib.util

    for engine, module in (("h5netcdf", "h5netcdf"), ("netcdf4", "netCDF4")):
        if importlib.util.find_spec(module) is not None:
            return engine
    raise RuntimeError("writing netCDF-4 files needs h5netcdf or netCDF4 (pip install h5netcdf)")


def write_climatenet_files(
    directory: str | os.PathLike,
    data: Mapping[str, Tensor | np.ndarray],
    *,
    start: _dt.datetime = _dt.datetime(2000, 1, 1),
    step_hours: int = 3,
    ascending_lat: bool = True,
) -> list[Path]:
    """Write samples as ClimateNet files, one per time step: ``data-YYYY-MM-DD-HH-1_0.nc``.

    Args:
        directory: created if missing.
        data: ``{variable: (n, H, W)}`` float fields on the atlas grid (row 0 north, see
            :func:`grid_coordinates`) and ``"LABELS"`` (n, H, W) integers; any variables.
        start, step_hours: time stamp of the first file and the spacing of the time steps.
        ascending_lat: store latitudes from south to north, as ClimateNet (CAM output) does;
            the loader flips them back.

    Each file has dims ``time`` (1), ``lat``, ``lon`` with coordinates, float32 variables
    ``(time, lat, lon)`` with ``units`` and ``long_name`` attributes, and int64 ``LABELS``
    ``(lat, lon)``. Files are written to a temporary name and renamed, so a crash never leaves a
    half-written ``.nc`` behind. Returns the paths in time order.
    """
    import xarray as xr

    if LABEL_VARIABLE not in data:
        raise KeyError(f"data needs a {LABEL_VARIABLE!r} entry, got {sorted(data)}")
    arrays = {k: np.asarray(v.numpy() if isinstance(v, Tensor) else v) for k, v in data.items()}
    shapes = {k: a.shape for k, a in arrays.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 3:
        raise ValueError(f"all entries of data must share one (n, H, W) shape, got {shapes}")
    n, h, w = arrays[LABEL_VARIABLE].shape
    lat, lon = grid_coordinates((h, w))
    flip = slice(None, None, -1) if ascending_lat else slice(None)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    engine = _engine_for_writing()
    paths = []
    for i in range(n):
        when = start + _dt.timedelta(hours=step_hours * i)
        hours = (when - _dt.datetime(2000, 1, 1)).total_seconds() / 3600.0
        variables: dict[str, Any] = {}
        for name, a in arrays.items():
            if name == LABEL_VARIABLE:
                variables[name] = (("lat", "lon"), a[i][flip].astype(np.int64))
            else:
                attrs = {"units": _UNITS.get(name, "1"), "long_name": _LONG_NAMES.get(name, name)}
                variables[name] = (
                    ("time", "lat", "lon"),
                    a[i][flip][None].astype(np.float32),
                    attrs,
                )
        ds = xr.Dataset(
            variables,
            coords={
                "time": ("time", [hours], {"units": "hours since 2000-01-01 00:00:00"}),
                "lat": ("lat", lat[flip], {"units": "degrees_north"}),
                "lon": ("lon", lon, {"units": "degrees_east"}),
            },
            attrs={"source": "atlasd synthetic ClimateNet-like fields"},
        )
        path = directory / f"data-{when:%Y-%m-%d-%H}-1_0.nc"
        tmp = directory / f".{path.name}.tmp"
        ds.to_netcdf(tmp, engine=engine)
        os.replace(tmp, path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# Reading ClimateNet files
# --------------------------------------------------------------------------------------------


def _open(path: Path):
    """Open one file lazily: nothing is read until a variable's values are asked for."""
    import xarray as xr

    try:
        # decode_times=False: time stamps are not needed, and calendars vary between files
        return xr.open_dataset(path, decode_times=False, cache=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable netCDF file ({err})") from err


@dataclass(frozen=True)
class ClimateNetIndex:
    """What :func:`scan_climatenet` found: the files, the requested variables and the grid.

    ``shape`` is the grid ``(H, W)``; ``flip_lat`` whether stored rows run south to north (they
    are flipped on reading); ``lon_shift`` the column roll that puts the smallest longitude
    (mod 360) first; ``lat``, ``lon`` the coordinates in the atlas order.
    """

    files: tuple[Path, ...]
    variables: tuple[str, ...]
    shape: tuple[int, int]
    flip_lat: bool
    lon_shift: int
    lat: np.ndarray
    lon: np.ndarray

    def __len__(self) -> int:
        return len(self.files)


def _grid_of(path: Path, ds) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in ("lat", "lon") if c not in ds.variables]
    if missing:
        raise KeyError(f"{path}: no {' or '.join(missing)} coordinate (found {sorted(ds.dims)})")
    lat = np.asarray(ds["lat"].values, dtype=np.float64)
    lon = np.asarray(ds["lon"].values, dtype=np.float64)
    if lat.ndim != 1 or lon.ndim != 1 or lat.size < 2 or lon.size < 2:
        raise ValueError(f"{path}: lat and lon must be 1-D coordinates with >= 2 points")
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        raise ValueError(f"{path}: lat / lon coordinates contain NaN or Inf")
    return lat, lon


def _check_global_grid(path: Path, lat: np.ndarray, lon: np.ndarray) -> tuple[bool, int]:
    """Validate an equirectangular global grid; return (flip_lat, lon_shift)."""
    d_lat, d_lon = np.diff(lat), np.diff(lon)
    if not ((d_lat > 0).all() or (d_lat < 0).all()):
        raise ValueError(f"{path}: latitudes are not monotonic")
    if not (d_lon > 0).all():
        raise ValueError(f"{path}: longitudes are not increasing")
    step_lat, step_lon = abs(d_lat).mean(), d_lon.mean()
    if abs(d_lat).max() - abs(d_lat).min() > 1e-3 * step_lat or np.ptp(d_lon) > 1e-3 * step_lon:
        raise ValueError(f"{path}: the lat-lon grid is not evenly spaced")
    # Global coverage: cell-centred grids span 180 - step (pole-inclusive ones 180), 360 - step.
    span_lat = abs(lat[-1] - lat[0])
    span_lon = lon[-1] - lon[0]
    if not (180.0 - 1.5 * step_lat <= span_lat <= 180.0 + 1e-6) or not (
        360.0 - 1.5 * step_lon <= span_lon <= 360.0 - 0.5 * step_lon
    ):
        raise ValueError(
            f"{path}: not a global grid (latitudes span {span_lat:.3f} degrees, longitudes "
            f"{span_lon:.3f}); the sphere atlas needs the whole globe"
        )
    return bool(d_lat[0] > 0), int(np.argmin(np.remainder(lon, 360.0)))


def _check_dims(path: Path, name: str, var, n_lat: int, n_lon: int) -> None:
    dims, shape = tuple(var.dims), tuple(var.shape)
    ok = (dims == ("lat", "lon") and shape == (n_lat, n_lon)) or (
        dims == ("time", "lat", "lon") and shape == (1, n_lat, n_lon)
    )
    if not ok:
        got = ", ".join(f"{d}={s}" for d, s in zip(dims, shape, strict=True))
        raise ValueError(
            f"{path}: variable {name} has dims ({got}); expected (lat={n_lat}, lon={n_lon}) or "
            f"(time=1, lat={n_lat}, lon={n_lon})"
        )


def _list_files(path: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(path, (str, os.PathLike)):
        root = Path(path)
        if not root.exists():
            raise FileNotFoundError(f"no such file or folder: {root}")
        if root.is_file():
            return [root]
        files = sorted(p for p in root.glob("*.nc") if p.is_file())
        if not files:
            raise FileNotFoundError(f"no .nc files in {root}")
        return files
    files = [Path(p) for p in path]
    if not files:
        raise FileNotFoundError("the list of files is empty")
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"no such file: {p}")
    return files


def scan_climatenet(
    path: str | os.PathLike | Iterable[str | os.PathLike],
    variables: Sequence[str] = DEFAULT_VARIABLES,
    *,
    labels: bool = True,
    max_files: int | None = None,
) -> ClimateNetIndex:
    """Index ClimateNet files without reading any field values.

    Args:
        path: a folder (every ``*.nc`` in it, sorted by name, i.e. by time), one file, or a
            list of files.
        variables: the input variables to read later; each must exist in every file.
        labels: require ``LABELS`` in every file.
        max_files: use only the first ``max_files`` files.

    Returns:
        a :class:`ClimateNetIndex`.

    Raises:
        FileNotFoundError: missing file or folder, or a folder without ``.nc`` files.
        KeyError: a requested variable (or LABELS, or the lat / lon coordinates) is missing
            from a file; the message names the file and what it does have.
        ValueError: wrong dims, a grid that differs from the first file's, a non-global or
            uneven grid, an unreadable file.
    """
    variables = check_variables(variables)
    files = _list_files(path)
    if max_files is not None:
        files = files[: check_int("max_files", max_files, 1)]
    needed = (*variables, LABEL_VARIABLE) if labels else variables
    reference = None
    for f in files:
        with _open(f) as ds:
            lat, lon = _grid_of(f, ds)
            if reference is None:
                flip, shift = _check_global_grid(f, lat, lon)
                reference = (f, lat, lon)
            elif lat.shape != reference[1].shape or lon.shape != reference[2].shape:
                raise ValueError(
                    f"{f}: grid {lat.size} x {lon.size} differs from {reference[0].name}'s "
                    f"{reference[1].size} x {reference[2].size}"
                )
            elif not (np.allclose(lat, reference[1]) and np.allclose(lon, reference[2])):
                raise ValueError(f"{f}: lat / lon coordinates differ from {reference[0].name}'s")
            for name in needed:
                if name not in ds.data_vars:
                    raise KeyError(
                        f"{f}: variable {name} not found; the file has "
                        f"{', '.join(sorted(map(str, ds.data_vars)))}"
                    )
                _check_dims(f, name, ds[name], lat.size, lon.size)
    _, lat, lon = reference
    lat_atlas = lat[::-1] if flip else lat
    lon_atlas = np.roll(lon, -shift)
    return ClimateNetIndex(
        files=tuple(files),
        variables=variables,
        shape=(lat.size, lon.size),
        flip_lat=flip,
        lon_shift=shift,
        lat=lat_atlas.copy(),
        lon=lon_atlas.copy(),
    )


def _to_atlas_order(a: np.ndarray, index: ClimateNetIndex) -> np.ndarray:
    if index.flip_lat:
        a = a[..., ::-1, :]
    if index.lon_shift:
        a = np.roll(a, -index.lon_shift, axis=-1)
    return a


def _coarsen_fields(x: np.ndarray, factor: int) -> np.ndarray:
    """Block means over ``factor x factor`` pixels: (C, H, W) -> (C, H / f, W / f)."""
    if factor == 1:
        return x
    c, h, w = x.shape
    return x.reshape(c, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def _coarsen_labels(y: np.ndarray, factor: int) -> np.ndarray:
    """Majority label per block; ties go to the rarer (higher-numbered) class."""
    if factor == 1:
        return y
    h, w = y.shape
    blocks = y.reshape(h // factor, factor, w // factor, factor)
    counts = np.stack([(blocks == k).sum(axis=(1, 3)) for k in range(N_CLASSES)])
    tiebreak = np.arange(N_CLASSES)[:, None, None] * 1e-3
    return np.argmax(counts + tiebreak, axis=0).astype(np.int64)


def read_climatenet_file(
    path: str | os.PathLike,
    index: ClimateNetIndex,
    *,
    coarsen: int = 1,
    labels: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one file's requested variables (and LABELS): nothing else is loaded.

    Args:
        path: the file (normally one of ``index.files``).
        index: from :func:`scan_climatenet`; gives the variables and the grid orientation.
        coarsen: block-average the fields (and take the majority label) over
            ``coarsen x coarsen`` pixels; H and W must be divisible by it.
        labels: also read LABELS.

    Returns:
        ``x`` (C, H', W') float32 in the atlas orientation (row 0 north, columns east from the
        smallest longitude) and ``y`` (H', W') int64 or None.

    Raises:
        KeyError (missing variable), ValueError (wrong dims, NaN/Inf values, labels outside
        0..2), each naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    h, w = index.shape
    if h % coarsen or w % coarsen:
        raise ValueError(f"coarsen={coarsen} must divide the grid {h} x {w}")
    x = np.empty((len(index.variables), h, w), dtype=np.float32)
    with _open(path) as ds:
        names = (*index.variables, LABEL_VARIABLE) if labels else index.variables
        for name in names:
            if name not in ds.data_vars:
                raise KeyError(f"{path}: variable {name} not found")
            _check_dims(path, name, ds[name], h, w)
        for c, name in enumerate(index.variables):
            values = np.asarray(ds[name].values).reshape(h, w)
            finite = np.isfinite(values)
            if not finite.all():
                n_nan = int(np.isnan(values).sum())
                raise ValueError(
                    f"{path}: variable {name} contains {n_nan} NaN and "
                    f"{int((~finite).sum()) - n_nan} Inf values"
                )
            x[c] = values
        y = None
        if labels:
            raw = np.asarray(ds[LABEL_VARIABLE].values).reshape(h, w)
            if not np.issubdtype(raw.dtype, np.integer):
                if not np.isfinite(raw).all() or (raw != np.round(raw)).any():
                    raise ValueError(f"{path}: {LABEL_VARIABLE} contains non-integer values")
            y = raw.astype(np.int64)
            bad = (y < 0) | (y >= N_CLASSES)
            if bad.any():
                raise ValueError(
                    f"{path}: {LABEL_VARIABLE} has values outside 0..{N_CLASSES - 1} "
                    f"({sorted(set(y[bad].tolist()))[:5]})"
                )
    x = _coarsen_fields(_to_atlas_order(x, index), coarsen)
    if y is not None:
        y = _coarsen_labels(_to_atlas_order(y, index), coarsen)
    return np.ascontiguousarray(x), None if y is None else np.ascontiguousarray(y)


# --------------------------------------------------------------------------------------------
# Normalisation statistics, computed from data
# --------------------------------------------------------------------------------------------


class RunningMoments:
    """Streaming per-channel count, mean and sum of squared deviations (float64).

    ``update(x)`` takes a batch shaped (C, ...) or (N, C, ...) with channel axis ``axis`` and
    merges it with Chan, Golub and LeVeque's pairwise formula, which stays accurate when the
    mean is large compared with the spread (PSL: 1e5 Pa with a spread of 1e3).
    """

    def __init__(self, n_channels: int) -> None:
        self.count = 0
        self.mean = np.zeros(n_channels)
        self.m2 = np.zeros(n_channels)

    def update(self, x: np.ndarray | Tensor, axis: int = 0) -> None:
        a = np.asarray(x.numpy() if isinstance(x, Tensor) else x, dtype=np.float64)
        a = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
        if a.shape[0] != self.mean.size:
            raise ValueError(f"expected {self.mean.size} channels, got {a.shape[0]}")
        n_b = a.shape[1]
        if n_b == 0:
            return
        mean_b = a.mean(axis=1)
        m2_b = ((a - mean_b[:, None]) ** 2).sum(axis=1)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.count * n_b / n)
        self.count = n

    @property
    def var(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no data seen")
        return self.m2 / self.count

    @property
    def mean_square(self) -> np.ndarray:
        return self.var + self.mean**2


def vector_slots(variables: Sequence[str]) -> list[tuple[int, int]]:
    """Channel index pairs of the complete wind pairs among ``variables``."""
    pos = {v: i for i, v in enumerate(variables)}
    return [(pos[u], pos[v]) for u, v in VECTOR_PAIRS if u in pos and v in pos]


def statistics_from_moments(
    moments: RunningMoments, variables: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (shift, scale): mean / std for scalars; 0 / shared RMS for wind pairs."""
    shift = moments.mean.copy()
    scale = np.sqrt(moments.var)
    for i, j in vector_slots(variables):
        rms = math.sqrt(0.5 * (moments.mean_square[i] + moments.mean_square[j]))
        shift[i] = shift[j] = 0.0
        scale[i] = scale[j] = rms
    bad = [variables[c] for c in range(len(variables)) if not scale[c] > 0]
    if bad:
        raise ValueError(f"variable(s) {', '.join(bad)} are constant: cannot normalise them")
    return shift, scale


def channel_statistics(
    index: ClimateNetIndex, files: Sequence[Path] | None = None, *, coarsen: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Normalisation statistics from the data, in one streaming pass (one file in memory).

    Args:
        index: from :func:`scan_climatenet`.
        files: the files to use (e.g. the training split); default all of ``index.files``.
        coarsen: as in :func:`read_climatenet_file`.

    Returns:
        ``(shift, scale)``, each (C,) float64, such that ``(x - shift) / scale`` is the
        normalised input: mean and standard deviation for scalars; 0 and the shared RMS
        ``sqrt(E[u^2 + v^2] / 2)`` for the two components of a wind pair (module docstring).
    """
    moments = RunningMoments(len(index.variables))
    for f in index.files if files is None else files:
        x, _ = read_climatenet_file(f, index, coarsen=coarsen, labels=False)
        moments.update(x)
    return statistics_from_moments(moments, index.variables)


def normalize_fields(x: Tensor, shift: Sequence[float], scale: Sequence[float]) -> Tensor:
    """``(x - shift) / scale`` per channel for x (..., C, H, W); float32 result."""
    s = torch.as_tensor(np.asarray(shift), dtype=torch.float64)[:, None, None]
    d = torch.as_tensor(np.asarray(scale), dtype=torch.float64)[:, None, None]
    return ((x.double() - s) / d).float()


def class_weights_from_labels(y: Tensor, n_classes: int = N_CLASSES) -> Tensor:
    """Inverse-frequency class weights ``N / (K * count_k)`` (scikit-learn's "balanced"), (K,)
    float32; a class that never occurs gets the largest weight of the others."""
    counts = torch.bincount(y.reshape(-1), minlength=n_classes).double()
    present = counts > 0
    w = torch.zeros(n_classes, dtype=torch.float64)
    w[present] = counts.sum() / (n_classes * counts[present])
    if (~present).any():
        w[~present] = w[present].max()
    return w.float()


class ClimateNetFiles(Dataset):
    """A lazy torch Dataset over ClimateNet files: item ``i`` reads file ``i`` only.

    Items are ``(x, y)``: x (C, H, W) float32 normalised with ``(shift, scale)`` (e.g. from
    :func:`channel_statistics`), y (H, W) int64.
    """

    def __init__(
        self,
        index: ClimateNetIndex,
        shift: Sequence[float],
        scale: Sequence[float],
        *,
        coarsen: int = 1,
    ) -> None:
        self.index = index
        self.shift = np.asarray(shift, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        if self.shift.shape != (len(index.variables),) or self.scale.shape != self.shift.shape:
            raise ValueError(
                f"shift and scale need {len(index.variables)} entries (one per variable)"
            )
        self.coarsen = coarsen

    def __len__(self) -> int:
        return len(self.index.files)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = read_climatenet_file(self.index.files[i], self.index, coarsen=self.coarsen)
        xn = (x - self.shift[:, None, None]) / self.scale[:, None, None]
        return torch.from_numpy(xn.astype(np.float32)), torch.from_numpy(y)
