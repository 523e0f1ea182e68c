"""The degeneracy report of stored runs: statistics over seeds, paired comparisons and the
:class:`DegeneracyReport` they make.

Everything here works on the JSON-ready run records that
:func:`~atlasd.downstream.degeneracy.measure_degeneracy` returns (one per seed, data version and
model, as stored in ``report.json``), so a report can be rebuilt or merged without the models.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from atlasd.downstream.degeneracy.reading import degeneracy_reading, degeneracy_table

__all__ = [
    "DegeneracyReport",
    "best_gamma_drop",
    "flattest_control_stats",
    "stats",
    "summarise_degeneracy",
]


@dataclass
class DegeneracyReport:
    """What :func:`~atlasd.downstream.degeneracy.run_degeneracy` measured (or
    :func:`~atlasd.downstream.degeneracy.merge_degeneracy_reports` merged).

    Attributes:
        task: the task's name.
        seeds: the training seeds.
        config: the config as stored in reports (every section with its defaults; see
            :meth:`DegeneracyConfig.stored`).
        group: ``{"dim", "n_components", "generators"}``.
        noise_std: the regression noise sigma (None: classification).
        localization: the LLC's gamma.
        runs: one record per seed, data version and model (:func:`measure_degeneracy`'s).
        summary: ``"version/model"`` -> statistics over seeds.
        susceptibility: model -> the paired Δ LLC and its predictions.
        table, reading: Markdown.
        n_samples: the chart samples per run.
    """

    task: str
    seeds: list[int]
    config: dict[str, Any]
    group: dict[str, Any]
    noise_std: float | None
    localization: float
    runs: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    susceptibility: dict[str, dict[str, Any]]
    table: str
    reading: str
    n_samples: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``report.json`` dict (non-finite numbers still as floats: see ``json_safe``)."""
        return {
            "task": self.task,
            "seeds": self.seeds,
            "config": self.config,
            "group": self.group,
            "noise_std": self.noise_std,
            "localization": self.localization,
            "runs": self.runs,
            "summary": self.summary,
            "susceptibility": self.susceptibility,
            "table": self.table,
            "reading": self.reading,
            "n_samples": self.n_samples,
        }


def stats(values: Sequence[float]) -> dict[str, Any]:
    finite = [float(v) for v in values if math.isfinite(v)]
    mean = statistics.fmean(finite) if finite else math.nan
    sd = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return {"mean": mean, "sd": sd, "values": [float(v) for v in values]}


def _smallest_gap(runs: list[dict]) -> float | None:
    """The least clean rank cut over ``runs``: the smallest ``rank_gap`` (``sigma_r /
    sigma_{r+1}`` of the Jacobian at the functional dimension's cut; ``inf`` when nothing was
    cut), or None when a run did not record it."""
    gaps = [r.get("rank_gap") for r in runs]
    if not gaps or any(g is None for g in gaps):
        return None
    return min(float(g) for g in gaps)


_SUMMARY_KEYS = (
    "hessian_min_eigenvalue",
    "train_nll",
    "heldout_nll",
    "grad_norm",
    "functional_dimension",
    "effective_dimension",
    "gradient_bias",
)


def _direction_stats(runs: list[dict], key: str) -> list[dict[str, Any] | None]:
    """Per generator, ``stats`` of one symmetry-direction figure over runs (None where no run
    has the direction, e.g. the group model's invariant kernels)."""
    return [
        stats([r["symmetry_directions"][i].get(key, math.nan) for r in runs])
        if any(r["symmetry_directions"][i]["available"] for r in runs)
        else None
        for i in range(len(runs[0]["symmetry_directions"]))
    ]


def flattest_control_stats(runs: list[dict], key: str) -> list[dict[str, Any] | None]:
    """Per generator, ``stats`` over runs of ``curvature(generator) / min curvature(shears)``
    (``key``: ``"curvature"`` or ``"hessian_curvature"``): the conservative comparison, since
    one shear can be far stiffer than the other (heat: 2e5 against 211 along the lattice's axes
    and diagonals) and then dominates the mean."""
    out: list[dict[str, Any] | None] = []
    for i in range(len(runs[0]["symmetry_directions"])):
        values = []
        for r in runs:
            d = r["symmetry_directions"][i]
            controls = [c[key] for c in r.get("control_directions", []) if c["available"]]
            if d["available"] and controls and min(controls) > 0:
                values.append(d[key] / min(controls))
        out.append(stats(values) if values else None)
    return out


def _orbit_weight(run: dict) -> float | None:
    """Sum over generators of the symmetry directions' effective weights in one run (None when
    the model has no such direction, or the run predates the measurement)."""
    ws = [d.get("effective_weight") for d in run["symmetry_directions"] if d["available"]]
    return sum(ws) if ws and all(w is not None for w in ws) else None


def best_gamma_drop(sym: dict, brk: dict) -> float | None:
    """The largest LLC drop the measured orbit curvatures allow at ANY localisation (quadratic
    picture), summed over generators: ``max_gamma (w(c_b) - w(c_s)) / 2`` with ``w(c) = n_beta c
    / (n_beta c + gamma)``, reached at ``gamma = n_beta sqrt(c_s c_b)``, is
    ``(sqrt c_b - sqrt c_s) / (2 (sqrt c_b + sqrt c_s))`` (negative: a rise). None without the
    directions."""
    pairs = [
        (a["curvature"], b["curvature"])
        for a, b in zip(sym["symmetry_directions"], brk["symmetry_directions"], strict=True)
        if a["available"] and b["available"]
    ]
    if not pairs:
        return None
    total = 0.0
    for cs, cb in pairs:
        rs, rb = math.sqrt(max(cs, 0.0)), math.sqrt(max(cb, 0.0))
        total += (rb - rs) / (2 * (rb + rs)) if rb + rs > 0 else 0.0
    return total


def _step_check_stats(runs: list[dict]) -> dict[str, Any]:
    """Over runs: the LLC at the smaller step, its linear extrapolation to step 0 and how many
    runs changed by more than 2 stderr with the step (``step_checked`` 0: no check ran)."""
    checks = [c for c in (r["llc"].get("step_check") for r in runs) if c]
    if not checks:
        return {
            "step_checked": 0,
            "step_dependent": 0,
            "step_check_unhealthy": 0,
            "llc_fine_step": None,
            "llc_extrapolated": None,
            "extrapolated_stderr": None,
            "fine_step": None,
        }
    return {
        "step_checked": len(checks),
        "step_dependent": sum(bool(c["dependent"]) for c in checks),
        "step_check_unhealthy": sum(not c.get("healthy", True) for c in checks),
        "llc_fine_step": stats([c["mean"] for c in checks]),
        "llc_extrapolated": stats([c["extrapolated"] for c in checks]),
        "extrapolated_stderr": statistics.fmean(c["extrapolated_stderr"] for c in checks),
        "fine_step": checks[0]["step_size"],
    }


def _paired_delta(
    sym: Sequence[tuple[float, float]], brk: Sequence[tuple[float, float]]
) -> tuple[float, float, str, list[float]]:
    """Mean of the per-seed differences ``sym_i - brk_i`` of ``(value, stderr)`` pairs in seed
    order, its stderr and where that comes from: the spread of the differences over seeds
    (``"seeds"``, two or more), else the two chain stderrs in quadrature (``"chains"``).
    Non-finite differences are left out of the mean; returns ``(delta, stderr, basis,
    per-seed differences)``."""
    deltas = [a - b for (a, _), (b, _) in zip(sym, brk, strict=True)]
    finite = [v for v in deltas if math.isfinite(v)]
    if len(deltas) > 1:
        se = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else math.nan
        basis = "seeds"
    else:
        se, basis = math.hypot(sym[0][1], brk[0][1]), "chains"
    return (statistics.fmean(finite) if finite else math.nan), se, basis, deltas


def summarise_degeneracy(
    cfg: dict,
    group: dict[str, Any],
    runs: list[dict],
    sigma: float | None,
    n_samples: int | None = None,
) -> DegeneracyReport:
    """The report of ``runs`` (one per seed, data version and model; seeds as in
    ``cfg["seeds"]``; ``cfg`` the stored config of :meth:`DegeneracyConfig.stored` with
    ``seeds``): summary, susceptibility, table and reading. ``group``: ``{"dim",
    "n_components", "generators"}`` (a report's ``group`` entry); ``n_samples``: chart samples
    per run."""
    summary: dict[str, dict[str, Any]] = {}
    for version in ("symmetric", "broken"):
        for name in ("baseline", "equivariant"):
            rs = [r for r in runs if r["data"] == version and r["model"] == name]
            entry: dict[str, Any] = {
                "raw_parameters": rs[0]["raw_parameters"],
                "free_parameters": rs[0]["free_parameters"],
                "llc": stats([r["llc"]["mean"] for r in rs]),
                "llc_chain_sd": stats([r["llc"]["std"] for r in rs]),
                "gauss_newton_rank": stats([r["gauss_newton"]["rank"] for r in rs]),
                "rank_gap": _smallest_gap(rs),
                "healthy": all(r["llc"]["healthy"] for r in rs),
                "emulability": [
                    stats([r["emulability"][i]["residual"] for r in rs])
                    for i in range(len(rs[0]["emulability"]))
                ],
                "symmetry_curvature": _direction_stats(rs, "relative_to_random"),
                "symmetry_tangent": _direction_stats(rs, "tangent_norm_relative"),
                "symmetry_vs_control": _direction_stats(rs, "relative_to_control"),
                "symmetry_vs_control_hessian": _direction_stats(rs, "hessian_relative_to_control"),
                "symmetry_vs_flattest_control": flattest_control_stats(rs, "curvature"),
                "symmetry_effective_weight": _direction_stats(rs, "effective_weight"),
                **_step_check_stats(rs),
            }
            for key in _SUMMARY_KEYS:
                entry[key] = stats([r[key] for r in rs])
            summary[f"{version}/{name}"] = entry

    predicted = [group["dim"] / 4, group["dim"] / 2]
    susceptibility: dict[str, Any] = {}
    for name in ("baseline", "equivariant"):
        sym = [r for r in runs if r["data"] == "symmetric" and r["model"] == name]
        brk = [r for r in runs if r["data"] == "broken" and r["model"] == name]
        delta, se, basis, deltas = _paired_delta(
            [(r["llc"]["mean"], r["llc"]["stderr"]) for r in sym],
            [(r["llc"]["mean"], r["llc"]["stderr"]) for r in brk],
        )
        checks = [r["llc"].get("step_check") for r in (*sym, *brk)]
        step0 = (
            _paired_delta(
                [(c["extrapolated"], c["extrapolated_stderr"]) for c in checks[: len(sym)]],
                [(c["extrapolated"], c["extrapolated_stderr"]) for c in checks[len(sym) :]],
            )
            if all(checks)
            else None
        )
        # the drop the symmetry's directions can make at this localisation (quadratic picture):
        # at most half their weight on the broken data (if the symmetry made them exactly
        # flat); half the measured change of weight as the estimate
        weights = [(_orbit_weight(a), _orbit_weight(b)) for a, b in zip(sym, brk, strict=True)]
        weights = [(a, b) for a, b in weights if a is not None and b is not None]
        best = [best_gamma_drop(a, b) for a, b in zip(sym, brk, strict=True)]
        best = [v for v in best if v is not None]
        susceptibility[name] = {
            "attainable_drop": (statistics.fmean(b / 2 for _, b in weights) if weights else None),
            "best_gamma_drop": statistics.fmean(best) if best else None,
            "quadratic_drop": (
                statistics.fmean((b - a) / 2 for a, b in weights) if weights else None
            ),
            "delta": delta,
            "stderr": se,
            "uncertainty_from": basis,
            "per_seed": deltas,
            # the same paired difference of the LLCs extrapolated to step 0 (every run has a
            # step check), free of the sampler's first-order step bias
            "delta_step0": step0[0] if step0 else None,
            "stderr_step0": step0[1] if step0 else None,
            "per_seed_step0": step0[3] if step0 else None,
            # the constraint already removed the symmetry's directions from the group model
            "predicted_drop": predicted if name == "baseline" else [0.0, 0.0],
            "z": delta / se if se > 0 else math.nan,
        }
    report = {
        "task": cfg["task"],
        "seeds": cfg["seeds"],
        "config": {k: v for k, v in cfg.items() if k != "seeds"},
        "group": {k: group[k] for k in ("dim", "n_components", "generators")},
        "noise_std": sigma,
        "localization": runs[0]["llc"]["localization"],
        "runs": runs,
        "summary": summary,
        "susceptibility": susceptibility,
    }
    report["table"] = degeneracy_table(report)
    report["reading"] = degeneracy_reading(report)
    return DegeneracyReport(**report, n_samples=n_samples)
