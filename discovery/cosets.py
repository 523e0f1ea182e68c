"""Stage 3: the discrete part of the group, one representative per connected component.

Candidates ``h`` (C, d, d), normalised to ``|det h| = 1``, are optimised so that ``h g0`` is a
symmetry for ``g0`` sampled from the identity component G0 found in stage 2 (nothing is
hard-coded: the identity component *is* that algebra). Every loss is *paired*: the score puts the
identity next to the candidates on the same samples and the same ``g0``, so the excess
``Delta(h) = loss(h g0) - loss(g0)`` carries no sampling noise of its own for an exact symmetry.

Decision rule, with every tolerance measured on the problem itself (no per-case setting):

- ``loss_I``: the identity's loss at the working scale, the error floor of the discovered
  symmetry (algebra error plus predictor error).
- Keep threshold ``tau_keep = max(loss_I, Delta_G0) + 3 se``: ``Delta_G0`` is the largest excess of
  identity-component elements drawn one sampling width away (elements we know are symmetries),
  ``se`` the standard error of the candidate's excess over the evaluation rounds. A candidate whose
  extra error is no larger than what the identity component itself shows is as much a symmetry.
- Loss-to-distance calibration: ``Delta_off(t)``, the excess of ``exp(t E)`` for random unit
  directions ``E`` orthogonal to the algebra (relative displacement ``t`` off the group), on a
  geometric grid of ``t``. It converts an excess loss into the matrix distance that explains it.
- Merge tolerance of a candidate ``h`` with canonical form ``P`` (a signed permutation,
  :func:`atlasd.lie.canonical_coset_representative`), ``g = P^-1 h``:
  ``tau(h) = t(Delta(h)) + delta (1 + |g - I| / |g|)``, where ``t(.)`` inverts the calibration
  (how far off the group the candidate itself may be) and ``delta = t(loss_I) / s_rel`` is the
  algebra's own relative error per unit of group displacement (its loss at the working scale,
  whose relative displacement is ``s_rel``), which accumulates along the way from the identity to
  ``g``. It is capped at ``MERGE_CAP`` = 0.5: distinct components of the groups met here lie at
  relative distance >= 1 from each other (``min |R - diag(1, -1)| / |diag(1, -1)| = sqrt 2`` for
  O(2); O(1,3) and the squeeze group alike), so half of that cannot join two of them.

Procedure: Adam from random starts (``steps``). A candidate that passes the keep threshold is
merged into a component it lies in (tolerance ``tau(h)``); any candidate whose excess a
displacement under a quarter of the cap explains is snapped to its canonical form ``P``, and ``P``
itself (an exact matrix) is scored: it founds a component when it passes and lies in none found.
Candidates left unresolved are polished (per-candidate Adam whose step halves when the loss stops
falling, until the loss is good enough, the step is 1/32 of its start (a quarter of the search
step), or ``polish_steps``) and
resolved again. A kept candidate with no canonical form that passes stands for its own component
only if it is farther than the cap from every component found (a noisy element of G0 must not
become a spurious component). The kept set is re-tested at the end on fresh batches: every
representative must pass again and no two may share a component (``h_i^-1 h_j`` not in G0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from atlasd import lie

__all__ = ["MERGE_CAP", "normalize_det_torch", "search_cosets"]

# score(h (C, d, d) float32, generator[, scale]) -> (C,) mean equivariance loss of h g0 over fresh
# samples, g0 drawn from the identity component at the given coefficient scale. Within one call
# every candidate sees the same samples and the same g0 (paired comparisons).
Score = Callable[..., Tensor]

MERGE_CAP = 0.5
MAX_COND = 10.0


def normalize_det_torch(M: Tensor) -> Tensor:
    """Differentiable ``M / |det M|^(1/d)`` for (..., d, d)."""
    d = M.shape[-1]
    det = torch.linalg.det(M).abs().clamp_min(1e-12)
    return M / det[..., None, None] ** (1.0 / d)


def _paired(score: Score, H: Tensor, gen: torch.Generator, rounds: int) -> tuple[Tensor, Tensor]:
    """Losses of ``[I, *H]`` on shared samples over ``rounds`` fresh batches.

    Args:
        H: (C, d, d) float32.

    Returns:
        losses (C + 1,) means over the rounds (identity first); excess_se (C,) standard error of
        ``loss(h) - loss(I)`` over the rounds.
    """
    eye = torch.eye(H.shape[-1], dtype=H.dtype)[None]
    allh = torch.cat([eye, H])
    with torch.no_grad():
        per = torch.stack([score(allh, gen).double() for _ in range(rounds)])  # (R, C + 1)
    excess = per[:, 1:] - per[:, :1]
    se = excess.std(0, unbiased=True) / math.sqrt(rounds) if rounds > 1 else excess[0] * 0
    return per.mean(0), se


def _off_directions(algebra: Tensor, m: int, gen: torch.Generator) -> Tensor:
    """(m, d, d) random traceless directions orthogonal (Frobenius) to the algebra, with
    ``|E|_F = sqrt d`` so that ``exp(t E)`` is at relative distance ~t from the identity."""
    d = algebra.shape[-1]
    E = torch.randn(m, d, d, generator=gen, dtype=torch.float64)
    basis = [torch.eye(d, dtype=torch.float64).flatten() / math.sqrt(d)]
    Q = lie.orthonormal_basis(algebra).flatten(1)
    V = torch.cat([torch.stack(basis), Q])
    V = torch.linalg.qr(V.T).Q.T  # orthonormal rows spanning {I} + algebra
    flat = E.flatten(1)
    flat = flat - (flat @ V.T) @ V
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12) * math.sqrt(d)
    return flat.view(m, d, d)


class _Calibration:
    """Monotone map from an excess loss to the off-group displacement that explains it."""

    def __init__(self, t: Tensor, excess: Tensor) -> None:
        # the envelope is made increasing: a loss cannot argue for a *smaller* displacement
        self.t = t.double()
        self.excess = torch.cummax(excess.double().clamp_min(1e-30), 0).values

    def distance(self, delta: float) -> float:
        """Relative displacement t with ``Delta_off(t) = delta`` (log-log interpolation, linear
        extrapolation below the grid, ``inf`` above it)."""
        if delta <= 0:
            return 0.0
        t, e = self.t, self.excess
        if delta <= float(e[0]):
            return float(t[0]) * delta / float(e[0])
        if delta > float(e[-1]):
            return math.inf
        j = int(torch.searchsorted(e, torch.tensor(delta, dtype=e.dtype)))
        j = min(max(j, 1), len(t) - 1)
        lt, le = t.log(), e.log()
        w = (math.log(delta) - float(le[j - 1])) / max(float(le[j] - le[j - 1]), 1e-12)
        return float(torch.exp(lt[j - 1] + w * (lt[j] - lt[j - 1])))

    def bound(self) -> float:
        """The excess of a displacement of ``MERGE_CAP``: larger excesses cannot be snapped."""
        return float(self.excess[-1])


def _polish(
    score: Score, M: Tensor, gen: torch.Generator, lr: float, max_steps: int, good: float
) -> tuple[Tensor, int]:
    """Per-candidate Adam whose step halves when the candidate's loss stops falling.

    The loss of each candidate depends only on its own matrix (samples are shared, not mixed),
    so one summed backward pass gives every candidate its own gradient, and the step sizes are a
    (C,) tensor. A candidate whose step fell below lr / 128, or whose averaged loss is already
    ``good`` (what a kept candidate needs), is frozen; the loop ends when all are.

    Args:
        M: (C, d, d) float32 starting points.

    Returns:
        the polished matrices (C, d, d) and the number of steps run.
    """
    C = M.shape[0]
    M = M.detach().clone().requires_grad_(True)
    m1, m2 = torch.zeros_like(M), torch.zeros_like(M)
    # a fresh Adam moves every entry by ~its step at once: start below the search step so the
    # polish does not throw converged candidates back out
    step_size = torch.full((C,), lr / 4)
    best = torch.full((C,), math.inf)
    ema = torch.full((C,), math.nan)
    since = torch.zeros(C, dtype=torch.long)
    b1, b2, window = 0.9, 0.999, 8
    steps = 0
    for steps in range(1, max_steps + 1):
        active = (step_size >= lr / 128) & ~(ema <= good)
        if not bool(active.any()):
            break
        loss = score(normalize_det_torch(M), gen)
        if not bool(torch.isfinite(loss).all()):
            raise FloatingPointError("coset search loss became NaN/Inf")
        (grad,) = torch.autograd.grad(loss.sum(), M)
        with torch.no_grad():
            m1.mul_(b1).add_(grad, alpha=1 - b1)
            m2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            upd = (m1 / (1 - b1**steps)) / ((m2 / (1 - b2**steps)).sqrt() + 1e-8)
            M -= (step_size * active)[:, None, None] * upd
            cur = loss.detach().float()
            # an average over fresh batches: single-batch losses are too noisy to call a plateau
            ema = torch.where(torch.isnan(ema), cur, 0.7 * ema + 0.3 * cur)
            improved = ema < best * (1 - 1e-3)
            best = torch.where(improved, ema, best)
            since = torch.where(improved, torch.zeros_like(since), since + 1)
            plateau = since >= window
            step_size = torch.where(plateau, step_size / 2, step_size)
            since = torch.where(plateau, torch.zeros_like(since), since)
    return M.detach(), steps


class _Search:
    """The state of one search after the Adam phase: the measured tolerances (module
    docstring), the components found so far and the record of every candidate decided."""

    def __init__(
        self,
        score: Score,
        algebra: Tensor,
        gen: torch.Generator,
        dtype: torch.dtype,
        *,
        threshold: float | None,
        reference: float | None,
        merge_tol: float | None,
        eval_rounds: int,
        scale: float,
    ) -> None:
        self.score, self.algebra, self.gen, self.dtype = score, algebra, gen, dtype
        self.threshold, self.merge_tol, self.eval_rounds = threshold, merge_tol, eval_rounds
        d, k = algebra.shape[-1], algebra.shape[0]
        self.d = d
        # --- measured quantities: the identity's loss, identity-component spread, calibration
        n_ref = 8
        self.t_grid = MERGE_CAP * 2.0 ** -torch.arange(9, -1, -1, dtype=torch.float64)
        g1 = lie.sample_group(algebra, n_ref, scale=scale, generator=gen)
        E = _off_directions(algebra, 4, gen)
        off = torch.linalg.matrix_exp(self.t_grid[:, None, None, None] * E[None]).reshape(-1, d, d)
        probes = lie.normalize_det(torch.cat([g1, off])).to(dtype)
        losses, _ = _paired(score, probes, gen, eval_rounds)
        self.identity_loss = float(losses[0])
        excess = losses[1:] - losses[0]
        self.spread = float(excess[:n_ref].max())
        self.calib = _Calibration(self.t_grid, excess[n_ref:].view(len(self.t_grid), -1).mean(1))
        if threshold is None:
            self.tau_keep = max(self.identity_loss, self.spread)
            self.ref = self.identity_loss
        else:
            self.tau_keep = threshold
            self.ref = self.identity_loss if reference is None else reference
        s_rel = scale * math.sqrt(k / d)
        self.delta = min(self.calib.distance(self.identity_loss) / max(s_rel, 1e-12), MERGE_CAP)
        self.reps: list[Tensor] = [torch.eye(d, dtype=torch.float64)]
        self.rep_canonical: list[bool] = [True]
        self.records: list[dict[str, Any]] = []
        self.rep_cache: dict[bytes, tuple[float, float]] = {}

    def passes(self, loss_h: float, se_h: float) -> bool:
        noise = 3 * se_h if self.threshold is None else 0.0
        return loss_h - self.ref <= self.tau_keep + noise

    def tolerance(self, h: Tensor, P: Tensor, excess_h: float) -> float:
        if self.merge_tol is not None:
            return self.merge_tol
        g = torch.linalg.solve(P, h)
        dist = float((g - torch.eye(self.d, dtype=g.dtype)).norm() / g.norm())
        return min(MERGE_CAP, self.calib.distance(max(excess_h, 0.0)) + self.delta * (1 + dist))

    def score_exact(self, P: Tensor) -> tuple[float, float]:
        key = P.numpy().tobytes()
        if key not in self.rep_cache:
            lp, sp = _paired(self.score, P[None].to(self.dtype), self.gen, self.eval_rounds)
            self.rep_cache[key] = (float(lp[1]), float(sp[0]))
        return self.rep_cache[key]

    def component_of(self, h: Tensor, tol: float) -> int | None:
        for j, existing in enumerate(self.reps):
            if lie.in_identity_component(torch.linalg.solve(existing, h), self.algebra, tol=tol):
                return j
        return None

    def _add(self, h: Tensor, canonical: bool) -> int:
        self.reps.append(h)
        self.rep_canonical.append(canonical)
        return len(self.reps) - 1

    def _canonical(self, h: Tensor, ex: float) -> tuple[Tensor | None, float]:
        """The exact canonical form of ``h``'s coset (None when there is none or ``h`` is not
        in it) and the merge tolerance of ``h`` measured from it."""
        eye = torch.eye(self.d, dtype=torch.float64)
        P = lie.canonical_coset_representative(h, self.algebra, tol=MERGE_CAP)
        # canonical_coset_representative returns h itself when no signed permutation
        # lies in its coset: that is no exact form
        if not bool(((P.abs() == 1) | (P == 0)).all()):
            P = None
        tol = self.tolerance(h, eye if P is None else P, ex)
        if P is not None and not lie.in_identity_component(
            torch.linalg.solve(P, h), self.algebra, tol=tol
        ):
            P = None
        return P, tol

    def resolve(self, H: Tensor, final: bool) -> tuple[list[bool], list[bool]]:
        """Snap, test and merge each candidate. Returns, per candidate, whether it was
        resolved (merged or kept) and whether it is promising (excess under the cap's)."""
        H = normalize_det_torch(H)
        H64 = H.to(torch.float64)
        losses_h, se_h = _paired(self.score, H, self.gen, self.eval_rounds)
        order = torch.argsort(losses_h[1:]).tolist()
        resolved = [False] * H.shape[0]
        bound = self.calib.bound()
        promising = [float(losses_h[1 + i] - losses_h[0]) <= bound for i in range(H.shape[0])]
        for i in order:
            h, loss_h, ex = H64[i], float(losses_h[1 + i]), float(losses_h[1 + i] - losses_h[0])
            rec = {"matrix": h.tolist(), "loss": loss_h, "excess": ex, "kept": False}
            rec.update(component=None, canonical=None, merge_tol=None)
            # an excess that no displacement under the cap explains: no component is near
            if ex > bound and self.threshold is None:
                self.records.append(rec)
                continue
            # only a candidate that is itself a symmetry is merged on its own evidence; the rest
            # count only through an exact canonical form that passes (else they are polished)
            passing = self.passes(loss_h, float(se_h[i]))
            tol = self.tolerance(h, torch.eye(self.d, dtype=torch.float64), ex)
            j = self.component_of(h, tol) if passing else None
            # the scan over signed permutations is the costly step: in the first pass only
            # candidates already close to the group (a quarter of the cap) are snapped
            if j is None and (final or self.calib.distance(max(ex, 0.0)) <= MERGE_CAP / 4):
                P, tol = self._canonical(h, ex)
                if P is not None:
                    j = self.component_of(P, MERGE_CAP)  # two exact forms: same or >= 1 apart
                    if j is None and self.passes(*self.score_exact(P)):
                        j = self._add(P, True)
                    rec["canonical"] = P.tolist()
                if j is None and passing:
                    # no canonical form: h stands for its component only when it is clearly
                    # apart from every component found (farther than the cap)
                    # and only when not degenerate: a matrix that squashes space (condition
                    # number > MAX_COND) can fake a low loss on finite charts
                    cond = float(torch.linalg.cond(h))
                    if final and cond <= MAX_COND and self.component_of(h, MERGE_CAP) is None:
                        j = self._add(h, False)
            rec.update(merge_tol=tol, component=j, kept=j is not None)
            resolved[i] = j is not None
            if final or resolved[i] or not promising[i]:
                self.records.append(rec)
        return resolved, promising

    def retest(self) -> tuple[list[Tensor], list[float]]:
        """The kept set re-tested on fresh batches: every representative passes again and no
        two share a component (``h_i^-1 h_j`` not in G0). Returns them and their losses."""
        reps = self.reps
        final_reps, final_scores = [reps[0]], []
        if len(reps) > 1:
            stacked = torch.stack(reps[1:]).to(self.dtype)
            lr_, se_r = _paired(self.score, stacked, self.gen, self.eval_rounds)
            for j, h in enumerate(reps[1:]):
                ok = self.passes(float(lr_[1 + j]), float(se_r[j]))
                final_scores.append(float(lr_[1 + j]))
                same = any(
                    lie.in_identity_component(torch.linalg.solve(e, h), self.algebra, tol=MERGE_CAP)
                    for e in final_reps
                )
                if ok and not same:
                    final_reps.append(h)
        return final_reps, final_scores


def search_cosets(
    score: Score,
    algebra: Tensor,
    *,
    n_candidates: int = 16,
    steps: int = 60,
    lr: float = 0.05,
    polish_steps: int = 200,
    threshold: float | None = None,
    reference: float | None = None,
    merge_tol: float | None = None,
    eval_rounds: int = 4,
    scale: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Find coset representatives (see the module docstring for the rule and its tolerances).

    Args:
        score: see ``Score``; must sample the identity component itself.
        algebra: (k, d, d) the identity component's generators (float64 standard form).
        n_candidates: random starting matrices (N(0, 1) entries, seeded).
        steps, lr: Adam on all candidates from their random starts.
        polish_steps: cap on the plateau-stopped polish of unresolved candidates.
        threshold: None derives the keep threshold (module docstring); a number replaces it, as
            an absolute tolerance on ``loss(h) - reference``.
        reference: with ``threshold``: the loss a symmetry must reach (None: the identity's).
        merge_tol: None derives each candidate's merge tolerance; a number fixes it.
        eval_rounds: fresh batches averaged for every decision.
        scale: the coefficient scale the score samples G0 at (for the algebra-error estimate).

    Returns:
        dict with "cosets" (m, d, d) float64 (identity first), "identity_loss",
        "keep_threshold", "algebra_error", "calibration", "candidates" (list of dicts: matrix,
        loss, excess, merge_tol, canonical, kept, component), "polish_steps".
    """
    algebra = torch.as_tensor(algebra, dtype=torch.float64)
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
    M = M.detach()

    search = _Search(
        score,
        algebra,
        gen,
        M.dtype,
        threshold=threshold,
        reference=reference,
        merge_tol=merge_tol,
        eval_rounds=eval_rounds,
        scale=scale,
    )
    resolved, promising = search.resolve(M, final=False)
    todo = [i for i, r in enumerate(resolved) if not r and promising[i]]
    n_polish = 0
    if todo:
        tau_keep, ref = search.tau_keep, search.ref
        good = ref + (tau_keep if threshold is not None else tau_keep / 2)
        polished, n_polish = _polish(score, M[todo], gen, lr, polish_steps, good)
        search.resolve(polished, final=True)
    final_reps, final_scores = search.retest()
    return {
        "cosets": torch.stack(final_reps),
        "identity_loss": search.identity_loss,
        "threshold": search.tau_keep,
        "reference_loss": search.ref,
        "identity_component_spread": search.spread,
        "algebra_error": search.delta,
        "calibration": {"t": search.t_grid.tolist(), "excess": search.calib.excess.tolist()},
        "final_losses": final_scores,
        "polish_steps": n_polish,
        "candidates": search.records,
    }
