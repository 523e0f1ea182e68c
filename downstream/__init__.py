"""Downstream: what a DiscoveredGroup is used for. Three rooms:

* :mod:`atlasd.downstream.equivariant`: equivariant layers built from a group (the solver for
  the weight basis, linear, set, convolutional and gauge layers);
* :mod:`atlasd.downstream.experiments`: the downstream comparison of a baseline and a
  group-built model on a task;
* :mod:`atlasd.downstream.degeneracy`: the degeneracy of trained weights (local learning
  coefficient, ranks, emulability) and its report.

The models both studies train live in :mod:`atlasd.downstream.models`. Names are imported
lazily so that one part's dependencies never load another's (and the typed configs import
without torch).
"""

from __future__ import annotations

from atlasd.lazy import lazy_getattr

# public name -> sub-package of atlasd.downstream that exports it
_EXPORTS: dict[str, str] = {
    "equivariant_basis": "equivariant",
    "EquivariantSolver": "equivariant",
    "Rep": "equivariant",
    "InvariantGate": "equivariant",
    "EquivariantDeepSet": "equivariant",
    "GaugeEquivariantConv": "equivariant",
    "EquivariantLinear": "equivariant",
    "EquivariantMLP": "equivariant",
    "EquivariantConv2d": "equivariant",
    "run_downstream": "experiments",
    "write_report": "experiments",
    "estimate_llc": "degeneracy",
    "LLCEstimate": "degeneracy",
    "LLCHealthWarning": "degeneracy",
    "LLCHealthError": "degeneracy",
    "step_dependence": "degeneracy",
    "functional_dimension": "degeneracy",
    "jacobian_spectrum": "degeneracy",
    "gauss_newton_spectrum": "degeneracy",
    "effective_dimension": "degeneracy",
    "llc_rank_bounds": "degeneracy",
    "gauss_newton_matrix": "degeneracy",
    "loss_hessian": "degeneracy",
    "run_degeneracy": "degeneracy",
    "write_degeneracy_report": "degeneracy",
    "measure_degeneracy": "degeneracy",
    "effective_weight": "degeneracy",
    "paired_log_ratio": "degeneracy",
    "merge_degeneracy_reports": "degeneracy",
    "emulability": "degeneracy",
    "emulation": "degeneracy",
    "Emulation": "degeneracy",
    "parameter_symmetries": "degeneracy",
    "lie_derivative": "degeneracy",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
