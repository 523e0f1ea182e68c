"""The discovery entry points: discover_local, discover_global and discover_distribution.

Each checks its inputs (a :class:`~atlasd.discovery.problems.Problem` of its kind) and hands
them to the one driver, :func:`~atlasd.discovery.driver.run_discovery`: (1) predictors, trained
on (x, y) or given as a fixed callable; (2) F(x) computed once; (3) a LieBasis fitted so that
F(g . x) ~ g . F(x); (4) coset search; (5) a DiscoveredGroup with the losses, timings and
settings in its metadata. The ``**training`` keywords are flat (``predictor_epochs``,
``coset_steps``, ...); :class:`~atlasd.discovery.config.DiscoveryConfig` sorts them into its
stage sections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from atlasd.atlas import Atlas
from atlasd.discovery.config import DiscoveryConfig
from atlasd.discovery.driver import run_discovery
from atlasd.discovery.problems import DistributionProblem, GlobalProblem, LocalProblem
from atlasd.group import DiscoveredGroup

__all__ = ["DiscoveryConfig", "discover_distribution", "discover_global", "discover_local"]


def discover_local(
    x: Tensor,
    y: Tensor | None = None,
    *,
    atlas: Atlas,
    predictor: Callable[[Tensor], Tensor] | None = None,
    n_generators: int = 1,
    out_radius: int | None = None,
    learn_in_rep: bool = False,
    learn_out_rep: bool = False,
    cosets: bool = True,
    seed: int = 0,
    **training: Any,
) -> DiscoveredGroup:
    """Discover a local symmetry group of fields: F(g . x) ~ g . F(x) on every chart.

    Args:
        x: input fields (N, C_in, H, W).
        y: target fields (N, C_out, H, W) (float, regression) or class maps (N, H, W) (integer:
            classification, cross-entropy, compared as softmax probabilities in stage 2);
            needed when ``predictor`` is None.
        atlas: the charts (atlasd.Atlas).
        predictor: None trains one CNN per chart on (x, y); a callable is a fixed F mapping
            patches (B, K, C_in, h, w) -> (B, K, C_out, h', w'), odd h' <= h.
        n_generators: k >= 1 generators (2x2, in chart coordinates).
        out_radius: radius of the compared output crop (default: the predictor's output radius).
        learn_in_rep, learn_out_rep: learn channel representations.
        cosets: run the coset search.
        seed: seeds everything (same seed -> same group).
        **training: flat settings, see DiscoveryConfig (atlasd.discovery.config).

    Returns:
        DiscoveredGroup with (k, 2, 2) algebra; metadata holds losses and timings.
    """
    cfg = DiscoveryConfig.from_kwargs(training)
    problem = LocalProblem(
        x,
        y,
        atlas=atlas,
        predictor=predictor,
        n_generators=n_generators,
        out_radius=out_radius,
        learn_in_rep=learn_in_rep,
        learn_out_rep=learn_out_rep,
        cfg=cfg,
    )
    return run_discovery(problem, cfg, n_generators=n_generators, cosets=cosets, seed=seed)


def discover_global(
    x: Tensor,
    y: Tensor | None = None,
    *,
    predictor: Callable[[Tensor], Tensor] | None = None,
    n_generators: int = 1,
    cosets: bool = True,
    seed: int = 0,
    **training: Any,
) -> DiscoveredGroup:
    """Discover a global linear symmetry: f(g x) ~ f(x), g acting on the last axis of x.

    Args:
        x: inputs (N, ..., d), e.g. vectors (N, d) or particle sets (N, P, d).
        y: targets (N, c) (regression) or (N,) class indices; needed when predictor is None.
        predictor: None trains an MLP on (x, y); a callable is a fixed f: (B, ..., d) -> (B, c).
        n_generators, cosets, seed, **training: as in discover_local.

    Returns:
        DiscoveredGroup with (k, d, d) algebra.
    """
    cfg = DiscoveryConfig.from_kwargs(training)
    problem = GlobalProblem(x, y, predictor=predictor, n_generators=n_generators, cfg=cfg)
    return run_discovery(problem, cfg, n_generators=n_generators, cosets=cosets, seed=seed)


def discover_distribution(
    x: Tensor,
    *,
    atlas: Atlas | None = None,
    n_generators: int = 1,
    cosets: bool = False,
    seed: int = 0,
    blur: float = 0.05,
    **training: Any,
) -> DiscoveredGroup:
    """Discover linear symmetries of a distribution: q(g x) = q(x) for samples x (N, d).

    The objective is the debiased Sinkhorn divergence (geomloss, tensorized backend) between a
    transformed batch {g_i x_i} and an *independent* batch of the data: comparing a batch with
    its own transform would reward small transformations for the sample noise they share, so the
    two halves of every loader batch are used as the two independent samples. ``batch_size``
    (default 1024 here, at most ~2k for the tensorized backend) counts points per half.

    Args:
        x: samples (N, d), used as given: the group acts on the raw coordinates (centre the
            data first if the symmetry is about the mean); or, with ``atlas``, fields
            (N, C, H, W): each sample is then the stack of its chart patches, transformed by
            ``atlasd.act`` (2x2 generators, one element per sample and chart) and compared inside
            the charts' inscribed discs, so corners that rotate out of a patch do not count.
            One chart covering the whole field asks LieGAN's question: is a global
            transformation of the picture a symmetry of the data distribution?
        atlas: the charts for field samples (cosets are not searched in this mode).
        n_generators, cosets, seed, **training: as in discover_local.
        blur: Sinkhorn blur (length scale of the transport cost), in units of x.

    Returns:
        DiscoveredGroup with (k, d, d) algebra.
    """
    cfg = DiscoveryConfig.from_kwargs({"batch_size": 1024, **training})
    problem = DistributionProblem(
        x, atlas=atlas, n_generators=n_generators, cosets=cosets, blur=blur, cfg=cfg
    )
    return run_discovery(problem, cfg, n_generators=n_generators, cosets=cosets, seed=seed)
