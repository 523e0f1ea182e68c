"""The degeneracy report's files (``report.json``, ``report.md``, ``report.png``) and the merge
of reports run on different seeds."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from atlasd.downstream.degeneracy.summary import DegeneracyReport, summarise_degeneracy
from atlasd.io import json_safe, write_atomic, write_json_atomic

__all__ = ["merge_degeneracy_reports", "write_degeneracy_report"]


def _plot(report: dict[str, Any], path: Path) -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    keys = list(report["summary"])
    means = [report["summary"][k]["llc"]["mean"] for k in keys]
    errs = [
        report["summary"][k]["llc"]["sd"]
        if math.isfinite(report["summary"][k]["llc"]["sd"])
        else report["summary"][k]["llc_chain_sd"]["mean"]
        for k in keys
    ]
    ax1.bar(range(len(keys)), means, yerr=errs, color=["C0", "C1", "C0", "C1"], capsize=4)
    ax1.set_xticks(range(len(keys)), [k.replace("/", "\n") for k in keys], fontsize=8)
    ax1.set_ylabel("LLC estimate")
    ax1.set_title(f"{report['task']}: LLC (error bar: sd)")
    for r in report["runs"]:
        if r["seed"] != report["seeds"][0]:
            continue
        mu = torch.tensor(r["gauss_newton"]["eigenvalues"]).clamp_min(1e-30)
        style = "-" if r["data"] == "symmetric" else "--"
        color = "C0" if r["model"] == "baseline" else "C1"
        ax2.semilogy(mu.numpy(), style, color=color, label=f"{r['data']} {r['model']}")
    ax2.set_xlabel("index")
    ax2.set_ylabel("Gauss-Newton eigenvalue")
    ax2.set_title("Gauss-Newton spectra (first seed)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return write_atomic(path, buf.getvalue())


def write_degeneracy_report(report: DegeneracyReport, run_dir: Path) -> tuple[Path, Path, Path]:
    """Write ``run_dir/report.json`` (non-finite numbers as null), ``report.md`` and
    ``report.png`` atomically; returns the three paths."""
    run_dir = Path(run_dir)
    if not isinstance(report, DegeneracyReport):
        raise ValueError(
            "report must be the DegeneracyReport of run_degeneracy or merge_degeneracy_reports "
            "(needs 'summary' and 'table')"
        )
    report = report.to_json()
    json_path = write_json_atomic(run_dir / "report.json", json_safe(report))
    seeds = ", ".join(str(s) for s in report["seeds"])
    md = (
        f"# Degeneracy: {report['task']}\n\n"
        f"Group: dimension {report['group']['dim']}, {report['group']['n_components']} "
        f"component(s). Seeds: {seeds}. n = {report.get('n_samples')} chart samples; "
        + (
            f"Gaussian noise sigma = {report['noise_std']:.4g}. "
            if report.get("noise_std") is not None
            else "categorical likelihood. "
        )
        + f"Localisation gamma = {report['localization']:.3g}. "
        "Values are mean ± sd over seeds (one seed: the value); 'chain sd' is the spread "
        "of the LLC over SGLD chains; 'effective dim / 2' is what the LLC estimate would be on "
        "a quadratic basin, 'gradient bias' the quadratic estimate of how much w* not being an "
        "exact minimum would lower the estimate: the gradient correction removes it, so it is "
        "in neither column. Seeds vary the initial weights, batch order, sampler and the "
        "chart samples (fields drawn with data.seed + seed).\n\n"
        f"{report['table']}\n\n## Reading\n\n{report['reading']}\n"
    )
    md_path = write_atomic(run_dir / "report.md", md)
    return json_path, md_path, _plot(report, run_dir / "report.png")


def _comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config without the settings whose resolved values the merge compares instead
    (``llc.localization`` and ``llc.noise_std``: ``auto`` and the number it chose are the
    same experiment)."""
    llc = {k: v for k, v in config.get("llc", {}).items() if k not in ("localization", "noise_std")}
    return {**config, "llc": llc}


def merge_degeneracy_reports(reports: Sequence[dict[str, Any]]) -> DegeneracyReport:
    """One report from reports of the same experiment run on different seeds (e.g. seeds run
    in separate processes or on separate machines), summarised by the current code.

    The runs are taken as stored; the summary, susceptibility (paired over all seeds), table
    and reading are recomputed.

    Args:
        reports: ``report.json`` contents written by :func:`write_degeneracy_report` (one or
            more; a single report is re-summarised).

    Returns:
        the merged report, seeds in ascending order (write it with
        :func:`write_degeneracy_report`).

    Raises:
        ValueError: no reports, a report that is not a degeneracy report, or reports that are
            not comparable: different task, config (other than the seeds), group, sample count,
            noise level or localisation gamma (``llc.localization: auto`` picks gamma per
            process: fix it to one number for runs to be merged; ``auto`` and the number it
            chose merge), or a seed in two reports.
    """
    if not reports:
        raise ValueError("no reports to merge")
    keys = ("task", "seeds", "config", "group", "noise_std", "localization", "runs")
    for i, r in enumerate(reports):
        missing = [k for k in keys if k not in r]
        if missing:
            raise ValueError(f"report {i} is not a degeneracy report (missing {missing})")
    first = reports[0]

    def differs(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return a is not b
        return not math.isclose(float(a), float(b), rel_tol=1e-9)

    seen: dict[int, int] = {}
    for i, r in enumerate(reports):
        if r["task"] != first["task"]:
            raise ValueError(f"report {i} is on task {r['task']!r}, report 0 on {first['task']!r}")
        a, b = _comparable_config(r["config"]), _comparable_config(first["config"])
        if a != b:
            changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise ValueError(f"report {i} has a different config than report 0 (in {changed})")
        g, g0 = r["group"], first["group"]
        if (g["dim"], g["n_components"]) != (g0["dim"], g0["n_components"]) or not torch.allclose(
            torch.tensor(g["generators"], dtype=torch.float64),
            torch.tensor(g0["generators"], dtype=torch.float64),
            atol=1e-9,
        ):
            raise ValueError(f"report {i} measured a different group than report 0")
        if differs(r.get("n_samples"), first.get("n_samples")):
            raise ValueError(
                f"report {i} has n = {r.get('n_samples')}, report 0 {first.get('n_samples')}"
            )
        if differs(r["noise_std"], first["noise_std"]):
            raise ValueError(
                f"report {i} has noise sigma {r['noise_std']}, report 0 {first['noise_std']}: "
                "set llc.noise_std to one number for runs to be merged"
            )
        if differs(r["localization"], first["localization"]):
            raise ValueError(
                f"report {i} was sampled at localisation gamma {r['localization']:.6g}, report 0 "
                f"at {first['localization']:.6g}, so their LLCs are not comparable: rerun with "
                f"llc.localization fixed to one number (e.g. the larger, "
                f"{max(r['localization'], first['localization']):.6g})"
            )
        for seed in r["seeds"]:
            if seed in seen:
                raise ValueError(f"seed {seed} is in report {seen[seed]} and in report {i}")
            seen[seed] = i

    runs = [copy.deepcopy(run) for r in reports for run in r["runs"]]
    seeds = sorted(seen)
    runs.sort(key=lambda run: seeds.index(run["seed"]))
    return summarise_degeneracy(
        {**first["config"], "seeds": seeds},
        first["group"],
        runs,
        first["noise_std"],
        n_samples=first.get("n_samples"),
    )
