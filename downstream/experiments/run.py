"""The downstream comparison's run: data, the two models, training, evaluation.

See :mod:`atlasd.downstream.experiments` for what is compared and how seeds are used.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from atlasd.datasets.base import TaskSpec, task_spec
from atlasd.downstream.experiments.config import DownstreamConfig
from atlasd.downstream.experiments.metrics import binary_auc, mean_iou
from atlasd.downstream.experiments.report import DownstreamReport, markdown_table, summary
from atlasd.downstream.models import build_models, count_parameters, quiet_trainer

if TYPE_CHECKING:
    from atlasd.group import DiscoveredGroup

__all__ = ["DownstreamModule", "check_task", "evaluate", "predict_logits", "run_downstream"]


def _set_mask(x: Tensor) -> Tensor:
    """Real elements of zero-padded sets (N, P, d): any non-zero component."""
    return (x != 0).any(-1)


class DownstreamModule(lightning.LightningModule):
    """Thin Lightning wrapper: weighted cross-entropy on (x, y) batches, Adam.

    ``set_input``: inputs are zero-padded sets (N, P, d) and the model takes a mask (N, P)."""

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


@torch.no_grad()
def predict_logits(module: DownstreamModule, x: Tensor, batch_size: int) -> Tensor:
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


def evaluate(spec: TaskSpec, logits: Tensor, y: Tensor) -> dict[str, float]:
    """The task's scores of ``logits`` ``(N, K)`` or ``(N, K, H, W)`` against labels ``y``
    ``(N,)`` or ``(N, H, W)``, by ``spec.metric``: ``"auc"`` gives accuracy and the ROC AUC
    of class 1; ``"accuracy"`` the accuracy outside ``spec.ignore_class``; ``"mean_iou"`` the
    mean IoU over the classes present."""
    pred = logits.argmax(1)
    if spec.metric == "auc":
        if y.unique().numel() < 2:
            warnings.warn(
                f"the {spec.name} test split holds one class only ({int(y[0])}): AUC is "
                "undefined (NaN)",
                stacklevel=3,
            )
        prob = torch.softmax(logits.double(), dim=-1)[:, 1]
        return {"accuracy": float((pred == y).double().mean()), "auc": binary_auc(prob, y)}
    if spec.metric == "accuracy":
        if spec.ignore_class is None:
            return {"accuracy": float((pred == y).double().mean())}
        keep = y != spec.ignore_class
        if not bool(keep.any()):
            raise ValueError(
                f"the {spec.name} test split has no labels outside the ignored class "
                f"{spec.ignore_class} (spec.ignore_class)"
            )
        return {"accuracy": float((pred[keep] == y[keep]).double().mean())}
    if spec.metric == "mean_iou":
        return {"mean_iou": mean_iou(pred, y, int(spec.n_classes))}
    raise ValueError(f"task {spec.name}: spec.metric {spec.metric!r} is not a classification score")


def check_task(spec: TaskSpec, group: DiscoveredGroup) -> None:
    """Refuse a task the comparison cannot run: not classification, inputs that are neither
    sets nor fields, or a group acting on another R^d than the task's ``spec.d``."""
    if spec.target != "classification":
        raise ValueError(
            f"downstream task {spec.name!r} has a {spec.target} target (spec.target); the "
            "downstream comparison needs a classification task"
        )
    if spec.inputs not in ("sets", "fields"):
        raise ValueError(
            f"downstream task {spec.name!r} has {spec.inputs} inputs (spec.inputs); the "
            "downstream comparison needs sets or fields"
        )
    if group.d != spec.d:
        raise ValueError(f"group acts on R^{group.d} but task {spec.name} needs R^{spec.d}")


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


def run_downstream(
    config: DownstreamConfig | dict[str, Any],
    group: DiscoveredGroup,
    run_dir: Path,
    seeds: list[int] | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
) -> DownstreamReport:
    """Train a baseline and a group-equivariant model on ``config.task`` and compare them.

    Args:
        config: a :class:`DownstreamConfig`, or its dict (``{"task", "data", "training",
            "models", "seeds"}``, read by :meth:`DownstreamConfig.from_dict`).
        group: the DiscoveredGroup, acting on the task's R^d (``spec.d``).
        run_dir: folder for Lightning's files (created).
        seeds: model seeds (initial weights and batch order); default ``config.seeds``. The
            data stay the same.
        trainer_kwargs: :class:`lightning.Trainer` arguments for every fit (``accelerator``,
            ``devices``, ``precision``, ...; e.g. ``--trainer.*``), overriding
            :func:`~atlasd.downstream.models.quiet_trainer`'s defaults; ``callbacks`` are
            added. Evaluation runs on the CPU, where the Trainer hands the model back.

    Returns:
        :class:`DownstreamReport` (``to_json()`` is ``report.json``).

    Raises:
        ValueError: a task that is not classification on sets or fields, a group of the wrong
            size ("group acts on R^d but task X needs R^e"), no seeds, bad options.
    """
    from atlasd.datasets import make_datamodule

    cfg = config if isinstance(config, DownstreamConfig) else DownstreamConfig.from_dict(config)
    seeds = [int(s) for s in (cfg.seeds if seeds is None else seeds) or []]
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    opts = cfg.training
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    dm = make_datamodule(cfg.task, **dict(cfg.data))
    dm.setup("fit")
    spec = task_spec(dm, cfg.task)
    check_task(spec, group)
    x_train, y_train, x_test, y_test = _splits(dm)
    class_weights = (
        None
        if spec.class_weights is None
        else torch.as_tensor(spec.class_weights, dtype=torch.float32)
    )

    results: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        for name, model in build_models(spec, group, cfg.models, seed=seed).items():
            entry = results.setdefault(name, {"metrics": {}, "wall": [], "cpu": []})
            entry["raw"], entry["free"] = count_parameters(model)
            module = DownstreamModule(
                model,
                lr=opts.lr,
                weight_decay=opts.weight_decay,
                class_weights=class_weights,
                set_input=spec.inputs == "sets",
            )
            loader = DataLoader(
                TensorDataset(x_train, y_train),
                batch_size=opts.batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(seed),
            )
            trainer = quiet_trainer(
                opts.epochs,
                run_dir / name / f"seed_{seed}",
                opts.gradient_clip_val,
                trainer_kwargs=trainer_kwargs,
            )
            wall0, cpu0 = time.perf_counter(), time.process_time()
            trainer.fit(module, train_dataloaders=loader)
            scores = evaluate(spec, predict_logits(module, x_test, opts.eval_batch_size), y_test)
            entry["wall"].append(time.perf_counter() - wall0)
            entry["cpu"].append(time.process_time() - cpu0)
            for metric, value in scores.items():
                entry["metrics"].setdefault(metric, []).append(value)

    models = {
        name: {
            "metrics": {m: summary(v) for m, v in entry["metrics"].items()},
            "raw_parameters": entry["raw"],
            "free_parameters": entry["free"],
            "wall_time_s": summary(entry["wall"]),
            "cpu_time_s": summary(entry["cpu"]),
        }
        for name, entry in results.items()
    }
    return DownstreamReport(
        task=cfg.task,
        seeds=seeds,
        group={"dim": group.dim, "d": group.d, "n_components": group.n_components},
        training=opts.to_dict(),
        n_train=int(x_train.shape[0]),
        n_test=int(x_test.shape[0]),
        models=models,
        table=markdown_table(models),
    )
