"""Estimators of layers with weights: Dense, Conv*, DepthwiseConv*, SeparableConv*,
Conv*Transpose, EinsumDense, Embedding and MultiHeadAttention.

Expected mode: Var(W) = target / (fan_in * E[x^2]) (the paper's rule). Realized mode: draw W,
push the input's mean map through W and its variance map through W**2 with the layer's own op,
then rescale W so the realized output variance is exactly the target (and, with
``center=True``, set the bias to cancel the per-channel offsets).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import keras
import numpy as np

from autoinit_nas import _phases as phases
from autoinit_nas._context import Context, Estimate
from autoinit_nas._correlation import conv_corr, flat_cross_variance, global_mean_var
from autoinit_nas._functions import (
    apply_function,
    is_identity,
    mixable,
    mixture_or_gaussian,
    non_gaussian,
    softmax_mixture_weight,
    source_values,
    table_cov,
    table_moments,
    table_of,
    table_or_own,
    white_positions,
    with_table,
)
from autoinit_nas._mixture import NOISE_NODES, Mixture, channel_moments, source_nodes
from autoinit_nas._registry import register_estimator
from autoinit_nas._signal import Signal
from autoinit_nas._xcorr import (
    MAX_CHANNELS,
    MAX_FLAT,
    _lags,
    border_var,
    channel_mean,
    conv_var,
    conv_xcov,
    correlation_of,
    dense_flat,
    global_mean_cov,
    lag_zero,
    per_channel_corr,
)
from autoinit_nas.errors import SignalError

__all__ = ["linear_estimate", "sum_cov", "windows", "with_sum_cov"]

Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _np(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=float)


def _run(forward: Forward, maps: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Apply a batched op to one sample's map."""
    return forward(maps[None], kernel)[0]


def _channel_axis(layer: Any, rank: int) -> int:
    return 0 if getattr(layer, "data_format", "channels_last") == "channels_first" else rank - 1


def linear_estimate(
    layer: Any,
    x: Signal,
    ctx: Context,
    *,
    kernel_var: Any,
    forward: Forward,
    fan_in: float,
    out_shape: tuple[int, ...],
    bias_var: Any = None,
    channel_axis: int = -1,
    target: float | None = None,
    keep: bool | None = None,
) -> tuple[Signal, dict[str, np.ndarray], float | None]:
    """Plan (or, for kept layers, read) one kernel and return the pre-activation signal."""
    target = ctx.target if target is None else target
    where = f"layer '{ctx.current_path}' ({type(layer).__name__})"
    kshape = tuple(kernel_var.shape)
    if ctx.keeps(layer) if keep is None else keep:
        kernel = ctx.value(kernel_var)
        bias = ctx.value(bias_var) if bias_var is not None else 0.0
        xm = x.as_map()
        mean = _run(forward, xm.mean, kernel) + bias
        var = _run(forward, xm.var, kernel**2)
        return x.like(mean, var, out_shape), {}, float(np.std(kernel))
    ex2 = ctx.require_second_moment(x, where)
    rng = ctx.next_rng()
    raw = ctx.draw(kshape, rng)
    nominal = math.sqrt(target / (fan_in * ex2))
    plan: dict[str, np.ndarray] = {}
    if not ctx.realized or not x.is_map:
        kernel = raw * nominal
        plan[kernel_var.path] = kernel
        if bias_var is not None:
            plan[bias_var.path] = np.zeros(tuple(bias_var.shape))
        return Signal.scalar(0.0, target, out_shape), plan, nominal
    kv = _run(forward, x.var, (raw * nominal) ** 2)
    # a linear map of a zero mean is zero (after ReLU-free stacks, most layers' inputs)
    km = _run(forward, x.mean, raw * nominal) if np.any(x.mean) else np.zeros_like(kv)
    axis = channel_axis % km.ndim
    reduce_axes = tuple(i for i in range(km.ndim) if i != axis)
    offsets = np.mean(km, axis=reduce_axes, keepdims=True)
    residual = km - offsets if ctx.options.center else km
    total = float(np.mean(kv) + np.var(residual))
    if not math.isfinite(total) or total <= 0:
        raise SignalError(
            f"Cannot scale the weights of {where}: the realized output variance is {total!r}. "
            "Expected a positive finite value."
        )
    c = math.sqrt(target / total)
    plan[kernel_var.path] = raw * nominal * c
    if bias_var is not None:
        bias = np.zeros(tuple(bias_var.shape))
        if ctx.options.center:
            bias = -c * offsets.reshape(-1)[: bias.size].reshape(bias.shape)
        plan[bias_var.path] = bias
        mean = c * residual
    else:
        mean = c * km
    return Signal(mean, c * c * kv, out_shape), plan, nominal * c


def _correlate(
    x: Signal,
    pre: Signal,
    plan: dict[str, np.ndarray],
    std: float | None,
    ctx: Context,
    kernel_var: Any,
    kernel_nd: Callable[[np.ndarray], np.ndarray],
    stride: int | tuple[int, ...] = 1,
    dilation: int | tuple[int, ...] = 1,
    bias_var: Any = None,
    padded: Any = None,
) -> tuple[Signal, dict[str, np.ndarray], float | None]:
    """For sequence and image maps (channels last): the output's correlation between positions
    and channels and the variance that correlated inputs add (realized mode), with the kernel
    rescaled so the total stays at the target. ``kernel_nd`` turns the layer's kernel into a
    ``(*taps, in, out)`` convolution kernel (a Dense kernel gets one tap per axis); ``padded``:
    the convolution layer whose padding its border positions see."""
    rank = len(x.shape) - 1
    if not (ctx.realized and x.is_map and rank >= 1 and len(pre.shape) == rank + 1):
        return pre, plan, std
    kernel = kernel_nd(np.asarray(_final_kernel(kernel_var, plan, ctx), float))
    kernel = kernel.reshape((1,) * (rank + 2 - kernel.ndim) + kernel.shape)
    if kernel.ndim != rank + 2 or (rank > 1 and (kernel.shape[-2] > MAX_CHANNELS
                                                 or x.xcorr is None)):
        # images with many input channels, or whose correlation a layer dropped: not tracked
        # (sequences keep at least the correlation between positions)
        return pre, plan, std
    var_c = channel_mean(x.var, x.shape)
    independent = _independent(var_c, kernel)
    table = table_of(x) if x.xcorr is None and rank == 1 and _as_int(dilation) == 1 else None
    image = (x.meta.get("image") if x.xcorr is None and rank == 1 and _as_int(dilation) == 1
             else None)
    z_table = (table_of(image[0]) if image is not None and image[0].xcorr is None
               and white_positions(image[0]) else None)
    if (table is not None and len(kernel) > 1 and white_positions(x)) or z_table is not None:
        # many channels, each a function of one variable drawn anew at every position (or a
        # convolution of such channels, z): the channels covary by the table at lag 0 and not
        # at all across positions
        if z_table is not None:
            table, kernel = z_table, _compose(image[1], kernel)
        cov = _white_conv_cov(table, kernel, _as_int(stride), pre.shape[0])
        xcorr = correlation_of(cov) if cov.shape[-1] <= MAX_CHANNELS else None
        lag0 = np.diagonal(cov[len(cov) // 2])
        corr = (np.diagonal(cov[len(cov) // 2:], axis1=1, axis2=2)
                / np.maximum(lag0, 1e-300)[None, :])
        return _add_variance(pre, lag0 - independent, plan, std, ctx, kernel_var, corr,
                             bias_var, xcorr)
    if image is not None:
        # every input channel is a convolution of the few channels of z: so is the output, and
        # the layer is one convolution of z (exact, whatever the channel count)
        z, k_z = image
        x, kernel = z, _compose(k_z, kernel)
        var_c = channel_mean(z.var, z.shape)
    cov = conv_xcov(x.xcorr, x.corr, var_c, kernel, stride, dilation, x.shape[:-1],
                    pre.shape[:-1])
    if cov is None:  # too many channels: each output channel's own variance, positions only
        exact = x.xcorr is not None and _small_var_cost(kernel)
        if rank > 1:
            if not exact:
                return pre, plan, std
            extra = conv_var(x.xcorr, x.corr, var_c, kernel, dilation, x.shape[:-1])
            return _add_variance(pre, extra - independent, plan, std, ctx, kernel_var, None,
                                 bias_var)
        corr, extra = conv_corr(x.corr, var_c, kernel, _as_int(stride), _as_int(dilation),
                                pre.shape[0])
        if image is not None:  # conv_corr's extra is over z's independent terms
            extra = extra + _independent(var_c, kernel) - independent
        if exact:  # the channels' correlation too (e.g. a wide Dense on a sequence)
            extra = conv_var(x.xcorr, x.corr, var_c, kernel, dilation, x.shape[:-1]) - independent
        out = _add_variance(pre, extra, plan, std, ctx, kernel_var, corr, bias_var)
        return _as_image(x, image, kernel, ctx, out, kernel_var, kernel_nd, stride, dilation)
    xcorr = correlation_of(cov)
    corr = per_channel_corr(xcorr) if rank == 1 else None
    extra = np.diagonal(lag_zero(cov)) - independent
    if rank == 1 and padded is not None and image is None:
        extra = _border_extra(padded, x, kernel, _as_int(dilation), extra)
    return _add_variance(pre, extra, plan, std, ctx, kernel_var, corr, bias_var, xcorr)


def _border_extra(layer: Any, x: Signal, kernel: np.ndarray, dilation: int,
                  extra: np.ndarray) -> Any:
    """``extra`` (per output channel, the stationary rule's) with the positions whose windows
    reach the padding or read elements of another variance than their channel's mean (by
    more than ``_UNEVEN``) worked out from their own fields (``border_var``)."""
    var_c = channel_mean(x.var, x.shape)
    sd = np.sqrt(np.maximum(np.broadcast_to(x.var, x.shape), 0.0))
    fields = windows(sd[None], (len(kernel),), layer)
    inside = windows(np.ones((1, x.shape[0], 1)), (len(kernel),), layer)
    if fields is None or inside is None:
        return extra
    fields = fields[0]  # (P, C, taps)
    mean_sd = np.sqrt(np.maximum(var_c, 0.0))[None, :, None]
    odd = ~np.all(inside[0, :, 0, :], axis=-1) | np.any(
        np.abs(fields - mean_sd) > _UNEVEN * np.maximum(mean_sd, 1e-300), axis=(1, 2))
    if not np.any(odd):
        return extra
    own = border_var(x.xcorr, x.corr, kernel, dilation, fields[odd])
    if own is None:
        return extra
    out = np.repeat(np.asarray(extra, float)[None, :], len(fields), axis=0)
    out[odd] = own
    return out


#: Relative difference of an element's standard deviation from its channel's mean from which
#: a convolution works out the correlated-input variance of the positions that read it.
_UNEVEN = 0.05


def _white_conv_cov(table: tuple[np.ndarray, np.ndarray], kernel: np.ndarray, stride: int,
                    out_len: int) -> np.ndarray:
    """Output cross-covariance ``(2K + 1, O, O)`` of a 1-D convolution ``(taps, C, O)`` over
    independent positions whose channels covary as the joint ``table`` (``G0``):
    ``G[d] = sum_j W_j^T G0 W_(j + s d)``."""
    g0 = table_cov(table)
    taps, _, outs = kernel.shape
    k = min((taps - 1) // stride, _lags(out_len, outs)[0], max(out_len - 1, 0))
    proj = np.einsum("ab,jbo->jao", g0, kernel)  # G0 W_j
    cov = np.zeros((2 * k + 1, outs, outs))
    for d in range(k + 1):
        for j in range(taps - stride * d):
            cov[k + d] += kernel[j].T @ proj[j + stride * d]
    for d in range(1, k + 1):
        cov[k - d] = cov[k + d].T
    return cov


def _independent(var_c: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Each output channel's variance with independent inputs, ``sum_j sum_c W[j, c]^2 v_c``."""
    return var_c @ np.square(kernel).reshape(-1, *kernel.shape[-2:]).sum(axis=0)


#: Most taps x channels of z an image's kernel may have (a chain of convolutions lengthens it;
#: the next layer's cost grows with it).
MAX_IMAGE_TAPS = 64


def _compose(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The kernel of two stride-1 convolutions in a row: ``(t1, Z, C)`` then ``(t2, C, O)`` ->
    ``(t1 + t2 - 1, Z, O)``."""
    out = np.zeros((len(first) + len(second) - 1, first.shape[1], second.shape[-1]))
    for j, tap in enumerate(second):
        out[j:j + len(first)] += first @ tap
    return out


def _as_image(x: Signal, image: Any, kernel: np.ndarray, ctx: Context,
              result: tuple[Signal, dict[str, np.ndarray], float | None], kernel_var: Any,
              kernel_nd: Callable[[np.ndarray], np.ndarray], stride: Any, dilation: Any,
              ) -> tuple[Signal, dict[str, np.ndarray], float | None]:
    """Past the channel budget, a stride-1 convolution of a sequence z of few channels (or of
    an image of z: a Dense(128) on a one-channel input, or on 8 channels) is kept as
    ``meta['image'] = (z, kernel)`` with its final kernel, for the next linear layer (``x`` and
    ``kernel`` here are already z and the composed kernel when ``image`` is set)."""
    pre, plan, std = result
    if (_as_int(stride) != 1 or _as_int(dilation) != 1
            or len(kernel) * x.shape[-1] > MAX_IMAGE_TAPS or len(x.shape) != 2):
        return result
    final = kernel_nd(np.asarray(_final_kernel(kernel_var, plan, ctx), float))
    final = final.reshape((1,) * (3 - final.ndim) + final.shape)
    k_z = final if image is None else _compose(image[1], final)
    return replace(pre, meta={**pre.meta, "image": (x, k_z)}), plan, std


def _small_var_cost(kernel: np.ndarray) -> bool:
    """Whether ``conv_var`` is cheap here: its ``(taps x C)^2`` matrix stays small (a Dense
    layer's one tap always is, within the channel budget)."""
    return kernel.shape[-2] <= MAX_CHANNELS and kernel[..., 0, 0].size * kernel.shape[-2] <= 384


def _as_int(value: int | tuple[int, ...]) -> int:
    return int(value[0]) if isinstance(value, (tuple, list)) else int(value)


def _final_kernel(kernel_var: Any, plan: dict[str, np.ndarray], ctx: Context) -> np.ndarray:
    """The kernel as planned, or the layer's own for kept layers."""
    return plan[kernel_var.path] if kernel_var.path in plan else ctx.value(kernel_var)


def _add_variance(pre: Signal, extra: np.ndarray, plan: dict[str, np.ndarray],
                  std: float | None, ctx: Context, kernel_var: Any,
                  corr: np.ndarray | None, bias_var: Any = None,
                  xcorr: np.ndarray | None = None,
                  ) -> tuple[Signal, dict[str, np.ndarray], float | None]:
    """Add ``extra`` (broadcast over the output's last axis) to the predicted variance; a
    planned kernel is scaled so the realized total variance is still the target."""
    var = np.maximum(pre.var + extra, 0.0)
    mean = pre.mean
    bias_path = None if bias_var is None else bias_var.path  # centered biases scale too
    if kernel_var.path in plan and np.any(extra):
        total = float(np.mean(var) + np.var(mean))
        if math.isfinite(total) and total > 0:
            f = math.sqrt(ctx.target / total)
            plan = {path: value * f if path in (kernel_var.path, bias_path) else value
                    for path, value in plan.items()}
            mean, var = mean * f, var * f * f
            std = None if std is None else std * f
    return Signal(mean, var, pre.shape, corr=corr, xcorr=xcorr), plan, std


def _depthwise_as_full(kernel: np.ndarray) -> np.ndarray:
    """(*taps, C, M) depthwise kernel as the equivalent (*taps, C, C * M) convolution kernel."""
    channels, mult = kernel.shape[-2:]
    full = np.zeros((*kernel.shape[:-2], channels, channels * mult))
    for c in range(channels):
        full[..., c, c * mult:(c + 1) * mult] = kernel[..., c, :]
    return full


def _sample_shape(layer: Any, node_output: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in node_output.shape[1:])


def sum_cov(x: Signal) -> np.ndarray | None:
    """``(C, C)`` covariance of a sequence's sum over its positions (a global average is it over
    ``L^2``): as a chain of linear layers carried it (``meta['sum_cov']``, valid while the
    signal's variance map is the one it was made with), or where it is exact from the signal
    itself, a one-channel sequence (its phases, or its correlation over every lag it keeps).
    The chain keeps what its correlations, cut at ``max_lag``, would lose: a laid-out map's
    long-range pairs that cancel in the sum. None otherwise."""
    if len(x.shape) != 2 or not x.is_map:
        return None
    kept = x.meta.get("sum_cov")
    if kept is not None and kept[1] is x.var:
        return kept[0]
    if x.shape[-1] != 1:
        return None
    length = x.shape[0]
    var = np.broadcast_to(x.var, x.shape)
    if x.phase is not None:
        total = phases.global_mean_var(x.phase, var[:, 0], length)
    else:
        total = float(global_mean_var(var, x.corr)[0])
    return np.full((1, 1), length * length * total)


def with_sum_cov(pre: Signal, cov: np.ndarray) -> Signal:
    """``pre`` carrying ``cov`` as its position sum's covariance (see ``sum_cov``)."""
    return replace(pre, meta={**pre.meta, "sum_cov": (cov, pre.var)})


def _summed_through(layer: Any, x: Signal, pre: Signal, kernel: Any) -> Signal:
    """The position sum's covariance through a stride-1 linear layer of final ``(taps, C, O)``
    kernel: ``K^T S K`` with ``K`` the kernel summed over its taps, and the border: tap ``t``
    never reads the elements its window slides past at one end, so the sum loses ``K_t^T x_i``
    for those, taken as independent of the rest (exact when the positions sum to zero, and
    small beside ``K^T S K`` otherwise)."""
    if (len(pre.shape) != 2 or not pre.is_map
            or any(int(v) != 1 for v in getattr(layer, "strides", (1,)))):
        return pre
    cov = sum_cov(x)
    if cov is None and x.xcorr is not None and pre.shape[-1] > MAX_CHANNELS:
        # the output's correlation is past the budget: its position sum's is not (a wide head)
        cov = x.shape[0] ** 2 * global_mean_cov(x.xcorr, channel_mean(x.var, x.shape),
                                                 x.shape[:-1])
    if cov is None:
        return pre
    kernel = np.asarray(kernel, float)
    out = kernel.sum(axis=0).T @ cov @ kernel.sum(axis=0)
    taps, length, out_len = kernel.shape[0], x.shape[0], pre.shape[0]
    if taps > 1:
        dilation = _as_int(getattr(layer, "dilation_rate", 1))
        start = np.arange(taps) * dilation - left_padding(layer, length, (taps - 1) * dilation + 1)
        idx = np.arange(length)
        # missed[t, i]: tap t reads positions start_t .. start_t + out_len - 1 only
        missed = (idx[None, :] < start[:, None]) | (idx[None, :] > start[:, None] + out_len - 1)
        rows = np.nonzero(missed.any(axis=0))[0]
        if len(rows):
            lost = np.einsum("ti,tco->ico", missed[:, rows].astype(float), kernel)  # (n, C, O)
            var = np.broadcast_to(x.var, x.shape)[rows]  # (n, C)
            out = out + np.einsum("ico,ic,icp->op", lost, var, lost)
    return with_sum_cov(pre, out)


def _finish(layer: Any, pre: Signal, plan: dict, std: float | None, ctx: Context) -> Estimate:
    act = getattr(layer, "activation", None)
    if is_identity(act):
        return Estimate([pre], plan, std)
    out = apply_function(act, pre, seed=ctx.seed)
    if ctx.forks:  # the links of a fused activation's output go through its input (_links)
        ctx.pre_activation[id(out)] = pre
    return Estimate([out], plan, std)


@register_estimator(keras.layers.Dense)
def _dense(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x = inputs[0]
    pre, plan, std = linear_estimate(
        layer, x, ctx, kernel_var=layer.kernel, bias_var=layer.bias,
        forward=lambda m, k: m @ k, fan_in=layer.kernel.shape[0],
        out_shape=_sample_shape(layer, node.outputs[0]),
    )
    flat = x.meta.get("flat")  # Dense(Flatten(sequence)): positions are correlated
    flat_table = x.meta.get("flat_table")
    if flat_table is not None and ctx.realized and x.is_map and len(pre.shape) == 1:
        # Dense(Flatten(channels of one white variable)): the channels covary at each position
        var_map, rho = flat_table
        kernel = np.asarray(_final_kernel(layer.kernel, plan, ctx), float)
        w = kernel.reshape(*var_map.shape, -1) * np.sqrt(np.maximum(var_map, 0.0))[:, :, None]
        off = rho - np.diag(np.diag(rho))
        extra = np.einsum("pco,cd,pdo->o", w, off, w, optimize=True)
        pre, plan, std = _add_variance(pre, extra, plan, std, ctx, layer.kernel, None,
                                       layer.bias)
    elif flat is not None and ctx.realized and x.is_map and len(pre.shape) == 1:
        var_map, corr = flat
        kernel = _final_kernel(layer.kernel, plan, ctx)
        extra = flat_cross_variance(var_map, corr, np.asarray(kernel, float))
        pre, plan, std = _add_variance(pre, extra, plan, std, ctx, layer.kernel, None,
                                       layer.bias)
    elif x.xcorr is not None and ctx.realized and x.is_map and len(x.shape) == 1:
        # a flat vector with correlated features (after global pooling or another Dense)
        kernel = np.asarray(_final_kernel(layer.kernel, plan, ctx), float)
        extra, xcorr = dense_flat(x.xcorr, np.broadcast_to(x.var, x.shape), kernel)
        pre, plan, std = _add_variance(pre, extra, plan, std, ctx, layer.kernel, None,
                                       layer.bias, xcorr)
    elif (ctx.realized and x.is_map and len(x.shape) == 1 and pre.shape[-1] <= MAX_FLAT
          and pre.shape[-1] > 1):
        # independent features, but the units share them: Cov = W^T diag(var) W (a Dense of one
        # feature gives units that are all +-1 correlated)
        w = np.asarray(_final_kernel(layer.kernel, plan, ctx), float) \
            * np.sqrt(np.maximum(np.broadcast_to(x.var, x.shape), 0.0))[:, None]
        pre = replace(pre, xcorr=correlation_of((w.T @ w)[None]))
    else:
        pre, plan, std = _correlate(x, pre, plan, std, ctx, layer.kernel, lambda k: k[None],
                                    bias_var=layer.bias)
    tabled = _tabulate(x, pre, plan, std, ctx, layer.kernel, layer.bias, lambda k: k)
    if tabled is not None:
        pre, plan, std = tabled
    elif ctx.realized and pre.is_map and (x.mixture is not None or x.source is not None):
        kernel = np.asarray(_final_kernel(layer.kernel, plan, ctx), float)
        pre = _summed_mixture(x, pre, kernel[None], terms_only=True)  # still a sum of a few
        if pre.mixture is None:  # terms, or an affine image of one variable
            pre = _affine_image(x, pre, kernel)
    if ctx.realized and len(x.shape) == 2:  # a Dense at every position of a sequence
        pre = _summed_through(layer, x, pre, _final_kernel(layer.kernel, plan, ctx)[None])
    return _finish(layer, pre, plan, std, ctx)


def _tabulate(x: Signal, pre: Signal, plan: dict[str, np.ndarray], std: float | None,
              ctx: Context, kernel_var: Any, bias_var: Any,
              as_matrix: Callable[[np.ndarray], np.ndarray],
              ) -> tuple[Signal, dict[str, np.ndarray], float | None] | None:
    """A per-position linear layer (Dense, a one-tap convolution; ``as_matrix`` turns its
    kernel into ``(C, O)``) on a map whose channels are functions of one variable: every unit
    is one too, with its exact variance (the channels' covariance, tracked or not) and the
    output's joint table. None when the input has no table."""
    table = table_or_own(x) if ctx.realized and pre.is_map and x.is_map else None
    if table is None:
        return None
    values, probs, linear, root = table
    kernel = as_matrix(np.asarray(_final_kernel(kernel_var, plan, ctx), float))
    if kernel.ndim != 2 or kernel.shape[0] != values.shape[0] or pre.shape[-1] != kernel.shape[1]:
        return None
    bias = np.zeros(kernel.shape[1]) if bias_var is None else \
        np.asarray(_final_kernel(bias_var, plan, ctx), float).reshape(-1)
    out_values = kernel.T @ values + bias[:, None]
    image = pre.meta.get("image")
    extra = np.zeros(kernel.shape[1])
    if x.xcorr is None and x.meta.get("image") is None:
        # the channels' covariance was not counted: the table's ratio of each unit's variance
        # to its variance with independent channels (the maps keep their own scale, which
        # quadrature on them gets right for heavy tails the table's nodes miss)
        independent = np.square(kernel).T @ table_moments(values, probs)[1]
        ratio = np.where(independent > 0, table_moments(out_values, probs)[1]
                         / np.maximum(independent, 1e-300), 1.0)
        extra = channel_mean(pre.var, pre.shape) * (ratio - 1.0)
    pre, plan, std = _add_variance(pre, extra, plan, std, ctx, kernel_var, pre.corr, bias_var,
                                   pre.xcorr)
    final = as_matrix(np.asarray(_final_kernel(kernel_var, plan, ctx), float))
    factor = float(np.sum(final * kernel) / max(float(np.sum(kernel * kernel)), 1e-300))
    if image is not None:  # still a convolution of z, with the kernel as rescaled
        pre = replace(pre, meta={**pre.meta, "image": (image[0], image[1] * factor)})
    return with_table(pre, out_values * factor, probs, linear=linear, root=root), plan, std


def _affine_image(x: Signal, pre: Signal, kernel: np.ndarray) -> Signal:
    """A Dense layer whose inputs are all affine images of one variable (one input channel, or
    channels correlated +-1) makes every output one too, so the variable's shape (a function's,
    dropout's) goes on instead of a Gaussian: output ``u`` is ``shift_u + scale_u Z`` with ``Z``
    the standardized first channel and ``scale_u = sum_c W[c, u] sign(rho_0c) sd_c``. (One
    channel without spread in its shape goes as a table instead: ``table_or_own``.)"""
    channels, units = kernel.shape
    if channels > 1:
        if x.xcorr is None:
            return pre
        rho = lag_zero(x.xcorr)
        if np.min(np.abs(rho)) < 1.0 - 1e-6:
            return pre
        signs = np.sign(rho[0])
    else:
        signs = np.ones(1)
    if x.mixture is None and x.source is not None and mixable(x.source.fn):
        # f(G) itself, node by node (no re-binning: its tails stay for a function after)
        mix = Mixture.points(source_values(x, channels)[:1], source_nodes()[1])
    else:
        mix = mixture_or_gaussian(x, channels)
    _, var_c = channel_moments(x.mean, x.var, channels)
    m0, v0 = mix.moments()
    if v0[0] <= 0.0:
        return pre
    scale = (signs * np.sqrt(np.maximum(var_c, 0.0))) @ kernel  # (units,)
    shift, _ = channel_moments(pre.mean, pre.var, units)
    z_atoms = (mix.atoms[0] + mix.noise_mean[0] - m0[0]) / math.sqrt(v0[0])
    z_spread = (mix.spread[0] + mix.noise_var[0]) / v0[0]
    atoms = shift[:, None] + scale[:, None] * z_atoms[None, :]
    spread = np.square(scale)[:, None] * z_spread[None, :]
    out = Mixture(atoms, np.broadcast_to(mix.probs[0], atoms.shape).copy(), spread,
                  np.zeros(units), np.zeros(units))
    return replace(pre, mixture=out)


#: Most non-Gaussian terms (taps x input channels) a unit's distribution is summed from: a
#: convolution of few taps over a skewed or spiky input (x^2, dropout) keeps its shape, which
#: a Gaussian rule for the function after it gets badly wrong (a depthwise Conv1D of 7 taps
#: over x^2, then max(2x, 0.54): 10x).
MIX_TERMS = 8


def _summed_mixture(x: Signal, pre: Signal, kernel: np.ndarray, *,
                    terms_only: bool = False) -> Signal:
    """``pre`` with the per-channel mixture of ``sum_(j, c) W[j, c, o] x_c[p + j]`` when the
    input is non-Gaussian (a mixture, or a function of a Gaussian), its terms independent
    (independent positions, and one input channel per output or independent channels) and at
    most ``MIX_TERMS`` of them; ``kernel`` is the final ``(taps, C, O)`` convolution kernel.
    The mixture is matched to the output's channel moments (the maps' own). The terms go on in
    ``meta['terms']``, so that a Dense layer (or a one-tap convolution) after it, still a sum
    of the same few terms however many channels it reads, keeps the shape too."""
    if (not pre.is_map or pre.mixture is not None or table_of(pre) is not None
            or kernel.ndim != 3 or not x.is_map or not x.shape):
        return pre
    terms, mix = x.meta.get("terms"), None
    if terms is not None and terms[0] is x.mean and terms[1] is x.var:
        if len(kernel) != 1 or kernel.shape[1] != terms[3].shape[-1]:
            return pre
        mix, kernel = terms[2], np.einsum("tzc,co->tzo", terms[3], kernel[0])
    elif terms_only:
        return pre
    taps, channels, outs = kernel.shape
    live = kernel != 0.0
    reads = live.any(axis=0)  # (C, O): the channels each output reads
    one_each = bool(np.all(reads.sum(axis=0) <= 1))
    if (pre.shape[-1] != outs or live.reshape(-1, outs).sum(axis=0).max(initial=0) > MIX_TERMS
            or (not one_each and int(np.sum(np.any(live, axis=2))) > 4 * MIX_TERMS)):
        return pre
    if mix is None:
        mix = _independent_terms(x, kernel, one_each)
        if mix is None:
            return pre
    mean_c, _ = mix.moments()
    centered = mix.atoms + (mix.noise_mean - mean_c)[:, None]
    spread = mix.spread + mix.noise_var[:, None]
    # one part per (tap, input channel); with one input channel per output (a depthwise
    # convolution, a pooling) one part per tap, each output's row from its own channel
    rows = [np.argmax(reads, axis=0)] if one_each else [np.full(outs, c) for c in range(channels)]
    out: Mixture | None = None
    for j in range(taps):
        for c_of in rows:
            w = kernel[j, c_of, np.arange(outs)]
            if not np.any(w):
                continue
            part = Mixture(centered[c_of] * w[:, None], mix.probs[c_of].copy(),
                           spread[c_of] * np.square(w)[:, None], np.zeros(outs),
                           np.zeros(outs))
            out = part if out is None else out.plus(part)
    if out is None:
        return pre
    matched = out.matched(*channel_moments(pre.mean, pre.var, outs))
    mean, var = np.asarray(pre.mean), np.asarray(pre.var)
    return replace(pre, mean=mean, var=var, mixture=matched,
                   meta={**pre.meta, "terms": (mean, var, mix, kernel)})


def _independent_terms(x: Signal, kernel: np.ndarray, one_each: bool) -> Mixture | None:
    """The per-channel mixture of a non-Gaussian input whose terms under ``kernel`` (taps, C, O;
    ``one_each``: every output reads one channel) are independent, as point masses; None
    otherwise."""
    if not non_gaussian(x):
        return None
    taps, channels, _ = kernel.shape
    if (channels != x.shape[-1] or (channels > MIX_TERMS and not one_each)
            or (taps > 1 and not white_positions(x))):
        return None
    if channels > 1 and not one_each and x.xcorr is not None:
        rho = lag_zero(x.xcorr)
        if np.max(np.abs(rho - np.diag(np.diag(rho)))) > 1e-6:
            return None
    mix = mixture_or_gaussian(x, channels)
    if mix.channels != channels:
        return None
    # components as point masses first: sums are re-binned by location, which would merge a
    # scale mixture (dropout's spike at 0 inside a wide Gaussian) into one Gaussian
    return mix._discretize(lambda v: v, NOISE_NODES)


def _per_axis(value: Any, nd: int) -> tuple[int, ...]:
    values = tuple(int(v) for v in (value if isinstance(value, (tuple, list)) else (value,)))
    return values if len(values) == nd else (values[0],) * nd


def left_padding(layer: Any, length: int, extent: int) -> int:
    """How many zeros Keras pads before a 1-D sequence of ``length`` for a window of
    ``extent`` (``windows`` pads the same)."""
    padding = str(getattr(layer, "padding", "valid")).lower()
    stride = _per_axis(getattr(layer, "strides", None) or (extent,), 1)[0]
    if padding == "same":
        return max((-(-length // stride) - 1) * stride + extent - length, 0) // 2
    return extent - 1 if padding == "causal" else 0


def windows(m: np.ndarray, kernel_shape: tuple[int, ...], layer: Any) -> np.ndarray | None:
    """The receptive fields of a channels-last batch ``m`` (B, *spatial, C) as a strided view
    (B, *out, C, *kernel_shape), zero-padded as Keras pads ('valid', 'same', 'causal'), for a
    convolution or pooling ``layer``; ``None`` where its layout is not covered (channels-first)."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    padding = str(getattr(layer, "padding", "valid")).lower()
    nd = len(kernel_shape)
    strides = _per_axis(getattr(layer, "strides", None) or kernel_shape, nd)
    dilation = _per_axis(getattr(layer, "dilation_rate", 1), nd)
    pads, extents, counts = [(0, 0)], [], []
    for n, ks, s, d in zip(m.shape[1:-1], kernel_shape, strides, dilation, strict=True):
        extent = (ks - 1) * d + 1
        if padding == "same":
            count = -(-n // s)
            total = max((count - 1) * s + extent - n, 0)
            pads.append((total // 2, total - total // 2))
        elif padding == "causal":
            count = -(-n // s)
            pads.append((extent - 1, 0))
        elif padding == "valid":
            count = (n - extent) // s + 1
            pads.append((0, 0))
        else:
            return None
        extents.append(extent)
        counts.append(count)
    pads.append((0, 0))
    padded = np.pad(m, pads) if any(p != (0, 0) for p in pads) else m
    view = np.lib.stride_tricks.sliding_window_view(padded, extents, axis=tuple(range(1, nd + 1)))
    index = (
        (slice(None),)
        + tuple(slice(0, c * s, s) for c, s in zip(counts, strides, strict=True))
        + (slice(None),)
        + tuple(slice(None, None, d) for d in dilation)
    )
    return view[index]


def _conv_forward(layer: Any) -> Forward:
    """Keras' cross-correlation of the layer, in float64 NumPy (microseconds on the small maps
    of a search candidate, where a TensorFlow call costs a millisecond); TensorFlow for
    layouts the NumPy path does not cover (channels-first, grouped kernels)."""

    def forward(m: np.ndarray, k: np.ndarray) -> np.ndarray:
        nd = k.ndim - 2
        if k.shape[-2] == m.shape[-1]:  # groups == 1
            w = windows(m, k.shape[:nd], layer)
            if w is not None:  # (B, *out, C, *ks) . (*ks, C, O)
                axes = list(range(w.ndim - nd, w.ndim)) + [w.ndim - nd - 1]
                return np.tensordot(w, k, axes=(axes, list(range(nd)) + [nd]))
        return _np(layer.convolution_op(keras.ops.convert_to_tensor(m, "float32"),
                                        keras.ops.convert_to_tensor(k, "float32")))

    return forward


_BaseConv = type(keras.layers.Conv2D(1, 1)).__mro__[1]
_BaseDepthwise = type(keras.layers.DepthwiseConv2D(1)).__mro__[1]
_BaseSeparable = type(keras.layers.SeparableConv2D(1, 1)).__mro__[1]
_BaseTranspose = type(keras.layers.Conv2DTranspose(1, 1)).__mro__[1]


@register_estimator(_BaseConv)
def _conv(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x = inputs[0]
    ks = layer.kernel.shape
    fan_in = int(np.prod(ks[:-1]))  # kernel spatial size * input channels / groups
    out_shape = _sample_shape(layer, node.outputs[0])
    pre, plan, std = linear_estimate(
        layer, x, ctx, kernel_var=layer.kernel, bias_var=layer.bias, forward=_conv_forward(layer),
        fan_in=fan_in, out_shape=out_shape, channel_axis=_channel_axis(layer, len(out_shape)),
    )
    if (len(ks) == len(x.shape) + 1 and ks[-2] == x.shape[-1]
            and layer.data_format == "channels_last"):
        pre, plan, std = _correlate(x, pre, plan, std, ctx, layer.kernel, lambda k: k,
                                    tuple(layer.strides), tuple(layer.dilation_rate), layer.bias,
                                    padded=layer)
        if len(ks) == 3 and ks[0] == 1:  # a one-tap Conv1D is a Dense at every position
            tabled = _tabulate(x, pre, plan, std, ctx, layer.kernel, layer.bias, lambda k: k[0])
            if tabled is not None:
                pre, plan, std = tabled
        if ctx.realized and len(ks) == 3:
            final = np.asarray(_final_kernel(layer.kernel, plan, ctx), float)
            if _as_int(layer.dilation_rate) == 1:
                pre = _summed_mixture(x, pre, final)
            pre = _summed_through(layer, x, pre, final)
    return _finish(layer, pre, plan, std, ctx)


def _depthwise_forward(layer: Any) -> Forward:
    def forward(m: np.ndarray, k: np.ndarray) -> np.ndarray:
        nd = k.ndim - 2
        w = windows(m, k.shape[:nd], layer)
        if w is not None:  # (B, *out, C, *ks) . (*ks, C, M) -> (B, *out, C * M)
            flat = w.reshape(*w.shape[: nd + 2], -1)
            taps = k.reshape(-1, *k.shape[nd:])
            out = np.einsum("...ck,kcm->...cm", flat, taps)
            return out.reshape(*out.shape[:-2], -1)
        return _np(keras.ops.depthwise_conv(
            keras.ops.convert_to_tensor(m, "float32"), keras.ops.convert_to_tensor(k, "float32"),
            strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate,
            data_format=layer.data_format))

    return forward


@register_estimator(_BaseDepthwise)
def _depthwise(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    kernel = layer.kernel if hasattr(layer, "kernel") else layer.depthwise_kernel
    out_shape = _sample_shape(layer, node.outputs[0])
    pre, plan, std = linear_estimate(
        layer, inputs[0], ctx, kernel_var=kernel, bias_var=layer.bias,
        forward=_depthwise_forward(layer), fan_in=int(np.prod(kernel.shape[:-2])),
        out_shape=out_shape, channel_axis=_channel_axis(layer, len(out_shape)),
    )
    if len(kernel.shape) == len(inputs[0].shape) + 1 and layer.data_format == "channels_last":
        pre, plan, std = _correlate(inputs[0], pre, plan, std, ctx, kernel, _depthwise_as_full,
                                    tuple(layer.strides), tuple(layer.dilation_rate), layer.bias)
        if len(kernel.shape) == 3 and kernel.shape[0] == 1:  # one tap: per position
            tabled = _tabulate(inputs[0], pre, plan, std, ctx, kernel, layer.bias,
                               lambda k: _depthwise_as_full(k)[0])
            if tabled is not None:
                pre, plan, std = tabled
        if ctx.realized and len(kernel.shape) == 3:
            full = _depthwise_as_full(np.asarray(_final_kernel(kernel, plan, ctx), float))
            if _as_int(layer.dilation_rate) == 1:
                pre = _summed_mixture(inputs[0], pre, full)
            pre = _summed_through(layer, inputs[0], pre, full)
    if inputs[0].phase is not None and tuple(kernel.shape[1:]) == (1, 1) and pre.is_map:
        pre = _filtered_phase(layer, inputs[0], pre, _final_kernel(kernel, plan, ctx))
    return _finish(layer, pre, plan, std, ctx)


def _filtered_phase(layer: Any, x: Signal, pre: Signal, kernel: np.ndarray) -> Signal:
    """A one-tap-per-position filter of a laid-out map (a one-channel depthwise convolution):
    the output's phases, and the average correlation from them."""
    size, stride = kernel.shape[0], int(layer.strides[0])
    if int(layer.dilation_rate[0]) != 1:
        return pre
    rho, _ = phases.window(x.phase, np.broadcast_to(x.var, x.shape),
                           np.broadcast_to(x.mean, x.shape), np.asarray(kernel, float)[:, 0, 0],
                           stride, left_padding(layer, x.shape[0], size), pre.shape[0])
    return phases.attach(pre, rho)


@register_estimator(_BaseSeparable)
def _separable(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x = inputs[0]
    dk, pk = layer.depthwise_kernel, layer.pointwise_kernel
    out_shape = _sample_shape(layer, node.outputs[0])
    ch = _channel_axis(layer, len(out_shape))
    depthwise = _depthwise_forward(layer)
    mid_shape = list(out_shape)
    mid_shape[ch] = int(dk.shape[-2] * dk.shape[-1])
    keep = ctx.keeps(layer)
    mid, plan, _ = linear_estimate(
        layer, x, ctx, kernel_var=dk, forward=depthwise, fan_in=int(np.prod(dk.shape[:-2])),
        out_shape=tuple(mid_shape), channel_axis=ch, keep=keep,
    )
    tracked = len(dk.shape) == len(x.shape) + 1 and layer.data_format == "channels_last"
    if tracked:
        mid, plan, _ = _correlate(x, mid, plan, None, ctx, dk, _depthwise_as_full,
                                  tuple(layer.strides), tuple(layer.dilation_rate))
        if len(dk.shape) == 3 and dk.shape[0] == 1:  # one tap: the table goes on to the
            tabled = _tabulate(x, mid, plan, None, ctx, dk, None,  # pointwise step
                               lambda k: _depthwise_as_full(k)[0])
            if tabled is not None:
                mid, plan, _ = tabled

    def pointwise(m: np.ndarray, k: np.ndarray) -> np.ndarray:
        if layer.data_format == "channels_last":
            return m @ k.reshape(k.shape[-2], k.shape[-1])
        return _np(keras.ops.conv(keras.ops.convert_to_tensor(m, "float32"),
                                  keras.ops.convert_to_tensor(k, "float32"),
                                  strides=1, padding="valid", data_format=layer.data_format))

    pre, plan2, std = linear_estimate(
        layer, mid, ctx, kernel_var=pk, bias_var=layer.bias, forward=pointwise,
        fan_in=int(np.prod(pk.shape[:-1])), out_shape=out_shape, channel_axis=ch, keep=keep,
    )
    if tracked:
        pre, plan2, std = _correlate(mid, pre, plan2, std, ctx, pk, lambda k: k,
                                     bias_var=layer.bias)
        if len(pk.shape) == 3:  # the pointwise step is a Dense at every position
            tabled = _tabulate(mid, pre, plan2, std, ctx, pk, layer.bias, lambda k: k[0])
            if tabled is not None:
                pre, plan2, std = tabled
    plan = {**plan, **plan2}
    if ctx.realized and tracked and len(dk.shape) == 3:
        full = _depthwise_as_full(np.asarray(_final_kernel(dk, plan, ctx), float))
        pre = _summed_through(layer, x, pre,
                              full @ np.asarray(_final_kernel(pk, plan, ctx), float)[0])
    return _finish(layer, pre, plan, std, ctx)


@register_estimator(_BaseTranspose)
def _conv_transpose(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    ks = layer.kernel.shape  # (*spatial, filters, in_channels)
    spatial = int(np.prod(ks[:-2]))
    fan_in = spatial * ks[-1] / float(np.prod(layer.strides))
    out_shape = _sample_shape(layer, node.outputs[0])

    def forward(m: np.ndarray, k: np.ndarray) -> np.ndarray:
        return _np(keras.ops.conv_transpose(
            keras.ops.convert_to_tensor(m, "float32"), keras.ops.convert_to_tensor(k, "float32"),
            strides=layer.strides, padding=layer.padding, output_padding=layer.output_padding,
            data_format=layer.data_format, dilation_rate=layer.dilation_rate))

    pre, plan, std = linear_estimate(
        layer, inputs[0], ctx, kernel_var=layer.kernel, bias_var=layer.bias, forward=forward,
        fan_in=fan_in, out_shape=out_shape, channel_axis=_channel_axis(layer, len(out_shape)),
    )
    return _finish(layer, pre, plan, std, ctx)


def _einsum_fan_in(equation: str, kernel_shape: tuple[int, ...]) -> int:
    lhs, out = equation.replace(" ", "").split("->")
    x_spec, k_spec = lhs.split(",")
    return int(np.prod([kernel_shape[i] for i, c in enumerate(k_spec)
                        if c in x_spec and c not in out] or [1]))


@register_estimator(keras.layers.EinsumDense)
def _einsum_dense(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    eq = layer.equation
    pre, plan, std = linear_estimate(
        layer, inputs[0], ctx, kernel_var=layer.kernel, bias_var=layer.bias,
        forward=lambda m, k: _np(keras.ops.einsum(eq, m, k)),
        fan_in=_einsum_fan_in(eq, tuple(layer.kernel.shape)),
        out_shape=_sample_shape(layer, node.outputs[0]),
    )
    return _finish(layer, pre, plan, std, ctx)


@register_estimator(keras.layers.Embedding)
def _embedding(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    out_shape = _sample_shape(layer, node.outputs[0])
    table_var = layer.embeddings
    if ctx.keeps(layer):
        table = ctx.value(table_var)
        std = float(np.std(table))
        plan: dict[str, np.ndarray] = {}
    else:
        table = ctx.draw(tuple(table_var.shape), ctx.next_rng()) * math.sqrt(ctx.target)
        if ctx.realized:  # rescale so the drawn table's variance is exactly the target
            table = (table - 0.0) * math.sqrt(ctx.target / max(np.var(table), 1e-30))
        std = float(np.std(table))
        plan = {table_var.path: table}
    # each output element is a table entry at an unknown index: per-dimension moments
    mean, var = table.mean(axis=0), table.var(axis=0)
    x = inputs[0]
    if not ctx.realized:
        return Estimate([Signal.scalar(float(mean.mean()), float(np.mean(var + mean**2) - mean.mean() ** 2), out_shape)], plan, std)
    del x
    return Estimate([Signal(np.broadcast_to(mean, out_shape).copy(),
                            np.broadcast_to(var, out_shape).copy(), out_shape)], plan, std)


@register_estimator(keras.layers.MultiHeadAttention)
def _mha(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    """Q/K/V/output are EinsumDense; the attention output is a convex mixture of values.

    The mixture of T independent unit-variance values with softmax weights a has variance
    E[sum a_t^2], which is computed for logits q.k/sqrt(d) ~ N(0, 1) by a seeded Monte Carlo
    over T (the softmax rule); the output projection then brings the block to the target.
    """
    q = inputs[0]
    v = inputs[1] if len(inputs) > 1 else q
    k = inputs[2] if len(inputs) > 2 else v
    plan: dict[str, np.ndarray] = {}
    out_shape = _sample_shape(layer, node.outputs[0])
    if ctx.keeps(layer):
        return Estimate([], {}, None, note="probe")  # kept MHA: the walk probes it
    for sub, sig in ((layer._query_dense, q), (layer._key_dense, k), (layer._value_dense, v)):
        ex2 = ctx.require_second_moment(sig, f"layer '{ctx.current_path}' ({sub.name})")
        fan = _einsum_fan_in(sub.equation, tuple(sub.kernel.shape))
        plan[sub.kernel.path] = ctx.draw(tuple(sub.kernel.shape), ctx.next_rng()) * math.sqrt(1.0 / (fan * ex2))
        if sub.bias is not None:
            plan[sub.bias.path] = np.zeros(tuple(sub.bias.shape))
    length = int(v.shape[0]) if len(v.shape) > 1 else 1
    mix = softmax_mixture_weight(length, seed=ctx.seed)
    out = layer._output_dense
    fan = _einsum_fan_in(out.equation, tuple(out.kernel.shape))
    std = math.sqrt(ctx.target / (fan * mix))
    plan[out.kernel.path] = ctx.draw(tuple(out.kernel.shape), ctx.next_rng()) * std
    if out.bias is not None:
        plan[out.bias.path] = np.zeros(tuple(out.bias.shape))
    outputs = [Signal.scalar(0.0, ctx.target, out_shape)]
    if len(node.outputs) > 1:  # attention scores: mean 1/T
        score_shape = _sample_shape(layer, node.outputs[1])
        outputs.append(Signal.scalar(1.0 / length, mix / length - 1.0 / length**2, score_shape))
    return Estimate(outputs, plan, std)
