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

The objectives are pure tensor functions; :class:`LocalObjective`, :class:`GlobalObjective` and
:class:`DistributionObjective` hold what one of them needs during a fit (the frozen predictor as a
submodule, masks as buffers) so that whoever holds them (the Lightning wrapper in
discovery/learner.py) moves it to its device and precision with the basis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from atlasd.atlas import act, act_vectors, crop

__all__ = [
    "DistributionObjective",
    "GlobalObjective",
    "LieBasis",
    "LocalObjective",
    "disc_mask",
    "global_equivariance_loss",
    "local_equivariance_loss",
    "magnitude_reward",
    "overlap_penalty",
    "placement",
    "to_placement",
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
        # drawn in float32 whatever the basis' precision: a seed gives the same coefficients at
        # precision "64-true" as at the default, so the two fits differ by rounding only
        c = torch.randn((*shape, self.k), generator=generator, dtype=torch.float32, device=L.device)
        c = c.to(L.dtype) * torch.as_tensor(scale, dtype=L.dtype, device=L.device)

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


# ----------------------------------------------------------------------------- objective modules


class _FrozenObjective(nn.Module):
    """An objective's state, frozen: it stays in eval mode whatever mode its holder is put in,
    so a predictor's BatchNorm keeps using its running statistics during stage 2 (Lightning calls
    ``train()`` on the whole LightningModule when a fit starts)."""

    def train(self, mode: bool = True) -> _FrozenObjective:
        return super().train(False)


class LocalObjective(_FrozenObjective):
    """Stage 2's objective on chart patches, ``E |F(g . x) - g . F(x)|`` over a batch
    ``(patches, base)``, see :func:`local_equivariance_loss`.

    Args:
        predictor: the frozen F, ``(B, K, C_in, h, w) -> (B, K, C_out, h', w')``, odd h' <= h.
            An ``nn.Module`` is registered as a submodule (so it follows the holder's device and
            precision); a plain function must run on whatever device its inputs are on.
        out_radius: radius of the compared output crop, at most the predictor's (h' - 1) / 2.
        kind: "l1" or "mse".
        probabilities: compare ``softmax`` over the channel axis of the output (classifiers:
            logits carry an arbitrary per-pixel offset that equivariance need not respect).

    Buffers: ``mask`` (2 out_radius + 1, 2 out_radius + 1), the inscribed disc (not saved).
    """

    def __init__(
        self,
        predictor: Callable[[Tensor], Tensor],
        out_radius: int,
        *,
        kind: str = "l1",
        probabilities: bool = False,
    ) -> None:
        super().__init__()
        self.predictor = predictor
        self.out_radius = int(out_radius)
        self.kind = kind
        self.probabilities = bool(probabilities)
        self.register_buffer("mask", disc_mask(self.out_radius), persistent=False)

    def predict(self, patches: Tensor) -> Tensor:
        """The compared output: ``(B, K, C_out, 2 r + 1, 2 r + 1)``, r = ``out_radius``."""
        out = crop(self.predictor(patches), self.out_radius)
        return out.softmax(dim=2) if self.probabilities else out

    def forward(
        self,
        batch: tuple[Tensor, Tensor],
        g: Tensor,
        rho_in: Tensor | None = None,
        rho_out: Tensor | None = None,
        *,
        per_sample: bool = False,
    ) -> Tensor:
        """``batch = (patches (B, K, C_in, h, w), base = predict(patches))``, g (B, K, 2, 2),
        rho_in / rho_out (B, K, c, c) or None; a scalar, or (B,) with ``per_sample``."""
        patches, base = batch
        return local_equivariance_loss(
            self.predict,
            patches,
            base,
            g,
            rho_in,
            rho_out,
            kind=self.kind,
            mask=self.mask,
            per_sample=per_sample,
        )


class GlobalObjective(_FrozenObjective):
    """Stage 2's objective on vectors, ``E |f(g x) - rho_out(g) f(x)|`` over a batch
    ``(x, base)``, see :func:`global_equivariance_loss`.

    Args:
        predictor: the frozen f, ``(B, ..., d) -> (B, c)`` or ``(B,)`` (read as (B, 1)); an
            ``nn.Module`` is registered as a submodule, a plain function must run on the device
            of its inputs.
        kind: "l1" or "mse".
    """

    def __init__(self, predictor: Callable[[Tensor], Tensor], *, kind: str = "mse") -> None:
        super().__init__()
        self.predictor = predictor
        self.kind = kind

    def predict(self, x: Tensor) -> Tensor:
        """f(x) as (B, c)."""
        out = self.predictor(x)
        return out if out.ndim > 1 else out[:, None]

    def forward(
        self,
        batch: tuple[Tensor, Tensor],
        g: Tensor,
        rho_in: Tensor | None = None,
        rho_out: Tensor | None = None,
        *,
        per_sample: bool = False,
    ) -> Tensor:
        """``batch = (x (B, ..., d), base = predict(x) (B, c))``, g (B, d, d), rho_out
        (B, c, c) or None (rho_in is unused); a scalar, or (B,) with ``per_sample``."""
        x, base = batch
        return global_equivariance_loss(
            self.predict, x, base, g, rho_out, kind=self.kind, per_sample=per_sample
        )


class DistributionObjective(_FrozenObjective):
    """Stage 2's objective for a distribution, ``q(g x) = q(x)``: a divergence between the
    transformed first half of a batch and its second half, an independent sample (comparing a
    batch with its own transform would reward small transformations for the noise they share).

    Args:
        divergence: point-cloud divergence, ``(n, D), (m, D) -> scalar`` and batched
            ``(C, n, D), (C, m, D) -> (C,)``, e.g. geomloss's ``SamplesLoss("sinkhorn")``; an
            ``nn.Module`` is registered as a submodule.
        radius: None for vector samples ``(B, d)`` (g acts on the last axis); a chart radius for
            patch samples ``(B, K, C, h, w)`` (g acts through :func:`~atlasd.atlas.act` and only
            the inscribed disc is compared, so corners rotated out of a patch do not count).

    Buffers: ``mask`` (2 radius + 1, 2 radius + 1) or None (not saved).
    """

    def __init__(self, divergence: Callable[..., Tensor], radius: int | None = None) -> None:
        super().__init__()
        self.divergence = divergence
        self.register_buffer(
            "mask", None if radius is None else disc_mask(int(radius)), persistent=False
        )

    def forward(
        self,
        batch: tuple[Tensor],
        g: Tensor,
        rho_in: Tensor | None = None,
        rho_out: Tensor | None = None,
    ) -> Tensor:
        """``batch = (samples (B, d) or (B, K, C, h, w),)``, g (B, d, d) or (B, K, 2, 2):
        a scalar, the divergence between ``g x`` on the first B // 2 samples and the next B // 2.
        """
        (xb,) = batch
        half = xb.shape[0] // 2
        if self.mask is None:
            moved = torch.einsum("bij,bj->bi", g[:half], xb[:half])
            return self.divergence(moved, xb[half : 2 * half])
        moved = act(g[:half], xb[:half]) * self.mask
        return self.divergence(moved.flatten(1), (xb[half : 2 * half] * self.mask).flatten(1))

    def candidates(self, moved: Tensor, other: Tensor) -> Tensor:
        """Batched divergence for the coset search: ``moved`` (C, m, d) one transformed sample
        per candidate, ``other`` (m, d) one independent sample; returns (C,)."""
        c, m, d = moved.shape
        return self.divergence(moved.contiguous(), other.expand(c, m, d).contiguous())


def placement(obj: Any) -> tuple[torch.device, torch.dtype | None]:
    """Where an objective or predictor computes: the device and dtype of its first floating
    parameter or buffer; the CPU and None (keep the inputs' dtype) for a plain function or a
    module without floating state. Code outside a Lightning fit moves its inputs there."""
    if isinstance(obj, nn.Module):
        for t in (*obj.parameters(), *obj.buffers()):
            if t.is_floating_point():
                return t.device, t.dtype
    return torch.device("cpu"), None


def to_placement(t: Tensor, place: tuple[torch.device, torch.dtype | None]) -> Tensor:
    """``t`` on ``place``'s device, floating tensors also in its dtype (differentiable)."""
    device, dtype = place
    if dtype is not None and t.is_floating_point():
        return t.to(device=device, dtype=dtype)
    return t.to(device=device)
