"""Equivariant linear layers, invariant-gated nonlinearities and equivariant MLPs for any
DiscoveredGroup.

Features are vectors of a :class:`~atlasd.downstream.equivariant.reps.Rep` on the last axis
(..., D); the layers are equivariant: ``f(rho_in(g) x) = rho_out(g) f(x)`` for every element
g of the group (identity component and listed cosets).

- :class:`EquivariantLinear`: ``W = sum_r w_r Q_r`` over a basis of equivariant maps, solved per
  pair of blocks (so a layer between ``16*S + 8*V`` and itself solves four tiny problems, not one
  of size 24^2), plus an equivariant bias (invariant vectors of the output).
- :class:`InvariantGate`: the nonlinearity. Invariants are the scalar channels and the values
  of the invariant bilinear forms of every non-scalar block on its copies (Minkowski products
  for the Lorentz group, dot products for rotations; with ``pairwise`` also between copies).
  A dense layer maps them (after a signed log, since norms can be large) to new scalars (through
  an activation) and to one sigmoid gate per non-scalar copy, which multiplies that copy. Gates
  are invariant, so gating commutes with the group.
- :class:`ScaleNormalizer`: a group that contains the identity matrix in its algebra (an
  isotropic scaling, e.g. so(1,3) + scaling) has no invariant scalars of ``V⊗V``: invariant gates
  would see nothing. The normaliser divides the input by a scale-covariant norm ``N(x)`` (mean
  of ``|x^T M x|^(1/2 delta)`` over copies, with M the invariant forms of the scale-free subgroup
  and delta the scaling weight of the block), runs the network for the scale-free subgroup
  (traceless part of the algebra) and multiplies outputs back by ``N^delta_out``. The result is
  exactly equivariant for the full group when the scaling generator is exact.
- :class:`EquivariantMLP` and :class:`EquivariantDeepSet` (sum over a set axis, e.g. jet
  constituents (N, P, 4) -> invariant logits).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atlasd.downstream.equivariant.invariants import (
    invariant_bias_vector,
    invariant_forms,
    register_invariant_bias,
)
from atlasd.downstream.equivariant.reps import BaseRep, Rep
from atlasd.downstream.equivariant.solver import EquivariantSolver

if TYPE_CHECKING:
    from atlasd.group import DiscoveredGroup

__all__ = [
    "EquivariantDeepSet",
    "EquivariantLinear",
    "EquivariantMLP",
    "InvariantGate",
    "ScaleNormalizer",
    "block_basis",
]

_F64 = torch.float64
RepSpec = Rep | str | int | Tensor


def _dtype(dtype: torch.dtype | None) -> torch.dtype:
    return torch.get_default_dtype() if dtype is None else dtype


def block_basis(
    base_in: BaseRep, base_out: BaseRep, solver: EquivariantSolver, where: str = "layer"
) -> Tensor:
    """Basis (r, d_out, d_in) float64 of equivariant maps between two blocks.

    Coset constraints are imposed when both blocks know the cosets' action; otherwise only the
    identity component is, and a warning says so (if the group has several components)."""
    if base_in.discrete is None or base_out.discrete is None:
        n_comp = next(
            (b.discrete.shape[0] for b in (base_in, base_out) if b.discrete is not None), None
        )
        if n_comp is None or n_comp > 1:
            warnings.warn(
                f"{where}: the action of the group's non-identity components on "
                f"{base_in.name if base_in.discrete is None else base_out.name} is unknown, so "
                "only the identity component is imposed on that block",
                stacklevel=3,
            )
        return solver.basis(base_in.generators, base_out.generators)
    return solver.basis(
        base_in.generators, base_out.generators, base_in.discrete, base_out.discrete
    )


class EquivariantLinear(nn.Module):
    """Linear map ``x -> W x + b`` between representations of a discovered group.

    Args:
        group: the DiscoveredGroup.
        rep_in, rep_out: a :class:`Rep`, a string such as ``"8*S + 4*V + V^2"`` (see
            :meth:`Rep.parse`), an int n (n scalars) or generators (k, d, d).
        bias: add an equivariant bias (a combination of the invariant vectors of rep_out).
        solver: an :class:`EquivariantSolver` to share its cache between layers.
        dtype: dtype of the parameters and stored bases (default: torch's default). Bases are
            solved in float64 and rounded once to this dtype, so build the layer with
            ``dtype=torch.float64`` when float64 exactness matters (``.double()`` on a float32
            layer keeps the float32 rounding of the bases).
        generator: torch.Generator for the initial weights (default: torch's global one, as
            nn.Linear).

    Attributes:
        n_free_parameters: number of trainable scalars (weight coefficients + bias coefficients).

    Shapes: ``(..., rep_in.dim) -> (..., rep_out.dim)``. The weights are initialised so that
    ``W`` has the expected squared norm of a LeCun-normal dense layer.
    """

    def __init__(
        self,
        group: DiscoveredGroup,
        rep_in: RepSpec,
        rep_out: RepSpec,
        *,
        bias: bool = True,
        solver: EquivariantSolver | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        dtype = _dtype(dtype)
        solver = solver if solver is not None else EquivariantSolver()
        self.rep_in = Rep.coerce(group, rep_in)
        self.rep_out = Rep.coerce(group, rep_out)
        if self.rep_in.dim == 0 or self.rep_out.dim == 0:
            raise ValueError("rep_in and rep_out must have positive dimension")
        in_blocks = list(self.rep_in.slices())
        out_blocks = list(self.rep_out.slices())
        # one stored basis per distinct pair of block types
        basis_index: dict[tuple[str, str], int] = {}
        bases: list[Tensor] = []
        self._pairs: list[tuple[int, int, int, int]] = []  # (out block, in block, basis, offset)
        n_w = 0
        init_std: list[tuple[int, int, float]] = []
        for j, (_, m_out, b_out) in enumerate(out_blocks):
            for i, (_, m_in, b_in) in enumerate(in_blocks):
                key = (b_in.key, b_out.key)
                if key not in basis_index:
                    basis_index[key] = len(bases)
                    bases.append(block_basis(b_in, b_out, solver, "EquivariantLinear"))
                Q = bases[basis_index[key]]
                r = Q.shape[0]
                if r == 0:
                    continue
                self._pairs.append((j, i, basis_index[key], n_w))
                size = r * m_out * m_in
                # E|W_block|^2 = r m_out m_in std^2 should equal m_out d_out m_in d_in / D_in
                init_std.append(
                    (n_w, size, math.sqrt(b_out.dim * b_in.dim / (r * self.rep_in.dim)))
                )
                n_w += size
        for idx, Q in enumerate(bases):
            self.register_buffer(f"basis_{idx}", Q.to(dtype), persistent=False)
        self.weight = nn.Parameter(torch.empty(n_w, dtype=dtype))
        with torch.no_grad():
            for off, size, std in init_std:
                self.weight[off : off + size].normal_(0.0, std, generator=generator)
        k = self.rep_out.blocks[0][1].generators.shape[0]
        register_invariant_bias(self, out_blocks, solver, k, dtype, bias)
        self._in_shapes = [(m, b.dim) for _, m, b in in_blocks]
        self._out_shapes = [(m, b.dim) for _, m, b in out_blocks]

    @property
    def n_free_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def weight_matrix(self) -> Tensor:
        """The equivariant matrix W (rep_out.dim, rep_in.dim)."""
        ref = self.weight
        blocks: dict[tuple[int, int], Tensor] = {}
        for j, i, b, off in self._pairs:
            Q = getattr(self, f"basis_{b}")
            (m_out, _), (m_in, _) = self._out_shapes[j], self._in_shapes[i]
            r = Q.shape[0]
            w = ref[off : off + r * m_out * m_in].view(r, m_out, m_in)
            # kron(w_r, Q_r) summed over r: row (copy_out, comp_out), column (copy_in, comp_in)
            blk = torch.einsum("rab,rcd->acbd", w, Q)
            blocks[(j, i)] = blk.reshape(m_out * Q.shape[1], m_in * Q.shape[2])
        rows = []
        for j, (m_out, d_out) in enumerate(self._out_shapes):
            cols = [
                blocks.get((j, i), ref.new_zeros(m_out * d_out, m_in * d_in))
                for i, (m_in, d_in) in enumerate(self._in_shapes)
            ]
            rows.append(torch.cat(cols, dim=1))
        return torch.cat(rows, dim=0)

    def bias_vector(self) -> Tensor | None:
        """The invariant bias (rep_out.dim,), or None."""
        return invariant_bias_vector(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.rep_in.dim:
            raise ValueError(
                f"input has {x.shape[-1]} features on its last axis but rep_in = {self.rep_in} "
                f"has dimension {self.rep_in.dim}"
            )
        return F.linear(x, self.weight_matrix(), self.bias_vector())

    def extra_repr(self) -> str:
        return f"{self.rep_in} -> {self.rep_out}, n_free_parameters={self.n_free_parameters}"


def _signed_log(q: Tensor) -> Tensor:
    """sign(q) log(1 + |q|): invariants span many decades (Minkowski norms in GeV^2)."""
    return torch.sign(q) * torch.log1p(q.abs())


_ACTIVATIONS: Mapping[str, type[nn.Module]] = MappingProxyType(
    {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
)


def _activation(activation: str | nn.Module) -> nn.Module:
    if isinstance(activation, nn.Module):
        return activation
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    return _ACTIVATIONS[activation]()


class InvariantGate(nn.Module):
    """Invariant-gated nonlinearity for features of a representation.

    Invariants: the scalar channels, and ``x_a^T M x_b`` for every invariant bilinear form M of
    every non-scalar block and its copies a <= b (only a == b unless ``pairwise``). A dense
    layer maps their signed logs to new scalar values (through ``activation``) and to one
    sigmoid gate per non-scalar copy. Shapes are preserved: ``(..., rep.dim)`` (or any axis
    ``dim`` for fields, e.g. ``dim=1`` for (B, C, H, W)).

    Args:
        group: the DiscoveredGroup.
        rep: the representation of the features.
        pairwise: include invariants between different copies of a block (more expressive,
            quadratic in the multiplicity).
        activation: "silu", "relu", "gelu", "tanh" or a module, for the scalar channels.
    """

    def __init__(
        self,
        group: DiscoveredGroup,
        rep: RepSpec,
        *,
        pairwise: bool = True,
        activation: str | nn.Module = "silu",
        solver: EquivariantSolver | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        dtype = _dtype(dtype)
        solver = solver if solver is not None else EquivariantSolver()
        self.rep = Rep.coerce(group, rep)
        self.pairwise = bool(pairwise)
        self.act = _activation(activation)
        self._blocks: list[tuple[slice, int, int, bool, int]] = []  # slice, m, d, trivial, forms
        n_scalar = n_gates = n_inv = 0
        for idx, (sl, m, base) in enumerate(self.rep.slices()):
            if base.is_trivial:
                self._blocks.append((sl, m, base.dim, True, -1))
                n_scalar += m
                continue
            forms = invariant_forms(base, solver)
            if base.discrete is None and group.n_components > 1:
                warnings.warn(
                    f"InvariantGate: forms of {base.name} are invariant under the identity "
                    "component only (its coset action is unknown)",
                    stacklevel=2,
                )
            self.register_buffer(f"forms_{idx}", forms.to(dtype), persistent=False)
            self._blocks.append((sl, m, base.dim, False, idx))
            n_gates += m
            pairs = m * (m + 1) // 2 if self.pairwise else m
            n_inv += forms.shape[0] * pairs
        self.n_scalar, self.n_gates, self.n_invariants = n_scalar, n_gates, n_scalar + n_inv
        n_out = n_scalar + n_gates
        if self.n_invariants > 0:
            self.mix = nn.Linear(self.n_invariants, n_out, dtype=dtype)
            if generator is not None:
                with torch.no_grad():
                    bound = 1.0 / math.sqrt(self.n_invariants)
                    self.mix.weight.uniform_(-bound, bound, generator=generator)
                    self.mix.bias.uniform_(-bound, bound, generator=generator)
        else:
            # nothing is invariant (e.g. a scaling group without normalisation): constant gates
            self.mix = None
            self.gate_bias = nn.Parameter(torch.zeros(n_out, dtype=dtype))

    def invariants(self, x: Tensor) -> Tensor:
        """The invariant features (..., n_invariants) of x (..., rep.dim), before the log."""
        feats = []
        for sl, m, d, trivial, idx in self._blocks:
            xb = x[..., sl]
            if trivial:
                feats.append(xb)
                continue
            xb = xb.unflatten(-1, (m, d))
            M = getattr(self, f"forms_{idx}")
            if self.pairwise:
                q = torch.einsum("...ai,rij,...bj->...rab", xb, M, xb)
                iu = torch.triu_indices(m, m, device=x.device)
                feats.append(q[..., iu[0], iu[1]].flatten(-2))
            else:
                feats.append(torch.einsum("...ai,rij,...aj->...ra", xb, M, xb).flatten(-2))
        return torch.cat(feats, dim=-1) if feats else x.new_zeros(*x.shape[:-1], 0)

    def forward(self, x: Tensor, dim: int = -1) -> Tensor:
        if x.shape[dim] != self.rep.dim:
            raise ValueError(
                f"input has {x.shape[dim]} channels on axis {dim} but rep = {self.rep} has "
                f"dimension {self.rep.dim}"
            )
        x = x.movedim(dim, -1)
        if self.mix is not None:
            z = self.mix(_signed_log(self.invariants(x)))
        else:
            z = self.gate_bias.expand(*x.shape[:-1], -1)
        scalars = self.act(z[..., : self.n_scalar])
        gates = torch.sigmoid(z[..., self.n_scalar :])
        out, s_off, g_off = [], 0, 0
        for sl, m, d, trivial, _ in self._blocks:
            if trivial:
                out.append(scalars[..., s_off : s_off + m])
                s_off += m
            else:
                xb = x[..., sl].unflatten(-1, (m, d)) * gates[..., g_off : g_off + m, None]
                out.append(xb.flatten(-2))
                g_off += m
        return torch.cat(out, dim=-1).movedim(-1, dim)

    def extra_repr(self) -> str:
        return f"{self.rep}, invariants={self.n_invariants}, pairwise={self.pairwise}"


# ---------------------------------------------------------------------------------------------
# Scale handling


class ScaleNormalizer(nn.Module):
    """Canonicalises the scale of inputs for groups whose algebra contains an isotropic scaling.

    With ``c`` the algebra coefficients of the identity matrix (``sum_j c_j L_j = I``) and
    ``D_B = sum_j c_j B_j`` the scaling generator on a block, inputs are mapped to
    ``exp(-log N(x) D_B) x`` (``x / N(x)`` on V) and outputs back with ``exp(log N(x) D_out)``.
    ``N(x)`` is the mean over the copies of ``|x^T M x|^(1 / (2 delta))`` (for sets: of the
    copy summed over the set) for the symmetric invariant forms M of the scale-free subgroup on
    blocks where the scaling acts as ``delta * I`` (delta != 0); it is invariant under the
    scale-free subgroup and scales by ``lambda`` under the scaling ``lambda I``. The
    scale-free subgroup is the traceless part of the algebra (``self.group``); the network in
    between is built for it.

    ``self.active`` is False when the algebra contains no scaling (within ``tol``, relative
    Frobenius residual of the identity's projection onto the span) or when ``enabled`` is
    False; then nothing changes.
    """

    def __init__(
        self,
        group: DiscoveredGroup,
        rep_in: RepSpec,
        rep_out: RepSpec,
        *,
        tol: float = 0.05,
        eps: float = 1e-30,
        enabled: bool = True,
        solver: EquivariantSolver | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        from atlasd.group import DiscoveredGroup

        dtype = _dtype(dtype)
        solver = solver if solver is not None else EquivariantSolver()
        self.eps = float(eps)
        rep_in, rep_out = Rep.coerce(group, rep_in), Rep.coerce(group, rep_out)
        L = group.algebra.to(_F64)
        k, d = L.shape[0], L.shape[-1]
        eye = torch.eye(d, dtype=_F64)
        c = torch.linalg.lstsq(L.reshape(k, -1).T, eye.reshape(-1, 1)).solution[:, 0]
        residual = float((torch.einsum("k,kij->ij", c, L) - eye).norm() / eye.norm())
        self.residual = residual
        self.active = enabled and residual <= tol
        self.group = group
        self.rep_in, self.rep_out = rep_in, rep_out
        self.coefficients = torch.eye(k, dtype=_F64)
        if not self.active:
            return
        if k == 1:
            raise ValueError(
                "the algebra is a pure scaling: nothing is left after normalising the scale; "
                "use scale='none'"
            )
        # scale-free subgroup: traceless elements of the span (I is central, so G = R+ x G_sf)
        t = torch.einsum("kii->k", L) / d
        U = torch.linalg.svd(t[None], full_matrices=True).Vh[1:]  # (k-1, k), rows orthogonal to t
        sub = torch.einsum("aj,jxy->axy", U, L)
        reps = {}
        for name, r in (("in_rep", group.in_rep), ("out_rep", group.out_rep)):
            reps[name] = None if r is None else torch.einsum("aj,jxy->axy", U, r.to(_F64))
        sf = DiscoveredGroup(
            sub, cosets=group.cosets, metadata={"scale_free_part_of": "group"}, **reps
        )
        # coefficients of the scale-free group's standard basis in the original basis
        W = torch.linalg.lstsq(L.reshape(k, -1).T, sf.algebra.reshape(sf.dim, -1).T).solution.T
        self.group, self.coefficients = sf, W
        self.rep_in, self.rep_out = rep_in.restrict(sf, W), rep_out.restrict(sf, W)
        # scaling generator per block, and the norm's ingredients
        self._in_blocks: list[tuple[slice, int, int, int, float]] = []  # slice, m, d, idx, delta
        for idx, ((sl, m, base), (_, _, base_sf)) in enumerate(
            zip(rep_in.slices(), self.rep_in.slices(), strict=True)
        ):
            D = torch.einsum("k,kij->ij", c, base.generators)
            self.register_buffer(f"scale_in_{idx}", D.to(dtype), persistent=False)
            delta = float(torch.diagonal(D).mean())
            isotropic = float((D - delta * torch.eye(base.dim, dtype=_F64)).norm()) <= tol * max(
                float(D.norm()), 1e-12
            )
            if not isotropic or abs(delta) <= tol:
                self._in_blocks.append((sl, m, base.dim, idx, 0.0))
                continue
            forms = invariant_forms(base_sf, solver)
            forms = 0.5 * (forms + forms.mT)
            keep = forms.flatten(1).norm(dim=1) > 1e-8
            if not bool(keep.any()):
                self._in_blocks.append((sl, m, base.dim, idx, 0.0))
                continue
            self.register_buffer(f"norm_forms_{idx}", forms[keep].to(dtype), persistent=False)
            self._in_blocks.append((sl, m, base.dim, idx, delta))
        if not any(delta != 0.0 for *_, delta in self._in_blocks):
            raise ValueError(
                f"scale normalisation needs an input block on which the scaling acts as a nonzero "
                f"multiple of the identity and that has a symmetric invariant form under the "
                f"scale-free subgroup; rep_in = {rep_in} has none (use scale='none')"
            )
        self._out_blocks: list[tuple[slice, int, int, int]] = []
        for idx, (sl, m, base) in enumerate(rep_out.slices()):
            D = torch.einsum("k,kij->ij", c, base.generators)
            self.register_buffer(f"scale_out_{idx}", D.to(dtype), persistent=False)
            self._out_blocks.append((sl, m, base.dim, idx))

    def log_norm(self, x: Tensor, over_set: bool = False, mask: Tensor | None = None) -> Tensor:
        """``log N(x)`` (...) for x (..., D).

        With ``over_set``, x is a set (..., P, D) and each block copy is first summed over the
        set axis -2 (``mask`` (..., P) bool excludes padded elements): single massless
        momenta have zero Minkowski norm, their sum has the jet's invariant mass."""
        if over_set and mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        terms = []
        for sl, m, d, idx, delta in self._in_blocks:
            if delta == 0.0:
                continue
            M = getattr(self, f"norm_forms_{idx}")
            xb = x[..., sl].unflatten(-1, (m, d))
            if over_set:
                xb = xb.sum(-3)
            q = torch.einsum("...ai,rij,...aj->...ar", xb, M, xb).abs()
            terms.append((q + self.eps).pow(1.0 / (2.0 * delta)).flatten(-2))
        return torch.cat(terms, dim=-1).mean(-1).log()

    def normalize(self, x: Tensor, log_n: Tensor) -> Tensor:
        """``exp(-log N D_B) x`` per block; ``log_n`` broadcast against x's leading dims."""
        out = []
        for sl, m, d, idx, _ in self._in_blocks:
            D = getattr(self, f"scale_in_{idx}")
            E = torch.linalg.matrix_exp(-log_n[..., None, None] * D)  # (..., d, d)
            xb = x[..., sl].unflatten(-1, (m, d))
            out.append(torch.einsum("...ij,...aj->...ai", E, xb).flatten(-2))
        return torch.cat(out, dim=-1)

    def restore(self, y: Tensor, log_n: Tensor) -> Tensor:
        """``exp(log N D_out) y`` per output block."""
        out = []
        for sl, m, d, idx in self._out_blocks:
            D = getattr(self, f"scale_out_{idx}")
            E = torch.linalg.matrix_exp(log_n[..., None, None] * D)
            yb = y[..., sl].unflatten(-1, (m, d))
            out.append(torch.einsum("...ij,...aj->...ai", E, yb).flatten(-2))
        return torch.cat(out, dim=-1)


# ---------------------------------------------------------------------------------------------
# MLPs


def _hidden_list(hidden: RepSpec | Sequence[RepSpec]) -> list[RepSpec]:
    if isinstance(hidden, Rep | str | int | Tensor):
        return [hidden]
    hidden = list(hidden)
    if not hidden:
        raise ValueError("hidden must list at least one hidden representation")
    return hidden


class _GatedStack(nn.Module):
    """EquivariantLinear -> InvariantGate for each hidden rep, then EquivariantLinear."""

    def __init__(self, group, reps: list[Rep], **kw) -> None:
        super().__init__()
        solver, dtype, generator = kw["solver"], kw["dtype"], kw["generator"]
        layers: list[nn.Module] = []
        for i in range(len(reps) - 1):
            layers.append(
                EquivariantLinear(
                    group,
                    reps[i],
                    reps[i + 1],
                    bias=kw["bias"],
                    solver=solver,
                    dtype=dtype,
                    generator=generator,
                )
            )
            if i < len(reps) - 2:
                layers.append(
                    InvariantGate(
                        group,
                        reps[i + 1],
                        pairwise=kw["pairwise"],
                        activation=kw["activation"],
                        solver=solver,
                        dtype=dtype,
                        generator=generator,
                    )
                )
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class EquivariantMLP(nn.Module):
    """Equivariant MLP: (EquivariantLinear -> InvariantGate) per hidden rep, then
    EquivariantLinear to ``rep_out``. ``(..., rep_in.dim) -> (..., rep_out.dim)``.

    For an invariant classifier use ``rep_out = n_classes`` (scalars): the logits are then
    invariant. Scale: ``scale="auto"`` normalises the input scale (:class:`ScaleNormalizer`)
    when the algebra contains an isotropic scaling, since no invariant scalars exist then;
    ``"normalize"`` requires it; ``"none"`` never normalises (with a scaling generator the gates
    are then constants and the network is linear, which is the honest outcome).

    Args:
        group, rep_in, rep_out: as for :class:`EquivariantLinear`.
        hidden: one hidden rep or a list (one per hidden layer), e.g. ``["32*S + 16*V"] * 2``.
        pairwise, activation: for the :class:`InvariantGate` layers.
        bias, solver, dtype, generator: as for :class:`EquivariantLinear`.
    """

    def __init__(
        self,
        group: DiscoveredGroup,
        rep_in: RepSpec,
        rep_out: RepSpec,
        hidden: RepSpec | Sequence[RepSpec] = "32*S + 16*V",
        *,
        scale: Literal["auto", "normalize", "none"] = "auto",
        pairwise: bool = True,
        activation: str | nn.Module = "silu",
        bias: bool = True,
        solver: EquivariantSolver | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        solver = solver if solver is not None else EquivariantSolver()
        self.normalizer = _make_normalizer(group, rep_in, rep_out, scale, solver, dtype)
        inner, coeff = self.normalizer.group, self.normalizer.coefficients
        full = [Rep.coerce(group, r) for r in (rep_in, *_hidden_list(hidden), rep_out)]
        reps = [r.restrict(inner, coeff) if self.normalizer.active else r for r in full]
        self.rep_in, self.rep_out = full[0], full[-1]
        self.net = _GatedStack(
            inner,
            reps,
            solver=solver,
            dtype=dtype,
            generator=generator,
            bias=bias,
            pairwise=pairwise,
            activation=activation,
        )

    @property
    def n_free_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.rep_in.dim:
            raise ValueError(
                f"input has {x.shape[-1]} features but rep_in = {self.rep_in} has dimension "
                f"{self.rep_in.dim}"
            )
        if not self.normalizer.active:
            return self.net(x)
        log_n = self.normalizer.log_norm(x)
        y = self.net(self.normalizer.normalize(x, log_n))
        return self.normalizer.restore(y, log_n)


def _make_normalizer(group, rep_in, rep_out, scale, solver, dtype) -> ScaleNormalizer:
    if scale not in ("auto", "normalize", "none"):
        raise ValueError(f"scale must be 'auto', 'normalize' or 'none', got {scale!r}")
    norm = ScaleNormalizer(
        group, rep_in, rep_out, enabled=scale != "none", solver=solver, dtype=dtype
    )
    if scale == "normalize" and not norm.active:
        raise ValueError(
            "scale='normalize' but the group's algebra contains no isotropic scaling "
            f"(relative residual of the identity's projection onto the span: {norm.residual:.3g})"
        )
    return norm


class EquivariantDeepSet(nn.Module):
    """Permutation-invariant and G-equivariant model of sets: ``rho(sum_p phi(x_p))``.

    ``x (..., P, rep_in.dim) -> (..., rep_out.dim)``; ``phi`` and ``rho`` are gated equivariant
    MLPs; ``mask`` (..., P) bool marks real (not padded) elements. With a scaling generator the
    scale is normalised once per set (``N`` averaged over the set's elements). For jets:
    ``EquivariantDeepSet(group, "V", 2, phi_hidden=["16*S + 8*V"], rho_hidden=["16*S"])`` maps
    constituents (N, P, 4) to invariant logits (N, 2).

    Args:
        phi_hidden: hidden reps of ``phi``; its last entry is the pooled (latent) rep.
        rho_hidden: hidden reps of ``rho`` (may be empty: a single EquivariantLinear).
        pool: "sum" or "mean" over the set axis.
        Others as for :class:`EquivariantMLP`.
    """

    def __init__(
        self,
        group: DiscoveredGroup,
        rep_in: RepSpec,
        rep_out: RepSpec,
        phi_hidden: Sequence[RepSpec] = ("32*S + 16*V", "32*S + 16*V"),
        rho_hidden: Sequence[RepSpec] = ("32*S",),
        *,
        pool: Literal["sum", "mean"] = "sum",
        scale: Literal["auto", "normalize", "none"] = "auto",
        pairwise: bool = True,
        activation: str | nn.Module = "silu",
        bias: bool = True,
        solver: EquivariantSolver | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if pool not in ("sum", "mean"):
            raise ValueError(f"pool must be 'sum' or 'mean', got {pool!r}")
        self.pool = pool
        phi_hidden, rho_hidden = list(phi_hidden), list(rho_hidden)
        if not phi_hidden:
            raise ValueError("phi_hidden must name at least the latent representation")
        solver = solver if solver is not None else EquivariantSolver()
        self.normalizer = _make_normalizer(group, rep_in, rep_out, scale, solver, dtype)
        inner, coeff = self.normalizer.group, self.normalizer.coefficients
        kw = dict(
            solver=solver,
            dtype=dtype,
            generator=generator,
            bias=bias,
            pairwise=pairwise,
            activation=activation,
        )

        def conv(specs: list[RepSpec]) -> list[Rep]:
            reps = [Rep.coerce(group, s) for s in specs]
            return [r.restrict(inner, coeff) if self.normalizer.active else r for r in reps]

        self.rep_in, self.rep_out = Rep.coerce(group, rep_in), Rep.coerce(group, rep_out)
        phi_reps = conv([rep_in, *phi_hidden])
        latent = phi_reps[-1]
        # phi ends with a gate so the pooled features are nonlinear functions of each element
        self.phi = _GatedStack(inner, phi_reps, **kw)
        self.phi_gate = InvariantGate(
            inner,
            latent,
            pairwise=pairwise,
            activation=activation,
            solver=solver,
            dtype=dtype,
            generator=generator,
        )
        self.rho = _GatedStack(inner, [latent, *conv([*rho_hidden, rep_out])], **kw)

    @property
    def n_free_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.ndim < 2 or x.shape[-1] != self.rep_in.dim:
            raise ValueError(
                f"x must be (..., P, {self.rep_in.dim}) for rep_in = {self.rep_in}, "
                f"got {tuple(x.shape)}"
            )
        if mask is not None and tuple(mask.shape) != tuple(x.shape[:-1]):
            raise ValueError(
                f"mask must have shape {tuple(x.shape[:-1])} (x without its feature axis), "
                f"got {tuple(mask.shape)}"
            )
        log_n = None
        if self.normalizer.active:
            log_n = self.normalizer.log_norm(x, over_set=True, mask=mask)
            x = self.normalizer.normalize(x, log_n[..., None])
        h = self.phi_gate(self.phi(x))
        if mask is not None:
            h = h * mask.unsqueeze(-1).to(h.dtype)
        pooled = h.sum(-2)
        if self.pool == "mean":
            count = h.shape[-2] if mask is None else mask.sum(-1, keepdim=True).clamp_min(1)
            pooled = pooled / count
        y = self.rho(pooled)
        return y if log_n is None else self.normalizer.restore(y, log_n)
