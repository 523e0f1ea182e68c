"""The group file format ``atlasd.group/1``: read, checked, described and drawn without torch.

One place holds the checks of a group's parts (shapes, finiteness, the identity first), the
reading of a file, its text summary and its plot. :class:`atlasd.group.DiscoveredGroup` builds
on these; ``atlasd show`` uses them directly, so that printing and plotting a saved group never
pays for importing torch (about 1.5 s on a 2-core CPU). docs/group_format.md describes the
format; ``atlasd/schemas/group.schema.json`` (shipped with the package, :func:`group_schema`) is
its JSON Schema.

Conventions: matrices are float64 numpy arrays ``(n, d, d)``; generators act on R^d in the
chart's (x, y) coordinates (x right, y up) for planar groups.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atlasd.io import write_atomic

__all__ = [
    "FORMAT",
    "GroupParts",
    "check_matrices",
    "check_parts",
    "expm",
    "group_schema",
    "header",
    "parts_from_document",
    "plot_generators",
    "read_document",
    "summary_text",
]

FORMAT = "atlasd.group/1"


def check_matrices(x: Any, name: str, ndim: int = 3) -> np.ndarray:
    """``x`` as float64 matrices ``(n, d, d)`` (``ndim=3``; a single ``(d, d)`` is promoted) or
    one ``(d, d)`` matrix (``ndim=2``). ValueError naming ``name`` for anything else."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().double().numpy()
    try:
        a = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not a numeric array: {exc}") from None
    if ndim == 3 and a.ndim == 2:
        a = a[None]
    if a.ndim != ndim or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} must have shape (n, d, d), got {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf entries")
    return a


@dataclass(frozen=True)
class GroupParts:
    """The checked parts of a group (float64 numpy arrays)."""

    algebra: np.ndarray  # (k, d, d)
    cosets: np.ndarray  # (m, d, d), the identity first
    in_rep: np.ndarray | None  # (k, c, c)
    out_rep: np.ndarray | None
    metadata: dict[str, Any]


def check_parts(
    algebra: Any,
    cosets: Any = None,
    in_rep: Any = None,
    out_rep: Any = None,
    metadata: Mapping[str, Any] | None = None,
) -> GroupParts:
    """Check a group's parts: shapes, finiteness, representations with one generator per
    algebra generator, cosets on the same R^d with the identity first, JSON metadata.

    Returns the parts as float64 arrays (``cosets=None`` becomes the identity alone). An algebra
    of shape ``(0, d, d)`` is a valid answer (no continuous symmetry: the group is its cosets);
    it has no representations, so empty ones become None.
    """
    alg = check_matrices(algebra, "algebra")
    k, d = alg.shape[0], alg.shape[-1]
    reps = []
    for name, rep in (("in_rep", in_rep), ("out_rep", out_rep)):
        if k == 0 and rep is not None and len(rep) == 0:
            rep = None
        r = None if rep is None else check_matrices(rep, name)
        if r is not None and r.shape[0] != k:
            raise ValueError(f"{name} has {r.shape[0]} generators but the algebra has {k}")
        reps.append(r)
    eye = np.eye(d)
    cs = eye[None] if cosets is None else check_matrices(cosets, "cosets")
    if cs.shape[-1] != d:
        raise ValueError(f"cosets act on R^{cs.shape[-1]} but the algebra acts on R^{d}")
    if cs.shape[0] < 1 or not np.allclose(cs[0], eye, atol=1e-9):
        raise ValueError("cosets must list the identity first")
    meta = dict(metadata or {})
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata is not JSON-serialisable: {exc}") from None
    return GroupParts(alg, cs, reps[0], reps[1], meta)


def group_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the ``atlasd.group/1`` format, as a dict.

    The schema states the document's structure; :func:`parts_from_document` checks what a schema
    cannot say (shapes that agree, the standard form, the identity first).
    """
    from importlib.resources import files

    return json.loads(files("atlasd").joinpath("schemas/group.schema.json").read_text("utf-8"))


def read_document(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON document of a group file. ValueError (prefixed with the path) for a file that is
    not UTF-8, not JSON, or holds NaN / Infinity."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file ({exc})") from None

    def reject_constant(name: str) -> None:
        raise ValueError(f"{name} is not a finite number")

    try:
        return json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def parts_from_document(doc: Any) -> GroupParts:
    """Check an ``atlasd.group/1`` document (format, entries, counts, standard form) and return
    its parts. ValueError naming what is wrong."""
    if not isinstance(doc, dict):
        raise ValueError(f"group document must be a JSON object, got {type(doc).__name__}")
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise ValueError(f"unsupported group format {fmt!r}; expected {FORMAT!r}")
    for key in ("algebra", "cosets"):
        if key not in doc:
            raise ValueError(f"group document has no {key!r} entry")
    algebra = doc["algebra"]
    if isinstance(algebra, list) and not algebra:  # k = 0: the size of R^d is in "d"
        d = doc.get("d")
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"an empty algebra needs 'd', a positive integer; got {d!r}")
        algebra = np.zeros((0, d, d))
    algebra = check_matrices(algebra, "algebra")
    for key, actual in (("dim", algebra.shape[0]), ("d", algebra.shape[-1])):
        if key in doc and doc[key] != actual:
            raise ValueError(f"{key!r} says {doc[key]} but the algebra has {key} = {actual}")
    Q = algebra.reshape(algebra.shape[0], algebra.shape[-1] ** 2)
    if Q.shape[0] and not np.allclose(Q @ Q.T, np.eye(Q.shape[0]), atol=1e-8):
        raise ValueError("algebra is not in standard form (orthonormal generators)")
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError("metadata must be a JSON object")
    parts = check_parts(algebra, doc["cosets"], doc.get("in_rep"), doc.get("out_rep"), metadata)
    if "n_components" in doc and doc["n_components"] != parts.cosets.shape[0]:
        raise ValueError(
            f"'n_components' says {doc['n_components']} but {parts.cosets.shape[0]} cosets "
            "are listed"
        )
    return parts


def header(parts: GroupParts) -> str:
    """The one-line description of a group, e.g. ``DiscoveredGroup(dim=1, d=2, n_components=2)``."""
    reps = [n for n, r in (("in", parts.in_rep), ("out", parts.out_rep)) if r is not None]
    return (
        f"DiscoveredGroup(dim={parts.algebra.shape[0]}, d={parts.algebra.shape[-1]}, "
        f"n_components={parts.cosets.shape[0]}" + (f", reps={'+'.join(reps)}" if reps else "") + ")"
    )


def summary_text(
    header: str,
    readable: np.ndarray,
    cosets: np.ndarray,
    metadata: Mapping[str, Any],
    closure_residual: float | None,
) -> str:
    """A readable multi-line description of a group.

    Args:
        header: the first line (the group's repr).
        readable: ``(k, d, d)`` generators in readable (sparse) form.
        cosets: ``(m, d, d)`` component representatives, the identity first.
        metadata: the group's metadata (dataset, seed and similarity are shown).
        closure_residual: how far the span is from a Lie algebra; None when unknown.
    """

    def fmt(M: np.ndarray) -> list[str]:
        return ["  [" + ", ".join(f"{v:+.3f}" for v in row) + "]" for row in M.tolist()]

    lines = [header]
    for key in ("dataset", "seed", "similarity_to_truth"):
        if key in metadata:
            lines.append(f"{key}: {metadata[key]}")
    if closure_residual is not None:
        lines.append(f"closure residual (0 for a Lie algebra): {closure_residual:.2e}")
    for i, M in enumerate(readable):
        lines.append(f"generator {i} (readable form):")
        lines += fmt(M)
    for i, H in enumerate(cosets):
        lines.append(f"component {i} representative (det {float(np.linalg.det(H)):+.3f}):")
        lines += fmt(H)
    return "\n".join(lines)


def expm(A: np.ndarray) -> np.ndarray:
    """Matrix exponential of small matrices ``(..., d, d)``: scaling and squaring of a Taylor
    series (exact to float64 rounding for the norms drawn here; no scipy import)."""
    norm = float(np.abs(A).sum(axis=-1).max(initial=0.0))
    s = max(0, math.ceil(math.log2(norm / 0.25))) if norm > 0.25 else 0
    B = A / 2.0**s
    E = np.broadcast_to(np.eye(A.shape[-1]), A.shape).copy()
    term = E.copy()
    for n in range(1, 18):  # |B| <= 1/4: the 18th term is below 1e-22
        term = term @ B / n
        E = E + term
    for _ in range(s):
        E = E @ E
    return E


def plot_generators(
    readable: np.ndarray,
    path: str | os.PathLike,
    n_orbits: int = 6,
    cosets: np.ndarray | None = None,
) -> Path:
    """Save a figure of generators ``(k, d, d)`` (readable form): a heatmap of each and, for 2x2
    generators, the vector field ``L p`` with orbits ``exp(tL) p0``. With no generators (k = 0,
    no continuous symmetry) the component representatives ``cosets (m, d, d)`` are drawn
    instead. Headless (Agg canvas, no pyplot state); written atomically. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    gens = np.asarray(readable, dtype=np.float64)
    titles = [f"generator {i}" for i in range(gens.shape[0])]
    if gens.shape[0] == 0:
        if cosets is None:
            raise ValueError("a group with no generators is drawn by its cosets; pass cosets")
        gens = np.asarray(cosets, dtype=np.float64)
        titles = [f"component {i} (no continuous symmetry)" for i in range(gens.shape[0])]
    k, d = gens.shape[0], gens.shape[-1]
    planar = d == 2 and len(readable) > 0
    n_rows = 2 if planar else 1
    fig = Figure(figsize=(3.6 * k + 0.8, 3.4 * n_rows), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, k, squeeze=False)
    vmax = max(float(abs(gens).max()), 1e-12)
    for i in range(k):
        ax = axes[0, i]
        im = ax.imshow(gens[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(titles[i])
        ax.set_xticks(range(d))
        ax.set_yticks(range(d))
        if d <= 6:
            for (r, c), v in enumerate_2d(gens[i]):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.8)
    if planar:
        grid = np.linspace(-1.0, 1.0, 13)
        X, Y = np.meshgrid(grid, grid)
        P = np.stack([X.ravel(), Y.ravel()])
        ts = np.linspace(-3.2, 3.2, 129)
        for i in range(k):
            ax = axes[1, i]
            V = gens[i] @ P
            ax.quiver(P[0], P[1], V[0], V[1], color="0.5", angles="xy")
            flows = expm(ts[:, None, None] * gens[i])  # (T, 2, 2)
            for j in range(n_orbits):
                # starts at several radii and angles, so that distinct orbits show
                angle = 2 * math.pi * j / n_orbits
                radius = 0.25 + 0.6 * j / max(n_orbits - 1, 1)
                orbit = flows @ np.array([radius * math.cos(angle), radius * math.sin(angle)])
                ax.plot(orbit[:, 0], orbit[:, 1], lw=1.2)
            ax.set_xlim(-1.2, 1.2)
            ax.set_ylim(-1.2, 1.2)
            ax.set_aspect("equal")
            ax.set_xlabel("x (right)")
            ax.set_ylabel("y (up)")
            ax.set_title(f"L{i} p and orbits exp(tL{i}) p0")
    path = Path(path)
    buffer = io.BytesIO()
    # a tight box: the colorbar spans the first row, and constrained layout alone clipped the
    # orbit panel's y label at the left edge
    fig.savefig(
        buffer,
        format=path.suffix.lstrip(".") or "png",
        dpi=110,
        bbox_inches="tight",
        pad_inches=0.1,
    )
    return write_atomic(path, buffer.getvalue())


def enumerate_2d(a: Any):
    """``((row, col), value)`` over a 2-D array, values as floats (for cell annotations)."""
    for r, row in enumerate(a):
        for c, v in enumerate(row):
            yield (r, c), float(v)
