"""Handwritten digits on the sphere: AtlasD's "MNIST on the sphere" segmentation task.

The task (Bhat et al., "AtlasD: Automatic Local Symmetry Discovery", ICML 2025): every sample is a
sphere, stored as an equirectangular latitude-longitude grid, with three handwritten digits along
the equator, each rotated by its own random angle.  The target is a per-pixel class map (the digit's
class on its strokes, background elsewhere).  Rotating one digit rotates its labels with it, so
the map ``image -> labels`` is equivariant to rotations of each digit's neighbourhood on its own:
a *local* so(2) symmetry, one rotation per chart.  The data *distribution* is not invariant under
a *global* rotation of the whole picture (that would move the digits off the equator, where none
ever are), which is why a global, distribution-based method such as LieGAN finds nothing here.

Conventions (all tested)
    Grid
        ``(H, W)`` equirectangular grid as in :mod:`atlasd.atlas`: row ``i`` at latitude
        ``90 - (i + 1/2) 180 / H`` degrees, column ``j`` at longitude ``(j + 1/2) 360 / W``.
        With an odd ``H`` (the default 37) row ``(H - 1) / 2`` lies exactly on the equator.
    Digit locations (:func:`digit_centers`)
        Three pixels on the row ``(H - 1) // 2``, at columns ``floor((2k + 1) W / 6)``,
        ``k = 0, 1, 2``: longitudes near 60, 180 and 300 degrees, 120 degrees apart.  Each digit is
        centred exactly on its pixel, and the charts of the atlas are centred on the same pixels.
    Cylinder projection
        Each digit is drawn on the cylinder that touches the sphere along the equator, with radius
        ``R = W / (2 pi)`` pixels (one cylinder pixel is one longitude pixel), and carried onto the
        sphere horizontally (Lambert's cylindrical equal-area projection, as in AtlasD): the sphere
        point at latitude ``lat`` and longitude offset ``dlon`` from a digit's centre shows the
        cylinder point ``u = R dlon`` (east), ``v = R (sin lat - sin lat0)`` (north), ``lat0`` the
        centre's latitude.  Near the equator this is nearly an isometry; a digit's top and bottom
        are stretched north-south by ``1 / cos lat`` (about 1.1 at the defaults).
    Rotation
        A digit rotated by ``theta`` (degrees, counter-clockwise in the (east, north) plane, 0 =
        upright) shows its upright pixel ``p`` at cylinder point ``Rot(theta) p``.  Angles are drawn
        *uniformly* from ``[center - spread, center + spread)``: "90 +- 60" (training) is the range
        30..150 degrees, "90 +- 180" (test) the full circle.  AtlasD draws integer degrees uniformly
        from the same ranges (via Python's ``hash``, which is salted per process, so its data were
        not reproducible); here a seeded ``torch.Generator`` draws real-valued angles.  The base
        angle of 90 degrees reproduces AtlasD's layout, whose fields were stored transposed
        (longitude first), which shows an upright MNIST digit turned by 90 degrees.  A spread of 0
        gives unrotated digits (all at ``center``), the symmetry-broken variant.
    Labels
        Classes 0..9 are the digits, **10 is the background** (AtlasD's layout; it also makes the
        number of classes 11 in every data set, as ``discover_local`` infers it from ``y.max()``).
        A pixel gets its digit's class when the rendered intensity there is at least
        ``label_threshold`` (default 0.3) and the background class otherwise.
    Class weights
        ``class_weights = [1.0] * 10 + [background_weight]`` (default 0.1, AtlasD's discovery
        setting): most pixels are background, and without down-weighting it a predictor learns
        "everything is background" first.
    Digit sources (:mod:`atlasd.datasets.digit_sources`)
        ``source="sklearn"`` (default): scikit-learn's bundled handwritten digits (1797 real 8x8
        scans, 0..16), scaled to 0..1, resized bilinearly to ``round(5/7 digit_size)`` pixels and
        padded to a ``digit_size`` box (MNIST's 20-in-28 layout).  The first 80 % (file order) are
        the training pool, the rest the test pool, so test digits are unseen scans.
        ``source="mnist"`` with ``mnist_path``: MNIST's IDX files, read by :func:`read_idx` (our own
        reader: big-endian int32 header, magic 2051 for images and 2049 for labels, optionally
        gzip-compressed); images are resized (antialiased) to ``digit_size``.  Only the digits a
        data set uses are read (``numpy.memmap`` for plain files; gzip streams are read up to the
        last digit needed).  A folder uses ``train-*`` for training and ``t10k-*`` for the test
        split when present (else the file-order 80/20 split); a pair ``[images, labels]`` of files
        is one pool, split 80/20.
    Digit choice
        Per sample, three pool indices drawn uniformly with replacement by a ``torch.Generator``
        seeded from ``seed`` (training) or from ``seed`` through ``numpy.random.SeedSequence`` (test
        split, an independent stream, so the test set does not change with ``n``).

Charts (:func:`sphere_digits_atlas`)
    ``charts="local"``: three gnomonic tangent-plane charts (``manifold="sphere"``) centred on the
    digit pixels, radius ``chart_radius`` (default 12: the 25 x 25 patch holds a rotated digit of
    the default size, whose strokes stay within about 9 pixels of its centre, and leaves a margin
    for the predictor's receptive field).  ``charts="global"``: one plane chart covering the whole
    map, for a global rotation of the entire picture (what a global method such as LieGAN
    searches): the map is placed in the middle of a square canvas of side ``W' + 2 m`` (``W' =
    W + 1`` for even ``W``, else ``W``; the extra column repeats longitude 0; ``m =
    canvas_margin``, default 8, the margin a predictor of eight valid 3 x 3 layers loses, so that
    its output still covers every digit); everything off the map is background.  The canvas centre
    is the middle digit.  The data on the map are identical in both modes.

Ground truth (:func:`sphere_digits_ground_truth`)
    so(2), ``[[0, -1], [1, 0]]``, with the identity as the only coset: a mirrored handwritten digit
    is not a digit of the same class (a mirrored 2, 3, 4, 7 or 9 is no digit at all), so
    reflections are not symmetries of the labelling.  Measured with ``configs/sphere_digits.yaml``
    (seeds 0, 1, 2): so(2) similarity 0.994, 0.992, 0.998; the coset search scores reflections at
    0.09-0.10, twice the identity component's far-from-identity loss (0.045-0.06), and rejects
    them (a weaker predictor with a 9-pixel receptive field, which sees strokes but not whole
    digits, did accept a reflection).  The learned generator is so(2) up to a ratio of about 0.87
    between its off-diagonal entries: the cylinder projection and the gnomonic charts stretch a
    digit north-south by a few percent more than east-west.

    Global mode uses the same so(2) as the reference.  With a convolutional predictor the learned
    function is translation-equivariant, and a rotation about the canvas centre is, digit by digit,
    a rotation about the digit's own centre followed by a translation; so global discovery finds
    so(2) as well (measured: similarity 0.999).  The global rotation is no symmetry of the data
    *distribution* (tested with a Sinkhorn divergence), which function-based discovery does not
    look at.

Speed
    Rendering is one batched ``grid_sample`` per block of up to 4096 samples (the block bounds
    memory; there is no per-sample Python loop): the three digits of every sample are sampled on
    fixed windows around their centres, which do not overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from atlasd.checks import check_fraction, check_int, check_number, check_shape
from atlasd.datasets.base import TaskSpec, not_set_up
from atlasd.datasets.digit_sources import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    MNIST_FILE_NAMES,
    ArrayDigits,
    IdxHeader,
    MnistDigits,
    find_mnist_files,
    load_sklearn_digits,
    read_idx,
    read_idx_header,
    resize_digits,
)
from atlasd.datasets.splits import SplitsDataModule

__all__ = [
    "BACKGROUND",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "N_CLASSES",
    "ArrayDigits",
    "IdxHeader",
    "MnistDigits",
    "SphereDigits",
    "SphereDigitsDataModule",
    "digit_centers",
    "find_mnist_files",
    "global_canvas",
    "load_sklearn_digits",
    "read_idx",
    "read_idx_header",
    "render_sphere_digits",
    "resize_digits",
    "sample_sphere_digits",
    "sphere_digits_atlas",
    "sphere_digits_class_weights",
    "sphere_digits_ground_truth",
]

#: Class index of the background (classes 0..9 are the digits).
BACKGROUND: int = 10
#: Number of classes: ten digits and the background.
N_CLASSES: int = 11
#: Digits per sample, placed along the equator.
N_SLOTS: int = 3

_TRAIN_FRACTION = 0.8  # file-order split of one digit pool into training and test digits
_CONTENT_FRACTION = 5.0 / 7.0  # MNIST: 20 x 20 digit in a 28 x 28 box
_CHUNK = 4096  # samples rendered per grid_sample call (bounds memory at about 100 MiB)


# --------------------------------------------------------------------------------------------
# Small validators
# --------------------------------------------------------------------------------------------


def _check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    # check_number with finiteness: an infinite or NaN angle or threshold is never meant
    value = check_number(name, value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return check_number(name, value, lo, hi)


def _check_shape(shape: Any) -> tuple[int, int]:
    return check_shape(shape, 3, 6, ("height (H)", "width (W)"))


def _split(pool: Any) -> tuple[Any, Any]:
    """File-order 80/20 split of one pool into training and test digits."""
    n_train = round(_TRAIN_FRACTION * len(pool))
    if n_train < 1 or n_train >= len(pool):
        raise ValueError(f"a digit pool of {len(pool)} digits is too small to split 80/20")
    return pool.subset(0, n_train), pool.subset(n_train, len(pool))


# --------------------------------------------------------------------------------------------
# Geometry and rendering
# --------------------------------------------------------------------------------------------


def digit_centers(shape: Sequence[int]) -> list[tuple[int, int]]:
    """The three digit (and chart) centres ``(row, col)`` on an ``(H, W)`` grid: row
    ``(H - 1) // 2`` (the equator for odd H), columns ``floor((2k + 1) W / 6)``."""
    h, w = _check_shape(shape)
    row = (h - 1) // 2
    return [(row, ((2 * k + 1) * w) // 6) for k in range(N_SLOTS)]


@dataclass(frozen=True)
class _Windows:
    row0: int  # first grid row of the band around the equator that can show a digit
    row1: int  # one past its last row
    starts: tuple[int, ...]  # first grid column of each slot's window (mod W)
    wb: int  # window width in columns
    u: Tensor  # (hb, wb) east cylinder coordinate of the window pixels, in pixels
    v: Tensor  # (hb, wb) north cylinder coordinate


def _windows(shape: tuple[int, int], size: int) -> _Windows:
    """Pixels that can show a digit of box ``size``: columns within the box's half-diagonal (+1
    for bilinear support) of each centre, rows whose cylinder height is within it."""
    h, w = shape
    centers = digit_centers(shape)
    row_c = centers[0][0]
    reach = (size - 1) / 2 * math.sqrt(2.0) + 1.0
    half = math.ceil(reach)
    spacing = min((centers[(k + 1) % N_SLOTS][1] - centers[k][1]) % w for k in range(N_SLOTS))
    if 2 * half + 1 > spacing:
        raise ValueError(
            f"digits of size {size} overlap on a grid {w} columns wide: each needs "
            f"{2 * half + 1} columns but their centres are {spacing} apart; use width >= "
            f"{3 * (2 * half + 1)} or a smaller digit_size"
        )
    radius = w / (2 * math.pi)  # cylinder radius in pixels: one cylinder pixel per column
    lat = math.pi / 2 - (torch.arange(h, dtype=torch.float64) + 0.5) * (math.pi / h)
    lat0 = math.pi / 2 - (row_c + 0.5) * (math.pi / h)
    v_rows = radius * (torch.sin(lat) - math.sin(lat0))
    # sin is monotone in latitude, so the rows within reach form one contiguous band
    rows = torch.nonzero(v_rows.abs() <= reach).flatten()
    row0, row1 = int(rows[0]), int(rows[-1]) + 1
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    u, v = torch.meshgrid(offsets, v_rows[row0:row1], indexing="xy")
    starts = tuple((c - half) % w for _, c in centers)
    return _Windows(row0, row1, starts, offsets.numel(), u.float(), v.float())


def render_sphere_digits(
    images: Tensor,
    labels: Tensor,
    angles: Tensor,
    shape: Sequence[int],
    *,
    label_threshold: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """Draw three rotated digits per sample on the cylinder and project them onto the sphere.

    Args:
        images: ``(N, 3, S, S)`` float digit boxes in [0, 1] (slot k at :func:`digit_centers`
            ``[k]``); row 0 is the top of the upright digit.
        labels: ``(N, 3)`` integer classes 0..9.
        angles: ``(N, 3)`` rotation angles in degrees, counter-clockwise in (east, north).
        shape: grid ``(H, W)``.
        label_threshold: intensity at or above which a pixel takes its digit's class.

    Returns:
        ``x`` float32 ``(N, 1, H, W)`` in [0, 1] and ``y`` int64 ``(N, H, W)`` (0..9 on strokes,
        :data:`BACKGROUND` elsewhere). See the module docstring for the geometry.

    Raises:
        ValueError: mismatched shapes, NaN/Inf, or a grid too small for the digits.
    """
    h, w = _check_shape(shape)
    if images.ndim != 4 or images.shape[1] != N_SLOTS or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be (N, {N_SLOTS}, S, S), got shape {tuple(images.shape)}")
    n, _, size, _ = images.shape
    if tuple(labels.shape) != (n, N_SLOTS) or tuple(angles.shape) != (n, N_SLOTS):
        raise ValueError(
            f"labels and angles must be ({n}, {N_SLOTS}), got {tuple(labels.shape)} and "
            f"{tuple(angles.shape)}"
        )
    if not images.is_floating_point() or not bool(torch.isfinite(images).all()):
        raise ValueError("images must be floating point without NaN/Inf")
    if not bool(torch.isfinite(angles).all()):
        raise ValueError("angles contain NaN/Inf")
    if labels.is_floating_point() or int(labels.min()) < 0 or int(labels.max()) > 9:
        raise ValueError("labels must be integers in 0..9")
    thr = _check_float("label_threshold", label_threshold, 0.0, 1.0)
    if thr <= 0.0:
        raise ValueError("label_threshold must be > 0 (else every pixel is a digit pixel)")
    win = _windows((h, w), size)
    r0, r1, wb = win.row0, win.row1, win.wb
    hb = r1 - r0
    c = (size - 1) / 2
    x = torch.zeros(n, h, w, dtype=torch.float32)
    # uint8 while drawing (an eighth of the memory traffic of int64), widened once at the end
    y = torch.full((n, h, w), BACKGROUND, dtype=torch.uint8)
    theta = torch.deg2rad(angles.to(torch.float64))
    cos = torch.cos(theta).float()[..., None, None] / c
    sin = torch.sin(theta).float()[..., None, None] / c
    lab8 = labels.to(torch.uint8)[..., None, None]
    for s in range(0, n, _CHUNK):
        e = min(s + _CHUNK, n)
        # Inverse rotation Rot(-theta): digit coordinates a = cos u + sin v, b = -sin u + cos v;
        # grid_sample's normalised (col, row) with align_corners=True are (a / c, -b / c).
        grid = torch.stack(
            [cos[s:e] * win.u + sin[s:e] * win.v, sin[s:e] * win.u - cos[s:e] * win.v], dim=-1
        )  # (b, 3, hb, wb, 2)
        vals = F.grid_sample(
            images[s:e].reshape(-1, 1, size, size).float(),
            grid.view(-1, hb, wb, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        ).view(e - s, N_SLOTS, hb, wb)
        classes = torch.where(vals >= thr, lab8[s:e], BACKGROUND).to(torch.uint8)
        # One slice per slot (the windows never overlap); a window that wraps past longitude
        # 360 is written in two parts.
        for k, start in enumerate(win.starts):
            first = min(wb, w - start)
            x[s:e, r0:r1, start : start + first] = vals[:, k, :, :first]
            y[s:e, r0:r1, start : start + first] = classes[:, k, :, :first]
            if first < wb:
                x[s:e, r0:r1, : wb - first] = vals[:, k, :, first:]
                y[s:e, r0:r1, : wb - first] = classes[:, k, :, first:]
    return x[:, None], y.long()


@dataclass(frozen=True)
class SphereDigits:
    """A generated data set: ``x`` float32 ``(N, 1, H, W)``, ``y`` int64 ``(N, H, W)``, and what
    produced them: ``digit_index`` ``(N, 3)`` pool indices, ``digit_label`` ``(N, 3)`` classes,
    ``angle`` float64 ``(N, 3)`` degrees (slot k = centre k of :func:`digit_centers`)."""

    x: Tensor
    y: Tensor
    digit_index: Tensor
    digit_label: Tensor
    angle: Tensor


def sample_sphere_digits(
    pool: Any,
    n: int,
    *,
    shape: Sequence[int] = (37, 75),
    rotation_center: float = 90.0,
    rotation_spread: float = 60.0,
    label_threshold: float = 0.3,
    generator: torch.Generator | None = None,
) -> SphereDigits:
    """Draw ``n`` samples: three digits from ``pool`` and three angles per sample, then render.

    Args:
        pool: a digit pool (:class:`ArrayDigits`, :class:`MnistDigits`): ``len(pool)`` and
            ``pool.get(indices) -> (images (m, S, S), labels (m,))``.
        n: number of samples.
        shape: grid ``(H, W)``.
        rotation_center, rotation_spread: angles uniform in ``[center - spread, center +
            spread)`` degrees.
        label_threshold: see :func:`render_sphere_digits`.
        generator: seeds the digit choice (first) and the angles (second).

    Only the distinct digits drawn are fetched from the pool (one ``get`` call).
    """
    n = check_int("n", n, 1)
    center = _check_float("rotation_center", rotation_center)
    spread = _check_float("rotation_spread", rotation_spread, 0.0)
    if len(pool) < 1:
        raise ValueError("the digit pool is empty")
    index = torch.randint(len(pool), (n, N_SLOTS), generator=generator)
    u = torch.rand(n, N_SLOTS, generator=generator, dtype=torch.float64)
    angle = center + spread * (2.0 * u - 1.0)
    unique, inverse = torch.unique(index, return_inverse=True)
    images, labels = pool.get(unique)
    x, y = render_sphere_digits(
        images[inverse], labels[inverse], angle, shape, label_threshold=label_threshold
    )
    return SphereDigits(x=x, y=y, digit_index=index, digit_label=labels[inverse], angle=angle)


def _canvas_side(w: int, margin: int) -> int:
    return (w + 1 if w % 2 == 0 else w) + 2 * margin


def global_canvas(
    x: Tensor, y: Tensor | None = None, margin: int = 0
) -> tuple[Tensor, Tensor | None]:
    """Place maps ``x (N, C, H, W)`` (and labels ``y (N, H, W)``) on a square canvas for the
    global chart.

    The canvas has side ``S = W' + 2 margin`` with ``W' = W + 1`` for even W (the extra column
    repeats column 0: longitude wraps) and ``W' = W`` for odd W. The map's centre pixel (the
    middle digit) lands on the canvas centre ``((S - 1) / 2, (S - 1) / 2)``; everything off the
    map is 0 in ``x`` and :data:`BACKGROUND` in ``y``. Returns ``(x_canvas, y_canvas or None)``.
    """
    n, c, h, w = x.shape
    margin = check_int("canvas_margin", margin, 0)
    side = _canvas_side(w, margin)
    if side < h:
        raise ValueError(f"a {h}x{w} map does not fit a {side}x{side} canvas (need H <= W)")
    top = (side - 1) // 2 - (h - 1) // 2
    left = margin
    wrap = side - 2 * margin - w
    xc = x.new_zeros(n, c, side, side)
    xc[..., top : top + h, left : left + w] = x
    xc[..., top : top + h, left + w : left + w + wrap] = x[..., :wrap]
    if y is None:
        return xc, None
    yc = torch.full((n, side, side), BACKGROUND, dtype=y.dtype)
    yc[:, top : top + h, left : left + w] = y
    yc[:, top : top + h, left + w : left + w + wrap] = y[..., :wrap]
    return xc, yc


def sphere_digits_atlas(
    shape: Sequence[int], chart_radius: int = 12, charts: str = "local", canvas_margin: int = 8
):
    """The task's atlas on an ``(H, W)`` map.

    ``"local"``: three gnomonic charts (``manifold="sphere"``) of radius ``chart_radius`` centred
    on :func:`digit_centers`. ``"global"``: one plane chart covering the whole square canvas of
    :func:`global_canvas` with ``margin=canvas_margin`` (``chart_radius`` is ignored: the radius
    is ``(S - 1) / 2``).
    """
    from atlasd.atlas import Atlas  # lazy: core, only needed when an atlas is asked for

    h, w = _check_shape(shape)
    if charts == "local":
        radius = check_int("chart_radius", chart_radius, 1)
        return Atlas.grid(
            shape=(h, w), centers=digit_centers((h, w)), radius=radius, manifold="sphere"
        )
    if charts == "global":
        side = _canvas_side(w, check_int("canvas_margin", canvas_margin, 0))
        r = (side - 1) // 2
        return Atlas.grid(shape=(side, side), centers=[(r, r)], radius=r, manifold="plane")
    raise ValueError(f"charts must be 'local' or 'global', got {charts!r}")


def sphere_digits_ground_truth() -> dict[str, Tensor]:
    """so(2) ``[[0, -1], [1, 0]]`` and the identity as the only coset (mirrored digits are not
    digits). ``{"algebra": (1, 2, 2), "cosets": (1, 2, 2)}``, float64, fresh tensors."""
    return {
        "algebra": torch.tensor([[[0.0, -1.0], [1.0, 0.0]]], dtype=torch.float64),
        "cosets": torch.eye(2, dtype=torch.float64)[None].clone(),
    }


def sphere_digits_class_weights(background_weight: float = 0.1) -> list[float]:
    """Cross-entropy class weights: 1 for each digit, ``background_weight`` for the background."""
    bg = _check_float("background_weight", background_weight, 0.0)
    if bg <= 0.0:
        raise ValueError(f"background_weight must be > 0, got {bg}")
    return [1.0] * 10 + [bg]


# --------------------------------------------------------------------------------------------
# Lightning data module
# --------------------------------------------------------------------------------------------


class SphereDigitsDataModule(SplitsDataModule):
    """Digits on the sphere as a LightningDataModule (see the module docstring).

    Args:
        n: training + validation samples; the last ``round(n * val_fraction)`` are validation.
        n_test: test samples (rotation spread ``test_rotation_spread``, test digit pool).
        height, width: grid ``(H, W)``; default 37 x 75 (pixels of 4.9 x 4.8 degrees, the
            equator on row 18).
        digit_size: box of a digit in cylinder pixels (default 16; MNIST's native size is 28).
        source: ``"sklearn"`` (bundled) or ``"mnist"`` (IDX files at ``mnist_path``: a folder or
            a pair ``[images, labels]``).
        rotation_center, rotation_spread: training (and validation) angles uniform in
            ``center +- spread`` degrees (default 90 +- 60); ``rotation_spread=0``: unrotated.
        test_rotation_spread: the test split's spread (default 180: every angle).
        chart_radius: radius of the local charts (default 12).
        charts: ``"local"`` or ``"global"`` (see :func:`sphere_digits_atlas`).
        canvas_margin: global mode only: background margin around the map on the canvas.
        background_weight: weight of the background class in :attr:`class_weights`.
        label_threshold: intensity at which a pixel is labelled with its digit.
        seed: seeds digit choice and angles (same seed, same data).
        val_fraction, batch_size, num_workers: as in the other data modules.

    Attributes: ``kind = "local"``, ``atlas``, ``ground_truth``, ``class_weights`` (list of 11
    floats), ``centers``; after ``setup()``: ``x`` (N, 1, H, W) float32, ``y`` (N, H, W) int64,
    ``x_test``, ``y_test``, ``train``/``test`` (:class:`SphereDigits` with the angles and
    digits), ``train_dataset``, ``val_dataset``, ``test_dataset``, ``spec`` (the task contract,
    :class:`atlasd.datasets.base.TaskSpec`). In global mode ``x``, ``y``,
    ``x_test`` and ``y_test`` are the canvases of :func:`global_canvas`.
    """

    kind = "local"

    def __init__(
        self,
        n: int = 2000,
        n_test: int = 1000,
        height: int = 37,
        width: int = 75,
        digit_size: int = 16,
        source: str = "sklearn",
        mnist_path: str | Sequence[str] | None = None,
        rotation_center: float = 90.0,
        rotation_spread: float = 60.0,
        test_rotation_spread: float = 180.0,
        chart_radius: int = 12,
        charts: str = "local",
        canvas_margin: int = 8,
        background_weight: float = 0.1,
        label_threshold: float = 0.3,
        seed: int = 0,
        val_fraction: float = 0.1,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.n = check_int("n", n, 1)
        self.n_test = check_int("n_test", n_test, 1)
        self.shape = _check_shape((height, width))
        self.digit_size = check_int("digit_size", digit_size, 4)
        _windows(self.shape, self.digit_size)  # fails early when the digits would overlap
        if source not in ("sklearn", "mnist"):
            raise ValueError(f"source must be 'sklearn' or 'mnist', got {source!r}")
        self.source = source
        self.mnist_path = mnist_path
        self.rotation_center = _check_float("rotation_center", rotation_center)
        self.rotation_spread = _check_float("rotation_spread", rotation_spread, 0.0)
        self.test_rotation_spread = _check_float("test_rotation_spread", test_rotation_spread, 0.0)
        self.charts = charts
        self.chart_radius = check_int("chart_radius", chart_radius, 1)
        self.canvas_margin = check_int("canvas_margin", canvas_margin, 0)
        self.atlas = sphere_digits_atlas(self.shape, self.chart_radius, charts, self.canvas_margin)
        self.centers = digit_centers(self.shape)
        self.class_weights = sphere_digits_class_weights(background_weight)
        self.label_threshold = _check_float("label_threshold", label_threshold, 0.0, 1.0)
        if self.label_threshold <= 0.0:
            raise ValueError("label_threshold must be > 0")
        self.seed = check_int("seed", seed)
        vf = check_fraction("val_fraction", val_fraction)
        self.val_fraction = vf
        self.n_val = 0 if vf == 0.0 else max(1, round(self.n * vf))
        if self.n_val >= self.n:
            raise ValueError(f"n={self.n} with val_fraction={vf} leaves no training samples")
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.ground_truth = sphere_digits_ground_truth()
        # MNIST: read and check the headers now, so a missing or malformed file fails at once
        self._pools = self._make_pools() if source == "mnist" else None
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.x_test: Tensor | None = None
        self.y_test: Tensor | None = None
        self.train: SphereDigits | None = None
        self.test: SphereDigits | None = None
        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None
        self.test_dataset: TensorDataset | None = None

    @property
    def spec(self) -> TaskSpec:
        """The task contract: local so(2), 11-class per-pixel digits (accuracy, skipping the
        background); broken variant: unrotated digits (``rotation_spread=0``)."""
        if self.x is None:
            raise not_set_up(self)
        return TaskSpec(
            name="sphere_digits",
            kind="local",
            inputs="fields",
            d=2,
            in_channels=int(self.x.shape[1]),
            target="classification",
            n_classes=N_CLASSES,
            class_weights=tuple(float(w) for w in self.class_weights),
            metric="accuracy",
            ignore_class=BACKGROUND,
            ground_truth=self.ground_truth,
            atlas=self.atlas,
            broken={"rotation_spread": 0.0},
        )

    # ------------------------------------------------------------------ digit pools
    def _make_pools(self) -> tuple[Any, Any]:
        if self.source == "sklearn":
            images, labels = load_sklearn_digits()
            content = max(1, round(_CONTENT_FRACTION * self.digit_size))
            return _split(ArrayDigits(images, labels, self.digit_size, content))
        path = self.mnist_path
        if path is None:
            raise ValueError("source='mnist' needs mnist_path (a folder or [images, labels])")
        if isinstance(path, (str, Path)):
            folder = Path(path)
            if not folder.is_dir():
                raise FileNotFoundError(f"MNIST folder not found: {folder}")
            train = find_mnist_files(folder, "train")
            test = find_mnist_files(folder, "test")
            if train is None:
                names = ", ".join(f"{m}[.gz]" for m in MNIST_FILE_NAMES["train"])
                raise FileNotFoundError(f"MNIST folder {folder} lacks {names}")
            pool = MnistDigits(*train, size=self.digit_size)
            if test is None:
                return _split(pool)
            return pool, MnistDigits(*test, size=self.digit_size)
        try:
            images_path, labels_path = path
        except (TypeError, ValueError):
            raise ValueError(
                f"mnist_path must be a folder or a pair [images, labels], got {path!r}"
            ) from None
        return _split(MnistDigits(images_path, labels_path, size=self.digit_size))

    def _generators(self) -> tuple[torch.Generator, torch.Generator]:
        # Two independent streams from one seed; the test stream does not depend on n.
        test_seed = int(np.random.SeedSequence([self.seed, 1]).generate_state(1, np.uint64)[0])
        return (
            torch.Generator().manual_seed(self.seed),
            torch.Generator().manual_seed(test_seed % (2**63)),
        )

    # ------------------------------------------------------------------ setup and loaders
    def setup(self, stage: str | None = None) -> None:
        if self.x is not None:
            return
        pools = self._pools if self._pools is not None else self._make_pools()
        train_gen, test_gen = self._generators()
        common = {"shape": self.shape, "label_threshold": self.label_threshold}
        self.train = sample_sphere_digits(
            pools[0],
            self.n,
            rotation_center=self.rotation_center,
            rotation_spread=self.rotation_spread,
            generator=train_gen,
            **common,
        )
        self.test = sample_sphere_digits(
            pools[1],
            self.n_test,
            rotation_center=self.rotation_center,
            rotation_spread=self.test_rotation_spread,
            generator=test_gen,
            **common,
        )
        x, y = self.train.x, self.train.y
        x_test, y_test = self.test.x, self.test.y
        if self.charts == "global":
            x, y = global_canvas(x, y, self.canvas_margin)
            x_test, y_test = global_canvas(x_test, y_test, self.canvas_margin)
        n_train = self.n - self.n_val
        self.x, self.y, self.x_test, self.y_test = x, y, x_test, y_test
        self.train_dataset = TensorDataset(x[:n_train], y[:n_train])
        self.val_dataset = TensorDataset(x[n_train:], y[n_train:])
        self.test_dataset = TensorDataset(x_test, y_test)
