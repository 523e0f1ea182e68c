"""Theoretical learning coefficients (real log canonical thresholds) of linear networks.

These are the ground truth that the LLC estimator is calibrated against (see
``../shared/REFERENCE_VALUES.md``, which states both formulas).

* :func:`rrr_lambda` -- two-layer linear networks, i.e. reduced-rank regression:
  M. Aoyagi and S. Watanabe, "Stochastic complexities of reduced rank regression in Bayesian
  estimation", Neural Networks 18(7):924-933, 2005 (Theorem 1 / Main Theorem).
* :func:`deep_linear_lambda` -- linear networks of any depth:
  M. Aoyagi, "Consideration on the learning efficiency of multiple-layered neural networks with
  linear units", Neural Networks 172:106132, 2024 (Main Theorem).

Widths are listed input first: ``(H_1, ..., H_{L+1})`` with ``H_1`` the input and ``H_{L+1}`` the
output dimension; ``r`` is the rank of the true end-to-end matrix. Both formulas give the
coefficient of ``log n`` in the free energy of the Bayesian posterior (lambda), i.e. the value
that ``n_beta (E[L_n(w)] - L_n(w*))`` estimates at the most singular true parameter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import torch
from torch import nn

__all__ = ["deep_linear_lambda", "linear_network", "regression_data", "rrr_lambda"]


def rrr_lambda(m: int, h: int, n: int, r: int) -> float:
    """Aoyagi & Watanabe (2005): lambda of reduced-rank regression ``x (m) -> h -> n`` at rank r.

    Case analysis of the main theorem (``m`` inputs, ``h`` hidden units, ``n`` outputs,
    ``0 <= r <= min(m, h, n)``).
    """
    if not 0 <= r <= min(m, h, n):
        raise ValueError(f"rank r={r} must lie in 0..min(m, h, n) = {min(m, h, n)}")
    if n + r <= m + h and m + r <= n + h and h + r <= m + n:
        value = Fraction(2 * (h + r) * (m + n) - (m - n) ** 2 - (h + r) ** 2, 8)
        if (m + h + n + r) % 2 == 1:
            value += Fraction(1, 8)
        return float(value)
    if m + h < n + r:
        return float(Fraction(h * m - h * r + n * r, 2))
    if n + h < m + r:
        return float(Fraction(h * n - h * r + m * r, 2))
    # remaining case: m + n < h + r
    return float(Fraction(m * n, 2))


def deep_linear_lambda(widths: Sequence[int], r: int) -> float:
    """Aoyagi (2024): lambda of a deep linear network with ``widths = (H_1, ..., H_{L+1})``.

    With ``M_j = H_j - r``, ``S`` is the smallest set of ``l + 1 >= 2`` indices of the smallest
    ``M_j`` (grown in sorted order) with ``max_S M_j < min_{not S} M_k``,
    ``sum_S M_j >= l max_S M_j`` and ``sum_S M_j < l min_{not S} M_k``. With ``s = sum_S M_j``,
    ``Mbar = ceil(s / l)`` and ``a = s - (Mbar - 1) l``::

        lambda = (-r^2 + r (H_1 + H_{L+1})) / 2 + a (l - a) / (4 l)
                 - (l (l - 1) / 4) (s / l)^2 + (1/2) sum_{i < j in S} M_i M_j

    Exact rational arithmetic throughout.
    """
    widths = [int(w) for w in widths]
    if len(widths) < 3:
        raise ValueError(f"need at least one hidden layer (3 widths), got {widths}")
    if not 0 <= r <= min(widths):
        raise ValueError(f"rank r={r} must lie in 0..min(widths) = {min(widths)}")
    ms = sorted(w - r for w in widths)
    for size in range(2, len(ms) + 1):
        chosen, rest = ms[:size], ms[size:]
        ell = size - 1
        s = sum(chosen)
        rest_min = rest[0] if rest else math.inf
        if max(chosen) < rest_min and s >= ell * max(chosen) and s < ell * rest_min:
            break
    else:  # the full set always satisfies the conditions; reaching here is a bug
        raise AssertionError(f"no admissible index set for widths {widths}, r={r}")
    mbar = -(-s // ell)  # ceil(s / l) for integers
    a = s - (mbar - 1) * ell
    pair_sum = Fraction(s * s - sum(m * m for m in chosen), 2)  # sum_{i<j} M_i M_j
    value = (
        Fraction(-(r * r) + r * (widths[0] + widths[-1]), 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(s, ell) ** 2
        + pair_sum / 2
    )
    return float(value)


# --- the calibration problems --------------------------------------------------------------------


def linear_network(
    widths: Sequence[int], r: int, seed: int, smin: float = 1.0, smax: float = 2.0
) -> nn.Sequential:
    """A true parameter ``w*`` of rank ``r``: bias-free linear layers ``widths[0] -> ... ->
    widths[-1]`` (float32) whose end-to-end matrix has ``r`` singular values drawn uniformly in
    ``[smin, smax]`` and random singular vectors, factorised in a balanced way (every factor has
    rank exactly ``r`` and singular values ``s^(1/L)``). This is the most singular point of the
    set of true parameters, where Aoyagi's lambda is attained; it is also where a network trained
    from a small initialisation ends up (balanced factors)."""
    gen = torch.Generator().manual_seed(seed)
    depth = len(widths) - 1
    s = torch.empty(r).uniform_(smin, smax, generator=gen)
    frames = [torch.linalg.qr(torch.randn(w, max(r, 1), generator=gen))[0][:, :r] for w in widths]
    layers = []
    for i in range(depth):
        layer = nn.Linear(widths[i], widths[i + 1], bias=False)
        with torch.no_grad():
            layer.weight.copy_(frames[i + 1] @ torch.diag(s ** (1.0 / depth)) @ frames[i].T)
        layers.append(layer)
    return nn.Sequential(*layers)


def regression_data(
    model: nn.Module, n_in: int, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x ~ N(0, I)``, ``y = model(x) + N(0, I)``: unit noise variance, the convention of
    ``estimate_llc``'s default loss."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=gen)
    with torch.no_grad():
        y = model(x)
    return x, y + torch.randn(y.shape, generator=gen)
