"""A synthetic generator of ClimateNet-like fields (:func:`generate_climate`).

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

"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from atlasd.checks import check_int, check_number
from atlasd.datasets.climate_files import LABEL_VARIABLE, check_climate_shape, grid_coordinates

__all__ = [
    "ANTICYCLONE",
    "DECOY_OUTFLOW",
    "DECOY_TURNING",
    "EXTRATROPICAL",
    "SYNTHETIC_VARIABLES",
    "TROPICAL_CYCLONE",
    "SphereGrid",
    "VortexKind",
    "add_vortices",
    "generate_climate",
]

#: The variables the generator makes.
SYNTHETIC_VARIABLES: tuple[str, ...] = ("TMQ", "U850", "V850", "PSL")


def _frames(lat_deg: Tensor, lon_deg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unit position ``p`` and local east / north unit vectors, each (..., 3) float64."""
    lat, lon = torch.deg2rad(lat_deg), torch.deg2rad(lon_deg)
    cl, sl, co, so = torch.cos(lat), torch.sin(lat), torch.cos(lon), torch.sin(lon)
    p = torch.stack([cl * co, cl * so, sl], dim=-1)
    east = torch.stack([-so, co, torch.zeros_like(co)], dim=-1)
    north = torch.stack([-sl * co, -sl * so, cl], dim=-1)
    return p, east, north


@dataclass(frozen=True)
class SphereGrid:
    """Row and column tables of an H x W grid (float32): latitude sines / cosines (H,),
    longitudes in radians (W,)."""

    h: int
    w: int
    sin_lat: Tensor
    cos_lat: Tensor
    lon: Tensor

    @classmethod
    def build(cls, shape: tuple[int, int]) -> SphereGrid:
        lat, lon = grid_coordinates(shape)
        la = torch.deg2rad(torch.as_tensor(lat, dtype=torch.float64))
        lo = torch.deg2rad(torch.as_tensor(lon, dtype=torch.float64))
        return cls(shape[0], shape[1], la.sin().float(), la.cos().float(), lo.float())


# --------------------------------------------------------------------------------------------
# Synthetic generator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VortexKind:
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


TROPICAL_CYCLONE = VortexKind(
    1, (8, 32), (4.5, 6.5), (18, 35), (1500, 4000), (12, 22), -1, 1, True, 0.35
)
# Mirror decoys: a cyclone's images under a reflection h, for both actions of h on winds:
# v -> h v reverses the turning (inflow stays), v -> -h v keeps the turning and reverses inflow.
DECOY_TURNING = replace(TROPICAL_CYCLONE, label=0, cyclonic=False)
DECOY_OUTFLOW = replace(TROPICAL_CYCLONE, label=0, radial=-TROPICAL_CYCLONE.radial)
ANTICYCLONE = VortexKind(0, (20, 40), (8, 12), (6, 12), (800, 2000), (4, 8), 1, -1, False, -0.35)
EXTRATROPICAL = VortexKind(0, (35, 50), (10, 13), (10, 20), (1000, 3000), (3, 8), -1, 1, True, 0.35)

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


def _window_offsets(grid: SphereGrid, max_lat: float, extent_deg: float) -> tuple[Tensor, Tensor]:
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
    def around(
        cls, grid: SphereGrid, lat: Tensor, lon: Tensor, rows: Tensor, cols: Tensor
    ) -> _Window:
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


def _vortex_params(gen: torch.Generator, n: int, per_hemisphere: int, kind: VortexKind) -> dict:
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


def add_vortices(
    out: dict[str, Tensor], grid: SphereGrid, params: dict, active: Tensor, kind: VortexKind
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


def _add_rivers(out: dict[str, Tensor], grid: SphereGrid, params: dict, active: Tensor) -> None:
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
    n = check_int("n", n, 1)
    h, w = check_climate_shape(shape)
    seed = check_int("seed", seed)
    counts = {
        "cyclones": cyclones, "decoys": decoys, "anticyclones": anticyclones,
        "extratropical": extratropical, "rivers": rivers,
    }  # fmt: skip
    for name, value in counts.items():
        if check_int(name, value, 0) > _MAX_SLOTS:
            raise ValueError(f"{name} must be <= {_MAX_SLOTS} per hemisphere, got {value}")
    activity = check_number("activity", activity)
    if not 0.0 <= activity <= 1.0:
        raise ValueError(f"activity must be in [0, 1], got {activity}")
    grid = SphereGrid.build((h, w))

    # Every random number is drawn here, up front and in a fixed order: the chunking below
    # cannot change the data.
    gen = torch.Generator().manual_seed(seed)
    kinds = (("cyclone", TROPICAL_CYCLONE, cyclones), ("decoy_turning", DECOY_TURNING, decoys),
             ("decoy_outflow", DECOY_OUTFLOW, decoys), ("anticyclone", ANTICYCLONE, anticyclones),
             ("extratropical", EXTRATROPICAL, extratropical))  # fmt: skip
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

    fields = {v: torch.empty(n, h * w, dtype=torch.float32) for v in SYNTHETIC_VARIABLES}
    labels = torch.empty(n, h * w, dtype=torch.int64)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        out = {name: fields[name][start:stop] for name in SYNTHETIC_VARIABLES}
        for name, view in out.items():
            view.fill_(_MEANS.get(name, 0.0))
        out["code"] = torch.zeros(stop - start, h * w)
        for kind, params, active in vortices:
            chunk = {k: v[start:stop] for k, v in params.items()}
            add_vortices(out, grid, chunk, active[start:stop], kind)
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
