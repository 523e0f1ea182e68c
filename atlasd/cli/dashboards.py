"""Runs on wandb dashboards: the discovery run's logger and summary, and the reports' tables.

The mode follows :func:`atlasd.tracking.wandb_mode` (online when logged in, offline otherwise:
runs sync later with ``wandb sync``); nothing is logged when it is disabled or with
``--logger none``. wandb and Lightning load only when a run logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["discovery_logger", "log_discovery_summary", "log_report"]


def discovery_logger(project: str, name: str, run_dir: Path, config: dict[str, Any]) -> Any:
    """A Lightning WandbLogger writing under ``run_dir``, or None when wandb is disabled."""
    from atlasd.tracking import wandb_mode

    mode = wandb_mode()
    if mode == "disabled":
        return None
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(
        project=project, name=name, save_dir=str(run_dir), offline=mode == "offline", config=config
    )


def log_discovery_summary(logger: Any, group: Any, metrics: dict, run_dir: Path) -> None:
    """Final figures of a discovery run: metrics, the group plot, the coset table."""
    import numpy as np
    import wandb

    run = logger.experiment
    summary = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    summary.update({f"wall_time_s/{k}": v for k, v in metrics["wall_time_s"].items()})
    run.summary.update(summary)
    rows = [
        [i, float(np.linalg.det(h)), str([[round(v, 3) for v in r] for r in h.tolist()])]
        for i, h in enumerate(group.cosets.cpu().numpy())
    ]
    table = wandb.Table(columns=["component", "det", "representative"], data=rows)
    run.log(
        {
            "group/plot": wandb.Image(str(run_dir / "group.png")),
            "group/cosets": table,
            **{f"final/{k}": v for k, v in summary.items()},
        }
    )
    run.finish()


def _report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [
        {"model": name, **{m: f"{v['mean']:.4g} +- {v['sd']:.2g}" for m, v in r["metrics"].items()},
         "raw_parameters": r.get("raw_parameters"), "free_parameters": r.get("free_parameters")}
        for name, r in report.get("models", {}).items()
    ]  # fmt: skip
    rows += [
        {"data/model": key, "llc": f"{e['llc']['mean']:.4g} +- {e['llc']['sd']:.2g}",
         "llc_chain_sd": e["llc_chain_sd"]["mean"], "healthy": e["healthy"],
         "gauss_newton_rank": e["gauss_newton_rank"]["mean"],
         "functional_dimension": e["functional_dimension"]["mean"],
         "effective_dimension": e["effective_dimension"]["mean"],
         "raw_parameters": e["raw_parameters"], "free_parameters": e["free_parameters"]}
        for key, e in report.get("summary", {}).items()
    ]  # fmt: skip
    return rows


def log_report(project: str, name: str, report: dict[str, Any], run_dir: Path) -> None:
    """A downstream or degeneracy report (its JSON document) on a dashboard: the table, the
    headline numbers, the susceptibilities and the plot."""
    from atlasd.tracking import wandb_mode

    mode = wandb_mode()
    if mode == "disabled":
        return
    import wandb

    run = wandb.init(
        project=project, name=name, dir=str(run_dir), mode=mode, config=report.get("config", {})
    )
    for key, s in report.get("susceptibility", {}).items():
        run.summary[f"susceptibility/{key}/delta_llc"] = s["delta"]
        run.summary[f"susceptibility/{key}/stderr"] = s["stderr"]
        if s.get("delta_step0") is not None:
            run.summary[f"susceptibility/{key}/delta_llc_step0"] = s["delta_step0"]
            run.summary[f"susceptibility/{key}/stderr_step0"] = s["stderr_step0"]
    plot = run_dir / "report.png"
    if "summary" in report and plot.is_file():
        run.log({"report/plot": wandb.Image(str(plot))})
    rows = _report_rows(report)
    if rows:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        data = [[str(r.get(c, "")) for c in columns] for r in rows]
        run.log({"report/table": wandb.Table(columns=columns, data=data)})
    run.summary.update(
        {k: v for k, v in report.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    )
    run.finish()
