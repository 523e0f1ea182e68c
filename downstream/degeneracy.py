"""Degeneracy report: what a discovered symmetry predicts about trained weights, measured.

:func:`run_degeneracy` takes a field task with a discovered group of 2x2 chart transformations
(heat, digits on the sphere) and trains, on the same chart samples and with the same budget,

* an UNCONSTRAINED model: a stack of ``nn.Conv2d`` with SiLU (:class:`ConvNet`), and
* a GROUP model: the same stack built from :class:`EquivariantConv2d` layers solved from the
  group, with invariant gates (:class:`EquivariantConvNet`),

once on the task's data (symmetric) and once on a SYMMETRY-BROKEN version of it (``broken``:
DataModule options that destroy the symmetry, e.g. anisotropic diffusion for heat, unrotated
digits), for every seed. For each trained model it measures, at the trained weights ``w*``:

* ``raw_parameters`` / ``free_parameters`` (:func:`count_parameters`);
* the local learning coefficient (:func:`estimate_llc`) with its per-chain values;
* the functional dimension (rank of ``d f / d w`` on ``n_rank`` training samples, computed in
  float64 and cut at the working precision of the data and parameters, the default tolerance
  of :func:`jacobian_spectrum`);
* the Gauss-Newton matrix ``G`` of the negative log-likelihood: its rank from the exact whitened
  Jacobian on the ``n_rank`` samples (same tolerance), and its spectrum from an unbiased
  randomised estimate over all ``n`` samples (:func:`gauss_newton_probe`, ``4 d`` probes), which
  also gives the effective dimension ``sum n_beta mu / (n_beta mu + gamma)`` at the LLC's own
  settings (half of it is what the LLC estimate approaches if the basin is quadratic) and the
  sampler's preconditioner;
* the emulability residual of every generator of the group (:func:`emulation`: the input field
  perturbed by the generator's Lie derivative, held-out relative residual; 0 = a weight change
  reproduces it exactly).

Likelihood (what the LLC is of)
-------------------------------
Each chart sample is one draw. Regression (heat): Gaussian with a fixed noise ``sigma`` over the
output pixels, ``NLL = 0.5 sum_pixels (f - y)^2 / sigma^2``; ``noise_std: auto`` (default) sets
``sigma`` to the RMS residual of the unconstrained model trained on the symmetric data with the
first seed (the maximum-likelihood noise level of the reference model), and that one value is
used for every model and data version of the run so that their LLCs share a temperature.
Classification (digits): categorical, ``NLL = sum_pixels cross-entropy`` (unweighted: the
likelihood must be a likelihood). Both models are trained on that NLL (regression with
``sigma = 1``, which only rescales it) by Adam with a cosine learning-rate decay, then
full-batch L-BFGS, and the LLC uses ``n_beta = n / log n`` over the ``n`` chart samples. Seeds
vary the initial weights, the batch order, the sampler and the chart samples, drawn
per seed: the DataModule's fields with ``data.seed + seed`` and the patches with ``seed``, so
the spread over seeds includes the data's own variability.

Sampler. The calibrated defaults of :func:`estimate_llc` assume Hessian eigenvalues of order
one; the per-pixel NLLs of conv nets span many decades (measured on heat: largest Gauss-Newton
eigenvalue 3.5e5 at sigma = 0.19), and a plain SGLD step stable on the stiffest direction never
moves along the soft ones. The chains are therefore preconditioned with
``P = (n_beta G + gamma I)^-1`` (``G`` the probe estimate of the Gauss-Newton matrix of the NLL
over the training samples), which leaves the posterior unchanged and relaxes every quadratic
direction at the same rate; the step ``llc.step`` (default 0.05) is then dimensionless. Checked in
``tests/test_llc.py`` on an ill-conditioned quadratic basin (eight decades): within 8 % of the
exact limit, where the plain sampler reaches under 75 %. ``llc.full_batch_every: k`` (default
10) measures the excess ``L_n(w_t) - L_n(w*)`` on all ``n`` samples every ``k``-th draw instead
of on the step's minibatch: at a tight localisation the minibatch term
``(grad L_B - grad L_n) . (w_t - w*)`` dominates the excess, half the draws fall below ``w*`` and
the health check fails even at an exact minimum (tested on linear regression at gamma 1e4: 50 %
below with the minibatch excess, 0 % with the full one, which lands on the quadratic limit with
a 3x smaller standard error). ``llc.step_check: f`` (default 0.5; 0 = off) repeats every
estimate with independent chains at the step ``f * llc.step`` (burn-in ``/ f``, the same
simulated time) and reports both, the difference, a flag where it exceeds 2 standard errors,
and the linear extrapolation to step 0 (:func:`step_dependence`): minibatch gradient noise
heats the chains by a factor ``1 + O(step)``, which the health checks cannot see (measured on
the heat task: 22.6 at step 0.05 and batch 128, 9.7 at step 0.0125, 8.2 at batch 512, half the
effective dimension 5.9). The same settings are used for every
model, so the LLC values of one run are comparable with each other; they are not calibrated
against a known learning coefficient (none is known for these models), and the health checks
of :func:`estimate_llc` are reported with each value.

Gradient correction. ``w*`` is Adam's end point polished by full-batch L-BFGS in
coordinates whitened by the Gauss-Newton matrix (:func:`whitened_polish`,
``training.polish_rounds`` x ``training.polish_steps``), and still not an exact minimum: these
losses are so ill-conditioned that 200 plain L-BFGS iterations lowered the gradient norm of the
heat group model only from 1.44 to 1.32, and the whitened rounds, though far better, stop
short of one too. The chains then slide down the residual gradient along the soft
directions and the estimate goes negative (measured at ``gamma = 1``: every chain of every heat
model; by the closed-form bias, no localisation up to 1e8 brings the slide under 5 % of the
value, since both fall like ``1 / gamma``). The chains
therefore sample the tilted loss ``L_n(w) - grad L_n(w*) . (w - w*)`` (``gradient_correction``
of :func:`estimate_llc`): the same curvature, with ``w*`` a critical point. On a quadratic loss
this is exactly the estimate at the minimum (tested); along singular directions it is an
approximation. The report gives, for each model, the gradient norm, the bias the correction
removes (:func:`gradient_bias`, quadratic model) and half the effective dimension (the
estimate on a quadratic basin): the gap between the estimate and the latter is what the
quadratic picture misses.

Localisation. At such a ``w*`` the Hessian also has negative eigenvalues (measured on the digits
group model: 47 of 217, the most negative -0.96 against a largest of 636), and the localised
posterior ``exp(-n_beta L_n - gamma |w - w*|^2 / 2)`` is only proper when ``gamma`` outweighs
``n_beta`` times the most negative one: with ``gamma = 1`` every chain diverged.
``llc.localization: auto`` (default) therefore takes ``gamma = max(1, 2 n_beta |lambda_min|)``
over all models of the run (``lambda_min`` by Lanczos on Hessian-vector products over all ``n``
samples, :func:`hessian_extreme_eigenvalue`, on a float64 copy of the model unless
``llc.hessian_dtype: float32``: float32 products overstated it 8x on a heat model), one
``gamma`` for all so that their LLCs stay
comparable. Directions with ``n_beta mu < gamma`` then hardly count, so the LLC is the one
seen at that localisation; half the effective dimension at the same ``gamma`` is its quadratic
reference.

Symmetry directions. For the unconstrained conv stack the weight-space image of a generator
``A`` is known: transforming every kernel, ``K -> K(exp(tA) z)``, turns ``f`` into
``g^-1 . f(g . x)``, which equals ``f`` when ``f`` is equivariant. The report gives the loss
curvature ``t^T G t / |t|^2`` along that tangent ``t``, relative to a random direction
(``trace G / d``) and as a quantile of ``G``'s spectrum: a data symmetry that the trained weights
express makes it a flat direction, and breaking the symmetry should stiffen it. The group
model's kernels are invariant by construction, so it has no such direction: the constraint
removed it (with every other non-invariant kernel component) from the parameters.
The control: the same construction with the two shears (:func:`control_generators`: area
preserving like a rotation, orthogonal to the discovered algebra), on the same weights, with
the Gauss-Newton and the exact Hessian (Hessian-vector products in ``llc.hessian_dtype``). The
ratio
``curvature(generator) / mean curvature(shears)`` (and, since one shear can be far stiffer
than the other, ``/ min curvature(shears)``) compares the symmetry's direction with a
matched non-symmetry on one model and one data set, so unlike ``Delta lambda`` it does not mix
in the change of the function to learn. Symmetric and broken data are compared seed by seed
(:func:`paired_log_ratio`: both versions of a seed share its initial weights and patches), with
a 95% Student interval of the ratio; a change is read as resolved only when it excludes 1.

What the symmetry predicts (the background notes)
-------------------------------------------------
If the data distribution is invariant under a group G and the model can emulate G's action by a
weight change, the loss is constant along the orbit of ``w*``: ``dim G`` more flat directions,
which lowers the rank bound ``r / 2 <= lambda <= r / 2 + (d - r) / 4`` by between ``dim G / 4``
(upper bound) and ``dim G / 2`` (lower bound). The report states this predicted shift next to
the measured susceptibility ``Delta lambda = lambda(symmetric) - lambda(broken)`` of each model
and its uncertainty (paired by seed: the sd of the per-seed differences over ``sqrt(k)`` for
``k >= 2`` seeds; for one seed the two chain standard errors in quadrature). With the step
check on, the same paired difference of the step-0 extrapolations (``delta_step0``) is given
too: the sampler's step bias grows with the task's difficulty, so it does not cancel in
``Delta lambda``. Breaking the symmetry also changes the function to be learned, so
``Delta lambda`` mixes both effects: the report reads it with that caveat.

The rank bound counts a direction fully or not at all; the localised estimator counts a
direction of curvature ``c`` with the weight ``w = n_beta c / (n_beta c + gamma)``
(:func:`effective_weight`, its term of the effective dimension). So at the run's ``gamma`` the
symmetry can lower the LLC by at most half the weight its directions have on the broken data
(``attainable_drop``), the measured curvatures on both data versions give the quadratic estimate
``quadratic_drop``, and ``best_gamma_drop`` is the largest drop those curvatures allow at any
``gamma``. Measured on digits (seeds 0-3): the rotation direction of the unconstrained stack
has ``n_beta c`` of 7-47 against ``gamma`` = 241, so the symmetry could lower the LLC by at
most 0.042 there, and by at most 0.060 at any ``gamma``, since rotated digits flatten the
direction only 1.6x; the measured ``Delta lambda`` extrapolated to step 0 (+8.9 +- 4.9 over the
four seeds) follows half the change of the effective dimension (+8.4 +- 3.4) instead.

Outputs: :func:`run_degeneracy` returns the report (summary, table and reading by
:mod:`atlasd.downstream.degeneracy_report`), whose :func:`write_degeneracy_report` writes
``report.json``, ``report.md`` and ``report.png`` atomically. Seeds run in separate
processes (or machines) combine with :func:`merge_degeneracy_reports` (``atlasd
degeneracy-merge``), which re-summarises the stored runs over all seeds and refuses reports
that are not comparable; ``llc.localization: auto`` picks ``gamma`` per run, so runs meant to
be merged fix it to one number (a fixed ``gamma`` below ``n_beta |lambda_min|`` is flagged in
the log and the reading).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from atlasd.downstream.degeneracy_report import summarise_degeneracy
from atlasd.downstream.ranks import effective_weight

if TYPE_CHECKING:
    from atlasd.group import DiscoveredGroup

__all__ = [
    "DEGENERACY_TASKS",
    "CenterCrop",
    "NLLOutputs",
    "categorical_nll",
    "chart_samples",
    "control_generators",
    "conv_rotation_tangent",
    "gaussian_nll",
    "measure_degeneracy",
    "run_degeneracy",
    "whitened_polish",
]

# task -> kind of target; both act on R^2 charts
DEGENERACY_TASKS: dict[str, str] = {"heat": "regression", "sphere_digits": "classification"}

_OPTIONS: dict[str, set[str]] = {
    "top": {"task", "group", "data", "broken", "samples", "models", "training", "llc", "seeds"},
    "samples": {"n", "n_heldout", "n_rank", "n_emulate"},
    "models": {"baseline", "equivariant"},
    "baseline": {"hidden", "kernel_size"},
    "equivariant": {"hidden", "kernel_size", "mode"},
    "training": {"epochs", "lr", "batch_size", "polish_steps", "polish_rounds"},
    "llc": {
        "chains",
        "draws",
        "burn_in",
        "batch_size",
        "step",
        "noise_std",
        "localization",
        "full_batch_every",
        "hessian_dtype",
        "step_check",
    },
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "samples": {"n": 2000, "n_heldout": 500, "n_rank": 48, "n_emulate": 64},
    "baseline": {"hidden": [8], "kernel_size": 5},
    "equivariant": {"hidden": ["4*S + 2*V"], "kernel_size": 5, "mode": "auto"},
    "training": {
        "epochs": 30,
        "lr": 0.01,
        "batch_size": 64,
        "polish_steps": 100,
        "polish_rounds": 3,
    },
    "llc": {
        "chains": 4,
        "draws": 400,
        "burn_in": 200,
        "batch_size": 128,
        "step": 0.05,
        "noise_std": "auto",
        "localization": "auto",
        "full_batch_every": 10,
        "hessian_dtype": "float64",
        "step_check": 0.5,
    },
}


# ---------------------------------------------------------------------------------------------
# Config


def _section(config: dict, name: str, parent: str | None = None) -> dict[str, Any]:
    source = (config.get(parent) or {}) if parent else config
    given = source.get(name) or {}
    if not isinstance(given, dict):
        raise ValueError(f"{name} must be a mapping of options, got {given!r}")
    unknown = sorted(set(given) - _OPTIONS[name])
    if unknown:
        raise ValueError(
            f"unknown {name} option(s): {', '.join(unknown)}; "
            f"options are {', '.join(sorted(_OPTIONS[name]))}"
        )
    return {**_DEFAULTS.get(name, {}), **given}


def _positive(value: Any, what: str, kind: type = int) -> Any:
    ok = isinstance(value, kind) if kind is int else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not value > 0:
        raise ValueError(f"{what} must be a positive {kind.__name__}, got {value!r}")
    return value


def _parse_config(config: dict) -> dict[str, Any]:
    if not isinstance(config, dict) or "task" not in config:
        raise ValueError("config must be a dict with a 'task' entry")
    unknown = sorted(set(config) - _OPTIONS["top"])
    if unknown:
        raise ValueError(
            f"unknown option(s): {', '.join(unknown)}; options are "
            f"{', '.join(sorted(_OPTIONS['top']))}"
        )
    task = config["task"]
    if task not in DEGENERACY_TASKS:
        raise ValueError(
            f"unknown degeneracy task {task!r}; known tasks: {', '.join(sorted(DEGENERACY_TASKS))}"
        )
    broken = config.get("broken")
    if not isinstance(broken, dict) or not broken:
        raise ValueError(
            "broken must name the DataModule options that break the symmetry "
            "(e.g. {anisotropy: [1.5, 0.5]} for heat, {rotation_spread: 0} for sphere_digits)"
        )
    out = {
        "task": task,
        "data": dict(config.get("data") or {}),
        "broken": dict(broken),
        "samples": _section(config, "samples"),
        "baseline": _section(config, "baseline", "models"),
        "equivariant": _section(config, "equivariant", "models"),
        "training": _section(config, "training"),
        "llc": _section(config, "llc"),
    }
    _section(config, "models")  # unknown model names
    for key, value in out["samples"].items():
        _positive(value, f"samples.{key}")
    if out["samples"]["n_rank"] > out["samples"]["n"]:
        raise ValueError("samples.n_rank cannot exceed samples.n (it takes training samples)")
    if out["samples"]["n_emulate"] > out["samples"]["n_heldout"]:
        raise ValueError("samples.n_emulate cannot exceed samples.n_heldout")
    for name in ("baseline", "equivariant"):
        k = out[name]["kernel_size"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f"models.{name}.kernel_size must be an odd positive int, got {k!r}")
        hidden = out[name]["hidden"]
        if not isinstance(hidden, list | tuple) or not hidden:
            raise ValueError(f"models.{name}.hidden must be a non-empty list, got {hidden!r}")
    for key in ("epochs", "batch_size"):
        _positive(out["training"][key], f"training.{key}")
    _positive(out["training"]["lr"], "training.lr", float)
    for key in ("chains", "draws", "batch_size"):
        _positive(out["llc"][key], f"llc.{key}")
    if isinstance(out["llc"]["burn_in"], bool) or not (
        isinstance(out["llc"]["burn_in"], int) and out["llc"]["burn_in"] >= 0
    ):
        raise ValueError(f"llc.burn_in must be an int >= 0, got {out['llc']['burn_in']!r}")
    _positive(out["llc"]["step"], "llc.step", float)
    for key in ("polish_steps", "polish_rounds"):
        polish = out["training"][key]
        if isinstance(polish, bool) or not isinstance(polish, int) or polish < 0:
            raise ValueError(f"training.{key} must be an int >= 0, got {polish!r}")
    every = out["llc"]["full_batch_every"]
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"llc.full_batch_every must be an int >= 0, got {every!r}")
    if out["llc"]["hessian_dtype"] not in ("float32", "float64"):
        raise ValueError(
            f"llc.hessian_dtype must be 'float32' or 'float64', got {out['llc']['hessian_dtype']!r}"
        )
    check = out["llc"]["step_check"]
    if isinstance(check, bool) or not isinstance(check, int | float) or not 0 <= check < 1:
        raise ValueError(
            "llc.step_check must be a number in [0, 1) (the second step as a fraction of "
            f"llc.step; 0 = no check), got {check!r}"
        )
    if out["llc"]["localization"] != "auto":
        _positive(out["llc"]["localization"], "llc.localization ('auto' or a number)", float)
    noise = out["llc"]["noise_std"]
    if noise != "auto":
        _positive(noise, "llc.noise_std ('auto' or a number)", float)
    seeds = config.get("seeds", [0])
    if (
        not isinstance(seeds, list | tuple)
        or not seeds
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)
    ):
        raise ValueError(f"seeds must be a non-empty list of ints >= 0, got {seeds!r}")
    out["seeds"] = [int(s) for s in seeds]
    return out


# ---------------------------------------------------------------------------------------------
# Data and models


def chart_samples(
    task: str, data: dict[str, Any], n: int, n_heldout: int, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor, int | None]:
    """Chart patches of a task's training fields, as independent samples.

    Builds the task's DataModule with ``data``, cuts every training field into its atlas's
    charts (:meth:`Atlas.extract` / :meth:`Atlas.extract_labels`), pools the patches of all
    charts, and draws ``n`` training and ``n_heldout`` held-out patches without replacement
    (seeded permutation; the held-out ones come from other fields than the training ones).

    Returns:
        ``(x, y, x_heldout, y_heldout, n_classes)``: ``x`` float32 ``(n, C, h, h)`` input
        patches (``h = 2 r + 1`` with the atlas radius ``r``); ``y`` float32 ``(n, C_out, h,
        h)`` for regression or int64 ``(n, h, h)`` labels for classification (crop them to the
        model's output size); ``n_classes`` the DataModule's class count (classification; a
        class need not occur in the patches), None for regression.

    Raises:
        ValueError: unknown task, or fewer patches than ``n + n_heldout``.
    """
    from atlasd.datasets import make_datamodule

    if task not in DEGENERACY_TASKS:
        raise ValueError(
            f"unknown degeneracy task {task!r}; known tasks: {', '.join(sorted(DEGENERACY_TASKS))}"
        )
    dm = make_datamodule(task, **data)
    dm.setup("fit")
    fields, targets = dm.train_dataset.tensors[:2]
    atlas = dm.atlas
    k = atlas.n_charts
    n_fields = fields.shape[0]
    if n_fields * k < n + n_heldout:
        raise ValueError(
            f"{task}: {n_fields} training fields x {k} charts = {n_fields * k} patches, fewer "
            f"than samples.n + samples.n_heldout = {n + n_heldout}; raise data.n"
        )
    # held-out patches come from a seeded random set of fields, training patches from the rest
    n_held_fields = max(1, math.ceil(n_heldout / k))
    order = torch.randperm(n_fields, generator=torch.Generator().manual_seed(seed))
    train_f, held_f = order[n_held_fields:], order[:n_held_fields]
    if train_f.numel() * k < n:
        raise ValueError(
            f"{task}: {train_f.numel() * k} training patches after holding out "
            f"{n_held_fields} fields, fewer than samples.n = {n}; raise data.n"
        )

    def patches(index: Tensor, count: int, stream: int) -> tuple[Tensor, Tensor]:
        x = atlas.extract(fields[index].float()).flatten(0, 1)
        if targets.is_floating_point():
            y = atlas.extract(targets[index].float()).flatten(0, 1)
        else:
            n_classes = len(dm.class_weights)
            y = atlas.extract_labels(targets[index], n_classes).flatten(0, 1)
        pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed + stream))
        pick = pick[:count]
        return x[pick].contiguous(), y[pick].contiguous()

    x, y = patches(train_f, n, 1)
    xh, yh = patches(held_f, n_heldout, 2)
    return x, y, xh, yh, None if targets.is_floating_point() else len(dm.class_weights)


class CenterCrop(nn.Module):
    """Wraps a 'same'-padded field model and keeps the central ``2 r + 1`` output pixels, where
    every receptive field lies inside the input patch (so the zero padding never enters).
    ``(B, C, h, h) -> (B, C_out, 2 r + 1, 2 r + 1)``."""

    def __init__(self, model: nn.Module, out_radius: int) -> None:
        super().__init__()
        self.model, self.out_radius = model, int(out_radius)

    def forward(self, x: Tensor) -> Tensor:
        from atlasd.atlas import crop

        return crop(self.model(x), self.out_radius)


def _out_radius(in_radius: int, n_layers: int, kernel_size: int) -> int:
    r = in_radius - n_layers * (kernel_size // 2)
    if r < 0:
        raise ValueError(
            f"{n_layers} layers of kernel size {kernel_size} need a chart radius of at least "
            f"{n_layers * (kernel_size // 2)}, the atlas has {in_radius}"
        )
    return r


def _build(
    group: DiscoveredGroup,
    spec: dict[str, Any],
    in_channels: int,
    out_channels: int,
    in_radius: int,
    seed: int,
) -> tuple[dict[str, nn.Module], int]:
    """Both models, each cropped to the output radius that both stacks keep exact."""
    from atlasd.downstream.experiments import ConvNet, EquivariantConvNet, _init_

    base, eq = spec["baseline"], spec["equivariant"]
    n_layers = len(base["hidden"]) + 1
    if len(eq["hidden"]) + 1 != n_layers or int(eq["kernel_size"]) != int(base["kernel_size"]):
        raise ValueError(
            "models.baseline and models.equivariant must have the same depth and kernel size "
            "(the comparison is about the constraint, not the architecture)"
        )
    k = int(base["kernel_size"])
    r_out = _out_radius(in_radius, n_layers, k)
    gen = torch.Generator().manual_seed(seed)
    baseline = ConvNet(in_channels, out_channels, [int(h) for h in base["hidden"]], k)
    _init_(baseline, gen)
    equivariant = EquivariantConvNet(
        group, in_channels, out_channels, list(eq["hidden"]), k, mode=eq["mode"], generator=gen
    )
    return {
        "baseline": CenterCrop(baseline, r_out),
        "equivariant": CenterCrop(equivariant, r_out),
    }, r_out


# ---------------------------------------------------------------------------------------------
# Likelihoods


def gaussian_nll(sigma: float) -> Callable[[Tensor, Tensor], Tensor]:
    """Mean over samples of ``0.5 sum_outputs (pred - target)^2 / sigma^2`` (Gaussian negative
    log-likelihood up to a constant); ``pred``, ``target``: ``(B, ...)``."""
    scale = 0.5 / float(sigma) ** 2

    def nll(pred: Tensor, target: Tensor) -> Tensor:
        return scale * (pred - target).square().sum() / pred.shape[0]

    return nll


def categorical_nll(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over samples of the summed per-pixel cross-entropy; ``pred`` ``(B, K, h, w)`` logits,
    ``target`` ``(B, h, w)`` int64 classes."""
    return F.cross_entropy(pred, target, reduction="sum") / pred.shape[0]


class NLLOutputs(nn.Module):
    """Outputs whose Jacobian ``J~`` gives the Gauss-Newton matrix of the NLL as ``J~^T J~``.

    Regression: ``f / sigma``. Classification: ``A^T z`` per pixel with ``z`` the logits,
    ``p = softmax(z)`` held fixed (detached) and ``A^T = diag(sqrt p) - sqrt p p^T``, since
    ``A A^T = diag p - p p^T`` is the Hessian of the cross-entropy in the logits.
    ``(B, ...) -> (B, ...)`` of the model's output shape."""

    def __init__(self, model: nn.Module, kind: str, sigma: float = 1.0) -> None:
        super().__init__()
        self.model, self.kind, self.sigma = model, kind, float(sigma)

    def forward(self, x: Tensor) -> Tensor:
        z = self.model(x)
        if self.kind == "regression":
            return z / self.sigma
        p = torch.softmax(z.detach(), dim=1)
        root = p.sqrt()
        return root * z - root * (p * z).sum(dim=1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# Training


class _FitModule(lightning.LightningModule):
    """Thin Lightning wrapper: a model, an NLL, Adam with a cosine decay to 1 % of ``lr``."""

    def __init__(self, model: nn.Module, nll: Callable, lr: float, epochs: int) -> None:
        super().__init__()
        self.model, self.nll, self.lr, self.epochs = model, nll, float(lr), int(epochs)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.nll(self.model(x), y)
        self.log("train_nll", loss, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=self.epochs, eta_min=0.01 * self.lr
        )
        return {"optimizer": opt, "lr_scheduler": sched}


def _fit(
    model: nn.Module,
    nll: Callable,
    x: Tensor,
    y: Tensor,
    kind: str,
    opts: dict,
    seed: int,
    root: Path,
    trainer_kwargs: dict[str, Any] | None = None,
) -> tuple[float, dict[str, Any] | None]:
    """Train ``model`` in place (Adam, then :func:`whitened_polish`); returns the wall time (s)
    and the polish record (None without one).

    The Adam fit runs on the Trainer's device (``trainer_kwargs``, see
    :func:`~atlasd.downstream.experiments.quiet_trainer`); the model then goes back to the
    device and dtype it was built in (the CPU), where the polish and every later measurement
    (LLC sampling, Hessians, ranks) run."""
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=int(opts["batch_size"]),
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    from atlasd.downstream.experiments import quiet_trainer

    trainer = quiet_trainer(int(opts["epochs"]), root, trainer_kwargs=trainer_kwargs)
    home = next(p for p in model.parameters() if p.is_floating_point())
    device, dtype = home.device, home.dtype
    start = time.perf_counter()
    trainer.fit(_FitModule(model, nll, opts["lr"], opts["epochs"]), train_dataloaders=loader)
    # explicit, not left to Lightning's teardown (which moves to the CPU but keeps a "64-true"
    # fit's float64): the measurements below expect the model as it was built
    model.to(device=device, dtype=dtype)
    model.eval()
    polish = None
    if opts["polish_steps"] and opts["polish_rounds"]:
        polish = whitened_polish(
            model,
            nll,
            x,
            y,
            kind,
            steps=int(opts["polish_steps"]),
            rounds=int(opts["polish_rounds"]),
            seed=seed,
        )
    return time.perf_counter() - start, polish


def whitened_polish(
    model: nn.Module,
    nll: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    kind: str,
    *,
    steps: int,
    rounds: int,
    damping: float = 1e-6,
    seed: int = 0,
) -> dict[str, Any]:
    """Full-batch L-BFGS in coordinates whitened by the Gauss-Newton matrix, in place.

    Each round estimates ``G`` (:func:`gauss_newton_probe` of the NLL's whitened outputs over
    all samples), writes ``w = w0 + R u`` with ``R = (G + damping * mu_max I)^-1/2`` and runs
    ``steps`` L-BFGS iterations (strong Wolfe) on ``u`` from 0. In ``u`` the quadratic part of
    the loss is close to isotropic, which plain L-BFGS in ``w`` cannot reach with a short
    history when the curvature spans many decades (measured on the heat conv stack, 2000
    chart samples: 200 plain iterations went from NLL 220.5 to 212.9 with the gradient norm
    rising; two whitened rounds of 100 reached 189.6, and the most negative Hessian eigenvalue
    went from -1426 to -38). ``G`` is positive semi-definite, so every step is a descent step
    and negative curvature is followed, not approached.

    Args:
        model: trained model, updated in place (its dtype).
        nll: the mean NLL minimised (``(pred, target) -> scalar``).
        x, y: all training samples (full batch).
        kind: ``"regression"`` or ``"classification"`` (how ``G`` is formed, see
            :class:`NLLOutputs`; regression with ``sigma = 1``, which only rescales ``G``).
        steps: L-BFGS iterations per round; rounds: how many times ``G`` is re-estimated.
        damping: relative floor on ``G``'s eigenvalues (its null directions keep a finite scale).
        seed: probe seed (round ``k`` uses ``seed + k``).

    Returns:
        ``{"nll": [before, after each round], "grad_norm": [...], "time_s": float}``.
    """
    from atlasd.downstream.ranks import FlatModel, gauss_newton_probe

    start = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    record: dict[str, Any] = {"nll": [], "grad_norm": []}

    def note() -> None:
        value, grad = _flat_gradient(model, nll, x, y)
        record["nll"].append(value)
        record["grad_norm"].append(float(grad.norm()))

    note()
    for k in range(rounds):
        g = gauss_newton_probe(NLLOutputs(model, kind, 1.0), x, seed=seed + k)
        mu, v = torch.linalg.eigh(g)
        floor = damping * float(mu[-1].clamp_min(1e-30))
        root = ((v * (mu.clamp_min(0.0) + floor).rsqrt()) @ v.T).to(params[0].dtype)
        flat = FlatModel(model)
        w0 = flat.w.detach().clone()
        u = torch.zeros_like(w0, requires_grad=True)
        opt = torch.optim.LBFGS(
            [u],
            lr=1.0,
            max_iter=steps,
            history_size=50,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-12,
            tolerance_change=1e-14,
        )

        def closure(flat=flat, w0=w0, root=root, opt=opt, u=u) -> Tensor:
            opt.zero_grad()
            loss = nll(flat(w0 + root @ u, x), y)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            nn.utils.vector_to_parameters(w0 + root @ u.detach(), params)
        note()
    record["time_s"] = time.perf_counter() - start
    return record


@torch.no_grad()
def _mean_nll(model: nn.Module, nll: Callable, x: Tensor, y: Tensor, batch: int = 256) -> float:
    total = sum(
        float(nll(model(x[i : i + batch]), y[i : i + batch])) * x[i : i + batch].shape[0]
        for i in range(0, x.shape[0], batch)
    )
    return total / x.shape[0]


# ---------------------------------------------------------------------------------------------
# Measurements


def conv_rotation_tangent(model: nn.Module, generator: Tensor) -> Tensor | None:
    """Tangent ``(d,)`` (float64, ``named_parameters`` order of the trainable parameters) of
    transforming every ``nn.Conv2d`` kernel of ``model`` by ``exp(t A)``: ``K -> K(exp(tA) z)``.

    For a stack of convolutions between scalar channels this is the weight-space image of the
    chart transformation: the network with kernels ``K(g z)`` computes ``g^-1 . f(g . x)``, so
    when ``f`` is equivariant to ``g`` the tangent is a flat direction of the loss (the notes'
    ``p(x | w*) = p(x | rho(g) w*)``). Kernels are transformed as fields on their pixel grid
    (:func:`lie_derivative`, central differences, zero outside the kernel), biases are left
    alone. Returns None when the model has no trainable ``nn.Conv2d`` weight, or a parameter
    that is neither a conv weight nor a bias (the tangent is then unknown).
    """
    from atlasd.downstream.emulate import lie_derivative

    convs = {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    parts, found = [], False
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in convs:
            k = p.detach().to(torch.float64)
            dk = -lie_derivative(k.reshape(-1, 1, *k.shape[-2:]), generator.to(torch.float64))
            parts.append(dk.reshape(-1))
            found = True
        elif name.endswith(".bias"):
            parts.append(torch.zeros(p.numel(), dtype=torch.float64))
        else:
            return None
    return torch.cat(parts) if found else None


def _in_dtype(
    model: nn.Module, x: Tensor, y: Tensor, dtype: str
) -> tuple[nn.Module, Tensor, Tensor]:
    """``(model, x, y)`` for second-order measurements: float64 copies when ``dtype`` is
    ``"float64"`` (integer labels stay as they are), else unchanged. Why: on the heat conv
    stack (steps 2, anisotropic, polished) Lanczos on float32 Hessian-vector products gave a
    most negative eigenvalue of -3.6e7, the float64 copy of the same weights -4.7e6: float32
    rounding in products against a largest eigenvalue of 1.9e13 invents negative curvature,
    and the localisation gamma built from it would be 8x too large."""
    if dtype == "float32":
        return model, x, y
    from atlasd.downstream.ranks import float64_copy

    return float64_copy(model), x.double(), y.double() if y.is_floating_point() else y


def control_generators(generators: Tensor, tol: float = 1e-6) -> Tensor:
    """``(m, 2, 2)`` float64 control generators for the symmetry-direction curvature: the two
    shears ``diag(1, -1)`` and ``[[0, 1], [1, 0]]`` with their components along the span of
    ``generators`` ``(k, 2, 2)`` removed (Frobenius inner product), unit Frobenius norm; a
    shear left with norm below ``tol`` is dropped (then ``m < 2``).

    Why shears: transforming every kernel by a shear is the same construction as by the
    discovered rotation (area-preserving, same kernels, same weights), but isotropic data gives
    it no reason to be flat. The ratio of the two curvatures on one set of weights therefore
    compares the symmetry's direction with a matched non-symmetry on the same model and data,
    which the susceptibility across data versions cannot (there the function to learn changes
    too)."""
    gens = torch.as_tensor(generators, dtype=torch.float64)
    if gens.ndim != 3 or gens.shape[1:] != (2, 2):
        raise ValueError(f"generators must be (k, 2, 2), got {tuple(gens.shape)}")
    gens = gens.reshape(-1, 4)
    if gens.shape[0]:
        u, sv, _ = torch.linalg.svd(gens.T, full_matrices=False)
        q = u[:, sv > tol * max(float(sv[0]), 1.0)]
    else:
        q = gens.new_zeros(4, 0)
    shears = torch.tensor([[1.0, 0.0, 0.0, -1.0], [0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    out = []
    for c in shears:
        for basis in [*q.T, *out]:
            c = c - (c @ basis) * basis
        if float(c.norm()) > tol:
            out.append(c / c.norm())
    return torch.stack(out).reshape(-1, 2, 2) if out else torch.zeros(0, 2, 2, dtype=torch.float64)


def _direction(
    model: nn.Module,
    generator: Tensor,
    g: Tensor,
    mean_mu: float,
    mu: Tensor,
    w_norm: float,
    hvp: Callable[[Tensor], Tensor],
) -> dict[str, Any]:
    """Curvature of the loss along the kernel-transformation tangent of one ``(2, 2)``
    generator: Gauss-Newton ``t^T G t / |t|^2`` (against a random direction and as a quantile of
    ``G``'s spectrum ``mu``) and Hessian ``t^T H t / |t|^2`` (``hvp``: ``v -> H v``)."""
    t = conv_rotation_tangent(model, generator)
    if t is None or float(t.norm()) == 0.0:
        return {"available": False}
    tt = float(t @ t)
    q = float(t @ g @ t) / tt
    return {
        "available": True,
        # how far the weights move along the orbit: ~0 when every kernel is already
        # invariant, and then there is no orbit direction to be flat
        "tangent_norm_relative": float(t.norm()) / w_norm,
        "curvature": q,
        "relative_to_random": q / mean_mu if mean_mu > 0 else math.nan,
        "spectrum_quantile": float((mu < q).double().mean()),
        "hessian_curvature": float(t @ hvp(t)) / tt,
    }


def _flat_gradient(model: nn.Module, nll: Callable, x: Tensor, y: Tensor) -> tuple[float, Tensor]:
    """``(L_n(w*), grad L_n(w*))`` over the data, float64 gradient in parameter order."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = nll(model(x), y)
    grads = torch.autograd.grad(loss, params)
    return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads]).to(torch.float64)


def gradient_bias(grad: Tensor, g: Tensor, n_beta: float, localization: float) -> float:
    """Quadratic-model bias of the LLC estimate at a ``w*`` with non-zero gradient.

    With ``L_n(w* + delta) ~ L_n(w*) + grad . delta + delta^T G delta / 2`` the localised
    posterior is Gaussian with mean ``-n_beta (n_beta G + gamma)^-1 grad``, and
    ``n_beta E[L_n - L_n(w*)]`` is half the effective dimension plus
    ``-n_beta^2 sum_i grad_i^2 (n_beta mu_i / 2 + gamma) / (n_beta mu_i + gamma)^2`` (eigenbasis
    of ``G``), which this returns (<= 0: the chains slide downhill)."""
    mu, v = torch.linalg.eigh(g)
    mu = mu.clamp_min(0.0)
    gi2 = (v.T @ grad).square()
    a = n_beta * mu + localization
    return float(-(n_beta**2) * (gi2 * (n_beta * mu / 2 + localization) / a.square()).sum())


def measure_degeneracy(
    model: nn.Module,
    kind: str,
    nll: Callable[[Tensor, Tensor], Tensor],
    sigma: float,
    data: tuple[Tensor, Tensor],
    heldout: tuple[Tensor, Tensor],
    generators: Tensor,
    llc: dict[str, Any],
    *,
    n_rank: int,
    n_emulate: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Every degeneracy measurement of one trained model at its current weights ``w*``.

    Args:
        model: trained field model ``(B, C, h, h) -> (B, C_out, h', h')``.
        kind: ``"regression"`` or ``"classification"`` (how the Gauss-Newton matrix is formed).
        nll: the per-sample mean negative log-likelihood the LLC is of.
        sigma: regression noise level of ``nll`` (ignored for classification).
        data: ``(x, y)`` the ``n`` training samples (the LLC's data).
        heldout: ``(x, y)`` held-out samples (held-out NLL, emulability).
        generators: ``(k, 2, 2)`` chart generators (emulability and symmetry directions).
        llc: ``chains, draws, burn_in, batch_size, step, localization, full_batch_every``
            and optionally ``hessian_dtype`` (of the Hessian curvature along directions;
            default ``"float64"``) and ``step_check`` (a factor ``f`` in ``[0, 1)``: a second
            estimate at step ``f * step``, burn-in ``ceil(burn_in / f)``, sampler seed
            ``seed + 1``; default 0, none).
        n_rank: samples for the functional dimension, the Gauss-Newton matrix ``G`` and its
            rank (the first ``n_rank`` training samples: ``G`` approximates the Hessian of
            ``L_n``).
        n_emulate: held-out samples for emulability.
        seed: the sampler's and the emulability split's seed.

    Returns:
        a JSON-ready dict: ``train_nll``, ``heldout_nll``, ``grad_norm`` (of the NLL at ``w*``),
        ``functional_dimension`` and its ``rank_gap``, ``gauss_newton`` (``rank``: of the
        whitened Jacobian ``J~`` at :func:`jacobian_spectrum`'s tolerance; ``top``, ``trace``,
        ``eigenvalues`` descending),
        ``effective_dimension``, ``rank_bounds``, ``llc`` (``mean``, ``std``, ``stderr``,
        ``per_chain``, ``healthy``, ``problems``, settings, ``time_s``, ``step_check``: None
        or the second estimate with :func:`step_dependence`'s fields), ``emulability``,
        ``symmetry_directions`` (one entry per generator: Gauss-Newton and Hessian curvature,
        their ratios to a random direction and to the shear controls) and
        ``control_directions`` (one entry per :func:`control_generators` shear).
    """
    from atlasd.downstream.emulate import emulation
    from atlasd.downstream.llc import (
        LLCHealthError,
        default_llc_settings,
        estimate_llc,
        step_dependence,
    )
    from atlasd.downstream.ranks import (
        effective_dimension,
        gauss_newton_probe,
        hessian_vector_product,
        jacobian_spectrum,
        llc_rank_bounds,
    )

    x, y = data
    xh, yh = heldout
    n = x.shape[0]
    train_nll, grad = _flat_gradient(model, nll, x, y)
    out: dict[str, Any] = {
        "train_nll": train_nll,
        "heldout_nll": _mean_nll(model, nll, xh, yh),
        "grad_norm": float(grad.norm()),
    }
    start = time.perf_counter()
    # one pass gives the Gauss-Newton matrix and its rank (from the singular values of J~:
    # forming J~^T J~ first would square away half the resolution); for regression J~ = J /
    # sigma, so the functional dimension is the same rank
    gn_spec = jacobian_spectrum(NLLOutputs(model, kind, sigma), x[:n_rank])
    spec = gn_spec if kind == "regression" else jacobian_spectrum(model, x[:n_rank])
    gn_rank = gn_spec.rank
    # the curvature itself over all n samples, by random probes: G of a few samples misses
    # directions that other samples make stiff, and a preconditioner built from it let the
    # chains diverge along them (measured on digits with 8 samples)
    g = gauss_newton_probe(NLLOutputs(model, kind, sigma), x, seed=seed)
    d = g.shape[0]
    mu = torch.linalg.eigvalsh(g).flip(0).clamp_min(0.0)
    out["functional_dimension"] = spec.rank
    out["rank_gap"] = spec.gap
    out["gauss_newton"] = {
        "rank": gn_rank,
        "top": float(mu[0]),
        "trace": float(mu.sum()),
        "eigenvalues": mu.tolist(),
    }
    out["rank_bounds"] = list(llc_rank_bounds(spec.rank, spec.n_parameters))
    out["ranks_time_s"] = time.perf_counter() - start

    # symmetry directions: curvature along the weight-space image of each generator, against
    # a random direction's (trace / d), as a quantile of the spectrum, and against the same
    # construction with shears (control_generators) on the same weights
    trainable = [p.detach() for p in model.parameters() if p.requires_grad]
    w_norm = float(nn.utils.parameters_to_vector(trainable).to(torch.float64).norm())
    mean_mu = float(mu.sum()) / d

    curv_model, xc, yc = _in_dtype(model, x, y, llc.get("hessian_dtype", "float64"))

    def hvp(v: Tensor) -> Tensor:
        return hessian_vector_product(curv_model, nll, xc, yc, v)

    def along(a: Tensor) -> dict[str, Any]:
        return _direction(model, a, g, mean_mu, mu, w_norm, hvp)

    controls = [{"generator": c.tolist(), **along(c)} for c in control_generators(generators)]
    usable = [c for c in controls if c["available"]]
    directions = []
    for i, a in enumerate(generators):
        entry = {"generator": i, **along(a)}
        if entry["available"] and usable:
            entry["relative_to_control"] = entry["curvature"] / statistics.fmean(
                c["curvature"] for c in usable
            )
            entry["hessian_relative_to_control"] = entry["hessian_curvature"] / statistics.fmean(
                c["hessian_curvature"] for c in usable
            )
        directions.append(entry)
    out["symmetry_directions"] = directions
    out["control_directions"] = controls

    n_beta = float(default_llc_settings(n)["n_beta"])
    gamma = float(llc["localization"])
    for entry in (*directions, *controls):
        if entry["available"]:
            # the direction's share of the effective dimension at this localisation: what it
            # adds to the LLC on a quadratic basin (0: below the resolution, 1: fully counted)
            entry["effective_weight"] = effective_weight(entry["curvature"], n_beta, gamma)
    out["effective_dimension"] = effective_dimension(mu, n_beta, gamma)
    out["gradient_bias"] = gradient_bias(grad, g, n_beta, gamma)
    pre = torch.linalg.inv(n_beta * g + gamma * torch.eye(d, dtype=g.dtype))
    pre = (pre + pre.T) / 2
    settings = {
        "n_beta": n_beta,
        "localization": gamma,
        "preconditioned": True,
        "gradient_correction": True,
        "chains": int(llc["chains"]),
        "draws": int(llc["draws"]),
        "full_batch_every": int(llc["full_batch_every"]),
    }

    def sample(step: float, burn_in: int, sampler_seed: int) -> dict[str, Any]:
        recorded = {"step_size": step, "burn_in": burn_in, **settings}
        try:
            est = estimate_llc(
                model,
                (x, y),
                nll,
                n_beta=n_beta,
                localization=gamma,
                step_size=step,
                chains=int(llc["chains"]),
                draws=int(llc["draws"]),
                burn_in=burn_in,
                batch_size=min(int(llc["batch_size"]), n),
                seed=sampler_seed,
                check="off",
                preconditioner=pre,
                gradient_correction=True,
                full_batch_every=int(llc["full_batch_every"]),
            )
        except LLCHealthError as exc:
            # every chain diverged: recorded as a failed measurement, not hidden
            return {
                "mean": math.nan,
                "std": math.nan,
                "stderr": math.nan,
                "per_chain": [],
                "healthy": False,
                "problems": [str(exc)],
                "below_fraction": [],
                "time_s": math.nan,
                **recorded,
            }
        return {
            "mean": est.mean,
            "std": est.std,
            "stderr": est.stderr,
            "per_chain": [float(v) for v in est.per_chain],
            "healthy": est.healthy,
            "problems": list(est.problems),
            "below_fraction": est.diagnostics["below_fraction"].tolist(),
            "time_s": est.wall_s,
            **recorded,
        }

    step, burn_in = float(llc["step"]), int(llc["burn_in"])
    out["llc"] = sample(step, burn_in, seed)
    factor = float(llc.get("step_check", 0.0))
    if factor > 0:
        # same simulated time: the preconditioned chains relax in about 2 / step steps, so the
        # burn-in grows by 1 / factor; an independent sampler seed keeps the two independent
        fine = sample(step * factor, math.ceil(burn_in / factor), seed + 1)
        fine.update(
            step_dependence(
                (out["llc"]["mean"], out["llc"]["stderr"], step),
                (fine["mean"], fine["stderr"], step * factor),
            )
        )
        out["llc"]["step_check"] = fine
    else:
        out["llc"]["step_check"] = None
    start = time.perf_counter()
    emulate = []
    for i, a in enumerate(generators):
        e = emulation(model, a.to(torch.float64), xh[:n_emulate], action="field", seed=seed)
        emulate.append(
            {
                "generator": i,
                "residual": e.residual,
                "fit_residual": e.fit_residual,
                "outside_symmetries": e.outside_symmetries,
                "output_change": e.output_change,
                "method": e.method,
            }
        )
    out["emulability"] = emulate
    out["emulability_time_s"] = time.perf_counter() - start
    return out


def run_degeneracy(
    config: dict,
    group: DiscoveredGroup,
    run_dir: Path,
    log: Callable[[str], None] | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the unconstrained and the group model on symmetric and symmetry-broken data and
    measure their degeneracy (see the module docstring).

    Args:
        config: ``{"task": "heat" | "sphere_digits", "data": {DataModule options}, "broken":
            {options that break the symmetry}, "samples": {n, n_heldout, n_rank, n_emulate},
            "models": {"baseline": {hidden, kernel_size}, "equivariant": {hidden, kernel_size,
            mode}}, "training": {epochs, lr, batch_size, polish_steps, polish_rounds}, "llc":
            {chains, draws, burn_in, batch_size, step, noise_std, localization,
            full_batch_every, hessian_dtype, step_check}, "seeds": [...]}``.
        group: the discovered group (2x2 chart transformations).
        run_dir: folder for Lightning's files (created).
        log: optional progress printer (one line per measured model).
        trainer_kwargs: :class:`lightning.Trainer` arguments for every training fit
            (``accelerator``, ``devices``, ``precision``, ...; e.g. ``--trainer.*``), overriding
            the defaults of :func:`~atlasd.downstream.experiments.quiet_trainer`; ``callbacks``
            are added. Only the Adam fits use them: each trained model is moved back to the CPU
            (in the dtype it was built in) before the polish, the LLC sampling and the Hessians.

    Returns:
        the report dict (``runs``: one entry per seed, data version and model; ``summary``:
        per data version and model, mean and sd over seeds; ``susceptibility``: per model,
        ``delta`` = LLC(symmetric) - LLC(broken) with its uncertainty, the predicted shift of
        the rank bound, and at the run's localisation the ``attainable_drop`` (half the
        symmetry directions' :func:`effective_weight` on the broken data) and the
        ``quadratic_drop`` (half its change between the data versions; positive = a drop);
        ``table`` and ``reading``: Markdown).

    Raises:
        ValueError: malformed config, a group that does not act on R^2, too few samples.
    """
    from atlasd.atlas import crop
    from atlasd.downstream.experiments import count_parameters
    from atlasd.downstream.llc import default_llc_settings
    from atlasd.downstream.ranks import hessian_extreme_eigenvalue

    cfg = _parse_config(config)
    if group.d != 2:
        raise ValueError(f"group acts on R^{group.d}; the field tasks need 2x2 chart generators")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _m: None)
    task, kind = cfg["task"], DEGENERACY_TASKS[cfg["task"]]
    samples = cfg["samples"]
    versions = {"symmetric": cfg["data"], "broken": {**cfg["data"], **cfg["broken"]}}
    base_seed = int(cfg["data"].get("seed", 0))
    # every training seed gets its own fields (data seed + training seed) and its own patches,
    # so the spread over seeds includes the data's variability; both data versions of a seed
    # share the seed, so the pair differs only in the symmetry
    data = {
        (seed, v): chart_samples(
            task, {**opts, "seed": base_seed + seed}, samples["n"], samples["n_heldout"], seed
        )
        for seed in cfg["seeds"]
        for v, opts in versions.items()
    }
    x0 = next(iter(data.values()))[0]
    in_channels, in_radius = int(x0.shape[1]), (int(x0.shape[-1]) - 1) // 2
    if kind == "regression":
        out_channels = int(next(iter(data.values()))[1].shape[1])
    else:
        out_channels = next(iter(data.values()))[4]
    generators = group.algebra.to(torch.float64)

    sigma = cfg["llc"]["noise_std"]
    trained: list[dict[str, Any]] = []
    for seed in cfg["seeds"]:
        for version in ("symmetric", "broken"):
            x, y, xh, yh, _ = data[(seed, version)]
            models, r_out = _build(group, cfg, in_channels, out_channels, in_radius, seed)
            y, yh = crop(y, r_out).contiguous(), crop(yh, r_out).contiguous()
            for name, model in models.items():
                # Adam is invariant to the loss scale, so regression trains on sigma = 1
                fit_nll = gaussian_nll(1.0) if kind == "regression" else categorical_nll
                wall, polish = _fit(
                    model,
                    fit_nll,
                    x,
                    y,
                    kind,
                    cfg["training"],
                    seed,
                    run_dir / name,
                    trainer_kwargs=trainer_kwargs,
                )
                if kind == "regression" and sigma == "auto":
                    # the first fitted model (seed 0, symmetric, baseline) sets the noise level
                    with torch.no_grad():
                        resid = torch.cat(
                            [model(x[i : i + 256]) - y[i : i + 256] for i in range(0, len(x), 256)]
                        )
                    sigma = float(resid.square().mean().sqrt())
                say(
                    f"seed {seed} {version} {name}: trained in {wall:.1f} s"
                    + (
                        f" (polish: NLL {polish['nll'][0]:.5g} -> {polish['nll'][-1]:.5g}, "
                        f"gradient norm {polish['grad_norm'][0]:.3g} -> "
                        f"{polish['grad_norm'][-1]:.3g})"
                        if polish
                        else ""
                    )
                )
                trained.append(
                    {
                        "seed": seed,
                        "data": version,
                        "model": name,
                        "module": model,
                        "split": ((x, y), (xh, yh)),
                        "train_time_s": wall,
                        "polish": polish,
                    }
                )

    nll = gaussian_nll(float(sigma)) if kind == "regression" else categorical_nll
    noise = float(sigma) if kind == "regression" else 1.0
    llc_opts = dict(cfg["llc"])
    n_beta = float(default_llc_settings(samples["n"])["n_beta"])
    for t in trained:
        (x, y), _ = t["split"]
        m, xc, yc = _in_dtype(t["module"], x, y, cfg["llc"]["hessian_dtype"])
        t["hessian_min_eigenvalue"] = hessian_extreme_eigenvalue(m, nll, xc, yc)
    # the localised posterior is proper only if gamma outweighs n_beta times the most negative
    # Hessian eigenvalue; one gamma for every model keeps their LLCs comparable
    worst = max(0.0, -min(t["hessian_min_eigenvalue"] for t in trained))
    auto_gamma = max(1.0, 2.0 * n_beta * worst)
    if llc_opts["localization"] == "auto":
        llc_opts["localization"] = auto_gamma
        say(
            f"localization gamma = {auto_gamma:.4g} (most negative Hessian eigenvalue "
            f"{-worst:.4g}, n_beta {n_beta:.4g})"
        )
    elif n_beta * worst > llc_opts["localization"]:
        say(
            f"warning: localization gamma = {llc_opts['localization']:.4g} is below n_beta "
            f"|lambda_min| = {n_beta * worst:.4g}: the localised posterior is improper along "
            f"that direction and chains can drift away; auto would take {auto_gamma:.4g}"
        )

    runs: list[dict[str, Any]] = []
    for t in trained:
        model = t.pop("module")
        (x, y), (xh, yh) = t.pop("split")
        raw, free = count_parameters(model)
        start = time.perf_counter()
        m = measure_degeneracy(
            model,
            kind,
            nll,
            noise,
            (x, y),
            (xh, yh),
            generators,
            llc_opts,
            n_rank=samples["n_rank"],
            n_emulate=samples["n_emulate"],
            seed=t["seed"],
        )
        m.update(t)  # seed, data, model, train time, Hessian's smallest eigenvalue
        m.update(
            {
                "raw_parameters": raw,
                "free_parameters": free,
                "measure_time_s": time.perf_counter() - start,
            }
        )
        say(
            f"seed {t['seed']} {t['data']} {t['model']}: LLC {m['llc']['mean']:.2f} +- "
            f"{m['llc']['std']:.2f} (half effective dim {m['effective_dimension'] / 2:.2f}), "
            f"functional dim {m['functional_dimension']} of {free}, GN rank "
            f"{m['gauss_newton']['rank']}, emulability "
            + ", ".join(f"{e['residual']:.3f}" for e in m["emulability"])
        )
        runs.append(m)

    info = {
        "dim": group.dim,
        "n_components": group.n_components,
        "generators": group.algebra.tolist(),
    }
    report = summarise_degeneracy(cfg, info, runs, sigma if kind == "regression" else None)
    report["n_samples"] = samples["n"]
    return report
