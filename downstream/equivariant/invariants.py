"""Invariants of a representation: invariant bilinear forms (for the gates) and invariant biases,
shared by the linear, convolutional and gauge layers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from atlasd.downstream.equivariant.reps import BaseRep
from atlasd.downstream.equivariant.solver import EquivariantSolver, equivariant_basis

__all__ = ["invariant_bias_vector", "invariant_forms", "register_invariant_bias"]

_F64 = torch.float64


def invariant_forms(base: BaseRep, solver: EquivariantSolver | None = None) -> Tensor:
    """Invariant bilinear forms of a block: basis (r, d, d) of M with ``x^T M y`` invariant,
    i.e. the equivariant maps ``base ⊗ base -> S`` reshaped. Float64."""
    square = base.tensor(base)
    k = base.generators.shape[0]
    zeros = torch.zeros(k, 1, 1, dtype=_F64)
    if square.discrete is None:
        W = equivariant_basis(square.generators, zeros, solver=solver)
    else:
        ones = torch.ones(square.discrete.shape[0], 1, 1, dtype=_F64)
        W = equivariant_basis(square.generators, zeros, square.discrete, ones, solver=solver)
    return W.reshape(-1, base.dim, base.dim)


def register_invariant_bias(
    module: torch.nn.Module,
    out_blocks: list[tuple[Any, int, BaseRep]],
    solver: EquivariantSolver,
    n_generators: int,
    dtype: torch.dtype,
    enabled: bool,
) -> None:
    """Give ``module`` a bias restricted to the invariant vectors of each output block.

    ``out_blocks`` are ``Rep.slices()`` entries ``(slice, multiplicity, block)``. For every block
    with invariants (``B v = 0`` for its generators, ``H v = v`` for its discrete elements) the
    basis (r, d) is registered as buffer ``bias_basis_{j}``; ``module.bias`` holds
    r * multiplicity free values per such block (None when ``enabled`` is False), and
    ``module._bias_blocks`` lists ``(block index, offset into bias)``. Read it back with
    :func:`invariant_bias_vector`.
    """
    module._bias_blocks = []
    n_b = 0
    if enabled:
        zeros = torch.zeros(n_generators, 1, 1, dtype=_F64)
        for j, (_, m_out, block) in enumerate(out_blocks):
            if block.discrete is None:
                Qb = solver.basis(zeros, block.generators)
            else:
                ones = torch.ones(block.discrete.shape[0], 1, 1, dtype=_F64)
                Qb = solver.basis(zeros, block.generators, ones, block.discrete)
            if Qb.shape[0] == 0:
                continue
            module.register_buffer(f"bias_basis_{j}", Qb[..., 0].to(dtype), persistent=False)
            module._bias_blocks.append((j, n_b))
            n_b += Qb.shape[0] * m_out
    module.bias = torch.nn.Parameter(torch.zeros(n_b, dtype=dtype)) if enabled else None


def invariant_bias_vector(module: torch.nn.Module) -> Tensor | None:
    """The bias of a module set up by :func:`register_invariant_bias` as one vector over its
    output channels (zeros on blocks without invariants), or None without a bias."""
    if module.bias is None:
        return None
    present = dict(module._bias_blocks)
    parts = []
    for j, (m_out, d_out) in enumerate(module._out_shapes):
        if j in present:
            Qb = getattr(module, f"bias_basis_{j}")  # (r, d_out)
            r = Qb.shape[0]
            w = module.bias[present[j] : present[j] + r * m_out].view(r, m_out)
            parts.append(torch.einsum("ra,rd->ad", w, Qb).reshape(-1))
        else:
            parts.append(module.bias.new_zeros(m_out * d_out))
    return torch.cat(parts)
