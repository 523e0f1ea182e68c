"""The degeneracy report's Markdown: the table and the reading, generated from the numbers
(never a fixed text), and the paired comparisons they quote."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = [
    "attainable_reading",
    "control_reading",
    "degeneracy_reading",
    "degeneracy_table",
    "paired_log_ratio",
    "pm",
]


def _rank_cell(e: dict[str, Any]) -> str:
    """Functional dimension with the smallest gap at its cut over seeds."""
    gap = e.get("rank_gap")
    if gap is None:
        return pm(e["functional_dimension"], ".0f")
    tail = "gap ∞" if math.isinf(gap) else f"gap {gap:.1e}"
    return f"{pm(e['functional_dimension'], '.0f')} ({tail})"


def pm(s: dict[str, Any], fmt: str = ".2f") -> str:
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
    return f"{pm(e['llc_fine_step'])} at {e['fine_step']:.3g}; {pm(e['llc_extrapolated'])}" + flag


def degeneracy_table(report: dict[str, Any]) -> str:
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
                    pm(e["llc"]) + ("" if e["healthy"] else " (unhealthy)"),
                    format(e["llc_chain_sd"]["mean"], ".2f"),
                    _step_cell(e),
                    pm(e["gauss_newton_rank"], ".0f"),
                    _rank_cell(e),
                    format(e["effective_dimension"]["mean"] / 2, ".2f"),
                    pm(e["hessian_min_eigenvalue"], ".3g"),
                    pm(e["gradient_bias"], ".2f"),
                    pm(e["heldout_nll"], ".3g"),
                    ", ".join(pm(s, ".3f") for s in e["emulability"]),
                    ", ".join(
                        "none (kernels invariant)"
                        if c is None
                        else f"{pm(c, '.3g')} (orbit {pm(t, '.2g')})"
                        for c, t in zip(e["symmetry_curvature"], e["symmetry_tangent"], strict=True)
                    ),
                    ", ".join(
                        "-"
                        if c is None or h is None or f is None
                        else f"{pm(c, '.3g')}; {pm(h, '.3g')}; {pm(f, '.3g')}"
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


def degeneracy_reading(report: dict[str, Any]) -> str:
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
            lines.append(attainable_reading(d, report["localization"]))
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
    lines += control_reading(summ)
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


def attainable_reading(d: dict[str, Any], gamma: float) -> str:
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
            f"{k}: {pm(e['llc'])} -> {pm(e['llc_fine_step'])}, extrapolated to step 0 "
            f"{pm(e['llc_extrapolated'])} (stderr over chains {e['extrapolated_stderr']:.2g})"
            for k, e in moved.items()
        )
        + "): those values carry a step bias (discretisation, or minibatch gradient noise "
        "heating the chains), so compare them only at equal settings, and lower llc.step_size "
        "or raise llc.batch_size for values to quote.",
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


def control_reading(summ: dict[str, Any]) -> list[str]:
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
                f"{pm(a, '.3g')} on the symmetric data ({special}), {pm(b, '.3g')} on the "
                f"broken data ({verdict})."
            )
    if lines:
        lines[0] += (
            " Same model, same data, same construction: these ratios hold the task's difficulty"
            " fixed, which the LLC susceptibility does not."
        )
    return lines
