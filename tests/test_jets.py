"""Tests of the boosted-jets task (atlasd.datasets.jets): generator, kinematics, loader, module."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from known_groups import so13
from sklearn.metrics import roc_auc_score

from atlasd import DiscoveredGroup, lie
from atlasd.datasets import make_datamodule
from atlasd.datasets.jets import (
    LABEL_COLUMN,
    TOP_MASS,
    W_MASS,
    JetsDataModule,
    boost_from_rest,
    generate_jets,
    invariant_mass,
    jet_momentum,
    jets_ground_truth,
    lorentz_generators,
    minkowski_dot,
    read_top_tagging,
    top_tagging_columns,
    transverse_momentum,
)

F64 = torch.float64
ETA = torch.diag(torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=F64))
PARITY = ETA.clone()
TIME_REVERSAL = -ETA


def _lorentz(coefficients: torch.Tensor) -> torch.Tensor:
    """exp(sum c_i L_i) for so(1,3): (..., 6) -> (..., 4, 4)."""
    return torch.linalg.matrix_exp(torch.einsum("...k,kij->...ij", coefficients, so13()))


def _products(x: torch.Tensor) -> torch.Tensor:
    """All Minkowski products p_i . p_j of each jet, sorted: (N, P, 4) -> (N, P * P)."""
    g = minkowski_dot(x[:, :, None, :], x[:, None, :, :])
    return g.flatten(1).sort(dim=1).values


@pytest.fixture(scope="module")
def jets():
    return generate_jets(10_000, seed=0, dtype=F64)


# ------------------------------------------------------------------------------------------
# Kinematics
# ------------------------------------------------------------------------------------------


def test_lorentz_generators_are_so13():
    L = lorentz_generators()
    assert L.shape == (6, 4, 4) and L.dtype == F64
    # A^T eta + eta A = 0 for each, and together they span so(1,3) (6 independent directions)
    assert torch.allclose(L.mT @ ETA + ETA @ L, torch.zeros(6, 4, 4, dtype=F64))
    assert lie.orthonormal_basis(L).shape[0] == 6
    assert lie.similarity(L, so13()) == pytest.approx(1.0, abs=1e-12)
    # boosts first: symmetric, rotations next: antisymmetric
    assert torch.equal(L[:3], L[:3].mT) and torch.equal(L[3:], -L[3:].mT)


def test_ground_truth_cosets_and_parity_component():
    truth = jets_ground_truth()
    assert truth["algebra"].shape == (6, 4, 4) and truth["cosets"].shape == (2, 4, 4)
    assert torch.equal(truth["cosets"][1], PARITY)
    G = DiscoveredGroup(truth["algebra"], cosets=truth["cosets"])
    # diag(1,1,1,-1) = parity x (rotation by pi about z): same component, the canonical name
    z_flip = torch.diag(torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=F64))
    assert G.component_of(z_flip) == 1
    assert torch.equal(lie.canonical_coset_representative(PARITY, truth["algebra"]), z_flip)
    assert not G.contains(TIME_REVERSAL) and not G.contains(-torch.eye(4, dtype=F64))


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(-1.5, 1.5), min_size=6, max_size=6),
    st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3),
)
def test_boost_from_rest_is_a_lorentz_boost(coefficients, momentum):
    p_vec = torch.tensor(momentum, dtype=F64)
    p = torch.cat([torch.tensor([(p_vec.square().sum() + 0.3**2).sqrt()]), p_vec])
    B = boost_from_rest(p)
    rest = torch.tensor([0.3, 0.0, 0.0, 0.0], dtype=F64)
    assert torch.allclose(B @ rest, p, atol=1e-12)
    assert torch.allclose(B.T @ ETA @ B, ETA, atol=1e-10)
    inverse = boost_from_rest(torch.cat([p[:1], -p[1:]]))
    assert torch.allclose(inverse @ B, torch.eye(4, dtype=F64), atol=1e-10)
    # batched and at rest
    Lam = _lorentz(torch.tensor(coefficients, dtype=F64))
    q = (Lam @ rest)[None].expand(3, 4)
    assert torch.allclose(boost_from_rest(q)[1] @ rest, q[1], atol=1e-10)
    assert torch.allclose(boost_from_rest(rest), torch.eye(4, dtype=F64))


def test_boost_from_rest_rejects_light_like_and_negative_energy():
    with pytest.raises(ValueError, match="time-like"):
        boost_from_rest(torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="time-like"):
        boost_from_rest(torch.tensor([-2.0, 0.0, 0.0, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="4-vectors"):
        minkowski_dot(torch.zeros(3), torch.zeros(3))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0), min_size=6, max_size=6), st.booleans())
def test_lorentz_transformations_leave_invariants_unchanged(jets, coefficients, parity):
    x = jets[0][:200]
    g = _lorentz(torch.tensor(coefficients, dtype=F64))
    if parity:
        g = PARITY @ g
    moved = x @ g.mT
    # Minkowski products cancel terms of size E^2, so the bounds scale with E^2: measured
    # errors reach 1e-11 E^2 (a fixed atol of 1e-6 flipped on a boost of rapidity 0.047, where
    # a massless constituent of E ~ 670 came out at p.p = 4e-6); a transformation off the
    # group by 1e-3 moves them by ~1e-3 E^2
    jet0, jet1 = jet_momentum(x), jet_momentum(moved)
    m0, m1 = invariant_mass(jet0), invariant_mass(jet1)
    energy2 = torch.maximum(jet0[:, 0], jet1[:, 0]) ** 2
    assert bool(((m0**2 - m1**2).abs() <= 1e-9 * energy2).all())
    scale2 = float(torch.maximum(x[..., 0].abs().max(), moved[..., 0].abs().max())) ** 2
    assert torch.allclose(_products(x), _products(moved), rtol=0.0, atol=1e-9 * scale2)


def test_frame_dependent_features_change_under_a_boost(jets):
    x = jets[0][:200]
    g = _lorentz(torch.tensor([0.3, 0.0, -0.5, 0.2, 0.0, 0.0], dtype=F64))
    moved = x @ g.mT
    change = transverse_momentum(jet_momentum(moved)) / transverse_momentum(jet_momentum(x))
    assert float((change - 1).abs().median()) > 0.05
    assert torch.allclose(invariant_mass(jet_momentum(moved)), invariant_mass(jet_momentum(x)))


# ------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------


def test_shapes_dtypes_labels_and_padding():
    x, y = generate_jets(501, n_constituents=12, seed=3)
    assert x.shape == (501, 12, 4) and x.dtype == torch.float32
    assert y.shape == (501,) and y.dtype == torch.int64
    assert int(y.sum()) == 250 and set(y.unique().tolist()) == {0, 1}
    assert torch.isfinite(x).all()
    real = x[..., 0] > 0
    # 3 prongs x at most 3 constituents: at least 3, at most 9 real ones, then zero padding
    counts = real.sum(1)
    assert int(counts.min()) >= 3 and int(counts.max()) == 9
    assert torch.equal(real, torch.arange(12)[None] < counts[:, None])
    assert (x[~real] == 0).all()
    # sorted by pT, hardest first; massless constituents (E = |p|)
    pt = transverse_momentum(x.double())
    assert ((pt[:, :-1] - pt[:, 1:]) >= 0).all()
    mass2 = minkowski_dot(x.double(), x.double())[real]
    assert mass2.abs().max() < 1e-3 * x[..., 0].max() ** 2
    # truncation keeps the hardest
    x1, _ = generate_jets(501, n_constituents=1, seed=3)
    assert torch.equal(x1[:, 0], x[:, 0])


def test_same_seed_bit_identical_different_seed_differs():
    a = generate_jets(300, seed=5)
    b = generate_jets(300, seed=5)
    c = generate_jets(300, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_invariants_separate_classes_frame_features_do_not(jets):
    x, y = jets
    p = jet_momentum(x)
    auc = {
        "mass": roc_auc_score(y, invariant_mass(p)),
        "pt": roc_auc_score(y, transverse_momentum(p)),
        "momentum": roc_auc_score(y, p[:, 1:].norm(dim=1)),
        "energy": roc_auc_score(y, p[:, 0]),
        "pz": roc_auc_score(y, p[:, 3]),
        "leading_pt": roc_auc_score(y, transverse_momentum(x[:, 0])),
        "multiplicity": roc_auc_score(y, (x[..., 0] > 0).sum(1)),
    }
    assert auc["mass"] > 0.9
    for name in ("pt", "momentum", "pz", "multiplicity"):
        assert abs(auc[name] - 0.5) < 0.03, (name, auc[name])
    # E = sqrt(|P|^2 + m^2) knows a little about the mass, the leading constituent a little
    assert abs(auc["energy"] - 0.5) < 0.08 and abs(auc["leading_pt"] - 0.5) < 0.08
    # the top mass peak and the falling QCD spectrum
    m = invariant_mass(p)
    assert abs(float(m[y == 1].median()) - TOP_MASS) < 3.0
    assert float(m[y == 0].median()) < 100.0


def test_three_prong_top_has_a_w_pair():
    # one constituent per prong, no smearing: the constituents are the decay products
    x, y = generate_jets(2000, seed=1, max_per_prong=1, shower_angle=0.0, energy_resolution=0.0,
                         n_constituents=3, dtype=F64)  # fmt: skip
    pairs = torch.stack(
        [invariant_mass(x[:, i] + x[:, j]) for i, j in ((0, 1), (0, 2), (1, 2))], dim=1
    )
    closest = (pairs - W_MASS).abs().min(dim=1).values
    assert float(closest[y == 1].median()) < 1.5  # Breit-Wigner half width ~ 1 GeV
    assert float(closest[y == 0].median()) > 10.0


def test_frame_does_not_change_the_rest_frame_physics():
    # same seed, different lab momenta: the same jets seen from other frames
    slow, y_slow = generate_jets(400, seed=2, momentum_range=(200.0, 200.0), dtype=F64)
    fast, y_fast = generate_jets(400, seed=2, momentum_range=(1000.0, 1000.0), dtype=F64)
    assert torch.equal(y_slow, y_fast)
    p_slow, p_fast = jet_momentum(slow), jet_momentum(fast)
    assert torch.allclose(p_slow[:, 1:].norm(dim=1), torch.full((400,), 200.0, dtype=F64))
    assert torch.allclose(p_fast[:, 1:].norm(dim=1), torch.full((400,), 1000.0, dtype=F64))
    assert torch.allclose(invariant_mass(p_slow), invariant_mass(p_fast), rtol=1e-8)
    assert torch.allclose(_products(slow), _products(fast), rtol=1e-7, atol=1e-4)


def test_energy_scale_spread_rescales_masses():
    x0, _ = generate_jets(2000, seed=4, dtype=F64)
    x1, y1 = generate_jets(2000, seed=4, scale_spread=0.5, dtype=F64)
    m0, m1 = invariant_mass(jet_momentum(x0)), invariant_mass(jet_momentum(x1))
    ratio = m1 / m0
    assert float(ratio.log().std()) == pytest.approx(0.5, rel=0.1)
    # with a random scale the absolute jet mass is a weaker discriminant
    assert roc_auc_score(y1, m1) < roc_auc_score(y1, m0) - 0.05


def test_ten_thousand_jets_generate_in_seconds():
    start = time.process_time()
    x, _ = generate_jets(10_000, n_constituents=20, seed=0)
    elapsed = time.process_time() - start
    assert x.shape == (10_000, 20, 4)
    assert elapsed < 5.0, f"10k jets took {elapsed:.2f} s of CPU time"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 1}, "n must be >= 2"),
        ({"n": 10, "n_constituents": 0}, "n_constituents must be >= 1"),
        ({"n": 10, "n_constituents": 201}, "n_constituents must be <= 200"),
        ({"n": 10, "momentum_range": (500.0, 100.0)}, "momentum_range"),
        ({"n": 10, "momentum_range": 5.0}, "momentum_range"),
        ({"n": 10, "shower_angle": -0.1}, "shower_angle"),
        ({"n": 10, "energy_resolution": float("nan")}, "energy_resolution"),
        ({"n": 10, "max_per_prong": 0}, "max_per_prong"),
        ({"n": 10, "seed": 1.5}, "seed must be an int"),
        ({"n": 10, "dtype": torch.int32}, "dtype"),
    ],
)
def test_generator_rejects_bad_arguments(kwargs, match):
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=match):
        generate_jets(n, **kwargs)


# ------------------------------------------------------------------------------------------
# Loader of the real files
# ------------------------------------------------------------------------------------------

N_FILE_CONSTITUENTS = 5


def _frame(n_rows: int = 7, n_const: int = N_FILE_CONSTITUENTS, seed: int = 0) -> pd.DataFrame:
    """A frame in the published layout: value of (row r, constituent i, component c) is
    1000 r + 10 i + c + 1 (so every entry says where it came from), zero padding from a
    per-row multiplicity on."""
    rng = np.random.default_rng(seed)
    data = {}
    multiplicity = rng.integers(1, n_const + 1, size=n_rows)
    rows = np.arange(n_rows)
    for i in range(n_const):
        for c, name in enumerate(("E", "PX", "PY", "PZ")):
            value = 1000.0 * rows + 10 * i + c + 1
            data[f"{name}_{i}"] = np.where(i < multiplicity, value, 0.0).astype(np.float32)
    for name in ("truthE", "truthPX", "truthPY", "truthPZ"):
        data[name] = rng.normal(size=n_rows).astype(np.float32)
    data["ttv"] = rng.integers(0, 3, size=n_rows)
    data[LABEL_COLUMN] = (rows % 3 == 0).astype(np.int64)
    return pd.DataFrame(data)


def _expected(frame: pd.DataFrame, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(frame[top_tagging_columns(p)].to_numpy(), dtype=torch.float32)
    return x.view(len(frame), p, 4), torch.tensor(frame[LABEL_COLUMN].to_numpy())


@pytest.fixture(params=["fixed", "table"])
def h5file(request, tmp_path):
    frame = _frame()
    path = tmp_path / f"jets_{request.param}.h5"
    frame.to_hdf(path, key="table", format=request.param)
    return path, frame


def test_top_tagging_columns_order():
    assert top_tagging_columns(2) == ["E_0", "PX_0", "PY_0", "PZ_0", "E_1", "PX_1", "PY_1", "PZ_1"]
    assert len(top_tagging_columns(200)) == 800
    with pytest.raises(ValueError, match="<= 200"):
        top_tagging_columns(201)


def test_reader_values_order_padding_labels(h5file):
    path, frame = h5file
    x, y = read_top_tagging(path, 3)
    ex, ey = _expected(frame, 3)
    assert x.shape == (7, 3, 4) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, ex) and torch.equal(y, ey)
    # entry (r, i, c) = 1000 r + 10 i + c + 1 where not padded: E, PX, PY, PZ in this order
    assert x[1, 0].tolist() == [1001.0, 1002.0, 1003.0, 1004.0]
    assert (x[x[..., 0] == 0] == 0).all()  # padding is whole zero 4-vectors
    assert y.tolist() == [1, 0, 0, 1, 0, 0, 1]


def test_reader_rows_chunks_and_all_constituents(h5file):
    path, frame = h5file
    ex, ey = _expected(frame, N_FILE_CONSTITUENTS)
    x, y = read_top_tagging(path, N_FILE_CONSTITUENTS, start=2, n=4, chunk_rows=3)
    assert torch.equal(x, ex[2:6]) and torch.equal(y, ey[2:6])
    x_all, _ = read_top_tagging(path, N_FILE_CONSTITUENTS, chunk_rows=2, dtype=F64)
    assert x_all.dtype == F64 and torch.equal(x_all.float(), ex)


@pytest.mark.parametrize("fmt", ["fixed", "table"])
@pytest.mark.parametrize("complib", ["zlib", "blosc"])
def test_reader_handles_compressed_files(tmp_path, fmt, complib):
    frame = _frame()
    path = tmp_path / f"compressed_{fmt}_{complib}.h5"
    frame.to_hdf(path, key="table", format=fmt, complevel=5, complib=complib)
    x, y = read_top_tagging(path, 4, chunk_rows=3)
    ex, ey = _expected(frame, 4)
    assert torch.equal(x, ex) and torch.equal(y, ey)


def test_reader_handles_shuffled_columns(tmp_path):
    frame = _frame(n_rows=6)
    shuffled = frame[list(np.random.default_rng(1).permutation(frame.columns))]
    for fmt in ("fixed", "table"):
        path = tmp_path / f"shuffled_{fmt}.h5"
        shuffled.to_hdf(path, key="table", format=fmt)
        x, y = read_top_tagging(path, 4, chunk_rows=4)
        ex, ey = _expected(frame, 4)
        assert torch.equal(x, ex) and torch.equal(y, ey), fmt


def test_reader_errors(h5file, tmp_path):
    path, _ = h5file
    with pytest.raises(FileNotFoundError, match="no top-tagging file"):
        read_top_tagging(tmp_path / "missing.h5", 3)
    with pytest.raises(KeyError, match="E_5.*5 constituents"):
        read_top_tagging(path, 6)
    with pytest.raises(ValueError, match="n_constituents must be <= 200"):
        read_top_tagging(path, 201)
    with pytest.raises(ValueError, match="n_constituents must be >= 1"):
        read_top_tagging(path, 0)
    with pytest.raises(ValueError, match="has 7 rows"):
        read_top_tagging(path, 2, start=5, n=3)
    with pytest.raises(KeyError, match="no key 'jets'"):
        read_top_tagging(path, 2, key="jets")
    text = tmp_path / "not.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        read_top_tagging(text, 2)


@pytest.mark.parametrize("fmt", ["fixed", "table"])
def test_reader_rejects_nan_missing_label_and_bad_labels(tmp_path, fmt):
    frame = _frame()
    bad = frame.copy()
    bad.loc[4, "PY_1"] = np.nan
    bad.to_hdf(tmp_path / "nan.h5", key="table", format=fmt)
    with pytest.raises(ValueError, match="NaN.*row 4, column 'PY_1'"):
        read_top_tagging(tmp_path / "nan.h5", 3)
    # NaN in a column that is not read does not matter
    ok, _ = read_top_tagging(tmp_path / "nan.h5", 1)
    assert torch.isfinite(ok).all()
    frame.drop(columns=[LABEL_COLUMN]).to_hdf(tmp_path / "nolabel.h5", key="table", format=fmt)
    with pytest.raises(KeyError, match="is_signal_new"):
        read_top_tagging(tmp_path / "nolabel.h5", 2)
    labels = frame.copy()
    labels[LABEL_COLUMN] = 2
    labels.to_hdf(tmp_path / "labels.h5", key="table", format=fmt)
    with pytest.raises(ValueError, match="must be 0 or 1"):
        read_top_tagging(tmp_path / "labels.h5", 2)


def test_reader_rejects_a_malformed_fixed_layout(tmp_path):
    import h5py

    path = tmp_path / "broken.h5"
    _frame().to_hdf(path, key="table", format="fixed")
    with h5py.File(path, "r+") as f:
        del f["table/block0_values"]
        f["table/block0_values"] = np.zeros((7, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="values of shape"):
        read_top_tagging(path, 2)
    other = tmp_path / "plain.h5"
    with h5py.File(other, "w") as f:
        f["table"] = np.zeros((3, 4))
    with pytest.raises(ValueError, match="not a pandas DataFrame"):
        read_top_tagging(other, 2)


@pytest.mark.parametrize("fmt", ["fixed", "table"])
def test_reader_reads_only_what_it_needs(tmp_path, fmt):
    # a file with all 200 constituents: 3000 rows x 806 columns, 9.7 MB of float32
    n_rows = 3000
    cols = top_tagging_columns(200)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((n_rows, len(cols)), dtype=np.float32), columns=cols)
    frame[LABEL_COLUMN] = (np.arange(n_rows) % 2).astype(np.int64)
    path = tmp_path / f"wide_{fmt}.h5"
    frame.to_hdf(path, key="table", format=fmt)
    whole = frame.memory_usage().sum()
    del frame
    read_top_tagging(path, 2, n=1)  # lazy imports and caches are not what we measure
    tracemalloc.start()
    try:
        x, y = read_top_tagging(path, 2, chunk_rows=100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert x.shape == (n_rows, 2, 4) and int(y.sum()) == n_rows // 2
    assert peak < whole / 4, f"peak {peak / 1e6:.1f} MB for a {whole / 1e6:.1f} MB frame"


# ------------------------------------------------------------------------------------------
# DataModule
# ------------------------------------------------------------------------------------------


def test_datamodule_synthetic_splits_and_units():
    dm = make_datamodule("jets", n=400, n_constituents=6, seed=1, batch_size=32)
    assert isinstance(dm, JetsDataModule) and dm.kind == "global"
    dm.setup()
    x, y = generate_jets(400, n_constituents=6, seed=1, dtype=F64)
    assert dm.x.dtype == torch.float32 and dm.x.shape == (400, 6, 4)
    assert torch.allclose(dm.x.double() * 100.0, x, rtol=1e-6)
    assert torch.equal(dm.y, y)
    assert (len(dm.x_train), len(dm.x_val), len(dm.x_test)) == (320, 40, 40)
    # the three parts partition the samples (rows are unique: continuous random 4-vectors)
    rows = torch.cat([dm.x_train, dm.x_val, dm.x_test]).flatten(1)
    assert torch.equal(rows.unique(dim=0), dm.x.flatten(1).unique(dim=0))
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (32, 6, 4) and yb.shape == (32,)
    assert len(next(iter(dm.test_dataloader()))[0]) == 32
    truth = dm.ground_truth
    assert truth["algebra"].shape == (6, 4, 4) and truth["cosets"].shape == (2, 4, 4)
    again = JetsDataModule(n=400, n_constituents=6, seed=1)
    again.setup()
    assert torch.equal(again.x_test, dm.x_test)


def test_splits_are_independent_of_the_labels():
    dm = JetsDataModule(n=4000, seed=0, val_fraction=0.1, test_fraction=0.2)
    dm.setup()
    # binomial std of a class fraction over 400 samples is 0.025
    for part in ("train", "val", "test"):
        assert abs(float(getattr(dm, f"y_{part}").float().mean()) - 0.5) < 0.1, part
    # nor do the labels line up with a split drawn the way discovery's predictor training does
    for seed in (0, 1):
        perm = torch.randperm(4000, generator=torch.Generator().manual_seed(seed))
        assert abs(float(dm.y[perm[:400]].float().mean()) - 0.5) < 0.1


def test_datamodule_reads_h5(h5file):
    path, frame = h5file
    dm = JetsDataModule(
        source="h5", path=str(path), n=None, n_constituents=2, energy_unit=1.0, test_fraction=0.2
    )
    dm.setup()
    ex, ey = _expected(frame, 2)
    assert torch.equal(dm.x, ex) and torch.equal(dm.y, ey)
    assert len(dm.x_val) == 1 and len(dm.x_test) == 1 and len(dm.x_train) == 5


@pytest.mark.parametrize("fmt", ["fixed", "table"])
def test_synthetic_jets_round_trip_through_the_published_layout(tmp_path, fmt):
    # synthetic jets written by pandas as in the published files read back bit for bit
    x, y = generate_jets(300, seed=4)
    columns = top_tagging_columns(9)
    frame = pd.DataFrame(dict(zip(columns, x.reshape(300, 36).numpy().T, strict=True)))
    truth = x.sum(1).numpy().T
    for name, column in zip(("truthE", "truthPX", "truthPY", "truthPZ"), truth, strict=True):
        frame[name] = column
    frame["ttv"] = np.zeros(300, dtype=np.int64)
    frame[LABEL_COLUMN] = y.numpy()
    path = tmp_path / f"synthetic_{fmt}.h5"
    frame.to_hdf(path, key="table", format=fmt)
    synthetic = JetsDataModule(n=300, seed=4)
    from_file = JetsDataModule(source="h5", path=str(path), n=None, seed=4)
    synthetic.setup()
    from_file.setup()
    for attr in ("x", "y", "x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(from_file, attr), getattr(synthetic, attr)), attr


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"source": "root"}, ValueError, "source must be"),
        ({"source": "h5"}, ValueError, "needs a path"),
        ({"source": "h5", "path": "/nonexistent/jets.h5"}, FileNotFoundError, "no top-tagging"),
        ({"path": "x.h5"}, ValueError, "only used with source='h5'"),
        ({"n": None}, ValueError, "needs n"),
        ({"energy_unit": 0.0}, ValueError, "energy_unit"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, ValueError, "must be < 1"),
        ({"n_constituents": 300}, ValueError, "<= 200"),
        ({"momentum_range": (0.0, 10.0)}, ValueError, "momentum_range"),
    ],
)
def test_datamodule_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        JetsDataModule(**kwargs)
