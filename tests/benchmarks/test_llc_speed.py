"""Benchmark: SGLD steps of estimate_llc, vectorised over chains (one vmapped call per step)
against running the same chains one after another. Run with

    .venv/bin/pytest tests/benchmarks/test_llc_speed.py -m benchmark --benchmark-enable -s

Measured on the shared 2-core CPU (5-3-5 linear network, batch 500, float32), CPU ms per step:
light load (1.2): 1 chain 1.9, 4 chains 3.1 (2.4x faster than 4 sequential chains), 16 chains 4.6
(6.6x); load ~3: 2.75, 4.23 (2.6x), 6.35 (6.9x). A default estimate (4 chains x 3000 steps)
takes about 9-11 CPU-s. Per step the cost is mostly torch.func's per-call overhead, not FLOPs.
"""

from __future__ import annotations

import time

import pytest
from known_llc import linear_network, regression_data

from atlasd.downstream import estimate_llc

pytestmark = pytest.mark.benchmark

STEPS = 600


def _ms_per_step(model, data, chains: int) -> float:
    est = estimate_llc(model, data, chains=chains, draws=STEPS, burn_in=0, check="off")
    return est.cpu_s / STEPS * 1e3


def test_vectorised_chains_beat_sequential_chains(benchmark):
    model = linear_network([5, 3, 5], 2, seed=0)
    data = regression_data(model, 5, 10_000, seed=1)
    _ms_per_step(model, data, 1)  # warm-up: the first torch.func call imports and traces
    timings: dict[int, float] = {}

    def run():
        for chains in (1, 4, 16):
            timings[chains] = _ms_per_step(model, data, chains)

    start = time.process_time()
    benchmark.pedantic(run, rounds=1, iterations=1)
    cpu = time.process_time() - start
    speedups = {c: c * timings[1] / timings[c] for c in (4, 16)}
    print(
        "\nSGLD ms/step (CPU): "
        + ", ".join(f"{c} chains {t:.2f}" for c, t in timings.items())
        + f"; vectorised vs sequential: 4 chains {speedups[4]:.1f}x, 16 chains "
        f"{speedups[16]:.1f}x; total {cpu:.1f} CPU-s"
    )
    benchmark.extra_info.update({"ms_per_step": timings, "speedup": speedups})
    assert speedups[4] > 1.5 and speedups[16] > 3.0
