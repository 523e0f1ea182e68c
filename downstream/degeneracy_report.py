"""The degeneracy report of stored runs: summary over seeds, paired comparisons, table, reading,
plot, files, and the merge of runs made in separate processes.

Everything here works on the JSON-ready run records that :func:`measure_degeneracy` returns
(one per seed, data version and model, as stored in ``report.json``), so a report can be
rebuilt or merged without the models. See :mod:`atlasd.downstream.degeneracy` for what the
figures measure.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from atlasd.io import json_safe, write_atomic, write_json_atomic

__all__ = [
    "merge_degeneracy_reports",
    "paired_log_ratio",
    "summarise_degeneracy",
    "write_degeneracy_report",
]


def _stats(values: Sequence[float]) -> dict[str, Any]:
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


def _rank_cell(e: dict[str, Any]) -> str:
    """Functional dimension with the smallest gap at its cut over seeds."""
    gap = e.get("rank_gap")
    if gap is None:
        return _pm(e["functional_dimension"], ".0f")
    tail = "gap ∞" if math.isinf(gap) else f"gap {gap:.1e}"
    return f"{_pm(e['functional_dimension'], '.0f')} ({tail})"


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
    """Per generator, ``_stats`` of one symmetry-direction figure over runs (None where no run
    has the direction, e.g. the group model's invariant kernels)."""
    return [
        _stats([r["symmetry_directions"][i].get(key, math.nan) for r in runs])
        if any(r["symmetry_directions"][i]["available"] for r in runs)
        else None
        for i in range(len(runs[0]["symmetry_directions"]))
    ]


def _flattest_control_stats(runs: list[dict], key: str) -> list[dict[str, Any] | None]:
    """Per generator, ``_stats`` over runs of ``curvature(generator) / min curvature(shears)``
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
        out.append(_stats(values) if values else None)
    return out


def _orbit_weight(run: dict) -> float | None:
    """Sum over generators of the symmetry directions' effective weights in one run (None when
    the model has no such direction, or the run predates the measurement)."""
    ws = [d.get("effective_weight") for d in run["symmetry_directions"] if d["available"]]
    return sum(ws) if ws and all(w is not None for w in ws) else None


def _best_gamma_drop(sym: dict, brk: dict) -> float | None:
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
        "llc_fine_step": _stats([c["mean"] for c in checks]),
        "llc_extrapolated": _stats([c["extrapolated"] for c in checks]),
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
    cfg: dict, group: dict[str, Any], runs: list[dict], sigma: float | None
) -> dict[str, Any]:
    """The report of ``runs`` (one per seed, data version and model; seeds as in
    ``cfg["seeds"]``): summary, susceptibility, table and reading. ``group``: ``{"dim",
    "n_components", "generators"}`` (a report's ``group`` entry)."""
    summary: dict[str, dict[str, Any]] = {}
    for version in ("symmetric", "broken"):
        for name in ("baseline", "equivariant"):
            rs = [r for r in runs if r["data"] == version and r["model"] == name]
            entry: dict[str, Any] = {
                "raw_parameters": rs[0]["raw_parameters"],
                "free_parameters": rs[0]["free_parameters"],
                "llc": _stats([r["llc"]["mean"] for r in rs]),
                "llc_chain_sd": _stats([r["llc"]["std"] for r in rs]),
                "gauss_newton_rank": _stats([r["gauss_newton"]["rank"] for r in rs]),
                "rank_gap": _smallest_gap(rs),
                "healthy": all(r["llc"]["healthy"] for r in rs),
                "emulability": [
                    _stats([r["emulability"][i]["residual"] for r in rs])
                    for i in range(len(rs[0]["emulability"]))
                ],
                "symmetry_curvature": _direction_stats(rs, "relative_to_random"),
                "symmetry_tangent": _direction_stats(rs, "tangent_norm_relative"),
                "symmetry_vs_control": _direction_stats(rs, "relative_to_control"),
                "symmetry_vs_control_hessian": _direction_stats(rs, "hessian_relative_to_control"),
                "symmetry_vs_flattest_control": _flattest_control_stats(rs, "curvature"),
                "symmetry_effective_weight": _direction_stats(rs, "effective_weight"),
                **_step_check_stats(rs),
            }
            for key in _SUMMARY_KEYS:
                entry[key] = _stats([r[key] for r in rs])
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
        best = [_best_gamma_drop(a, b) for a, b in zip(sym, brk, strict=True)]
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
    report["table"] = _table(report)
    report["reading"] = _reading(report)
    return report


def _pm(s: dict[str, Any], fmt: str = ".2f") -> str:
    if not math.isfinite(s.get("sd", math.nan)):
        return format(s["mean"], fmt)
    return f"{format(s['mean'], fmt)} ± {format(s['sd'], fmt)}"


def _step_cell(e: dict[str, Any]) -> str:
    if not e.get("step_checked"):
        return "-"
    flag = (
        f" (step-dependent in {e['step_dependent']} of {e['step_checked']})"
        if e["step_dependent"]
        else ""
    )
    return f"{_pm(e['llc_fine_step'])} at {e['fine_step']:.3g}; {_pm(e['llc_extrapolated'])}" + flag


def _table(report: dict[str, Any]) -> str:
    header = [
        "data",
        "model",
        "raw params",
        "free params",
        "LLC",
        "chain sd",
        "LLC at the smaller step; extrapolated to step 0",
        "GN rank",
        "functional dim (smallest gap σ_r/σ_r+1 at the cut)",
        "effective dim / 2",
        "Hessian λ_min",
        "gradient bias",
        "held-out NLL",
        "emulability residual",
        "symmetry-direction curvature / random (orbit |t| / |w|)",
        "symmetry / shear curvature: mean of shears (G; H), flattest shear (G)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, e in report["summary"].items():
        version, name = key.split("/")
        lines.append(
            "| "
            + " | ".join(
                [
                    version,
                    name,
                    str(e["raw_parameters"]),
                    str(e["free_parameters"]),
                    _pm(e["llc"]) + ("" if e["healthy"] else " (unhealthy)"),
                    format(e["llc_chain_sd"]["mean"], ".2f"),
                    _step_cell(e),
                    _pm(e["gauss_newton_rank"], ".0f"),
                    _rank_cell(e),
                    format(e["effective_dimension"]["mean"] / 2, ".2f"),
                    _pm(e["hessian_min_eigenvalue"], ".3g"),
                    _pm(e["gradient_bias"], ".2f"),
                    _pm(e["heldout_nll"], ".3g"),
                    ", ".join(_pm(s, ".3f") for s in e["emulability"]),
                    ", ".join(
                        "none (kernels invariant)"
                        if c is None
                        else f"{_pm(c, '.3g')} (orbit {_pm(t, '.2g')})"
                        for c, t in zip(e["symmetry_curvature"], e["symmetry_tangent"], strict=True)
                    ),
                    ", ".join(
                        "-"
                        if c is None or h is None or f is None
                        else f"{_pm(c, '.3g')}; {_pm(h, '.3g')}; {_pm(f, '.3g')}"
                        for c, h, f in zip(
                            e["symmetry_vs_control"],
                            e["symmetry_vs_control_hessian"],
                            e["symmetry_vs_flattest_control"],
                            strict=True,
                        )
                    ),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "| model | Δ LLC (symmetric - broken) | stderr | Δ LLC extrapolated to step 0 "
        "| predicted drop (rank bound) | attainable at this γ (quadratic estimate) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in report["susceptibility"].items():
        lo, hi = s["predicted_drop"]
        drop = f"-{lo:.2f} to -{hi:.2f}" if hi > 0 else "0 (no symmetry directions left)"
        attainable = (
            "-"
            if s.get("attainable_drop") is None
            else f"-{s['attainable_drop']:.3f} ({-s['quadratic_drop']:+.3f})"
        )
        step0 = (
            "-"
            if s.get("delta_step0") is None
            else f"{s['delta_step0']:+.2f} ± {s['stderr_step0']:.2f}"
        )
        lines.append(
            f"| {name} | {s['delta']:+.2f} | {s['stderr']:.2f} ({s['uncertainty_from']}) "
            f"| {step0} | {drop} | {attainable} |"
        )
    return "\n".join(lines)


def _reading(report: dict[str, Any]) -> str:
    """A plain reading of the numbers, generated from them (never a fixed text)."""
    s, summ = report["susceptibility"], report["summary"]
    dim = report["group"]["dim"]
    lines = []
    b_free = summ["symmetric/baseline"]["free_parameters"]
    e_free = summ["symmetric/equivariant"]["free_parameters"]
    lines.append(
        f"The group model has {e_free} free parameters against {b_free} "
        f"({b_free / max(e_free, 1):.1f}x fewer); its LLC is "
        f"{summ['symmetric/equivariant']['llc']['mean']:.2f} against "
        f"{summ['symmetric/baseline']['llc']['mean']:.2f} on the symmetric data."
    )
    healthy = [k for k, e in summ.items() if e["healthy"]]
    worst = min(r["hessian_min_eigenvalue"] for r in report["runs"])
    n_beta = report["runs"][0]["llc"]["n_beta"]
    improper = n_beta * max(0.0, -worst) > report["localization"]
    lines.append(
        f"Sampler health: {len(healthy)} of {len(summ)} LLC estimates pass the health check"
        + (
            f" (failing: {', '.join(k for k in summ if k not in healthy)})"
            if healthy != list(summ)
            else ""
        )
        + f"; the most negative Hessian eigenvalue at w* is {worst:.3g} and the localisation "
        f"gamma = {report['localization']:.3g}"
        + (
            f", below n_beta |lambda_min| = {n_beta * -worst:.3g}: the localised posterior is "
            "improper along that direction, so chains can drift and the LLCs are not "
            "trustworthy; raise llc.localization (auto takes twice that)."
            if improper
            else "."
        )
    )
    lines += _step_reading(summ)
    for name in ("baseline", "equivariant"):
        d = s[name]
        lo, hi = d["predicted_drop"]
        if not math.isfinite(d["delta"]):
            lines.append(
                f"{name}: the LLC could not be measured on both data versions (see the runs' "
                "llc.problems), so there is no susceptibility to read."
            )
            continue
        resolved = d["stderr"] > 0 and abs(d["delta"]) > 2 * d["stderr"]
        within = -hi - 2 * d["stderr"] <= d["delta"] <= -lo + 2 * d["stderr"]
        if name == "equivariant":
            verdict = (
                "as predicted, no resolved change (its kernels are invariant, so the symmetry "
                "has no directions left to flatten)"
                if not resolved
                else "resolved: the constrained model's LLC changed with the data although the "
                "constraint leaves the symmetry no directions, so this is the changed function, "
                "not the symmetry"
            )
            lines.append(
                f"{name}: Δ LLC (symmetric - broken) = {d['delta']:+.2f} ± {d['stderr']:.2f} "
                f"(stderr over {d['uncertainty_from']}): {verdict}."
            )
            lines += _step0_delta_reading(name, d)
            continue
        verdict = (
            "consistent with the predicted drop"
            if within and resolved
            else "not resolved from zero (|Δ| < 2 stderr)"
            if not resolved
            else "resolved, but not of the predicted size and sign"
        )
        lines.append(
            f"{name}: Δ LLC (symmetric - broken) = {d['delta']:+.2f} ± {d['stderr']:.2f} "
            f"(stderr over {d['uncertainty_from']}); an emulable {dim}-dimensional symmetry "
            f"predicts a drop of {lo:.2f} to {hi:.2f}: {verdict}."
        )
        lines += _step0_delta_reading(name, d)
        if d.get("attainable_drop") is not None:
            lines.append(_attainable_reading(d, report["localization"]))
    sym_c = summ["symmetric/baseline"]["symmetry_curvature"]
    brk_c = summ["broken/baseline"]["symmetry_curvature"]
    sym_t = summ["symmetric/baseline"]["symmetry_tangent"]
    brk_t = summ["broken/baseline"]["symmetry_tangent"]
    for i, (a, b) in enumerate(zip(sym_c, brk_c, strict=True)):
        if a is None or b is None:
            continue
        verdict = _paired_verdict(
            a["values"],
            b["values"],
            "flatter on the symmetric data, as the symmetry predicts",
            "not flatter on the symmetric data: the prediction is not borne out",
        )
        lines.append(
            f"Generator {i} in the unconstrained model's weights (every kernel transformed): "
            f"loss curvature {a['mean']:.3g} x that of a random direction after training on "
            f"the symmetric data, {b['mean']:.3g} x on the broken data ({verdict}). The "
            f"orbit direction has |t| / |w| = {sym_t[i]['mean']:.2g} and "
            f"{brk_t[i]['mean']:.2g}: the closer to 0, the closer the kernels are to invariant "
            "and the less there is for the symmetry to flatten."
        )
    lines += _control_reading(summ)
    emu = summ["symmetric/baseline"]["emulability"]
    if emu:
        lines.append(
            "Emulability residual of the discovered generator(s) by the unconstrained model on "
            "the symmetric data: "
            + ", ".join(f"{e['mean']:.3f}" for e in emu)
            + " (0 = a weight change reproduces the input perturbation, 1 = none helps)."
        )
    return "\n".join(lines)


def _step0_delta_reading(name: str, d: dict[str, Any]) -> list[str]:
    """The Δ LLC of the step-0 extrapolations, next to the one at the sampler's step."""
    if d.get("delta_step0") is None:
        return []
    delta, se = d["delta_step0"], d["stderr_step0"]
    if not math.isfinite(delta):
        return [f"{name}: Δ LLC extrapolated to step 0 could not be formed (non-finite)."]
    resolved = se > 0 and abs(delta) > 2 * se
    agrees = abs(delta - d["delta"]) <= 2 * math.hypot(se, d["stderr"])
    return [
        f"{name}: extrapolated to step 0 (free of the sampler's first-order step bias), Δ LLC "
        f"= {delta:+.2f} ± {se:.2f} (stderr over {d['uncertainty_from']}): "
        + ("resolved from zero" if resolved else "not resolved from zero")
        + (
            ", and within 2 stderr of the value at the sampler's step."
            if agrees
            else f", against {d['delta']:+.2f} at the sampler's step: the step bias differs "
            "between the data versions, so quote the extrapolated value."
        )
    ]


def _attainable_reading(d: dict[str, Any], gamma: float) -> str:
    """What the localisation lets the LLC see of the symmetry's directions."""
    attainable, quadratic = d["attainable_drop"], d["quadratic_drop"]
    if attainable < 0.05:
        verdict = (
            "the symmetry's directions are below the LLC's resolution even without the "
            "symmetry, so no LLC difference can show it at this localisation"
        )
    elif d["stderr"] > 0 and attainable < 2 * d["stderr"]:
        verdict = "smaller than 2 stderr of the measured Δ, so the measurement cannot resolve it"
    else:
        verdict = "within the measurement's resolution"
    return (
        f"At gamma = {gamma:.3g} the symmetry's directions in the unconstrained weights carry "
        f"an effective weight of {2 * attainable:.3f} on the broken data (1 = fully counted by "
        f"the LLC): the symmetry can lower the LLC by at most {attainable:.3f}, and the measured "
        f"curvatures along them predict Δ LLC = {-quadratic:+.3f} (quadratic picture); the "
        f"rank-bound prediction assumes them fully counted: {verdict}."
        + (
            f" At any localisation these curvatures allow a drop of at most "
            f"{d['best_gamma_drop']:.3f} (quadratic picture, best gamma)."
            if d.get("best_gamma_drop") is not None
            else ""
        )
    )


def _step_reading(summ: dict[str, Any]) -> list[str]:
    """Reading of the step check: which LLCs moved with the SGLD step."""
    checked = {k: e for k, e in summ.items() if e.get("step_checked")}
    if not checked:
        return []
    moved = {k: e for k, e in checked.items() if e["step_dependent"]}
    step = next(iter(checked.values()))["fine_step"]
    unhealthy = [k for k, e in checked.items() if e.get("step_check_unhealthy")]
    health = (
        [
            "The step check's own estimates failed the health check in "
            + ", ".join(f"{k} ({checked[k]['step_check_unhealthy']} run(s))" for k in unhealthy)
            + ": read their extrapolations with that."
        ]
        if unhealthy
        else []
    )
    if not moved:
        return [
            f"Step check: no LLC estimate moved by more than 2 stderr when the step was lowered "
            f"to {step:.3g}, so the sampler's step bias is below the estimates' noise.",
            *health,
        ]
    n_moved = sum(e["step_dependent"] for e in checked.values())
    n_checked = sum(e["step_checked"] for e in checked.values())
    return [
        f"Step check: {n_moved} of {n_checked} LLC estimates moved by more than 2 stderr "
        f"at step {step:.3g} ("
        + "; ".join(
            f"{k}: {_pm(e['llc'])} -> {_pm(e['llc_fine_step'])}, extrapolated to step 0 "
            f"{_pm(e['llc_extrapolated'])} (stderr over chains {e['extrapolated_stderr']:.2g})"
            for k, e in moved.items()
        )
        + "): those values carry a step bias (discretisation, or minibatch gradient noise "
        "heating the chains), so compare them only at equal settings, and lower llc.step or "
        "raise llc.batch_size for values to quote.",
        *health,
    ]


def paired_log_ratio(sym: Sequence[float], brk: Sequence[float]) -> dict[str, float] | None:
    """Paired comparison of a positive figure on symmetric and broken data, seed by seed.

    Both data versions of a seed share the initial weights, the patches' positions and the
    fields' seed, so the per-seed log ratios ``log(sym_i / brk_i)`` remove the seed-to-seed
    spread that both share (on digits the ratios themselves vary 1.5x between seeds).

    Args:
        sym: ``(k,)`` values on the symmetric data, in seed order.
        brk: ``(k,)`` values on the broken data, same seeds and order.

    Returns:
        ``n`` (pairs used), ``ratio`` (geometric mean of ``sym_i / brk_i``) and the 95% interval
        ``low``, ``high`` from Student's t with ``n - 1`` degrees of freedom; None when fewer
        than 2 pairs are finite and positive, or the lists do not pair up.
    """
    from scipy.stats import t as student_t

    if len(sym) != len(brk):
        return None
    logs = [
        math.log(a / b)
        for a, b in zip(sym, brk, strict=True)
        if math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0
    ]
    if len(logs) < 2:
        return None
    mean = statistics.fmean(logs)
    t_crit = float(student_t.ppf(0.975, len(logs) - 1))
    half = t_crit * statistics.stdev(logs) / math.sqrt(len(logs))
    return {
        "n": len(logs),
        "ratio": math.exp(mean),
        "low": math.exp(mean - half),
        "high": math.exp(mean + half),
    }


def _paired_verdict(sym: list[float], brk: list[float], flatter: str, stiffer: str) -> str:
    """The verdict on a curvature figure, symmetric against broken data, paired by seed."""
    paired = paired_log_ratio(sym, brk)
    if paired is None:
        return (
            "one seed, no uncertainty: read the difference as indicative only"
            if len(sym) < 2
            else "the seeds do not pair up, no uncertainty"
        )
    interval = (
        f"{paired['n']} seeds, paired: symmetric / broken = {paired['ratio']:.3g}, 95% interval "
        f"{paired['low']:.3g} to {paired['high']:.3g}"
    )
    if paired["low"] <= 1 <= paired["high"]:
        return f"{interval}: not resolved"
    return f"{interval}: {flatter if paired['high'] < 1 else stiffer}"


def _control_reading(summ: dict[str, Any]) -> list[str]:
    """Reading of the symmetry-against-shear curvature ratios of the unconstrained model."""
    lines = []
    for which, label in (
        ("symmetry_vs_control", "Gauss-Newton, mean of the shears"),
        ("symmetry_vs_control_hessian", "Hessian, mean of the shears"),
        ("symmetry_vs_flattest_control", "Gauss-Newton, flattest shear"),
    ):
        sym, brk = summ["symmetric/baseline"][which], summ["broken/baseline"][which]
        for i, (a, b) in enumerate(zip(sym, brk, strict=True)):
            if (
                a is None
                or b is None
                or not (math.isfinite(a["mean"]) and math.isfinite(b["mean"]))
            ):
                continue
            verdict = _paired_verdict(
                a["values"],
                b["values"],
                "relatively flatter with the symmetry, as predicted",
                "not relatively flatter with the symmetry",
            )
            special = (
                "the symmetry's direction is flatter than the shears"
                if a["mean"] < 1
                else "the symmetry's direction is not flatter than the shears"
            )
            lines.append(
                f"Generator {i} against shears on the same weights ({label}): curvature ratio "
                f"{_pm(a, '.3g')} on the symmetric data ({special}), {_pm(b, '.3g')} on the "
                f"broken data ({verdict})."
            )
    if lines:
        lines[0] += (
            " Same model, same data, same construction: these ratios hold the task's difficulty"
            " fixed, which the LLC susceptibility does not."
        )
    return lines


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


def write_degeneracy_report(report: dict[str, Any], run_dir: Path) -> tuple[Path, Path, Path]:
    """Write ``run_dir/report.json`` (non-finite numbers as null), ``report.md`` and
    ``report.png`` atomically; returns the three paths."""
    run_dir = Path(run_dir)
    if "summary" not in report or "table" not in report:
        raise ValueError("report must come from run_degeneracy (needs 'summary' and 'table')")
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


def merge_degeneracy_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
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
    report = summarise_degeneracy(
        {**first["config"], "seeds": seeds}, first["group"], runs, first["noise_std"]
    )
    report["n_samples"] = first.get("n_samples")
    return report
