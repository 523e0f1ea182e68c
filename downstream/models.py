"""The models both downstream studies train, their seeded initialisation and parameter counts.

* :func:`build_models`: the downstream comparison's baseline and group-built model for a task
  (a DeepSet pair for set inputs, a conv-stack pair for fields);
* :func:`build_field_pair`: the degeneracy study's two conv stacks, cropped to the output
  radius both keep exact (:class:`CenterCrop`);
* :func:`quiet_trainer`: the Lightning Trainer of every short fit of both studies.

Every model is initialised from a ``torch.Generator`` (:func:`seeded_init_` for the plain
layers, the ``generator`` argument of the equivariant ones), never from the global RNG, so the
same seed gives the same weights.

Parameter counts
----------------
``raw_parameters``: the number of scalars an unconstrained network of the same shape would
have (an equivariant conv or linear layer counts as the dense kernel and bias it materialises);
``free_parameters``: the trainable scalars (for the equivariant layers their
``n_free_parameters``, plus every unconstrained parameter such as the gates' mixing layers).
For the baseline both counts are equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from atlasd.datasets.base import TaskSpec
    from atlasd.group import DiscoveredGroup

__all__ = [
    "CenterCrop",
    "ConvNet",
    "DeepSet",
    "EquivariantConvNet",
    "build_field_pair",
    "build_models",
    "count_parameters",
    "out_radius",
    "quiet_trainer",
    "seeded_init_",
]

# defaults of the models section, per input family ("sets" or "fields") and model
MODEL_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "sets": {
        "baseline": {"phi_hidden": [64, 64], "rho_hidden": [64]},
        "equivariant": {
            "phi_hidden": ["16*S + 8*V", "16*S + 8*V"],
            "rho_hidden": ["16*S"],
            "pool": "sum",
            "scale": "auto",
        },
    },
    "fields": {
        "baseline": {"hidden": [16, 16], "kernel_size": 5},
        "equivariant": {"hidden": ["8*S + 4*V", "8*S + 4*V"], "mode": "auto"},
    },
}


def seeded_init_(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise the nn.Linear / nn.Conv2d layers of ``module`` from ``generator`` with
    PyTorch's default bounds (uniform +- 1/sqrt(fan_in)), so runs do not use the global RNG."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)


def _mlp(sizes: Sequence[int], final_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class DeepSet(nn.Module):
    """Baseline set model ``rho(sum_p mask_p phi(x_p))``: (N, P, d) and mask (N, P) -> (N, c)."""

    def __init__(self, d_in: int, n_out: int, phi_hidden: Sequence[int], rho_hidden: Sequence[int]):
        super().__init__()
        if not phi_hidden:
            raise ValueError("phi_hidden must name at least the latent width")
        self.phi = _mlp([d_in, *phi_hidden], final_activation=True)
        self.rho = _mlp([phi_hidden[-1], *rho_hidden, n_out], final_activation=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.phi(x)
        if mask is not None:
            h = h * mask.unsqueeze(-1).to(h.dtype)
        return self.rho(h.sum(-2))


class ConvNet(nn.Module):
    """Baseline per-pixel model: ``nn.Conv2d`` + SiLU stack, then a conv to the outputs.
    (N, C_in, H, W) -> (N, n_classes, H, W), 'same' padding."""

    def __init__(self, in_channels: int, n_classes: int, hidden: Sequence[int], kernel_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        sizes = [in_channels, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Conv2d(a, b, kernel_size, padding=kernel_size // 2), nn.SiLU()]
        layers.append(nn.Conv2d(sizes[-1], n_classes, kernel_size, padding=kernel_size // 2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class EquivariantConvNet(nn.Module):
    """Per-pixel model built from a group of 2x2 chart transformations:
    EquivariantConv2d -> InvariantGate per hidden rep, then EquivariantConv2d to scalar outputs.
    (N, C_in, H, W) -> (N, n_classes, H, W). The input carries the group's in_rep (or
    scalars); each hidden rep is a string such as ``"8*S + 4*V"``."""

    def __init__(
        self,
        group: DiscoveredGroup,
        in_channels: int,
        n_classes: int,
        hidden: Sequence[str],
        kernel_size: int,
        *,
        mode: str = "auto",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        from atlasd.downstream.equivariant import (
            EquivariantConv2d,
            EquivariantSolver,
            InvariantGate,
            Rep,
        )

        solver = EquivariantSolver()
        reps = [Rep.coerce(group, h) for h in hidden]
        convs, gates = [], []
        c_in, rep_in = in_channels, None
        for rep in reps:
            convs.append(
                EquivariantConv2d(
                    group,
                    c_in,
                    rep.dim,
                    kernel_size,
                    rep_in,
                    rep,
                    mode=mode,
                    solver=solver,
                    generator=generator,
                )
            )
            gates.append(InvariantGate(group, rep, solver=solver, generator=generator))
            c_in, rep_in = rep.dim, rep
        convs.append(
            EquivariantConv2d(
                group,
                c_in,
                n_classes,
                kernel_size,
                rep_in,
                n_classes,
                mode=mode,
                solver=solver,
                generator=generator,
            )
        )
        self.convs = nn.ModuleList(convs)
        self.gates = nn.ModuleList(gates)

    def forward(self, x: Tensor) -> Tensor:
        for conv, gate in zip(self.convs[:-1], self.gates, strict=True):
            x = gate(conv(x), dim=1)
        return self.convs[-1](x)


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


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(raw, free)`` parameter counts of ``model`` (see the module docstring).

    Equivariant conv / linear layers count their materialised dense kernel and bias as raw and
    their coefficients as free; every other parameter counts once in both."""
    from atlasd.downstream.equivariant import EquivariantConv2d, EquivariantLinear

    raw = free = 0
    covered: set[int] = set()
    for m in model.modules():
        if isinstance(m, EquivariantConv2d):
            dense = m.out_channels * m.in_channels * m.kernel_size**2
            raw += dense + (m.out_channels if m.bias is not None else 0)
        elif isinstance(m, EquivariantLinear):
            raw += m.rep_out.dim * m.rep_in.dim + (m.rep_out.dim if m.bias is not None else 0)
        else:
            continue
        free += m.n_free_parameters
        covered.update(id(p) for p in m.parameters())
    for p in model.parameters():
        if p.requires_grad and id(p) not in covered:
            raw += p.numel()
            free += p.numel()
    return raw, free


def _options(models: Any, name: str) -> dict[str, Any]:
    """The options a config gives for one model (a ModelConfig, a dict or None), Nones left
    out so that the family's defaults apply."""
    given = getattr(models, name, None) if not isinstance(models, Mapping) else models.get(name)
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        given = given.to_dict()
    return {k: v for k, v in given.items() if v is not None}


def build_models(
    spec: TaskSpec,
    group: DiscoveredGroup,
    models: Any,
    *,
    seed: int,
) -> dict[str, nn.Module]:
    """Build ``{"baseline": ..., "equivariant": ...}`` for a task, initialised from ``seed``
    (same seed, same weights).

    Args:
        spec: the task's :class:`~atlasd.datasets.base.TaskSpec`: ``inputs`` chooses the
            family (``"sets"``: DeepSets on ``(N, P, d)``; ``"fields"``: conv stacks on
            ``(N, C, H, W)``), ``in_channels``, ``d`` and ``n_classes`` size them.
        group: the DiscoveredGroup (acting on R^d of the sets, or on 2x2 chart coordinates).
        models: the ``models`` section: a :class:`~atlasd.downstream.experiments.config.
            ModelsConfig` or ``{"baseline": {...}, "equivariant": {...}}`` (validated against
            the family by :meth:`ModelsConfig.check`).
        seed: initial weights' seed.
    """
    from atlasd.downstream.equivariant import EquivariantDeepSet
    from atlasd.downstream.experiments.config import ModelsConfig

    if isinstance(models, Mapping):
        models = ModelsConfig.from_dict(models)
    if group.d != spec.d:
        raise ValueError(f"group acts on R^{group.d} but task {spec.name} needs R^{spec.d}")
    family = "sets" if spec.inputs == "sets" else "fields"
    models.check(family, spec.name)
    base = {**MODEL_DEFAULTS[family]["baseline"], **_options(models, "baseline")}
    eq = {**MODEL_DEFAULTS[family]["equivariant"], **_options(models, "equivariant")}
    n_classes = int(spec.n_classes)
    gen = torch.Generator().manual_seed(int(seed))
    if family == "sets":
        baseline: nn.Module = DeepSet(spec.d, n_classes, base["phi_hidden"], base["rho_hidden"])
        seeded_init_(baseline, gen)
        equivariant: nn.Module = EquivariantDeepSet(
            group,
            "V",
            n_classes,
            phi_hidden=eq["phi_hidden"],
            rho_hidden=eq["rho_hidden"],
            pool=eq["pool"],
            scale=eq["scale"],
            generator=gen,
        )
    else:
        k = int(base["kernel_size"])
        baseline = ConvNet(spec.in_channels, n_classes, base["hidden"], k)
        seeded_init_(baseline, gen)
        equivariant = EquivariantConvNet(
            group,
            spec.in_channels,
            n_classes,
            eq["hidden"],
            int(eq.get("kernel_size", k)),
            mode=eq["mode"],
            generator=gen,
        )
    return {"baseline": baseline, "equivariant": equivariant}


def out_radius(in_radius: int, n_layers: int, kernel_size: int) -> int:
    """The radius of the output pixels that ``n_layers`` 'same'-padded convolutions of
    ``kernel_size`` compute from the input patch alone (no padding in their receptive field)."""
    r = in_radius - n_layers * (kernel_size // 2)
    if r < 0:
        raise ValueError(
            f"{n_layers} layers of kernel size {kernel_size} need a chart radius of at least "
            f"{n_layers * (kernel_size // 2)}, the atlas has {in_radius}"
        )
    return r


def build_field_pair(
    group: DiscoveredGroup,
    baseline: Mapping[str, Any],
    equivariant: Mapping[str, Any],
    in_channels: int,
    out_channels: int,
    in_radius: int,
    seed: int,
) -> tuple[dict[str, nn.Module], int]:
    """The degeneracy study's two conv stacks (``baseline``: ``hidden`` widths and
    ``kernel_size``; ``equivariant``: ``hidden`` reps, ``kernel_size``, ``mode``), each
    cropped to the output radius that both keep exact: ``(models, r_out)``; both map
    ``(B, in_channels, h, h)`` to ``(B, out_channels, 2 r_out + 1, 2 r_out + 1)``."""
    n_layers = len(baseline["hidden"]) + 1
    if len(equivariant["hidden"]) + 1 != n_layers or int(equivariant["kernel_size"]) != int(
        baseline["kernel_size"]
    ):
        raise ValueError(
            "models.baseline and models.equivariant must have the same depth and kernel size "
            "(the comparison is about the constraint, not the architecture)"
        )
    k = int(baseline["kernel_size"])
    r_out = out_radius(in_radius, n_layers, k)
    gen = torch.Generator().manual_seed(seed)
    base = ConvNet(in_channels, out_channels, [int(h) for h in baseline["hidden"]], k)
    seeded_init_(base, gen)
    eq = EquivariantConvNet(
        group,
        in_channels,
        out_channels,
        list(equivariant["hidden"]),
        k,
        mode=equivariant["mode"],
        generator=gen,
    )
    return {"baseline": CenterCrop(base, r_out), "equivariant": CenterCrop(eq, r_out)}, r_out


def quiet_trainer(
    epochs: int,
    root: Path,
    gradient_clip_val: float | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> lightning.Trainer:
    """A Lightning Trainer for the short fits of both studies: no logger, checkpoints, progress
    bar or model summary (the reports carry the figures), ``accelerator="auto"`` (a GPU when one
    is visible, else the CPU) on one device.

    ``trainer_kwargs`` (e.g. ``--trainer.*`` from the command line) override these defaults;
    their ``callbacks`` are added."""
    kwargs: dict[str, Any] = {
        "max_epochs": int(epochs),
        "accelerator": "auto",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "gradient_clip_val": gradient_clip_val,
        "default_root_dir": root,
    }
    extra = dict(trainer_kwargs or {})
    callbacks = list(extra.pop("callbacks", None) or [])
    kwargs.update(extra)
    return lightning.Trainer(callbacks=callbacks, **kwargs)
