"""Stage 3: the discrete part of the group, one representative per connected component.

Candidates ``h`` (C, d, d), normalised to ``|det h| = 1``, are optimised so that ``h g0`` is a
symmetry for ``g0`` sampled from the identity component found in stage 2 (nothing is hard-coded:
the identity component *is* that algebra). A candidate is kept when its final loss is within an
absolute ``threshold`` of the identity's loss, measured on the same samples; kept candidates in
the same component are merged and each component is reported by its canonical representative
(atlasd.lie.canonical_coset_representative), the identity first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from atlasd import lie

__all__ = ["normalize_det_torch", "search_cosets"]

# score(h (C, d, d) float32, generator[, scale]) -> (C,) mean equivariance loss of h g0 over
# fresh samples, g0 drawn from the identity component at the given coefficient scale
Score = Callable[..., Tensor]


def normalize_det_torch(M: Tensor) -> Tensor:
    """Differentiable ``M / |det M|^(1/d)`` for (..., d, d)."""
    d = M.shape[-1]
    det = torch.linalg.det(M).abs().clamp_min(1e-12)
    return M / det[..., None, None] ** (1.0 / d)


def search_cosets(
    score: Score,
    algebra: Tensor,
    *,
    n_candidates: int = 16,
    steps: int = 60,
    lr: float = 0.05,
    threshold: float,
    reference: float | None = None,
    merge_tol: float = 0.15,
    eval_rounds: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Find coset representatives.

    Args:
        score: see ``Score``; must sample the identity component itself.
        algebra: (k, d, d) the identity component's generators (float64 standard form).
        n_candidates: random starting matrices (N(0, 1) entries, seeded).
        steps, lr: Adam on the candidates.
        threshold: absolute tolerance on ``loss(h) - reference`` for keeping a candidate.
        reference: the loss a genuine coset should reach; None uses the identity's own loss
            (measured like the candidates').
        merge_tol: relative tolerance of membership tests when merging candidates (discovered
            algebras are noisy, so this is looser than the exact-arithmetic default).
        eval_rounds: batches averaged for the final scores.

    Returns:
        dict with "cosets" (m, d, d) float64 (identity first), "identity_loss",
        "candidates" (list of dicts: matrix, loss, kept, component).
    """
    d = algebra.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    M = torch.randn(n_candidates, d, d, generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([M], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = score(normalize_det_torch(M), gen).sum()
        if not torch.isfinite(loss):
            raise FloatingPointError("coset search loss became NaN/Inf")
        loss.backward()
        opt.step()

    with torch.no_grad():
        H = normalize_det_torch(M.detach())
        eye = torch.eye(d, dtype=H.dtype)[None]
        allh = torch.cat([eye, H])
        totals = torch.zeros(allh.shape[0])
        for _ in range(eval_rounds):
            totals += score(allh, gen)
        losses = totals / eval_rounds
    identity_loss = float(losses[0])

    reps: list[Tensor] = [torch.eye(d, dtype=torch.float64)]
    records = []
    order = torch.argsort(losses[1:])
    for idx in order.tolist():
        h = H[idx].to(torch.float64)
        loss_h = float(losses[1 + idx])
        kept = loss_h - (identity_loss if reference is None else reference) <= threshold
        component = None
        if kept:
            rep = lie.canonical_coset_representative(h, algebra, tol=merge_tol)
            for j, existing in enumerate(reps):
                if lie.in_identity_component(
                    torch.linalg.solve(existing, rep), algebra, tol=merge_tol
                ):
                    component = j
                    break
            if component is None:
                # the canonical form is a claim about a *different* matrix (a signed permutation
                # times an identity-component element): it must pass the same test as h, or h
                # itself stands for its component
                with torch.no_grad():
                    rep_loss = (
                        sum(float(score(rep[None].to(H.dtype), gen)[0]) for _ in range(eval_rounds))
                        / eval_rounds
                    )
                if rep_loss - (identity_loss if reference is None else reference) > threshold:
                    rep = h
                reps.append(rep)
                component = len(reps) - 1
        records.append({"matrix": h.tolist(), "loss": loss_h, "kept": kept, "component": component})
    return {
        "cosets": torch.stack(reps),
        "identity_loss": identity_loss,
        "threshold": threshold,
        "reference_loss": identity_loss if reference is None else reference,
        "candidates": records,
    }
