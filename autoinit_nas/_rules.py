"""Estimators of layers without weights to scale: activations, merges, regularization,
pooling, normalization and data movement (DESIGN.md, "Other layers")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import keras
import numpy as np

from autoinit_nas import _links
from autoinit_nas import _phases as phases
from autoinit_nas._context import Context, Estimate
from autoinit_nas._correlation import (
    centered_corr,
    effective_count,
    fit_lags,
    global_mean_var,
    pool_corr,
    window_factor,
)
from autoinit_nas._functions import (
    apply_fn_to_signal,
    apply_function,
    as_numpy_fn,
    linear_combination,
    merged_table,
    mixture_or_gaussian,
    monte_carlo,
    non_gaussian,
    piecewise_relu,
    source_values,
    table_cov,
    table_is_linear,
    table_moments,
    table_of,
    table_root,
    white_positions,
    with_table,
)
from autoinit_nas._linear import left_padding, sum_cov, windows, with_sum_cov
from autoinit_nas._mixture import Mixture, channel_moments, source_nodes
from autoinit_nas._moments import (
    PiecewiseLinear,
    clark_max,
    clark_max_of,
    max_correlation,
    max_of_groups,
    max_of_iid,
    normal_cdf,
)
from autoinit_nas._registry import register_estimator
from autoinit_nas._signal import Signal, Source
from autoinit_nas._xcorr import (
    MAX_FLAT,
    _center,
    channel_mean,
    concat_xcorr,
    correlation_of,
    flattened_corr,
    global_mean_cov,
    pooled_xcorr,
    rescale_xcorr,
    sequence_xcorr,
)

__all__ = ["merge_coefficients", "merge_signals", "normalization_stats", "run_on_maps"]

L = keras.layers


def _np(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=float)


def _shape(node: Any, i: int = 0) -> tuple[int, ...]:
    return tuple(int(d) for d in node.outputs[i].shape[1:])


def run_on_maps(fn: Any, x: Signal, out_shape: tuple[int, ...], *, var_fn: Any = None,
                numpy: bool = False) -> Signal:
    """Push mean and variance maps through a data-movement op (reshape, crop, pad, ...): a
    Keras call on a batch of one, or with ``numpy`` a function of one sample's map."""
    var_fn = fn if var_fn is None else var_fn
    scalar = not x.is_map
    xm = x.as_map()

    def go(f: Any, m: np.ndarray) -> np.ndarray:
        if numpy:
            return np.asarray(f(m), dtype=float)
        return _np(f(keras.ops.convert_to_tensor(m[None], "float32")))[0]

    mean, var = go(fn, xm.mean), go(var_fn, xm.var)
    source = None
    if x.source is not None and not scalar and np.shape(x.source.mean) == x.shape:
        source = Source(go(fn, x.source.mean), go(var_fn, x.source.var), x.source.fn,
                        exact=x.source.exact)
    out = Signal(mean, np.maximum(var, 0), out_shape, source)
    return out.collapse() if scalar else out


# ---------------------------------------------------------------- activations
@register_estimator(L.Activation)
def _activation(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    return Estimate([apply_function(layer.activation, inputs[0], seed=ctx.seed)])


def _pl(fn: PiecewiseLinear, x: Signal) -> Signal:
    out = apply_fn_to_signal(fn, x)
    if not x.is_map and out.is_map:  # per-channel slopes (PReLU) on a scalar signal
        return replace(out.collapse(), source=out.source)
    return out


@register_estimator(L.ReLU)
def _relu(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    fn = piecewise_relu(float(layer.negative_slope), None if layer.max_value is None
                        else float(layer.max_value), float(layer.threshold))
    return Estimate([_pl(fn, inputs[0])])


@register_estimator(L.LeakyReLU)
def _leaky(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    return Estimate([_pl(piecewise_relu(float(layer.negative_slope)), inputs[0])])


@register_estimator(L.PReLU)
def _prelu(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    alpha = ctx.value(layer.alpha)
    return Estimate([_pl(PiecewiseLinear((0.0,), (alpha, 1.0), (0.0, 0.0)), inputs[0])])


@register_estimator(L.ELU)
def _elu_layer(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    return Estimate([apply_fn_to_signal(as_numpy_fn(layer), inputs[0])])


@register_estimator(L.Softmax)
def _softmax_layer(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[-1]
    axis = axis - 1 if axis > 0 else axis
    return Estimate([apply_function(keras.activations.softmax, inputs[0], axis=axis, seed=ctx.seed)])


# ---------------------------------------------------------------- merges
def merge_coefficients(kind: str, n: int) -> list[float] | None:
    """The coefficients of a linear merge (add, subtract, average) of ``n`` inputs, else None."""
    return {"add": [1.0] * n, "subtract": [1.0, -1.0], "average": [1.0 / n] * n}.get(kind)


def merge_signals(kind: str, xs: list[Signal], out_shape: tuple[int, ...],
                  ctx: Context | None = None) -> Signal:
    """Add, subtract, average, multiply, maximum, minimum of independent inputs (linear merges
    of inputs related through a fork: with their covariance, given the walk's ``ctx``)."""
    coeffs = merge_coefficients(kind, len(xs))
    if coeffs is not None:
        cross = None if ctx is None else _links.pairwise(ctx, xs)
        out = linear_combination(xs, coeffs, out_shape, cross=cross)
        return out if ctx is None else _links.with_merged_sum_cov(ctx, xs, coeffs, out)
    ms = [x.mean for x in xs]
    vs = [x.var for x in xs]
    if kind == "multiply":
        mean = np.prod(np.broadcast_arrays(*ms), axis=0)
        second = np.prod(np.broadcast_arrays(*[v + m**2 for m, v in zip(ms, vs, strict=True)]), axis=0)
        var = second - mean**2
    elif kind in ("maximum", "minimum"):
        sign = 1.0 if kind == "maximum" else -1.0
        mean, var = sign * ms[0], vs[0]
        for m, v in zip(ms[1:], vs[1:], strict=True):
            mean, var = clark_max(mean, var, sign * m, v)
        mean = sign * mean
    else:
        raise ValueError(f"Unknown merge kind: {kind!r}")
    if not any(x.is_map for x in xs):
        return Signal.scalar(float(np.mean(mean)), float(np.mean(var)), out_shape)
    return Signal(np.broadcast_to(mean, out_shape).astype(float),
                  np.maximum(np.broadcast_to(var, out_shape), 0).astype(float), out_shape)


for _cls, _kind in ((L.Add, "add"), (L.Subtract, "subtract"), (L.Average, "average"),
                    (L.Multiply, "multiply"), (L.Maximum, "maximum"), (L.Minimum, "minimum")):
    def _make(kind: str) -> Any:
        def _merge(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
            return Estimate([merge_signals(kind, inputs, _shape(node), ctx)])
        _merge.__name__ = f"_{kind}"
        return _merge
    register_estimator(_cls)(_make(_kind))


@register_estimator(L.Concatenate)
def _concatenate(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    out_shape = _shape(node)
    axis = layer.axis - 1 if layer.axis > 0 else layer.axis
    if any(x.is_map for x in inputs):
        maps = [x.as_map() for x in inputs]
        mean = np.concatenate([m.mean for m in maps], axis=axis)
        var = np.concatenate([m.var for m in maps], axis=axis)
        corr = None
        if len(out_shape) == 2 and axis % 2 == 1 and any(m.corr is not None for m in maps):
            corr = np.concatenate([fit_lags(m.corr, out_shape[0], m.shape[-1], out_shape[-1])
                                   for m in maps],
                                  axis=1)
        xcorr = None
        channels_axis = axis % len(out_shape) == len(out_shape) - 1

        related = channels_axis and any(
            _links.related(ctx, inputs[i], inputs[j])
            for i in range(len(inputs)) for j in range(i + 1, len(inputs)))
        if channels_axis and (related or any(m.xcorr is not None for m in maps)):
            # channels side by side: each part's own correlation, and theirs through a fork
            xcorr = concat_xcorr([(channel_mean(m.var, m.shape), m.xcorr, m.corr) for m in maps],
                                 tuple(out_shape[:-1]) or (1,),
                                 _links.pairwise(ctx, inputs) if related else None)
        mixture = None
        if channels_axis and any(m.mixture is not None or m.source is not None for m in maps):
            # the parts' shapes side by side, for a function after the concatenation
            mixture = Mixture.stacked([mixture_or_gaussian(m, m.shape[-1]) for m in maps])
        out = Signal(mean, var, out_shape, mixture=mixture, corr=corr, xcorr=xcorr)
        if len(out_shape) == 1 and xcorr is None:
            out = _flat_concatenated(out, maps)
        if channels_axis:
            out = _links.with_merged_sum_cov(ctx, list(inputs), None, merged_table(out, list(inputs)))
        return Estimate([out])
    sizes = np.array([x.shape[axis] for x in inputs], float)
    w = sizes / sizes.sum()
    mean = float(sum(wi * x.total_mean for wi, x in zip(w, inputs, strict=True)))
    second = float(sum(wi * x.second_moment for wi, x in zip(w, inputs, strict=True)))
    return Estimate([Signal.scalar(mean, second - mean**2, out_shape)])


def _flat_concatenated(out: Signal, maps: list[Signal]) -> Signal:
    """Flat vectors end to end: each keeps the correlation between its own elements (phases of
    a layout, a stationary correlation, or a small vector's xcorr), for the layers that read
    the result as a sequence. Past the phase budget, the stationary correlation only."""
    parts = []
    for m in maps:
        rho = m.phase if m.phase is not None else _laid_out(m)
        if rho is None:
            rho = np.ones((1, 1)) if m.corr is None else m.corr[:, :1].T
        parts.append((rho, np.broadcast_to(m.var, m.shape)))
    if all(rho.shape[1] == 1 for rho, _ in parts):
        return out  # every part white
    rho = phases.concatenated(parts)
    if rho is not None:
        return phases.attach(out, rho)
    stationary = [(phases.averaged(r, v, len(v)).T, v) for r, v in parts]
    return replace(out, corr=phases.concatenated(stationary).T)


# ---------------------------------------------------------------- regularization
@register_estimator(L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D)
def _dropout(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x, p = inputs[0], float(layer.rate)
    second = (x.var + x.mean**2) / (1.0 - p)
    out = x.like(x.mean, second - x.mean**2)
    if x.corr is not None and out.is_map and not isinstance(layer, _SPATIAL_DROPOUT):
        # Independent masks add white noise: covariances between positions are unchanged.
        # (a flat vector's correlation is over its positions in order: one channel)
        shape = x.shape if len(x.shape) == 2 else (int(np.prod(x.shape)), 1)
        before = channel_mean(np.broadcast_to(x.var, x.shape).reshape(shape), shape)
        after = channel_mean(np.broadcast_to(out.var, x.shape).reshape(shape), shape)
        corr = x.corr * (before / np.maximum(after, 1e-300))[None, :]
        corr[0] = 1.0
        out = replace(out, corr=corr, xcorr=rescale_xcorr(x.xcorr, before, after),
                      phase=_noisy_phase(x, out))
    elif x.xcorr is not None and out.is_map and not isinstance(layer, _SPATIAL_DROPOUT):
        before, after = channel_mean(x.var, x.shape), channel_mean(out.var, x.shape)
        out = replace(out, xcorr=rescale_xcorr(x.xcorr, before, after))
    if p > 0.0:
        # each element is 0 or x / (1 - p): a mixture, not a Gaussian, for the next function
        channels = x.shape[-1] if out.is_map and x.shape else 1
        out = replace(out, mixture=mixture_or_gaussian(x, channels).dropped(p))
    summed = sum_cov(x) if out.is_map and not isinstance(layer, _SPATIAL_DROPOUT) else None
    if summed is not None:  # the masks' noise: independent at every element
        noise = np.sum(np.broadcast_to(out.var, x.shape) - np.broadcast_to(x.var, x.shape), 0)
        out = with_sum_cov(out, summed + np.diag(noise))
    if (p > 0.0 and out.is_map and x.shape and x.source is None and x.mixture is None
            and not isinstance(layer, _SPATIAL_DROPOUT)):
        # every element 0 or a Gaussian over (1 - p): a global max over positions reads it
        out = replace(out, meta={**out.meta, "dropped": (p, np.broadcast_to(x.mean, x.shape),
                                                         np.broadcast_to(x.var, x.shape))})
    return Estimate([out])


def _dropped(x: Signal) -> tuple[float, np.ndarray, np.ndarray] | None:
    """The rate and the Gaussian moments under a dropout that ``x`` is the output of (None when
    ``x`` is not, or a rule after it kept the record but changed the values)."""
    record = x.meta.get("dropped")
    if record is None or x.source is not None:
        return None
    p, mean, var = record
    if not (np.allclose(np.broadcast_to(x.mean, x.shape), mean, rtol=1e-9, atol=1e-12)
            and np.allclose(np.broadcast_to(x.var, x.shape),
                            (var + mean**2) / (1.0 - p) - mean**2, rtol=1e-6, atol=1e-12)):
        return None
    return p, mean, var


#: Points of the grid on each side of 0 on which ``_max_of_dropped`` integrates the CDF.
_DROPPED_GRID = 256


def _max_of_dropped(p: float, mean: np.ndarray, var: np.ndarray, count: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (rows of the ``(C, G)`` moments under the dropout of ``_position_groups``),
    the mean and variance of the maximum of ``count[c, g]`` draws of ``0`` (rate ``p``) or
    ``N(mean, var) / (1 - p)``: ``P(M <= t) = prod_g (p [t >= 0] + (1 - p) Phi(((1 - p) t -
    mean) / sd))^count``, integrated as ``E[M] = lo + int (1 - F)``, ``E[(M - lo)^2] =
    int 2 (t - lo) (1 - F)`` on each side of the atom at 0 apart."""
    channels = mean.shape[0]
    sd = np.sqrt(np.maximum(var, 1e-300))
    lo = np.minimum(np.min(mean - 8.0 * sd, axis=1) / (1.0 - p), 0.0)
    hi = np.maximum(np.max(mean + 8.0 * sd, axis=1) / (1.0 - p), 0.0)
    u = np.linspace(0.0, 1.0, _DROPPED_GRID)
    first, second = np.zeros(channels), np.zeros(channels)
    for side, (a, b) in enumerate(((lo, np.zeros(channels)), (np.zeros(channels), hi))):
        t = a[None, :] + (b - a)[None, :] * u[:, None]  # (grid, C)
        z = ((1.0 - p) * t[:, :, None] - mean[None]) / sd[None]  # (grid, C, G)
        cdf = p * float(side == 1) + (1.0 - p) * normal_cdf(z)
        tail = 1.0 - np.exp(np.sum(np.log(np.maximum(cdf, 1e-300)) * count[None], axis=2))
        first += np.trapezoid(tail, t, axis=0)
        second += np.trapezoid(2.0 * (t - lo[None, :]) * tail, t, axis=0)
    return lo + first, np.maximum(second - first**2, 0.0)


_SPATIAL_DROPOUT = (L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D)


def _noisy_phase(x: Signal, out: Signal) -> np.ndarray | None:
    """Phases after independent noise per element raised the variance from x's to out's."""
    if x.phase is None:
        return None
    period = len(x.phase)
    before = phases.per_phase(np.broadcast_to(x.var, x.shape), period)
    after = phases.per_phase(np.broadcast_to(out.var, x.shape), period)
    return phases.rescale(x.phase, before, after)


@register_estimator(L.GaussianNoise)
def _gaussian_noise(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x = inputs[0]
    return Estimate([x.like(x.mean, x.var + float(layer.stddev) ** 2)])


@register_estimator(L.GaussianDropout)
def _gaussian_dropout(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x, p = inputs[0], float(layer.rate)
    second = (x.var + x.mean**2) * (1.0 + p / (1.0 - p))
    return Estimate([x.like(x.mean, second - x.mean**2)])


_PASS_THROUGH = [L.AlphaDropout, L.ActivityRegularization, L.Masking, L.Identity]
_MOVERS = [L.Flatten, L.Reshape, L.Permute, L.RepeatVector,
           L.Cropping1D, L.Cropping2D, L.Cropping3D,
           L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
           L.UpSampling1D, L.UpSampling2D, L.UpSampling3D]


@register_estimator(*_PASS_THROUGH)
def _identity(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    return Estimate([inputs[0]])


@register_estimator(*_MOVERS)
def _mover(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x = inputs[0]
    out_shape = _shape(node)
    changes_values = isinstance(layer, (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
                                        L.Cropping1D, L.Cropping2D, L.Cropping3D))
    if not x.is_map and not changes_values:
        return Estimate([Signal(x.mean, x.var, out_shape, x.source, x.mixture)])
    if isinstance(layer, (L.Flatten, L.Reshape)) and (
            getattr(layer, "data_format", "channels_last") == "channels_last"):
        # C-order reshapes of one sample: NumPy, no TensorFlow call
        out = run_on_maps(lambda m: np.reshape(m, out_shape), x, out_shape, numpy=True)
    else:
        out = run_on_maps(layer.call, x, out_shape)
    if out.is_map:
        out = replace(out, **_moved(layer, x, out_shape))
        if out.source is not None and x.source is not None:
            # the Gaussian under it moves alike: a function applied next composes with it
            root = Signal(x.source.mean, x.source.var, x.shape, corr=x.source.corr,
                          xcorr=x.source.xcorr, phase=x.source.phase)
            kept = {k: v for k, v in _moved(layer, root, out_shape).items() if k != "meta"}
            out = replace(out, source=replace(out.source, **kept))
        if x.mixture is not None:
            out = replace(out, mixture=_moved_mixture(layer, x, out_shape))
            if (out.mixture is None and len(x.shape) == 1 and out_shape == (x.shape[0], 1)
                    and x.mixture.channels == x.shape[0]):
                # a flat vector laid out as one channel: each element keeps its own shape,
                # for a max pooling over neighbours (_window_maxima)
                out = replace(out, meta={**out.meta, "elements": x.mixture})
    return Estimate([out])


def _moved_mixture(layer: Any, x: Signal, out_shape: tuple[int, ...]) -> Mixture | None:
    """The per-channel mixture after a mover: one channel's holds for every element; a
    Flatten of a sequence repeats its channels' in order (zero padding changes values: none)."""
    mix = x.mixture
    if isinstance(layer, (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Permute)):
        return None  # (Permute: the last axis may be another one of the same size)
    if mix.channels == 1 or (out_shape and mix.channels == out_shape[-1]
                             and x.shape[-1] == out_shape[-1]):
        return mix
    fields = (mix.atoms, mix.probs, mix.spread, mix.noise_mean, mix.noise_var)
    if isinstance(layer, L.Flatten) and len(out_shape) == 1 and mix.channels == x.shape[-1]:
        reps = int(np.prod(x.shape[:-1]))
        return Mixture(*(np.tile(a, (reps,) + (1,) * (a.ndim - 1)) for a in fields))
    if len(x.shape) == 1 and len(out_shape) >= 2 and mix.channels == x.shape[0]:
        # a flat vector's mixture per element, back to a map: one per channel when it repeats
        # with the map's channels (as a Flatten lays them out)
        c = out_shape[-1]
        if all(np.array_equal(a.reshape(-1, c, *a.shape[1:]),
                              np.broadcast_to(a[:c], (a.shape[0] // c, *a[:c].shape)))
               for a in fields):
            return Mixture(*(a[:c] for a in fields))
    return None


def _moved(layer: Any, x: Signal, out_shape: tuple[int, ...]) -> dict[str, Any]:
    """The correlations that a Flatten of a sequence, a one-channel layout of a flat vector, the
    sequence a flat vector laid out or a Cropping1D keep, as the fields of the moved signal
    (none for other movers)."""
    if isinstance(layer, L.Flatten) and len(x.shape) == 2:
        var_map = np.broadcast_to(x.var, x.shape)
        # the flat vector's positions in order, as a one-channel sequence would see them
        fields: dict[str, Any] = {"corr": flattened_corr(var_map, x.xcorr, x.corr),
                                  "phase": x.phase if x.shape[-1] == 1 else _laid_out(x)}
        meta: dict[str, Any] = {}
        if x.corr is not None:  # a Dense layer reading it needs the positions' correlation
            meta["flat"] = (var_map, x.corr)
        table = table_of(x)
        if table is not None and white_positions(x):
            # channels of one white variable: they covary at each position, and only there
            meta["flat_table"] = (var_map, correlation_of(table_cov(table)[None])[0])
        if meta:
            fields["meta"] = meta
        return fields
    if isinstance(layer, L.Cropping1D):
        # dropping positions at the ends keeps the correlations of those that stay
        start = int(layer.cropping[0])
        return {"phase": None if x.phase is None else phases.crop(x.phase, start)}
    if _unlays(x, out_shape):
        # the map a flat vector laid out, back (the search space's as_map): the phases hold
        # every correlation between its channels within the tracked lags
        xcorr = phases.to_xcorr(x.phase, out_shape[0])
        corr = np.diagonal(xcorr[xcorr.shape[0] // 2:], axis1=1, axis2=2)
        return {"corr": np.array(corr), "xcorr": xcorr, "phase": None}
    if _lays_out(x, out_shape):
        corr = x.corr
        if x.xcorr is not None:
            corr = flattened_corr(np.broadcast_to(x.var, x.shape)[None], x.xcorr, None)
        if corr is not None:
            return {"corr": corr, "xcorr": sequence_xcorr(corr),
                    "phase": x.phase if x.phase is not None else _laid_out(x)}
    return {}


def _laid_out(x: Signal) -> np.ndarray | None:
    """Phases of the one-channel sequence laying out a map with tracked channel correlation."""
    if x.xcorr is None or len(x.shape) > 2 or x.xcorr.ndim != 3:
        return None
    return phases.from_xcorr(x.xcorr, int(np.prod(x.shape)))


def _unlays(x: Signal, out_shape: tuple[int, ...]) -> bool:
    """A flat vector with phases of period ``C`` reshaped to a ``(length, C)`` sequence."""
    return (len(x.shape) == 1 and len(out_shape) == 2 and out_shape[-1] > 1
            and x.phase is not None and x.phase.shape[0] == out_shape[-1])


def _lays_out(x: Signal, out_shape: tuple[int, ...]) -> bool:
    """A flat vector reshaped to a one-channel sequence of the same order (the search space's
    ``as_seq``)."""
    return (x.is_map and len(x.shape) == 1 and tuple(out_shape) == (x.shape[0], 1)
            and (x.corr is not None or x.xcorr is not None))


# ---------------------------------------------------------------- pooling
def _pool_geometry(layer: Any, x: Signal) -> tuple[Any, Any]:
    """(average-pool op on maps, map of how many values each output pools)."""
    rank = len(x.shape) - 1
    pool = tuple(layer.pool_size)
    strides = tuple(layer.strides) if layer.strides is not None else pool

    if layer.data_format != "channels_first":  # NumPy: no TensorFlow call per map
        axes = tuple(range(-rank, 0))
        count = windows(np.ones((1, *x.shape[:-1], 1)), pool, layer)[0].sum(axis=axes)

        def avg_np(m: np.ndarray) -> np.ndarray:
            return windows(np.asarray(m, float)[None], pool, layer)[0].sum(axis=axes) / count

        return avg_np, count

    def avg(m: np.ndarray) -> np.ndarray:
        return _np(keras.ops.average_pool(keras.ops.convert_to_tensor(m[None], "float32"), pool,
                                          strides, layer.padding, layer.data_format))[0]

    if layer.padding == "valid":
        count = float(np.prod(pool))
    else:
        cf = layer.data_format == "channels_first"
        ones_shape = (1, *x.shape[1:]) if cf else (*x.shape[:-1], 1)
        ones = np.ones((1, *ones_shape), np.float32)
        kernel = np.ones((*pool, 1, 1), np.float32)
        count = _np(keras.ops.conv(ones, kernel, strides, "same", layer.data_format))[0]
        count = np.rint(count)
    del rank
    return avg, count


_AVG = [L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D]
_MAX = [L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D]


@register_estimator(*_AVG)
def _avg_pool(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x, out_shape = inputs[0], _shape(node)
    if _is_identity_pool(layer, x, out_shape):
        return Estimate([x])
    if not x.is_map:
        k = float(np.prod(layer.pool_size))
        return Estimate([Signal.scalar(x.total_mean, float(x.var) / k, out_shape)])
    avg, count = _pool_geometry(layer, x)
    var = avg(x.var) / count
    corr = None
    if len(x.shape) == 2:  # a window mean of a sequence correlates the windows that overlap
        size, stride = _pool_1d(layer)
        x_corr = _positions_corr(x)
        var = var * window_factor(x_corr, size)[None, :]
        corr = pool_corr(x_corr, size, stride, out_shape[0])
    out = Signal(avg(x.mean), var, out_shape, corr=corr, xcorr=_window_xcorr(layer, x, out_shape))
    if x.phase is not None:
        size = _pool_1d(layer)[0]
        out = _pooled_phase(layer, x, out, np.full(size, 1.0 / size))
    summed = sum_cov(x) if "sum_cov" in x.meta else None  # carried past the channel budget
    size, stride = _pool_1d(layer) if summed is not None else (0, 0)
    if summed is not None and size == stride and out_shape[0] * size == x.shape[0]:
        # windows that tile the sequence: the pooled sum is the input's over the window size
        out = with_sum_cov(out, summed / size**2)
    return Estimate([out])


def _is_identity_pool(layer: Any, x: Signal, out_shape: tuple[int, ...]) -> bool:
    """A pooling window of one element with stride 1 passes its input through unchanged (all of
    its structure: correlation between channels and positions, phases, mixture)."""
    sizes = np.atleast_1d(layer.pool_size).tolist() + np.atleast_1d(layer.strides).tolist()
    return all(int(a) == 1 for a in sizes) and tuple(x.shape) == tuple(out_shape)


def _window_xcorr(layer: Any, x: Signal, out_shape: tuple[int, ...],
                  out: Signal | None = None) -> np.ndarray | None:
    """The correlation between the channels of a sequence's window means, or of its window
    maxima ``out`` (``pooled_xcorr``)."""
    if len(x.shape) != 2 or x.xcorr is None:
        return None
    size, stride = _pool_1d(layer)
    var_out = None if out is None else channel_mean(out.var, out_shape)
    return pooled_xcorr(x.xcorr, x.corr, channel_mean(x.var, x.shape), size, stride,
                        x.shape[0], out_shape[0], var_out)


def _positions_corr(x: Signal) -> np.ndarray:
    """The sequence's correlation between positions; independent positions (None) as lag 0
    only."""
    return x.corr if x.corr is not None else np.ones((1, x.shape[-1]))


def _pool_1d(layer: Any) -> tuple[int, int]:
    size = int(layer.pool_size[0])
    strides = layer.strides if layer.strides is not None else layer.pool_size
    return size, int(strides[0])


def _max_from(x: Signal, pre_mean: Any, pre_var: Any, count: Any, out_shape: tuple) -> Signal:
    fn = x.source.fn if x.source is not None else None
    first, second = max_of_iid(fn, pre_mean, pre_var, count)
    first, var = _mixture_max(x, first, second - first**2, count, out_shape)
    return x.like(first, var, out_shape) if x.is_map else \
        Signal.scalar(float(np.mean(first)), float(np.mean(var)), out_shape)


def _count_per_channel(count: Any, out_shape: tuple) -> np.ndarray:
    """Each output channel's average effective count of draws (``count``: scalar or map)."""
    return channel_mean(np.broadcast_to(np.asarray(count, float), out_shape), out_shape)


def _mixture_max(x: Signal, first: np.ndarray, var: np.ndarray, count: Any,
                 out_shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Maxima of a non-Gaussian signal (a mixture: after dropout, or a Dense layer of one
    variable): per channel the maximum of the mixture's draws against that of the rule the maps
    went by (a Gaussian of the same moments, or the function of a Gaussian that a source stands
    in with) corrects every element's (the maps keep the variation between elements, as
    ``_through_mixture`` does for functions)."""
    table = table_of(x)
    if x.mixture is None or (x.source is not None and x.source.exact and table is None):
        return first, var
    channels = out_shape[-1] if x.is_map and out_shape else 1
    if x.mixture.channels not in (1, channels):
        return first, var
    # a table's exact values (its mixture is re-binned), else the mixture (a one-channel
    # mixture repeated per channel)
    mix = Mixture.points(*table) if table is not None else mixture_or_gaussian(x, channels)
    n = _count_per_channel(count, out_shape) if x.is_map and out_shape else \
        np.full(1, float(np.mean(count)))
    exact_mean, exact_var = mix.max_moments(n)
    by_nodes = table is not None or x.source is not None
    if not by_nodes:
        gauss = Mixture.gaussian(*mix.moments())
    elif x.source is not None:  # the rule it corrects: the source's function of a Gaussian,
        # on the Gauss-Hermite nodes of a table
        gauss = Mixture.points(source_values(x, channels), source_nodes()[1])
    else:  # a Gaussian of the table's moments, on the same nodes
        mean_c, var_c = mix.moments()
        z, w = source_nodes()
        gauss = Mixture.points(mean_c[:, None] + np.sqrt(var_c)[:, None] * z[None, :], w)
    gauss_mean, gauss_var = gauss.max_moments(n)
    if by_nodes:
        # by ratio: a table's maximum can hardly vary (relative variance 1e-8 after a sign),
        # far below the ~1e-4 by which the two discretized maxima differ; a function of a
        # mixture can reach far higher than of the Gaussian its source takes
        ratio = exact_var / np.maximum(gauss_var, 1e-300)
        return np.asarray(first) + (exact_mean - gauss_mean), np.asarray(var) * ratio
    shifted = np.asarray(var) + (exact_var - gauss_var)
    scaled = np.asarray(var) * (exact_var / np.maximum(gauss_var, 1e-300))
    # by ratio where the shift would take most of it away: a maximum the shape bounds (a
    # layer-normed cos, 1/50 of the Gaussians' variance) fell to 0 by a rounding-size mismatch
    return (np.asarray(first) + (exact_mean - gauss_mean),
            np.where(shifted < 0.5 * scaled, scaled, shifted))


#: Groups of positions (by how high their values reach) for the maximum over uneven positions.
_MAX_GROUPS = 16
#: Spread of a channel's standard deviations over positions (relative) up to which a global max
#: still corrects for the channel's mixture (at 0.25 two laid-out genomes of the 1,000 fell out
#: of [0.5, 2], and none came in).
_MILD = 0.1


def _uneven(pm: np.ndarray, pv: np.ndarray) -> bool:
    """Whether the positions (rows) of some channel differ enough in mean or spread that the
    maximum over them is not that of alike values (1% of the channel's spread)."""
    sd = np.sqrt(np.maximum(pv, 0.0))
    scale = np.maximum(np.mean(sd, axis=0), 1e-12)
    spread = np.ptp(pm, axis=0) + np.ptp(sd, axis=0)
    return bool(np.any(spread > 0.01 * scale))


def _position_groups(pm: np.ndarray, pv: np.ndarray, count: Any
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (rows of ``pm``/``pv``, one column per channel) of each channel, sorted by how
    high they reach (mean + 2.5 sd), in up to ``_MAX_GROUPS`` groups: their mean moments and
    their share of the ``count`` effective draws, each ``(channels, groups)``."""
    positions, channels = pm.shape
    groups = min(positions, _MAX_GROUPS)
    order = np.argsort(pm + 2.5 * np.sqrt(np.maximum(pv, 0.0)), axis=0, kind="stable")
    bounds = np.linspace(0, positions, groups + 1).round().astype(int)
    gm, gv, gn = (np.zeros((channels, groups)) for _ in range(3))
    sorted_m = np.take_along_axis(pm, order, axis=0)
    sorted_v = np.take_along_axis(pv, order, axis=0)
    for g, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        gm[:, g] = sorted_m[a:b].mean(axis=0)
        gv[:, g] = sorted_v[a:b].mean(axis=0)
        gn[:, g] = b - a
    gn = gn * (np.broadcast_to(np.asarray(count, float), (channels,)) / positions)[:, None]
    return gm, gv, gn


def _max_of_uneven(x: Signal, pm: np.ndarray, pv: np.ndarray, count: Any,
                   out_shape: tuple) -> Signal:
    """Global max over positions (rows of ``pm``/``pv``, one column per channel) whose moments
    differ: the positions of each channel, sorted by how high they reach (mean + 2.5 sd), form
    up to ``_MAX_GROUPS`` groups; ``count`` effective draws are shared out in proportion."""
    gm, gv, gn = _position_groups(pm, pv, count)
    fn = x.source.fn if x.source is not None else None
    first, second = max_of_groups(fn, gm, gv, gn)
    first, var = first.reshape(out_shape), (second - first**2).reshape(out_shape)
    # a mixture's shape, for channels whose positions differ little (borders of a 'same'
    # convolution); where a few high positions decide, the shape at the channel's average
    # moments moved as many genomes out of [0.5, 2] as in (unevenly laid-out sequences). A
    # table (every position a function of one variable) holds the tails the Gaussians at the
    # positions' moments miss, uneven or not (genome 752: 0.23x the measured variance -> 0.67x)
    sd = np.sqrt(np.maximum(pv, 0.0))
    mild = np.std(sd, axis=0) <= _MILD * np.maximum(np.mean(sd, axis=0), 1e-300)
    mild = mild.reshape(out_shape) | (table_of(x) is not None)
    if np.any(mild):
        m_first, m_var = _mixture_max(x, first, var, count, out_shape)
        first, var = np.where(mild, m_first, first), np.where(mild, m_var, var)
    channels = pm.shape[1]
    if (not np.all(mild) and x.mixture is not None and x.source is None
            and x.mixture.channels == channels and len(out_shape) == 1):
        # the others: the channel's shape at each group's own moments (a layer-normed cos,
        # bounded above, reached 0.09x the Gaussians' variance over uneven positions)
        g_first, g_var = x.mixture.max_over_groups(gm, gv, gn)
        first, var = np.where(mild, first, g_first), np.where(mild, var, g_var)
    return x.like(first, var, out_shape)


def _pre(x: Signal) -> tuple[np.ndarray, np.ndarray]:
    if x.source is not None:
        return np.broadcast_to(x.source.mean, x.shape), np.broadcast_to(x.source.var, x.shape)
    return np.broadcast_to(x.mean, x.shape), np.broadcast_to(x.var, x.shape)


@register_estimator(*_MAX)
def _max_pool(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x, out_shape = inputs[0], _shape(node)
    if _is_identity_pool(layer, x, out_shape):
        return Estimate([x])
    if not x.is_map:
        pm = x.source.mean if x.source is not None else x.mean
        pv = x.source.var if x.source is not None else x.var
        return Estimate([_max_from(x, pm, pv, int(np.prod(layer.pool_size)), out_shape)])
    avg, count = _pool_geometry(layer, x)
    pm, pv = _pre(x)
    corr = None
    if len(x.shape) == 2:  # correlated values: fewer effective draws; overlapping windows
        size, stride = _pool_1d(layer)
        x_corr = _positions_corr(x)
        count = np.minimum(count, effective_count(x_corr, size)[None, :])
        corr = pool_corr(x_corr, size, stride, out_shape[0])
    maxima = _window_maxima(layer, x)
    out = _max_from(x, avg(pm), avg(pv), count, out_shape) if maxima is None else \
        x.like(*maxima, out_shape)
    out = replace(out, corr=corr, xcorr=_window_xcorr(layer, x, out_shape, out))
    if out.is_map and x.shape and non_gaussian(x):
        # the shape of the windows' maximum (of the effective count of draws), for a function
        # after it: relu -> max pooling -> tanh was 1.35x off as Gaussian
        channels = x.shape[-1]
        n = _count_per_channel(count, out_shape)
        out = replace(out, mixture=mixture_or_gaussian(x, channels).max_mixture(n).matched(
            *channel_moments(out.mean, out.var, channels)))
    return Estimate([_pooled_phase(layer, x, out, None) if x.phase is not None else out])


#: Largest correlation between a window's members that ``_window_maxima`` takes as independent
#: draws of their own shapes (above it: Gaussian members, correlated, by Clark's method).
MAX_INDEPENDENT_CORR = 0.1


def _window_maxima(layer: Any, x: Signal) -> tuple[np.ndarray, np.ndarray] | None:
    """For a sequence of Gaussian elements: the mean and variance of each window's maximum over
    the window's own members (uneven, and correlated as the phases say at their elements for a
    one-channel layout of a map or a flat vector; otherwise as the channel's correlation
    between positions says), by Clark's method (exact for windows of two), or exactly for
    independent members whose own shapes a layout kept (``meta['elements']``). None for
    other signals (functions of Gaussians, mixtures: the rule for alike values applies)."""
    if not (len(x.shape) == 2 and x.is_map and x.source is None and x.mixture is None):
        return None
    size, stride = _pool_1d(layer)
    channels = x.shape[-1]

    def members(m: Any) -> np.ndarray:  # (n_out, channels, size)
        return windows(np.broadcast_to(m, x.shape)[None].astype(float), (size,), layer)[0]

    mean, var, inside = members(x.mean), members(x.var), members(np.ones(x.shape)) > 0
    n_out = mean.shape[0]
    mean = np.where(inside, mean, -1e30)  # padding never wins a maximum
    at = members(np.arange(x.shape[0])[:, None] * np.ones(channels)).astype(int)
    if x.phase is not None and channels == 1:
        # each window's own members: a layout need not repeat (a concat)
        rho = phases.correlation(x.phase, at[:, :, :, None], at[:, :, None, :])
    else:  # the channel's correlation at the members' lag
        lag = np.abs(np.arange(size)[:, None] - np.arange(size)[None, :])
        corr = _positions_corr(x)  # (lags, channels)
        at_lag = corr[np.minimum(lag, len(corr) - 1)].transpose(2, 0, 1)  # (C, size, size)
        rho = np.where((lag < len(corr))[None], at_lag, 0.0)[None]
    rho = np.broadcast_to(rho, (n_out, channels, size, size))
    m, v = np.zeros((n_out, channels)), np.zeros((n_out, channels))
    alone = np.zeros((n_out, channels), dtype=bool)
    elements = x.meta.get("elements")
    if channels == 1 and elements is not None and elements.channels == x.shape[0]:
        # windows of independent members, each of its own (non-Gaussian) shape: the product
        # of their CDFs (as Gaussians, heavy-tailed elements' maximum of 3 was 4.4x predicted)
        pairs = inside[:, 0, :, None] & inside[:, 0, None, :]
        alone[:, 0] = np.all(np.abs(rho[:, 0] - np.eye(size)) * pairs <= MAX_INDEPENDENT_CORR,
                             axis=(1, 2))
        if np.any(alone):
            m[alone], v[alone] = elements.max_of(at[alone[:, 0], 0], inside[alone[:, 0], 0])
    rest = ~alone
    if np.any(rest):  # correlated Gaussian members
        sd = np.sqrt(var[rest])
        m[rest], v[rest] = clark_max_of(mean[rest], sd[:, :, None] * sd[:, None, :] * rho[rest])
    return m, v


def _pooled_phase(layer: Any, x: Signal, out: Signal, weights: np.ndarray | None) -> Signal:
    """A pooled laid-out sequence: its phases, and the variance per phase for linear windows
    (``weights``; None: the maximum over the window, whose moments the max rule gave)."""
    size, stride = _pool_1d(layer)
    n_out = out.shape[0]
    pad = left_padding(layer, x.shape[0], size)
    out_period = len(x.phase) // np.gcd(len(x.phase), stride)
    out_var = None if weights is not None else phases.per_phase(out.var, out_period)
    rho, v = phases.window(x.phase, np.broadcast_to(x.var, x.shape),
                           np.broadcast_to(x.mean, x.shape), size if weights is None else weights,
                           stride, pad, n_out, out_var)
    var = np.broadcast_to(out.var, out.shape)
    if weights is not None:  # exact per phase (the stationary rule averages over phases)
        ratio = v / np.maximum(phases.per_phase(var, out_period), 1e-300)
        var = var * np.resize(ratio, n_out)[:, None]
    corr = phases.averaged(rho, var, n_out)
    return replace(out, var=np.asarray(var, float), corr=corr, phase=rho)


def _spatial_axes(layer: Any, ndim: int) -> tuple[int, ...]:
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return tuple(range(1, ndim))
    return tuple(range(ndim - 1))


_GAVG = [L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D]
_GMAX = [L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D]


@register_estimator(*_GAVG)
def _global_avg(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x, out_shape = inputs[0], _shape(node)
    axes = _spatial_axes(layer, len(x.shape))
    k = float(np.prod([x.shape[a] for a in axes]))
    if not x.is_map:
        return Estimate([Signal.scalar(x.total_mean, float(x.var) / k, out_shape)])
    mean = np.mean(x.mean, axis=axes).reshape(out_shape)
    # a sequence's position sum (exact for one channel, phases included; see sum_cov)
    summed = sum_cov(x) if axes == (0,) else None
    cov = None if summed is not None else _pooled_cov(x, axes, out_shape)
    if summed is not None:
        cov = summed / k**2 if len(summed) <= MAX_FLAT else None
        var = (np.diagonal(summed) / k**2).reshape(out_shape)
    elif x.corr is not None and len(x.shape) == 2 and axes == (0,):
        var = global_mean_var(np.broadcast_to(x.var, x.shape), x.corr).reshape(out_shape)
    elif cov is not None:  # images: from the channels' cross-covariance
        var = np.diagonal(cov).reshape(out_shape)
    else:
        var = (np.sum(x.var, axis=axes) / k**2).reshape(out_shape)
    # positions that sum to zero (centered by a normalization): what is left is roundoff
    var = np.where(var <= 1e-9 * float(np.mean(x.var)), 0.0, var)
    xcorr = _correlation_of_pooled(cov)
    table = table_of(x)
    if (xcorr is None and table is not None and white_positions(x) and len(out_shape) == 1
            and axes == tuple(range(len(x.shape) - 1))):
        # independent positions, each a draw of the table: the means covary as one draw / k
        xcorr = correlation_of(table_cov(table)[None])
    return Estimate([Signal(mean, var, out_shape, xcorr=xcorr)])


def _pooled_cov(x: Signal, axes: tuple[int, ...], out_shape: tuple[int, ...]) -> Any:
    """(C, C) covariance between the channel means of a global pooling over every spatial axis
    of a channels-last map with tracked xcorr; None otherwise."""
    if not (x.xcorr is not None and len(x.shape) >= 2 and len(out_shape) == 1
            and axes == tuple(range(len(x.shape) - 1))):
        return None
    return global_mean_cov(x.xcorr, channel_mean(x.var, x.shape), x.shape[:-1])


def _correlation_of_pooled(cov: Any) -> Any:
    return None if cov is None else correlation_of(cov[None])


@register_estimator(*_GMAX)
def _global_max(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x, out_shape = inputs[0], _shape(node)
    axes = _spatial_axes(layer, len(x.shape))
    k = int(np.prod([x.shape[a] for a in axes]))
    if not x.is_map:
        pm = x.source.mean if x.source is not None else x.mean
        pv = x.source.var if x.source is not None else x.var
        return Estimate([_max_from(x, pm, pv, k, out_shape)])
    pm, pv = _pre(x)
    count = k
    if x.corr is not None and len(x.shape) == 2 and axes == (0,):
        count = effective_count(x.corr, k).reshape(out_shape)
    dropped = _dropped(x) if axes == tuple(range(len(x.shape) - 1)) and len(out_shape) == 1 \
        else None
    if dropped is not None:
        # dropout's zeros: where a channel's values lie below 0, its maximum is mostly 0
        p, d_mean, d_var = dropped
        groups = _position_groups(d_mean.reshape(k, -1), d_var.reshape(k, -1), count)
        first, var = _max_of_dropped(p, *groups)
        out = x.like(first.reshape(out_shape), var.reshape(out_shape), out_shape)
    elif axes == tuple(range(len(x.shape) - 1)) and len(out_shape) == 1 and \
            _uneven(pm.reshape(k, -1), pv.reshape(k, -1)):
        out = _max_of_uneven(x, pm.reshape(k, -1), pv.reshape(k, -1), count, out_shape)
    else:
        pm = np.mean(pm, axis=axes).reshape(out_shape)
        pv = np.mean(pv, axis=axes).reshape(out_shape)
        out = _max_from(x, pm, pv, count, out_shape)
    # the maxima of correlated channels: the channels' means correlate rho; their maxima over
    # n (effective) positions much less, as two Gaussian channels' would (max_correlation)
    xcorr = _correlation_of_pooled(_pooled_cov(x, axes, out_shape))
    if xcorr is not None:
        n = np.broadcast_to(np.asarray(count, float), out_shape).reshape(-1)
        xcorr = max_correlation(xcorr, np.sqrt(n[:, None] * n[None, :])[None])
    return Estimate([replace(out, xcorr=xcorr)])


# ---------------------------------------------------------------- normalization
def normalization_stats(x: Signal, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance over ``axes`` of the sample map (kept as size-1 axes): the statistics
    a training-mode normalization divides by."""
    xm = x.as_map()
    mu = np.mean(xm.mean, axis=axes, keepdims=True)
    return mu, np.mean(xm.var + xm.mean**2, axis=axes, keepdims=True) - mu**2


def _normalize(x: Signal, axes: tuple[int, ...], gamma: Any, beta: Any, eps: float) -> Signal:
    """Standardize over ``axes`` of the sample map (training-mode statistics), then affine."""
    xm = x.as_map()
    mu, var = normalization_stats(x, axes)
    g = 1.0 if gamma is None else gamma
    b = 0.0 if beta is None else beta
    channels = len(x.shape) - 1
    xcorr, spread = x.xcorr, xm.var
    if channels in axes:  # each sample's mean over the channels is subtracted
        xcorr = None
        if axes == (channels,) and x.xcorr is not None:
            xcorr, spread, var = _centered_channels(xm, x.xcorr, var)
    denom = var + eps
    mean = g * (xm.mean - mu) / np.sqrt(denom) + b
    out = Signal(np.broadcast_to(mean, x.shape).astype(float),
                 np.broadcast_to(g**2 * spread / denom, x.shape).astype(float), x.shape,
                 corr=x.corr,  # an affine map per channel keeps the correlations
                 xcorr=xcorr)
    return out if x.is_map else out.collapse()


def _centered_channels(xm: Signal, xcorr: np.ndarray, var: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalizing over the channels subtracts each sample's channel mean: with the channels'
    covariance ``G[d]`` (from ``xcorr``) the centered map has ``P G[d] P``, ``P = I - 11^T/C``,
    at every offset. Returns its correlation, each channel's variance (the diagonal) and the
    variance the normalization divides by (``var`` less the channel mean's own variance)."""
    var_c = channel_mean(xm.var, xm.shape)
    sd = np.sqrt(np.maximum(var_c, 0.0))
    cov = xcorr * sd[:, None] * sd[None, :]
    cov = cov - cov.mean(axis=-1, keepdims=True)
    cov = cov - cov.mean(axis=-2, keepdims=True)
    # dividing by each sample's own spread evens the channels out. With v, w ~ N(0, .) the
    # centered channels at two positions, S = Cov(v), G = Cov(v, w), T = tr S, the delta method
    # on v w^T / sqrt(|v|^2 |w|^2) gives (G (1 + 3/2 tr(S^2)/T^2 + 1/2 tr(G G^T)/T^2)
    # - (S G + G S) / T) / T at every offset (the trace of lag 0 is kept)
    center = _center(cov)
    s0 = cov[center].copy()
    trace = float(np.trace(s0))
    if trace <= 1e-8 * float(np.sum(var_c)):
        # alike channels (the same tensor twice, up to the walk's rounding): what is left is
        # float32 rounding over epsilon, and the output is beta
        cov = np.zeros_like(cov)
    else:
        gain = 1.0 + (1.5 * float(np.sum(s0 * s0.T)) + 0.5 * np.sum(cov * cov, axis=(-2, -1),
                                                                       keepdims=True)) / trace**2
        cov = cov * gain - (s0 @ cov + cov @ s0) / trace
    lag0 = np.maximum(np.diagonal(cov[center]), 0.0)
    keep = min(float(np.mean(lag0)) / max(float(np.mean(var_c)), 1e-300), 1.0)
    spread = np.broadcast_to(xm.var, xm.shape) * (lag0 / np.maximum(var_c, 1e-300))
    own = np.mean(np.broadcast_to(xm.var, xm.shape), axis=-1, keepdims=True)
    return correlation_of(cov), spread, np.maximum(var - own * (1.0 - keep), 0.0)


def _param_shape(values: Any, shape: tuple[int, ...], axes: tuple[int, ...]) -> Any:
    if values is None:
        return None
    bshape = [1] * len(shape)
    for a in axes:
        bshape[a] = shape[a]
    return np.asarray(values, float).reshape(bshape)


def _axes_of(layer_axis: Any, ndim: int) -> tuple[int, ...]:
    axes = [layer_axis] if isinstance(layer_axis, int) else list(layer_axis)
    return tuple(sorted((a - 1) % ndim if a > 0 else a % ndim for a in axes))


@register_estimator(L.BatchNormalization)
def _batch_norm(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x = inputs[0]
    nd = len(x.shape)
    ch = _axes_of(layer.axis, nd)
    reduce_axes = tuple(i for i in range(nd) if i not in ch)
    gamma = _param_shape(ctx.value(layer.gamma) if layer.gamma is not None else None, x.shape, ch)
    beta = _param_shape(ctx.value(layer.beta) if layer.beta is not None else None, x.shape, ch)
    out = _normalize(x, reduce_axes, gamma, beta, float(layer.epsilon))
    if out.is_map and ch == (nd - 1,) and non_gaussian(x):
        # an affine map per channel keeps each channel's shape (relu's point mass at 0 is
        # still one after it: a relu after relu -> BatchNormalization was 1.7x off as Gaussian)
        channels = x.shape[-1]
        sign = 1.0 if gamma is None else np.sign(np.reshape(gamma, -1))
        out = replace(out, mixture=mixture_or_gaussian(x, channels).matched(
            *channel_moments(out.mean, out.var, channels), sign))
    per_channel = out.is_map and ch == (nd - 1,)
    table = table_of(x) if per_channel else None
    summed = sum_cov(x) if per_channel and nd == 2 else None
    if table is not None or summed is not None:
        # an affine map per channel (the batch's statistics): each channel's shift and scale
        mu, var = normalization_stats(x, reduce_axes)
        g = 1.0 if gamma is None else np.reshape(gamma, -1)
        scale = g / np.sqrt(np.reshape(var, -1) + float(layer.epsilon))
    if table is not None:  # keeps the joint table
        b = 0.0 if beta is None else np.reshape(beta, (-1, 1))
        out = with_table(out, (table[0] - np.reshape(mu, (-1, 1))) * scale[:, None] + b,
                         table[1], linear=table_is_linear(x), root=table_root(x))
    out = replace(out, phase=x.phase) if out.is_map else out
    if summed is not None:  # and the position sum's covariance
        out = with_sum_cov(out, summed * scale[:, None] * scale[None, :])
    return Estimate([out])


@register_estimator(L.LayerNormalization)
def _layer_norm(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x = inputs[0]
    axes = _axes_of(layer.axis, len(x.shape))
    if int(np.prod([x.shape[a] for a in axes])) == 1:
        # One value per sample minus its own mean: the output is beta, whatever the input.
        b = ctx.value(layer.beta) if getattr(layer, "beta", None) is not None else 0.0
        out = Signal(np.broadcast_to(np.asarray(b, float).reshape(-1)[0] if np.size(b) else 0.0,
                                     x.shape).astype(float), np.zeros(x.shape), x.shape)
        return Estimate([out if x.is_map else out.collapse()])
    gamma = _param_shape(ctx.value(layer.gamma) if getattr(layer, "gamma", None) is not None else None, x.shape, axes)
    beta = _param_shape(ctx.value(layer.beta) if getattr(layer, "beta", None) is not None else None, x.shape, axes)
    out = _normalize(x, axes, gamma, beta, float(layer.epsilon))
    if out.is_map and len(x.shape) <= 2 and 0 in axes and (x.shape[-1] == 1 or axes == (0,)):
        # each sample's mean over the positions is subtracted: they now sum to zero
        shape = (x.shape[0], x.shape[-1] if len(x.shape) == 2 else 1)
        corr = centered_corr(np.broadcast_to(out.var, x.shape).reshape(shape), out.corr)
        out = replace(out, corr=corr, xcorr=sequence_xcorr(corr) if len(x.shape) == 2
                      and x.shape[-1] == 1 and corr is not None else out.xcorr)
    table = table_of(x)
    channels = x.shape[-1] if x.shape else 1
    if (table is None and out.is_map and axes == (len(x.shape) - 1,) and channels > 1
            and non_gaussian(x)):
        # each channel's shape through its position's own normalizer (a bounded shape piles up
        # at its top: the maximum of layer-normed cos over 10 positions was 12x off as Gaussian)
        sign = 1.0 if gamma is None else np.sign(np.reshape(gamma, -1))
        # an exact source's own values (a re-binned mixture's Gaussian bins spill past a
        # bounded function's top, where the maximum reads)
        shape = Mixture.points(source_values(x, channels), source_nodes()[1]) \
            if x.source is not None and x.source.exact else mixture_or_gaussian(x, channels)
        out = replace(out, mixture=shape.normalized_over_channels(
            float(layer.epsilon)).matched(*channel_moments(out.mean, out.var, channels), sign))
    if table is not None and out.is_map and axes == (len(x.shape) - 1,):
        # each position's channels are normalized by their own mean and spread: exact per value
        # of the table's variable (a Dense on one channel gives a sign: every unit a w_u z)
        values, probs = table
        centered = values - values.mean(axis=0, keepdims=True)
        normed = centered / np.sqrt(np.mean(centered**2, axis=0, keepdims=True)
                                    + float(layer.epsilon))
        g = 1.0 if gamma is None else np.reshape(gamma, (-1, 1))
        b = 0.0 if beta is None else np.reshape(beta, (-1, 1))
        normed = normed * g + b
        mean, var = table_moments(normed, probs)
        out = replace(out, mean=np.broadcast_to(mean, x.shape).astype(float),
                      var=np.broadcast_to(var, x.shape).astype(float))
        out = with_table(out, normed, probs, root=table_root(x))
    return Estimate([out])


@register_estimator(L.GroupNormalization)
def _group_norm(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x = inputs[0].as_map()
    nd = len(x.shape)
    ch = layer.axis - 1 if layer.axis > 0 else layer.axis % (nd + 1) - 1
    ch %= nd
    groups = int(layer.groups)
    c = x.shape[ch]
    gshape = list(x.shape[:ch]) + [groups, c // groups] + list(x.shape[ch + 1:])
    grouped = Signal(x.mean.reshape(gshape), x.var.reshape(gshape), tuple(gshape))
    axes = tuple(i for i in range(len(gshape)) if i != ch)
    normed = _normalize(grouped, axes, None, None, float(layer.epsilon))
    mean, var = normed.mean.reshape(x.shape), normed.var.reshape(x.shape)
    g = _param_shape(ctx.value(layer.gamma) if layer.scale else None, x.shape, (ch,))
    b = _param_shape(ctx.value(layer.beta) if layer.center else None, x.shape, (ch,))
    g = 1.0 if g is None else g
    b = 0.0 if b is None else b
    out = Signal(np.broadcast_to(g * mean + b, x.shape).astype(float),
                 np.broadcast_to(g**2 * var, x.shape).astype(float), x.shape)
    return Estimate([out if inputs[0].is_map else out.collapse()])


@register_estimator(L.UnitNormalization)
def _unit_norm(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x = inputs[0]
    xm = x.as_map()
    axes = _axes_of(layer.axis, len(x.shape))
    s = np.sum(xm.var + xm.mean**2, axis=axes, keepdims=True)
    out = Signal(xm.mean / np.sqrt(s), xm.var / s, x.shape)
    return Estimate([out if x.is_map else out.collapse()])


__all__ += ["monte_carlo"]


def _register_parametric() -> None:
    from autoinit_nas.parametric_activation import ParametricActivation

    @register_estimator(ParametricActivation)
    def _parametric(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
        """Integrated numerically with its current alpha, beta, gamma."""
        return Estimate([apply_fn_to_signal(as_numpy_fn(layer), inputs[0])])


_register_parametric()
