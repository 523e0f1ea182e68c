"""Tests of the digits-on-the-sphere task (atlasd.datasets.sphere_digits)."""

from __future__ import annotations

import gzip
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import atlasd
from atlasd.atlas import local_coordinates
from atlasd.datasets import make_datamodule
from atlasd.datasets.sphere_digits import (
    BACKGROUND,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    N_CLASSES,
    ArrayDigits,
    MnistDigits,
    SphereDigitsDataModule,
    digit_centers,
    find_mnist_files,
    global_canvas,
    load_sklearn_digits,
    read_idx,
    read_idx_header,
    render_sphere_digits,
    sample_sphere_digits,
    sphere_digits_atlas,
    sphere_digits_ground_truth,
)

SHAPE = (37, 75)


@pytest.fixture(scope="module")
def small_dm():
    dm = SphereDigitsDataModule(n=40, n_test=20, seed=3, batch_size=8)
    dm.setup()
    return dm


def _write_idx(path: Path, array: np.ndarray, magic: int, compress: bool = False) -> Path:
    """Write ``array`` (uint8) in IDX format: big-endian int32 magic, sizes, then the bytes."""
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _tiny_mnist(folder: Path, n: int = 12, size: int = 28, seed: int = 0, prefix: str = "train"):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    _write_idx(folder / f"{prefix}-images-idx3-ubyte", images, IDX_IMAGES_MAGIC)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, IDX_LABELS_MAGIC)
    return images, labels


def _dot_pool(size: int = 16, offset: float = 4.0) -> ArrayDigits:
    """One synthetic 'digit': a 2x2 bright dot ``offset`` pixels above the box centre."""
    img = torch.zeros(1, size, size)
    c = (size - 1) / 2
    row = round(c - offset - 0.5)
    img[0, row : row + 2, size // 2 - 1 : size // 2 + 1] = 1.0
    return ArrayDigits(img, torch.tensor([7]), size)


def _chart_centroids(patches: torch.Tensor) -> torch.Tensor:
    """Intensity centroids (x east, y north) of patches (N, K, 1, s, s) in chart coordinates."""
    r = (patches.shape[-1] - 1) // 2
    coords = local_coordinates(r)  # (s, s, 2)
    w = patches[:, :, 0].clamp_min(0)
    return (w[..., None] * coords).sum((2, 3)) / w.sum((2, 3))[..., None]


# --------------------------------------------------------------------------------------------
# data module: shapes, determinism, splits
# --------------------------------------------------------------------------------------------


def test_registered_and_shapes(small_dm):
    dm = make_datamodule("sphere_digits", n=10, n_test=5)
    assert isinstance(dm, SphereDigitsDataModule) and dm.kind == "local"
    x, y = small_dm.x, small_dm.y
    assert x.shape == (40, 1, *SHAPE) and x.dtype == torch.float32
    assert y.shape == (40, *SHAPE) and y.dtype == torch.int64
    assert small_dm.x_test.shape == (20, 1, *SHAPE) and small_dm.y_test.shape == (20, *SHAPE)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    assert set(y.unique().tolist()) <= set(range(N_CLASSES)) and BACKGROUND in y.unique()
    assert len(small_dm.train_dataset) == 36 and len(small_dm.val_dataset) == 4
    xb, yb = next(iter(small_dm.train_dataloader()))
    assert xb.shape == (8, 1, *SHAPE) and yb.shape == (8, *SHAPE)
    xt, yt = next(iter(small_dm.test_dataloader()))
    assert torch.equal(xt, small_dm.x_test[:8]) and torch.equal(yt, small_dm.y_test[:8])
    assert small_dm.class_weights == [1.0] * 10 + [0.1]
    assert SphereDigitsDataModule(n=4, background_weight=0.02).class_weights[BACKGROUND] == 0.02
    # background dominates: why it is down-weighted
    assert float((y == BACKGROUND).float().mean()) > 0.8


def test_same_seed_same_data_other_seed_differs(small_dm):
    again = SphereDigitsDataModule(n=40, n_test=20, seed=3)
    again.setup()
    for name in ("x", "y", "x_test", "y_test"):
        assert torch.equal(getattr(again, name), getattr(small_dm, name)), name
    assert torch.equal(again.train.angle, small_dm.train.angle)
    other = SphereDigitsDataModule(n=40, n_test=20, seed=4)
    other.setup()
    assert not torch.equal(other.x, small_dm.x)
    assert (other.train.angle - small_dm.train.angle).abs().max() > 1.0
    # the test split is an independent stream: it does not change with n
    bigger = SphereDigitsDataModule(n=50, n_test=20, seed=3)
    bigger.setup()
    assert torch.equal(bigger.x_test, small_dm.x_test)


def test_ground_truth_and_atlas(small_dm):
    gt = sphere_digits_ground_truth()
    assert gt["algebra"].dtype == gt["cosets"].dtype == torch.float64
    assert torch.equal(
        gt["algebra"], torch.tensor([[[0.0, -1.0], [1.0, 0.0]]], dtype=torch.float64)
    )
    assert torch.equal(gt["cosets"], torch.eye(2, dtype=torch.float64)[None])
    atlas = small_dm.atlas
    assert atlas.manifold == "sphere" and atlas.n_charts == 3 and atlas.radius == 12
    assert atlas.centers.tolist() == [list(c) for c in digit_centers(SHAPE)]
    assert digit_centers(SHAPE) == [(18, 12), (18, 37), (18, 62)]
    # the centre row is the equator (odd H) and the centres are 120 degrees of longitude apart
    h, w = SHAPE
    assert 90 - (18 + 0.5) * 180 / h == pytest.approx(0.0, abs=1e-12)
    lons = [(c + 0.5) * 360 / w for _, c in digit_centers(SHAPE)]
    assert np.diff(lons) == pytest.approx([120.0, 120.0])


# --------------------------------------------------------------------------------------------
# geometry: labels, chart centres, rotation angles
# --------------------------------------------------------------------------------------------


def test_labels_follow_the_digit_strokes(small_dm):
    x, y, train = small_dm.x[:, 0], small_dm.y, small_dm.train
    # a pixel is a digit pixel exactly where the rendered intensity reaches the threshold
    assert torch.equal(y != BACKGROUND, x >= small_dm.label_threshold)
    cols = torch.arange(SHAPE[1])
    for k, (row, col) in enumerate(digit_centers(SHAPE)):
        dist = (cols - col).abs()
        near = torch.minimum(dist, SHAPE[1] - dist) <= 12  # slot k's columns
        labels_k = y[:, :, near]
        # every digit is drawn, with its own class and nothing else in its columns
        expected = train.digit_label[:, k]
        has_digit = (labels_k == expected[:, None, None]).flatten(1).sum(1)
        assert bool((has_digit >= 5).all())
        other = (labels_k != BACKGROUND) & (labels_k != expected[:, None, None])
        assert not bool(other.any())
        # strokes stay near the equator: within 10 rows of the digit centre
        rows = torch.nonzero((labels_k != BACKGROUND).any(dim=(0, 2))).flatten()
        assert int((rows - row).abs().max()) <= 10
    # and no digit pixels fall between the three windows
    dist_any = torch.stack(
        [
            torch.minimum((cols - c).abs(), SHAPE[1] - (cols - c).abs())
            for _, c in digit_centers(SHAPE)
        ]
    ).amin(0)
    assert not bool((y[:, :, dist_any > 12] != BACKGROUND).any())


def test_chart_centres_sit_on_the_digits(small_dm):
    patches = small_dm.atlas.extract(small_dm.x)  # (N, 3, 1, 25, 25)
    centroid = _chart_centroids(patches)
    # handwritten digits are roughly centred in their box: centroids within 2.5 px of the centre
    assert float(centroid.norm(dim=-1).mean()) < 1.5
    assert float(centroid.norm(dim=-1).max()) < 3.5
    # the charts hold the whole digit: the outer ring of every patch is empty
    ring = patches.clone()
    ring[..., 2:-2, 2:-2] = 0
    assert float(ring.max()) < 0.05


def test_rotation_angles_recovered_from_the_charts():
    atlas = sphere_digits_atlas(SHAPE, chart_radius=12)
    pool = _dot_pool(offset=4.0)
    gen = torch.Generator().manual_seed(0)
    data = sample_sphere_digits(pool, 64, shape=SHAPE, generator=gen)
    assert float(data.angle.min()) >= 30.0 and float(data.angle.max()) < 150.0
    centroid = _chart_centroids(atlas.extract(data.x)).double()
    # a dot at (0, d) in the upright digit lands at Rot(theta) (0, d) = (-d sin, d cos)
    recovered = torch.rad2deg(torch.atan2(-centroid[..., 0], centroid[..., 1]))
    error = torch.remainder(recovered - data.angle + 180.0, 360.0) - 180.0
    assert float(error.abs().max()) < 3.0
    # the dot's distance from the centre is preserved up to the projection's mild distortion
    radius = centroid.norm(dim=-1)
    assert 3.6 < float(radius.min()) and float(radius.max()) < 5.2


def test_rotation_ranges_test_split_and_unrotated():
    pool = _dot_pool()
    gen = torch.Generator().manual_seed(1)
    wide = sample_sphere_digits(pool, 400, shape=SHAPE, rotation_spread=180.0, generator=gen)
    assert float(wide.angle.min()) >= -90.0 and float(wide.angle.max()) < 270.0
    assert float(wide.angle.min()) < -80.0 and float(wide.angle.max()) > 260.0
    # uniform: about a third of the angles in each third of the range
    counts = torch.histc(wide.angle.float(), bins=3, min=-90.0, max=270.0)
    assert float(counts.min()) > 0.27 * wide.angle.numel()
    flat = sample_sphere_digits(pool, 5, shape=SHAPE, rotation_spread=0.0, generator=gen)
    assert torch.equal(flat.angle, torch.full((5, 3), 90.0, dtype=torch.float64))
    upright = sample_sphere_digits(
        pool, 2, shape=SHAPE, rotation_center=0.0, rotation_spread=0.0, generator=gen
    )
    atlas = sphere_digits_atlas(SHAPE)
    c = _chart_centroids(atlas.extract(upright.x))
    assert float(c[..., 0].abs().max()) < 0.3 and float(c[..., 1].min()) > 3.5  # dot above
    dm = SphereDigitsDataModule(n=8, n_test=6, rotation_spread=0.0, test_rotation_spread=30.0)
    dm.setup()
    assert bool((dm.train.angle == 90.0).all())
    assert float((dm.test.angle - 90.0).abs().max()) <= 30.0
    assert float((dm.test.angle - 90.0).abs().max()) > 5.0


def test_rotating_a_digit_rotates_its_chart_patch():
    """Render the same digit at 90 and 180 degrees: the chart patches agree after an exact
    rot90 (the projection's distortion is symmetric under it only approximately)."""
    images, labels = load_sklearn_digits()
    pool = ArrayDigits(images[:1], labels[:1], 16, 11)
    img, lab = pool.get(torch.zeros(1, 3, dtype=torch.long).flatten())
    imgs = img.view(1, 3, 16, 16)
    labs = lab.view(1, 3)
    atlas = sphere_digits_atlas(SHAPE)
    p90 = atlas.extract(render_sphere_digits(imgs, labs, torch.full((1, 3), 90.0), SHAPE)[0])
    p180 = atlas.extract(render_sphere_digits(imgs, labs, torch.full((1, 3), 180.0), SHAPE)[0])
    rotated = torch.rot90(p90, 1, dims=(-2, -1))
    rel = float((rotated - p180).norm() / p180.norm())
    assert rel < 0.25
    # and it is not trivially close: the unrotated patches differ much more
    assert float((p90 - p180).norm() / p180.norm()) > 2 * rel


# --------------------------------------------------------------------------------------------
# speed and the amount read
# --------------------------------------------------------------------------------------------


def test_ten_thousand_samples_in_seconds():
    images, labels = load_sklearn_digits()
    pool = ArrayDigits(images, labels, 16, 11)
    start, cpu = time.perf_counter(), time.process_time()
    data = sample_sphere_digits(pool, 10_000, shape=SHAPE, generator=torch.Generator())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert data.x.shape == (10_000, 1, *SHAPE) and data.y.shape == (10_000, *SHAPE)
    # CPU time (all threads of this process) does not grow when other processes load the
    # machine; measured 1.6 s (wall 4 s under a load of 6 on 2 cores)
    assert cpu < 20.0, f"10k samples took {cpu:.1f} s of CPU time ({wall:.1f} s wall)"


def test_only_the_digits_used_are_fetched():
    requested: list[int] = []

    class CountingPool(ArrayDigits):
        def get(self, indices):
            requested.extend(torch.as_tensor(indices).tolist())
            return super().get(indices)

    pool = CountingPool(torch.rand(1000, 8, 8), torch.randint(10, (1000,)), 16)
    data = sample_sphere_digits(pool, 5, shape=SHAPE, generator=torch.Generator().manual_seed(0))
    assert sorted(requested) == sorted(set(data.digit_index.flatten().tolist()))
    assert len(requested) <= 15


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(1, 9),
    side=st.integers(1, 6),
    picks=st.lists(st.integers(0, 100), max_size=12),
    compress=st.booleans(),
)
def test_read_idx_round_trip(tmp_path_factory, count, side, picks, compress):
    folder = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(count * 31 + side)
    images = rng.integers(0, 256, size=(count, side, side), dtype=np.uint8)
    path = _write_idx(folder / "img", images, IDX_IMAGES_MAGIC, compress)
    assert np.array_equal(read_idx(path, expected_magic=IDX_IMAGES_MAGIC), images)
    idx = np.array([p % count for p in picks], dtype=np.int64)
    got = read_idx(path, idx, expected_magic=IDX_IMAGES_MAGIC)
    assert got.shape == (len(idx), side, side)
    assert np.array_equal(got, images[idx])
    header = read_idx_header(path, IDX_IMAGES_MAGIC)
    assert header.dims == (count, side, side) and header.compressed == compress


def test_mnist_folder_pool_and_data_module(tmp_path):
    train_images, train_labels = _tiny_mnist(tmp_path / "mnist", n=12)
    _, test_labels = _tiny_mnist(tmp_path / "mnist", n=6, seed=1, prefix="t10k")
    found = find_mnist_files(tmp_path / "mnist", "train")
    assert found == (
        tmp_path / "mnist" / "train-images-idx3-ubyte",
        tmp_path / "mnist" / "train-labels-idx1-ubyte",
    )
    pool = MnistDigits(*found, size=28)
    assert len(pool) == 12
    imgs, labs = pool.get(torch.tensor([4, 0, 4]))
    assert torch.equal(labs, torch.from_numpy(train_labels[[4, 0, 4]].astype(np.int64)))
    assert torch.allclose(imgs, torch.from_numpy(train_images[[4, 0, 4]]).float() / 255)
    dm = SphereDigitsDataModule(
        n=10, n_test=8, source="mnist", mnist_path=str(tmp_path / "mnist"), seed=2
    )
    dm.setup()
    assert dm.x.shape == (10, 1, *SHAPE)
    expected_train = torch.from_numpy(train_labels.astype(np.int64))[dm.train.digit_index]
    assert torch.equal(dm.train.digit_label, expected_train)
    # the test split draws from the t10k files
    assert int(dm.test.digit_index.max()) < 6
    expected_test = torch.from_numpy(test_labels.astype(np.int64))[dm.test.digit_index]
    assert torch.equal(dm.test.digit_label, expected_test)


def test_mnist_gzip_pair_and_split(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    labels = np.arange(10, dtype=np.uint8)
    img = _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, IDX_IMAGES_MAGIC, True)
    lab = _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, IDX_LABELS_MAGIC, True)
    assert find_mnist_files(tmp_path, "train") == (img, lab)
    dm = SphereDigitsDataModule(n=6, n_test=4, source="mnist", mnist_path=[str(img), str(lab)])
    dm.setup()
    # one pool split 80/20 in file order: training digits 0..7, test digits 8..9
    assert set(dm.train.digit_label.unique().tolist()) <= set(range(8))
    assert set(dm.test.digit_label.unique().tolist()) <= {8, 9}


def test_gzip_is_read_only_as_far_as_needed(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(400, 28, 28), dtype=np.uint8)
    full = gzip.compress(
        IDX_IMAGES_MAGIC.to_bytes(4, "big")
        + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
        + images.tobytes()
    )
    path = tmp_path / "cut.gz"
    path.write_bytes(full[: len(full) // 2])  # the stream breaks off in the middle
    first = read_idx(path, [0, 2, 1], expected_magic=IDX_IMAGES_MAGIC)
    assert np.array_equal(first, images[[0, 2, 1]])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path, [399], expected_magic=IDX_IMAGES_MAGIC)


def test_idx_errors(tmp_path):
    images = np.zeros((4, 5, 5), dtype=np.uint8)
    good = _write_idx(tmp_path / "img", images, IDX_IMAGES_MAGIC)
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        read_idx(tmp_path / "missing", expected_magic=IDX_IMAGES_MAGIC)
    with pytest.raises(ValueError, match=r"bad magic number 2051 \(0x00000803\); expected 2049"):
        read_idx(good, expected_magic=IDX_LABELS_MAGIC)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x03" + good.read_bytes()[4:])  # float elements
    with pytest.raises(ValueError, match="bad magic number"):
        read_idx_header(bad, IDX_IMAGES_MAGIC)
    cut = tmp_path / "cut"
    cut.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(ValueError, match=r"truncated IDX file: the header announces 4 items"):
        read_idx(cut, expected_magic=IDX_IMAGES_MAGIC)
    long = tmp_path / "long"
    long.write_bytes(good.read_bytes() + b"\x00" * 7)
    with pytest.raises(ValueError, match="7 bytes beyond"):
        read_idx_header(long, IDX_IMAGES_MAGIC)
    stub = tmp_path / "stub"
    stub.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx_header(stub, IDX_IMAGES_MAGIC)
    header_only = tmp_path / "header_only"
    header_only.write_bytes(good.read_bytes()[:10])
    with pytest.raises(ValueError, match="truncated IDX header"):
        read_idx_header(header_only, IDX_IMAGES_MAGIC)
    zero = _write_idx(tmp_path / "zero", np.zeros((2, 0, 3), dtype=np.uint8), IDX_IMAGES_MAGIC)
    with pytest.raises(ValueError, match="sizes must be positive"):
        read_idx_header(zero, IDX_IMAGES_MAGIC)
    with pytest.raises(ValueError, match=r"indices must lie in 0\.\.3"):
        read_idx(good, [4], expected_magic=IDX_IMAGES_MAGIC)
    labels = _write_idx(tmp_path / "lab", np.array([1, 2, 3], np.uint8), IDX_LABELS_MAGIC)
    with pytest.raises(ValueError, match="count mismatch: .* 4 images but .* 3 labels"):
        MnistDigits(good, labels)
    wide = _write_idx(tmp_path / "wide", np.zeros((3, 4, 6), np.uint8), IDX_IMAGES_MAGIC)
    with pytest.raises(ValueError, match="must be square"):
        MnistDigits(wide, labels)
    big = _write_idx(tmp_path / "big", np.array([1, 12, 3, 4], np.uint8), IDX_LABELS_MAGIC)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9, found 12"):
        MnistDigits(good, big, size=16).get(torch.arange(4))


def test_mnist_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST folder not found"):
        SphereDigitsDataModule(n=4, source="mnist", mnist_path=str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="lacks train-images-idx3-ubyte"):
        SphereDigitsDataModule(n=4, source="mnist", mnist_path=str(empty))
    half = tmp_path / "half"
    half.mkdir()
    _write_idx(half / "train-images-idx3-ubyte", np.zeros((2, 4, 4), np.uint8), IDX_IMAGES_MAGIC)
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.* is missing"):
        SphereDigitsDataModule(n=4, source="mnist", mnist_path=str(half))
    with pytest.raises(ValueError, match="needs mnist_path"):
        SphereDigitsDataModule(n=4, source="mnist")
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        SphereDigitsDataModule(n=4, source="mnist", mnist_path=["a.idx", "b.idx"])


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def test_bad_digit_arrays_and_render_inputs():
    images = torch.rand(3, 8, 8)
    images[1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"1 NaN/Inf values \(first at index \(1, 2, 2\)\)"):
        ArrayDigits(images, torch.tensor([1, 2, 3]), 16)
    with pytest.raises(ValueError, match="square images"):
        ArrayDigits(torch.rand(3, 8, 6), torch.tensor([1, 2, 3]), 16)
    with pytest.raises(ValueError, match=r"labels must be \(M,\) with M = 3"):
        ArrayDigits(torch.rand(3, 8, 8), torch.tensor([1, 2]), 16)
    with pytest.raises(ValueError, match=r"must lie in 0\.\.9"):
        ArrayDigits(torch.rand(3, 8, 8), torch.tensor([1, 2, 10]), 16)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        ArrayDigits(torch.rand(3, 8, 8) * 3, torch.tensor([1, 2, 3]), 16)
    good = torch.rand(2, 3, 16, 16)
    labels = torch.zeros(2, 3, dtype=torch.long)
    angles = torch.zeros(2, 3)
    bad = good.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        render_sphere_digits(bad, labels, angles, SHAPE)
    with pytest.raises(ValueError, match=r"images must be \(N, 3, S, S\)"):
        render_sphere_digits(good[:, :2], labels, angles, SHAPE)
    with pytest.raises(ValueError, match=r"labels and angles must be \(2, 3\)"):
        render_sphere_digits(good, labels[:1], angles, SHAPE)
    with pytest.raises(ValueError, match="angles contain NaN"):
        render_sphere_digits(good, labels, torch.full((2, 3), float("inf")), SHAPE)
    with pytest.raises(ValueError, match="overlap on a grid 60 columns wide"):
        render_sphere_digits(good, labels, angles, (37, 60))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"charts": "both"}, "charts must be 'local' or 'global'"),
        ({"source": "emnist"}, "source must be 'sklearn' or 'mnist'"),
        ({"width": 60}, "overlap"),
        ({"n": 0}, "n must be >= 1"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"n": 1, "val_fraction": 0.5}, "leaves no training samples"),
        ({"rotation_spread": -1.0}, "rotation_spread must be >= 0"),
        ({"rotation_center": float("nan")}, "rotation_center must be finite"),
        ({"background_weight": 0.0}, "background_weight must be > 0"),
        ({"chart_radius": 20}, "too wide"),
        ({"label_threshold": 0.0}, "label_threshold must be > 0"),
    ],
)
def test_data_module_option_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SphereDigitsDataModule(**{"n": 10, **kwargs})


# --------------------------------------------------------------------------------------------
# global mode
# --------------------------------------------------------------------------------------------


def test_global_mode_canvas_and_chart(small_dm):
    dm = SphereDigitsDataModule(n=40, n_test=20, seed=3, charts="global", canvas_margin=8)
    dm.setup()
    side = 75 + 16
    assert dm.x.shape == (40, 1, side, side) and dm.y.shape == (40, side, side)
    atlas = dm.atlas
    assert atlas.manifold == "plane" and atlas.n_charts == 1 and atlas.radius == (side - 1) // 2
    assert atlas.centers.tolist() == [[45, 45]]
    # identical data: the map sits inside the canvas, its middle digit at the canvas centre
    top = 45 - 18
    assert torch.equal(dm.x[:, :, top : top + 37, 8 : 8 + 75], small_dm.x)
    assert torch.equal(dm.y[:, top : top + 37, 8 : 8 + 75], small_dm.y)
    assert torch.equal(dm.x_test[:, :, top : top + 37, 8 : 8 + 75], small_dm.x_test)
    assert float(dm.x[:, :, :top].abs().sum()) == 0.0 and bool((dm.y[:, :top] == BACKGROUND).all())
    row, col = digit_centers(SHAPE)[1]
    assert (row + top, col + 8) == (45, 45)
    # the chart covers every digit pixel of the map
    assert torch.equal(atlas.extract(dm.x)[:, 0], dm.x)


def test_global_canvas_wraps_longitude_for_even_width():
    x = torch.arange(2 * 5 * 8, dtype=torch.float32).view(2, 1, 5, 8)
    y = torch.randint(0, 11, (2, 5, 8))
    xc, yc = global_canvas(x, y)
    assert xc.shape == (2, 1, 9, 9)
    assert torch.equal(xc[:, :, 2:7, :8], x) and torch.equal(xc[:, :, 2:7, 8], x[..., 0])
    assert torch.equal(yc[:, 2:7, 8], y[..., 0]) and bool((yc[:, :2] == BACKGROUND).all())
    # map centre (row 2, column 4 = W / 2) lands on the canvas centre (4, 4)
    assert xc[0, 0, 4, 4] == x[0, 0, 2, 4]
    with pytest.raises(ValueError, match="does not fit"):
        global_canvas(torch.zeros(1, 1, 12, 8))


# --------------------------------------------------------------------------------------------
# discovery with a fixed rotation-equivariant predictor
# --------------------------------------------------------------------------------------------


def _isotropic_predictor(patches: torch.Tensor) -> torch.Tensor:
    """A fixed, rotation-equivariant map: squared isotropic Gaussian blur (valid, margin 3)."""
    ax = torch.arange(-3, 4, dtype=patches.dtype)
    kernel = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / 4.0)
    kernel = (kernel / kernel.sum())[None, None]
    b, k, c, h, w = patches.shape
    out = F.conv2d(patches.reshape(b * k * c, 1, h, w), kernel) ** 2
    return out.reshape(b, k, c, h - 6, w - 6)


def test_fixed_isotropic_predictor_discovers_so2_on_the_sphere_charts(small_dm):
    group = atlasd.discover_local(
        small_dm.x,
        atlas=small_dm.atlas,
        predictor=_isotropic_predictor,
        cosets=False,
        seed=0,
        basis_epochs=4,
        batch_size=8,
        init_candidates=8,
        basis_lr=0.05,
    )
    sim = group.similarity(small_dm.ground_truth["algebra"])
    assert sim >= 0.95, group.algebra
    # a rotation by 90 degrees is (nearly) an exact symmetry of the blurred charts
    rot = torch.linalg.matrix_exp(math.pi / 2 * small_dm.ground_truth["algebra"][0])
    assert group.contains(rot, tol=0.1)


def test_global_rotation_is_no_symmetry_of_the_data_distribution():
    """What a distribution-level method (LieGAN) sees: rotating each digit by its own small angle
    keeps the data distribution, one rotation of the whole picture does not (it moves the outer
    digits off the equator, where the data never has digits)."""
    from geomloss import SamplesLoss

    dm = SphereDigitsDataModule(n=512, n_test=4, charts="global", seed=0)
    dm.setup()
    a, b = dm.x[:256], dm.x[256:]
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(256, generator=gen) * math.radians(20.0)
    c, s = torch.cos(theta), torch.sin(theta)
    g = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)[:, None]
    global_rot = atlasd.act(g, dm.atlas.extract(a))[:, 0]
    # local rotations: the same digits, each turned by its own angle (the training pool is the
    # first 80 % of scikit-learn's digits, so pool indices are indices into the whole set)
    pool = ArrayDigits(*load_sklearn_digits(), 16, 11)
    idx = dm.train.digit_index[:256]
    images, labels = pool.get(idx.flatten())
    delta = torch.randn(256, 3, generator=gen, dtype=torch.float64) * 20.0
    args = (images.view(256, 3, 16, 16), labels.view(256, 3))
    same, _ = global_canvas(render_sphere_digits(*args, dm.train.angle[:256], SHAPE)[0], None, 8)
    assert torch.equal(same, a)  # the re-rendering reproduces the data exactly
    local_rot, _ = global_canvas(
        render_sphere_digits(*args, dm.train.angle[:256] + delta, SHAPE)[0], None, 8
    )
    band = torch.ones(91, dtype=torch.bool)
    band[45 - 10 : 45 + 11] = False  # rows further than 10 pixels from the equator

    def off_equator(z: torch.Tensor) -> float:
        return float(z[:, 0, band].sum() / z.sum())

    assert off_equator(a) == 0.0 and off_equator(local_rot) == 0.0
    assert off_equator(global_rot) > 0.08
    sinkhorn = SamplesLoss("sinkhorn", p=2, blur=3.0, debias=True, backend="tensorized")
    d_data = float(sinkhorn(a.flatten(1), b.flatten(1)))
    d_local = float(sinkhorn(local_rot.flatten(1), b.flatten(1)))
    d_global = float(sinkhorn(global_rot.flatten(1), b.flatten(1)))
    assert d_local < 2 * d_data + 0.5
    assert d_global > 10 * d_local
