"""Elementwise functions (activations) acting on signals.

Callables are integrated as they are (never looked up by name). The only special cases are
keyed by object identity: Keras' piecewise-linear activations get exact closed forms, and
Keras' activations that are not elementwise (softmax, log_softmax, ...) get a seeded Monte Carlo
over their own axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from typing import Any

import keras
import numpy as np

from autoinit_nas._correlation import combine_corr, function_corr
from autoinit_nas._mixture import Mixture, channel_moments, source_nodes
from autoinit_nas._moments import PiecewiseLinear, gaussian_moments
from autoinit_nas._phases import attach, function_phase, per_phase
from autoinit_nas._signal import Signal, Source
from autoinit_nas._xcorr import (
    _center,
    _covariance,
    _lags,
    channel_mean,
    correlation_of,
    function_xcorr,
    lag_zero,
    per_channel_corr,
    sum_xcorr,
)

__all__ = [
    "as_numpy_fn",
    "apply_function",
    "apply_fn_to_signal",
    "piecewise_relu",
    "is_identity",
    "NON_ELEMENTWISE",
    "mixable",
    "mixture_or_gaussian",
    "non_gaussian",
    "own_table",
    "softmax_mixture_weight",
    "sum_mixture",
    "source_values",
    "table_cov",
    "table_is_linear",
    "table_moments",
    "table_of",
    "table_or_own",
    "table_root",
    "same_root",
    "white_positions",
    "with_table",
    "linear_combination",
    "merged_table",
]

IDENTITY = PiecewiseLinear((), (1.0,), (0.0,))


def piecewise_relu(
    negative_slope: Any = 0.0, max_value: float | None = None, threshold: float = 0.0
) -> PiecewiseLinear:
    """Keras' ReLU: slope*(x - threshold) below threshold, x up to max_value, then max_value."""
    slope = negative_slope
    if max_value is None:
        return PiecewiseLinear((threshold,), (slope, 1.0), (-slope * threshold, 0.0))
    return PiecewiseLinear(
        (threshold, max_value), (slope, 1.0, 0.0), (-slope * threshold, 0.0, max_value)
    )


_A = keras.activations
CLOSED_FORMS: dict[Any, PiecewiseLinear] = {
    _A.linear: IDENTITY,
    _A.relu: piecewise_relu(),
    _A.relu6: piecewise_relu(max_value=6.0),
    _A.leaky_relu: piecewise_relu(0.2),
    _A.hard_sigmoid: PiecewiseLinear((-3.0, 3.0), (0.0, 1 / 6, 0.0), (0.0, 0.5, 1.0)),
    _A.hard_tanh: PiecewiseLinear((-1.0, 1.0), (0.0, 1.0, 0.0), (-1.0, 0.0, 1.0)),
}
NON_ELEMENTWISE = {_A.softmax, _A.log_softmax, _A.sparsemax, _A.glu}

_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _neg_part(x: np.ndarray) -> np.ndarray:
    return np.expm1(np.minimum(x, 0.0))


def _numpy_forms() -> dict[Any, Callable[[np.ndarray], np.ndarray]]:
    """float64 NumPy twins of Keras' smooth activations with their default parameters (a
    TensorFlow call per integration costs a millisecond; these take microseconds). Each is
    checked against Keras on a grid by the tests."""
    from scipy import special

    def hard_sigmoid(x: np.ndarray) -> np.ndarray:
        return np.clip(x / 6.0 + 0.5, 0.0, 1.0)

    forms = {
        "tanh": np.tanh,
        "sigmoid": special.expit,
        "silu": lambda x: x * special.expit(x),
        "gelu": lambda x: 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0))),
        "elu": lambda x: np.where(x > 0, x, _neg_part(x)),
        "celu": lambda x: np.where(x > 0, x, _neg_part(x)),
        "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * _neg_part(x)),
        "softplus": lambda x: np.logaddexp(0.0, x),
        "softsign": lambda x: x / (1.0 + np.abs(x)),
        "exponential": np.exp,
        "mish": lambda x: x * np.tanh(np.logaddexp(0.0, x)),
        "log_sigmoid": lambda x: -np.logaddexp(0.0, -x),
        "hard_silu": lambda x: x * hard_sigmoid(x),
        "tanh_shrink": lambda x: x - np.tanh(x),
        "squareplus": lambda x: 0.5 * (x + np.sqrt(np.square(x) + 4.0)),
        "sparse_plus": lambda x: np.where(x <= -1, 0.0, np.where(x >= 1, x, 0.25 * (x + 1) ** 2)),
    }
    return {getattr(_A, name): fn for name, fn in forms.items() if hasattr(_A, name)}


NUMPY_FORMS = _numpy_forms()


def is_identity(fn: Any) -> bool:
    return fn is None or fn is _A.linear or fn is IDENTITY


def as_numpy_fn(fn: Callable[..., Any]) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a Keras activation, layer or plain callable as float64 ndarray -> ndarray.

    Evaluation is attempted in float64 (so exp and x^2 do not overflow where float32 would)
    and falls back to float32 for callables with float32 weights.
    """
    if isinstance(fn, PiecewiseLinear):
        return fn
    if fn in CLOSED_FORMS:
        return CLOSED_FORMS[fn]
    if fn in NUMPY_FORMS:
        return NUMPY_FORMS[fn]
    if callable(getattr(fn, "evaluate_numpy", None)) and hasattr(fn, "parameter_values"):
        return _parametric_numpy(fn)
    call = fn.call if isinstance(fn, keras.layers.Layer) else fn

    def numpy_fn(x: np.ndarray) -> np.ndarray:
        try:
            out = call(keras.ops.convert_to_tensor(x, dtype="float64"))
        except Exception:  # noqa: BLE001 - float32-only callables: retry in their dtype
            out = call(keras.ops.convert_to_tensor(x, dtype="float32"))
        return np.asarray(keras.ops.convert_to_numpy(out), dtype=float)

    numpy_fn.__wrapped__ = fn  # type: ignore[attr-defined]
    return numpy_fn


def _parametric_numpy(layer: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A ParametricActivation in float64 NumPy, with its parameters read once."""
    from autoinit_nas._expression import denominators, evaluate

    tree, values = layer.tree, layer.parameter_values()

    def numpy_fn(x: np.ndarray) -> np.ndarray:
        return evaluate(tree, x, values, backend="numpy")

    numpy_fn.__wrapped__ = layer  # type: ignore[attr-defined]
    numpy_fn.denominators = denominators(tree, values)  # type: ignore[attr-defined]
    return numpy_fn


def _compose(outer: Callable, inner: Callable) -> Callable:
    if is_identity(inner):
        return outer

    def composed(x: np.ndarray) -> np.ndarray:
        return outer(inner(x))

    # the quotients' spikes: where the denominators of outer cross zero at inner(x), and
    # inner's own (softplus of a quotient was 2.7x low without them, genome 111)
    spiky = [lambda x, d=d: d(inner(x)) for d in getattr(outer, "denominators", ())]
    spiky += getattr(inner, "denominators", ())
    if spiky:
        composed.denominators = spiky  # type: ignore[attr-defined]
    return composed


def mixable(fn: Any) -> bool:
    """Functions a per-channel mixture can go through (not per-element slopes, as PReLU's)."""
    return not (isinstance(fn, PiecewiseLinear) and any(np.ndim(s) for s in fn.slopes))


def _through_mixture(fn: Callable[[np.ndarray], np.ndarray], x: Signal) -> Signal:
    """fn of a non-Gaussian sum: exact per channel through the mixture, per element on the maps.

    The maps carry the element-to-element variation (padding borders, per-channel offsets) under
    a Gaussian rule; the mixture gives, per channel, how far the true moments are from that rule,
    which corrects every element of the channel (mean and variance shifted by the difference:
    exact for the typical element, and bounded for the others, where a ratio could explode).
    """
    mix = x.mixture
    table = table_of(x)
    if table is not None:  # the exact distribution: fn of every value
        with np.errstate(all="ignore"):
            values = np.nan_to_num(np.asarray(fn(table[0]), float))
        exact_mean, exact_var = table_moments(values, table[1])
        out_mix = None  # with_table makes it from the values
    else:
        exact_mean, exact_var, out_mix = mix.apply(fn)
    src = Source(np.asarray(x.mean), np.asarray(x.var), fn, x.corr, x.xcorr, x.phase,
                 exact=False)
    if not x.is_map:
        return Signal(np.asarray(float(exact_mean[0])), np.asarray(float(exact_var[0])), x.shape,
                      src, out_mix)
    first, second = gaussian_moments(fn, x.mean, x.var)
    var = np.maximum(second - first**2, 0.0)
    mean_c, var_c = mix.moments()
    g_first, g_second = gaussian_moments(fn, mean_c, var_c)
    g_var = np.maximum(g_second - g_first**2, 0.0)
    out = Signal(np.asarray(first + (exact_mean - g_first)),
                 np.maximum(var + (exact_var - g_var), 0.0), x.shape, src, out_mix)
    if x.phase is not None and mixable(fn):
        return _with_phase(out, x.phase, x.mean, x.var, fn)
    corr, xcorr = _fn_correlations(x.corr, x.xcorr, x.mean, x.var, fn, x.shape)
    out = replace(out, corr=corr, xcorr=xcorr)
    return out if table is None else with_table(out, values, table[1], root=table_root(x))


def table_of(x: Signal) -> tuple[np.ndarray, np.ndarray] | None:
    """The joint distribution of a position's channels, ``(values (C, N), probs (N,))``, when
    every channel is a function of one discrete variable (a Dense on one channel, then
    elementwise functions and more Dense layers); None otherwise. Kept in ``meta['table']``
    with the arrays of the signal it describes, so a rule that changes the signal (dropout adds
    noise, a convolution mixes positions) leaves it behind."""
    table = x.meta.get("table")
    if table is None or table[0] is not x.mean or table[1] is not x.var:
        return None
    return table[2], table[3]


def table_root(x: Signal) -> tuple[Any, Any] | None:
    """The variable ``x``'s table is over: the arrays ``(mean, var)`` of the Gaussian (or of
    the one-channel signal with atoms) it was made from, compared by identity; None without a
    valid table or a known root."""
    return x.meta["table"][5] if table_of(x) is not None else None


def own_table(x: Signal) -> tuple[np.ndarray, np.ndarray, bool, tuple] | None:
    """A one-channel signal that is Gaussian or a function of one (no spread in its mixture)
    as a table of itself: (values, probs, whether affine in a Gaussian, the variable it is
    over); None otherwise."""
    if not x.is_map or not x.shape or x.shape[-1] != 1:
        return None
    if x.mixture is None:
        if x.source is not None and not mixable(x.source.fn):
            return None
        return source_values(x, 1), source_nodes()[1], x.source is None, _root(x)[:2]
    mix = mixture_or_gaussian(x, 1)
    if np.any(mix.spread > 0) or np.any(mix.noise_var > 0):
        return None
    return mix.atoms + mix.noise_mean[:, None], mix.probs[0], False, (x.mean, x.var)


def same_root(tables: list[tuple[Any, Any] | None]) -> bool:
    """Whether the roots are all known and the same variable."""
    first = tables[0]
    return first is not None and all(
        r is not None and r[0] is first[0] and r[1] is first[1] for r in tables[1:])


def table_moments(values: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's (channel's) mean and variance over a table's values."""
    mean = values @ probs
    return mean, np.square(values - mean[:, None]) @ probs


def source_values(x: Signal, channels: int) -> np.ndarray:
    """``(C, N)``: the signal's source function (the identity without one) at each channel's
    average Gaussian moments, on the ``source_nodes``."""
    fn = x.source.fn if x.source is not None else None
    mean, var = channel_moments(x.source.mean if fn else x.mean,
                                x.source.var if fn else x.var, channels)
    z, _ = source_nodes()
    g = mean[:, None] + np.sqrt(np.maximum(var, 0.0))[:, None] * z[None, :]
    if fn is None:
        return g
    with np.errstate(all="ignore"):
        return np.nan_to_num(np.asarray(fn(g), float))


def table_cov(table: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The (C, C) covariance of a table's channels at one position."""
    values, probs = table
    centered = values - (values @ probs)[:, None]
    return (centered * probs) @ centered.T


def white_positions(x: Signal) -> bool:
    """Whether a sequence's positions are independent (no correlation at any lag but 0)."""
    return x.corr is None or (x.corr.ndim == 2
                              and float(np.max(np.abs(x.corr[1:]), initial=0.0)) < 1e-9)


def table_is_linear(x: Signal) -> bool:
    """Whether the table's values are affine in a Gaussian variable (a Dense or normalization
    of a Gaussian channel): every channel is then Gaussian itself."""
    table = x.meta.get("table")
    return table is not None and table_of(x) is not None and bool(table[4])


def with_table(x: Signal, values: np.ndarray, probs: np.ndarray, *,
               linear: bool = False, root: tuple[Any, Any] | None = None) -> Signal:
    """``x`` with the joint table ``values`` (C, N), ``probs`` (N,): the channels' correlation at
    lag 0 is the table's, and the per-channel mixture is the table's rows (re-binned), unless
    each channel is already exact without one (Gaussian: ``linear``, or a function of a
    Gaussian). ``root`` names the variable the table is over (``table_root``), so that tables
    over the same one can be added or set side by side value by value."""
    values = np.nan_to_num(np.asarray(values, float))
    channels = values.shape[0]
    if not x.is_map or not x.shape or x.shape[-1] != channels:
        return x
    mixture = x.mixture
    if not linear and (x.source is None or not x.source.exact):
        # re-binned like any mixture, for the rules that read one (the table stays exact)
        mixture = Mixture.rebinned(values, np.broadcast_to(probs, values.shape))
    xcorr = x.xcorr
    if xcorr is not None and xcorr.shape[-1] == channels:
        cov = table_cov((values, probs))
        sd = np.sqrt(np.maximum(np.diagonal(cov), 0.0))
        if np.min(sd) > 0.0:
            xcorr = xcorr.copy()
            xcorr[_center(xcorr)] = np.clip(cov / sd[:, None] / sd[None, :], -1.0, 1.0)
    mean, var = np.asarray(x.mean), np.asarray(x.var)
    out = replace(x, mean=mean, var=var, mixture=mixture, xcorr=xcorr)
    if xcorr is not x.xcorr and len(x.shape) == 2 and x.corr is not None:
        out = replace(out, corr=per_channel_corr(xcorr))
    table = (mean, var, values, np.asarray(probs, float), linear, root)
    return replace(out, meta={**x.meta, "table": table})


def _mixture_of(x: Signal, channels: int) -> Mixture | None:
    """The signal's per-channel mixture, made from its source if needed; None if Gaussian."""
    mix = x.mixture
    if mix is None and x.source is not None and mixable(x.source.fn):
        mean, var = channel_moments(x.source.mean, x.source.var, channels)
        mix = Mixture.of_function(x.source.fn, mean, var)
    if mix is None or mix.channels == channels:
        return mix
    if mix.channels != 1:
        return None
    return Mixture(*(np.repeat(a, channels, axis=0) for a in
                     (mix.atoms, mix.probs, mix.spread, mix.noise_mean, mix.noise_var)))


def non_gaussian(x: Signal) -> bool:
    """Whether the signal carries a shape of its own: a mixture, or a source function that
    one can be made from."""
    return x.mixture is not None or (x.source is not None and mixable(x.source.fn))


def mixture_or_gaussian(x: Signal, channels: int) -> Mixture:
    """The signal's per-channel mixture (from its source if needed), else one Gaussian per
    channel at its channel moments."""
    mix = _mixture_of(x, channels)
    return mix if mix is not None else Mixture.gaussian(*channel_moments(x.mean, x.var,
                                                                         channels))


def sum_mixture(xs: list[Signal], coeffs: Any, out_shape: tuple[int, ...]) -> Mixture | None:
    """Mixture of ``sum_i coeffs[i] * xs[i]`` (independent inputs), or None if all are Gaussian."""
    channels = out_shape[-1] if out_shape and any(x.is_map for x in xs) else 1
    parts = [_mixture_of(x, channels) for x in xs]
    if all(p is None for p in parts):
        return None
    out: Mixture | None = None
    gauss_mean, gauss_var = np.zeros(channels), np.zeros(channels)
    for x, c, part in zip(xs, coeffs, parts, strict=True):
        if part is None:
            mean, var = channel_moments(x.mean, x.var, channels)
            gauss_mean, gauss_var = gauss_mean + c * mean, gauss_var + c * c * var
        elif out is None:
            out = part.shifted(0.0, 0.0, scale=c)
        else:
            out = out.plus(part, scale=c)
    return out.shifted(gauss_mean, gauss_var)


def _root(x: Signal) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """(mean, var, fn) with ``x = fn(G)``, G the Gaussian of these moments (x itself if it
    has no source). Roots are compared by identity: signals computed from the same tensor hold
    the same arrays."""
    if x.source is not None:
        return x.source.mean, x.source.var, x.source.fn
    return x.mean, x.var, IDENTITY


def _independent_parts(xs: list[Signal], coeffs: list[float]) -> tuple[list[Signal], list[float]]:
    """Inputs of a linear merge that are functions of one Gaussian (``x`` and ``relu(x)``,
    ``tanh(x)`` and ``sigmoid(x)``) are summed exactly, ``h(G) = sum_i c_i f_i(G)`` by one
    1-D integral, so that what is left is a list of independent parts (coefficient 1 for the
    summed ones). Without this, x + relu(x) would be predicted with variance 1.5 instead of 2.34
    (unit x)."""
    groups: list[tuple[np.ndarray, np.ndarray, list[tuple[Signal, float, Callable]]]] = []
    for x, c in zip(xs, coeffs, strict=True):
        mean, var, fn = _root(x)
        for g_mean, g_var, members in groups:
            if g_mean is mean and g_var is var:
                members.append((x, c, fn))
                break
        else:
            groups.append((mean, var, [(x, c, fn)]))
    if len(groups) == len(xs):
        return xs, coeffs
    parts, part_coeffs = [], []
    for mean, var, members in groups:
        if len(members) == 1:
            parts.append(members[0][0])
            part_coeffs.append(members[0][1])
            continue
        terms = [(c, fn) for _, c, fn in members]

        def combined(g: np.ndarray, terms: list = terms) -> np.ndarray:
            return sum(c * np.asarray(fn(g), dtype=float) for c, fn in terms)

        # The root itself when it is an input (it may carry a mixture), else its Gaussian.
        root = next((x for x, _, _ in members if x.source is None), None)
        if root is None:
            first = members[0][0]
            root = Signal(mean, var, first.shape,
                          corr=first.source.corr if first.source is not None else None)
        parts.append(apply_fn_to_signal(combined, root))
        part_coeffs.append(1.0)
    return parts, part_coeffs


def linear_combination(
    xs: list[Signal], coeffs: Any, out_shape: tuple[int, ...], *, shape_too: bool = True,
    cross: Callable[[int, int, int], np.ndarray | None] | None = None,
) -> Signal:
    """Moments of ``sum_i coeffs[i] * xs[i]``: inputs that are functions of one Gaussian are
    combined exactly, the rest are independent unless ``cross(i, j, K)`` gives their
    covariance ``Cov(x_i[p], x_j[p + e])`` at lags ``e = -K .. K`` (sequences: related through
    a fork, ``_links.py``); with ``shape_too`` the per-channel mixture of the sum is kept for
    the functions that follow."""
    parts, cs = _independent_parts(list(xs), [float(c) for c in coeffs])
    mean = sum(c * x.mean for c, x in zip(cs, parts, strict=True))
    var = sum(c * c * x.var for c, x in zip(cs, parts, strict=True))
    mixture = sum_mixture(parts, cs, out_shape) if shape_too else None
    if not any(x.is_map for x in xs):
        return Signal(np.asarray(float(np.mean(mean))), np.asarray(float(np.mean(var))),
                      tuple(out_shape), mixture=mixture)
    corr = xcorr = None
    tables = [table_or_own(x) for x in xs] if len(xs) > 1 else []
    table = _merged_values(list(xs), tables, [float(c) for c in coeffs])
    if all(np.shape(x.var) == tuple(out_shape) for x in parts):
        var_cs = [channel_mean(x.var, tuple(out_shape)) for x in parts]
        spatial = tuple(out_shape[:-1]) or (1,)
        ungrouped = len(parts) == len(xs) and all(p is x for p, x in zip(parts, xs, strict=True))
        related = _related(ungrouped and len(out_shape) <= 2, cross, cs, out_shape)
        if related is None and ungrouped and table is not None:
            # inputs over one variable (x and BatchNormalization(f(x))): their covariance at
            # each position is the table's, value by value
            own = sum(c * c * table_moments(t[0], t[1])[1]
                      for c, t in zip(cs, tables, strict=True))
            var = var + (table_moments(table[0], table[1])[1] - own)
        if related is not None:  # covariance of the sum, cross terms included
            cov = related + sum(c * c * _covariance(x.xcorr, x.corr, v, spatial)
                                for c, v, x in zip(cs, var_cs, parts, strict=True))
            var = var + np.diagonal(lag_zero(related))  # same for every position
            xcorr = correlation_of(cov)
            corr = per_channel_corr(xcorr) if len(out_shape) == 2 else None
        else:
            if len(out_shape) == 2:
                corr = combine_corr([(c, v, x.corr) for c, v, x in zip(cs, var_cs, parts,
                                                                       strict=True)],
                                    out_shape[0])
            xcorr = sum_xcorr([(c, v, x.xcorr, x.corr) for c, v, x in zip(cs, var_cs, parts,
                                                                          strict=True)],
                              spatial)
    out = Signal(np.broadcast_to(mean, out_shape).astype(float),
                 np.maximum(np.broadcast_to(var, out_shape), 0.0).astype(float),
                 tuple(out_shape), mixture=mixture, corr=corr, xcorr=xcorr)
    if not shape_too or table is None:
        return out
    return with_table(out, table[0], table[1], linear=table[2], root=table[3])


def merged_table(out: Signal, xs: list[Signal]) -> Signal:
    """``out``, the concatenation of ``xs`` along channels, with the joint table of its channels
    when every input has a table over the same variable."""
    table = _merged_values(xs, [table_or_own(x) for x in xs], None)
    if table is None or not out.is_map:
        return out
    return with_table(out, table[0], table[1], linear=table[2], root=table[3])


def _merged_values(xs: list[Signal], tables: list, coeffs: list[float] | None
                   ) -> tuple[np.ndarray, np.ndarray, bool, tuple] | None:
    """The table (values, probs, linear, root) of the weighted sum (``coeffs``) or of the
    concatenation along channels (None) of ``xs`` (``tables``: each one's ``table_or_own``),
    when every input has a table over the same variable: the sum or concatenation value by
    value (``x`` and ``f(x)`` branches then keep their joint distribution, which no Gaussian
    rule gives); None otherwise."""
    if len(xs) < 2 or not all(x.is_map and x.shape for x in xs):
        return None
    if any(t is None for t in tables) or not same_root([t[3] for t in tables]):
        return None
    probs = tables[0][1]
    if any(t[1].shape != probs.shape or not np.array_equal(t[1], probs) for t in tables):
        return None
    if coeffs is None:
        values = np.concatenate([t[0] for t in tables], axis=0)
    elif all(t[0].shape == tables[0][0].shape for t in tables):
        values = sum(c * t[0] for c, t in zip(coeffs, tables, strict=True))
    else:
        return None
    return values, probs, all(t[2] for t in tables), tables[0][3]


def table_or_own(x: Signal) -> tuple[np.ndarray, np.ndarray, bool, tuple] | None:
    """The signal's table (values, probs, whether affine in a Gaussian, the variable it is
    over), or a one-channel signal's own (``own_table``); None otherwise."""
    table = table_of(x)
    if table is not None:
        return table[0], table[1], table_is_linear(x), table_root(x)
    return own_table(x)


def _related(ok: bool, cross: Callable[[int, int, int], np.ndarray | None] | None,
             cs: list[float], out_shape: tuple[int, ...]) -> np.ndarray | None:
    """``sum_{i != j} c_i c_j Cov(x_i[p], x_j[p + e])`` over lags ``(2K + 1, C, C)``, or None
    when no pair of inputs is related."""
    if not ok or cross is None or len(cs) < 2:
        return None
    k = _lags(out_shape[0], out_shape[-1])[0] if len(out_shape) == 2 else 0
    total = None
    for i in range(len(cs)):
        for j in range(i + 1, len(cs)):
            g = cross(i, j, k)
            if g is None:
                continue
            both = cs[i] * cs[j] * (g + np.swapaxes(g[::-1], -1, -2))  # pairs (i, j), (j, i)
            total = both if total is None else total + both
    return total


def _fn_correlations(corr: np.ndarray | None, xcorr: np.ndarray | None, mean: Any, var: Any,
                     fn: Callable, shape: tuple) -> tuple[Any, Any]:
    """Correlations of fn(G) between positions (sequences) and between channels (any map);
    None where not tracked. With both, the positions' correlation is the diagonal of the
    channels' one, so the Hermite series runs once."""
    if not shape or not mixable(fn) or (corr is None and xcorr is None):
        return None, None
    if len(shape) == 1 and corr is not None:  # a flat vector's positions in order, one channel
        one = (np.atleast_1d(np.mean(mean)), np.atleast_1d(np.mean(var)))
        return function_corr(corr, *one, fn), None
    mean_c, var_c = channel_mean(mean, shape), channel_mean(var, shape)
    out_x = function_xcorr(xcorr, mean_c, var_c, fn)
    if len(shape) != 2 or corr is None:
        return None, out_x
    if out_x is not None:
        return per_channel_corr(out_x), out_x
    return function_corr(corr, mean_c, var_c, fn), None


def apply_fn_to_signal(fn: Callable[[np.ndarray], np.ndarray], x: Signal) -> Signal:
    """Moments of fn(x) for a numpy elementwise fn, working on the Gaussian under x if known."""
    if is_identity(fn):
        return x
    if x.mixture is not None and mixable(fn):
        return _through_mixture(fn, x)
    if x.source is not None:
        pre_mean, pre_var = x.source.mean, x.source.var
        full = _compose(fn, x.source.fn)
        root_corr, root_xcorr, root_phase = x.source.corr, x.source.xcorr, x.source.phase
    else:
        pre_mean, pre_var, full = x.mean, x.var, fn
        root_corr, root_xcorr, root_phase = x.corr, x.xcorr, x.phase
    first, second = gaussian_moments(full, pre_mean, pre_var)
    var = np.maximum(second - first**2, 0.0)
    src = Source(np.asarray(pre_mean), np.asarray(pre_var), full, root_corr, root_xcorr,
                 root_phase, exact=x.source is None or x.source.exact)
    out = Signal(np.asarray(first), np.asarray(var), x.shape, src)
    if root_phase is not None and x.is_map and mixable(full):
        return _with_phase(out, root_phase, pre_mean, pre_var, full)
    corr, xcorr = _fn_correlations(root_corr, root_xcorr, pre_mean, pre_var, full, x.shape)
    out = replace(out, corr=corr, xcorr=xcorr)
    table = table_of(x)
    if table is not None and mixable(fn):  # the function of every value
        with np.errstate(all="ignore"):
            out = with_table(out, np.asarray(fn(table[0]), float), table[1],
                             root=table_root(x))
    return out


def _with_phase(out: Signal, phase: np.ndarray, mean: Any, var: Any, fn: Callable) -> Signal:
    """``out = fn(x)`` for ``x`` a laid-out map: its phases, pair by pair, and the average over
    phases that the other rules read."""
    period, shape = len(phase), out.shape
    return attach(out, function_phase(phase, per_phase(np.broadcast_to(mean, shape), period),
                                      per_phase(np.broadcast_to(var, shape), period), fn))


def apply_function(fn: Any, x: Signal, *, axis: int = -1, seed: int = 0) -> Signal:
    """Moments of ``fn(x)`` for any activation: callable, Keras activation or activation layer."""
    if fn is None or is_identity(fn):
        return x
    if fn in NON_ELEMENTWISE:
        if fn is not _A.softmax:
            return monte_carlo(lambda t: fn(t, axis=axis), x, axis=axis, seed=seed)
        # NumPy: a TensorFlow call costs more than the draws. Its moments feed only the report
        # (a softmax has no weights after it in a classifier head), so one kept block of draws
        # (seed 0) serves every model
        out = monte_carlo(lambda t: _softmax(t, 0), x, axis=axis, seed=0, numpy=True)
        mean = np.broadcast_to(out.mean, x.shape)  # entries sum to 1: the mean over the axis
        mean = mean / np.sum(mean, axis=axis, keepdims=True)  # is exactly 1/C
        return x.like(mean, np.broadcast_to(out.var, x.shape))
    return apply_fn_to_signal(as_numpy_fn(fn), x)


@lru_cache(maxsize=16)
def _normal_block(seed: int, *shape: int) -> np.ndarray:
    """Seeded standard normal draws, kept (read-only) for the next call with the same seed."""
    z = np.random.default_rng(seed).standard_normal(shape)
    z.flags.writeable = False
    return z


@lru_cache(maxsize=16)
def _normal_block_t(seed: int, *shape: int) -> np.ndarray:
    """``_normal_block(seed, *shape)`` with its axes reversed, contiguous (read-only)."""
    z = np.ascontiguousarray(_normal_block(seed, *shape).T)
    z.flags.writeable = False
    return z


def _softmax(t: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(t - np.max(t, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def monte_carlo(
    fn: Callable[[Any], Any], x: Signal, *, axis: int = -1, seed: int = 0, draws: int = 4096,
    numpy: bool = False,
) -> Signal:
    """Seeded Monte Carlo over one axis (softmax over C entries: not over the whole tensor);
    ``fn`` takes a Keras tensor of draws ``(n, elements, C)``, or with ``numpy`` a float64
    array ``(C, elements, n)`` (the draws last and contiguous: reductions over C are then
    elementwise over the draws)."""
    shape = x.shape
    axis = axis % len(shape)
    size = shape[axis]
    xm = x.as_map()
    mean = np.moveaxis(xm.mean, axis, -1).reshape(-1, size)
    var = np.moveaxis(xm.var, axis, -1).reshape(-1, size)
    if len(mean) == 1:
        uniq, inverse = np.concatenate([mean, var], axis=1), np.zeros(1, dtype=int)
    else:
        uniq, inverse = np.unique(np.concatenate([mean, var], axis=1), axis=0,
                                  return_inverse=True)
    n = max(64, draws // max(1, len(uniq) // 16 + 1))
    if numpy:
        cols = uniq.T[:, :, None]  # (2 C, elements, 1)
        z = _normal_block_t(seed, n, len(uniq), size)  # the same draws, (C, elements, n)
        out = np.asarray(fn(cols[:size] + np.sqrt(np.maximum(cols[size:], 0)) * z), float)
        first, var_out = out.mean(axis=-1).T, out.var(axis=-1).T
    else:
        z = _normal_block(seed, n, len(uniq), size)
        samples = uniq[None, :, :size] + np.sqrt(np.maximum(uniq[None, :, size:], 0)) * z
        out = keras.ops.convert_to_numpy(fn(keras.ops.convert_to_tensor(samples, "float64")))
        out = np.asarray(out, float)
        first, var_out = out.mean(axis=0), out.var(axis=0)
    inv = inverse.reshape(-1)
    back_shape = [*np.moveaxis(np.empty(shape), axis, -1).shape]
    first = np.moveaxis(first[inv].reshape(back_shape), -1, axis)
    var_out = np.moveaxis(var_out[inv].reshape(back_shape), -1, axis)
    return x.like(first, var_out)


def softmax_mixture_weight(length: int, *, seed: int = 0, draws: int = 4096) -> float:
    """E[sum_t a_t^2] for a = softmax of ``length`` i.i.d. N(0, 1) logits (seeded Monte Carlo).

    The variance of a softmax-weighted mixture of independent unit-variance values.
    """
    if length <= 1:
        return 1.0
    z = np.random.default_rng(seed).standard_normal((draws, length))
    a = np.exp(z - z.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    return float(np.mean(np.sum(a**2, axis=1)))
