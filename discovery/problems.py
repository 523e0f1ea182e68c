"""What differs between the three discovery problems: their inputs, predictor, objective,
basis and coset score. :func:`atlasd.discovery.driver.run_discovery` runs the same stage
sequence on each.

- :class:`LocalProblem`: fields ``(N, C, H, W)`` and an atlas; the group acts on chart
  coordinates, ``F(g . x) ~ g . F(x)`` on every chart.
- :class:`GlobalProblem`: vectors ``(N, ..., d)`` and a target; ``f(g x) ~ f(x)``.
- :class:`DistributionProblem`: samples ``(N, d)`` (or fields with an atlas) whose distribution
  is invariant, compared by a Sinkhorn divergence.

A problem checks its inputs when it is built (each check raises ValueError naming the problem),
so nothing is run or written for bad input.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from atlasd import lie
from atlasd.atlas import Atlas, crop
from atlasd.discovery.basis import (
    DistributionObjective,
    GlobalObjective,
    LieBasis,
    LocalObjective,
    placement,
    to_placement,
)
from atlasd.discovery.config import DiscoveryConfig
from atlasd.discovery.cosets import Score

__all__ = [
    "DistributionProblem",
    "GlobalProblem",
    "LocalProblem",
    "Problem",
    "chart_shape",
    "sample_shape",
]

# the predictors' stage-1 job: (model, inputs, targets, loss kind)
Stage1 = tuple[nn.Module, Tensor, Tensor, str]


def sample_shape(batch: tuple[Tensor, ...]) -> tuple[int, ...]:
    """One group element per sample: ``(B,)``."""
    return (batch[0].shape[0],)


def chart_shape(batch: tuple[Tensor, ...]) -> tuple[int, ...]:
    """One group element per sample and chart: ``(B, K)`` for patches ``(B, K, C, h, w)``."""
    return tuple(batch[0].shape[:2])


def _check_finite(t: Tensor, name: str) -> None:
    if not torch.is_tensor(t):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN/Inf values")


def _check_inputs(
    x: Tensor, y: Tensor | None, predictor: Any, n_generators: int, cfg: DiscoveryConfig
) -> None:
    """Checks shared by the function-based problems (local and global)."""
    if n_generators < 1:
        raise ValueError(f"n_generators must be >= 1, got {n_generators}")
    _check_finite(x, "x")
    if y is not None:
        _check_finite(y, "y")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    if predictor is None and y is None:
        raise ValueError("y is needed to train predictors (or pass a fixed predictor)")
    if predictor is not None and not callable(predictor):
        raise ValueError("predictor must be callable or None")
    if x.shape[0] < cfg.batch_size:
        raise ValueError(f"{x.shape[0]} samples is fewer than one batch of {cfg.batch_size}")


def _batched(
    fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 256, where: Any = None
) -> Tensor:
    """``fn`` over ``x`` in chunks, without gradients, computed where ``where`` (default
    ``fn``) is (:func:`~atlasd.discovery.basis.placement`); the result on the CPU."""
    place = placement(fn if where is None else where)
    with torch.no_grad():
        return torch.cat(
            [fn(to_placement(x[i : i + chunk], place)).cpu() for i in range(0, x.shape[0], chunk)]
        )


def _on(place: tuple[torch.device, torch.dtype | None], *ts: Tensor | None) -> list[Tensor | None]:
    """Tensors moved to ``place`` (device and dtype), None kept."""
    return [None if t is None else to_placement(t, place) for t in ts]


def _identity_algebra32(basis: LieBasis) -> Tensor:
    """The fitted algebra in standard form, float32 (what the coset scores sample G0 from)."""
    return lie.standard_form(basis.effective()[0].detach().cpu().double()).float()


class Problem:
    """One discovery problem (subclasses fill in each step the driver asks for).

    Attributes:
        kind: ``"local"``, ``"global"`` or ``"distribution"`` (``metadata["kind"]``).
        n: the number of samples.
        predictor: the fixed predictor, or None (trained in stage 1, or none at all).
        group_shape: batch -> batch shape of the group elements the basis samples.
    """

    kind: str = ""
    n: int = 0
    predictor: Any = None
    group_shape: Callable[[tuple[Tensor, ...]], tuple[int, ...]] = staticmethod(sample_shape)

    def metadata_extra(self) -> dict[str, Any]:
        """Entries of the group's metadata after ``kind``."""
        return {}

    def fingerprint_extra(self) -> dict[str, Any]:
        """Entries of the run folder's fingerprint beyond settings, seed and data digest."""
        return {}

    def data(self) -> tuple[Tensor | None, ...]:
        """The tensors the run folder's data digest is taken of."""
        raise NotImplementedError

    def prepare(self, timings: dict[str, float]) -> None:
        """Derive the stage inputs (e.g. chart patches) before stage 1."""

    def stage1(self, cfg: DiscoveryConfig, seed: int) -> Stage1 | None:
        """The predictor to train (seeded initialisation), or None without stage 1."""
        return None

    def objective(self, predictor: Any, cfg: DiscoveryConfig, timings: dict[str, float]) -> Any:
        """The stage-2 objective around the frozen predictor (its base predictions F(x))."""
        raise NotImplementedError

    def basis(self, n_generators: int, cfg: DiscoveryConfig, seed: int) -> LieBasis:
        """The LieBasis to fit, seeded."""
        raise NotImplementedError

    def tensors(self) -> tuple[Tensor, ...]:
        """The stage-2 data (what its DataLoader batches)."""
        raise NotImplementedError

    def fit_config(self, cfg: DiscoveryConfig) -> DiscoveryConfig:
        """The settings stage 2 runs with."""
        return cfg

    def coset_score(self, basis: LieBasis, objective: Any, cfg: DiscoveryConfig) -> Score:
        """The coset search's score (see :data:`atlasd.discovery.cosets.Score`)."""
        raise NotImplementedError


class LocalProblem(Problem):
    """Fields ``x (N, C_in, H, W)``, targets ``y`` (fields ``(N, C_out, H, W)`` or class maps
    ``(N, H, W)``) or a fixed ``predictor`` on patches, and the atlas whose charts the group
    acts on (2x2 generators)."""

    kind = "local"
    group_shape = staticmethod(chart_shape)

    def __init__(
        self,
        x: Tensor,
        y: Tensor | None,
        *,
        atlas: Atlas,
        predictor: Callable[[Tensor], Tensor] | None,
        n_generators: int,
        out_radius: int | None,
        learn_in_rep: bool,
        learn_out_rep: bool,
        cfg: DiscoveryConfig,
    ) -> None:
        if not isinstance(atlas, Atlas):
            raise ValueError(f"atlas must be an atlasd.Atlas, got {type(atlas).__name__}")
        _check_inputs(x, y, predictor, n_generators, cfg)
        if x.ndim != 4:
            raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
        if out_radius is not None and not 0 <= out_radius <= atlas.radius:
            raise ValueError(
                f"out_radius {out_radius} must be in 0..{atlas.radius} (the chart radius)"
            )
        self.x, self.y, self.atlas, self.predictor = x, y, atlas, predictor
        self.n = x.shape[0]
        self.out_radius = out_radius
        self.learn_in_rep, self.learn_out_rep = learn_in_rep, learn_out_rep

    def metadata_extra(self) -> dict[str, Any]:
        return {"atlas": self.atlas.to_dict()}

    def fingerprint_extra(self) -> dict[str, Any]:
        return {
            "atlas": self.atlas.to_dict(),
            "out_radius": self.out_radius,
            "learn_in_rep": self.learn_in_rep,
            "learn_out_rep": self.learn_out_rep,
            "fixed_predictor": self.predictor is not None,
        }

    def data(self) -> tuple[Tensor | None, ...]:
        return (self.x, self.y)

    def prepare(self, timings: dict[str, float]) -> None:
        start = time.perf_counter()
        self.patches = self.atlas.extract(self.x.float())  # (N, K, C, h, w)
        timings["extract"] = time.perf_counter() - start

    def stage1(self, cfg: DiscoveryConfig, seed: int) -> Stage1 | None:
        if self.predictor is not None:
            return None
        from atlasd.discovery.predictors import ChartCNN

        atlas, x, y = self.atlas, self.x, self.y
        r_out = self.out_radius if self.out_radius is not None else max(atlas.radius - 4, 0)
        c_out = y.shape[1] if y.ndim == 4 else int(y.max()) + 1
        # seeded initialisation without touching the caller's global RNG state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ChartCNN.for_radii(
                atlas.n_charts, x.shape[1], c_out, atlas.radius, r_out, hidden=cfg.predictor.hidden
            )
        classes = y.ndim == 3
        if classes and y.is_floating_point():
            raise ValueError("y of shape (N, H, W) must hold integer class labels")
        if classes:
            target = crop(atlas.extract_labels(y, c_out), r_out)
        else:
            target = crop(atlas.extract(y.float()), r_out)
        loss = "cross_entropy" if classes else cfg.predictor.loss
        return model, self.patches, target, loss

    def objective(self, predictor: Any, cfg: DiscoveryConfig, timings: dict[str, float]) -> Any:
        patches = self.patches
        probe = _batched(predictor, patches[:2])
        h = patches.shape[-1]
        if not (
            torch.is_tensor(probe)
            and probe.ndim == 5
            and probe.shape[:2] == patches[:2].shape[:2]
            and probe.shape[-1] == probe.shape[-2]
            and probe.shape[-1] % 2 == 1
            and probe.shape[-1] <= h
        ):
            shape = tuple(probe.shape) if torch.is_tensor(probe) else type(probe).__name__
            raise ValueError(
                f"predictor returned {shape} for patches {tuple(patches[:2].shape)}; expected "
                "(B, K, C_out, h', h') with odd h' <= h"
            )
        pred_radius = (probe.shape[-1] - 1) // 2
        r_out = pred_radius if self.out_radius is None else self.out_radius
        if r_out > pred_radius:
            raise ValueError(
                f"out_radius {r_out} is larger than the predictor's output radius {pred_radius}"
            )
        # classifiers are compared on class probabilities, which transform like fields; raw
        # logits carry an arbitrary per-pixel offset that equivariance has no reason to respect
        objective = LocalObjective(
            predictor,
            r_out,
            kind=cfg.basis.loss,
            probabilities=self.predictor is None and self.y.ndim == 3,
        )
        start = time.perf_counter()
        self.base = _batched(objective.predict, patches, where=objective)
        timings["base_predictions"] = time.perf_counter() - start
        return objective

    def basis(self, n_generators: int, cfg: DiscoveryConfig, seed: int) -> LieBasis:
        return LieBasis(
            n_generators,
            2,
            in_channels=self.patches.shape[2],
            out_channels=self.base.shape[2],
            learn_in_rep=self.learn_in_rep,
            learn_out_rep=self.learn_out_rep,
            normalize=cfg.basis.normalize,
            generator=torch.Generator().manual_seed(seed),
        )

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.patches, self.base)

    def coset_score(self, basis: LieBasis, objective: Any, cfg: DiscoveryConfig) -> Score:
        algebra32 = _identity_algebra32(basis)
        n, patches, base = self.n, self.patches, self.base
        # sampled on the CPU with the search's generator, computed where the objective is
        place = placement(objective)

        def coset_score(hs: Tensor, gen: torch.Generator, scale: float = cfg.basis.scale) -> Tensor:
            n_c, b = hs.shape[0], cfg.cosets.batch
            idx = torch.randint(n, (b,), generator=gen)
            xb, bb = patches[idx], base[idx]
            K = xb.shape[1]
            r_in = r_out = None
            # one g0 per sample and chart, shared by all candidates: their losses are paired
            if basis.in_rep is None and basis.out_rep is None:
                g0 = lie.sample_group(algebra32, (1, b, K), scale=scale, generator=gen)
            else:
                # with learned representations the identity component acts on the channels too
                # (rotating a wind field rotates its vectors); the candidate h acts on channels
                # trivially, since no representation of a discrete element is learned
                with torch.no_grad():
                    g0, r_in, r_out = basis.sample((1, b, K), scale, gen)
                r_in, r_out = (
                    None
                    if r is None
                    else r.expand(n_c, -1, -1, -1, -1).reshape(n_c * b, K, *r.shape[-2:])
                    for r in (r_in, r_out)
                )
            g = (hs[:, None, None] @ g0.to(hs.dtype)).reshape(n_c * b, K, 2, 2)
            xr = xb.repeat(n_c, 1, 1, 1, 1)
            br = bb.repeat(n_c, 1, 1, 1, 1)
            xr, br, g, r_in, r_out = _on(place, xr, br, g, r_in, r_out)
            per = objective((xr, br), g, r_in, r_out, per_sample=True)
            return per.view(n_c, b).mean(1).to(device=hs.device, dtype=hs.dtype)

        return coset_score


class GlobalProblem(Problem):
    """Inputs ``x (N, ..., d)`` (vectors or sets of vectors), targets ``y`` (``(N, c)``
    regression or ``(N,)`` class indices) or a fixed ``predictor``; the group acts on the last
    axis of x."""

    kind = "global"

    def __init__(
        self,
        x: Tensor,
        y: Tensor | None,
        *,
        predictor: Callable[[Tensor], Tensor] | None,
        n_generators: int,
        cfg: DiscoveryConfig,
    ) -> None:
        _check_inputs(x, y, predictor, n_generators, cfg)
        if x.ndim < 2:
            raise ValueError(f"x must be (N, ..., d), got shape {tuple(x.shape)}")
        self.x, self.y, self.predictor = x, y, predictor
        self.n, self.d = x.shape[0], x.shape[-1]

    def fingerprint_extra(self) -> dict[str, Any]:
        return {"fixed_predictor": self.predictor is not None}

    def data(self) -> tuple[Tensor | None, ...]:
        return (self.x, self.y)

    def prepare(self, timings: dict[str, float]) -> None:
        self.inputs = self.x.float()

    def stage1(self, cfg: DiscoveryConfig, seed: int) -> Stage1 | None:
        if self.predictor is not None:
            return None
        from atlasd.discovery.predictors import MLPPredictor

        x, y, n = self.inputs, self.y, self.n
        classes = not y.is_floating_point()
        n_out = int(y.max()) + 1 if classes else (y.shape[1] if y.ndim > 1 else 1)
        target = y if classes else y.float().reshape(n, n_out)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MLPPredictor(tuple(x.shape[1:]), n_out)
        loss = "cross_entropy" if classes else "mse"
        return model, x, target, loss

    def objective(self, predictor: Any, cfg: DiscoveryConfig, timings: dict[str, float]) -> Any:
        x = self.inputs
        probe = _batched(predictor, x[:2])
        if not (torch.is_tensor(probe) and probe.shape[0] == 2):
            shape = tuple(probe.shape) if torch.is_tensor(probe) else type(probe).__name__
            raise ValueError(f"predictor returned {shape} for inputs {tuple(x[:2].shape)}")
        objective = GlobalObjective(predictor, kind=cfg.basis.loss)
        self.base = _batched(objective.predict, x, chunk=4096, where=objective)
        return objective

    def basis(self, n_generators: int, cfg: DiscoveryConfig, seed: int) -> LieBasis:
        return LieBasis(
            n_generators,
            self.d,
            out_channels=self.base.shape[1],
            normalize=cfg.basis.normalize,
            generator=torch.Generator().manual_seed(seed),
        )

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.inputs, self.base)

    def coset_score(self, basis: LieBasis, objective: Any, cfg: DiscoveryConfig) -> Score:
        algebra32 = _identity_algebra32(basis)
        n, d, x, base = self.n, self.d, self.inputs, self.base
        place = placement(objective)

        def coset_score(hs: Tensor, gen: torch.Generator, scale: float = cfg.basis.scale) -> Tensor:
            n_c, b = hs.shape[0], max(cfg.cosets.batch, 64)
            idx = torch.randint(n, (b,), generator=gen)
            # one g0 per sample, shared by all candidates: their losses are paired
            g0 = lie.sample_group(algebra32, (1, b), scale=scale, generator=gen)
            g = (hs[:, None] @ g0.to(hs.dtype)).reshape(n_c * b, d, d)
            xr = x[idx].repeat((n_c,) + (1,) * (x.ndim - 1))
            br = base[idx].repeat(n_c, 1)
            xr, br, g = _on(place, xr, br, g)
            per = objective((xr, br), g, per_sample=True)
            return per.view(n_c, b).mean(1).to(device=hs.device, dtype=hs.dtype)

        return coset_score


class DistributionProblem(Problem):
    """Samples ``x (N, d)``, or fields ``(N, C, H, W)`` with an atlas (each sample is then the
    stack of its chart patches), whose distribution is invariant; the objective is the debiased
    Sinkhorn divergence between a transformed batch and an independent one (the two halves of
    every loader batch, so stage 2 runs with twice ``batch_size``)."""

    kind = "distribution"

    def __init__(
        self,
        x: Tensor,
        *,
        atlas: Atlas | None,
        n_generators: int,
        cosets: bool,
        blur: float,
        cfg: DiscoveryConfig,
    ) -> None:
        from geomloss import SamplesLoss

        if n_generators < 1:
            raise ValueError(f"n_generators must be >= 1, got {n_generators}")
        _check_finite(x, "x")
        if atlas is not None:
            if x.ndim != 4:
                raise ValueError(
                    f"with an atlas, x must be fields (N, C, H, W), got {tuple(x.shape)}"
                )
            if cosets:
                raise ValueError("cosets are not searched for fields in distribution mode")
        elif x.ndim != 2:
            raise ValueError(f"x must be (N, d) samples, got shape {tuple(x.shape)}")
        self.n = n = x.shape[0]
        if n < 2 * cfg.batch_size:
            raise ValueError(
                f"{n} samples is fewer than two independent batches of {cfg.batch_size}"
            )
        if cfg.batch_size > 4096:
            raise ValueError(f"batch_size {cfg.batch_size} is too large for the tensorized backend")
        self.x = x.float()
        self.atlas = atlas
        self.sinkhorn = SamplesLoss("sinkhorn", p=2, blur=blur, backend="tensorized")
        self.extra = {"blur": blur} if atlas is None else {"blur": blur, "atlas": atlas.to_dict()}
        if atlas is not None:
            self.group_shape = chart_shape  # one element per sample and chart

    def metadata_extra(self) -> dict[str, Any]:
        return dict(self.extra)

    def fingerprint_extra(self) -> dict[str, Any]:
        return dict(self.extra)

    def data(self) -> tuple[Tensor | None, ...]:
        return (self.x,)

    def prepare(self, timings: dict[str, float]) -> None:
        if self.atlas is None:
            self.d, self.samples = self.x.shape[1], self.x
        else:
            self.d, self.samples = 2, self.atlas.extract(self.x)  # (N, K, C, h, w)

    def objective(self, predictor: Any, cfg: DiscoveryConfig, timings: dict[str, float]) -> Any:
        radius = None if self.atlas is None else self.atlas.radius
        return DistributionObjective(self.sinkhorn, radius=radius)

    def basis(self, n_generators: int, cfg: DiscoveryConfig, seed: int) -> LieBasis:
        return LieBasis(
            n_generators,
            self.d,
            normalize=cfg.basis.normalize,
            generator=torch.Generator().manual_seed(seed),
        )

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.samples,)

    def fit_config(self, cfg: DiscoveryConfig) -> DiscoveryConfig:
        # a shallow copy: the caller's callbacks and loggers in trainer_kwargs stay the caller's
        return cfg.with_batch_size(2 * cfg.batch_size)

    def coset_score(self, basis: LieBasis, objective: Any, cfg: DiscoveryConfig) -> Score:
        algebra32 = _identity_algebra32(basis)
        n, x = self.n, self.x
        m = min(cfg.batch_size, 512)
        place = placement(objective)

        def coset_score(hs: Tensor, gen: torch.Generator, scale: float = cfg.basis.scale) -> Tensor:
            idx = torch.randperm(n, generator=gen)[: 2 * m]
            a, b = x[idx[:m]], x[idx[m:]]
            # one g0 per sample, shared by all candidates: their losses are paired
            g0 = lie.sample_group(algebra32, (m,), scale=scale, generator=gen)
            moved = torch.einsum("cij,bjk,bk->cbi", hs, g0.to(hs.dtype), a)
            # geomloss batches (C, m, d) point clouds: all candidates in one call
            per = objective.candidates(*_on(place, moved, b))
            return per.to(device=hs.device, dtype=hs.dtype)

        return coset_score
