"""Digit sources of the digits-on-the-sphere task: MNIST's IDX files and digit pools.

IDX files (:func:`read_idx_header`, :func:`read_idx`, :func:`find_mnist_files`)
    MNIST's format, read by our own reader: a big-endian int32 header (magic 2051 for images and
    2049 for labels), optionally gzip-compressed. Only the digits a data set uses are read
    (``numpy.memmap`` for plain files; gzip streams are read up to the last digit needed).

Digit pools (:class:`ArrayDigits`, :class:`MnistDigits`, :func:`load_sklearn_digits`)
    A pool holds digits and returns the requested ones at a box size
    (``pool.get(indices) -> (images (m, S, S), labels (m,))``), resized by
    :func:`resize_digits`; :class:`MnistDigits` reads them lazily from IDX files. See
    :mod:`atlasd.datasets.sphere_digits` for how the task uses them.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from atlasd.checks import check_int

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "MNIST_FILE_NAMES",
    "ArrayDigits",
    "IdxHeader",
    "MnistDigits",
    "find_mnist_files",
    "load_sklearn_digits",
    "read_idx",
    "read_idx_header",
    "resize_digits",
]

#: IDX magic numbers (big-endian int32): unsigned bytes (0x08), 3 dims for images, 1 for labels.
IDX_IMAGES_MAGIC: int = 2051
IDX_LABELS_MAGIC: int = 2049
#: MNIST's (images, labels) file names of each split.
MNIST_FILE_NAMES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# --------------------------------------------------------------------------------------------
# IDX files (MNIST's format)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdxHeader:
    """Header of an IDX file: ``magic``, ``dims`` (count first), byte ``offset`` of the data and
    whether the file is gzip-compressed."""

    path: Path
    magic: int
    dims: tuple[int, ...]
    offset: int
    compressed: bool

    @property
    def count(self) -> int:
        """Number of items (the first dimension)."""
        return self.dims[0]

    @property
    def item_shape(self) -> tuple[int, ...]:
        return self.dims[1:]

    @property
    def item_bytes(self) -> int:
        return math.prod(self.item_shape)


_IDX_KINDS = {IDX_IMAGES_MAGIC: "images (unsigned bytes, 3 dims)", IDX_LABELS_MAGIC: "labels"}


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def read_idx_header(path: str | Path, expected_magic: int) -> IdxHeader:
    """Read and check the header of an IDX file (plain or gzip-compressed).

    Layout: a big-endian int32 magic number ``0x0000TTNN`` (``TT`` the element type, ``0x08`` for
    unsigned bytes; ``NN`` the number of dimensions), then ``NN`` big-endian int32 sizes, then the
    data in C order.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: bad magic number (naming the one found and the one expected), a header that
            is cut short, a zero size, or (plain files) a data size that differs from the header's
            (a truncated file or trailing bytes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    kind = _IDX_KINDS.get(expected_magic, f"magic {expected_magic}")
    compressed = _is_gzip(path)
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                raise ValueError(
                    f"{path} is not an IDX file: only {len(head)} bytes, the magic number alone "
                    "takes 4"
                )
            magic = int.from_bytes(head, "big")
            if magic != expected_magic:
                raise ValueError(
                    f"{path}: bad magic number {magic} (0x{magic:08x}); expected {expected_magic} "
                    f"(0x{expected_magic:08x}, IDX {kind})"
                )
            ndim = magic & 0xFF
            raw = f.read(4 * ndim)
    except (EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}: corrupt gzip stream in the IDX header ({err})") from err
    if len(raw) < 4 * ndim:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} sizes announced, {len(raw)} of {4 * ndim} "
            "bytes present"
        )
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">i4"))
    if any(d < 1 for d in dims):
        raise ValueError(f"{path}: IDX sizes must be positive, got {dims}")
    header = IdxHeader(path, magic, dims, 4 + 4 * ndim, compressed)
    if not compressed:
        size = path.stat().st_size
        expected = header.offset + header.count * header.item_bytes
        if size < expected:
            have = (size - header.offset) // max(header.item_bytes, 1)
            raise ValueError(
                f"{path}: truncated IDX file: the header announces {header.count} items of "
                f"shape {header.item_shape} ({expected} bytes in all) but the file has {size} "
                f"bytes ({have} complete items)"
            )
        if size > expected:
            raise ValueError(
                f"{path}: {size - expected} bytes beyond the {header.count} items the header "
                "announces; not a valid IDX file"
            )
    return header


def _as_indices(indices: Any, count: int, what: str) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"{what} indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= count):
        raise ValueError(f"{what} indices must lie in 0..{count - 1}, got {idx.min()}..{idx.max()}")
    return idx


def read_idx(
    path: str | Path,
    indices: Sequence[int] | np.ndarray | Tensor | None = None,
    *,
    expected_magic: int,
) -> np.ndarray:
    """Items of an IDX file of unsigned bytes, reading only what is asked for.

    Args:
        path: plain or gzip-compressed IDX file.
        indices: 1-D item indices (any order, repeats allowed); None reads every item.
        expected_magic: :data:`IDX_IMAGES_MAGIC` or :data:`IDX_LABELS_MAGIC`.

    Returns:
        ``uint8`` array ``(len(indices), *item_shape)``, a copy (the file is not kept open).

    Plain files are memory-mapped, so only the pages holding the requested items are read. Gzip
    streams cannot seek backwards cheaply: they are decompressed sequentially up to the last item
    needed and no further.

    Raises:
        FileNotFoundError, ValueError: see :func:`read_idx_header`; indices out of range; a gzip
        stream that ends before the items it announces.
    """
    header = read_idx_header(path, expected_magic)
    if isinstance(indices, Tensor):
        indices = indices.cpu().numpy()
    idx = (
        np.arange(header.count, dtype=np.int64)
        if indices is None
        else _as_indices(indices, header.count, str(header.path))
    )
    if not header.compressed:
        data = np.memmap(
            header.path, dtype=np.uint8, mode="r", offset=header.offset, shape=header.dims
        )
        out = np.array(data[idx])
        del data  # release the mapping now rather than at garbage collection
        return out
    last = int(idx.max()) + 1 if idx.size else 0
    nbytes = last * header.item_bytes
    try:
        with gzip.open(header.path, "rb") as f:
            f.seek(header.offset)
            buf = f.read(nbytes)
    except (EOFError, gzip.BadGzipFile) as err:
        raise ValueError(
            f"{header.path}: truncated or corrupt gzip stream while reading {last} items ({err})"
        ) from err
    if len(buf) < nbytes:
        raise ValueError(
            f"{header.path}: truncated IDX file: needed {last} items ({nbytes} bytes of data) "
            f"but the stream ends after {len(buf)} bytes"
        )
    arr = np.frombuffer(buf, dtype=np.uint8).reshape(last, *header.item_shape)
    return arr[idx].copy()


def find_mnist_files(folder: str | Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files of ``split`` ("train" or "test", i.e. ``t10k``) in
    ``folder``, accepting ``.gz`` and the ``train-images.idx3-ubyte`` spelling; None when the
    split's files are absent. Raises FileNotFoundError when only one of the pair exists."""
    folder = Path(folder)
    found = []
    for name in MNIST_FILE_NAMES[split]:
        stem, _, tail = name.rpartition("-idx")
        spellings = (name, f"{stem}.idx{tail}")
        candidates = [folder / (s + ext) for s in spellings for ext in ("", ".gz")]
        found.append(next((c for c in candidates if c.is_file()), None))
    if found[0] is None and found[1] is None:
        return None
    if found[0] is None or found[1] is None:
        missing = MNIST_FILE_NAMES[split][0 if found[0] is None else 1]
        raise FileNotFoundError(
            f"MNIST folder {folder} has only half of the {split} pair: {missing}[.gz] is missing"
        )
    return found[0], found[1]


# --------------------------------------------------------------------------------------------
# Digit pools
# --------------------------------------------------------------------------------------------


def resize_digits(images: Tensor, size: int, content: int | None = None) -> Tensor:
    """Resize digit images ``(M, h, w)`` to ``content x content`` (bilinear, antialiased when
    shrinking) and pad them with zeros to a centred ``size x size`` box; ``content=None`` resizes
    the whole image to the box. Returns float32 ``(M, size, size)`` clamped to [0, 1]."""
    size = check_int("digit_size", size, 4)
    content = size if content is None else check_int("content", content, 1)
    if content > size:
        raise ValueError(f"content ({content}) must be <= size ({size})")
    if images.ndim != 3:
        raise ValueError(f"digit images must be (M, h, w), got shape {tuple(images.shape)}")
    imgs = images.float()
    if tuple(imgs.shape[-2:]) != (content, content) and imgs.shape[0] > 0:
        imgs = F.interpolate(
            imgs[:, None],
            size=(content, content),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[:, 0]
    lo = (size - content) // 2
    hi = size - content - lo
    return F.pad(imgs, (lo, hi, lo, hi)).clamp_(0.0, 1.0)


def _check_digit_arrays(images: Any, labels: Any) -> tuple[Tensor, Tensor]:
    images = torch.as_tensor(images)
    labels = torch.as_tensor(labels)
    if images.ndim != 3 or images.shape[-1] != images.shape[-2] or images.shape[0] < 1:
        raise ValueError(
            f"digit images must be a non-empty (M, h, h) array of square images, got shape "
            f"{tuple(images.shape)}"
        )
    if labels.shape != (images.shape[0],):
        raise ValueError(
            f"digit labels must be (M,) with M = {images.shape[0]} (one per image), got shape "
            f"{tuple(labels.shape)}"
        )
    if images.is_floating_point():
        bad = ~torch.isfinite(images)
        if bool(bad.any()):
            first = tuple(torch.nonzero(bad)[0].tolist())
            raise ValueError(
                f"digit images contain {int(bad.sum())} NaN/Inf values (first at index {first})"
            )
        if float(images.min()) < 0.0 or float(images.max()) > 1.0:
            raise ValueError(
                f"float digit images must lie in [0, 1], got values in "
                f"{float(images.min()):.3g}..{float(images.max()):.3g}"
            )
    elif images.dtype != torch.uint8:
        raise ValueError(f"digit images must be float in [0, 1] or uint8, got {images.dtype}")
    else:
        images = images.float() / 255.0
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"digit labels must be integers, got {labels.dtype}")
    labels = labels.long()
    if int(labels.min()) < 0 or int(labels.max()) > 9:
        raise ValueError(
            f"digit labels must lie in 0..9, got {int(labels.min())}..{int(labels.max())}"
        )
    return images.float(), labels


class ArrayDigits:
    """A pool of digits held in memory.

    Args:
        images: ``(M, h, h)`` float in [0, 1] or uint8 (0..255); validated (NaN/Inf, range).
        labels: ``(M,)`` integers 0..9.
        size: box size the digits are returned at.
        content: side the image is resized to inside the box (None: the whole box).
    """

    def __init__(self, images: Any, labels: Any, size: int, content: int | None = None) -> None:
        self._images, self._labels = _check_digit_arrays(images, labels)
        self.size = check_int("digit_size", size, 4)
        self.content = content

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def get(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Digits ``indices`` (1-D long): images float32 ``(m, size, size)``, labels ``(m,)``."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return resize_digits(self._images[idx], self.size, self.content), self._labels[idx]

    def subset(self, start: int, stop: int) -> ArrayDigits:
        """Digits ``start:stop`` as a new pool (shares memory)."""
        out = ArrayDigits.__new__(ArrayDigits)
        out._images, out._labels = self._images[start:stop], self._labels[start:stop]
        out.size, out.content = self.size, self.content
        if len(out) < 1:
            raise ValueError(f"digit pool slice {start}:{stop} is empty")
        return out


class MnistDigits:
    """A pool of MNIST digits read lazily from an (images, labels) pair of IDX files.

    Only the headers are read at construction (and checked: magic numbers, sizes, the two counts);
    :meth:`get` reads just the requested digits. ``start``/``stop`` restrict the pool to items
    ``start:stop`` of the files.
    """

    def __init__(
        self,
        images_path: str | Path,
        labels_path: str | Path,
        size: int = 28,
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        self.images_header = read_idx_header(images_path, IDX_IMAGES_MAGIC)
        self.labels_header = read_idx_header(labels_path, IDX_LABELS_MAGIC)
        n_img, n_lab = self.images_header.count, self.labels_header.count
        if n_img != n_lab:
            raise ValueError(
                f"MNIST count mismatch: {self.images_header.path} holds {n_img} images but "
                f"{self.labels_header.path} holds {n_lab} labels"
            )
        h, w = self.images_header.item_shape
        if h != w:
            raise ValueError(f"{self.images_header.path}: images must be square, got {h}x{w}")
        self.size = check_int("digit_size", size, 4)
        stop = n_img if stop is None else stop
        if not 0 <= start < stop <= n_img:
            raise ValueError(f"MNIST pool slice {start}:{stop} is empty or exceeds {n_img} items")
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def subset(self, start: int, stop: int) -> MnistDigits:
        """Items ``start:stop`` of this pool as a new pool (nothing is read)."""
        out = MnistDigits.__new__(MnistDigits)
        out.__dict__.update(self.__dict__)
        out.start, out.stop = self.start + start, self.start + stop
        if not self.start <= out.start < out.stop <= self.stop:
            raise ValueError(f"MNIST pool slice {start}:{stop} is empty or out of range")
        return out

    def get(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Digits ``indices`` (1-D, into this pool): images float32 ``(m, size, size)`` in
        [0, 1], labels long ``(m,)``; raises ValueError for labels outside 0..9."""
        idx = torch.as_tensor(indices, dtype=torch.long).numpy() + self.start
        images = read_idx(self.images_header.path, idx, expected_magic=IDX_IMAGES_MAGIC)
        labels = read_idx(self.labels_header.path, idx, expected_magic=IDX_LABELS_MAGIC)
        labels_t = torch.from_numpy(labels.astype(np.int64))
        if labels_t.numel() and int(labels_t.max()) > 9:
            raise ValueError(
                f"{self.labels_header.path}: digit labels must lie in 0..9, found "
                f"{int(labels_t.max())}"
            )
        images_t = torch.from_numpy(images).float() / 255.0
        return resize_digits(images_t, self.size), labels_t


def load_sklearn_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled handwritten digits: images float32 ``(1797, 8, 8)`` in [0, 1]
    (the 0..16 scans divided by 16) and labels int64 ``(1797,)``."""
    from sklearn.datasets import load_digits  # lazy: only this source needs scikit-learn

    data = load_digits()
    images = torch.from_numpy(np.asarray(data.images, dtype=np.float32) / 16.0)
    labels = torch.from_numpy(np.asarray(data.target, dtype=np.int64))
    return images, labels
