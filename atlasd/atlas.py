"""Charts, atlases and the action of 2x2 matrices on local patches.

Conventions (docs/conventions.md; tested, never implicit):

* A :class:`Chart` of radius ``r`` is a ``(2r+1) x (2r+1)`` patch centred exactly on the pixel
  ``(row, col)`` of a field. Patch pixel ``(i, j)`` (row, column inside the patch) has local
  coordinates ``x = j - r`` (to the right) and ``y = r - i`` (upward). Generator matrices are
  written in these ``(x, y)`` coordinates.
* Plane atlases copy pixels exactly (integer gather).
* Sphere atlases read fields on an equirectangular latitude-longitude grid of shape ``(H, W)``:
  row ``i`` is at latitude ``90 - (i + 1/2) * 180 / H`` degrees (row 0 next to the north pole) and
  column ``j`` at longitude ``(j + 1/2) * 360 / W`` degrees (east-positive, wrapping at 360).
  A chart centred on pixel ``(row, col)`` is the gnomonic (tangent-plane) projection at that
  pixel centre, with ``x`` pointing east, ``y`` north and a spacing of ``pi / H`` radians of
  tangent-plane distance per patch pixel (the grid's latitude spacing). Values are sampled
  bilinearly; longitude wraps around and latitude is clamped at the poles.
* The action of ``g`` on a patch ``f`` is ``(g . f)(p) = rho(g) f(g^-1 p)``: bilinear resampling,
  the centre pixel is a fixed point, and ``g . (h . f) = (gh) . f`` up to interpolation error.
  Outside the patch the field is taken to be zero unless another padding mode is asked for.
* The action on vectors is ``x -> g x`` on the last axis.

Everything here is pure torch and vectorised over batch and charts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from atlasd.checks import check_int

__all__ = [
    "Atlas",
    "Chart",
    "act",
    "act_vectors",
    "crop",
    "local_coordinates",
]

Manifold = Literal["plane", "sphere"]
_MANIFOLDS = ("plane", "sphere")
_PADDING_MODES = ("zeros", "border", "reflection")


def _as_shape(shape: Any) -> tuple[int, int]:
    """Validate a field shape ``(H, W)``."""
    try:
        items = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be a pair (H, W), got {shape!r}") from None
    if len(items) != 2:
        raise ValueError(f"shape must be a pair (H, W), got {shape!r}")
    h = check_int("shape[0] (H)", items[0])
    w = check_int("shape[1] (W)", items[1])
    if h < 1 or w < 1:
        raise ValueError(f"shape must be positive, got {(h, w)}")
    return h, w


@dataclass(frozen=True)
class Chart:
    """A square chart of radius ``radius`` centred exactly on pixel ``center = (row, col)``.

    The chart covers rows ``row - radius .. row + radius`` and columns
    ``col - radius .. col + radius`` (on the sphere: the tangent-plane patch at that pixel).
    Local coordinates of patch pixel ``(i, j)`` are ``x = j - radius``, ``y = radius - i``.

    Raises:
        ValueError: if the centre is not a pair of non-negative integers or ``radius < 1``.
    """

    center: tuple[int, int]
    radius: int

    def __post_init__(self) -> None:
        try:
            items = tuple(self.center)
        except TypeError:
            raise ValueError(
                f"chart center must be a pair (row, col), got {self.center!r}"
            ) from None
        if len(items) != 2:
            raise ValueError(f"chart center must be a pair (row, col), got {self.center!r}")
        row = check_int("chart center row", items[0])
        col = check_int("chart center column", items[1])
        radius = check_int("chart radius", self.radius)
        if row < 0 or col < 0:
            raise ValueError(f"chart center {(row, col)} must be non-negative (row, col)")
        if radius < 1:
            raise ValueError(f"chart radius must be >= 1, got {radius} (center {(row, col)})")
        # Normalise to plain ints so equality, hashing and JSON export are predictable.
        object.__setattr__(self, "center", (row, col))
        object.__setattr__(self, "radius", radius)

    @property
    def size(self) -> int:
        """Side length ``2 * radius + 1`` of the patch."""
        return 2 * self.radius + 1


class Atlas:
    """A set of charts of one common radius on a plane or a sphere.

    Args:
        charts: non-empty sequence of :class:`Chart`, all with the same radius (the patches of
            all charts are stacked into one tensor).
        manifold: ``"plane"`` (patches are exact pixel copies) or ``"sphere"`` (fields are
            equirectangular lat-lon grids, patches are gnomonic tangent-plane projections; see
            the module docstring for the grid convention).
        shape: optional field shape ``(H, W)``. When given, every chart is checked against it now;
            otherwise charts are checked against each field's ``H, W`` in :meth:`extract`.

    Raises:
        ValueError: empty atlas, mixed radii, unknown manifold, or a chart that does not fit
            ``shape`` (the message names the chart's index and centre).
    """

    def __init__(
        self,
        charts: Sequence[Chart],
        manifold: Manifold = "plane",
        shape: tuple[int, int] | None = None,
    ) -> None:
        if manifold not in _MANIFOLDS:
            raise ValueError(f"manifold must be one of {_MANIFOLDS}, got {manifold!r}")
        charts = tuple(charts)
        if not charts:
            raise ValueError("an atlas needs at least one chart")
        for k, chart in enumerate(charts):
            if not isinstance(chart, Chart):
                raise TypeError(f"chart {k} is a {type(chart).__name__}, expected atlasd.Chart")
        radii = sorted({c.radius for c in charts})
        if len(radii) > 1:
            groups = "; ".join(
                f"radius {r}: "
                + ", ".join(
                    f"chart {k} at {c.center}" for k, c in enumerate(charts) if c.radius == r
                )
                for r in radii
            )
            raise ValueError(
                "all charts of an atlas must share one radius (their patches are stacked), "
                f"got {groups}"
            )
        self._charts: tuple[Chart, ...] = charts
        self._manifold: Manifold = manifold
        self._shape: tuple[int, int] | None = None if shape is None else _as_shape(shape)
        # Index / sampling grids per (H, W, device[, dtype]); rebuilt lazily, never shared.
        self._cache: dict[tuple, Tensor] = {}
        if self._shape is not None:
            self.check_shape(self._shape)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def grid(
        cls,
        shape: tuple[int, int],
        centers: Iterable[Sequence[int]] | Tensor,
        radius: int,
        manifold: Manifold = "plane",
    ) -> Atlas:
        """Atlas of charts of one ``radius`` at ``centers`` (pairs ``(row, col)``) on a field of
        ``shape = (H, W)``; charts are validated against ``shape`` immediately."""
        if isinstance(centers, Tensor):
            centers = centers.tolist()
        charts = [Chart(center=c, radius=radius) for c in centers]
        return cls(charts, manifold=manifold, shape=shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description: ``{"manifold", "radius", "centers", "shape"}``."""
        return {
            "manifold": self._manifold,
            "radius": self.radius,
            "centers": [list(c.center) for c in self._charts],
            "shape": None if self._shape is None else list(self._shape),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Atlas:
        """Inverse of :meth:`to_dict`; raises ValueError naming what is malformed."""
        if not isinstance(d, Mapping):
            raise ValueError(f"atlas description must be a mapping, got {type(d).__name__}")
        required = {"manifold", "radius", "centers"}
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"atlas description is missing key(s) {missing}")
        unknown = sorted(set(d) - required - {"shape"})
        if unknown:
            raise ValueError(f"atlas description has unknown key(s) {unknown}")
        centers = d["centers"]
        if not isinstance(centers, Sequence) or isinstance(centers, str):
            raise ValueError(f"atlas 'centers' must be a list of [row, col], got {centers!r}")
        charts = [Chart(center=c, radius=d["radius"]) for c in centers]
        return cls(charts, manifold=d["manifold"], shape=d.get("shape"))

    # ------------------------------------------------------------------ properties
    @property
    def charts(self) -> tuple[Chart, ...]:
        return self._charts

    @property
    def manifold(self) -> Manifold:
        return self._manifold

    @property
    def shape(self) -> tuple[int, int] | None:
        """Field shape ``(H, W)`` fixed at construction, or None."""
        return self._shape

    @property
    def radius(self) -> int:
        return self._charts[0].radius

    @property
    def patch_size(self) -> int:
        """``2 * radius + 1``."""
        return 2 * self.radius + 1

    @property
    def n_charts(self) -> int:
        return len(self._charts)

    @property
    def centers(self) -> Tensor:
        """Chart centres as a ``(K, 2)`` long tensor of ``(row, col)``."""
        return torch.tensor([c.center for c in self._charts], dtype=torch.long).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self._charts)

    def __iter__(self) -> Iterator[Chart]:
        return iter(self._charts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Atlas):
            return NotImplemented
        return (self._charts, self._manifold, self._shape) == (
            other._charts,
            other._manifold,
            other._shape,
        )

    def __hash__(self) -> int:
        return hash((self._charts, self._manifold, self._shape))

    def __repr__(self) -> str:
        return (
            f"Atlas(n_charts={self.n_charts}, radius={self.radius}, "
            f"manifold={self._manifold!r}, shape={self._shape})"
        )

    # ------------------------------------------------------------------ validation
    def check_shape(self, shape: tuple[int, int]) -> None:
        """Raise ValueError (naming the chart) if some chart does not fit a field of ``shape``.

        Plane: the whole patch must lie inside the field. Sphere: the centre must be a pixel of
        the grid and the tangent-plane half-width ``radius * 180 / H`` degrees must be < 90
        (longitude wraps, so crossing the date line is fine).
        """
        h, w = _as_shape(shape)
        r = self.radius
        for k, c in enumerate(self._charts):
            row, col = c.center
            if self._manifold == "plane":
                if row - r < 0 or row + r > h - 1 or col - r < 0 or col + r > w - 1:
                    raise ValueError(
                        f"chart {k} (center {c.center}, radius {r}) leaves the {h}x{w} field: "
                        f"it spans rows {row - r}..{row + r} and columns {col - r}..{col + r}, "
                        f"which must lie in 0..{h - 1} and 0..{w - 1}"
                    )
            else:
                if row > h - 1 or col > w - 1:
                    raise ValueError(
                        f"chart {k} (center {c.center}, radius {r}) is outside the {h}x{w} "
                        f"lat-lon grid (rows 0..{h - 1}, columns 0..{w - 1})"
                    )
                half_width = r * 180.0 / h
                if half_width >= 90.0:
                    raise ValueError(
                        f"chart {k} (center {c.center}, radius {r}) is too wide for a {h}x{w} "
                        f"sphere grid: half-width {half_width:.1f} degrees must be < 90 "
                        f"(need 2 * radius < H)"
                    )

    # ------------------------------------------------------------------ extraction
    def extract(self, fields: Tensor) -> Tensor:
        """Cut every chart's patch out of every field.

        Args:
            fields: ``(B, C, H, W)`` tensor. Plane: any dtype; sphere: floating point,
                equirectangular lat-lon grid (see module docstring).

        Returns:
            ``(B, K, C, 2r+1, 2r+1)`` contiguous tensor; ``[b, k, c, i, j]`` is the value at
            local coordinates ``x = j - r``, ``y = r - i`` of chart ``k``. Differentiable
            w.r.t. ``fields``.

        Raises:
            ValueError: not a 4-D tensor, NaN/Inf values, or a chart that leaves the field.
        """
        if not isinstance(fields, Tensor):
            raise ValueError(f"fields must be a torch.Tensor, got {type(fields).__name__}")
        if fields.ndim != 4:
            raise ValueError(
                f"fields must be 4-D (B, C, H, W), got shape {tuple(fields.shape)} "
                f"({fields.ndim}-D)"
            )
        _check_finite(fields, "fields")
        h, w = fields.shape[-2:]
        if self._shape is not None and (h, w) != self._shape:
            raise ValueError(f"fields are {h}x{w} but this atlas was built for {self._shape}")
        if self._manifold == "plane":
            return self._extract_plane(fields)
        return self._extract_sphere(fields)

    def extract_labels(self, labels: Tensor, n_classes: int, block: int = 256) -> Tensor:
        """Cut every chart's patch out of integer class maps.

        Args:
            labels: ``(B, H, W)`` integer class indices in ``0..n_classes-1``.
            n_classes: number of classes.
            block: fields per block on the sphere (bounds the one-hot memory).

        Returns:
            ``(B, K, 2r+1, 2r+1)`` int64 labels. On the plane charts copy pixels, so labels are
            exact. Sphere charts interpolate, which would blend neighbouring class indices into
            unrelated classes (between 3 and 10: 6.5), so one-hot maps are sampled instead and
            each chart pixel keeps the class of largest weight.

        Raises:
            ValueError: not a 3-D integer tensor, or labels outside ``0..n_classes-1``.
        """
        if not isinstance(labels, Tensor) or labels.ndim != 3 or labels.is_floating_point():
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"labels must be an integer tensor (B, H, W), got {shape}")
        n_classes = check_int("n_classes", n_classes)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
            raise ValueError(
                f"labels must lie in 0..{n_classes - 1}, "
                f"got {int(labels.min())}..{int(labels.max())}"
            )
        if self._manifold == "plane":
            return self.extract(labels[:, None])[:, :, 0].long()
        return torch.cat(
            [
                self.extract(
                    torch.nn.functional.one_hot(labels[i : i + block].long(), n_classes)
                    .movedim(-1, 1)
                    .float()
                ).argmax(2)
                for i in range(0, labels.shape[0], block)
            ]
        )

    def _extract_plane(self, fields: Tensor) -> Tensor:
        b, c, h, w = fields.shape
        key = ("plane", h, w, fields.device)
        index = self._cache.get(key)
        if index is None:
            self.check_shape((h, w))
            # Cached tensors must be ordinary tensors even when first built under
            # torch.inference_mode, or later autograd use of the cache would fail.
            with torch.inference_mode(False):
                index = self._plane_index(h, w).to(fields.device)
            self._cache[key] = index
        k, s = self.n_charts, self.patch_size
        # One flat gather over H*W: exact copies, no per-chart loop. index_select along the last
        # dim of a 2-D view is several times faster than along dim 2 of a 3-D one.
        patches = fields.reshape(b * c, h * w).index_select(1, index)
        return patches.view(b, c, k, s, s).transpose(1, 2).contiguous()

    def _plane_index(self, h: int, w: int) -> Tensor:
        """Flat ``(K * s * s,)`` indices into ``H * W`` for all charts, row-major per patch."""
        r = self.radius
        offsets = torch.arange(-r, r + 1, dtype=torch.long)
        centers = self.centers
        rows = centers[:, 0, None] + offsets  # (K, s)
        cols = centers[:, 1, None] + offsets  # (K, s)
        return (rows[:, :, None] * w + cols[:, None, :]).reshape(-1)

    def _extract_sphere(self, fields: Tensor) -> Tensor:
        if not fields.is_floating_point():
            raise ValueError(
                f"sphere extraction interpolates, so fields must be floating point, "
                f"got {fields.dtype}"
            )
        b, c, h, w = fields.shape
        key = ("sphere", h, w, fields.device, fields.dtype)
        grid = self._cache.get(key)
        if grid is None:
            self.check_shape((h, w))
            with torch.inference_mode(False):  # see _extract_plane
                grid = self._sphere_grid(h, w).to(device=fields.device, dtype=fields.dtype)
            self._cache[key] = grid
        k, s = self.n_charts, self.patch_size
        # One column of circular padding on each side makes bilinear sampling wrap in longitude;
        # latitude uses border padding (values are clamped at the polar rows).
        padded = torch.cat([fields[..., -1:], fields, fields[..., :1]], dim=-1)
        out = F.grid_sample(
            padded,
            grid.expand(b, -1, -1, -1),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )  # (B, C, K * s, s)
        return out.view(b, c, k, s, s).transpose(1, 2).contiguous()

    def _sphere_grid(self, h: int, w: int) -> Tensor:
        """grid_sample grid ``(1, K * s, s, 2)`` (float64) into the column-padded field."""
        r, s = self.radius, self.patch_size
        centers = self.centers.to(torch.float64)
        lat0 = math.pi / 2 - (centers[:, 0] + 0.5) * (math.pi / h)  # (K,)
        lon0 = (centers[:, 1] + 0.5) * (2 * math.pi / w)
        zero = torch.zeros_like(lat0)
        # Orthonormal frame at each tangent point: outward normal, east, north.
        normal = torch.stack([lat0.cos() * lon0.cos(), lat0.cos() * lon0.sin(), lat0.sin()], dim=-1)
        east = torch.stack([-lon0.sin(), lon0.cos(), zero], dim=-1)
        north = torch.stack(
            [-lat0.sin() * lon0.cos(), -lat0.sin() * lon0.sin(), lat0.cos()], dim=-1
        )
        xy = local_coordinates(r, dtype=torch.float64) * (math.pi / h)  # (s, s, 2)
        # Inverse gnomonic projection: the tangent-plane point n + X e + Y n' seen from the
        # sphere's centre; atan2 makes normalising to the unit sphere unnecessary.
        pts = (
            normal[:, None, None, :]
            + xy[None, :, :, 0, None] * east[:, None, None, :]
            + xy[None, :, :, 1, None] * north[:, None, None, :]
        )  # (K, s, s, 3)
        lat = torch.atan2(pts[..., 2], torch.hypot(pts[..., 0], pts[..., 1]))
        lon = torch.atan2(pts[..., 1], pts[..., 0])
        row = (math.pi / 2 - lat) / (math.pi / h) - 0.5  # in [-1/2, H - 1/2]
        col = torch.remainder(lon / (2 * math.pi / w) - 0.5, w)  # in [0, W]
        # +1: one padding column sits left of column 0 (width W + 2 after padding).
        u = 2 * (col + 1) / (w + 1) - 1
        v = 2 * row / (h - 1) - 1
        return torch.stack([u, v], dim=-1).reshape(1, self.n_charts * s, s, 2)


# ---------------------------------------------------------------------- helpers


def _check_finite(t: Tensor, name: str) -> None:
    if not (t.is_floating_point() or t.is_complex()):
        return
    # A sum is NaN/Inf whenever an element is, and costs far less than an elementwise mask;
    # only on a non-finite sum (which overflow can also cause) look closer.
    if bool(torch.isfinite(t.sum())):
        return
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(t.numel() - finite.sum()) - n_nan
        raise ValueError(f"{name} contain non-finite values: {n_nan} NaN and {n_inf} Inf")


def local_coordinates(
    radius: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Local chart coordinates of a ``(2r+1) x (2r+1)`` patch.

    Returns:
        ``(2r+1, 2r+1, 2)`` tensor; ``[i, j] = (x, y) = (j - r, r - i)``.
    """
    r = check_int("radius", radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {r}")
    offsets = torch.arange(-r, r + 1, dtype=dtype, device=device)
    y, x = torch.meshgrid(-offsets, offsets, indexing="ij")
    return torch.stack([x, y], dim=-1)


def crop(patches: Tensor, out_radius: int) -> Tensor:
    """Central crop of square odd patches ``(..., h, w)`` to ``(..., 2o+1, 2o+1)``, ``o =
    out_radius``. Returns a view; the centre pixel stays the centre pixel."""
    if patches.ndim < 2:
        raise ValueError(f"patches must have at least 2 dims (..., h, w), got {patches.ndim}")
    h, w = patches.shape[-2:]
    if h != w or h % 2 == 0:
        raise ValueError(f"patches must be square with odd side, got {h}x{w}")
    o = check_int("out_radius", out_radius)
    r = (h - 1) // 2
    if o < 0 or o > r:
        raise ValueError(f"out_radius must be in 0..{r} (the patch radius), got {o}")
    return patches[..., r - o : r + o + 1, r - o : r + o + 1]


def _batch_shape(t: Tensor, target: tuple[int, int], name: str, core: str) -> None:
    """Check that ``t``'s leading dims broadcast to ``target`` without growing it.

    A plain-Python check: torch.broadcast_shapes costs tens of microseconds per call here.
    """
    lead = tuple(t.shape[:-2])
    ok = len(lead) <= len(target) and all(
        n in (1, m) for n, m in zip(reversed(lead), reversed(target), strict=False)
    )
    if not ok:
        raise ValueError(
            f"{name} of shape {tuple(t.shape)} does not broadcast to {target + tuple(t.shape[-2:])}"
            f" (expected {name} shaped {core}, (K, ...), (B, K, ...) or (B, 1, ...))"
        )


def _inverse_2x2(g: Tensor) -> Tensor:
    """Differentiable float64 inverse of ``(..., 2, 2)`` matrices; rejects singular ones.

    Closed form (adjugate / det) in float64 so that near-rotations stay accurate in float32
    patches; one host sync for all checks.
    """
    g64 = g.to(torch.float64)
    det = g64[..., 0, 0] * g64[..., 1, 1] - g64[..., 0, 1] * g64[..., 1, 0]
    scale = g64.detach().abs().amax(dim=(-2, -1))
    # Written as "not (ok)" so that NaN and Inf entries land in `bad` as well.
    bad = ~(det.detach().abs() > 1e-12 * scale.square())
    if bool(bad.any()):
        if not bool(torch.isfinite(g64).all()):
            raise ValueError("g contains NaN or Inf")
        idx = tuple(torch.nonzero(bad)[0].tolist()) if bad.ndim else ()
        raise ValueError(
            f"g is singular: det g = {float(det.detach()[idx]):.3g} at batch index {idx}; "
            "the action needs invertible matrices"
        )
    # adj [[a, b], [c, d]] = [[d, -b], [-c, a]] = (flip both axes, transpose) * signs
    sign = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64, device=g.device)
    return g64.flip((-2, -1)).mT * sign / det[..., None, None]


def _lattice_operator(radius: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(4, s * s * 2)`` matrix L with ``(m.reshape(G, 4) @ L).view(G, s, s, 2)[n, i, j] =
    m[n] @ (x_ij, y_ij)``.

    Written as one GEMM with the batch on the rows, the grid comes out contiguous in
    grid_sample's layout; a batched (s*s, 2) @ (2, 2) matmul is several times slower on CPU.
    Rebuilt per call (tens of microseconds) rather than cached, so that no module-level state
    exists and a tensor made under ``torch.inference_mode`` never leaks into autograd.
    """
    xy = local_coordinates(radius, dtype=dtype, device=device).reshape(-1, 2)  # (P, 2)
    eye = torch.eye(2, dtype=dtype, device=device)
    # L[(i, j), (p, i')] = xy[p, j] * [i == i']
    return (eye[:, None, None, :] * xy.T[None, :, :, None]).reshape(4, -1)


def act(
    g: Tensor,
    patches: Tensor,
    rep: Tensor | None = None,
    padding_mode: str = "zeros",
) -> Tensor:
    """Act with 2x2 matrices on patches: ``(g . f)(p) = rep f(g^-1 p)``.

    Args:
        g: ``(..., 2, 2)`` matrices in local ``(x, y)`` chart coordinates, broadcastable to
            ``(B, K, 2, 2)``: ``(2, 2)``, ``(K, 2, 2)``, ``(B, K, 2, 2)`` or ``(B, 1, 2, 2)``.
            Must be invertible (inverted in float64).
        patches: ``(B, K, C, h, w)`` floating tensor with ``h == w = 2r + 1``.
        rep: None (identity on channels) or ``(..., C, C)`` broadcastable to ``(B, K, C, C)``,
            applied after resampling: ``out[c] = sum_c' rep[c, c'] f[c'](g^-1 p)``.
        padding_mode: what ``f`` is outside the patch: ``"zeros"``, ``"border"`` or
            ``"reflection"`` (as in :func:`torch.nn.functional.grid_sample`).

    Returns:
        ``(B, K, C, h, w)`` tensor, differentiable w.r.t. ``g``, ``patches`` and ``rep``.

    The resampling is one bilinear ``grid_sample`` over all ``B * K`` patches with
    ``align_corners=True``: pixel centres have integer local coordinates, so the centre pixel is
    exactly fixed and rotations by multiples of 90 degrees are exact pixel permutations.
    """
    if not isinstance(patches, Tensor) or patches.ndim != 5:
        shape = tuple(patches.shape) if isinstance(patches, Tensor) else type(patches).__name__
        raise ValueError(f"patches must be a 5-D tensor (B, K, C, h, w), got {shape}")
    if not patches.is_floating_point():
        raise ValueError(f"patches must be floating point, got {patches.dtype}")
    bsz, k, c, h, w = patches.shape
    if h != w or h % 2 == 0:
        raise ValueError(f"patches must be square with an odd side (2r+1), got {h}x{w}")
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    if not isinstance(g, Tensor):
        raise ValueError(f"g must be a torch.Tensor of shape (..., 2, 2), got {type(g).__name__}")
    if g.ndim < 2 or tuple(g.shape[-2:]) != (2, 2):
        raise ValueError(f"g must have shape (..., 2, 2), got {tuple(g.shape)}")
    _batch_shape(g, (bsz, k), "g", "(2, 2)")
    if rep is not None:
        if not isinstance(rep, Tensor) or rep.ndim < 2 or tuple(rep.shape[-2:]) != (c, c):
            shape = tuple(rep.shape) if isinstance(rep, Tensor) else type(rep).__name__
            raise ValueError(f"rep must have shape (..., C, C) with C = {c}, got {shape}")
        _batch_shape(rep, (bsz, k), "rep", f"({c}, {c})")

    r = (h - 1) // 2
    ginv = _inverse_2x2(g)
    # Fold the map to grid_sample's normalised coordinates (u, v) = (x'/r, -y'/r) into the
    # matrix, so the whole sampling grid is one GEMM against the integer (x, y) lattice.
    to_uv = torch.tensor([[1.0 / r], [-1.0 / r]], dtype=torch.float64, device=ginv.device)
    m = (to_uv * ginv).to(patches.dtype)  # (*lead, 2, 2)
    lead = tuple(m.shape[:-2])
    grid = torch.mm(m.reshape(-1, 4), _lattice_operator(r, patches.dtype, patches.device))
    grid = grid.view(-1, h, w, 2)  # (G, h, w, 2), G = prod(lead)
    if grid.shape[0] != bsz * k:
        # Few distinct g (e.g. one (2, 2) for all patches): broadcast the grids, which stays a
        # stride-0 view when g has no batch dims.
        grid = grid.view((1,) * (2 - len(lead)) + lead + (h, w, 2))
        grid = grid.expand(bsz, k, h, w, 2).reshape(bsz * k, h, w, 2)
    out = F.grid_sample(
        patches.reshape(bsz * k, c, h, w),
        grid,
        mode="bilinear",
        padding_mode=padding_mode,
        align_corners=True,
    ).view(bsz, k, c, h, w)
    if rep is not None:
        out = torch.matmul(rep.to(out.dtype), out.reshape(bsz, k, c, h * w)).view(bsz, k, c, h, w)
    return out


def act_vectors(g: Tensor, x: Tensor) -> Tensor:
    """Linear action on the last axis: ``x -> g x``.

    Args:
        g: ``(d, d)`` (one matrix for all inputs) or ``(B, d, d)`` (one per sample).
        x: ``(..., d)``; with batched ``g``, ``(B, ..., d)``.

    Returns:
        Tensor shaped like ``x`` (dtype promoted), differentiable w.r.t. ``g`` and ``x``.
    """
    if not isinstance(g, Tensor) or not isinstance(x, Tensor):
        raise ValueError("g and x must be torch tensors")
    if x.ndim < 1:
        raise ValueError("x must have at least one dim (..., d)")
    d = x.shape[-1]
    if g.ndim not in (2, 3) or tuple(g.shape[-2:]) != (d, d):
        raise ValueError(
            f"g must be (d, d) or (B, d, d) with d = {d} (x's last axis), got {tuple(g.shape)}"
        )
    dtype = torch.promote_types(g.dtype, x.dtype)
    g, x = g.to(dtype), x.to(dtype)
    if g.ndim == 2:
        return torch.matmul(x, g.mT)
    if x.ndim < 2 or x.shape[0] != g.shape[0]:
        raise ValueError(
            f"batched g {tuple(g.shape)} needs x shaped (B, ..., d) with B = {g.shape[0]}, "
            f"got {tuple(x.shape)}"
        )
    flat = x.reshape(x.shape[0], -1, d)
    return torch.bmm(flat, g.mT).reshape(x.shape)
