"""Known Lie algebras and group elements used as ground truth across the tests."""

from __future__ import annotations

import math

import torch

F64 = torch.float64

J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64)


def so2() -> torch.Tensor:
    """(1, 2, 2): counter-clockwise rotations in (x, y)."""
    return J[None].clone()


def rotation(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=F64)


def gl2() -> torch.Tensor:
    return torch.eye(4, dtype=F64).reshape(4, 2, 2)


def sl2() -> torch.Tensor:
    return torch.tensor(
        [[[1.0, 0.0], [0.0, -1.0]], [[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]], dtype=F64
    )


def so13() -> torch.Tensor:
    """(6, 4, 4): rotations J_x, J_y, J_z then boosts K_x, K_y, K_z, coordinates (t, x, y, z)."""
    gens = []
    for i, j in ((2, 3), (3, 1), (1, 2)):
        A = torch.zeros(4, 4, dtype=F64)
        A[i, j], A[j, i] = -1.0, 1.0
        gens.append(A)
    for i in (1, 2, 3):
        A = torch.zeros(4, 4, dtype=F64)
        A[0, i] = A[i, 0] = 1.0
        gens.append(A)
    return torch.stack(gens)


def so3_in_4() -> torch.Tensor:
    return so13()[:3]
