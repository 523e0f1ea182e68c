"""One equivariance check for every layer test (in the spirit of e3nn's ``assert_equivariant``).

:func:`assert_equivariant` asserts ``|f(g . x) - g . f(x)| / |g . f(x)| <= tol`` for every
element g of a list: elements sampled from a group (exponentials of random algebra elements in
every coset, and every coset representative itself) and explicit ones (e.g. a boost of large
rapidity, a rotation by 90 degrees). The error is relative to the expected output ``g . f(x)``:
for non-compact groups ``|g . f(x)|`` can exceed ``|f(x)|`` by orders of magnitude (a boost of
rapidity 2.5 scales a vector by up to cosh 2.5 ~ 6), and the error of ``f(g . x)`` grows with
it. The failure message names the worst element and its error.

How elements act is given per side: a :class:`~atlasd.downstream.equivariant.Rep` (features on
one axis, acted on by the representation's matrices), or any callable ``(element, x) -> g . x``
(fields on charts: :func:`field_action`; gauge transformations: an element is then whatever the
callable accepts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import scipy.linalg
import torch
from torch import Tensor

from atlasd import DiscoveredGroup, act
from atlasd.downstream.equivariant import Rep

__all__ = [
    "GroupElement",
    "assert_equivariant",
    "equivariance_errors",
    "field_action",
    "group_elements",
]

F64 = torch.float64


@dataclass(frozen=True)
class GroupElement:
    """An element ``cosets[component] @ exp(sum_i coefficients_i L_i)`` of a group of d x d
    matrices.

    Attributes:
        matrix: (d, d) float64, the element in the group's own coordinates.
        coefficients: (k,) float64 algebra coefficients, or None for an element given only as a
            matrix (then a Rep acts through :meth:`Rep.element`, exact for blocks built from S
            and V).
        component: the coset index (0 = identity component), or None with ``coefficients``.
        label: how the element is named in failure messages.
    """

    matrix: Tensor
    coefficients: Tensor | None = None
    component: int | None = None
    label: str = ""


GroupLike = DiscoveredGroup | tuple[Tensor, Tensor | None]
Action = Rep | Callable[[Any, Tensor], Tensor]


def _algebra_and_cosets(group: GroupLike) -> tuple[Tensor, Tensor]:
    if isinstance(group, DiscoveredGroup):
        return group.algebra.to(F64), group.cosets.to(F64)
    algebra, cosets = group
    algebra = torch.as_tensor(algebra, dtype=F64)
    if cosets is None:
        cosets = torch.eye(algebra.shape[-1], dtype=F64)[None]
    return algebra, torch.as_tensor(cosets, dtype=F64)


def group_elements(
    group: GroupLike, n: int = 4, scale: float = 1.0, seed: int = 0
) -> list[GroupElement]:
    """Elements of ``group`` (a DiscoveredGroup, or (generators (k, d, d), cosets (c, d, d) or
    None)): every coset representative, then ``n`` elements ``H_c exp(sum_i a_i L_i)`` with
    ``a ~ N(0, scale^2)`` in every coset c (seeded)."""
    algebra, cosets = _algebra_and_cosets(group)
    gen = torch.Generator().manual_seed(seed)
    k = algebra.shape[0]
    out = []
    for c, H in enumerate(cosets):
        out.append(GroupElement(H, torch.zeros(k, dtype=F64), c, f"coset {c}"))
    for c, H in enumerate(cosets):
        for i in range(n):
            a = torch.randn(k, generator=gen, dtype=F64) * scale
            g = H @ torch.linalg.matrix_exp(torch.einsum("k,kij->ij", a, algebra))
            out.append(
                GroupElement(g, a, c, f"coset {c}, sample {i} (|a| = {float(a.norm()):.2f})")
            )
    return out


def _as_element(element: Any) -> Any:
    if isinstance(element, GroupElement):
        return element
    if isinstance(element, Tensor) and element.ndim == 2 and element.shape[0] == element.shape[1]:
        g = element.to(F64)
        return GroupElement(g, label=f"matrix {g.flatten().tolist()}")
    return element  # anything a callable action understands (e.g. a gauge field)


def _rep_action(rep: Rep, dim: int) -> Callable[[Any, Tensor], Tensor]:
    def action(element: Any, x: Tensor) -> Tensor:
        if not isinstance(element, GroupElement):
            raise TypeError(f"a Rep acts on GroupElements, got {type(element).__name__}")
        if element.coefficients is not None:
            coefficients = element.coefficients.to(F64)[None]
            R = rep.matrices(coefficients, torch.tensor([element.component]))[0]
        else:
            R = rep.element(element.matrix)
            if R is None:
                raise ValueError(
                    f"{rep} is known only by its generators: give elements with coefficients"
                )
        moved = torch.movedim(x, dim, -1)
        return torch.movedim(moved @ R.to(x.dtype).T, -1, dim)

    return action


def field_action(rep: Rep, algebra: Tensor | None = None) -> Callable[[Any, Tensor], Tensor]:
    """The action ``(g . f)(p) = rho(g) f(g^-1 p)`` (:func:`atlasd.act`, in float32) on fields
    (B, C, s, s), each field one chart, channels transformed by ``rep``: exactly for blocks
    built from S and V; for blocks known only by their generators (the group's ``in_rep``)
    through the logarithm of g (identity component) in the group's ``algebra`` (k, 2, 2),
    ``rho(g) = exp(sum_i a_i B_i)`` with ``log g = sum_i a_i L_i``."""

    def action(element: Any, f: Tensor) -> Tensor:
        g = element.matrix if isinstance(element, GroupElement) else torch.as_tensor(element)
        g = g.to(F64)
        rho = rep.element(g)
        if rho is None:
            if algebra is None:
                raise ValueError(f"{rep} is known only by its generators: give the algebra")
            L = torch.as_tensor(algebra, dtype=F64)
            log_g = torch.as_tensor(scipy.linalg.logm(g.numpy()).real, dtype=F64)
            a = torch.linalg.lstsq(L.reshape(L.shape[0], -1).T, log_g.reshape(-1, 1)).solution
            rho = torch.linalg.matrix_exp(torch.einsum("k,kij->ij", a[:, 0], rep.generators))
        return act(g.float(), f[:, None], rep=rho.float())[:, 0]

    return action


def _norms(t: Tensor, per_sample: bool) -> Tensor:
    t = t.detach().to(F64)
    return t.flatten(1).norm(dim=1) if per_sample else t.norm()[None]


def equivariance_errors(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    act_in: Action,
    act_out: Action,
    group: GroupLike | None = None,
    elements: Sequence[Any] = (),
    n_samples: int = 4,
    scale: float = 1.0,
    seed: int = 0,
    dim: int = -1,
    per_sample: bool = False,
    region: Callable[[Tensor], Tensor] | None = None,
    transformed: Callable[[Any], Callable[[Tensor], Tensor]] | None = None,
) -> list[tuple[str, float]]:
    """(label, relative error) for every element; see :func:`assert_equivariant`."""
    act_in = _rep_action(act_in, dim) if isinstance(act_in, Rep) else act_in
    act_out = _rep_action(act_out, dim) if isinstance(act_out, Rep) else act_out
    items = [] if group is None else group_elements(group, n_samples, scale, seed)
    items += [_as_element(e) for e in elements]
    if not items:
        raise ValueError("no group elements: give a group or elements")
    region = region if region is not None else (lambda t: t)
    errors = []
    with torch.no_grad():
        y = f(x)
        for i, element in enumerate(items):
            f_g = transformed(element) if transformed is not None else f
            lhs = region(f_g(act_in(element, x)))
            rhs = region(act_out(element, y))
            err = _norms(lhs - rhs, per_sample) / _norms(rhs, per_sample)
            label = element.label if isinstance(element, GroupElement) else f"element {i}"
            errors.append((label, float(err.max())))
    return errors


def assert_equivariant(
    f: Callable[[Tensor], Tensor], x: Tensor, *, tol: float, **options: Any
) -> float:
    """Assert that ``f`` is equivariant: ``|f(g . x) - g . f(x)| / |g . f(x)| <= tol``.

    Args:
        f: a module or callable mapping inputs x to outputs (run under ``torch.no_grad``).
        x: sample inputs, e.g. (N, D) features or (B, C, H, W) fields.
        tol: the largest relative error allowed.
        options: :func:`equivariance_errors`' keywords:
        act_in, act_out: how an element acts on inputs and on outputs: a Rep (acting on axis
            ``dim``) or a callable ``(element, tensor) -> tensor`` such as :func:`field_action`.
        group: a DiscoveredGroup or (generators (k, d, d), cosets (c, d, d) or None); elements
            are sampled from it (:func:`group_elements`: every coset representative and
            ``n_samples`` exponentials per coset, coefficients ~ N(0, scale^2), ``seed``).
        elements: further elements: :class:`GroupElement`, (d, d) matrices (a Rep then acts by
            :meth:`Rep.element`), or anything the callable actions accept.
        dim: the feature axis a Rep acts on (-1 for (..., D) features, 1 for fields).
        per_sample: the error of the worst sample (first axis) instead of the whole batch.
        region: a view of the outputs that is compared (e.g. a central window away from the
            border, where resampling a rotated field loses pixels).
        transformed: ``element -> f_g``, the function seen after the element acts, for
            transformations that change the module as well as its input (a gauge
            transformation rotates the frames a gauge-equivariant layer is built on).

    Returns:
        The worst relative error.
    """
    errors = equivariance_errors(f, x, **options)
    label, worst = max(errors, key=lambda e: e[1])
    if not worst <= tol:  # also fails on NaN
        median = sorted(e for _, e in errors)[len(errors) // 2]
        raise AssertionError(
            f"not equivariant: relative error {worst:.3e} > tol {tol:.1e} at {label} "
            f"(worst of {len(errors)} elements; median {median:.3e})"
        )
    return worst
