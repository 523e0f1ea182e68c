"""Tests of the climate task (atlasd.datasets.climate): the ClimateNet loader on files written in
the real layout, the data-driven normalisation, the synthetic generator's physics and its
documented ground truth."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasd.atlas import Atlas, Chart, act
from atlasd.datasets import climate_fields as F
from atlasd.datasets.climate import (
    DEFAULT_VARIABLES,
    ClimateDataModule,
    ClimateNetFiles,
    RunningMoments,
    channel_statistics,
    class_weights_from_labels,
    climate_atlas,
    climate_ground_truth,
    generate_climate,
    grid_coordinates,
    read_climatenet_file,
    representation_error,
    scan_climatenet,
    write_climatenet_files,
)

SHAPE = (32, 64)  # small grid: 5.625 degrees per pixel


@pytest.fixture(scope="module")
def small() -> dict[str, torch.Tensor]:
    return generate_climate(6, shape=SHAPE, seed=11)


@pytest.fixture(scope="module")
def files(small, tmp_path_factory) -> list[Path]:
    return write_climatenet_files(tmp_path_factory.mktemp("climatenet"), small)


def _write(path: Path, variables: dict, lat: np.ndarray, lon: np.ndarray, labels=None) -> Path:
    """A hand-made file in the ClimateNet layout: variables (time, lat, lon), LABELS (lat, lon)."""
    data = {
        k: (("time", "lat", "lon"), np.asarray(v, dtype=np.float32)[None])
        for k, v in variables.items()
    }
    if labels is not None:
        data["LABELS"] = (("lat", "lon"), np.asarray(labels, dtype=np.int64))
    xr.Dataset(data, coords={"time": [0.0], "lat": lat, "lon": lon}).to_netcdf(
        path, engine="h5netcdf"
    )
    return path


def _cell_grid(shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    lat, lon = grid_coordinates(shape)
    return lat[::-1].copy(), lon  # ascending latitudes, as in ClimateNet files


# ------------------------------------------------------------------------------------------------
# Files in the real layout, read back by the real loader
# ------------------------------------------------------------------------------------------------


def test_written_files_have_the_climatenet_layout(files, small):
    assert [p.name for p in files[:2]] == ["data-2000-01-01-00-1_0.nc", "data-2000-01-01-03-1_0.nc"]
    with xr.open_dataset(files[0], engine="h5netcdf") as ds:
        assert dict(ds.sizes) == {"time": 1, "lat": SHAPE[0], "lon": SHAPE[1]}
        for name in ("TMQ", "U850", "V850", "PSL"):
            assert ds[name].dims == ("time", "lat", "lon") and ds[name].dtype == np.float32
        assert ds["LABELS"].dims == ("lat", "lon") and ds["LABELS"].dtype == np.int64
        assert np.all(np.diff(ds["lat"].values) > 0)  # south to north, like CAM output
        assert ds["PSL"].attrs["units"] == "Pa"
        # stored south-to-north: the first stored row is the atlas's last (southernmost) row
        np.testing.assert_array_equal(ds["PSL"].values[0, 0], small["PSL"][0, -1].numpy())


def test_real_loader_round_trips_synthetic_files(files, small):
    index = scan_climatenet(files[0].parent)
    assert index.shape == SHAPE and index.flip_lat and index.lon_shift == 0 and len(index) == 6
    np.testing.assert_allclose(index.lat, grid_coordinates(SHAPE)[0])
    for i in (0, 4):
        x, y = read_climatenet_file(files[i], index)
        expected = torch.stack([small[v][i] for v in DEFAULT_VARIABLES]).numpy()
        np.testing.assert_array_equal(x, expected)  # float32 round trip is exact
        np.testing.assert_array_equal(y, small["LABELS"][i].numpy())


def test_loader_orients_descending_latitudes_and_negative_longitudes(tmp_path):
    """Other global grids (north first, longitudes from -180) come out in the atlas order."""
    rng = np.random.default_rng(0)
    atlas_order = rng.normal(size=SHAPE)
    lat, lon = grid_coordinates(SHAPE)  # descending latitudes already
    shift = SHAPE[1] // 2
    lon_stored = np.roll(lon, shift) - np.where(np.arange(SHAPE[1]) < shift, 360.0, 0.0)
    assert np.all(np.diff(lon_stored) > 0) and lon_stored[0] < 0
    stored = np.roll(atlas_order, shift, axis=1)
    _write(tmp_path / "a.nc", {"TMQ": stored}, lat, lon_stored, labels=np.zeros(SHAPE))
    index = scan_climatenet(tmp_path, ["TMQ"])
    assert not index.flip_lat and index.lon_shift == shift
    x, _ = read_climatenet_file(tmp_path / "a.nc", index)
    np.testing.assert_allclose(x[0], atlas_order, rtol=1e-6)


def test_loader_reads_only_what_was_asked_for(tmp_path, small):
    """A variable nobody asked for is never read: its NaNs go unnoticed, until it is asked for."""
    lat, lon = _cell_grid()
    fields = {v: small[v][0].numpy()[::-1] for v in DEFAULT_VARIABLES}
    fields["PRECT"] = np.full(SHAPE, np.nan)
    _write(tmp_path / "f.nc", fields, lat, lon, labels=small["LABELS"][0].numpy()[::-1])
    index = scan_climatenet(tmp_path, ["PSL", "TMQ"])
    x, _ = read_climatenet_file(tmp_path / "f.nc", index)
    assert x.shape == (2, *SHAPE)  # requested channels only, in the requested order
    np.testing.assert_array_equal(x[0], small["PSL"][0].numpy())
    np.testing.assert_array_equal(x[1], small["TMQ"][0].numpy())
    index = scan_climatenet(tmp_path, ["TMQ", "PRECT"])
    with pytest.raises(ValueError, match=r"f\.nc: variable PRECT contains 2048 NaN"):
        read_climatenet_file(tmp_path / "f.nc", index)


def test_lazy_dataset_reads_one_file_per_item(files, small):
    index = scan_climatenet(files[0].parent)
    shift, scale = channel_statistics(index)
    ds = ClimateNetFiles(index, shift, scale)
    assert len(ds) == 6
    x, y = ds[3]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (4, *SHAPE)
    raw = torch.stack([small[v][3] for v in DEFAULT_VARIABLES]).double()
    expected = (raw - torch.tensor(shift)[:, None, None]) / torch.tensor(scale)[:, None, None]
    torch.testing.assert_close(x, expected.float())
    torch.testing.assert_close(y, small["LABELS"][3])


def test_coarsening_averages_fields_and_takes_majority_labels(tmp_path):
    lat, lon = _cell_grid()
    field = np.arange(SHAPE[0] * SHAPE[1], dtype=np.float64).reshape(SHAPE)
    labels = np.zeros(SHAPE, dtype=np.int64)
    labels[:2, :2] = 1  # a whole 2x2 block of class 1 (in stored, south-first order)
    labels[2, 2] = 2  # one pixel of class 2 in another block: the majority there is 0
    _write(tmp_path / "c.nc", {"TMQ": field}, lat, lon, labels=labels)
    index = scan_climatenet(tmp_path, ["TMQ"])
    x, y = read_climatenet_file(tmp_path / "c.nc", index, coarsen=2)
    flipped = field[::-1]
    assert x.shape == (1, 16, 32)
    assert x[0, 0, 0] == pytest.approx(flipped[:2, :2].mean())
    assert y[-1, 0] == 1 and (y == 2).sum() == 0 and (y == 1).sum() == 1
    with pytest.raises(ValueError, match="coarsen=3 must divide the grid 32 x 64"):
        read_climatenet_file(tmp_path / "c.nc", index, coarsen=3)


# ------------------------------------------------------------------------------------------------
# Errors: each names the file and the problem
# ------------------------------------------------------------------------------------------------


def test_missing_file_folder_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        scan_climatenet(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no \.nc files in"):
        scan_climatenet(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        scan_climatenet([tmp_path / "gone.nc"])
    with pytest.raises(ValueError, match="needs path="):
        ClimateDataModule(source="netcdf")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        ClimateDataModule(source="netcdf", path=str(tmp_path / "nowhere"))


def test_missing_variable_and_missing_labels(tmp_path):
    lat, lon = _cell_grid()
    _write(
        tmp_path / "m.nc", {"TMQ": np.ones(SHAPE), "PSL": np.ones(SHAPE)}, lat, lon, np.zeros(SHAPE)
    )
    with pytest.raises(
        KeyError, match=r"m\.nc: variable U850 not found; the file has LABELS, PSL, TMQ"
    ):
        scan_climatenet(tmp_path)
    _write(tmp_path / "m.nc", {"TMQ": np.ones(SHAPE)}, lat, lon)
    with pytest.raises(KeyError, match="variable LABELS not found"):
        scan_climatenet(tmp_path, ["TMQ"])
    assert scan_climatenet(tmp_path, ["TMQ"], labels=False).shape == SHAPE


def test_wrong_dims_and_mismatched_grids(tmp_path):
    lat, lon = _cell_grid()
    bad = tmp_path / "bad"
    bad.mkdir()
    xr.Dataset(
        {
            "TMQ": (("lon", "lat"), np.ones(SHAPE[::-1], np.float32)),
            "LABELS": (("lat", "lon"), np.zeros(SHAPE, np.int64)),
        },
        coords={"lat": lat, "lon": lon},
    ).to_netcdf(bad / "t.nc", engine="h5netcdf")
    with pytest.raises(
        ValueError, match=r"t\.nc: variable TMQ has dims \(lon=64, lat=32\); expected"
    ):
        scan_climatenet(bad, ["TMQ"])

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _write(mixed / "a.nc", {"TMQ": np.ones(SHAPE)}, lat, lon, np.zeros(SHAPE))
    lat2, lon2 = _cell_grid((16, 32))
    _write(mixed / "b.nc", {"TMQ": np.ones((16, 32))}, lat2, lon2, np.zeros((16, 32)))
    with pytest.raises(ValueError, match=r"b\.nc: grid 16 x 32 differs from a\.nc's 32 x 64"):
        scan_climatenet(mixed, ["TMQ"])

    regional = tmp_path / "regional"
    regional.mkdir()
    _write(regional / "r.nc", {"TMQ": np.ones(SHAPE)}, lat / 2, lon, np.zeros(SHAPE))
    with pytest.raises(ValueError, match="not a global grid"):
        scan_climatenet(regional, ["TMQ"])


def test_nan_inf_and_bad_labels_are_rejected(tmp_path):
    lat, lon = _cell_grid()
    field = np.ones(SHAPE)
    field[3, 4], field[5, 6] = np.nan, np.inf
    _write(tmp_path / "n.nc", {"TMQ": field}, lat, lon, np.zeros(SHAPE))
    index = scan_climatenet(tmp_path, ["TMQ"])  # headers only: no values read yet
    with pytest.raises(ValueError, match=r"n\.nc: variable TMQ contains 1 NaN and 1 Inf values"):
        read_climatenet_file(tmp_path / "n.nc", index)
    labels = np.zeros(SHAPE)
    labels[0, 0] = 7
    _write(tmp_path / "n.nc", {"TMQ": np.ones(SHAPE)}, lat, lon, labels)
    with pytest.raises(ValueError, match=r"LABELS has values outside 0\.\.2 \(\[7\]\)"):
        read_climatenet_file(tmp_path / "n.nc", index)
    with pytest.raises(ValueError, match="are constant: cannot normalise"):
        channel_statistics(index)


# ------------------------------------------------------------------------------------------------
# Normalisation statistics come from the data
# ------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=6),
    st.floats(-1e5, 1e5),
    st.floats(1e-2, 1e3),
)
def test_running_moments_match_numpy_for_any_chunking(sizes, offset, spread):
    rng = np.random.default_rng(len(sizes))
    chunks = [offset + spread * rng.normal(size=(3, s)) for s in sizes]
    m = RunningMoments(3)
    for c in chunks:
        m.update(c)
    whole = np.concatenate(chunks, axis=1)
    np.testing.assert_allclose(m.mean, whole.mean(1), rtol=1e-12, atol=1e-9 * abs(offset) + 1e-12)
    # a naive sum-of-squares update loses ~1e-2 here (offset 1e5, spread 1e-2); Chan: ~1e-9
    np.testing.assert_allclose(m.var, whole.var(1), rtol=1e-8, atol=1e-12 * spread**2)


def test_statistics_are_measured_from_the_files_and_normalise_the_training_split(files, small):
    dm = ClimateDataModule(
        source="netcdf", path=str(files[0].parent), val_fraction=0.2, test_fraction=0.2
    )
    dm.setup()
    assert dm.x.shape == (6, 4, *SHAPE) and dm.y.shape == (6, *SHAPE)
    assert len(dm.x_train) == 4 and len(dm.x_val) == 1 and len(dm.x_test) == 1
    train = torch.stack([small[v][:4] for v in DEFAULT_VARIABLES], 1).double()
    stats = dm.statistics
    assert stats["TMQ"]["shift"] == pytest.approx(float(train[:, 0].mean()), rel=1e-9)
    assert stats["PSL"]["scale"] == pytest.approx(float(train[:, 3].std(unbiased=False)), rel=1e-9)
    # winds: no mean removed, one shared scale = RMS of the pair
    rms = math.sqrt(float(train[:, 1:3].square().mean()))
    assert stats["U850"] == stats["V850"] == {"shift": 0.0, "scale": pytest.approx(rms, rel=1e-9)}
    x = dm.x_train.double()
    for c in (0, 3):  # scalars: mean 0, std 1 on the training split
        assert abs(float(x[:, c].mean())) < 1e-5 and float(
            x[:, c].std(unbiased=False)
        ) == pytest.approx(1, abs=1e-5)
    assert float(x[:, 1:3].square().mean()) == pytest.approx(1.0, abs=1e-5)
    assert float(dm.x_test.double()[:, 0].mean()) != pytest.approx(0.0, abs=1e-3)  # not refitted


def test_statistics_follow_the_data_not_constants(tmp_path, small, files):
    """Doubling PSL in the files doubles its measured shift and scale; other channels keep
    theirs."""
    doubled = {k: (v[:3] * 2 if k == "PSL" else v[:3]) for k, v in small.items()}
    shift, scale = channel_statistics(scan_climatenet(write_climatenet_files(tmp_path, doubled)))
    index = scan_climatenet(files[0].parent)
    ref_shift, ref_scale = channel_statistics(index, files[:3])
    assert shift[3] == pytest.approx(2 * ref_shift[3], rel=1e-9)
    assert scale[3] == pytest.approx(2 * ref_scale[3], rel=1e-9)
    assert scale[0] == pytest.approx(ref_scale[0], rel=1e-9)
    assert shift[0] == pytest.approx(ref_shift[0], rel=1e-9)


def test_synthetic_module_equals_the_netcdf_module_on_the_same_samples(files):
    """The in-memory synthetic path and the file path share one normalisation code."""
    a = ClimateDataModule(n=6, shape=SHAPE, seed=11, val_fraction=0.2, test_fraction=0.2)
    b = ClimateDataModule(
        source="netcdf", path=str(files[0].parent), val_fraction=0.2, test_fraction=0.2
    )
    a.setup()
    b.setup()
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    torch.testing.assert_close(a.y, b.y, rtol=0, atol=0)
    for v in DEFAULT_VARIABLES:  # merged per file vs per block: equal up to rounding
        assert a.statistics[v]["shift"] == pytest.approx(b.statistics[v]["shift"], rel=1e-12)
        assert a.statistics[v]["scale"] == pytest.approx(b.statistics[v]["scale"], rel=1e-12)


def test_class_weights_are_inverse_frequencies():
    y = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2]])
    w = class_weights_from_labels(y)
    torch.testing.assert_close(w, torch.tensor([12 / 18, 12 / 6, 12 / 12]))
    w = class_weights_from_labels(torch.zeros(5, dtype=torch.int64))
    torch.testing.assert_close(w, torch.tensor([1 / 3, 1 / 3, 1 / 3]))


# ------------------------------------------------------------------------------------------------
# The synthetic generator: determinism, speed, physics
# ------------------------------------------------------------------------------------------------


def test_same_seed_same_data_different_seed_differs():
    a = generate_climate(4, shape=SHAPE, seed=5)
    b = generate_climate(4, shape=SHAPE, seed=5)
    c = generate_climate(4, shape=SHAPE, seed=6)
    for k in a:
        assert torch.equal(a[k], b[k])
    assert (a["PSL"] - c["PSL"]).abs().max() > 100.0
    assert a["LABELS"].dtype == torch.int64 and set(a["LABELS"].unique().tolist()) <= {0, 1, 2}


def test_ten_thousand_samples_generate_in_seconds():
    start_cpu, start = time.process_time(), time.perf_counter()
    data = generate_climate(10_000, seed=0)
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    assert data["TMQ"].shape == (10_000, 64, 128)
    # vectorised: about 9 CPU-seconds measured on the shared 2-core machine under heavy load
    assert cpu < 25.0, f"10k samples took {cpu:.1f} CPU-s ({wall:.1f} s wall)"


def _vorticity_divergence(
    u: torch.Tensor, v: torch.Tensor, shape
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative vorticity and divergence on the unit sphere by central differences (interior
    rows; longitude wraps). Positive vorticity: counter-clockwise seen from above."""
    lat = torch.deg2rad(torch.as_tensor(grid_coordinates(shape)[0].copy()))[:, None]
    d_lat, d_lon = math.pi / shape[0], 2 * math.pi / shape[1]
    cos = torch.cos(lat)

    def d_lon_(f):
        return (f.roll(-1, -1) - f.roll(1, -1)) / (2 * d_lon)

    def d_lat_(f):  # row i - 1 is north of row i
        out = torch.zeros_like(f)
        out[..., 1:-1, :] = (f[..., :-2, :] - f[..., 2:, :]) / (2 * d_lat)
        return out

    u, v = u.double(), v.double()
    return (d_lon_(v) - d_lat_(u * cos)) / cos, (d_lon_(u) + d_lat_(v * cos)) / cos


def _at_centres(field: torch.Tensor, objects: dict, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Values of field (n, H, W) at the pixels nearest to the active objects' centres, and the
    centres' latitudes."""
    sample, slot = torch.nonzero(objects["active"], as_tuple=True)
    lat, lon = objects["lat"][sample, slot], objects["lon"][sample, slot]
    row = torch.floor((90 - lat) * shape[0] / 180).long()
    col = torch.floor(lon * shape[1] / 360).long() % shape[1]
    return field[sample, row, col], lat


def test_cyclones_and_decoys_turn_and_flow_as_documented():
    """Vorticity at the centres: cyclones turn counter-clockwise (x = east, y = north) in the
    north and clockwise in the south, with inflow; the two mirror decoys reverse the turning or
    the inflow; anticyclones turn the other way with outflow."""
    shape = (64, 128)
    data, objects = generate_climate(120, shape=shape, seed=3, return_objects=True)
    zeta, div = _vorticity_divergence(data["U850"], data["V850"], shape)
    expected = {  # kind: (turning relative to the hemisphere, sign of the divergence)
        "cyclone": (1, -1),
        "decoy_turning": (-1, -1),
        "decoy_outflow": (1, 1),
        "anticyclone": (-1, 1),
        "extratropical": (1, -1),
    }
    for kind, (turning, flow) in expected.items():
        z, lat = _at_centres(zeta, objects[kind], shape)
        d, _ = _at_centres(div, objects[kind], shape)
        assert len(z) > 50
        cyclonic = torch.sign(z) * torch.sign(lat)
        assert (cyclonic == turning).float().mean() > 0.95, kind
        assert (torch.sign(d) == flow).float().mean() > 0.9, kind
    # the northern hemisphere's cyclones turn counter-clockwise: zeta > 0 there, < 0 in the south
    z, lat = _at_centres(zeta, objects["cyclone"], shape)
    assert (z[lat > 0] > 0).all() and (z[lat < 0] < 0).all()


def test_wind_directions_around_a_northern_cyclone():
    """Noise-free single cyclone: east of a northern cyclone the wind blows north, west of it
    south (counter-clockwise); in the south the other way round."""
    shape = (64, 128)
    data, objects = generate_climate(
        40,
        shape=shape,
        seed=1,
        decoys=0,
        anticyclones=0,
        extratropical=0,
        rivers=0,
        noise=False,
        return_objects=True,
    )
    tc = objects["cyclone"]
    sample, slot = torch.nonzero(tc["active"], as_tuple=True)
    lat, lon, radius = (tc[k][sample, slot] for k in ("lat", "lon", "radius"))
    row = torch.floor((90 - lat) * shape[0] / 180).long()
    # a pixel about one radius east and west of the centre, on the same row
    offset = torch.ceil(radius / torch.cos(torch.deg2rad(lat)) / (360 / shape[1])).long()
    col = torch.floor(lon * shape[1] / 360).long()
    v_east = data["V850"][sample, row, (col + offset) % shape[1]]
    v_west = data["V850"][sample, row, (col - offset) % shape[1]]
    north = lat > 0
    assert ((v_east > 5) == north).float().mean() > 0.95 and (
        (v_west < -5) == north
    ).float().mean() > 0.95
    # PSL minimum at the centre: the centre pixel is lower than the ring 2 radii out
    psl_c, _ = _at_centres(data["PSL"], tc, shape)
    ring = data["PSL"][sample, row, (col + 2 * offset) % shape[1]]
    assert (psl_c < ring - 500).float().mean() > 0.95
    labels, _ = _at_centres(data["LABELS"], tc, shape)
    assert (labels == 1).all()


def test_rivers_are_long_moist_bands_labelled_two():
    data = generate_climate(
        40, shape=(64, 128), seed=2, rivers=1, cyclones=0, decoys=0, anticyclones=0,
        extratropical=0,
    )  # fmt: skip
    y = data["LABELS"]
    assert set(y.unique().tolist()) == {0, 2}
    tmq = data["TMQ"]
    assert tmq[y == 2].mean() > tmq[y == 0].mean() + 12.0
    # elongated: one band per hemisphere; in the northern half its labelled pixels spread far
    # more along the band than across it (eigenvalues of their covariance, in kilometre-like
    # units: column offsets shrink with cos(latitude))
    lat = torch.deg2rad(torch.as_tensor(grid_coordinates((64, 128))[0].copy()))
    ratios = []
    for i in range(len(y)):
        rows, cols = torch.nonzero(y[i, :32] == 2, as_tuple=True)
        if len(rows) < 10 or cols.max() - cols.min() > 64:  # absent, or split at the date line
            continue
        x = (cols.double() - cols.double().mean()) * torch.cos(lat[rows])
        pts = torch.stack([rows.double(), x], 1)
        eig = torch.linalg.eigvalsh(torch.cov(pts.T))
        ratios.append(float(eig[1] / eig[0]))
    assert len(ratios) > 15
    assert np.median(ratios) > 12.0 and min(ratios) > 5.0


# ------------------------------------------------------------------------------------------------
# The documented ground truth, checked on the generator's own objects
# ------------------------------------------------------------------------------------------------


def _single_vortex_patch(kind, lat_row: int, shape=(64, 128), radius=8) -> torch.Tensor:
    """Noise-free fields of one vortex of ``kind`` centred exactly on pixel (lat_row, 40), seen
    through a sphere chart there: (1, 1, 4, 2r+1, 2r+1) in channel order TMQ, U850, V850, PSL."""
    grid = F.SphereGrid.build(shape)
    lat, lon = grid_coordinates(shape)
    params = {
        "lat": torch.tensor([[float(lat[lat_row])]], dtype=torch.float64),
        "lon": torch.tensor([[float(lon[40])]], dtype=torch.float64),
        "radius": torch.tensor([[5.5]], dtype=torch.float64),
        "v_max": torch.tensor([[25.0]], dtype=torch.float64),
        "psl": torch.tensor([[-3000.0]], dtype=torch.float64),
        "tmq": torch.tensor([[15.0]], dtype=torch.float64),
    }
    params["turn"] = torch.sign(params["lat"]) * (1.0 if kind.cyclonic else -1.0)
    out = {v: torch.zeros(1, shape[0] * shape[1]) for v in ("TMQ", "PSL", "U850", "V850")}
    out["code"] = torch.zeros(1, shape[0] * shape[1])
    F.add_vortices(out, grid, params, torch.ones(1, 1, dtype=torch.bool), kind)
    fields = torch.stack([out[v].view(1, *shape) for v in DEFAULT_VARIABLES], 1)
    atlas = Atlas([Chart((lat_row, 40), radius)], manifold="sphere", shape=shape)
    return atlas.extract(fields)


def _rel(a: torch.Tensor, b: torch.Tensor, channels=(1, 2), r: int = 5) -> float:
    """Relative difference on the central (2r+1)^2 pixels of the given channels (default: the
    winds, which the scalars' much larger numbers would otherwise drown)."""
    c = a.shape[-1] // 2
    sl = (..., list(channels), slice(c - r, c + r + 1), slice(c - r, c + r + 1))
    return float((a[sl] - b[sl]).norm() / b[sl].norm())


@pytest.mark.parametrize(("lat_row", "tol"), [(24, 0.08), (39, 0.08), (17, 0.15)])
def test_rotations_with_the_vector_representation_leave_a_cyclone_invariant(lat_row, tol):
    """Rows 24 / 39 / 17: 21 N, 21 S, 41 N. The winds are stored in each grid point's east/north
    frame, which turns against the chart's axes away from the centre by about x tan(latitude):
    the vector representation is exact at the chart centre and approximate around it, more so
    at higher latitudes (measured 5% at 21 degrees, 12% at 41 degrees)."""
    patch = _single_vortex_patch(F.TROPICAL_CYCLONE, lat_row)
    rep = climate_ground_truth()["in_rep"][0].float()
    J = climate_ground_truth()["algebra"][0].float()
    for theta in (math.pi / 2, 1.0):
        g = torch.linalg.matrix_exp(theta * J)
        vector = act(g, patch, torch.linalg.matrix_exp(theta * rep))
        trivial = act(g, patch)
        assert _rel(vector, patch) < tol
        for scalar in (0, 3):  # bilinear resampling error only
            assert _rel(vector, patch, channels=(scalar,)) < 0.05
        # without rotating the vectors a vortex becomes a spiral (by 90 degrees: a source)
        assert _rel(trivial, patch) > 0.9


@pytest.mark.parametrize("lat_row", [24, 39])
def test_reflections_map_cyclones_to_decoys_for_both_wind_actions(lat_row):
    """Mirror x -> -x (exact on a sphere chart: meridians map to meridians). Acting on winds as a
    vector it turns a cyclone into the turning decoy; with the det-twisted action (v -> -h v)
    into the outflow decoy. Either way a label-1 object becomes a label-0 one."""
    tc = _single_vortex_patch(F.TROPICAL_CYCLONE, lat_row)
    h = torch.diag(torch.tensor([-1.0, 1.0]))
    vector = torch.diag(torch.tensor([1.0, -1.0, 1.0, 1.0]))  # (u, v) -> (-u, v)
    twisted = torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0]))  # (u, v) -> (u, -v)
    mirrored = act(h, tc, vector)
    assert _rel(mirrored, _single_vortex_patch(F.DECOY_TURNING, lat_row)) < 1e-5
    assert _rel(act(h, tc, twisted), _single_vortex_patch(F.DECOY_OUTFLOW, lat_row)) < 1e-5
    assert _rel(mirrored, tc) > 0.5


# ------------------------------------------------------------------------------------------------
# Ground truth, atlas, representation comparison
# ------------------------------------------------------------------------------------------------


def test_ground_truth_tensors():
    gt = climate_ground_truth(("U850", "TMQ", "V850", "PSL"))
    assert gt["algebra"].shape == (1, 2, 2) and gt["cosets"].shape == (1, 2, 2)
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[0, 2], expected[2, 0] = -1.0, 1.0  # (U, V) at channels 0 and 2 rotate like (x, y)
    torch.testing.assert_close(gt["in_rep"][0], expected)
    torch.testing.assert_close(
        climate_ground_truth(("TMQ", "PSL"))["in_rep"], torch.zeros(1, 2, 2, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="wind component.*U850 without their partner"):
        climate_ground_truth(("TMQ", "U850"))
    assert ClimateDataModule(n=10, variables=("TMQ", "U850")).ground_truth is None


def test_atlas_has_charts_at_the_documented_latitudes_in_both_hemispheres():
    atlas = climate_atlas((64, 128))
    assert atlas.manifold == "sphere" and atlas.n_charts == 12 and atlas.radius == 8
    lat, lon = grid_coordinates((64, 128))
    rows = atlas.centers[:, 0]
    np.testing.assert_allclose(sorted(set(lat[rows].round(1).tolist())), [-40.8, -21.1, 21.1, 40.8])
    # 180 degrees falls between two columns; the eastern one is taken
    assert set(lon[atlas.centers[:, 1]].round(1).tolist()) == {60.5, 181.4, 299.5}
    assert ClimateDataModule(n=10).atlas == atlas


def test_representation_error_removes_sign_and_scale_of_the_generators():
    gt = climate_ground_truth()
    L, R = gt["algebra"], gt["in_rep"]
    exact = representation_error(-0.3 * L, -0.3 * R, L, R)
    assert exact["rep_relative_error"] < 1e-12 and exact["rep_cosine"] == pytest.approx(1.0)
    assert exact["algebra_residual"] < 1e-12
    half = representation_error(L, 0.5 * R, L, R)
    assert half["rep_relative_error"] == pytest.approx(0.5) and half["rep_cosine"] == pytest.approx(
        1.0
    )
    transposed = representation_error(L, R.transpose(1, 2), L, R)  # the opposite rotation
    assert transposed["rep_cosine"] == pytest.approx(-1.0)


# ------------------------------------------------------------------------------------------------
# The data module
# ------------------------------------------------------------------------------------------------


def test_data_module_splits_loaders_and_weights():
    dm = ClimateDataModule(n=20, shape=SHAPE, seed=4, batch_size=4)
    assert dm.kind == "local"
    dm.setup()
    assert (len(dm.x_train), len(dm.x_val), len(dm.x_test)) == (16, 2, 2)
    assert torch.equal(dm.x_test, dm.x[18:]) and torch.equal(dm.y_test, dm.y[18:])
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 4, *SHAPE) and yb.shape == (4, *SHAPE) and yb.dtype == torch.int64
    counts = torch.bincount(dm.y_train.flatten(), minlength=3).double()
    torch.testing.assert_close(
        dm.class_weights.double(), counts.sum() / (3 * counts), rtol=1e-6, atol=0
    )
    assert dm.class_weights[0] < 1 < dm.class_weights[1]
    assert len(list(dm.test_dataloader())) == 1


def test_data_module_rejects_bad_options():
    with pytest.raises(ValueError, match="source must be 'synthetic' or 'netcdf'"):
        ClimateDataModule(source="grib")
    with pytest.raises(ValueError, match=r"synthetic generator makes .* not \['TS'\]"):
        ClimateDataModule(variables=("TMQ", "TS"))
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1"):
        ClimateDataModule(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="LABELS is the target"):
        ClimateDataModule(variables=("TMQ", "LABELS"))
    with pytest.raises(ValueError, match="duplicates"):
        ClimateDataModule(variables=("TMQ", "TMQ"))
    with pytest.raises(ValueError, match=r"unknown synthetic option\(s\) \['storms'\]"):
        ClimateDataModule(synthetic={"storms": 3})
    dm = ClimateDataModule(n=4, shape=SHAPE, synthetic={"rivers": 0, "noise": False})
    dm.setup()
    assert not (dm.y == 2).any()
