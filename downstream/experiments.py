"""Downstream comparison: a baseline model against a model built from a discovered group.

:func:`run_downstream` builds a task's DataModule, a BASELINE model (unconstrained layers) and
an EQUIVARIANT model (layers solved from the group), trains both with the same budget (epochs,
learning rate, batch size, optimiser) and the same seeds through a thin LightningModule, and
evaluates them on the test split. :func:`write_report` writes ``report.json`` and
``report.md`` atomically.

Tasks and models
----------------
- ``jets`` (group of 4x4 matrices acting on (E, px, py, pz)): sets (N, P, 4) of constituents,
  zero-padded; the mask marks constituents with any non-zero component. Baseline: a DeepSet
  (per-constituent MLP, masked sum, MLP) on the raw 4-vectors; equivariant:
  :class:`~atlasd.downstream.layers.EquivariantDeepSet` with invariant logits. Metrics:
  accuracy and ROC AUC (probability of class 1, "top").
- ``sphere_digits`` / ``climate`` (group of 2x2 chart transformations): per-pixel segmentation
  (N, C, H, W) -> (N, H, W) labels. Baseline: a stack of ``nn.Conv2d`` with SiLU;
  equivariant: a stack of :class:`~atlasd.downstream.conv.EquivariantConv2d` whose hidden
  channels carry a representation such as ``"8*S + 4*V"``, with
  :class:`~atlasd.downstream.layers.InvariantGate` nonlinearities, and scalar logits. The
  input channels carry the group's ``in_rep`` when it has one (e.g. the wind pairs of climate)
  and scalars otherwise. Loss: cross-entropy with the DataModule's ``class_weights``.
  Metrics: digits: accuracy on the non-background pixels of the test split (which has wider
  rotations than training); climate: mean IoU over the classes (a class absent from both the
  prediction and the truth is left out of the mean).

Seeds
-----
The data are the same for every seed (``config["data"]["seed"]``); a run's seed sets the initial
weights (through a ``torch.Generator``, for both models) and the order of the training batches.
No global RNG is touched, so the same seed gives the same numbers.

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
import statistics
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from atlasd.io import json_safe, write_atomic, write_json_atomic

if TYPE_CHECKING:
    from atlasd.group import DiscoveredGroup

__all__ = [
    "TASK_DIMENSIONS",
    "ConvNet",
    "DeepSet",
    "DownstreamModule",
    "EquivariantConvNet",
    "binary_auc",
    "build_models",
    "count_parameters",
    "mean_iou",
    "quiet_trainer",
    "run_downstream",
    "write_report",
]

# task -> dimension d of the space the group must act on
TASK_DIMENSIONS: dict[str, int] = {"jets": 4, "sphere_digits": 2, "climate": 2}
# options of the "models" section, per kind of task and model
_MODEL_OPTIONS: dict[tuple[str, str], set[str]] = {
    ("set", "baseline"): {"phi_hidden", "rho_hidden"},
    ("set", "equivariant"): {"phi_hidden", "rho_hidden", "pool", "scale"},
    ("field", "baseline"): {"hidden", "kernel_size"},
    ("field", "equivariant"): {"hidden", "kernel_size", "mode"},
}
_TRAINING_DEFAULTS: dict[str, Any] = {
    "epochs": 5,
    "lr": 3e-3,
    "batch_size": 64,
    "weight_decay": 0.0,
    "gradient_clip_val": None,
    "eval_batch_size": 256,
}


# ---------------------------------------------------------------------------------------------
# Metrics


def binary_auc(scores: Tensor, labels: Tensor) -> float:
    """ROC AUC of ``scores`` (N,) for binary ``labels`` (N,) in {0, 1} (Mann-Whitney U with
    average ranks for ties). NaN when one class is absent."""
    scores = scores.to(torch.float64).flatten()
    labels = labels.flatten().to(torch.bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = torch.argsort(scores, stable=True)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # average ranks within runs of equal scores
    uniq, inverse = torch.unique(sorted_scores, return_inverse=True)
    sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(
        0, inverse, torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    )
    counts = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(
        0, inverse, torch.ones(scores.numel(), dtype=torch.float64)
    )
    ranks[order] = (sums / counts)[inverse]
    u = float(ranks[labels].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def mean_iou(pred: Tensor, target: Tensor, n_classes: int) -> float:
    """Mean intersection-over-union of integer maps ``pred`` and ``target`` (same shape) over
    the classes present in either; NaN when no pixel exists."""
    pred, target = pred.flatten().long(), target.flatten().long()
    inter = torch.bincount(target[pred == target], minlength=n_classes).double()
    union = (
        torch.bincount(pred, minlength=n_classes) + torch.bincount(target, minlength=n_classes)
    ).double() - inter
    present = union > 0
    if not bool(present.any()):
        return math.nan
    return float((inter[present] / union[present]).mean())


# ---------------------------------------------------------------------------------------------
# Models


def _init_(module: nn.Module, generator: torch.Generator) -> None:
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
    """Baseline per-pixel classifier: ``nn.Conv2d`` + SiLU stack, then a conv to logits.
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
    """Per-pixel classifier built from a group of 2x2 chart transformations:
    EquivariantConv2d -> InvariantGate per hidden rep, then EquivariantConv2d to scalar logits.
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
        from atlasd.downstream.conv import EquivariantConv2d
        from atlasd.downstream.layers import InvariantGate
        from atlasd.downstream.solver import EquivariantSolver, Rep

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


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(raw, free)`` parameter counts of ``model`` (see the module docstring).

    Equivariant conv / linear layers count their materialised dense kernel and bias as raw and
    their coefficients as free; every other parameter counts once in both."""
    from atlasd.downstream.conv import EquivariantConv2d
    from atlasd.downstream.layers import EquivariantLinear

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


def build_models(
    task: str,
    group: DiscoveredGroup,
    models: dict[str, Any],
    *,
    in_channels: int,
    n_classes: int,
    seed: int,
) -> dict[str, nn.Module]:
    """Build ``{"baseline": ..., "equivariant": ...}`` for ``task`` from the ``models`` section
    of a config, initialised from ``seed`` (same seed, same weights)."""
    from atlasd.downstream.layers import EquivariantDeepSet

    _check_task(task, group)
    kind = "set" if task == "jets" else "field"
    unknown_models = sorted(set(models) - {"baseline", "equivariant"})
    if unknown_models:
        raise ValueError(
            f"unknown model(s) {', '.join(unknown_models)}; models are baseline, equivariant"
        )
    for name in ("baseline", "equivariant"):
        bad = sorted(set(models.get(name) or {}) - _MODEL_OPTIONS[(kind, name)])
        if bad:
            raise ValueError(
                f"unknown option(s) {', '.join(bad)} for the {name} model of task {task}; "
                f"options are {', '.join(sorted(_MODEL_OPTIONS[(kind, name)]))}"
            )
    base_cfg = dict(models.get("baseline") or {})
    eq_cfg = dict(models.get("equivariant") or {})
    gen = torch.Generator().manual_seed(int(seed))
    if task == "jets":
        baseline: nn.Module = DeepSet(
            4,
            n_classes,
            base_cfg.get("phi_hidden", [64, 64]),
            base_cfg.get("rho_hidden", [64]),
        )
        _init_(baseline, gen)
        equivariant: nn.Module = EquivariantDeepSet(
            group,
            "V",
            n_classes,
            phi_hidden=eq_cfg.get("phi_hidden", ["16*S + 8*V", "16*S + 8*V"]),
            rho_hidden=eq_cfg.get("rho_hidden", ["16*S"]),
            pool=eq_cfg.get("pool", "sum"),
            scale=eq_cfg.get("scale", "auto"),
            generator=gen,
        )
    else:
        k = int(base_cfg.get("kernel_size", 5))
        baseline = ConvNet(in_channels, n_classes, base_cfg.get("hidden", [16, 16]), k)
        _init_(baseline, gen)
        equivariant = EquivariantConvNet(
            group,
            in_channels,
            n_classes,
            eq_cfg.get("hidden", ["8*S + 4*V", "8*S + 4*V"]),
            int(eq_cfg.get("kernel_size", k)),
            mode=eq_cfg.get("mode", "auto"),
            generator=gen,
        )
    return {"baseline": baseline, "equivariant": equivariant}


# ---------------------------------------------------------------------------------------------
# Training


def _set_mask(x: Tensor) -> Tensor:
    """Real constituents of zero-padded sets (N, P, 4): any non-zero component."""
    return (x != 0).any(-1)


class DownstreamModule(lightning.LightningModule):
    """Thin Lightning wrapper: weighted cross-entropy on (x, y) batches, Adam.

    ``set_input``: inputs are padded sets and the model takes a mask (jets)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        weight_decay: float = 0.0,
        class_weights: Tensor | None = None,
        set_input: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.set_input = float(lr), float(weight_decay), set_input
        if class_weights is not None:
            self.register_buffer("class_weights", class_weights.to(torch.float32))
        else:
            self.class_weights = None

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x, _set_mask(x)) if self.set_input else self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y, weight=self.class_weights)
        self.log("train_loss", loss, prog_bar=False, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def quiet_trainer(
    epochs: int,
    root: Path,
    gradient_clip_val: float | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> lightning.Trainer:
    """A Lightning Trainer for the short comparison fits: no logger, checkpoints, progress bar
    or model summary (the reports carry the figures), ``accelerator="auto"`` (a GPU when one is
    visible, else the CPU) on one device.

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


@torch.no_grad()
def _predict(module: DownstreamModule, x: Tensor, batch_size: int) -> Tensor:
    """Logits on the CPU, computed where the module is (its device and floating dtype: the
    Trainer hands it back on the CPU, in float64 after a "64-true" fit)."""
    module.eval()
    p = next((t for t in module.parameters() if t.is_floating_point()), None)

    def there(t: Tensor) -> Tensor:
        if p is None:
            return t
        return t.to(device=p.device, dtype=p.dtype if t.is_floating_point() else t.dtype)

    return torch.cat(
        [module(there(x[i : i + batch_size])).cpu() for i in range(0, x.shape[0], batch_size)]
    )


def _evaluate(task: str, logits: Tensor, y: Tensor, n_classes: int) -> dict[str, float]:
    if task == "jets":
        if y.unique().numel() < 2:
            warnings.warn(
                f"the jets test split holds one class only ({int(y[0])}): AUC is undefined (NaN)",
                stacklevel=3,
            )
        prob = torch.softmax(logits.double(), dim=-1)[:, 1]
        return {
            "accuracy": float((logits.argmax(-1) == y).double().mean()),
            "auc": binary_auc(prob, y),
        }
    pred = logits.argmax(1)
    if task == "sphere_digits":
        from atlasd.datasets.sphere_digits import BACKGROUND

        fg = y != BACKGROUND
        if not bool(fg.any()):
            raise ValueError("the test split has no digit (non-background) pixels")
        return {"accuracy": float((pred[fg] == y[fg]).double().mean())}
    return {"mean_iou": mean_iou(pred, y, n_classes)}


def _check_task(task: str, group: DiscoveredGroup) -> None:
    if task not in TASK_DIMENSIONS:
        raise ValueError(
            f"unknown downstream task {task!r}; known tasks: {', '.join(sorted(TASK_DIMENSIONS))}"
        )
    need = TASK_DIMENSIONS[task]
    if group.d != need:
        raise ValueError(f"group acts on R^{group.d} but task {task} needs R^{need}")


def _splits(dm: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train, y_train, x_test, y_test) of a set-up DataModule."""
    ds = getattr(dm, "train_dataset", None)
    if ds is None or not isinstance(ds, TensorDataset):
        raise ValueError(f"{type(dm).__name__} has no TensorDataset train_dataset after setup()")
    x_train, y_train = ds.tensors[:2]
    x_test, y_test = getattr(dm, "x_test", None), getattr(dm, "y_test", None)
    if x_test is None or y_test is None:
        raise ValueError(f"{type(dm).__name__} has no x_test / y_test after setup()")
    return x_train, y_train, x_test, y_test


def _summary(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    mean = statistics.fmean(finite) if finite else math.nan
    sd = statistics.stdev(finite) if len(finite) > 1 else (0.0 if finite else math.nan)
    return {"mean": mean, "sd": sd, "values": values}


def _training_options(config: dict) -> dict[str, Any]:
    training = dict(config.get("training") or {})
    unknown = sorted(set(training) - set(_TRAINING_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown training option(s): {', '.join(unknown)}; "
            f"options are {', '.join(_TRAINING_DEFAULTS)}"
        )
    opts = {**_TRAINING_DEFAULTS, **training}
    for name in ("epochs", "batch_size", "eval_batch_size"):
        if isinstance(opts[name], bool) or not isinstance(opts[name], int) or opts[name] < 1:
            raise ValueError(f"training.{name} must be a positive int, got {opts[name]!r}")
    if not (isinstance(opts["lr"], int | float) and opts["lr"] > 0):
        raise ValueError(f"training.lr must be a positive number, got {opts['lr']!r}")
    return opts


def run_downstream(
    config: dict,
    group: DiscoveredGroup,
    run_dir: Path,
    seeds: list[int],
    trainer_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a baseline and a group-equivariant model on ``config["task"]`` and compare them.

    Args:
        config: ``{"task": "jets" | "sphere_digits" | "climate", "data": {DataModule options},
            "training": {epochs, lr, batch_size, weight_decay, gradient_clip_val,
            eval_batch_size}, "models": {"baseline": {...}, "equivariant": {...}}}``.
        group: the DiscoveredGroup; 4x4 for jets, 2x2 for the field tasks.
        run_dir: folder for Lightning's files (created).
        seeds: model seeds (initial weights and batch order); the data stay the same.
        trainer_kwargs: :class:`lightning.Trainer` arguments for every fit (``accelerator``,
            ``devices``, ``precision``, ...; e.g. ``--trainer.*``), overriding
            :func:`quiet_trainer`'s defaults; ``callbacks`` are added. Evaluation runs on the
            CPU, where the Trainer hands the model back.

    Returns:
        report dict: ``task``, ``seeds``, ``group`` (dim, d, n_components), ``training``,
        ``models`` -> name -> ``metrics`` (name -> mean, sd, values over seeds),
        ``raw_parameters``, ``free_parameters``, ``wall_time_s`` and ``cpu_time_s`` (mean, sd,
        values; training + evaluation per seed), and ``table`` (Markdown).

    Raises:
        ValueError: unknown task, a group of the wrong size ("group acts on R^d but task X
            needs R^e"), an empty seed list, bad training options.
    """
    from atlasd.datasets import make_datamodule

    if not isinstance(config, dict) or "task" not in config:
        raise ValueError("config must be a dict with a 'task' entry")
    task = config["task"]
    _check_task(task, group)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    opts = _training_options(config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    dm = make_datamodule(task, **dict(config.get("data") or {}))
    dm.setup("fit")
    x_train, y_train, x_test, y_test = _splits(dm)
    if task == "jets":
        in_channels, n_classes, class_weights = 4, 2, None
    else:
        in_channels = int(x_train.shape[1])
        class_weights = torch.as_tensor(dm.class_weights, dtype=torch.float32)
        n_classes = int(class_weights.numel())

    results: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        models = build_models(
            task,
            group,
            dict(config.get("models") or {}),
            in_channels=in_channels,
            n_classes=n_classes,
            seed=seed,
        )
        for name, model in models.items():
            entry = results.setdefault(name, {"metrics": {}, "wall": [], "cpu": []})
            entry["raw"], entry["free"] = count_parameters(model)
            module = DownstreamModule(
                model,
                lr=opts["lr"],
                weight_decay=opts["weight_decay"],
                class_weights=class_weights,
                set_input=task == "jets",
            )
            loader = DataLoader(
                TensorDataset(x_train, y_train),
                batch_size=opts["batch_size"],
                shuffle=True,
                generator=torch.Generator().manual_seed(seed),
            )
            trainer = quiet_trainer(
                opts["epochs"],
                run_dir / name / f"seed_{seed}",
                opts["gradient_clip_val"],
                trainer_kwargs=trainer_kwargs,
            )
            wall0, cpu0 = time.perf_counter(), time.process_time()
            trainer.fit(module, train_dataloaders=loader)
            logits = _predict(module, x_test, opts["eval_batch_size"])
            scores = _evaluate(task, logits, y_test, n_classes)
            entry["wall"].append(time.perf_counter() - wall0)
            entry["cpu"].append(time.process_time() - cpu0)
            for metric, value in scores.items():
                entry["metrics"].setdefault(metric, []).append(value)

    report: dict[str, Any] = {
        "task": task,
        "seeds": seeds,
        "group": {"dim": group.dim, "d": group.d, "n_components": group.n_components},
        "training": opts,
        "n_train": int(x_train.shape[0]),
        "n_test": int(x_test.shape[0]),
        "models": {
            name: {
                "metrics": {m: _summary(v) for m, v in entry["metrics"].items()},
                "raw_parameters": entry["raw"],
                "free_parameters": entry["free"],
                "wall_time_s": _summary(entry["wall"]),
                "cpu_time_s": _summary(entry["cpu"]),
            }
            for name, entry in results.items()
        },
    }
    report["table"] = _markdown_table(report)
    return report


def _markdown_table(report: dict[str, Any]) -> str:
    models = report["models"]
    metrics = list(next(iter(models.values()))["metrics"])
    header = ["model", *metrics, "raw params", "free params", "wall time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in models.items():
        cells = [name]
        for m in metrics:
            s = entry["metrics"][m]
            cells.append(f"{s['mean']:.4f} ± {s['sd']:.4f}")
        w = entry["wall_time_s"]
        cells += [
            str(entry["raw_parameters"]),
            str(entry["free_parameters"]),
            f"{w['mean']:.1f} ± {w['sd']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(report: dict[str, Any], run_dir: Path) -> tuple[Path, Path]:
    """Write ``run_dir/report.json`` (non-finite numbers as null) and ``run_dir/report.md``
    atomically; returns both paths."""
    run_dir = Path(run_dir)
    if "table" not in report or "models" not in report:
        raise ValueError("report must come from run_downstream (needs 'models' and 'table')")
    json_path = write_json_atomic(run_dir / "report.json", json_safe(report))
    seeds = ", ".join(str(s) for s in report.get("seeds", []))
    md = (
        f"# Downstream comparison: {report.get('task')}\n\n"
        f"Seeds: {seeds}; metrics are mean ± sd over seeds on the test split "
        f"({report.get('n_test')} samples, {report.get('n_train')} for training).\n\n"
        f"{report['table']}\n"
    )
    return json_path, write_atomic(run_dir / "report.md", md)
