"""Typed discovery settings: one dataclass per stage, plus the CLI's ``discovery`` section.

The library's entry points keep their flat keywords (``predictor_epochs=...``,
``coset_steps=...``); :meth:`DiscoveryConfig.from_kwargs` sorts them into the stage sections
and :meth:`DiscoveryConfig.to_flat` gives them back under their flat names, in the order the
saved groups have always listed them (``metadata["config"]``), so group files do not change.

:class:`DiscoverySettings` is what ``atlasd discover`` parses from ``--discovery`` (plain
annotations only, for jsonargparse). Runtime-only values (the Trainer's arguments, the run
folder, a reference algebra) are :class:`RunConfig`'s and never appear there.

This module imports neither torch nor Lightning: the CLI parses it at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from atlasd.checks import (
    check_bool,
    check_choice,
    check_int,
    check_nonnegative_int,
    check_number,
    check_positive,
    check_positive_int,
)

__all__ = [
    "FLAT_NAMES",
    "BasisConfig",
    "CosetConfig",
    "DiscoveryConfig",
    "DiscoverySettings",
    "PredictorConfig",
    "RunConfig",
]

# flat keyword -> (section, field), in the order of metadata["config"] of saved groups;
# section None is DiscoveryConfig itself
FLAT_NAMES: tuple[tuple[str, str | None, str], ...] = (
    ("batch_size", None, "batch_size"),
    ("predictor_epochs", "predictor", "epochs"),
    ("predictor_lr", "predictor", "lr"),
    ("predictor_loss", "predictor", "loss"),
    ("class_weights", "predictor", "class_weights"),
    ("predictor_patience", "predictor", "patience"),
    ("val_fraction", "predictor", "val_fraction"),
    ("hidden", "predictor", "hidden"),
    ("basis_epochs", "basis", "epochs"),
    ("init_candidates", "basis", "init_candidates"),
    ("basis_lr", "basis", "lr"),
    ("scale", "basis", "scale"),
    ("loss", "basis", "loss"),
    ("overlap_weight", "basis", "overlap_weight"),
    ("overlap_kind", "basis", "overlap_kind"),
    ("magnitude_weight", "basis", "magnitude_weight"),
    ("magnitude_clamp", "basis", "magnitude_clamp"),
    ("normalize", "basis", "normalize"),
    ("coset_candidates", "cosets", "candidates"),
    ("coset_steps", "cosets", "steps"),
    ("coset_lr", "cosets", "lr"),
    ("coset_batch", "cosets", "batch"),
    ("coset_polish_steps", "cosets", "polish_steps"),
    ("coset_threshold", "cosets", "threshold"),
    ("merge_tol", "cosets", "merge_tol"),
    ("trainer_kwargs", "run", "trainer_kwargs"),
    ("run_dir", "run", "run_dir"),
    ("progress", "run", "progress"),
    ("resume", "run", "resume"),
    ("ckpt_path", "run", "ckpt_path"),
    ("reference_algebra", "run", "reference_algebra"),
)


@dataclass
class PredictorConfig:
    """Stage 1, the predictors trained on ``(x, y)`` (unused with a fixed predictor).

    Attributes:
        epochs: at most this many epochs (early stopping on the validation loss).
        lr: Adam learning rate.
        loss: ``"l1"``, ``"mse"`` or ``"cross_entropy"`` for the regression fields of local
            discovery (class maps always use cross-entropy, global regression MSE).
        class_weights: one weight per class (cross-entropy only, e.g. to down-weight a
            dominant background), or None.
        patience: epochs without a validation improvement before stopping.
        val_fraction: share of the samples held out for validation.
        hidden: channels of the chart CNNs' hidden layers.
    """

    epochs: int = 20
    lr: float = 1e-3
    loss: Literal["l1", "mse", "cross_entropy"] = "l1"
    class_weights: list[float] | None = None
    patience: int = 3
    val_fraction: float = 0.1
    hidden: int = 16

    def __post_init__(self) -> None:
        check_positive_int("predictor.epochs", self.epochs)
        check_positive("predictor.lr", self.lr)
        check_choice("predictor.loss", self.loss, ("l1", "mse", "cross_entropy"))
        check_nonnegative_int("predictor.patience", self.patience)
        if not 0.0 < check_number("predictor.val_fraction", self.val_fraction) < 1.0:
            raise ValueError(f"predictor.val_fraction must be in (0, 1), got {self.val_fraction}")
        check_positive_int("predictor.hidden", self.hidden)


@dataclass
class BasisConfig:
    """Stage 2, the Lie basis fitted so that ``F(g . x) ~ g . F(x)``.

    Attributes:
        epochs: passes over the data.
        lr: Adam learning rate (cosine decay to 5 % of it).
        init_candidates: random starts screened before training, the best one is trained
            (1 disables screening).
        scale: std of the coefficients of unit-norm generators when group elements are sampled.
        loss: ``"l1"`` or ``"mse"`` equivariance error.
        overlap_weight: weight of the penalty on overlapping generators.
        overlap_kind: ``"cosine"`` or ``"standard"`` overlap.
        magnitude_weight: weight of the reward for generator magnitude (0: off).
        magnitude_clamp: magnitude above which the reward stops growing.
        normalize: keep the generators at unit norm.
    """

    epochs: int = 3
    lr: float = 1e-2
    init_candidates: int = 32
    scale: float = 0.5
    loss: Literal["l1", "mse"] = "l1"
    overlap_weight: float = 0.1
    overlap_kind: Literal["cosine", "standard"] = "cosine"
    magnitude_weight: float = 0.0
    magnitude_clamp: float = 1.0
    normalize: bool = True

    def __post_init__(self) -> None:
        check_positive_int("basis.epochs", self.epochs)
        check_positive("basis.lr", self.lr)
        check_positive_int("basis.init_candidates", self.init_candidates)
        check_positive("basis.scale", self.scale)
        check_choice("basis.loss", self.loss, ("l1", "mse"))
        check_number("basis.overlap_weight", self.overlap_weight, 0.0)
        check_choice("basis.overlap_kind", self.overlap_kind, ("cosine", "standard"))
        check_number("basis.magnitude_weight", self.magnitude_weight)
        check_number("basis.magnitude_clamp", self.magnitude_clamp)
        check_bool("basis.normalize", self.normalize)


@dataclass
class CosetConfig:
    """Stage 3, the coset search (see :mod:`atlasd.discovery.cosets` for the decision rule).

    Attributes:
        search: run the search; None takes the problem kind's default (yes for local and
            global discovery, no for distributions). The library's ``cosets=`` argument plays
            this part there; only the CLI reads this field.
        candidates: random starting matrices.
        steps: Adam steps on all of them.
        lr: Adam learning rate.
        batch: samples per score.
        polish_steps: at most this many more steps on the unresolved candidates (each stops
            when its loss plateaus); None: as many as ``steps``.
        threshold: None measures the keep threshold on the problem; a number (absolute, on the
            loss excess over the identity) replaces it.
        merge_tol: the group's default membership tolerance (``DiscoveredGroup.contains``).
    """

    search: bool | None = None
    candidates: int = 16
    steps: int = 60
    lr: float = 0.05
    batch: int = 8
    polish_steps: int | None = None
    threshold: float | None = None
    merge_tol: float = 0.15

    def __post_init__(self) -> None:
        if self.search is not None:
            check_bool("cosets.search", self.search)
        check_positive_int("cosets.candidates", self.candidates)
        check_nonnegative_int("cosets.steps", self.steps)
        check_positive("cosets.lr", self.lr)
        check_positive_int("cosets.batch", self.batch)
        if self.polish_steps is not None:
            check_nonnegative_int("cosets.polish_steps", self.polish_steps)
        if self.threshold is not None:
            check_number("cosets.threshold", self.threshold)
        check_positive("cosets.merge_tol", self.merge_tol)


@dataclass
class RunConfig:
    """How a run is carried out (none of it is a setting of the result).

    Attributes:
        trainer_kwargs: passed to every Lightning Trainer, overriding its defaults
            (``accelerator="auto"``: a GPU when one is visible; ``devices=1``); ``callbacks``
            are added to discovery's own.
        run_dir: stage checkpoints and results (:mod:`atlasd.discovery.resume`): a rerun with
            the same folder resumes the interrupted stage and skips finished ones.
        progress: True/"bar", "lines" or False/"none" (:mod:`atlasd.discovery.progress`).
        resume: False starts over.
        ckpt_path: resume the stage this Lightning checkpoint belongs to.
        reference_algebra: a known algebra ``(j, d, d)`` (tensor or nested lists) whose
            similarity to the generators is logged per epoch, or None.
    """

    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None
    progress: bool | str = False
    resume: bool = True
    ckpt_path: str | None = None
    reference_algebra: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.trainer_kwargs, dict):
            raise ValueError(f"trainer_kwargs must be a dict, got {self.trainer_kwargs!r}")
        check_bool("resume", self.resume)


@dataclass
class DiscoveryConfig:
    """All settings of one discovery run (the entry points' ``**training`` keywords).

    ``DiscoveryConfig.from_kwargs({"predictor_epochs": 5, "coset_steps": 40})`` reads the flat
    keywords: ``predictor_*``, ``class_weights``, ``val_fraction`` and ``hidden`` go to
    :class:`PredictorConfig`; ``basis_epochs``, ``basis_lr``, ``init_candidates``, ``scale``,
    ``loss``, ``overlap_*``, ``magnitude_*`` and ``normalize`` to :class:`BasisConfig`;
    ``coset_*`` and ``merge_tol`` to :class:`CosetConfig`; ``trainer_kwargs``, ``run_dir``,
    ``progress``, ``resume``, ``ckpt_path`` and ``reference_algebra`` to :class:`RunConfig`
    (:data:`FLAT_NAMES` lists them all).
    """

    batch_size: int = 16
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    basis: BasisConfig = field(default_factory=BasisConfig)
    cosets: CosetConfig = field(default_factory=CosetConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size, 1)

    @classmethod
    def from_kwargs(cls, flat: dict[str, Any]) -> DiscoveryConfig:
        """The config of flat keywords (unknown names raise ValueError naming them)."""
        known = {name for name, _, _ in FLAT_NAMES}
        unknown = sorted(set(flat) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        sections: dict[str | None, dict[str, Any]] = {}
        for name, section, key in FLAT_NAMES:
            if name in flat:
                sections.setdefault(section, {})[key] = flat[name]
        return cls(
            **sections.get(None, {}),
            predictor=PredictorConfig(**sections.get("predictor", {})),
            basis=BasisConfig(**sections.get("basis", {})),
            cosets=CosetConfig(**sections.get("cosets", {})),
            run=RunConfig(**sections.get("run", {})),
        )

    def to_flat(self) -> dict[str, Any]:
        """Every setting under its flat keyword, in :data:`FLAT_NAMES` order, values as given
        (nothing is copied: ``trainer_kwargs`` may hold the caller's callbacks and loggers)."""
        return {
            name: getattr(self if section is None else getattr(self, section), key)
            for name, section, key in FLAT_NAMES
        }

    def with_batch_size(self, batch_size: int) -> DiscoveryConfig:
        """A shallow copy with another ``batch_size`` (the sections are shared, not copied)."""
        return replace(self, batch_size=batch_size)


@dataclass
class DiscoverySettings:
    """The ``discovery`` section of ``atlasd discover`` (a config file or ``--discovery.*``).

    Attributes:
        kind: ``"local"``, ``"global"`` or ``"distribution"``; None takes the task's own kind.
        n_generators: generators to learn.
        learn_in_rep, learn_out_rep: learn channel representations (local discovery).
        out_radius: radius of the compared output crop (local discovery); None: the
            predictor's output radius.
        batch_size: samples per batch; None: 16, or 1024 points per half-batch for
            distributions.
        predictor, basis, cosets: the stage sections.
    """

    kind: Literal["local", "global", "distribution"] | None = None
    n_generators: int = 1
    learn_in_rep: bool = False
    learn_out_rep: bool = False
    out_radius: int | None = None
    batch_size: int | None = None
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    basis: BasisConfig = field(default_factory=BasisConfig)
    cosets: CosetConfig = field(default_factory=CosetConfig)

    def __post_init__(self) -> None:
        if self.kind is not None:
            check_choice("discovery.kind", self.kind, ("local", "global", "distribution"))
        check_positive_int("discovery.n_generators", self.n_generators)
        check_bool("discovery.learn_in_rep", self.learn_in_rep)
        check_bool("discovery.learn_out_rep", self.learn_out_rep)
        if self.out_radius is not None:
            check_nonnegative_int("discovery.out_radius", self.out_radius)
        if self.batch_size is not None:
            check_positive_int("discovery.batch_size", self.batch_size)

    def training(self, run: RunConfig | None = None) -> dict[str, Any]:
        """The entry points' flat ``**training`` keywords of these settings and ``run``
        (``batch_size`` left out when None, so the problem kind's default applies)."""
        cfg = DiscoveryConfig(
            predictor=self.predictor,
            basis=self.basis,
            cosets=self.cosets,
            run=run if run is not None else RunConfig(),
        )
        flat = cfg.to_flat()
        if self.batch_size is None:
            del flat["batch_size"]
        else:
            flat["batch_size"] = self.batch_size
        return flat
