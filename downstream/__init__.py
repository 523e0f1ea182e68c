"""Downstream: equivariant layers built from a DiscoveredGroup, downstream models, and the
degeneracy of trained weights (local learning coefficient, ranks, emulability).

Names are imported lazily so that one part's dependencies never load another's.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule of atlasd.downstream that defines it
_EXPORTS: dict[str, str] = {
    "equivariant_basis": "solver",
    "EquivariantSolver": "solver",
    "Rep": "solver",
    "InvariantGate": "layers",
    "EquivariantDeepSet": "layers",
    "GaugeEquivariantConv": "gauge",
    "EquivariantLinear": "layers",
    "EquivariantMLP": "layers",
    "EquivariantConv2d": "conv",
    "run_downstream": "experiments",
    "write_report": "experiments",
    "estimate_llc": "llc",
    "LLCEstimate": "llc",
    "LLCHealthWarning": "llc",
    "LLCHealthError": "llc",
    "step_dependence": "llc",
    "functional_dimension": "ranks",
    "jacobian_spectrum": "ranks",
    "gauss_newton_spectrum": "ranks",
    "effective_dimension": "ranks",
    "llc_rank_bounds": "ranks",
    "gauss_newton_matrix": "ranks",
    "loss_hessian": "ranks",
    "run_degeneracy": "degeneracy",
    "write_degeneracy_report": "degeneracy_report",
    "measure_degeneracy": "degeneracy",
    "effective_weight": "ranks",
    "paired_log_ratio": "degeneracy_report",
    "merge_degeneracy_reports": "degeneracy_report",
    "emulability": "emulate",
    "emulation": "emulate",
    "Emulation": "emulate",
    "parameter_symmetries": "emulate",
    "lie_derivative": "emulate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"atlasd.downstream.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'atlasd.downstream' has no attribute {name!r}")
