"""Typed configuration of the degeneracy study (torch-free: the CLI parses it at start-up).

:class:`DegeneracyConfig` is the whole config; :class:`SamplesConfig`,
:class:`DegeneracyTrainingConfig`, :class:`LLCConfig` and the models section
(:class:`~atlasd.downstream.experiments.config.ModelsConfig`) its sections. The LLC section
uses :func:`~atlasd.downstream.degeneracy.estimate_llc`'s keyword names (``step_size``). Each
class checks itself in ``__post_init__``, builds from a dict with ``from_dict`` (unknown keys:
a ValueError listing the options) and gives one back with ``to_dict``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from atlasd.checks import (
    check_choice,
    check_keys,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    check_seeds,
)
from atlasd.downstream.experiments.config import ModelsConfig

__all__ = [
    "DegeneracyConfig",
    "DegeneracyTrainingConfig",
    "LLCConfig",
    "SamplesConfig",
]

# the degeneracy study's model options and their defaults (conv stacks on chart patches)
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "baseline": ("hidden", "kernel_size"),
    "equivariant": ("hidden", "kernel_size", "mode"),
}
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "baseline": {"hidden": [8], "kernel_size": 5},
    "equivariant": {"hidden": ["4*S + 2*V"], "kernel_size": 5, "mode": "auto"},
}


def _from_dict(cls: type, d: Any, what: str) -> Any:
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a mapping of options, got {d!r}")
    names = sorted(f.name for f in fields(cls))
    hint = " (step is now step_size)" if "step" in d and "step_size" in names else ""
    check_keys(what, d, names, hint)
    return cls(**d)


@dataclass
class SamplesConfig:
    """Chart samples: ``n`` training (the LLC's data), ``n_heldout`` held out, the first
    ``n_rank`` training samples for the ranks, ``n_emulate`` held-out ones for emulability."""

    n: int = 2000
    n_heldout: int = 500
    n_rank: int = 48
    n_emulate: int = 64

    def __post_init__(self) -> None:
        for key in ("n", "n_heldout", "n_rank", "n_emulate"):
            check_positive_int(f"samples.{key}", getattr(self, key))
        if self.n_rank > self.n:
            raise ValueError("samples.n_rank cannot exceed samples.n (it takes training samples)")
        if self.n_emulate > self.n_heldout:
            raise ValueError("samples.n_emulate cannot exceed samples.n_heldout")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SamplesConfig:
        return _from_dict(cls, d, "samples")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DegeneracyTrainingConfig:
    """Adam (cosine decay) for ``epochs``, then ``polish_rounds`` x ``polish_steps`` of the
    whitened L-BFGS polish (0: none)."""

    epochs: int = 30
    lr: float = 0.01
    batch_size: int = 64
    polish_steps: int = 100
    polish_rounds: int = 3

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size"):
            check_positive_int(f"training.{key}", getattr(self, key))
        check_positive("training.lr", self.lr)
        for key in ("polish_steps", "polish_rounds"):
            check_nonnegative_int(f"training.{key}", getattr(self, key))

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DegeneracyTrainingConfig:
        return _from_dict(cls, d, "training")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LLCConfig:
    """The LLC sampler (names as :func:`estimate_llc`'s keywords) and the study's extras.

    Attributes:
        chains, draws, burn_in, batch_size, step_size, localization, full_batch_every: as in
            :func:`estimate_llc` (``localization: "auto"``: the smallest gamma that keeps every
            model's localised posterior proper, see the module docstring).
        noise_std: regression noise sigma, or ``"auto"`` (the reference model's RMS residual).
        hessian_dtype: dtype of the Hessian measurements (``"float64"`` copies).
        step_check: a second estimate at ``step_check * step_size`` (0: none), in ``[0, 1)``.
    """

    chains: int = 4
    draws: int = 400
    burn_in: int = 200
    batch_size: int = 128
    step_size: float = 0.05
    noise_std: float | Literal["auto"] = "auto"
    localization: float | Literal["auto"] = "auto"
    full_batch_every: int = 10
    hessian_dtype: Literal["float32", "float64"] = "float64"
    step_check: float = 0.5

    def __post_init__(self) -> None:
        for key in ("chains", "draws", "batch_size"):
            check_positive_int(f"llc.{key}", getattr(self, key))
        check_nonnegative_int("llc.burn_in", self.burn_in)
        check_positive("llc.step_size", self.step_size)
        check_nonnegative_int("llc.full_batch_every", self.full_batch_every)
        check_choice("llc.hessian_dtype", self.hessian_dtype, ("float32", "float64"))
        check = self.step_check
        if isinstance(check, bool) or not isinstance(check, int | float) or not 0 <= check < 1:
            raise ValueError(
                "llc.step_check must be a number in [0, 1) (the second step as a fraction of "
                f"llc.step_size; 0 = no check), got {check!r}"
            )
        if self.localization != "auto":
            check_positive("llc.localization ('auto' or a number)", self.localization)
        if self.noise_std != "auto":
            check_positive("llc.noise_std ('auto' or a number)", self.noise_std)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> LLCConfig:
        return _from_dict(cls, d, "llc")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DegeneracyConfig:
    """The degeneracy study's config.

    Attributes:
        task: a registered local task on fields (``spec.kind == "local"``, ``spec.inputs ==
            "fields"``), e.g. heat or sphere_digits.
        group: path of the group file (read by the CLI; unused by :func:`run_degeneracy`).
        data: the task's DataModule options.
        broken: DataModule options that break the symmetry; None: the task's ``spec.broken``.
        samples, models, training, llc: the sections.
        seeds: training seeds (each also draws its own fields and patches).
    """

    task: str
    group: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    broken: dict[str, Any] | None = None
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    training: DegeneracyTrainingConfig = field(default_factory=DegeneracyTrainingConfig)
    llc: LLCConfig = field(default_factory=LLCConfig)
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        if not isinstance(self.task, str):
            raise ValueError(f"task must be a task name, got {self.task!r}")
        if self.broken is not None and (not isinstance(self.broken, dict) or not self.broken):
            raise ValueError(
                "broken must name the DataModule options that break the symmetry "
                "(e.g. {anisotropy: [1.5, 0.5]} for heat, {rotation_spread: 0} for "
                "sphere_digits), or be left out for the task's spec.broken"
            )
        self.models.check("fields", self.task, MODEL_OPTIONS)
        for name in ("baseline", "equivariant"):
            opts = self.model_options(name)
            k = opts["kernel_size"]
            if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
                raise ValueError(
                    f"models.{name}.kernel_size must be an odd positive int, got {k!r}"
                )
            hidden = opts["hidden"]
            if not isinstance(hidden, list | tuple) or not hidden:
                raise ValueError(f"models.{name}.hidden must be a non-empty list, got {hidden!r}")
        self.seeds = check_seeds("seeds", self.seeds)

    def model_options(self, name: str) -> dict[str, Any]:
        """One model's options with the study's defaults filled in."""
        return {**MODEL_DEFAULTS[name], **getattr(self.models, name).given()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DegeneracyConfig:
        if not isinstance(d, dict) or "task" not in d:
            raise ValueError("config must be a dict with a 'task' entry")
        check_keys("", d, sorted(f.name for f in fields(cls)))
        models = d.get("models") or {}
        if not isinstance(models, dict):
            raise ValueError(f"models must be a mapping of options, got {models!r}")
        return cls(
            task=d["task"],
            group=d.get("group"),
            data=dict(d.get("data") or {}),
            broken=None if d.get("broken") is None else d["broken"],
            samples=SamplesConfig.from_dict(d.get("samples")),
            models=ModelsConfig.from_dict(models),
            training=DegeneracyTrainingConfig.from_dict(d.get("training")),
            llc=LLCConfig.from_dict(d.get("llc")),
            seeds=d.get("seeds", [0]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "group": self.group,
            "data": dict(self.data),
            "broken": None if self.broken is None else dict(self.broken),
            "samples": self.samples.to_dict(),
            "models": self.models.to_dict(),
            "training": self.training.to_dict(),
            "llc": self.llc.to_dict(),
            "seeds": list(self.seeds),
        }

    def stored(self, broken: dict[str, Any]) -> dict[str, Any]:
        """The ``config`` entry of ``report.json``, in the layout reports have always stored
        (models flattened to ``baseline`` / ``equivariant``, the LLC step as ``step``), so
        stored reports of every version merge; ``broken``: the options used."""
        llc = {("step" if k == "step_size" else k): v for k, v in self.llc.to_dict().items()}
        return {
            "task": self.task,
            "data": dict(self.data),
            "broken": dict(broken),
            "samples": self.samples.to_dict(),
            "baseline": self.model_options("baseline"),
            "equivariant": self.model_options("equivariant"),
            "training": self.training.to_dict(),
            "llc": llc,
        }
