"""The ``files`` task: a user's own .npz / .nc / .h5 / .pt data, its checks, the class_path
route to a user's own DataModule, and the CLI end to end."""

from __future__ import annotations

import json
import math
import tempfile
import textwrap
from pathlib import Path

import h5py
import lightning
import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlasd.cli import main
from atlasd.datasets import TASKS, check_datamodule, make_datamodule
from atlasd.datasets.files import (
    FilesDataModule,
    build_atlas,
    load_files,
    prepare_inputs,
    read_arrays,
    sphere_pixel,
)
from atlasd.group import DiscoveredGroup

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ATLAS = {"centers": [[6, 6], [9, 10]], "radius": 4}


def _write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` in the format its extension names (the real libraries)."""
    suffix = path.suffix
    if suffix == ".npz":
        np.savez(path, **arrays)
    elif suffix == ".nc":
        dims = {}
        for name, a in arrays.items():
            dims[name] = ("sample", *(f"{name}_{i}" for i in range(1, a.ndim)))
        ds = xr.Dataset({k: (dims[k], a) for k, a in arrays.items()})
        ds.to_netcdf(path, engine="h5netcdf")
    elif suffix in (".h5", ".hdf5"):
        with h5py.File(path, "w") as handle:
            for name, a in arrays.items():
                handle.create_dataset(name, data=a)
    elif suffix == ".pt":
        torch.save({k: torch.from_numpy(a) for k, a in arrays.items()}, path)
    else:
        raise AssertionError(suffix)
    return path


def _fields(seed: int, shape=(12, 2, 16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Every format reads back exactly
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".nc", ".h5", ".hdf5", ".pt"])
def test_every_format_reads_back_exactly(tmp_path, suffix):
    x = _fields(0)
    y = 2.0 * x[:, :1] - 1.0
    path = _write(tmp_path / f"data{suffix}", {"x": x, "y": y, "unused": x[:, 0]})
    dm = make_datamodule("files", path=str(path), y="y", atlas=ATLAS)
    assert dm.x is None  # nothing is read before setup()
    dm.setup()
    assert dm.x.dtype == torch.float32 and dm.y.dtype == torch.float32
    assert torch.equal(dm.x, torch.from_numpy(x))
    assert torch.equal(dm.y, torch.from_numpy(y))
    assert dm.kind == "local" and dm.ground_truth is None and dm.class_weights is None
    assert dm.atlas.n_charts == 2 and dm.atlas.radius == 4 and dm.atlas.shape == (16, 16)
    assert dm.atlas.centers.tolist() == [[6, 6], [9, 10]]
    check_datamodule(dm)


@pytest.mark.parametrize("suffix", [".npz", ".nc", ".h5", ".pt"])
def test_integer_targets_are_int64_classes_and_vectors_global(tmp_path, suffix):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 5, 3))  # float64 sets of 5 vectors in R^3
    y = rng.integers(0, 4, size=30).astype(np.int32)
    path = _write(tmp_path / f"v{suffix}", {"points": x, "label": y})
    data = load_files(path, x="points", y="label", kind="global")
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    assert torch.equal(data.x, torch.from_numpy(x).float())
    assert data.y.tolist() == y.tolist()
    assert data.atlas is None


def test_nested_names_in_hdf5_and_pt(tmp_path):
    x = _fields(2, (8, 3))
    with h5py.File(tmp_path / "n.h5", "w") as handle:
        handle.create_group("inputs").create_dataset("pos", data=x)
    torch.save({"inputs": {"pos": torch.from_numpy(x)}}, tmp_path / "n.pt")
    for name in ("n.h5", "n.pt"):
        out = read_arrays(tmp_path / name, ["inputs/pos"])
        np.testing.assert_array_equal(out["inputs/pos"], x)


def test_netcdf_variables_of_a_gridded_dataset(tmp_path):
    """A climate-style file: (time, lat, lon) variables become single-channel fields, and a list
    of names stacks them as channels in the given order."""
    u, v = _fields(3, (6, 16, 20)), _fields(4, (6, 16, 20))
    ds = xr.Dataset(
        {"u": (("time", "lat", "lon"), u), "v": (("time", "lat", "lon"), v)},
        coords={"lat": np.linspace(-80, 80, 16), "lon": np.arange(20) * 18.0},
    )
    ds.to_netcdf(tmp_path / "wind.nc", engine="h5netcdf")
    data = load_files(tmp_path / "wind.nc", x=["u", "v"], y="u", atlas=ATLAS)
    assert data.x.shape == (6, 2, 16, 20) and data.y.shape == (6, 1, 16, 20)
    assert torch.equal(data.x[:, 0], torch.from_numpy(u))
    assert torch.equal(data.x[:, 1], torch.from_numpy(v))
    with pytest.raises(
        ValueError, match=r"variable 'w' not found in .*wind.nc; it holds: lat, lon"
    ):
        load_files(tmp_path / "wind.nc", x="w", y="u", atlas=ATLAS)


def test_vector_columns_stack_on_the_last_axis(tmp_path):
    a, b = np.arange(10.0), np.arange(20.0).reshape(10, 2)
    path = _write(tmp_path / "cols.npz", {"a": a, "b": b})
    data = load_files(path, x=["a", "b"], kind="distribution")
    assert data.x.tolist() == np.concatenate([a[:, None], b], 1).tolist()
    assert data.y is None


# --------------------------------------------------------------------------------------------
# Shapes, per kind (hypothesis)
# --------------------------------------------------------------------------------------------


@FAST
@given(
    n=st.integers(1, 5),
    c=st.integers(1, 3),
    h=st.integers(9, 14),
    w=st.integers(9, 14),
    three_d=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_field_shapes_round_trip(n, c, h, w, three_d, seed):
    rng = np.random.default_rng(seed)
    shape = (n, h, w) if three_d else (n, c, h, w)
    x = rng.standard_normal(shape).astype(np.float32)
    labels = rng.integers(0, 3, size=(n, 1, h, w))
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder) / "f.npz", {"x": x, "y": labels})
        data = load_files(path, y="y", atlas={"centers": [[4, 4]], "radius": 4})
    expected = torch.from_numpy(x)[:, None] if three_d else torch.from_numpy(x)
    assert torch.equal(data.x, expected)  # (N, H, W) is one channel
    assert data.y.shape == (n, h, w) and torch.equal(data.y, torch.from_numpy(labels[:, 0]))


@FAST
@given(
    n=st.integers(1, 6),
    p=st.integers(1, 4),
    d=st.integers(1, 5),
    sets=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_vector_shapes_round_trip_and_wrong_ranks_fail(n, p, d, sets, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p, d) if sets else (n, d))
    out = prepare_inputs(x, "global", has_atlas=False)
    assert out.shape == x.shape and torch.equal(out, torch.from_numpy(x).float())
    if sets:  # (N, P, d) is no distribution input, and no kind takes 5-D arrays
        with pytest.raises(
            ValueError,
            match=rf"kind distribution must be points \(N, d\).*got shape \({n}, {p}, {d}\)",
        ):
            prepare_inputs(x, "distribution", has_atlas=False)
    for kind in ("local", "global", "distribution"):
        with pytest.raises(ValueError, match=rf"for kind {kind} must be .*5-D"):
            prepare_inputs(x.reshape(n, 1, 1, 1, -1), kind, has_atlas=True)


# --------------------------------------------------------------------------------------------
# Faults: one line naming the problem, before any training
# --------------------------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path):
    x = _fields(5)
    labels = np.zeros((12, 2, 16, 16), np.int64)  # two integer channels: not a class map
    arrays = {"x": x, "y": x[:, :1], "labels": labels, "small": x[:, 0, :8, :8]}
    return _write(tmp_path / "good.npz", arrays)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"path": "missing.npz"}, FileNotFoundError, r"no data file at missing.npz"),
        (
            {"path": "data.csv"},
            ValueError,
            r"unsupported file extension '.csv'.*supported: .npz, .nc, .h5, .hdf5, .pt",
        ),
        ({"path": None}, ValueError, r"task files needs data.path"),
        (
            {"kind": "both"},
            ValueError,
            r"unknown data.kind 'both'; kinds are local, global, distribution",
        ),
        ({"atlas": None}, ValueError, r"kind local needs data.atlas"),
        ({"kind": "global"}, ValueError, r"data.atlas is for fields"),
        (
            {"kind": "distribution", "atlas": None},
            ValueError,
            r"kind distribution takes no targets y",
        ),
        ({"y": None}, ValueError, r"kind local needs targets: set data.y"),
        ({"atlas": {"centers": [[6, 6]]}}, ValueError, r"data.atlas needs radius"),
        (
            {"atlas": {"centers": [[6, 6]], "radius": 4, "size": 3}},
            ValueError,
            r"unknown data.atlas key\(s\) size",
        ),
        (
            {"atlas": {"centers": [[6.5, 6]], "radius": 4}},
            ValueError,
            r"\(row, col\) pixel indices, got \[6.5, 6\]",
        ),
        (
            {"atlas": {"centers": [[6, 6]], "radius": 4, "manifold": "torus"}},
            ValueError,
            r"manifold must be plane or sphere",
        ),
        (
            {"atlas": {"centers": [[95, 0]], "radius": 2, "manifold": "sphere"}},
            ValueError,
            r"-90 <= lat <= 90, got \[95, 0\]",
        ),
        ({"x": ""}, ValueError, r"data.x must be an array name or a list of names"),
    ],
)
def test_bad_options_fail_when_the_module_is_built(good, monkeypatch, options, error, message):
    monkeypatch.chdir(good.parent)
    kwargs = {"path": good.name, "y": "y", "atlas": ATLAS, **options}
    with pytest.raises(error, match=message):
        make_datamodule("files", **kwargs)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"x": "z"}, r"array 'z' not found in .*good.npz; it holds: labels, small, x, y"),
        ({"y": "w"}, r"array 'w' not found in .*good.npz; it holds: labels, small, x, y"),
        (
            {"atlas": {"centers": [[6, 6], [3, 12]], "radius": 4}},
            r"chart 1 \(center \(3, 12\), radius 4\) leaves the 16x16 field",
        ),
        (
            {"y": "labels"},
            r"y \('labels' in good.npz\) for kind local must be integer class maps \(N, H, W\), "
            r"got shape \(12, 2, 16, 16\)",
        ),
        (
            {"x": ["x", "small"]},
            r"x arrays cannot be stacked as channels: "
            r"shapes x \(12, 2, 16, 16\), small \(12, 8, 8\)",
        ),
        (
            {"ground_truth": {"algebra": [[0, -1], [1, 0]]}},
            r"ground_truth.algebra must have shape \(k, 2, 2\), got \(2, 2\)",
        ),
        ({"n": 0}, r"data.n must be >= 1, got 0"),
    ],
)
def test_bad_data_fails_in_setup(good, options, message):
    kwargs = {"path": str(good), "y": "y", "atlas": ATLAS, **options}
    with pytest.raises(ValueError, match=message):
        make_datamodule("files", **kwargs).setup()


def test_nan_and_inf_are_counted_per_array(tmp_path):
    x = _fields(6)
    y = x[:, :1].copy()
    x[0, 0, 0, :3] = np.nan
    x[1, 1, 2, 2] = -np.inf
    path = _write(tmp_path / "bad.h5", {"x": x, "y": y})
    with pytest.raises(ValueError, match=r"x \('x' in bad.h5\) contains 3 NaN and 1 Inf values"):
        load_files(path, y="y", atlas=ATLAS)
    y[4, 0, 0, 0] = np.inf
    path = _write(tmp_path / "bad_y.npz", {"x": _fields(6), "y": y})
    with pytest.raises(ValueError, match=r"y \('y' in bad_y.npz\) contains 0 NaN and 1 Inf"):
        load_files(path, y="y", atlas=ATLAS)


def test_float64_beyond_float32_is_refused(tmp_path):
    x = np.ones((4, 3))
    x[2, 1] = 1e39  # finite in float64, Inf in float32
    path = _write(tmp_path / "big.npz", {"x": x, "y": np.ones(4)})
    with pytest.raises(ValueError, match=r"1 values beyond float32's range"):
        load_files(path, y="y", kind="global")


@pytest.mark.parametrize("suffix", [".npz", ".nc", ".h5", ".pt"])
def test_x_and_y_with_different_n(tmp_path, suffix):
    arrays = {"x": np.ones((10, 3), np.float32), "y": np.ones((9,), np.float32)}
    if suffix == ".nc":  # one Dataset needs one sample dimension length per name
        xr.Dataset({"x": (("a", "b"), arrays["x"]), "y": (("c",), arrays["y"])}).to_netcdf(
            tmp_path / "d.nc", engine="h5netcdf"
        )
        path = tmp_path / "d.nc"
    else:
        path = _write(tmp_path / f"d{suffix}", arrays)
    with pytest.raises(ValueError, match=r"x has 10 samples but y \('y' in d\S*\) has 9"):
        load_files(path, y="y", kind="global")


def test_wrong_ranks_name_expected_and_found(tmp_path):
    path = _write(tmp_path / "r.npz", {"v": np.ones((10, 3)), "f": np.ones((10, 1, 8, 8))})
    with pytest.raises(
        ValueError,
        match=r"x \('v' in r.npz\) for kind local must be fields \(N, C, H, W\) or \(N, H, W\), "
        r"got shape \(10, 3\) \(2-D\)",
    ):
        load_files(path, x="v", y="f", atlas={"centers": [[4, 4]], "radius": 3})
    with pytest.raises(
        ValueError,
        match=r"kind distribution must be points \(N, d\) \(or fields \(N, C, H, W\) together "
        r"with an atlas\), got shape \(10, 1, 8, 8\)",
    ):
        load_files(path, x="f", kind="distribution")
    with pytest.raises(
        ValueError,
        match=r"y \('f' in r.npz\) for kind global must be float targets \(N,\) or \(N, c\), "
        r"got shape \(10, 1, 8, 8\)",
    ):
        load_files(path, x="v", y="f", kind="global")


def test_negative_class_labels_and_non_numeric_arrays(tmp_path):
    path = _write(
        tmp_path / "c.npz",
        {"x": np.ones((5, 2)), "y": np.array([0, 1, -1, 2, 0]), "s": np.array(list("abcde"))},
    )
    with pytest.raises(ValueError, match=r"integer class labels, which must be >= 0; found -1"):
        load_files(path, y="y", kind="global")
    with pytest.raises(
        ValueError, match=r"x \('s' in c.npz\) has dtype <U1, expected real numbers"
    ):
        load_files(path, x="s", kind="distribution")


def test_unreadable_files_give_one_line(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    for name in ("junk.npz", "junk.h5", "junk.pt"):
        with pytest.raises(ValueError, match=rf"cannot (read|load) .*{name}") as info:
            read_arrays(tmp_path / name, ["x"])
        assert "\n" not in str(info.value)
    np.save(tmp_path / "arr.npy", np.ones(3))
    torch.save(torch.ones(3), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"plain.pt holds a Tensor, expected a dict of tensors"):
        read_arrays(tmp_path / "plain.pt", ["x"])
    torch.save({"x": np.ones(3)}, tmp_path / "numpy.pt")  # refused by weights_only=True
    with pytest.raises(ValueError, match=r"weights_only=True.*save torch.from_numpy\(a\)"):
        read_arrays(tmp_path / "numpy.pt", ["x"])


# --------------------------------------------------------------------------------------------
# Atlas on the sphere, ground truth, splits
# --------------------------------------------------------------------------------------------


def test_sphere_centres_in_degrees_land_on_the_cell_that_holds_them():
    shape = (32, 64)  # 5.625 degrees per pixel in both directions
    assert sphere_pixel(90.0, 0.0, shape) == (0, 0)
    assert sphere_pixel(-90.0, 359.9, shape) == (31, 63)
    assert sphere_pixel(0.0, -5.0, shape) == (16, 63)  # boundary -> southern cell; -5 = 355 east
    assert sphere_pixel(45.0, 90.0, shape) == (8, 16)
    rng = np.random.default_rng(7)
    for lat, lon in zip(rng.uniform(-89, 89, 50), rng.uniform(-180, 540, 50), strict=True):
        row, col = sphere_pixel(lat, lon, shape)
        # atlasd.atlas's grid: row i at latitude 90 - (i + 1/2) 180 / H, column j at longitude
        # (j + 1/2) 360 / W
        assert abs(90 - (row + 0.5) * 180 / 32 - lat) <= 180 / 32 / 2 + 1e-9
        dlon = ((col + 0.5) * 360 / 64 - lon + 180) % 360 - 180
        assert abs(dlon) <= 360 / 64 / 2 + 1e-9
    atlas = build_atlas({"centers": [[45, 90], [0, 180]], "radius": 3, "manifold": "sphere"}, shape)
    assert atlas.manifold == "sphere" and atlas.centers.tolist() == [[8, 16], [16, 32]]
    with pytest.raises(ValueError, match=r"chart 0 .* too wide for a 32x64 sphere grid"):
        build_atlas({"centers": [[0, 0]], "radius": 16, "manifold": "sphere"}, shape)


def test_ground_truth_option_and_splits(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((50, 2)).astype(np.float32)
    path = _write(tmp_path / "g.npz", {"x": x, "y": (x**2).sum(1)})
    dm = FilesDataModule(
        path=str(path),
        y="y",
        kind="global",
        ground_truth={"algebra": [[[0, -1], [1, 0]]]},
        n=40,
        val_fraction=0.25,
        batch_size=8,
    )
    dm.setup()
    assert dm.x.shape == (40, 2) and torch.equal(dm.x, torch.from_numpy(x[:40]))
    assert dm.ground_truth["algebra"].dtype == torch.float64
    assert dm.ground_truth["algebra"].tolist() == [[[0.0, -1.0], [1.0, 0.0]]]
    assert len(dm.train_dataset) == 30 and len(dm.val_dataset) == 10
    assert torch.equal(dm.val_dataset.tensors[0], dm.x[30:])  # the last samples, in file order
    batches = list(dm.train_dataloader())
    assert [b[0].shape[0] for b in batches] == [8, 8, 8, 6]
    again = [b[0] for b in FilesDataModule(**dm.hparams).train_dataloader()]
    assert all(torch.equal(a, b[0]) for a, b in zip(again, batches, strict=True))  # seeded
    dist = FilesDataModule(path=str(path), kind="distribution", val_fraction=0.0)
    dist.setup()
    assert dist.y is None and len(dist.train_dataset) == 50 and len(dist.train_dataset[0]) == 1


# --------------------------------------------------------------------------------------------
# A user's own DataModule (class_path / init_args)
# --------------------------------------------------------------------------------------------

USER_MODULE = textwrap.dedent(
    '''
    import lightning
    import torch

    import atlasd


    class RingData(lightning.LightningDataModule):
        """Points on a ring in the plane: an so(2)-invariant distribution."""

        kind = "distribution"

        def __init__(self, n=100, seed=0):
            super().__init__()
            self.n, self.seed = n, seed
            self.x = self.y = None
            self.atlas = None

        def setup(self, stage=None):
            g = torch.Generator().manual_seed(self.seed)
            t = 2 * torch.pi * torch.rand(self.n, generator=g)
            self.x = torch.stack([t.cos(), t.sin()], 1)


    class NoData(lightning.LightningDataModule):
        kind = "local"

        def setup(self, stage=None):
            self.x = torch.zeros(4, 2)


    class NotADataModule:
        pass
    '''
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = f"user_data_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_class_path_builds_a_users_datamodule(user_module):
    dm = make_datamodule(
        "my_rings", class_path=f"{user_module}.RingData", init_args={"n": 64, "seed": 3}
    )
    assert isinstance(dm, lightning.LightningDataModule) and type(dm).__name__ == "RingData"
    dm.setup()
    check_datamodule(dm)
    assert dm.x.shape == (64, 2) and torch.allclose(dm.x.norm(dim=1), torch.ones(64))
    same = make_datamodule(
        "x", class_path=f"{user_module}:RingData", init_args={"seed": 3, "n": 64}
    )
    same.setup()
    assert torch.equal(same.x, dm.x)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"class_path": "no_such_pkg_atlasd.Data"},
            r"cannot import data.class_path 'no_such_pkg_atlasd.Data': "
            r"No module named 'no_such_pkg_atlasd'",
        ),
        ({"class_path": "Data"}, r"must be 'package.module.ClassName'"),
        ({"class_path": "{mod}.Missing"}, r"module '{mod}' has no attribute 'Missing'"),
        (
            {"class_path": "{mod}.NotADataModule"},
            r"is a type, not a subclass of lightning.LightningDataModule",
        ),
        ({"class_path": "{mod}.torch"}, r"is a module, not a subclass of lightning"),
        (
            {"class_path": "{mod}.RingData", "init_args": {"m": 1}},
            r"cannot build .*RingData with init_args \{'m': 1\}: .*unexpected keyword argument 'm'",
        ),
        ({"class_path": "{mod}.RingData", "init_args": [1]}, r"data.init_args must be a mapping"),
        (
            {"class_path": "{mod}.RingData", "n": 5},
            r"options go under data.init_args; unexpected data option\(s\) n",
        ),
    ],
)
def test_class_path_errors(user_module, options, message):
    options = {
        k: v.replace("{mod}", user_module) if isinstance(v, str) else v for k, v in options.items()
    }
    with pytest.raises(ValueError, match=message.replace("{mod}", user_module)) as info:
        make_datamodule("mine", **options)
    assert "\n" not in str(info.value)


def test_check_datamodule_names_what_is_missing(user_module):
    dm = make_datamodule("mine", class_path=f"{user_module}.NoData")
    dm.setup()
    with pytest.raises(ValueError, match=r"NoData.x has shape \(4, 2\); kind local takes 4-D"):
        check_datamodule(dm)
    dm.x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"NoData.y is None, but kind local trains predictors"):
        check_datamodule(dm)
    dm.y = torch.zeros(3, 1, 8, 8)
    with pytest.raises(ValueError, match=r"NoData.y must be None or a tensor with x's N = 4"):
        check_datamodule(dm)
    dm.y = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"NoData.atlas must be an atlasd.Atlas for fields"):
        check_datamodule(dm)


def test_files_is_a_registered_task():
    assert TASKS["files"] == "atlasd.datasets.files:FilesDataModule"


# --------------------------------------------------------------------------------------------
# The CLI, end to end, from a folder of the user's own
# --------------------------------------------------------------------------------------------


def _laplacian_fields(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random fields and their 5-point Laplacian: O(2)-equivariant to second order."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size + 10, size + 10, generator=gen)
    for _ in range(3):  # box blurs: smooth enough that the discrete Laplacian is nearly isotropic
        x = torch.nn.functional.avg_pool2d(x, 3, 1)
    x = x[..., 1:-1, 1:-1]
    lap = x[..., :-2, 1:-1] + x[..., 2:, 1:-1] + x[..., 1:-1, :-2] + x[..., 1:-1, 2:]
    lap = lap - 4 * x[..., 1:-1, 1:-1]
    return x[..., 1:-1, 1:-1].numpy(), lap.numpy()


def test_cli_discovers_from_a_users_npz(tmp_path, monkeypatch, capsys):
    x, y = _laplacian_fields(48, 32, seed=0)
    assert x.shape == y.shape == (48, 1, 32, 32)
    np.savez(tmp_path / "fields.npz", x=x, y=y)
    (tmp_path / "mine.yaml").write_text(
        textwrap.dedent(
            """
            task: files
            data:
              path: fields.npz
              y: y
              kind: local
              atlas: {centers: [[9, 9], [22, 22], [9, 22]], radius: 7}
              ground_truth: {algebra: [[[0, -1], [1, 0]]]}
            discovery:
              batch_size: 16
              predictor: {epochs: 2}
              basis: {epochs: 2, init_candidates: 2}
              cosets: {candidates: 2, steps: 2}
            """
        )
    )
    monkeypatch.chdir(tmp_path)  # relative paths: the user's own folder, not the repository
    argv = ["discover", "--config", "mine.yaml", "--run_dir", "out"]
    assert main([*argv, "--logger", "none", "--progress", "none"]) == 0
    group = DiscoveredGroup.load(tmp_path / "out" / "group.json")
    assert group.algebra.shape == (1, 2, 2) and group.n_components >= 1
    assert group.metadata["atlas"]["centers"] == [[9, 9], [22, 22], [9, 22]]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["task"] == "files" and 0.0 <= metrics["similarity_to_truth"] <= 1.0
    assert math.isclose(
        metrics["similarity_to_truth"],
        group.similarity(torch.tensor([[[0.0, -1.0], [1.0, 0.0]]])),
        abs_tol=1e-9,
    )
    assert "run folder: out" in capsys.readouterr().out


def test_cli_bad_file_fails_with_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    x = _fields(9)
    x[3, 0, 5, 5] = np.nan
    np.savez(tmp_path / "fields.npz", x=x, y=x)
    (tmp_path / "mine.yaml").write_text(
        "task: files\ndata:\n  path: fields.npz\n  y: y\n  atlas: {centers: [[8, 8]], radius: 4}\n"
    )
    monkeypatch.chdir(tmp_path)
    argv = ["discover", "--config", "mine.yaml", "--run_dir", "out", "--logger", "none"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("atlasd: error: x ('x' in fields.npz) contains 1 NaN and 0 Inf values (of 6144)")
    assert main([*argv[:3], "--data.path", "nothing.npz", *argv[3:]]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("atlasd: error: no data file at nothing.npz") and "\n" not in err
    assert not (tmp_path / "out").exists()  # the run folder is made only once the data loaded
