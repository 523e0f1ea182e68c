"""Stage 1 of discovery: predictors and their losses.

* :class:`ChartCNN` holds one small CNN per chart of an atlas, all charts in one vectorised module
  (grouped convolutions, ``groups = n_charts``). It maps patches ``(B, K, C_in, h, w)`` to
  ``(B, K, C_out, h', w')``; chart ``k``'s output depends only on chart ``k``'s input.
* :class:`MLPPredictor` is the predictor for global discovery: inputs ``(B, ..., d)`` on which a
  group acts by ``x -> g x`` on the last axis.
* :func:`prediction_loss` / :func:`prediction_loss_per_chart` are the training losses (L1, MSE,
  cross-entropy with optional class weights), as plain functions.

Everything here is pure tensor math; the Lightning wrapper lives in
:mod:`atlasd.discovery.training`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atlasd.checks import check_int

__all__ = [
    "LOSS_KINDS",
    "ChartCNN",
    "ChartConv2d",
    "MLPPredictor",
    "loss_terms",
    "prediction_loss",
    "prediction_loss_per_chart",
]

Padding = Literal["valid", "same"]
LossKind = Literal["l1", "mse", "cross_entropy"]
LOSS_KINDS: tuple[str, ...] = ("l1", "mse", "cross_entropy")


# --------------------------------------------------------------------------------------- ChartCNN

ConvImpl = Literal["auto", "grouped"]


class ChartConv2d(nn.Conv2d):
    """``Conv2d(K * c_in, K * c_out, groups=K)``: one independent convolution per chart.

    Parameters and ``state_dict`` are exactly those of the grouped ``nn.Conv2d`` (weight
    ``(K * c_out, c_in, ks, ks)``, chart-major). Only the computation differs: oneDNN's grouped
    convolution is slow when a chart has very few input or output channels (the first and last
    layers of a predictor: 1 -> 16 and 16 -> 1), so with ``impl="auto"``

    * ``c_in <= 2``: im2col. The ``ks * ks`` shifted views of the input are stacked,
      ``(B, K, c_in * ks^2, L)``, and multiplied by the ``(K, c_out, c_in * ks^2)`` weights in
      one batched matmul.
    * ``c_out <= 2``: shift-and-add. One batched matmul gives every tap's contribution at every
      input pixel, ``(B, K, c_out * ks^2, H * W)``; the output sums the ``ks^2`` shifted windows.
    * otherwise: the grouped convolution.

    All three compute the same cross-correlation (up to float rounding); ``impl="grouped"``
    forces the grouped convolution (reference for tests and benchmarks).
    """

    def __init__(
        self,
        n_charts: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        impl: ConvImpl = "auto",
    ) -> None:
        super().__init__(
            n_charts * in_channels,
            n_charts * out_channels,
            kernel_size,
            padding=padding,
            groups=n_charts,
        )
        if impl not in ("auto", "grouped"):
            raise ValueError(f"impl must be 'auto' or 'grouped', got {impl!r}")
        self.n_charts = n_charts
        self.c_in = in_channels
        self.c_out = out_channels
        self.impl = impl

    @property
    def path(self) -> str:
        """``"im2col"``, ``"shift_add"`` or ``"grouped"``: how :meth:`forward` computes."""
        if self.impl == "grouped":
            return "grouped"
        if self.c_in <= 2:
            return "im2col"
        if self.c_out <= 2:
            return "shift_add"
        return "grouped"

    def forward(self, x: Tensor) -> Tensor:
        """``(B, K * c_in, H, W) -> (B, K * c_out, H', W')`` (``H' = H + 2 pad - ks + 1``)."""
        path = self.path
        if path == "grouped":
            return super().forward(x)
        pad = self.padding[0]
        if pad:
            x = F.pad(x, (pad, pad, pad, pad))
        k, c_in, c_out, ks = self.n_charts, self.c_in, self.c_out, self.kernel_size[0]
        b, _, h, w = x.shape
        ho, wo = h - ks + 1, w - ks + 1
        taps = [(i, j) for i in range(ks) for j in range(ks)]
        if path == "im2col":
            x5 = x.reshape(b, k, c_in, h, w)
            # (B, K, c_in, ks^2, ho, wo): the row order (c, i, j) matches the weight's layout.
            cols = torch.stack([x5[..., i : i + ho, j : j + wo] for i, j in taps], dim=3)
            out = torch.matmul(
                self.weight.reshape(k, c_out, c_in * ks * ks), cols.view(b, k, c_in * ks * ks, -1)
            )  # (B, K, c_out, ho * wo)
            out = out + self.bias.view(k, c_out, 1)
            return out.view(b, k * c_out, ho, wo)
        # shift_add: z[b, k, o, t, p] = sum_c w[k, o, c, t] x[b, k, c, p]
        w_t = self.weight.reshape(k, c_out, c_in, ks * ks).transpose(2, 3)
        z = torch.matmul(w_t.reshape(k, c_out * ks * ks, c_in), x.reshape(b, k, c_in, h * w))
        z = z.view(b, k, c_out, ks * ks, h, w)
        out = _shift_add(z, ks, ho, wo) + self.bias.view(k, c_out, 1, 1)
        return out.view(b, k * c_out, ho, wo)


class _ShiftAdd(torch.autograd.Function):
    """``out = sum_t z[:, :, :, t, i_t : i_t + ho, j_t : j_t + wo]`` with tap ``t = (i_t, j_t)``.

    Autograd of a plain sum of slices would zero-fill one ``z``-sized tensor per tap and add
    them up; the adjoint here pads each tap's gradient once and stacks. Written with
    out-of-place torch ops only, so it supports double backward and ``torch.func`` transforms.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor, ks: int, ho: int, wo: int) -> Tensor:  # type: ignore[override]
        out = z[..., 0, :ho, :wo]
        for t in range(1, ks * ks):
            i, j = divmod(t, ks)
            out = out + z[..., t, i : i + ho, j : j + wo]
        return out

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        z, ks, ho, wo = inputs
        ctx.size = (z.shape[-2], z.shape[-1])
        ctx.ks, ctx.ho, ctx.wo = ks, ho, wo

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        ks, ho, wo = ctx.ks, ctx.ho, ctx.wo
        h, w = ctx.size
        taps = [divmod(t, ks) for t in range(ks * ks)]
        gz = torch.stack([F.pad(grad, (j, w - wo - j, i, h - ho - i)) for i, j in taps], dim=-3)
        return gz, None, None, None


def _shift_add(z: Tensor, ks: int, ho: int, wo: int) -> Tensor:
    """``(B, K, C, ks^2, H, W) -> (B, K, C, ho, wo)``: sum of the tap-shifted windows."""
    return _ShiftAdd.apply(z, ks, ho, wo)


class ChartCNN(nn.Module):
    """One small CNN per chart, all ``K`` charts in one module (grouped convolutions).

    Chart ``k``'s network is ``n_layers`` convolutions ``kernel_size x kernel_size``
    (``in_channels -> hidden -> ... -> hidden -> out_channels``), each but the last followed by
    ``LeakyReLU(negative_slope)`` and, if ``batchnorm``, ``BatchNorm2d(hidden)`` (in that order,
    as in AtlasD's heat experiment: four 3x3 layers, 16 channels). All charts run in one
    ``Conv2d(K * c_in, K * c_out, groups=K)`` per layer with channels laid out chart-major
    (channel ``k * c + i`` is channel ``i`` of chart ``k``), so the charts never mix: the
    ``BatchNorm2d(K * hidden)`` statistics are per chart and per channel, and the parameters are
    exactly ``K`` independent copies of the single-chart network (:meth:`chart_network`).

    Args:
        n_charts: ``K``.
        in_channels, out_channels: channels per chart (``C_in``, ``C_out``).
        hidden: channels of the hidden layers (per chart).
        n_layers: number of convolutions (>= 1; 1 means a single linear convolution).
        kernel_size: odd kernel side.
        negative_slope: LeakyReLU slope.
        batchnorm: BatchNorm after every hidden activation.
        padding: ``"valid"`` (no padding: every layer shrinks the patch by ``kernel_size // 2``
            per side, so the output has no zero-padding artefacts at its rim) or ``"same"``.
        crop: extra central crop, in pixels per side, applied to the output (see
            :meth:`for_radii`).
        conv_impl: ``"auto"`` (fastest exact computation per layer, see :class:`ChartConv2d`)
            or ``"grouped"`` (oneDNN grouped convolution everywhere); same parameters.

    Attributes:
        margin: pixels lost per side, ``h' = h - 2 * margin``: ``n_layers * (kernel_size // 2)
            + crop`` for ``"valid"``, ``crop`` for ``"same"``.

    ``forward`` is differentiable w.r.t. the input patches (stage 2 backpropagates through the
    frozen predictor into the group generators).
    """

    def __init__(
        self,
        n_charts: int,
        in_channels: int,
        out_channels: int,
        hidden: int = 16,
        n_layers: int = 4,
        kernel_size: int = 3,
        negative_slope: float = 0.01,
        batchnorm: bool = True,
        padding: Padding = "valid",
        crop: int = 0,
        conv_impl: ConvImpl = "auto",
    ) -> None:
        super().__init__()
        k = check_int("n_charts", n_charts, 1)
        c_in = check_int("in_channels", in_channels, 1)
        c_out = check_int("out_channels", out_channels, 1)
        hid = check_int("hidden", hidden, 1)
        layers = check_int("n_layers", n_layers, 1)
        ks = check_int("kernel_size", kernel_size, 1)
        if ks % 2 == 0:
            raise ValueError(f"kernel_size must be odd (patches are centred), got {ks}")
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.n_charts = k
        self.in_channels = c_in
        self.out_channels = c_out
        self.hidden = hid
        self.n_layers = layers
        self.kernel_size = ks
        self.negative_slope = float(negative_slope)
        self.batchnorm = bool(batchnorm)
        self.padding = padding
        self.crop = check_int("crop", crop, 0)
        self.margin = (layers * (ks // 2) if padding == "valid" else 0) + self.crop

        widths = [c_in] + [hid] * (layers - 1) + [c_out]
        conv_padding = 0 if padding == "valid" else ks // 2
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks.append(
                ChartConv2d(k, widths[i], widths[i + 1], ks, padding=conv_padding, impl=conv_impl)
            )
            if i < layers - 1:
                blocks.append(nn.LeakyReLU(self.negative_slope))
                if self.batchnorm:
                    blocks.append(nn.BatchNorm2d(k * hid))
        # Default init equals K independent nn.Conv2d(c_in, c_out) inits: a grouped weight has
        # shape (K * c_out, c_in, ks, ks), so its fan-in is the per-chart fan-in c_in * ks * ks.
        self.net = nn.Sequential(*blocks)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def for_radii(
        cls,
        n_charts: int,
        in_channels: int,
        out_channels: int,
        in_radius: int,
        out_radius: int,
        *,
        n_layers: int | None = None,
        max_layers: int = 8,
        **kw: Any,
    ) -> ChartCNN:
        """A ChartCNN mapping ``(2 in_radius + 1)``-patches to ``(2 out_radius + 1)``-patches.

        Rule, with ``d = in_radius - out_radius`` and ``s = kernel_size // 2`` (``kw`` may set
        ``kernel_size``, default 3):

        * ``d == 0``: ``"same"`` padding, ``n_layers`` (default 4) layers, no crop.
        * ``n_layers`` not given and ``d // s >= 2``: ``n_layers = min(d // s, max_layers)``
          ``"valid"`` layers and a final crop of ``d - n_layers * s`` (0 whenever ``s`` divides
          ``d`` and ``d // s <= max_layers``). E.g. 3x3 kernels, 14 -> 10: four valid layers.
        * ``n_layers`` given and ``n_layers * s <= d``: that many valid layers and a final crop
          of ``d - n_layers * s``.
        * otherwise (``d < 2 s`` without ``n_layers``, or ``n_layers * s > d``): ``"same"``
          padding and a final crop of ``d``. Zero padding then shapes the outer
          ``n_layers * s - d`` pixels of the output rim; prefer a larger ``d``.

        Raises:
            ValueError: ``out_radius > in_radius`` or negative radii.
        """
        r_in = check_int("in_radius", in_radius, 0)
        r_out = check_int("out_radius", out_radius, 0)
        if r_out > r_in:
            raise ValueError(
                f"out_radius ({r_out}) must be <= in_radius ({r_in}): predictors only shrink "
                "patches"
            )
        if "padding" in kw or "crop" in kw:
            raise ValueError("for_radii chooses padding and crop itself; do not pass them")
        ks = check_int("kernel_size", kw.get("kernel_size", 3), 1)
        s = ks // 2
        d = r_in - r_out
        max_layers = check_int("max_layers", max_layers, 1)
        if n_layers is not None:
            n_layers = check_int("n_layers", n_layers, 1)
        if d == 0:
            layers, padding, crop = (4 if n_layers is None else n_layers), "same", 0
        elif n_layers is None and s > 0 and d // s >= 2:
            layers = min(d // s, max_layers)
            padding, crop = "valid", d - layers * s
        elif n_layers is not None and n_layers * s <= d:
            layers, padding, crop = n_layers, "valid", d - n_layers * s
        else:
            layers, padding, crop = (4 if n_layers is None else n_layers), "same", d
        return cls(
            n_charts,
            in_channels,
            out_channels,
            n_layers=layers,
            padding=padding,  # type: ignore[arg-type]
            crop=crop,
            **kw,
        )

    # ------------------------------------------------------------------ introspection
    def n_parameters_per_chart(self) -> int:
        """Trainable parameters of one chart's network, from the architecture (not by counting
        tensors): ``sum_l (c_l * c_{l+1} * ks^2 + c_{l+1}) + 2 * hidden * (n_layers - 1)``
        (the last term: BatchNorm's affine weight and bias). ``sum(p.numel()) == K * this``."""
        widths = [self.in_channels] + [self.hidden] * (self.n_layers - 1) + [self.out_channels]
        ks2 = self.kernel_size**2
        conv = sum(a * b * ks2 + b for a, b in itertools.pairwise(widths))
        bn = 2 * self.hidden * (self.n_layers - 1) if self.batchnorm else 0
        return conv + bn

    def output_size(self, size: int) -> int:
        """Output side ``size - 2 * margin`` for an input side ``size``."""
        return size - 2 * self.margin

    def chart_network(self, k: int) -> nn.Sequential:
        """A plain single-chart ``nn.Sequential`` holding copies of chart ``k``'s parameters and
        BatchNorm statistics; its ``forward`` on ``(B, C_in, h, w)`` equals chart ``k`` of this
        module before the final crop (same train/eval mode)."""
        k = check_int("k", k, 0)
        if k >= self.n_charts:
            raise ValueError(f"chart index {k} out of range for {self.n_charts} charts")
        conv_padding = 0 if self.padding == "valid" else self.kernel_size // 2
        blocks: list[nn.Module] = []
        for layer in self.net:
            if isinstance(layer, nn.Conv2d):
                c_out = layer.out_channels // self.n_charts
                c_in = layer.in_channels // self.n_charts
                conv = nn.Conv2d(c_in, c_out, self.kernel_size, padding=conv_padding)
                rows = slice(k * c_out, (k + 1) * c_out)
                with torch.no_grad():
                    conv.weight.copy_(layer.weight[rows])
                    conv.bias.copy_(layer.bias[rows])
                blocks.append(conv)
            elif isinstance(layer, nn.BatchNorm2d):
                c = layer.num_features // self.n_charts
                bn = nn.BatchNorm2d(c, eps=layer.eps, momentum=layer.momentum)
                rows = slice(k * c, (k + 1) * c)
                with torch.no_grad():
                    bn.weight.copy_(layer.weight[rows])
                    bn.bias.copy_(layer.bias[rows])
                    bn.running_mean.copy_(layer.running_mean[rows])
                    bn.running_var.copy_(layer.running_var[rows])
                    bn.num_batches_tracked.copy_(layer.num_batches_tracked)
                blocks.append(bn)
            else:
                blocks.append(nn.LeakyReLU(self.negative_slope))
        return nn.Sequential(*blocks).train(self.training)

    def extra_repr(self) -> str:
        return (
            f"n_charts={self.n_charts}, in_channels={self.in_channels}, "
            f"out_channels={self.out_channels}, hidden={self.hidden}, n_layers={self.n_layers}, "
            f"kernel_size={self.kernel_size}, padding={self.padding!r}, crop={self.crop}, "
            f"margin={self.margin}"
        )

    # ------------------------------------------------------------------ forward
    def forward(self, patches: Tensor) -> Tensor:
        """Apply every chart's network to its own patches.

        Args:
            patches: ``(B, K, C_in, h, w)`` floating tensor, ``h, w > 2 * margin``.

        Returns:
            ``(B, K, C_out, h - 2 margin, w - 2 margin)``.
        """
        if patches.ndim != 5:
            raise ValueError(
                f"ChartCNN expects patches (B, K, C_in, h, w), got shape {tuple(patches.shape)}"
            )
        b, k, c, h, w = patches.shape
        if k != self.n_charts or c != self.in_channels:
            raise ValueError(
                f"ChartCNN built for K={self.n_charts} charts with C_in={self.in_channels} "
                f"channels got patches of shape {tuple(patches.shape)} (K={k}, C_in={c})"
            )
        if min(h, w) <= 2 * self.margin:
            raise ValueError(
                f"patches of {h}x{w} are too small for a ChartCNN with margin {self.margin} "
                f"(need more than {2 * self.margin} pixels per side)"
            )
        # (B, K, C, h, w) -> (B, K*C, h, w) is a free view and is exactly the chart-major layout.
        out = self.net(patches.reshape(b, k * c, h, w))
        out = out.view(b, k, self.out_channels, out.shape[-2], out.shape[-1])
        if self.crop:
            p = self.crop
            out = out[..., p:-p, p:-p]
        return out


# ---------------------------------------------------------------------------------- MLPPredictor

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
}


def _activation_factory(activation: str | Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    if isinstance(activation, str):
        try:
            return _ACTIVATIONS[activation]
        except KeyError:
            raise ValueError(
                f"unknown activation {activation!r}; use one of {sorted(_ACTIVATIONS)} "
                "or pass a callable returning an nn.Module"
            ) from None
    if not callable(activation):
        raise ValueError(f"activation must be a name or a callable, got {activation!r}")
    return activation


def _mlp(sizes: Sequence[int], act: Callable[[], nn.Module], last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_act:
            layers.append(act())
    return nn.Sequential(*layers)


class MLPPredictor(nn.Module):
    """MLP predictor for global discovery, where the group acts by ``x -> g x`` on the last axis.

    Args:
        in_shape: per-sample input shape, e.g. ``(d,)`` or ``(P, d)`` for sets of ``P`` vectors.
        n_out: output features.
        hidden: hidden layer widths.
        activation: ``"relu"`` (default), ``"leaky_relu"``, ``"gelu"``, ``"silu"``, ``"tanh"``,
            ``"elu"``, ``"softplus"`` or a callable returning an ``nn.Module``.
        per_element: ``False``: flatten all of ``in_shape`` into one vector (an MLP on
            ``prod(in_shape)`` features). ``True`` (DeepSets): ``phi``, an MLP
            ``d -> hidden...`` applied to every element of the last axis, is averaged over all
            element axes (mean pooling, so the output is invariant to permutations of the
            elements and independent of their number), then ``rho = Linear -> act -> Linear``
            (``hidden[-1] -> hidden[-1] -> n_out``).

    ``forward(x (B, *in_shape)) -> (B, n_out)``.
    """

    def __init__(
        self,
        in_shape: Sequence[int] | int,
        n_out: int,
        hidden: Sequence[int] = (64, 64),
        activation: str | Callable[[], nn.Module] = "relu",
        per_element: bool = False,
    ) -> None:
        super().__init__()
        shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        if not shape:
            raise ValueError("in_shape must have at least one axis (..., d)")
        self.in_shape = tuple(check_int("in_shape entry", s, 1) for s in shape)
        self.n_out = check_int("n_out", n_out, 1)
        self.hidden = tuple(check_int("hidden width", h, 1) for h in hidden)
        self.per_element = bool(per_element)
        act = _activation_factory(activation)
        if self.per_element:
            if len(self.in_shape) < 2:
                raise ValueError(
                    f"per_element=True needs elements on an axis, in_shape (P, ..., d); got "
                    f"{self.in_shape}"
                )
            if not self.hidden:
                raise ValueError("per_element=True needs at least one hidden layer")
            self.phi = _mlp((self.in_shape[-1], *self.hidden), act, last_act=True)
            self.rho = _mlp((self.hidden[-1], self.hidden[-1], self.n_out), act, last_act=False)
        else:
            self.net = _mlp((math.prod(self.in_shape), *self.hidden, self.n_out), act, False)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, *in_shape) -> (B, n_out)``."""
        if tuple(x.shape[1:]) != self.in_shape or x.ndim < 2:
            raise ValueError(
                f"MLPPredictor expects inputs (B, *{self.in_shape}), got shape {tuple(x.shape)}"
            )
        if self.per_element:
            h = self.phi(x)  # (B, ..., hidden[-1])
            return self.rho(h.flatten(1, -2).mean(dim=1))
        return self.net(x.flatten(1))


# ---------------------------------------------------------------------------------------- losses


def _class_dim(pred: Tensor) -> int:
    """Class axis of logits: 1 for ``(B, C)``, 2 for chart layouts ``(B, K, C, ...)``."""
    return 1 if pred.ndim == 2 else 2


def loss_terms(
    pred: Tensor,
    target: Tensor,
    kind: LossKind = "l1",
    class_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-chart numerator and denominator of a prediction loss, so that losses can be summed
    exactly over batches: loss = ``num.sum() / den.sum()``, per chart ``num / den``.

    Chart axis: dim 1 of the elementwise loss map ``(B, K, ...)`` (for ``(B, n_out)``
    regression outputs: one entry per output); a 1-D loss map ``(B,)`` (plain classification)
    is one group and both outputs are ``(1,)``.

    Args:
        pred: predictions; for ``cross_entropy`` logits ``(B, K, C, h, w)`` (or any
            ``(B, K, C, ...)``; ``(B, C)`` for plain classification).
        target: same shape as ``pred`` (``l1``, ``mse``, cross-entropy with probabilities), or
            class indices (integer dtype) shaped like ``pred`` without its class axis.
        kind: ``"l1"``, ``"mse"`` or ``"cross_entropy"``.
        class_weights: ``(C,)`` per-class weights (cross-entropy only), e.g. to down-weight a
            dominant background class. As in :func:`torch.nn.functional.cross_entropy`: with
            index targets the loss is the weighted mean ``sum w_y l / sum w_y``; with
            probability targets ``-sum_c w_c p_c log q_c`` is averaged over elements.

    Returns:
        ``(num, den)``, each ``(K,)`` (float, on ``pred``'s device).
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {kind!r}")
    if kind != "cross_entropy":
        if class_weights is not None:
            raise ValueError(f"class_weights only apply to cross_entropy, not {kind!r}")
        if pred.shape != target.shape:
            raise ValueError(
                f"{kind} loss needs pred and target of one shape, got {tuple(pred.shape)} and "
                f"{tuple(target.shape)}"
            )
        diff = pred - target
        elem = diff.abs() if kind == "l1" else diff.square()
        return _group(elem, None)

    if pred.ndim < 2:
        raise ValueError(f"cross_entropy needs logits (B, C) or (B, K, C, ...), got {pred.ndim}-D")
    cdim = _class_dim(pred)
    n_cls = pred.shape[cdim]
    if class_weights is not None:
        # as_tensor: callers may pass a list (DiscoveryConfig.class_weights is list[float])
        class_weights = torch.as_tensor(class_weights).to(device=pred.device, dtype=pred.dtype)
        if class_weights.shape != (n_cls,):
            raise ValueError(
                f"class_weights must have shape ({n_cls},) (one per class), got "
                f"{tuple(class_weights.shape)}"
            )
    logits = pred.movedim(cdim, 1)  # F.cross_entropy wants (N, C, d1, ...)
    if target.is_floating_point():
        if target.shape != pred.shape:
            raise ValueError(
                f"probability targets must have the logits' shape {tuple(pred.shape)}, got "
                f"{tuple(target.shape)}"
            )
        elem = F.cross_entropy(
            logits, target.movedim(cdim, 1), weight=class_weights, reduction="none"
        )
        return _group(elem, None)
    expected = pred.shape[:cdim] + pred.shape[cdim + 1 :]
    if target.shape != expected:
        raise ValueError(
            f"class-index targets for logits {tuple(pred.shape)} must have shape "
            f"{tuple(expected)} (the logits without the class axis {cdim}), got "
            f"{tuple(target.shape)}"
        )
    target = target.long()
    elem = F.cross_entropy(logits, target, weight=class_weights, reduction="none")
    weight = None if class_weights is None else class_weights[target]
    return _group(elem, weight)


def _group(elem: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor]:
    """Sum an elementwise loss (and its weights) over every axis but the chart axis 1."""
    if elem.ndim >= 2:
        dims = [0, *range(2, elem.ndim)]
        num = elem.sum(dim=dims)
        if weight is None:
            den = torch.full_like(num, elem.numel() // elem.shape[1])
        else:
            den = weight.sum(dim=dims)
        return num, den
    num = elem.sum().reshape(1)
    den = torch.full_like(num, elem.numel()) if weight is None else weight.sum().reshape(1)
    return num, den


def prediction_loss(
    pred: Tensor,
    target: Tensor,
    kind: LossKind = "l1",
    class_weights: Tensor | None = None,
) -> Tensor:
    """Scalar mean prediction loss (see :func:`loss_terms` for shapes and weighting).

    ``"l1"``: mean ``|pred - target|``; ``"mse"``: mean squared error; ``"cross_entropy"``:
    ``pred`` are logits ``(B, K, C, h, w)``, ``target`` class indices ``(B, K, h, w)`` or
    probabilities ``(B, K, C, h, w)``, reduced exactly like
    ``F.cross_entropy(..., weight=class_weights, reduction="mean")``.
    """
    num, den = loss_terms(pred, target, kind, class_weights)
    return num.sum() / den.sum()


def prediction_loss_per_chart(
    pred: Tensor,
    target: Tensor,
    kind: LossKind = "l1",
    class_weights: Tensor | None = None,
) -> Tensor:
    """Prediction loss of every chart, ``(K,)`` (dim 1 of ``(B, K, ...)`` is the chart axis).

    Without class weights the charts have equal element counts and the mean of this vector is
    :func:`prediction_loss`.
    """
    num, den = loss_terms(pred, target, kind, class_weights)
    return num / den
