"""Learnable Lie algebra bases and the equivariance objectives they are fitted to.

A :class:`LieBasis` holds generators ``L`` (k, d, d) and, optionally, channel representations
``rho_in`` (k, c_in, c_in) and ``rho_out`` (k, c_out, c_out). One set of coefficients
``c ~ N(0, s^2)`` drives all three: ``g = exp(sum c_i L_i)``, ``rho(g) = exp(sum c_i rho_i)``, so
the representations are Lie algebra homomorphisms by construction of the sampling.

Sampling scale. With ``normalize=True`` (the default) the generators are divided by their
Frobenius norm *inside* the exponential, so ``s`` alone sets how far group elements move from the
identity and the objective only chooses directions. This is what keeps non-compact generators
(scalings, shears) meaningful: their orbits leave a chart exponentially fast, and a learner free
to grow them would either blow patches out of the chart or, to avoid that, collapse them to zero.
The paper's alternative, a clamped magnitude reward, is available (``magnitude_weight``) for
un-normalised sampling.

Everything here is pure tensor math; the Lightning wrapper lives in discovery/learner.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from atlasd.atlas import act, act_vectors

__all__ = [
    "LieBasis",
    "disc_mask",
    "global_equivariance_loss",
    "local_equivariance_loss",
    "magnitude_reward",
    "overlap_penalty",
]

OverlapKind = Literal["cosine", "standard"]


class LieBasis(nn.Module):
    """Learnable generators (k, d, d) and optional channel representations.

    Args:
        n_generators: k >= 1.
        d: size of the matrices (2 for charts, the vector size for global discovery).
        in_channels, out_channels: channel counts for learned representations (``learn_in_rep``
            / ``learn_out_rep``); representations start at zero (the trivial representation).
        normalize: divide generators by their norm inside the exponential (see module doc).
        generator: seeds the initial generators, N(0, 1) entries.
    """

    def __init__(
        self,
        n_generators: int,
        d: int = 2,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        learn_in_rep: bool = False,
        learn_out_rep: bool = False,
        normalize: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if n_generators < 1:
            raise ValueError(f"n_generators must be >= 1, got {n_generators}")
        if d < 1:
            raise ValueError(f"d must be >= 1, got {d}")
        init = torch.randn(n_generators, d, d, generator=generator)
        self.generators = nn.Parameter(init / init.flatten(1).norm(dim=1)[:, None, None])
        self.in_rep = (
            nn.Parameter(torch.zeros(n_generators, in_channels, in_channels))
            if learn_in_rep
            else None
        )
        self.out_rep = (
            nn.Parameter(torch.zeros(n_generators, out_channels, out_channels))
            if learn_out_rep
            else None
        )
        self.normalize = normalize
        for p in self.parameters():
            # matrix_exp's backward hands out transposed-stride gradients; DDP's gradient
            # buckets expect the parameter's own layout (and warn on every step otherwise)
            p.register_hook(torch.Tensor.contiguous)

    @property
    def k(self) -> int:
        return int(self.generators.shape[0])

    def _norms(self) -> Tensor:
        return self.generators.flatten(1).norm(dim=1).clamp_min(1e-8)

    def effective(self) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The generators and representations that enter the exponential: (k, d, d) and
        (k, c, c) or None. Representations are scaled with their generator so that
        ``(L_i, rho_i)`` stays one Lie algebra element."""
        if not self.normalize:
            return self.generators, self.in_rep, self.out_rep
        inv = (1.0 / self._norms())[:, None, None]
        in_rep = None if self.in_rep is None else self.in_rep * inv
        out_rep = None if self.out_rep is None else self.out_rep * inv
        return self.generators * inv, in_rep, out_rep

    def sample(
        self,
        shape: tuple[int, ...],
        scale: float | Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Sample group elements and matching representation matrices.

        Returns:
            g (*shape, d, d), rho_in (*shape, c_in, c_in) or None, rho_out likewise. All are
            differentiable with respect to the parameters.
        """
        L, r_in, r_out = self.effective()
        c = torch.randn((*shape, self.k), generator=generator, dtype=L.dtype, device=L.device)
        c = c * torch.as_tensor(scale, dtype=L.dtype, device=L.device)

        def expo(M: Tensor | None) -> Tensor | None:
            if M is None:
                return None
            return torch.linalg.matrix_exp(torch.einsum("...k,kij->...ij", c, M))

        return expo(L), expo(r_in), expo(r_out)

    def regularization(
        self,
        overlap_weight: float = 0.0,
        overlap_kind: OverlapKind = "cosine",
        magnitude_weight: float = 0.0,
        magnitude_clamp: float = 1.0,
    ) -> Tensor:
        """Weighted sum of the overlap penalty and the (negative) clamped magnitude reward."""
        reg = self.generators.new_zeros(())
        if overlap_weight:
            reg = reg + overlap_weight * overlap_penalty(self.generators, overlap_kind)
        if magnitude_weight:
            reg = reg - magnitude_weight * magnitude_reward(self.generators, magnitude_clamp)
        return reg


def overlap_penalty(L: Tensor, kind: OverlapKind = "cosine") -> Tensor:
    """Penalty on overlap between normalised generators, a scalar (0 for k = 1).

    ``"cosine"``: sum over pairs i < j of ``|<L_i, L_j>|`` (Frobenius, unit norms): keeps the
    generators linearly independent. ``"standard"``: sum over pairs of ``sum_ab |L_i,ab| |L_j,ab|``
    of the normalised generators: also pushes them towards disjoint supports (a readable,
    standard-basis-like answer, as in the paper's "standard basis" regulariser).
    """
    k = L.shape[0]
    if k < 2:
        return L.new_zeros(())
    V = L.flatten(1)
    V = V / V.norm(dim=1, keepdim=True).clamp_min(1e-8)
    i, j = torch.triu_indices(k, k, offset=1, device=L.device)
    if kind == "cosine":
        return (V[i] * V[j]).sum(1).abs().sum()
    if kind == "standard":
        return (V[i].abs() * V[j].abs()).sum(1).sum()
    raise ValueError(f"overlap kind must be 'cosine' or 'standard', got {kind!r}")


def magnitude_reward(L: Tensor, clamp: float = 1.0) -> Tensor:
    """``sum_i min(|L_i|_F, clamp)``: rewards generators up to a norm, so they cannot collapse
    to zero, without rewarding them for growing past it."""
    return L.flatten(1).norm(dim=1).clamp(max=clamp).sum()


def disc_mask(radius: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """(2r+1, 2r+1) weights: 1 inside the disc of radius r + 1/2 around the centre, else 0.

    Rotations map the disc into itself, so comparing predictions there never compares against
    zero padding brought in from outside the square patch.
    """
    ax = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    return ((ax[:, None] ** 2 + ax[None, :] ** 2) <= (radius + 0.5) ** 2).to(dtype)


def _distance(
    a: Tensor, b: Tensor, kind: str, weight: Tensor | None = None, per_sample: bool = False
) -> Tensor:
    """Mean L1 / squared error, optionally weighted over the last two dims; a scalar, or (B,)
    means per leading index with ``per_sample``."""
    if kind not in ("l1", "mse"):
        raise ValueError(f"loss kind must be 'l1' or 'mse', got {kind!r}")
    diff = a - b
    err = diff.abs() if kind == "l1" else diff.square()
    if weight is not None:
        err = err * (weight * (weight.numel() / weight.sum()))
    if per_sample:
        return err.flatten(1).mean(1)
    return err.mean()


def local_equivariance_loss(
    predictor: Callable[[Tensor], Tensor],
    patches: Tensor,
    base: Tensor,
    g: Tensor,
    rho_in: Tensor | None = None,
    rho_out: Tensor | None = None,
    *,
    kind: str = "l1",
    mask: Tensor | None = None,
    per_sample: bool = False,
) -> Tensor:
    """``E |F(g . x) - g . F(x)|`` on chart patches: a scalar, or (B,) with ``per_sample``.

    Args:
        predictor: frozen F, (B, K, C_in, h, w) -> (B, K, C_out, h_o, w_o), odd h_o <= h.
        patches: x, (B, K, C_in, h, w).
        base: F(x) computed once and detached, (B, K, C_out, h_o, w_o).
        g: (B, K, 2, 2) (or broadcastable), rho_in / rho_out: (B, K, c, c) or None.
        kind: "l1" or "mse".
        mask: (h_o, w_o) weights, e.g. :func:`disc_mask`; None weighs every pixel.

    The output side is transformed on the output crop itself (zero outside it), which is why a
    disc mask is the default upstream.
    """
    lhs = predictor(act(g, patches, rho_in))
    rhs = act(g, base, rho_out)
    if lhs.shape != rhs.shape:
        raise ValueError(
            f"predictor returned {tuple(lhs.shape)} for transformed patches but "
            f"{tuple(rhs.shape)} for the originals"
        )
    return _distance(lhs, rhs, kind, mask, per_sample)


def global_equivariance_loss(
    predictor: Callable[[Tensor], Tensor],
    x: Tensor,
    base: Tensor,
    g: Tensor,
    rho_out: Tensor | None = None,
    *,
    kind: str = "mse",
    per_sample: bool = False,
) -> Tensor:
    """``E |f(g x) - rho_out(g) f(x)|`` for vector inputs: a scalar, or (B,) with
    ``per_sample``.

    Args:
        predictor: f, (B, ..., d) -> (B, c).
        x: (B, ..., d); g: (B, d, d) one element per sample, acting on the last axis.
        base: f(x), (B, c), detached.
        rho_out: (B, c, c) or None (invariance).
    """
    lhs = predictor(act_vectors(g, x))
    rhs = base if rho_out is None else torch.einsum("bij,bj->bi", rho_out, base)
    if lhs.shape != rhs.shape:
        raise ValueError(
            f"predictor returned {tuple(lhs.shape)} for transformed inputs but "
            f"{tuple(rhs.shape)} for the originals"
        )
    return _distance(lhs, rhs, kind, None, per_sample)
