"""DiscoveredGroup: construction, membership, sampling, the JSON file format and the plot."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from known_groups import J, rotation, so2, so13

import atlasd
from atlasd.group import FORMAT, DiscoveredGroup

F64 = torch.float64
REFLECT = torch.diag(torch.tensor([1.0, -1.0], dtype=F64))
PARITY = torch.diag(torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=F64))


@pytest.fixture
def o2() -> DiscoveredGroup:
    return DiscoveredGroup(
        -2.5 * so2(),
        cosets=torch.stack([torch.eye(2, dtype=F64), REFLECT]),
        metadata={"dataset": "toy", "seed": 3},
    )


def test_algebra_is_standard_form(o2):
    assert o2.algebra.dtype == F64
    assert o2.dim == 1 and o2.d == 2 and o2.n_components == 2
    assert torch.allclose(o2.algebra[0], J / 2**0.5, atol=1e-15)


def test_reps_follow_the_change_of_basis():
    # a 2-dim algebra given in a skewed basis, with reps given per given generator
    L = torch.stack([J, J + torch.eye(2, dtype=F64)])
    rho = torch.stack([2 * torch.eye(3, dtype=F64), 5 * torch.eye(3, dtype=F64)])
    G = DiscoveredGroup(L, in_rep=rho)
    # linearity: the rep of each standard-form generator equals sum_i T_ai rho_i with the T that
    # writes the standard generator in the given basis
    T = torch.linalg.lstsq(L.flatten(1).T, G.algebra.flatten(1).T).solution.T
    assert torch.allclose(G.in_rep, torch.einsum("ak,kij->aij", T, rho), atol=1e-12)
    assert G.out_rep is None


def test_constructor_errors():
    with pytest.raises(ValueError, match="all zero"):
        DiscoveredGroup(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="identity first"):
        DiscoveredGroup(so2(), cosets=REFLECT[None])
    with pytest.raises(ValueError, match="R\\^4 but the algebra acts on R\\^2"):
        DiscoveredGroup(so2(), cosets=torch.eye(4)[None])
    with pytest.raises(ValueError, match="in_rep has 2 generators"):
        DiscoveredGroup(so2(), in_rep=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="NaN"):
        DiscoveredGroup(torch.tensor([[[0.0, float("nan")], [1.0, 0.0]]]))
    with pytest.raises(ValueError, match="JSON-serialisable"):
        DiscoveredGroup(so2(), metadata={"x": object()})


def test_similarity_accepts_groups_and_tensors(o2):
    assert o2.similarity(so2()) == pytest.approx(1.0)
    assert o2.similarity(DiscoveredGroup(torch.eye(2)[None])) == pytest.approx(0.0, abs=1e-15)


def test_contains_and_components(o2):
    assert o2.contains(rotation(2.0))
    assert o2.contains(rotation(0.3) @ torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64))
    assert not o2.contains(2.0 * torch.eye(2, dtype=F64))
    assert not o2.contains(torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=F64))  # shear
    assert o2.component_of(rotation(1.0)) == 0
    assert o2.component_of(REFLECT @ rotation(1.0)) == 1
    assert o2.same_component(REFLECT, torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64))
    assert not o2.same_component(REFLECT, rotation(0.5))
    # SO(2) alone does not contain reflections
    assert not DiscoveredGroup(so2()).contains(REFLECT)


def test_contains_shape_error(o2):
    with pytest.raises(ValueError, match="acts on R\\^2"):
        o2.contains(torch.eye(3))


def test_lorentz_group_components():
    G = DiscoveredGroup(so13(), cosets=torch.stack([torch.eye(4, dtype=F64), PARITY]))
    boost = torch.linalg.matrix_exp(1.2 * so13()[4] + 0.4 * so13()[2])
    assert G.component_of(boost) == 0
    assert G.component_of(PARITY @ boost) == 1
    assert G.component_of(-torch.eye(4, dtype=F64)) is None  # time reversal x parity


def test_sample_is_in_the_group_and_seeded(o2):
    g1 = o2.sample(64, generator=torch.Generator().manual_seed(0))
    g2 = o2.sample(64, generator=torch.Generator().manual_seed(0))
    assert g1.shape == (64, 2, 2) and torch.equal(g1, g2)
    # O(2): orthogonal matrices, both determinants present
    assert torch.allclose(
        g1.transpose(1, 2) @ g1, torch.eye(2, dtype=F64).expand(64, 2, 2), atol=1e-12
    )
    dets = torch.linalg.det(g1)
    assert (dets > 0).any() and (dets < 0).any()


# --- file format ------------------------------------------------------------------------------


def test_round_trip_is_exact(tmp_path):
    G = DiscoveredGroup(
        torch.randn(3, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(1)),
        cosets=torch.stack([torch.eye(4, dtype=F64), PARITY]),
        in_rep=torch.randn(3, 2, 2, dtype=F64),
        out_rep=torch.randn(3, 5, 5, dtype=F64),
        metadata={"dataset": "random", "losses": [0.5, 0.25], "seed": 7},
    )
    path = G.save(tmp_path / "group.json")
    H = atlasd.load_group(path)
    assert torch.equal(G.algebra, H.algebra)
    assert torch.equal(G.cosets, H.cosets)
    assert torch.equal(G.in_rep, H.in_rep) and torch.equal(G.out_rep, H.out_rep)
    assert H.metadata == G.metadata
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT == "atlasd.group/1"
    assert doc["dim"] == 3 and doc["d"] == 4 and doc["n_components"] == 2
    # a second save of the loaded group is byte-identical
    assert H.save(tmp_path / "again.json").read_text() == path.read_text()


def _write(tmp_path, doc) -> os.PathLike:
    p = tmp_path / "g.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


@pytest.fixture
def good_doc(o2):
    return o2.to_dict()


def test_truncated_json(tmp_path, o2):
    text = json.dumps(o2.to_dict())
    with pytest.raises(ValueError, match="malformed JSON"):
        DiscoveredGroup.load(_write(tmp_path, text[: len(text) // 2]))


def test_wrong_format_tag(tmp_path, good_doc):
    good_doc["format"] = "atlasd.group/2"
    with pytest.raises(ValueError, match="unsupported group format 'atlasd.group/2'"):
        DiscoveredGroup.load(_write(tmp_path, good_doc))
    del good_doc["format"]
    with pytest.raises(ValueError, match="unsupported group format None"):
        DiscoveredGroup.load(_write(tmp_path, good_doc))


def test_mismatched_shapes(tmp_path, good_doc):
    good_doc["cosets"] = torch.eye(3).tolist()
    with pytest.raises(ValueError, match="cosets act on R\\^3"):
        DiscoveredGroup.load(_write(tmp_path, good_doc))


def test_ragged_array(tmp_path, good_doc):
    good_doc["algebra"] = [[[0.0, 1.0], [1.0]]]
    with pytest.raises(ValueError, match="algebra is not a numeric array"):
        DiscoveredGroup.load(_write(tmp_path, good_doc))


def test_nan_entries(tmp_path, good_doc):
    text = json.dumps(good_doc).replace('"cosets": [[[1.0', '"cosets": [[[NaN', 1)
    with pytest.raises(ValueError, match="NaN is not a finite number"):
        DiscoveredGroup.load(_write(tmp_path, text))


def test_not_standard_form(tmp_path, good_doc):
    good_doc["algebra"] = (3 * so2()).tolist()
    with pytest.raises(ValueError, match="not in standard form"):
        DiscoveredGroup.load(_write(tmp_path, good_doc))


def test_declared_counts_must_match(tmp_path, good_doc):
    good_doc["n_components"] = 3
    with pytest.raises(ValueError, match="'n_components' says 3"):
        DiscoveredGroup.load(_write(tmp_path, good_doc))


def test_binary_garbage(tmp_path):
    p = tmp_path / "g.json"
    p.write_bytes(struct.pack("8d", *range(8)) + b"\xff\xfe")
    with pytest.raises(ValueError, match="not a UTF-8 text file|malformed JSON"):
        DiscoveredGroup.load(p)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    junk=st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=True) | st.text(max_size=5),
        lambda kids: (
            st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
        ),
        max_leaves=12,
    )
)
@pytest.mark.parametrize("base", ["empty", "valid"])
def test_fuzzed_documents_raise_value_error_only(tmp_path, junk, base):
    """Junk alone, or junk written over the fields of a valid O(2) file: loading either raises
    ValueError or returns a group that keeps every documented invariant and round-trips."""
    valid = json.loads(
        DiscoveredGroup(
            so2(), cosets=torch.stack([torch.eye(2), torch.diag(torch.tensor([1.0, -1.0]))])
        )
        .save(tmp_path / "valid.json")
        .read_text()
    )
    if isinstance(junk, dict):
        junk = {**(valid if base == "valid" else {}), "format": FORMAT, **junk}
    p = tmp_path / "fuzz.json"
    p.write_text(json.dumps(junk))
    try:
        g = DiscoveredGroup.load(p)
    except ValueError:
        return
    k, d = g.dim, g.d
    assert g.algebra.dtype == torch.float64 and g.algebra.shape == (k, d, d)
    assert torch.isfinite(g.algebra).all()
    m = g.n_components
    assert m >= 1 and g.cosets.shape == (m, d, d)
    assert torch.allclose(g.cosets[0].to(torch.float64), torch.eye(d, dtype=torch.float64))
    for rep in (g.in_rep, g.out_rep):
        assert rep is None or (rep.shape[0] == k and rep.shape[1] == rep.shape[2])
    again = DiscoveredGroup.load(g.save(tmp_path / "again.json"))
    assert torch.equal(again.algebra, g.algebra) and torch.equal(again.cosets, g.cosets)
    assert again.metadata == g.metadata


def test_failed_save_leaves_previous_file_intact(tmp_path, o2, monkeypatch):
    target = tmp_path / "group.json"
    o2.save(target)
    before = target.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        DiscoveredGroup(so13()).save(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["group.json"]


def test_metadata_with_nan_is_rejected_at_construction():
    with pytest.raises(ValueError, match="JSON-serialisable"):
        DiscoveredGroup(so2(), metadata={"loss": float("nan")})


# --- presentation -----------------------------------------------------------------------------


def test_repr_and_summary(o2):
    assert repr(o2) == "DiscoveredGroup(dim=1, d=2, n_components=2)"
    s = o2.summary()
    assert "dataset: toy" in s
    assert "[+0.000, -1.000]" in s and "[+1.000, +0.000]" in s
    assert "det -1.000" in s


def test_plot_writes_png(tmp_path, o2):
    p = o2.plot(tmp_path / "plots" / "group.png")
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    q = DiscoveredGroup(so13()).plot(tmp_path / "lorentz.png")
    assert q.stat().st_size > 10_000


def test_trivial_algebra_is_a_group_of_cosets(tmp_path):
    """k = 0 (no continuous symmetry): saves, loads, prints, plots and answers membership by
    its components alone."""
    flips = torch.stack([torch.eye(2), REFLECT, -REFLECT, -torch.eye(2)])
    G = DiscoveredGroup(torch.zeros(0, 2, 2), cosets=flips, in_rep=torch.zeros(0, 3, 3))
    assert (G.dim, G.d, G.n_components) == (0, 2, 4)
    assert G.in_rep is None  # no generators, nothing to represent
    assert repr(G) == "DiscoveredGroup(dim=0, d=2, n_components=4)"
    for i, h in enumerate(flips):
        assert G.component_of(h) == i
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    assert not G.contains(rotation) and not G.contains(1.01 * torch.eye(2))
    assert G.same_component(REFLECT, REFLECT) and not G.same_component(REFLECT, -REFLECT)
    samples = G.sample(64, generator=torch.Generator().manual_seed(0))
    assert all(any(torch.equal(s, h) for h in flips) for s in samples)
    assert G.similarity(torch.zeros(0, 2, 2)) == 1.0 and G.similarity(so2()) == 0.0
    path = G.save(tmp_path / "k0.json")
    doc = json.loads(path.read_text())
    assert (doc["dim"], doc["d"], doc["algebra"], doc["in_rep"]) == (0, 2, [], None)
    H = DiscoveredGroup.load(path)
    assert H.dim == 0 and torch.equal(H.cosets, G.cosets) and H.metadata == G.metadata
    assert "component 3 representative (det +1.000)" in H.summary()
    assert H.plot(tmp_path / "k0.png").stat().st_size > 10_000
    bad = {**doc, "d": 0}
    with pytest.raises(ValueError, match="an empty algebra needs 'd', a positive integer"):
        DiscoveredGroup.from_dict(bad)
