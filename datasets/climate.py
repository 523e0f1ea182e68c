"""Climate fields: a real loader for ClimateNet netCDF files and a synthetic generator that writes
the same layout.

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

Synthetic generator (:func:`generate_climate`, :func:`write_climatenet_files`)
    Fields on an equirectangular lat-lon grid (default 64 x 128, 2.8125 degrees) in physical
    units, built from objects defined on the sphere by great-circle geometry, so that the
    gnomonic charts of :class:`atlasd.Atlas` see them undistorted at any latitude. ``rho`` is
    the angular distance from an object's centre; a "Gaussian" of width R is
    ``exp((cos rho - 1) / R^2) = exp(-rho^2 / 2R^2) (1 + O(rho^4))``. Per sample and hemisphere
    (counts are options; every slot holds an object with probability ``activity``, default 0.8):

    - ``cyclones`` = 3 tropical cyclones (label 1), centres at 8-32 degrees latitude: a
      Gaussian sea-level pressure low (R = 4.5-6.5 degrees, depth 15-40 hPa), a TMQ peak of the
      same shape (+12-22 kg m^-2) and balanced winds: tangential speed proportional to the
      pressure gradient, ``V_max (e^(1/2) / R) sin(rho) exp((cos rho - 1) / R^2)`` (largest,
      about V_max = 18-35 m/s, at rho ~ R), turning *cyclonically* -- counter-clockwise seen
      from above (x = east, y = north) in the northern hemisphere, clockwise in the southern --
      plus a radial inflow of 0.35 times the tangential speed. Labelled 1 within rho <= 1.5 R.
    - ``decoys`` = 1 of each of two mirror decoys (label 0): the images of a cyclone under a
      reflection ``h``, for the two ways ``h`` can act on winds. ``v -> h v`` (winds as vectors)
      reverses the turning and keeps the inflow; ``v -> -h v`` (the determinant-twisted action:
      a mirror combined with reversing the winds) keeps the turning and turns inflow into
      outflow. Neither is physical (a low turning anticyclonically, or blowing outwards, is not
      balanced). They exist so that the rule "a cyclone is a low that turns cyclonically for its
      hemisphere, with inflow" can be learned from data at all: in balanced data pressure,
      turning and inflow always agree, so how a trained model treats a mirrored cyclone would be
      an untested extrapolation. ``decoys=0`` removes them.
    - ``anticyclones`` = 1 (label 0), 20-40 degrees: broad (R = 8-12 degrees) pressure highs
      (+8-20 hPa) with a dry TMQ anomaly, anticyclonic turning (6-12 m/s) and outflow.
    - ``extratropical`` = 1 extratropical cyclone (label 0, as in ClimateNet), 35-50 degrees:
      broad (R = 10-13 degrees) moist lows (10-30 hPa), cyclonic turning (10-20 m/s) with
      inflow. They make size matter for the label, so dilations are not symmetries.
    - ``rivers`` = 2 atmospheric rivers (label 2), centres at 25-45 degrees: moist bands
      (+15-25 kg m^-2) along a great-circle arc at a uniformly random orientation (half length
      12-20 degrees with tanh shoulders, Gaussian cross-section of width 2.5-3.5 degrees) with
      winds of 8-18 m/s along the band in a random one of its two directions. Labelled 2 where
      the band's shape exceeds 1/2.

    On top: climatological means (TMQ 25 kg m^-2, PSL 1013.25 hPa, no mean wind) and
    statistically isotropic random backgrounds: random combinations of the real spherical
    harmonics of degrees 3-10 (wavelengths of 36-120 degrees) with independent normal
    coefficients, whose law is invariant under every rotation of the sphere -- scalar noise on
    TMQ (4 kg m^-2) and PSL (4 hPa), and winds ``r x grad(psi) + grad(chi)`` from a random
    stream function and velocity potential (about 2.5 m/s), so no background has a preferred
    direction. Where objects overlap, fields add and a cyclone label wins over a river label;
    TMQ is floored at 0.1. Generation is vectorised over samples and objects: every random
    number is drawn up front (the same seed gives bit-identical data), objects are evaluated on
    lat-lon windows around their centres in chunks of samples, the backgrounds through
    longitude FFTs (10,000 samples: about 9 CPU-seconds on the shared 2-core machine).

Ground truth (:func:`climate_ground_truth`), in chart coordinates (x = east, y = north)
    The labelling rule is invariant under local rotations: a rotated cyclone is a cyclone (a
    rotation preserves turning and inflow), a rotated river is a river (orientations are uniform
    and the along-band wind direction is random), and the backgrounds are isotropic. So the
    local algebra is so(2), generator ``J = [[0, -1], [1, 0]]``, and it acts on the channels by
    ``rho(J) = 0`` on the scalars (TMQ, PSL, ...) and ``rho(J) = J`` on each wind pair
    ``(U, V)``: under ``g`` the wind field transforms as a vector field,
    ``v'(p) = g v(g^-1 p)``. With the trivial representation a rotation would turn a vortex into
    a spiral (by 90 degrees: into a source), so ``learn_in_rep`` is needed to find so(2).
    Reflections are *not* symmetries: with either action on the winds a reflection maps a
    cyclone (label 1) onto a mirror decoy (label 0), in either hemisphere (tested exactly for
    the east-west mirror). Rotation by pi is in SO(2). Hence ``cosets`` = {identity}. Dilations
    are not symmetries (cyclones have one size range; broad cyclones are background), nor are
    shears (round vortices become elliptical). Caveat on the sphere: ``(U, V)`` are stored in
    the local east/north frame of every grid point, which turns against the chart's axes away
    from the chart centre by about ``x tan(latitude)`` radians (meridian convergence), so the
    vector representation is exact at chart centres and approximate around them (a 90-degree
    rotation of a cyclone at the chart centre reproduces its winds to 5% at 21 degrees
    latitude, 12% at 41 degrees; tested).

Atlas (:func:`climate_atlas`)
    Sphere charts (gnomonic tangent-plane patches, x = east, y = north) at several latitudes in
    both hemispheres (default latitudes 40, 20, -20, -40 -- pixel rows at +-40.8 and +-21.1
    degrees on the default grid -- and longitudes 60, 180, 300; radius 8 pixels).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from atlasd.datasets.checks import check_int as _check_int
from atlasd.datasets.checks import check_shape
from atlasd.datasets.splits import SplitsDataModule
from atlasd.lie import representation_error

__all__ = [
    "CLASS_NAMES",
    "CLIMATENET_VARIABLES",
    "DEFAULT_VARIABLES",
    "LABEL_VARIABLE",
    "VECTOR_PAIRS",
    "ClimateDataModule",
    "ClimateNetFiles",
    "ClimateNetIndex",
    "RunningMoments",
    "channel_statistics",
    "class_weights_from_labels",
    "climate_atlas",
    "climate_ground_truth",
    "generate_climate",
    "normalize_fields",
    "read_climatenet_file",
    "representation_error",
    "scan_climatenet",
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

_N_CLASSES = 3
_SYNTHETIC_VARIABLES = ("TMQ", "U850", "V850", "PSL")
# keyword arguments of generate_climate that ClimateDataModule(synthetic=...) passes on
_SYNTHETIC_OPTIONS = frozenset(
    {"cyclones", "decoys", "anticyclones", "extratropical", "rivers", "activity", "noise"}
)
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


def _check_shape(shape: Any) -> tuple[int, int]:
    return check_shape(shape, 8, 8)


def _check_fraction(name: str, value: Any, closed: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    ok = 0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0
    if not ok:
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value}")
    return float(value)


def _check_variables(variables: Any) -> tuple[str, ...]:
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
    h, w = _check_shape(shape)
    lat = 90.0 - (np.arange(h) + 0.5) * 180.0 / h
    lon = (np.arange(w) + 0.5) * 360.0 / w
    return lat, lon


def _frames(lat_deg: Tensor, lon_deg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unit position ``p`` and local east / north unit vectors, each (..., 3) float64."""
    lat, lon = torch.deg2rad(lat_deg), torch.deg2rad(lon_deg)
    cl, sl, co, so = torch.cos(lat), torch.sin(lat), torch.cos(lon), torch.sin(lon)
    p = torch.stack([cl * co, cl * so, sl], dim=-1)
    east = torch.stack([-so, co, torch.zeros_like(co)], dim=-1)
    north = torch.stack([-sl * co, -sl * so, cl], dim=-1)
    return p, east, north


@dataclass(frozen=True)
class _Grid:
    """Row and column tables of an H x W grid (float32): latitude sines / cosines (H,),
    longitudes in radians (W,)."""

    h: int
    w: int
    sin_lat: Tensor
    cos_lat: Tensor
    lon: Tensor

    @classmethod
    def build(cls, shape: tuple[int, int]) -> _Grid:
        lat, lon = grid_coordinates(shape)
        la = torch.deg2rad(torch.as_tensor(lat, dtype=torch.float64))
        lo = torch.deg2rad(torch.as_tensor(lon, dtype=torch.float64))
        return cls(shape[0], shape[1], la.sin().float(), la.cos().float(), lo.float())


# --------------------------------------------------------------------------------------------
# Synthetic generator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _VortexKind:
    """Parameter ranges (uniform) of one kind of vortex; angles in degrees, winds in m/s,
    pressure in Pa, moisture in kg m^-2."""

    label: int
    lat: tuple[float, float]  # |latitude| of the centre
    radius: tuple[float, float]  # Gaussian width R
    v_max: tuple[float, float]  # peak tangential wind (at rho = R)
    psl: tuple[float, float]  # pressure anomaly amplitude (sign below)
    tmq: tuple[float, float]  # moisture anomaly amplitude (sign below)
    psl_sign: float  # -1 low, +1 high
    tmq_sign: float  # +1 moist, -1 dry
    cyclonic: bool  # turning sense relative to the hemisphere
    radial: float  # +inflow / -outflow, as a fraction of the tangential speed
    label_radius: float = 1.5  # labelled within rho <= label_radius * R (label > 0 only)


_TC = _VortexKind(1, (8, 32), (4.5, 6.5), (18, 35), (1500, 4000), (12, 22), -1, 1, True, 0.35)
# Mirror decoys: a cyclone's images under a reflection h, for both actions of h on winds:
# v -> h v reverses the turning (inflow stays), v -> -h v keeps the turning and reverses inflow.
_DECOY_TURNING = replace(_TC, label=0, cyclonic=False)
_DECOY_OUTFLOW = replace(_TC, label=0, radial=-_TC.radial)
_ANTICYCLONE = _VortexKind(0, (20, 40), (8, 12), (6, 12), (800, 2000), (4, 8), 1, -1, False, -0.35)
_EXTRATROPICAL = _VortexKind(
    0, (35, 50), (10, 13), (10, 20), (1000, 3000), (3, 8), -1, 1, True, 0.35
)

# Atmospheric rivers: centre |latitude|, half length, width (degrees), TMQ (kg m^-2), wind (m/s).
_AR_LAT, _AR_HALF_LENGTH, _AR_WIDTH = (25.0, 45.0), (12.0, 20.0), (2.5, 3.5)
_AR_TMQ, _AR_WIND = (15.0, 25.0), (8.0, 18.0)

# Climatological means and background noise amplitudes (standard deviations).
_MEANS = {"TMQ": 25.0, "PSL": 101325.0}
_NOISE = {"TMQ": 4.0, "PSL": 400.0, "wind": 2.5}
# Backgrounds: random combinations of the real spherical harmonics of these degrees
# (wavelengths 360 / degree of about 36-120 degrees).
_NOISE_DEGREES = (3, 10)
# Support of a vortex: 3 R (the profiles are below 1.2% of their peak beyond); of a river: its
# half length plus 3 widths.
_VORTEX_SUPPORT = 3.0
# Labels are accumulated as one code per pixel: each river adds 1, each cyclone 2^16 (exact in
# float32, and more than the number of rivers that can overlap: at most 2 * rivers <= 2^15),
# so code >= 2^16 means cyclone and 0 < code < 2^16 river.
_LABEL_CODE = {1: 65536.0, 2: 1.0}
_MAX_SLOTS = 2**14
_CHUNK = 128


def _uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def _hemisphere_latitudes(gen: torch.Generator, n: int, per_hemisphere: int, band) -> Tensor:
    """(n, 2 * per_hemisphere) latitudes, the first half north, the second half south, with
    uniform |latitude| in ``band`` (degrees)."""
    lat = _uniform(gen, (n, 2 * per_hemisphere), *band)
    sign = torch.ones(2 * per_hemisphere, dtype=torch.float64)
    sign[per_hemisphere:] = -1.0
    return lat * sign


def _window_offsets(grid: _Grid, max_lat: float, extent_deg: float) -> tuple[Tensor, Tensor]:
    """Row and column offsets of a lat-lon window that covers a spherical cap of angular
    radius ``extent_deg`` around any centre with |latitude| <= ``max_lat``.

    A cap of radius E around latitude L spans latitudes L +- E and, unless it contains a pole,
    longitudes +- asin(sin E / cos L) (largest for the largest |L|); one pixel of margin each.
    """
    d_lat, d_lon = 180.0 / grid.h, 360.0 / grid.w
    hr = math.ceil(extent_deg / d_lat) + 1
    rows = torch.arange(-hr, hr + 1)
    if max_lat + extent_deg >= 90.0:  # the cap may contain a pole: every column
        return rows, torch.arange(-(grid.w // 2), grid.w - grid.w // 2)
    ratio = math.sin(math.radians(extent_deg)) / math.cos(math.radians(max_lat))
    hc = min(math.ceil(math.degrees(math.asin(ratio)) / d_lon) + 1, (grid.w - 1) // 2)
    return rows, torch.arange(-hc, hc + 1)


@dataclass
class _Window:
    """Lat-lon windows around M object centres, as separable row / column factors.

    ``flat`` (M, R, Cw): pixel index into H * W (rows beyond the poles clamped, ``valid`` 0);
    ``sin_lat``, ``cos_lat`` (M, R, 1) of the window rows; ``cos_dlon``, ``sin_dlon``
    (M, 1, Cw) of the longitude offsets from the centre; ``cos_lon``, ``sin_lon`` (M, 1, Cw)
    of the absolute longitudes. Every geometric quantity of a pixel is a product of a row
    factor and a column factor, so nothing (M, R, Cw, 3)-shaped is ever gathered.
    """

    flat: Tensor
    valid: Tensor
    sin_lat: Tensor
    cos_lat: Tensor
    cos_dlon: Tensor
    sin_dlon: Tensor
    cos_lon: Tensor
    sin_lon: Tensor

    @classmethod
    def around(cls, grid: _Grid, lat: Tensor, lon: Tensor, rows: Tensor, cols: Tensor) -> _Window:
        r0 = torch.floor((90.0 - lat) * grid.h / 180.0).long().clamp(0, grid.h - 1)
        c0 = torch.floor(torch.remainder(lon, 360.0) * grid.w / 360.0).long() % grid.w
        r = r0[:, None] + rows[None, :]  # (M, R)
        c = torch.remainder(c0[:, None] + cols[None, :], grid.w)  # (M, Cw)
        valid = ((r >= 0) & (r < grid.h)).float()[:, :, None]
        rc = r.clamp(0, grid.h - 1)
        lon_c = grid.lon[c]  # (M, Cw)
        dlon = lon_c - torch.deg2rad(lon).float()[:, None]
        return cls(
            flat=rc[:, :, None] * grid.w + c[:, None, :],
            valid=valid,
            sin_lat=grid.sin_lat[rc][:, :, None],
            cos_lat=grid.cos_lat[rc][:, :, None],
            cos_dlon=torch.cos(dlon)[:, None, :],
            sin_dlon=torch.sin(dlon)[:, None, :],
            cos_lon=torch.cos(lon_c)[:, None, :],
            sin_lon=torch.sin(lon_c)[:, None, :],
        )

    def dot(self, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``v . p``, ``v . east``, ``v . north`` at every window pixel for vectors v (M, 3)."""
        vx, vy, vz = (v[:, i, None, None] for i in range(3))
        horizontal = vx * self.cos_lon + vy * self.sin_lon  # (M, 1, Cw)
        along_p = self.cos_lat * horizontal + self.sin_lat * vz
        along_e = -vx * self.sin_lon + vy * self.cos_lon
        along_n = -self.sin_lat * horizontal + self.cos_lat * vz
        return along_p, along_e, along_n


def _scatter(
    out: dict[str, Tensor], sample: Tensor, win: _Window, columns: dict[str, Tensor]
) -> None:
    """``out[name][sample[m], win.flat[m, ...]] += columns[name][m, ...]`` in place, for
    buffers ``out[name]`` (m, H * W) and values (M, R, Cw) (broadcastable)."""
    hw = next(iter(out.values())).shape[1]
    index = (sample[:, None, None] * hw + win.flat).reshape(-1)
    for name, values in columns.items():
        out[name].view(-1).index_add_(0, index, values.expand(win.flat.shape).reshape(-1))


def _vortex_params(gen: torch.Generator, n: int, per_hemisphere: int, kind: _VortexKind) -> dict:
    """Draw the parameters of ``2 * per_hemisphere`` vortex slots per sample, float64 (n, S)."""
    s = 2 * per_hemisphere
    lat = _hemisphere_latitudes(gen, n, per_hemisphere, kind.lat)
    return {
        "lat": lat,
        "lon": _uniform(gen, (n, s), 0.0, 360.0),
        "radius": _uniform(gen, (n, s), *kind.radius),
        "v_max": _uniform(gen, (n, s), *kind.v_max),
        "psl": kind.psl_sign * _uniform(gen, (n, s), *kind.psl),
        "tmq": kind.tmq_sign * _uniform(gen, (n, s), *kind.tmq),
        # +1: counter-clockwise seen from above (x = east, y = north); cyclonic in the north
        "turn": torch.sign(lat) * (1.0 if kind.cyclonic else -1.0),
    }


def _ar_params(gen: torch.Generator, n: int, per_hemisphere: int) -> dict:
    s = 2 * per_hemisphere
    return {
        "lat": _hemisphere_latitudes(gen, n, per_hemisphere, _AR_LAT),
        "lon": _uniform(gen, (n, s), 0.0, 360.0),
        "angle": _uniform(gen, (n, s), 0.0, 180.0),  # of the band axis, from east towards north
        "half_length": _uniform(gen, (n, s), *_AR_HALF_LENGTH),
        "width": _uniform(gen, (n, s), *_AR_WIDTH),
        "tmq": _uniform(gen, (n, s), *_AR_TMQ),
        "wind": _uniform(gen, (n, s), *_AR_WIND)
        * torch.where(torch.rand((n, s), generator=gen) < 0.5, -1.0, 1.0).double(),
    }


def _column(t: Tensor) -> Tensor:
    return t.float()[:, None, None]


def _add_vortices(
    out: dict[str, Tensor], grid: _Grid, params: dict, active: Tensor, kind: _VortexKind
) -> None:
    """Add the vortices of a chunk (params (m, S) float64, active (m, S) bool) to the buffers
    ``out`` (m, H * W): the four fields and the label code (see ``_LABEL_CODE``)."""
    sample, slot = torch.nonzero(active, as_tuple=True)
    if sample.numel() == 0:
        return
    pick = {k: v[sample, slot] for k, v in params.items()}
    extent = _VORTEX_SUPPORT * kind.radius[1]
    win = _Window.around(
        grid, pick["lat"], pick["lon"], *_window_offsets(grid, kind.lat[1], extent)
    )
    lat_c = torch.deg2rad(pick["lat"])
    sin_c, cos_c = _column(lat_c.sin()), _column(lat_c.cos())
    cos_rho = sin_c * win.sin_lat + cos_c * win.cos_lat * win.cos_dlon
    # (a, b): east / north components at p of the unit tangent pointing towards the centre,
    # times sin(rho); a depends on the column only
    a = -cos_c * win.sin_dlon
    b = win.cos_lat * sin_c - win.sin_lat * cos_c * win.cos_dlon
    radius = torch.deg2rad(pick["radius"])
    # exp((cos rho - 1) / R^2) = exp(-rho^2 / 2R^2) (1 + O(rho^4)): a Gaussian on the sphere
    support = (cos_rho >= math.cos(math.radians(extent))) * win.valid
    bump = torch.exp((cos_rho - 1.0) * _column(radius**-2)) * support
    # Balanced winds: the tangential speed is proportional to the pressure gradient,
    # V(rho) = V_max (e^(1/2) / R) sin(rho) exp((cos rho - 1) / R^2), largest (~V_max) at rho ~ R.
    # The unit tangent is (b, -a) / sin(rho) (counter-clockwise), the unit inflow (a, b) /
    # sin(rho), so speed times unit vector is a plain product with (a, b): no division, no angle.
    speed = _column(pick["v_max"] * math.exp(0.5) / radius) * bump
    turn = _column(pick["turn"])
    columns = {
        "TMQ": _column(pick["tmq"]) * bump,
        "PSL": _column(pick["psl"]) * bump,
        "U850": speed * (turn * b + kind.radial * a),
        "V850": speed * (kind.radial * b - turn * a),
    }
    if kind.label > 0:
        cos_label = _column(torch.cos(kind.label_radius * radius))
        columns["code"] = (cos_rho >= cos_label) * win.valid * _LABEL_CODE[kind.label]
    _scatter(out, sample, win, columns)


def _add_rivers(out: dict[str, Tensor], grid: _Grid, params: dict, active: Tensor) -> None:
    """Add atmospheric rivers (great-circle moist bands with along-band winds) to ``out``."""
    sample, slot = torch.nonzero(active, as_tuple=True)
    if sample.numel() == 0:
        return
    pick = {k: v[sample, slot] for k, v in params.items()}
    extent = _AR_HALF_LENGTH[1] + 3.0 * _AR_WIDTH[1]
    win = _Window.around(grid, pick["lat"], pick["lon"], *_window_offsets(grid, _AR_LAT[1], extent))
    c, e_c, n_c = _frames(pick["lat"], pick["lon"])
    beta = torch.deg2rad(pick["angle"])[:, None]
    d = torch.cos(beta) * e_c + torch.sin(beta) * n_c  # band direction at the centre
    q = torch.linalg.cross(c, d)  # pole of the band's great circle
    c_p = win.dot(c.float())[0]
    d_p = win.dot(d.float())[0]
    q_p, q_e, q_n = win.dot(q.float())
    # q.p = sin(cross-track angle), d.p ~ sin(along-track angle) near the centre
    sin_w = _column(torch.deg2rad(pick["width"]).sin())
    sin_half = _column(torch.deg2rad(pick["half_length"]).sin())
    # Gaussian across, a smooth plateau along (tanh shoulders one width wide)
    across = torch.exp(-0.5 * (q_p / sin_w) ** 2)
    along = 0.5 * (1.0 + torch.tanh((sin_half - d_p.abs()) / sin_w))
    band = across * along * (c_p >= math.cos(math.radians(extent))) * win.valid
    # winds along the band: q x p (length cos(cross-track angle), within 2% of 1 in the band)
    # has east / north components (q.n, -q.e)
    speed = _column(pick["wind"]) * band
    columns = {
        "TMQ": _column(pick["tmq"]) * band,
        "U850": speed * q_n,
        "V850": -speed * q_e,
        "code": (band >= 0.5) * win.valid * _LABEL_CODE[2],
    }
    _scatter(out, sample, win, columns)


@dataclass(frozen=True)
class _HarmonicBasis:
    """Real spherical harmonics ``Y_b`` of degrees ``_NOISE_DEGREES`` on an H x W grid,
    orthonormal on the unit sphere, evaluated through longitude Fourier series.

    A field ``f = sum_b c_b Y_b`` has, on each grid row, the longitude series
    ``f(lon) = sum_m Re(F_m e^(i m lon))``. ``spectrum`` (B, H * (M + 1) * 2) maps coefficients
    to the real and imaginary parts of ``F_m`` on every row, already scaled and phase-shifted
    for :func:`torch.fft.irfft` on the half-pixel-offset longitudes ``(j + 1/2) 360 / W``;
    ``dspectrum`` does the same for the latitude derivative. The longitude derivative is a
    factor ``i m``. ``inv_cos`` (H, 1): ``1 / cos(lat)`` (east derivative = d/dlon / cos lat).
    """

    spectrum: Tensor
    dspectrum: Tensor
    order: Tensor
    inv_cos: Tensor
    width: int

    @property
    def n_basis(self) -> int:
        return int(self.spectrum.shape[0])

    @classmethod
    def build(cls, shape: tuple[int, int]) -> _HarmonicBasis:
        from scipy.special import sph_harm_y

        lat, _ = grid_coordinates(shape)
        h, w = shape
        top = _NOISE_DEGREES[1]
        if w < 2 * top + 2:
            raise ValueError(f"the grid needs W >= {2 * top + 2} columns for the backgrounds")
        theta = np.deg2rad(90.0 - lat)  # colatitude
        eps = 1e-6
        rows, drows = [], []
        for degree in range(_NOISE_DEGREES[0], top + 1):
            for order in range(degree + 1):
                # sph_harm_y at longitude 0 is real: the latitude factor N P(cos theta)
                p = np.real(sph_harm_y(degree, order, theta, 0.0))
                dp = -(np.real(sph_harm_y(degree, order, theta + eps, 0.0)) - p) / eps
                # cos(m lon) and sin(m lon) basis functions (only cos for m = 0), sqrt2-normalised;
                # irfft's convention: F_0 = W a_0, F_m = (W / 2) (a_m - i b_m) e^(i m pi / W)
                phase = np.exp(1j * order * np.pi / w)
                if order == 0:
                    factors = [complex(w)]
                else:
                    factors = [math.sqrt(2.0) * w / 2 * phase, -1j * math.sqrt(2.0) * w / 2 * phase]
                for factor in factors:
                    for table, values in ((rows, p), (drows, dp)):
                        spec = np.zeros((h, top + 1), dtype=complex)
                        spec[:, order] = factor * values
                        table.append(np.stack([spec.real, spec.imag], axis=-1).reshape(-1))

        def f32(a: np.ndarray) -> Tensor:
            return torch.as_tensor(np.asarray(a), dtype=torch.float32)

        return cls(
            spectrum=f32(np.stack(rows)),
            dspectrum=f32(np.stack(drows)),
            order=torch.arange(top + 1, dtype=torch.float32),
            inv_cos=f32(1.0 / np.cos(np.deg2rad(lat)))[:, None],
            width=w,
        )

    def _spectra(self, coef: Tensor, table: Tensor) -> Tensor:
        """(n, ..., B) coefficients -> (n, ..., H, M + 1) complex row spectra."""
        lead = coef.shape[:-1]
        h = self.inv_cos.shape[0]
        real = (coef.reshape(-1, coef.shape[-1]) @ table).view(*lead, h, -1, 2)
        return torch.view_as_complex(real)

    def _to_grid(self, spec: Tensor) -> Tensor:
        return torch.fft.irfft(spec, n=self.width, dim=-1)

    def scalar(self, coef: Tensor) -> Tensor:
        """Values of ``sum_b coef[..., b] Y_b``: (..., B) -> (..., H, W)."""
        return self._to_grid(self._spectra(coef, self.spectrum))

    def winds(self, psi: Tensor, chi: Tensor) -> tuple[Tensor, Tensor]:
        """East and north components (n, H, W) of ``r x grad(psi) + grad(chi)`` on the unit
        sphere, ``u = -psi_n + chi_e``, ``v = psi_e + chi_n``, for coefficients (n, B)."""
        east = 1j * self.order * self.inv_cos  # d/dlon / cos(lat), on the spectra
        u = east * self._spectra(chi, self.spectrum) - self._spectra(psi, self.dspectrum)
        v = east * self._spectra(psi, self.spectrum) + self._spectra(chi, self.dspectrum)
        return self._to_grid(u), self._to_grid(v)


def _noise_coefficients(gen: torch.Generator, n: int, n_basis: int) -> Tensor:
    """(n, 4, B) coefficients of the backgrounds of TMQ, PSL, a stream function and a velocity
    potential.

    Independent N(0, s^2) coefficients of an orthonormal real basis made of whole degrees give
    statistically isotropic random fields on the sphere (their law is invariant under every
    rotation of the sphere); ``s^2 = 4 pi / B`` gives unit variance on average."""
    return torch.randn((n, 4, n_basis), generator=gen) * math.sqrt(4.0 * math.pi / n_basis)


def _add_noise(out: dict[str, Tensor], basis: _HarmonicBasis, coef: Tensor) -> None:
    """Add the backgrounds to the buffers ``out`` (m, H * W): scalar noise on TMQ and PSL, winds
    from a stream function and a velocity potential."""
    m = coef.shape[0]
    scalars = basis.scalar(coef[:, :2]).view(m, 2, -1)
    out["TMQ"] += _NOISE["TMQ"] * scalars[:, 0]
    out["PSL"] += _NOISE["PSL"] * scalars[:, 1]
    # gradients on the unit sphere grow like the degree; dividing by a typical degree gives a
    # wind noise of standard deviation about _NOISE["wind"]
    scale = _NOISE["wind"] / (sum(_NOISE_DEGREES) / 2.0) / math.sqrt(2.0)
    u, v = basis.winds(coef[:, 2] * scale, coef[:, 3] * scale)
    out["U850"] += u.view(m, -1)
    out["V850"] += v.view(m, -1)


def generate_climate(
    n: int,
    *,
    shape: Sequence[int] = (64, 128),
    seed: int = 0,
    cyclones: int = 3,
    decoys: int = 1,
    anticyclones: int = 1,
    extratropical: int = 1,
    rivers: int = 2,
    activity: float = 0.8,
    noise: bool = True,
    return_objects: bool = False,
) -> dict[str, Tensor] | tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """Generate ``n`` synthetic ClimateNet-like samples (see the module docstring).

    Args:
        n: number of samples (time steps).
        shape: grid ``(H, W)``; atlas convention (row 0 north, columns east from 0 degrees).
        seed: seeds everything; the same seed gives bit-identical output.
        cyclones, decoys, anticyclones, extratropical, rivers: object slots per hemisphere.
        activity: probability that a slot holds an object (so counts vary between samples).
        noise: add the isotropic random backgrounds.
        return_objects: also return the catalogue of the objects drawn.

    Returns:
        ``{"TMQ", "U850", "V850", "PSL"}`` -> (n, H, W) float32 in physical units
        (kg m^-2, m/s, m/s, Pa) and ``"LABELS"`` -> (n, H, W) int64 in {0, 1, 2}. With
        ``return_objects``, a pair ``(data, objects)``: ``objects[kind]`` for kind in
        ``"cyclone", "decoy_turning", "decoy_outflow", "anticyclone", "extratropical",
        "river"`` (kinds with slots) maps parameter names (``lat``, ``lon`` in degrees,
        ``radius``, ``turn`` = +1 counter-clockwise, ...) to (n, S) float64 tensors and
        ``"active"`` to (n, S) bool.
    """
    n = _check_int("n", n, 1)
    h, w = _check_shape(shape)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    counts = {
        "cyclones": cyclones, "decoys": decoys, "anticyclones": anticyclones,
        "extratropical": extratropical, "rivers": rivers,
    }  # fmt: skip
    for name, value in counts.items():
        if _check_int(name, value, 0) > _MAX_SLOTS:
            raise ValueError(f"{name} must be <= {_MAX_SLOTS} per hemisphere, got {value}")
    activity = _check_fraction("activity", activity)
    grid = _Grid.build((h, w))

    # Every random number is drawn here, up front and in a fixed order: the chunking below
    # cannot change the data.
    gen = torch.Generator().manual_seed(seed)
    kinds = (("cyclone", _TC, cyclones), ("decoy_turning", _DECOY_TURNING, decoys),
             ("decoy_outflow", _DECOY_OUTFLOW, decoys), ("anticyclone", _ANTICYCLONE, anticyclones),
             ("extratropical", _EXTRATROPICAL, extratropical))  # fmt: skip
    vortices, catalogue = [], {}
    for name, kind, count in kinds:
        if count:
            params = _vortex_params(gen, n, count, kind)
            active = torch.rand((n, 2 * count), generator=gen) < activity
            vortices.append((kind, params, active))
            catalogue[name] = {**params, "active": active}
    river = None
    if rivers:
        river = (_ar_params(gen, n, rivers), torch.rand((n, 2 * rivers), generator=gen) < activity)
        catalogue["river"] = {**river[0], "active": river[1]}
    basis = _HarmonicBasis.build((h, w)) if noise else None
    coef = _noise_coefficients(gen, n, basis.n_basis) if basis is not None else None

    fields = {v: torch.empty(n, h * w, dtype=torch.float32) for v in _SYNTHETIC_VARIABLES}
    labels = torch.empty(n, h * w, dtype=torch.int64)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        out = {name: fields[name][start:stop] for name in _SYNTHETIC_VARIABLES}
        for name, view in out.items():
            view.fill_(_MEANS.get(name, 0.0))
        out["code"] = torch.zeros(stop - start, h * w)
        for kind, params, active in vortices:
            chunk = {k: v[start:stop] for k, v in params.items()}
            _add_vortices(out, grid, chunk, active[start:stop], kind)
        if river is not None:
            chunk = {k: v[start:stop] for k, v in river[0].items()}
            _add_rivers(out, grid, chunk, river[1][start:stop])
        if basis is not None:
            _add_noise(out, basis, coef[start:stop])
        # moisture is non-negative; only deep dry anomalies over dry noise ever reach the floor
        out["TMQ"].clamp_(min=0.1)
        code = out.pop("code")
        lab = labels[start:stop]
        lab.zero_()
        lab[code > 0] = 2  # only rivers add less than _LABEL_CODE[1]
        lab[code >= _LABEL_CODE[1]] = 1  # a cyclone label wins over a river label
    result = {name: t.view(n, h, w) for name, t in fields.items()}
    result[LABEL_VARIABLE] = labels.view(n, h, w)
    return (result, catalogue) if return_objects else result


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
    variables = _check_variables(variables)
    files = _list_files(path)
    if max_files is not None:
        files = files[: _check_int("max_files", max_files, 1)]
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
    counts = np.stack([(blocks == k).sum(axis=(1, 3)) for k in range(_N_CLASSES)])
    tiebreak = np.arange(_N_CLASSES)[:, None, None] * 1e-3
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
            bad = (y < 0) | (y >= _N_CLASSES)
            if bad.any():
                raise ValueError(
                    f"{path}: {LABEL_VARIABLE} has values outside 0..{_N_CLASSES - 1} "
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


def _vector_slots(variables: Sequence[str]) -> list[tuple[int, int]]:
    """Channel index pairs of the complete wind pairs among ``variables``."""
    pos = {v: i for i, v in enumerate(variables)}
    return [(pos[u], pos[v]) for u, v in VECTOR_PAIRS if u in pos and v in pos]


def _statistics_from_moments(
    moments: RunningMoments, variables: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (shift, scale): mean / std for scalars; 0 / shared RMS for wind pairs."""
    shift = moments.mean.copy()
    scale = np.sqrt(moments.var)
    for i, j in _vector_slots(variables):
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
    return _statistics_from_moments(moments, index.variables)


def normalize_fields(x: Tensor, shift: Sequence[float], scale: Sequence[float]) -> Tensor:
    """``(x - shift) / scale`` per channel for x (..., C, H, W); float32 result."""
    s = torch.as_tensor(np.asarray(shift), dtype=torch.float64)[:, None, None]
    d = torch.as_tensor(np.asarray(scale), dtype=torch.float64)[:, None, None]
    return ((x.double() - s) / d).float()


def class_weights_from_labels(y: Tensor, n_classes: int = _N_CLASSES) -> Tensor:
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


# --------------------------------------------------------------------------------------------
# Ground truth and atlas
# --------------------------------------------------------------------------------------------


def _lone_components(variables: Sequence[str]) -> list[str]:
    names = set(variables)
    return [v for pair in VECTOR_PAIRS for v in pair if v in names and not set(pair) <= names]


def climate_ground_truth(variables: Sequence[str] = DEFAULT_VARIABLES) -> dict[str, Tensor]:
    """The documented local symmetry of the synthetic task (module docstring).

    Returns:
        ``{"algebra": (1, 2, 2), "cosets": (1, 2, 2), "in_rep": (1, C, C)}`` float64:
        so(2) generated by ``J = [[0, -1], [1, 0]]`` in chart coordinates (x = east,
        y = north); the identity component only (no reflection is a symmetry); and the channel
        representation of ``J``: ``J`` on the (U, V) block of every wind pair in
        ``variables``, 0 on the scalars. Fresh tensors on every call.

    Raises:
        ValueError: a wind component without its partner (a lone component is not a
            representation of rotations: no ground truth exists).
    """
    variables = _check_variables(variables)
    lone = _lone_components(variables)
    if lone:
        raise ValueError(
            f"wind component(s) {', '.join(lone)} without their partner: rotations act on "
            f"(U, V) pairs, so no channel representation exists; use both of {VECTOR_PAIRS}"
        )
    J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    rep = torch.zeros(1, len(variables), len(variables), dtype=torch.float64)
    for i, j in _vector_slots(variables):
        rep[0, i, j], rep[0, j, i] = -1.0, 1.0  # (u, v) -> (-v, u), as J on (x, y)
    return {
        "algebra": J[None].clone(),
        "cosets": torch.eye(2, dtype=torch.float64)[None],
        "in_rep": rep,
    }


def climate_chart_centers(
    shape: Sequence[int],
    latitudes: Sequence[float] = (40.0, 20.0, -20.0, -40.0),
    longitudes: Sequence[float] = (60.0, 180.0, 300.0),
) -> list[tuple[int, int]]:
    """Pixel centres ``(row, col)`` nearest to the given latitudes x longitudes (degrees) on an
    H x W grid in the atlas convention (row 0 north, column 0 at longitude 0)."""
    h, w = _check_shape(shape)
    centers = []
    for lat in latitudes:
        if not -90.0 < float(lat) < 90.0:
            raise ValueError(f"chart latitude must be in (-90, 90), got {lat}")
        row = min(max(round((90.0 - float(lat)) * h / 180.0 - 0.5), 0), h - 1)
        for lon in longitudes:
            col = round(float(lon) % 360.0 * w / 360.0 - 0.5) % w
            centers.append((int(row), int(col)))
    return centers


def climate_atlas(
    shape: Sequence[int],
    latitudes: Sequence[float] = (40.0, 20.0, -20.0, -40.0),
    longitudes: Sequence[float] = (60.0, 180.0, 300.0),
    radius: int = 8,
):
    """Sphere atlas (gnomonic charts, x = east, y = north) at ``latitudes`` x ``longitudes``
    with ``radius`` pixels; validated against ``shape``."""
    from atlasd.atlas import Atlas  # core module, imported when an atlas is needed

    centers = climate_chart_centers(shape, latitudes, longitudes)
    return Atlas.grid(shape=tuple(shape), centers=centers, radius=radius, manifold="sphere")


# --------------------------------------------------------------------------------------------
# Lightning data module
# --------------------------------------------------------------------------------------------


class ClimateDataModule(SplitsDataModule):
    """ClimateNet-style segmentation (0 background, 1 tropical cyclone, 2 atmospheric river).

    Args:
        source: ``"synthetic"`` (generate ``n`` samples with :func:`generate_climate`) or
            ``"netcdf"`` (read the ClimateNet files under ``path``).
        path: folder (or file) of ``.nc`` files for ``source="netcdf"``.
        variables: input channels, in order; default TMQ, U850, V850, PSL.
        n, shape, seed, synthetic: number of samples, grid, seed and extra keyword arguments of
            :func:`generate_climate` (``source="synthetic"``).
        max_files, coarsen: use the first ``max_files`` files; block-average the fields by
            ``coarsen`` (majority label) on reading (``source="netcdf"``; the real 768 x 1152
            grid with ``coarsen=8`` gives 96 x 144). Memory: N * C * H * W * 4 bytes.
        val_fraction, test_fraction: contiguous splits in time order: the first samples train,
            then validation, then test (neighbouring time steps are correlated, so random
            splits would leak).
        batch_size, num_workers: of the data loaders.
        chart_latitudes, chart_longitudes, chart_radius: the atlas (:func:`climate_atlas`).

    After ``setup()``: ``x`` (N, C, H, W) float32, normalised with statistics of the training
    split (``shift``, ``scale``, ``statistics``); ``y`` (N, H, W) int64; ``x_train``,
    ``y_train``, ``x_val``, ``y_val``, ``x_test``, ``y_test`` (views); ``class_weights`` (3,)
    float32 from the training labels (:func:`class_weights_from_labels`). Always available:
    ``kind = "local"``, ``atlas``, ``ground_truth`` (:func:`climate_ground_truth`; None when
    a wind component lacks its partner), ``variables``. Each file is read exactly once.
    """

    kind = "local"

    def __init__(
        self,
        source: str = "synthetic",
        path: str | None = None,
        variables: Sequence[str] = DEFAULT_VARIABLES,
        n: int = 1000,
        shape: Sequence[int] = (64, 128),
        seed: int = 0,
        synthetic: Mapping[str, Any] | None = None,
        max_files: int | None = None,
        coarsen: int = 1,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 16,
        num_workers: int = 0,
        chart_latitudes: Sequence[float] = (40.0, 20.0, -20.0, -40.0),
        chart_longitudes: Sequence[float] = (60.0, 180.0, 300.0),
        chart_radius: int = 8,
    ) -> None:
        super().__init__()
        if source not in ("synthetic", "netcdf"):
            raise ValueError(f"source must be 'synthetic' or 'netcdf', got {source!r}")
        self.source = source
        self.variables = _check_variables(variables)
        if source == "synthetic":
            unknown = [v for v in self.variables if v not in _SYNTHETIC_VARIABLES]
            if unknown:
                raise ValueError(
                    f"the synthetic generator makes {_SYNTHETIC_VARIABLES}, not {unknown}"
                )
            self.n = _check_int("n", n, 3)
            self.shape = _check_shape(shape)
        else:
            if path is None:
                raise ValueError("source='netcdf' needs path= (a folder of ClimateNet .nc files)")
            if not Path(path).exists():
                raise FileNotFoundError(f"no such file or folder: {path}")
            self.shape = None  # read from the files
        self.path = None if path is None else str(path)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.synthetic = dict(synthetic or {})
        unknown = sorted(set(self.synthetic) - _SYNTHETIC_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown synthetic option(s) {unknown}; known: {sorted(_SYNTHETIC_OPTIONS)}"
            )
        self.max_files = None if max_files is None else _check_int("max_files", max_files, 1)
        self.coarsen = _check_int("coarsen", coarsen, 1)
        self.val_fraction = _check_fraction("val_fraction", val_fraction, closed=False)
        self.test_fraction = _check_fraction("test_fraction", test_fraction, closed=False)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1 (nothing left to train)")
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.num_workers = _check_int("num_workers", num_workers, 0)
        self.chart_latitudes = tuple(float(v) for v in chart_latitudes)
        self.chart_longitudes = tuple(float(v) for v in chart_longitudes)
        self.chart_radius = _check_int("chart_radius", chart_radius, 1)
        self.ground_truth = (
            None if _lone_components(self.variables) else climate_ground_truth(self.variables)
        )
        self.index: ClimateNetIndex | None = None
        self._atlas = None
        self.x: Tensor | None = None
        self.y: Tensor | None = None

    # ------------------------------------------------------------------ geometry
    def _grid_shape(self) -> tuple[int, int]:
        if self.shape is None:
            self.index = scan_climatenet(self.path, self.variables, max_files=self.max_files)
            h, w = self.index.shape
            if h % self.coarsen or w % self.coarsen:
                raise ValueError(f"coarsen={self.coarsen} must divide the grid {h} x {w}")
            self.shape = (h // self.coarsen, w // self.coarsen)
        return self.shape

    @property
    def atlas(self):
        if self._atlas is None:
            self._atlas = climate_atlas(
                self._grid_shape(), self.chart_latitudes, self.chart_longitudes, self.chart_radius
            )
        return self._atlas

    def _split_sizes(self, n: int) -> tuple[int, int, int]:
        def size(fraction: float) -> int:
            return 0 if fraction == 0.0 else max(1, round(n * fraction))

        n_val, n_test = size(self.val_fraction), size(self.test_fraction)
        n_train = n - n_val - n_test
        if n_train < 1:
            raise ValueError(
                f"{n} samples with val_fraction={self.val_fraction}, test_fraction="
                f"{self.test_fraction} leave no training samples"
            )
        return n_train, n_val, n_test

    # ------------------------------------------------------------------ loading
    def _load_synthetic(self) -> tuple[Tensor, Tensor, RunningMoments]:
        data = generate_climate(self.n, shape=self.shape, seed=self.seed, **self.synthetic)
        x = torch.stack([data[v] for v in self.variables], dim=1)
        n_train = self._split_sizes(self.n)[0]
        moments = RunningMoments(len(self.variables))
        for start in range(0, n_train, 256):  # streaming, as for files
            moments.update(x[start : min(start + 256, n_train)], axis=1)
        return x, data[LABEL_VARIABLE], moments

    def _load_netcdf(self) -> tuple[Tensor, Tensor, RunningMoments]:
        h, w = self._grid_shape()
        files = self.index.files
        n_train = self._split_sizes(len(files))[0]
        x = torch.empty(len(files), len(self.variables), h, w)
        y = torch.empty(len(files), h, w, dtype=torch.int64)
        moments = RunningMoments(len(self.variables))
        for i, f in enumerate(files):  # one file at a time, each read exactly once
            xi, yi = read_climatenet_file(f, self.index, coarsen=self.coarsen)
            if i < n_train:
                moments.update(xi)
            x[i] = torch.from_numpy(xi)
            y[i] = torch.from_numpy(yi)
        return x, y, moments

    def setup(self, stage: str | None = None) -> None:
        if self.x is not None:
            return
        load = self._load_synthetic if self.source == "synthetic" else self._load_netcdf
        x, y, moments = load()
        shift, scale = _statistics_from_moments(moments, self.variables)
        self.shift, self.scale = shift, scale
        self.statistics = {
            v: {"shift": float(s), "scale": float(d)}
            for v, s, d in zip(self.variables, shift, scale, strict=True)
        }
        # in place, in chunks: no float64 copy of the whole data set
        s = torch.as_tensor(shift, dtype=torch.float64)[:, None, None]
        d = torch.as_tensor(scale, dtype=torch.float64)[:, None, None]
        for start in range(0, x.shape[0], 256):
            block = x[start : start + 256]
            block.copy_(((block.double() - s) / d).float())
        n_train, n_val, _ = self._split_sizes(x.shape[0])
        self.x, self.y = x, y
        a, b = n_train, n_train + n_val
        self.x_train, self.y_train = x[:a], y[:a]
        self.x_val, self.y_val = x[a:b], y[a:b]
        self.x_test, self.y_test = x[b:], y[b:]
        self.class_weights = class_weights_from_labels(self.y_train)
        self.train_dataset = TensorDataset(self.x_train, self.y_train)
        self.val_dataset = TensorDataset(self.x_val, self.y_val)
        self.test_dataset = TensorDataset(self.x_test, self.y_test)

    # ------------------------------------------------------------------ loaders
