"""Climate fields: ClimateNet-style segmentation of tropical cyclones and atmospheric rivers.

The task (0 background, 1 tropical cyclone, 2 atmospheric river) reads real ClimateNet netCDF
files or generates synthetic ones of the same layout. Its pieces:

- :mod:`atlasd.datasets.climate_files`: the ClimateNet file layout, the loader
  (:func:`scan_climatenet`, :func:`read_climatenet_file`, :class:`ClimateNetFiles`), the writer
  (:func:`write_climatenet_files`) and the normalisation statistics (:class:`RunningMoments`,
  :func:`channel_statistics`);
- :mod:`atlasd.datasets.climate_fields`: the synthetic generator (:func:`generate_climate`);
- this module: the ground truth, the atlas and :class:`ClimateDataModule`, whose ``spec`` is
  the task contract. The loader's and the generator's public functions are importable from
  here too (``__all__``).

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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from atlasd.checks import check_fraction, check_int
from atlasd.datasets.base import TaskSpec, not_set_up
from atlasd.datasets.climate_fields import SYNTHETIC_VARIABLES, generate_climate
from atlasd.datasets.climate_files import (
    CLASS_NAMES,
    CLIMATENET_VARIABLES,
    DEFAULT_VARIABLES,
    LABEL_VARIABLE,
    N_CLASSES,
    VECTOR_PAIRS,
    ClimateNetFiles,
    ClimateNetIndex,
    RunningMoments,
    channel_statistics,
    check_climate_shape,
    check_variables,
    class_weights_from_labels,
    grid_coordinates,
    normalize_fields,
    read_climatenet_file,
    scan_climatenet,
    statistics_from_moments,
    vector_slots,
    write_climatenet_files,
)
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
    "climate_chart_centers",
    "climate_ground_truth",
    "generate_climate",
    "grid_coordinates",
    "normalize_fields",
    "read_climatenet_file",
    "representation_error",
    "scan_climatenet",
    "write_climatenet_files",
]

# keyword arguments of generate_climate that ClimateDataModule(synthetic=...) passes on
_SYNTHETIC_OPTIONS = frozenset(
    {"cyclones", "decoys", "anticyclones", "extratropical", "rivers", "activity", "noise"}
)


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
    variables = check_variables(variables)
    lone = _lone_components(variables)
    if lone:
        raise ValueError(
            f"wind component(s) {', '.join(lone)} without their partner: rotations act on "
            f"(U, V) pairs, so no channel representation exists; use both of {VECTOR_PAIRS}"
        )
    J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    rep = torch.zeros(1, len(variables), len(variables), dtype=torch.float64)
    for i, j in vector_slots(variables):
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
    h, w = check_climate_shape(shape)
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
    ``spec`` (after ``setup()``): the task contract, :class:`atlasd.datasets.base.TaskSpec`.
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
        self.variables = check_variables(variables)
        if source == "synthetic":
            unknown = [v for v in self.variables if v not in SYNTHETIC_VARIABLES]
            if unknown:
                raise ValueError(
                    f"the synthetic generator makes {SYNTHETIC_VARIABLES}, not {unknown}"
                )
            self.n = check_int("n", n, 3)
            self.shape = check_climate_shape(shape)
        else:
            if path is None:
                raise ValueError("source='netcdf' needs path= (a folder of ClimateNet .nc files)")
            if not Path(path).exists():
                raise FileNotFoundError(f"no such file or folder: {path}")
            self.shape = None  # read from the files
        self.path = None if path is None else str(path)
        self.seed = check_int("seed", seed)
        self.synthetic = dict(synthetic or {})
        unknown = sorted(set(self.synthetic) - _SYNTHETIC_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown synthetic option(s) {unknown}; known: {sorted(_SYNTHETIC_OPTIONS)}"
            )
        self.max_files = None if max_files is None else check_int("max_files", max_files, 1)
        self.coarsen = check_int("coarsen", coarsen, 1)
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1 (nothing left to train)")
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.chart_latitudes = tuple(float(v) for v in chart_latitudes)
        self.chart_longitudes = tuple(float(v) for v in chart_longitudes)
        self.chart_radius = check_int("chart_radius", chart_radius, 1)
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

    @property
    def spec(self) -> TaskSpec:
        """The task contract: local so(2) on ``C`` field channels, 3-class segmentation scored
        by mean IoU, class weights from the training labels; no broken variant."""
        if self.x is None:
            raise not_set_up(self)
        return TaskSpec(
            name="climate",
            kind="local",
            inputs="fields",
            d=2,
            in_channels=int(self.x.shape[1]),
            target="classification",
            n_classes=N_CLASSES,
            class_weights=tuple(float(w) for w in self.class_weights),
            metric="mean_iou",
            ground_truth=self.ground_truth,
            atlas=self.atlas,
        )

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
        shift, scale = statistics_from_moments(moments, self.variables)
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
