"""Benchmark: one alternating epoch of the heat task, the unit the reference implementation is
timed in (../shared/REFERENCE_VALUES.md: about 70 s wall, 117 CPU-s on a 2-core CPU).

One epoch = a predictor pass (train the 19 chart CNNs over N=1000 samples, batch 16) plus a basis
pass (fit one generator over the same 1000 samples, batch 16). Run with

    .venv/bin/pytest tests/benchmarks -m benchmark --benchmark-enable -s
"""

from __future__ import annotations

import time

import pytest
import torch

from atlasd.atlas import crop
from atlasd.datasets.heat import build_heat_atlas, generate_heat
from atlasd.discovery.basis import LieBasis, disc_mask, local_equivariance_loss
from atlasd.discovery.learner import BasisModule, fit_basis
from atlasd.discovery.predictors import ChartCNN
from atlasd.discovery.training import train_predictors

pytestmark = pytest.mark.benchmark

N, BATCH, IN_R, OUT_R = 1000, 16, 14, 10
REFERENCE_EPOCH_S = 71.0


def _conv_flops_per_chart(model: ChartCNN, size: int) -> float:
    """Multiply-adds x 2 of one chart network's forward pass on a size x size patch."""
    flops, s = 0.0, size
    widths = [model.in_channels] + [model.hidden] * (model.n_layers - 1) + [model.out_channels]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        s -= model.kernel_size - 1
        flops += 2.0 * a * b * model.kernel_size**2 * s * s
    return flops


def test_one_alternating_epoch(benchmark):
    # 10% of the samples are held out for the predictor's validation: N are trained on
    x, y = generate_heat(round(N / 0.9), seed=0)
    atlas = build_heat_atlas(1)
    px = atlas.extract(x)
    py = crop(atlas.extract(y), OUT_R)
    K = atlas.n_charts
    times: dict[str, float] = {}

    def epoch():
        model = ChartCNN.for_radii(K, 1, 1, IN_R, OUT_R)
        t0 = time.perf_counter()
        train_predictors(model, px, py, max_epochs=1, val_fraction=0.1, patience=1, seed=0)
        times["predictor"] = time.perf_counter() - t0
        with torch.no_grad():
            base = torch.cat([model(px[i : i + 250]) for i in range(0, N, 250)])
        px_basis = px[:N]
        mask = disc_mask(OUT_R)

        def objective(batch, g, r_in, r_out):
            return local_equivariance_loss(model, batch[0], batch[1], g, mask=mask)

        module = BasisModule(
            LieBasis(1, 2, generator=torch.Generator().manual_seed(0)),
            objective,
            lambda b: tuple(b[0].shape[:2]),
            lr=0.03,
        )
        t0 = time.perf_counter()
        fit_basis(module, (px_basis, base), batch_size=BATCH, epochs=1)
        times["basis"] = time.perf_counter() - t0

    cpu0 = time.process_time()
    benchmark.pedantic(epoch, rounds=1, iterations=1)
    cpu = time.process_time() - cpu0
    wall = times["predictor"] + times["basis"]
    model = ChartCNN.for_radii(K, 1, 1, IN_R, OUT_R)
    fwd = _conv_flops_per_chart(model, 2 * IN_R + 1) * K  # per field
    # training and input-gradient passes each cost about 3 forward passes
    gflops = 3 * fwd * N * 2 / wall / 1e9
    print(
        f"\nheat epoch (N={N}, K={K}): predictor pass {times['predictor']:.1f} s "
        f"({N / times['predictor']:.0f} fields/s), basis pass {times['basis']:.1f} s "
        f"({N / times['basis']:.0f} fields/s), total {wall:.1f} s wall, {cpu:.0f} CPU-s, "
        f"{gflops:.1f} effective GFLOP/s; reference {REFERENCE_EPOCH_S:.0f} s -> "
        f"{REFERENCE_EPOCH_S / wall:.1f}x"
    )
    benchmark.extra_info.update(
        {**times, "effective_gflops": gflops, "speedup_vs_reference": REFERENCE_EPOCH_S / wall}
    )
    assert wall < REFERENCE_EPOCH_S / 2, f"epoch took {wall:.1f} s, not 2x faster than reference"
