"""Equivariant layers for any DiscoveredGroup: the room of the weight-basis solver and the layers
it builds.

* :mod:`~atlasd.downstream.equivariant.solver`: the constraint solver (null space of a linear
  map's equivariance constraints, noise-aware rank selection, cache) and ``equivariant_basis``;
* :mod:`~atlasd.downstream.equivariant.reps`: representations (``Rep``: direct sums, tensor
  products, duals) and sampled group elements;
* :mod:`~atlasd.downstream.equivariant.invariants`: invariant bilinear forms and biases;
* :mod:`~atlasd.downstream.equivariant.layers`: linear layers, invariant gates, MLPs, deep sets;
* :mod:`~atlasd.downstream.equivariant.conv`: convolutions on charts;
* :mod:`~atlasd.downstream.equivariant.gauge`: gauge-equivariant convolution on the sphere.

Names are imported lazily, so that importing the package loads no torch until a layer is used.
"""

from __future__ import annotations

from atlasd.lazy import lazy_getattr

# public name -> module of atlasd.downstream.equivariant that defines it
_EXPORTS: dict[str, str] = {
    "BasisCache": "solver",
    "BasisSolution": "solver",
    "EquivariantSolver": "solver",
    "equivariant_basis": "solver",
    "generator_noise": "solver",
    "BaseRep": "reps",
    "Rep": "reps",
    "group_key": "reps",
    "sample_elements": "reps",
    "invariant_forms": "invariants",
    "EquivariantLinear": "layers",
    "EquivariantMLP": "layers",
    "EquivariantDeepSet": "layers",
    "InvariantGate": "layers",
    "ScaleNormalizer": "layers",
    "block_basis": "layers",
    "EquivariantConv2d": "conv",
    "KernelBasis": "conv",
    "kernel_basis": "conv",
    "pixel_symmetries": "conv",
    "GaugeEquivariantConv": "gauge",
    "sphere_neighbourhood": "gauge",
    "structure_group": "gauge",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
