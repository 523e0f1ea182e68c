"""Gauge-equivariant convolution on the sphere's equirectangular (lat-lon) grid.

Every pixel is a chart of the atlas with its own local frame; by default the frame is (east,
north), the frame :class:`atlasd.Atlas` uses for sphere charts. Features are fields of a
representation of the structure group SO(2) (scalars, tangent vectors and their tensor
products), written in the local frame of their pixel. A layer computes at every pixel ``p``

    out(p) = sum_q K(v_pq) rho_in(theta_pq) f(q),

over the neighbours ``q`` of ``p`` within geodesic distance ``r + 1/2`` grid steps, where

- ``v_pq`` is the position of ``q`` in ``p``'s tangent plane (the logarithmic map: direction
  of the geodesic from p to q in p's frame, length = geodesic distance / latitude spacing);
- ``theta_pq`` is the angle by which parallel transport along that geodesic rotates ``q``'s
  frame relative to ``p``'s: ``rho_in(theta_pq)`` re-expresses ``f(q)`` in ``p``'s frame;
- ``K`` is an SO(2)-steerable kernel, ``K(R v) = rho_out(R) K(v) rho_in(R)^-1`` exactly for
  every rotation: ``K(v) = sum_j R_j(|v|) rho_out(alpha) M_j rho_in(-alpha)`` with ``alpha``
  the angle of ``v``, Gaussian rings ``R_j`` at radii 1..r and free matrices ``M_j``, plus an
  equivariant centre term ``R_0(|v|) W`` (``W`` commuting with the group).

Changing the gauge (rotating the frame at every pixel by its own angle ``phi(p)``) rotates
positions ``v`` by ``-phi(p)``, changes transports to ``theta + phi(q) - phi(p)`` and input
features to ``rho_in(-phi) f``; by the steerability of K the output changes to
``rho_out(-phi(p)) out(p)``: the layer is gauge equivariant, exactly (tested to 1e-12 in
float64). The structure group is the exact SO(2) of the tangent planes, fixed by geometry: a
discovered group may be passed to check that it is (close to) so(2).

Scope, stated honestly: one grid type (equirectangular, W even so that neighbours can be
found across the poles); the neighbourhood is a fixed window of rows ``+-r`` and columns
``+-c`` with ``c`` chosen to cover the disc up to latitude ``+-full_disc_latitude`` (60 degrees
by default); closer to the poles the disc is truncated in longitude (still exactly gauge
equivariant, with a smaller receptive field). Near the equator, where transports vanish and
neighbours sit at integer offsets, the layer agrees with the planar convolution by
:meth:`GaugeEquivariantConv.planar_kernel` (measured in the tests).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atlasd.downstream.equivariant.invariants import invariant_bias_vector, register_invariant_bias
from atlasd.downstream.equivariant.reps import Rep
from atlasd.downstream.equivariant.solver import EquivariantSolver

if TYPE_CHECKING:
    from atlasd.group import DiscoveredGroup

__all__ = ["GaugeEquivariantConv", "sphere_neighbourhood", "structure_group"]

_F64 = torch.float64


def _rotation_generator() -> Tensor:
    """(1, 2, 2) float64: the counter-clockwise rotation generator J (a fresh tensor each call,
    so that no module-level tensor can be mutated in place)."""
    return torch.tensor([[[0.0, -1.0], [1.0, 0.0]]], dtype=_F64)


def structure_group() -> DiscoveredGroup:
    """The exact SO(2) of rotations of tangent frames (2x2, counter-clockwise)."""
    from atlasd.group import DiscoveredGroup

    return DiscoveredGroup(_rotation_generator(), metadata={"name": "SO(2) structure group"})


def _rotations(angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _unit_vectors(lat: Tensor, lon: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Position, east and north unit vectors (..., 3) at (lat, lon)."""
    pos = torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], -1)
    east = torch.stack([-lon.sin(), lon.cos(), torch.zeros_like(lon)], -1)
    north = torch.stack([-lat.sin() * lon.cos(), -lat.sin() * lon.sin(), lat.cos()], -1)
    return pos, east, north


def sphere_neighbourhood(
    shape: tuple[int, int],
    radius: int,
    gauge: Tensor | None = None,
    full_disc_latitude: float = 60.0,
) -> dict[str, Tensor]:
    """Neighbours, tangent-plane positions and transport angles on a lat-lon grid.

    Grid (as :class:`atlasd.Atlas` on the sphere): row i at latitude ``90 - (i + 1/2) 180 / H``
    degrees, column j at longitude ``(j + 1/2) 360 / W``.

    Args:
        shape: (H, W), W even.
        radius: r; neighbours within geodesic distance ``(r + 1/2) * pi / H``.
        gauge: None (frames (east, north)) or (H, W) angles phi: the frame at each pixel is
            (east, north) rotated counter-clockwise by phi.
        full_disc_latitude: the column window covers the whole disc up to this latitude.

    Returns:
        dict with ``index`` (H, W, n) long flat indices ``row * W + col`` of the neighbours,
        ``position`` (H, G, n, 2) tangent coordinates in units of the latitude spacing,
        ``transport`` (H, G, n) angles, ``mask`` (H, G, n) bool (inside the disc), where
        G = 1 without a gauge (everything depends on the row only) and W with one, and
        ``offsets`` (n,) the column offset of each tap (before crossing a pole).
    """
    H, W = int(shape[0]), int(shape[1])
    if H < 2 or W < 2 or W % 2:
        raise ValueError(f"the lat-lon grid must be (H, W) with H >= 2 and W even, got {shape}")
    r = int(radius)
    if r < 0 or 2 * r >= H:
        raise ValueError(f"radius must be in 0..{(H - 1) // 2} for H = {H}, got {radius}")
    step = math.pi / H
    dlon = 2 * math.pi / W
    c = math.ceil((r + 0.5) * step / (math.cos(math.radians(full_disc_latitude)) * dlon))
    c = min(c, W // 2 - 1) if W > 2 else 0
    di = torch.arange(-r, r + 1)
    dj = torch.arange(-c, c + 1)
    DI, DJ = torch.meshgrid(di, dj, indexing="ij")
    DI, DJ = DI.flatten(), DJ.flatten()  # (n,)
    rows = torch.arange(H)[:, None] + DI[None]  # (H, n)
    # across a pole: reflect the row and move half way round in longitude
    over_top, over_bottom = rows < 0, rows >= H
    shift = torch.where(over_top | over_bottom, W // 2, 0)
    rows = torch.where(over_top, -1 - rows, torch.where(over_bottom, 2 * H - 1 - rows, rows))
    cols = torch.remainder(torch.arange(W)[None, :, None] + DJ + shift[:, None, :], W)
    index = rows[:, None, :] * W + cols  # (H, W, n)

    lat = math.pi / 2 - (torch.arange(H, dtype=_F64) + 0.5) * step
    lat_q = math.pi / 2 - (rows.to(_F64) + 0.5) * step  # (H, n)
    lon_q = (DJ.to(_F64) + shift.to(_F64)) * dlon  # relative to the centre column
    p, e_p, n_p = _unit_vectors(lat[:, None], torch.zeros(H, 1, dtype=_F64))  # (H, 1, 3)
    q, e_q, _ = _unit_vectors(lat_q, lon_q)  # (H, n, 3)
    cosd = (p * q).sum(-1).clamp(-1.0, 1.0)
    dist = torch.arccos(cosd)  # geodesic distance (H, n)
    # log map at p: direction of q - (p.q) p in the frame (e_p, n_p)
    t = q - cosd[..., None] * p
    tx, ty = (t * e_p).sum(-1), (t * n_p).sum(-1)
    tn = torch.hypot(tx, ty).clamp_min(1e-300)
    pos = torch.stack([tx / tn, ty / tn], -1) * (dist / step)[..., None]
    pos = torch.where(dist[..., None] > 0, pos, torch.zeros_like(pos))
    # parallel transport of e_q along the geodesic q -> p: rotation about axis q x p
    axis = torch.cross(q, p.expand_as(q), dim=-1)
    s = axis.norm(dim=-1, keepdim=True)
    k = axis / s.clamp_min(1e-300)
    ang = dist[..., None]
    # Rodrigues: R e = e cos + (k x e) sin + k (k.e)(1 - cos)
    moved = (
        e_q * ang.cos()
        + torch.cross(k, e_q, dim=-1) * ang.sin()
        + k * (k * e_q).sum(-1, True) * (1 - ang.cos())
    )
    moved = torch.where(s > 1e-15, moved, e_q)
    transport = torch.atan2((moved * n_p).sum(-1), (moved * e_p).sum(-1))  # (H, n)
    mask = dist / step <= r + 0.5 + 1e-9
    position, transport, mask = pos[:, None], transport[:, None], mask[:, None]
    if gauge is not None:
        phi = torch.as_tensor(gauge, dtype=_F64)
        if phi.shape != (H, W):
            raise ValueError(f"gauge must be (H, W) = {(H, W)} angles, got {tuple(phi.shape)}")
        if not torch.isfinite(phi).all():
            raise ValueError("gauge contains NaN or Inf")
        phi_q = phi.flatten()[index]  # (H, W, n)
        phi_p = phi[..., None]
        rot = _rotations(-phi_p)  # (H, W, 1, 2, 2)
        position = (rot @ position.expand(H, W, -1, -1)[..., None])[..., 0]
        transport = transport + phi_q - phi_p
        mask = mask.expand(H, W, -1)
    return {
        "index": index,
        "position": position,
        "transport": transport,
        "mask": mask,
        "offsets": DJ,
    }


class GaugeEquivariantConv(nn.Module):
    """Gauge-equivariant convolution of fields on an equirectangular sphere grid.

    Args:
        in_rep, out_rep: representations of the structure group SO(2) as strings or Reps of
            :attr:`structure` (e.g. ``"4*S + 2*V"``: 4 scalar fields and 2 tangent vector
            fields, components (east, north) in the local frame); an int n means n scalars.
        kernel_size: odd s = 2r + 1 (the disc radius is r + 1/2 grid steps).
        shape: the grid (H, W), W even.
        group: optionally the discovered group of the charts; it must be close to so(2)
            (similarity >= ``min_similarity``), since the gauge group is the exact SO(2).
        gauge: optional (H, W) frame angles (see :func:`sphere_neighbourhood`).
        ring_width: standard deviation of the Gaussian rings, in grid steps.
        bias, dtype, generator: as for the other layers.

    Shapes: (B, in_rep.dim, H, W) -> (B, out_rep.dim, H, W).
    """

    def __init__(
        self,
        in_rep: str | int | Rep,
        out_rep: str | int | Rep,
        kernel_size: int,
        shape: tuple[int, int],
        *,
        group: DiscoveredGroup | None = None,
        min_similarity: float = 0.9,
        gauge: Tensor | None = None,
        full_disc_latitude: float = 60.0,
        ring_width: float = 0.6,
        bias: bool = True,
        solver: EquivariantSolver | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size!r}")
        if group is not None:
            sim = group.similarity(_rotation_generator()) if group.d == 2 else 0.0
            if sim < min_similarity:
                raise ValueError(
                    f"gauge convolution needs the charts' group to be so(2); the given group "
                    f"has similarity {sim:.3f} < {min_similarity} to so(2)"
                )
        dtype = torch.get_default_dtype() if dtype is None else dtype
        solver = solver if solver is not None else EquivariantSolver()
        self.structure = structure_group()
        self.rep_in = Rep.coerce(self.structure, in_rep)
        self.rep_out = Rep.coerce(self.structure, out_rep)
        for name, rep in (("in_rep", self.rep_in), ("out_rep", self.rep_out)):
            if any(b.expr is None for _, b in rep.blocks):
                raise ValueError(f"{name} must be built from S and V (tensor products, duals)")
        self.kernel_size, self.shape = kernel_size, (int(shape[0]), int(shape[1]))
        r = kernel_size // 2
        self.ring_width = float(ring_width)
        nb = sphere_neighbourhood(shape, r, gauge, full_disc_latitude)
        self.register_buffer("index", nb["index"].reshape(-1), persistent=False)
        self.n_neighbours = nb["index"].shape[-1]
        # per row offset: the source row of every output row (+ H when it lies across a pole:
        # read from the copy rolled by W / 2), for the row-only forward pass
        W_ = self.shape[1]
        first = nb["index"][:, 0, :]  # (H, n): neighbours of column 0
        rows, cols = first // W_, first % W_
        dj = nb["offsets"]
        across = torch.remainder(cols - dj[None], W_) != 0
        width = 2 * int(dj.max()) + 1
        sources = (rows + across * self.shape[0])[:, ::width]  # (H, 2r + 1): one per row offset
        self.register_buffer("row_sources", sources.reshape(-1).contiguous(), persistent=False)
        self._half_width = int(dj.max())
        in_blocks, out_blocks = list(self.rep_in.slices()), list(self.rep_out.slices())
        # basis of each block pair, evaluated at every (row, column-or-1, neighbour), with the
        # transport of the input folded in; coefficients orthonormalised on the planar grid
        self._pairs: list[tuple[int, int, int, int]] = []
        self._in_shapes = [(m, b.dim) for _, m, b in in_blocks]
        self._out_shapes = [(m, b.dim) for _, m, b in out_blocks]
        n_w, init = 0, []
        stored: dict[tuple[str, str], int] = {}
        for j, (_, m_out, bo) in enumerate(out_blocks):
            for i, (_, m_in, bi) in enumerate(in_blocks):
                key = (bi.key, bo.key)
                if key not in stored:
                    T, planar = self._whitening(bi, bo, r, solver)
                    if T.shape[0] == 0:
                        stored[key] = -1
                        continue
                    vals = self._steerable(bi, bo, nb["position"], r, solver)  # (b, o, i, ...)
                    vals = torch.einsum("ab,b...->a...", T, vals)
                    vals = vals * nb["mask"].to(_F64)
                    rho_t = bi.element(_rotations(nb["transport"]))  # (H, G, n, d_in, d_in)
                    vals = torch.einsum("aoihgn,hgnik->aokhgn", vals, rho_t)
                    stored[key] = len(stored)
                    self.register_buffer(f"basis_{stored[key]}", vals.to(dtype), persistent=False)
                    self.register_buffer(
                        f"planar_{stored[key]}",
                        torch.einsum("ab,b...->a...", T, planar).to(dtype),
                        persistent=False,
                    )
                if stored[key] < 0:
                    continue
                rk = getattr(self, f"basis_{stored[key]}").shape[0]
                size = rk * m_out * m_in
                self._pairs.append((j, i, stored[key], n_w))
                init.append((n_w, size, math.sqrt(bo.dim * bi.dim / (rk * self.rep_in.dim))))
                n_w += size
        self.weight = nn.Parameter(torch.empty(n_w, dtype=dtype))
        with torch.no_grad():
            for off, size, std in init:
                self.weight[off : off + size].normal_(0.0, std, generator=generator)
        register_invariant_bias(self, out_blocks, solver, 1, dtype, bias)

    # ------------------------------------------------------------------ kernel construction
    def _rings(self, dist: Tensor, r: int) -> Tensor:
        """(r + 1, ...) ring profiles at distances ``dist``; ring 0 is the centre bump."""
        radii = torch.arange(r + 1, dtype=_F64).view(-1, *([1] * dist.ndim))
        return torch.exp(-((dist - radii) ** 2) / (2 * self.ring_width**2))

    def _steerable(self, bi, bo, position: Tensor, r: int, solver: EquivariantSolver) -> Tensor:
        """Raw basis (b, d_out, d_in, *position.shape[:-1]) at tangent positions (..., 2)."""
        d_o, d_i = bo.dim, bi.dim
        dist = position.norm(dim=-1)
        alpha = torch.atan2(position[..., 1], position[..., 0])
        rings = self._rings(dist, r)
        W = solver.basis(bi.generators, bo.generators)  # (n_eq, d_out, d_in) equivariant maps
        parts = [rings[0][None, None, None] * W.reshape(*W.shape, *([1] * dist.ndim))]
        if r >= 1:
            rot = _rotations(alpha)
            ro, ri = bo.element(rot), bi.element(_rotations(-alpha))  # (..., d, d)
            units = torch.eye(d_o * d_i, dtype=_F64).reshape(-1, d_o, d_i)
            ang = torch.einsum("...ab,ubc,...cd->u...ad", ro, units, ri)  # (u, ..., d_o, d_i)
            ang = ang.movedim(-2, 1).movedim(-1, 2)  # (u, d_o, d_i, ...)
            centre = (dist > 0).to(_F64)  # the angle is undefined at v = 0: rings vanish there
            for j in range(1, r + 1):
                parts.append(rings[j] * centre * ang)
        return torch.cat(parts, dim=0)

    def _whitening(self, bi, bo, r: int, solver) -> tuple[Tensor, Tensor]:
        """Coefficient map T (b', b) making the basis orthonormal on the planar (2r+1)^2 grid
        inside the disc, and the planar basis (b, d_out, d_in, s, s) itself."""
        offs = torch.arange(-r, r + 1, dtype=_F64)
        yy, xx = torch.meshgrid(-offs, offs, indexing="ij")
        pos = torch.stack([xx, yy], -1)  # (s, s, 2): x = column - r, y = r - row
        planar = self._steerable(bi, bo, pos, r, solver)
        planar = planar * (pos.norm(dim=-1) <= r + 0.5).to(_F64)
        flat = planar.reshape(planar.shape[0], -1)
        U, S, _ = torch.linalg.svd(flat, full_matrices=False)
        keep = S > 1e-8 * S.max() if S.numel() else S.bool()
        T = (U[:, keep] / S[keep]).T  # rows of T @ flat are orthonormal
        return T, planar

    # ------------------------------------------------------------------ forward
    @property
    def n_free_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _assemble(self, prefix: str, tail: int) -> Tensor:
        ref = self.weight
        blocks = {}
        for j, i, b, off in self._pairs:
            Q = getattr(self, f"{prefix}_{b}")
            (m_out, d_out), (m_in, d_in) = self._out_shapes[j], self._in_shapes[i]
            rk = Q.shape[0]
            w = ref[off : off + rk * m_out * m_in].view(rk, m_out, m_in)
            blk = torch.einsum("rab,rcd...->acbd...", w, Q)
            blocks[(j, i)] = blk.reshape(m_out * d_out, m_in * d_in, *Q.shape[3:])
        tail_shape = next(iter(blocks.values())).shape[2:] if blocks else (0,) * tail
        rows = []
        for j, (m_out, d_out) in enumerate(self._out_shapes):
            cols = [
                blocks.get((j, i), ref.new_zeros(m_out * d_out, m_in * d_in, *tail_shape))
                for i, (m_in, d_in) in enumerate(self._in_shapes)
            ]
            rows.append(torch.cat(cols, dim=1))
        return torch.cat(rows, dim=0)

    def kernel(self) -> Tensor:
        """Per-pixel kernel (C_out, C_in, H, G, n) with transports folded in (G = 1 or W)."""
        return self._assemble("basis", 3)

    def planar_kernel(self) -> Tensor:
        """The same continuous kernel sampled at integer offsets, for ``F.conv2d``:
        (C_out, C_in, s, s), ``[..., a, b]`` at ``x = b - r`` (east), ``y = r - a`` (north)."""
        return self._assemble("planar", 2)

    def bias_vector(self) -> Tensor | None:
        return invariant_bias_vector(self)

    def forward(self, x: Tensor) -> Tensor:
        H, W = self.shape
        if x.ndim != 4 or x.shape[1] != self.rep_in.dim or tuple(x.shape[-2:]) != (H, W):
            raise ValueError(
                f"input must be (B, {self.rep_in.dim}, {H}, {W}) for in_rep = {self.rep_in}, "
                f"got {tuple(x.shape)}"
            )
        B, C = x.shape[:2]
        n = self.n_neighbours
        K = self.kernel()  # (O, C, H, G, n)
        if K.shape[3] == 1:
            # kernels depend on the row only: one grouped F.conv2d with a group per output
            # row, whose input is that row's 2r+1 source rows (read from the copy rolled by
            # W / 2 across a pole), padded circularly in longitude
            s, c = self.kernel_size, self._half_width
            both = torch.cat([x, x.roll(-(W // 2), dims=-1)], dim=2)  # (B, C, 2H, W)
            src = both.index_select(2, self.row_sources)  # (B, C, H * s, W)
            if c > 0:
                src = torch.cat([src[..., W - c :], src, src[..., :c]], dim=-1)
            src = src.view(B, C, H, s, W + 2 * c).transpose(1, 2).reshape(B, H * C, s, -1)
            O = K.shape[0]
            weight = K[:, :, :, 0].reshape(O, C, H, s, 2 * c + 1).permute(2, 0, 1, 3, 4)
            out = F.conv2d(src, weight.reshape(H * O, C, s, 2 * c + 1), groups=H)
            out = out.view(B, H, O, W).transpose(1, 2)
        else:
            xg = x.reshape(B, C, H * W).index_select(2, self.index).view(B, C, H, W, n)
            out = torch.einsum("bchwn,ochwn->bohw", xg, K)
        b = self.bias_vector()
        if b is not None:
            out = out + b.view(1, -1, 1, 1)
        return out.contiguous()

    def extra_repr(self) -> str:
        return (
            f"{self.rep_in} -> {self.rep_out}, kernel_size={self.kernel_size}, "
            f"shape={self.shape}, neighbours={self.n_neighbours}, "
            f"n_free_parameters={self.n_free_parameters}"
        )
