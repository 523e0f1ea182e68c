"""Typed configuration of the downstream comparison (torch-free: the CLI parses it at start-up).

:class:`DownstreamConfig` is the whole config; :class:`TrainingConfig` and
:class:`ModelsConfig` (two :class:`ModelConfig`) its sections. Every class checks itself in
``__post_init__``, builds from a plain dict with ``from_dict`` (unknown keys are a ValueError
that lists the options) and gives one back with ``to_dict``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from atlasd.checks import check_keys, check_positive, check_positive_int, check_seeds

__all__ = ["DownstreamConfig", "ModelConfig", "ModelsConfig", "TrainingConfig"]

# the options of each model, per input family of the task (TaskSpec.inputs) and model
MODEL_OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "sets": {
        "baseline": ("phi_hidden", "rho_hidden"),
        "equivariant": ("phi_hidden", "rho_hidden", "pool", "scale"),
    },
    "fields": {
        "baseline": ("hidden", "kernel_size"),
        "equivariant": ("hidden", "kernel_size", "mode"),
    },
}


@dataclass
class TrainingConfig:
    """The budget both models of the comparison share.

    Attributes:
        epochs: training epochs (Adam).
        lr: learning rate.
        batch_size: training batch size.
        weight_decay: Adam's weight decay.
        gradient_clip_val: Lightning's gradient clipping (None: off).
        eval_batch_size: batch size of the test-split evaluation.
    """

    epochs: int = 5
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    gradient_clip_val: float | None = None
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            check_positive_int(f"training.{name}", getattr(self, name))
        check_positive("training.lr", self.lr)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TrainingConfig:
        d = dict(d or {})
        check_keys("training", d, [f.name for f in fields(cls)])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelConfig:
    """Options of one model; None keeps the default of the study and the task's family.

    Attributes:
        phi_hidden: sets: widths (baseline) or reps (equivariant) of the per-element network.
        rho_hidden: sets: widths or reps of the network after pooling.
        pool: sets, equivariant: pooling of the set (``"sum"`` or ``"mean"``).
        scale: sets, equivariant: input scaling (``"auto"`` or a number).
        hidden: fields: hidden widths (baseline) or reps such as ``"8*S + 4*V"``.
        kernel_size: fields: odd kernel size.
        mode: fields, equivariant: the EquivariantConv2d mode.
    """

    phi_hidden: list[int | str] | None = None
    rho_hidden: list[int | str] | None = None
    pool: str | None = None
    scale: float | str | None = None
    hidden: list[int | str] | None = None
    kernel_size: int | None = None
    mode: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, name: str = "model") -> ModelConfig:
        d = dict(d or {})
        options = [f.name for f in fields(cls)]
        bad = sorted(set(d) - set(options))
        if bad:
            raise ValueError(
                f"unknown option(s) {', '.join(bad)} for the {name} model; "
                f"options are {', '.join(sorted(options))}"
            )
        return cls(**d)

    def given(self) -> dict[str, Any]:
        """The options set (not None), in field order."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return self.given()


@dataclass
class ModelsConfig:
    """The ``models`` section: the baseline's and the equivariant model's options."""

    baseline: ModelConfig = field(default_factory=ModelConfig)
    equivariant: ModelConfig = field(default_factory=ModelConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ModelsConfig:
        d = dict(d or {})
        unknown = sorted(set(d) - {"baseline", "equivariant"})
        if unknown:
            raise ValueError(
                f"unknown model(s) {', '.join(unknown)}; models are baseline, equivariant"
            )
        return cls(**{k: ModelConfig.from_dict(v, k) for k, v in d.items()})

    def check(
        self, family: str, task: str, options: dict[str, tuple[str, ...]] | None = None
    ) -> None:
        """Refuse options that the task's model family (``"sets"``, ``"fields"``) does not
        take; ``options``: model -> allowed options (default: the downstream families')."""
        allowed = options or MODEL_OPTIONS[family]
        for name in ("baseline", "equivariant"):
            bad = sorted(set(getattr(self, name).given()) - set(allowed[name]))
            if bad:
                raise ValueError(
                    f"unknown option(s) {', '.join(bad)} for the {name} model of task {task}; "
                    f"options are {', '.join(sorted(allowed[name]))}"
                )

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline.to_dict(), "equivariant": self.equivariant.to_dict()}


@dataclass
class DownstreamConfig:
    """The downstream comparison's config.

    Attributes:
        task: a registered task (``atlasd.datasets.TASKS``) with a classification target.
        data: the task's DataModule options (the same data for every seed).
        training: the shared training budget.
        models: the two models' options.
        seeds: model seeds (initial weights and batch order); None: given to
            :func:`run_downstream` instead.
    """

    task: str
    data: dict[str, Any] = field(default_factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    seeds: list[int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str):
            raise ValueError(f"task must be a task name, got {self.task!r}")
        if self.seeds is not None:
            self.seeds = check_seeds("seeds", self.seeds)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DownstreamConfig:
        if not isinstance(d, dict) or "task" not in d:
            raise ValueError("config must be a dict with a 'task' entry")
        check_keys("", d, sorted(f.name for f in fields(cls)))
        return cls(
            task=d["task"],
            data=dict(d.get("data") or {}),
            training=TrainingConfig.from_dict(d.get("training")),
            models=ModelsConfig.from_dict(d.get("models")),
            seeds=d.get("seeds"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "data": dict(self.data),
            "training": self.training.to_dict(),
            "models": self.models.to_dict(),
            "seeds": self.seeds,
        }
