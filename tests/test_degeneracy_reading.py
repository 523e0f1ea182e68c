"""The degeneracy report's reading (downstream/degeneracy/reading.py, summary.py): the
sentences it writes from the numbers, the paired log-ratios and the attainable LLC drop."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasd.downstream.degeneracy import paired_log_ratio


def _ratio_summary(sym: list[float], brk: list[float]) -> dict:
    from atlasd.downstream.degeneracy.summary import stats

    def entry(values):
        return {
            "symmetry_vs_control": [stats(values)],
            "symmetry_vs_control_hessian": [None],
            "symmetry_vs_flattest_control": [None],
        }

    return {"symmetric/baseline": entry(sym), "broken/baseline": entry(brk)}


@pytest.mark.parametrize(
    ("sym", "brk", "verdict", "special"),
    [
        ([0.3], [0.9], "one seed, no uncertainty", "is flatter than the shears"),
        (
            [0.30, 0.32],
            [0.90, 0.94],
            "2 seeds, paired: symmetric / broken = 0.337, 95% interval 0.295 to 0.385: "
            "relatively flatter with the symmetry, as predicted",
            "is flatter",
        ),
        ([0.30, 0.60], [0.50, 0.70], "2 seeds, paired: symmetric / broken = 0.717", "is flatter"),
        ([0.30, 0.60], [0.50, 0.70], "not resolved", "is flatter"),
        (
            [1.50, 1.52],
            [0.90, 0.94],
            "2 seeds, paired: symmetric / broken = 1.64, 95% interval 1.35 to 1.99: "
            "not relatively flatter",
            "is not flatter",
        ),
        # digits-like: the seeds disagree 1.5x on the level, but agree on the change, which
        # 2 sd over seeds of the unpaired means would not resolve
        (
            [0.13, 0.20, 0.16],
            [0.09, 0.13, 0.11],
            "3 seeds, paired: symmetric / broken = 1.48, 95% interval 1.36 to 1.61: "
            "not relatively flatter",
            "is flatter",
        ),
    ],
)
def test_control_reading_states_what_the_ratios_show(sym, brk, verdict, special):
    """The reading's sentence follows the numbers: resolved only when the 95% interval of the
    per-seed paired ratio excludes 1, with the direction of the change, and whether the
    symmetry's direction beats the shears."""
    from atlasd.downstream.degeneracy.reading import control_reading

    (line,) = control_reading(_ratio_summary(sym, brk))
    assert verdict in line and special in line
    assert line.startswith(
        "Generator 0 against shears on the same weights (Gauss-Newton, mean of the shears)"
    )


def test_flattest_control_ratio_uses_the_least_curved_shear_per_run():
    """One shear far stiffer than the other dominates the mean; the conservative ratio divides
    by the smaller one, per run, and skips runs without the direction."""
    from atlasd.downstream.degeneracy.summary import flattest_control_stats

    def run(sym, controls, available=True):
        return {
            "symmetry_directions": [{"available": available, "curvature": sym}],
            "control_directions": [{"available": True, "curvature": c} for c in controls],
        }

    stats = flattest_control_stats(
        [run(216.0, [2e5, 211.0]), run(377.0, [2.1e5, 976.0])], "curvature"
    )
    assert stats[0]["values"] == pytest.approx([216.0 / 211.0, 377.0 / 976.0])
    assert flattest_control_stats([run(1.0, [2.0], available=False)], "curvature") == [None]


def test_paired_log_ratio_is_students_interval_on_the_log_ratios():
    from scipy.stats import t as student_t

    out = paired_log_ratio([2.0, 8.0], [1.0, 2.0])
    logs = [math.log(2.0), math.log(4.0)]
    half = student_t.ppf(0.975, 1) * abs(logs[1] - logs[0]) / math.sqrt(2) / math.sqrt(2)
    assert out["n"] == 2
    assert out["ratio"] == pytest.approx(2**1.5)
    assert out["low"] == pytest.approx(math.exp(1.5 * math.log(2) - half))
    assert out["high"] == pytest.approx(math.exp(1.5 * math.log(2) + half))
    # a non-finite or non-positive pair is dropped; fewer than 2 pairs or unequal lists: None
    assert paired_log_ratio([2.0, 8.0, math.nan], [1.0, 2.0, 1.0])["n"] == 2
    assert paired_log_ratio([2.0, 0.0], [1.0, 2.0]) is None
    assert paired_log_ratio([2.0], [1.0]) is None
    assert paired_log_ratio([2.0, 3.0], [1.0]) is None


@pytest.mark.parametrize(
    ("attainable", "stderr", "verdict"),
    [
        (0.003, 0.7, "below the LLC's resolution even without the symmetry"),
        (0.29, 3.8, "cannot resolve it"),
        (0.29, 0.05, "within the measurement's resolution"),
    ],
)
def test_attainable_reading_says_whether_the_llc_can_see_the_symmetry(attainable, stderr, verdict):
    from atlasd.downstream.degeneracy.reading import attainable_reading

    line = attainable_reading(
        {"attainable_drop": attainable, "quadratic_drop": 0.5 * attainable, "stderr": stderr},
        206.0,
    )
    assert verdict in line
    assert f"at most {attainable:.3f}" in line and "gamma = 206" in line


@given(
    cs=st.floats(1e-4, 1e4),
    cb=st.floats(1e-4, 1e4),
    n_beta=st.floats(1.0, 1e4),
)
@settings(max_examples=50, deadline=None)
def test_best_gamma_drop_is_the_maximum_over_gamma(cs, cb, n_beta):
    """The closed form equals a brute-force maximum of (w(c_b) - w(c_s)) / 2 over a fine log
    grid of gamma, and no grid point exceeds it."""
    from atlasd.downstream.degeneracy.ranks import effective_weight
    from atlasd.downstream.degeneracy.summary import best_gamma_drop

    def run(c):
        return {"symmetry_directions": [{"available": True, "curvature": c}]}

    best = best_gamma_drop(run(cs), run(cb))
    grid = [10 ** (k / 200) for k in range(-1600, 2401)]
    values = [(effective_weight(cb, n_beta, g) - effective_weight(cs, n_beta, g)) / 2 for g in grid]
    if cb >= cs:
        assert max(values) <= best + 1e-12
        assert max(values) == pytest.approx(best, rel=1e-3, abs=1e-9)
    else:
        assert best <= 0
    assert best_gamma_drop(run(cs), {"symmetry_directions": [{"available": False}]}) is None
