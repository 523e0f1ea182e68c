"""Representations of a DiscoveredGroup for the equivariant layers: blocks (:class:`BaseRep`),
their direct sums (:class:`Rep`), tensor products and duals, and sampled group elements.

Conventions (see also :mod:`atlasd.downstream.equivariant.solver`): a representation is given by
generators ``B`` (k, n, n), one per generator of the group's Lie algebra (in the order of
``group.algebra``), and discrete matrices ``H`` (c, n, n), one per coset representative of
``group.cosets`` (identity first). Tensor products use the Kronecker sum for generators
(``B kron I + I kron B'``) and the Kronecker product for group elements; the feature of
``x kron y`` at index ``i * dim(y) + j`` is ``x_i y_j`` (row-major outer product). The dual of
(B, H) is (-B^T, H^-T). A :class:`Rep` is a direct sum of blocks ``mult * base``; channels are
laid out block by block and, inside a block, copy by copy: channel
``offset + copy * base.dim + component``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from atlasd.downstream.equivariant.solver import BasisCache, as_matrices, kron

if TYPE_CHECKING:
    from atlasd.group import DiscoveredGroup

__all__ = ["BaseRep", "Rep", "group_key", "sample_elements"]

_F64 = torch.float64


def _batched_kron(a: Tensor, b: Tensor) -> Tensor:
    """(k, p, q) x (k, r, s) -> (k, p*r, q*s): the Kronecker product of each pair."""
    k, p, q = a.shape
    _, r, s = b.shape
    return torch.einsum("kab,kcd->kacbd", a, b).reshape(k, p * r, q * s)


def group_key(group: DiscoveredGroup) -> str:
    """Fingerprint of a group's algebra and cosets (rounded float64), naming the group that
    representations belong to, so that representations of different groups never mix."""
    return BasisCache.key([group.algebra, group.cosets], decimals=10, extra="group")[:16]


@dataclass(frozen=True, eq=False)
class BaseRep:
    """One block type of a representation: generators and coset matrices of a fixed space.

    Attributes:
        name: readable name ("S", "V", "V⊗V", "V*", ...).
        generators: (k, d, d) float64, one per generator of the group's algebra.
        discrete: (c, d, d) float64, one per coset representative (identity first), or None
            when the action of the non-identity components is unknown (then only the identity
            component is imposed).
        group: the fingerprint (:func:`group_key`) of the group it represents.
        expr: how the block derives from the group's own matrices, when it does: ``("S",)``,
            ``("V",)``, ``("⊗", a, b)`` or ``("*", a)``; None for blocks known only by their
            generators. It lets :meth:`element` evaluate the representation exactly at any
            group matrix (e.g. a rotation by 90 degrees), not only at exponentials.
    """

    name: str
    generators: Tensor
    discrete: Tensor | None
    group: str
    expr: tuple | None = None

    def __post_init__(self) -> None:
        key = BasisCache.key([self.generators, self.discrete], decimals=10, extra=self.group)
        object.__setattr__(self, "_key", key)

    @property
    def dim(self) -> int:
        return int(self.generators.shape[-1])

    @property
    def key(self) -> str:
        """Digest of the values: equal keys mean the same representation."""
        return self._key  # type: ignore[attr-defined]

    @property
    def is_trivial(self) -> bool:
        """Whether the group acts as the identity (a scalar), up to 1e-9."""
        if self.dim != 1:
            return False
        if self.generators.numel() and float(self.generators.abs().max()) > 1e-9:
            return False
        return self.discrete is None or bool((self.discrete - 1.0).abs().max() <= 1e-9)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BaseRep) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def tensor(self, other: BaseRep) -> BaseRep:
        """Tensor product: Kronecker sum of generators, Kronecker product of coset matrices."""
        a, b = self.generators, other.generators
        eye_a = torch.eye(a.shape[-1], dtype=_F64).expand_as(a)
        eye_b = torch.eye(b.shape[-1], dtype=_F64).expand_as(b)
        gens = _batched_kron(a, eye_b) + _batched_kron(eye_a, b)
        disc = None
        if self.discrete is not None and other.discrete is not None:
            disc = _batched_kron(self.discrete, other.discrete)
        expr = None
        if self.expr is not None and other.expr is not None:
            expr = ("⊗", self.expr, other.expr)
        return BaseRep(f"{self.name}⊗{other.name}", gens, disc, self.group, expr)

    def dual(self) -> BaseRep:
        """Dual representation: generators -B^T, coset matrices H^-T."""
        disc = None if self.discrete is None else torch.linalg.inv(self.discrete).mT.contiguous()
        if self.is_trivial:
            name = self.name
        elif self.name.endswith("*") and "⊗" not in self.name:
            name = self.name[:-1]
        else:
            name = f"({self.name})*" if "⊗" in self.name else f"{self.name}*"
        expr = None if self.expr is None else ("*", self.expr)
        return BaseRep(name, -self.generators.mT.contiguous(), disc, self.group, expr)

    def element(self, g: Tensor) -> Tensor | None:
        """The representation of group matrices ``g`` (..., d, d) (in the group's own
        coordinates), exactly, for blocks built from S and V; None when the block is known only
        by its generators (see ``expr``). Float64, (..., dim, dim)."""
        if self.expr is None:
            return None
        return _evaluate(self.expr, torch.as_tensor(g, dtype=_F64))

    def matrices(self, coefficients: Tensor, component: Tensor) -> Tensor:
        """Representation of ``H_component exp(sum_i c_i L_i)``: (n, d, d) float64.

        Args:
            coefficients: (n, k) algebra coefficients.
            component: (n,) long, coset index (0 = identity component).
        """
        c = torch.as_tensor(coefficients, dtype=_F64)
        comp = torch.as_tensor(component, dtype=torch.long)
        g0 = torch.linalg.matrix_exp(torch.einsum("nk,kij->nij", c, self.generators))
        if self.discrete is None:
            if bool((comp != 0).any()):
                raise ValueError(
                    f"representation {self.name} has no known action on the non-identity components"
                )
            return g0
        return self.discrete[comp] @ g0


class Rep:
    """A representation of a DiscoveredGroup: a direct sum of blocks ``mult * base``.

    Build them from a group and combine them like e3nn's Irreps (but for any group)::

        S, V = Rep.scalar(group), Rep.vector(group)
        hidden = 16 * S + 8 * V + 2 * V * V      # direct sums, multiplicities, tensor products
        Rep.parse(group, "16*S + 8*V + 2*V^2")    # the same from a string (e.g. a config)
        V.dual(); V ** 3

    Channels are laid out block by block and, inside a block, copy by copy (channel
    ``offset + copy * base.dim + component``). The tensor product of two direct sums is the
    direct sum of the products of their blocks, in order (left blocks outer); the product of
    two single blocks uses the Kronecker layout.
    """

    __slots__ = ("_blocks",)

    def __init__(self, blocks: Sequence[tuple[int, BaseRep]]) -> None:
        merged: list[tuple[int, BaseRep]] = []
        for mult, base in blocks:
            if isinstance(mult, bool) or not isinstance(mult, int | np.integer):
                raise ValueError(f"multiplicities must be integers, got {mult!r}")
            if mult < 0:
                raise ValueError(f"multiplicities must be >= 0, got {mult}")
            if not isinstance(base, BaseRep):
                raise ValueError(f"blocks must be BaseRep, got {type(base).__name__}")
            if merged and merged[0][1].group != base.group:
                raise ValueError("cannot combine representations of different groups")
            if mult == 0:
                continue
            if merged and merged[-1][1] == base:  # neighbouring equal blocks share a block
                merged[-1] = (merged[-1][0] + int(mult), base)
            else:
                merged.append((int(mult), base))
        self._blocks: tuple[tuple[int, BaseRep], ...] = tuple(merged)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def scalar(cls, group: DiscoveredGroup) -> Rep:
        """The trivial representation S (dimension 1)."""
        k, c = group.dim, group.n_components
        base = BaseRep(
            "S",
            torch.zeros(k, 1, 1, dtype=_F64),
            torch.ones(c, 1, 1, dtype=_F64),
            group_key(group),
            ("S",),
        )
        return cls([(1, base)])

    @classmethod
    def vector(cls, group: DiscoveredGroup) -> Rep:
        """The defining representation V: the group's own matrices (algebra and cosets)."""
        base = BaseRep(
            "V",
            group.algebra.to(_F64),
            group.cosets.to(_F64).contiguous(),
            group_key(group),
            ("V",),
        )
        return cls([(1, base)])

    @classmethod
    def channels(cls, group: DiscoveredGroup, which: str = "in") -> Rep:
        """The group's learned channel representation ``group.in_rep`` or ``group.out_rep``.

        Its action on the non-identity components is unknown (the group file stores generators
        only), so for a group with several components it is None and only the identity
        component is imposed on these channels; a warning says so where it matters.
        """
        if which not in ("in", "out"):
            raise ValueError(f"which must be 'in' or 'out', got {which!r}")
        gens = group.in_rep if which == "in" else group.out_rep
        if gens is None:
            raise ValueError(f"the group has no {which}_rep (it was discovered without one)")
        return cls.from_generators(group, gens, name=which)

    @classmethod
    def from_generators(
        cls,
        group: DiscoveredGroup,
        generators: Tensor,
        discrete: Tensor | None = None,
        name: str = "R",
    ) -> Rep:
        """A representation given by its generators (k, d, d) (in the order of
        ``group.algebra``) and optionally its coset matrices (c, d, d), identity first."""
        gens = as_matrices(generators, "generators")
        if gens.shape[0] != group.dim:
            raise ValueError(
                f"{gens.shape[0]} generators given but the group's algebra has {group.dim}"
            )
        d = gens.shape[-1]
        disc = None
        if discrete is not None:
            disc = as_matrices(discrete, "discrete")
            if disc.shape != (group.n_components, d, d):
                raise ValueError(
                    f"discrete must be ({group.n_components}, {d}, {d}) (one matrix per coset), "
                    f"got {tuple(disc.shape)}"
                )
        elif group.n_components == 1:
            disc = torch.eye(d, dtype=_F64)[None]
        return cls([(1, BaseRep(name, gens, disc, group_key(group)))])

    @classmethod
    def parse(cls, group: DiscoveredGroup, spec: str) -> Rep:
        """Parse a representation from a string such as ``"16*S + 8*V + 2*V^2 + dual(V)"``.

        Names: ``S`` (scalar), ``V`` (the group's matrices), ``in`` / ``out`` (the group's
        channel representations). Operators: ``+`` direct sum, ``n*R`` multiplicity, ``R*R``
        tensor product, ``R^n`` / ``R**n`` tensor power, ``dual(R)``, parentheses.
        """
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"representation spec must be a non-empty string, got {spec!r}")
        text = spec.replace("^", "**").replace("⊗", "*")
        # `in` is a Python keyword: rename the channel representations before parsing
        text = re.sub(r"\bin\b", "in_", re.sub(r"\bout\b", "out_", text))
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError:
            raise ValueError(f"cannot parse representation {spec!r}") from None
        names = {"S": lambda: cls.scalar(group), "V": lambda: cls.vector(group)}
        names["in_"] = lambda: cls.channels(group, "in")
        names["out_"] = lambda: cls.channels(group, "out")

        def ev(node: ast.AST) -> Rep | int:
            if isinstance(node, ast.Expression):
                return ev(node.body)
            if isinstance(node, ast.Constant) and isinstance(node.value, int):
                return node.value
            if isinstance(node, ast.Name) and node.id in names:
                return names[node.id]()
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult | ast.Pow):
                a, b = ev(node.left), ev(node.right)
                if isinstance(node.op, ast.Add):
                    if not (isinstance(a, Rep) and isinstance(b, Rep)):
                        raise ValueError(f"'+' joins representations, in {spec!r}")
                    return a + b
                if isinstance(node.op, ast.Pow):
                    if not (isinstance(a, Rep) and isinstance(b, int)):
                        raise ValueError(f"'^' needs a representation and an integer, in {spec!r}")
                    return a**b
                return a * b  # type: ignore[operator]
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "dual"
                and len(node.args) == 1
                and not node.keywords
            ):
                arg = ev(node.args[0])
                if not isinstance(arg, Rep):
                    raise ValueError(f"dual() takes a representation, in {spec!r}")
                return arg.dual()
            raise ValueError(
                f"cannot parse representation {spec!r}: unexpected {ast.unparse(node)!r} "
                "(use S, V, in, out, +, *, ^, dual(...))"
            )

        out = ev(tree)
        if isinstance(out, int):
            out = out * cls.scalar(group)
        return out

    @classmethod
    def coerce(cls, group: DiscoveredGroup, spec: Rep | str | int | Tensor) -> Rep:
        """A Rep from a Rep (checked against ``group``), a string (:meth:`parse`), an int n
        (n scalars) or generators (k, d, d)."""
        if isinstance(spec, Rep):
            if spec.group != group_key(group):
                raise ValueError(f"representation {spec} belongs to a different group")
            return spec
        if isinstance(spec, str):
            return cls.parse(group, spec)
        if isinstance(spec, int | np.integer) and not isinstance(spec, bool):
            if spec < 1:
                raise ValueError(f"a number of scalar channels must be >= 1, got {spec}")
            return int(spec) * cls.scalar(group)
        if isinstance(spec, Tensor | np.ndarray):
            return cls.from_generators(group, spec)
        raise ValueError(
            f"cannot make a representation from {type(spec).__name__}; "
            "give a Rep, a string like '4*S + 2*V', an int or generators (k, d, d)"
        )

    # ----------------------------------------------------------------- structure
    @property
    def blocks(self) -> tuple[tuple[int, BaseRep], ...]:
        """((multiplicity, base), ...) in channel order."""
        return self._blocks

    @property
    def group(self) -> str:
        return self._blocks[0][1].group if self._blocks else ""

    @property
    def dim(self) -> int:
        return sum(m * b.dim for m, b in self._blocks)

    def slices(self) -> Iterator[tuple[slice, int, BaseRep]]:
        """(channel slice, multiplicity, base) for every block."""
        offset = 0
        for mult, base in self._blocks:
            yield slice(offset, offset + mult * base.dim), mult, base
            offset += mult * base.dim

    @property
    def is_trivial(self) -> bool:
        return all(b.is_trivial for _, b in self._blocks)

    @property
    def generators(self) -> Tensor:
        """(k, D, D) block-diagonal generators (float64)."""
        mats = [kron(torch.eye(m, dtype=_F64), b.generators) for m, b in self._blocks]
        return _block_diag_batched(mats)

    @property
    def discrete(self) -> Tensor | None:
        """(c, D, D) block-diagonal coset matrices, or None if some block's action is unknown."""
        if any(b.discrete is None for _, b in self._blocks):
            return None
        mats = [kron(torch.eye(m, dtype=_F64), b.discrete) for m, b in self._blocks]
        return _block_diag_batched(mats)

    def matrices(self, coefficients: Tensor, component: Tensor) -> Tensor:
        """Representation of the elements ``H_component exp(sum_i c_i L_i)``.

        Args:
            coefficients: (n, k) algebra coefficients; component: (n,) coset indices.

        Returns:
            (n, D, D) float64 block-diagonal matrices.
        """
        mats = []
        for mult, base in self._blocks:
            g = base.matrices(coefficients, component)
            mats.append(kron(torch.eye(mult, dtype=_F64), g) if mult > 1 else g)
        return _block_diag_batched(mats)

    def element(self, g: Tensor) -> Tensor | None:
        """Exact representation (..., D, D) of group matrices g (..., d, d), or None when some
        block is known only by its generators (see :meth:`BaseRep.element`)."""
        mats = []
        for mult, base in self._blocks:
            e = base.element(g)
            if e is None:
                return None
            mats.append(kron(torch.eye(mult, dtype=_F64), e) if mult > 1 else e)
        lead = mats[0].shape[:-2]
        D = sum(m.shape[-1] for m in mats)
        out = torch.zeros(*lead, D, D, dtype=_F64)
        o = 0
        for m in mats:
            d = m.shape[-1]
            out[..., o : o + d, o : o + d] = m
            o += d
        return out

    # ----------------------------------------------------------------- algebra
    def __add__(self, other: Rep) -> Rep:
        if not isinstance(other, Rep):
            return NotImplemented
        return Rep(self._blocks + other._blocks)

    def __radd__(self, other: Any) -> Rep:
        if other == 0:  # sum([...]) starts from 0
            return self
        return NotImplemented

    def __mul__(self, other: Rep | int) -> Rep:
        if isinstance(other, int | np.integer) and not isinstance(other, bool):
            return Rep([(m * int(other), b) for m, b in self._blocks])
        if isinstance(other, Rep):
            return Rep([(m * n, a.tensor(b)) for m, a in self._blocks for n, b in other._blocks])
        return NotImplemented

    def __rmul__(self, other: int) -> Rep:
        if isinstance(other, int | np.integer) and not isinstance(other, bool):
            return self * other
        return NotImplemented

    def __pow__(self, n: int) -> Rep:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"tensor powers need an integer >= 1, got {n!r}")
        out = self
        for _ in range(n - 1):
            out = out * self
        return out

    def dual(self) -> Rep:
        return Rep([(m, b.dual()) for m, b in self._blocks])

    def restrict(self, group: DiscoveredGroup, coefficients: Tensor) -> Rep:
        """The same representation seen by a subgroup whose algebra generators are
        ``sum_j coefficients[a, j] L_j`` (coefficients (k', k) in the basis of this
        representation's group) and whose cosets are those of ``group``."""
        U = torch.as_tensor(coefficients, dtype=_F64)
        key = group_key(group)
        blocks = []
        for m, b in self._blocks:
            gens = torch.einsum("aj,jxy->axy", U, b.generators)
            blocks.append((m, BaseRep(b.name, gens, b.discrete, key, b.expr)))
        return Rep(blocks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rep) and self._blocks == other._blocks

    def __hash__(self) -> int:
        return hash(self._blocks)

    def __repr__(self) -> str:
        if not self._blocks:
            return "0"
        return " + ".join(b.name if m == 1 else f"{m}*{b.name}" for m, b in self._blocks)


def _evaluate(expr: tuple, g: Tensor) -> Tensor:
    """Evaluate a block's expression (see :class:`BaseRep`) at group matrices g (..., d, d)."""
    head = expr[0]
    if head == "S":
        return torch.ones(*g.shape[:-2], 1, 1, dtype=_F64)
    if head == "V":
        return g
    if head == "*":
        return torch.linalg.inv(_evaluate(expr[1], g)).mT
    a, b = _evaluate(expr[1], g), _evaluate(expr[2], g)
    out = torch.einsum("...ab,...cd->...acbd", a, b)
    return out.reshape(*out.shape[:-4], a.shape[-2] * b.shape[-2], a.shape[-1] * b.shape[-1])


def _block_diag_batched(mats: Sequence[Tensor]) -> Tensor:
    """Block-diagonal (k, D, D) from a list of (k, d_i, d_i)."""
    if not mats:
        return torch.zeros(0, 0, 0, dtype=_F64)
    k = mats[0].shape[0]
    D = sum(m.shape[-1] for m in mats)
    out = torch.zeros(k, D, D, dtype=_F64)
    o = 0
    for m in mats:
        d = m.shape[-1]
        out[:, o : o + d, o : o + d] = m
        o += d
    return out


def sample_elements(
    group: DiscoveredGroup,
    n: int,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Random group elements as (coefficients (n, k) float64, component (n,) long): the element
    is ``cosets[component] @ exp(sum_i c_i L_i)``, ``c ~ N(0, scale^2)``, components uniform.
    :meth:`Rep.matrices` turns them into matrices of any representation."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    c = torch.randn(n, group.dim, generator=generator, dtype=_F64) * scale
    comp = torch.randint(group.n_components, (n,), generator=generator)
    return c, comp
