"""Cross-covariance with fork ancestors: how a merge sees that its inputs are related.

A merge (``WeightedAdd``, ``Add``, ``Subtract``, ``Average``, ``Concatenate``) of ``x`` and
``f(x)``, of ``avgpool(x)`` and ``conv(x)``, or of ``x`` and ``BatchNorm(x)``, sums or stacks
inputs that share an ancestor.
Treated as independent, the sum's variance misses ``2 c_a c_b Cov(a, b)``: up to 2x for a skip
around a near-linear branch, and the error reaches the head.

Realized mode, channels-last sequences ``(L, C)`` within the channel budget: every tensor read
by two or more layers (a *fork* ``A``) starts a *link*, and the layers after it carry
``Cov(s[p, c], A[p r + o + d, a])`` for lags ``d`` in ``A``'s positions (``r`` positions of
``A`` per position of ``s``, ``o`` an offset), assuming stationarity (edges ignored):

* linear layers (Conv1D, DepthwiseConv1D, SeparableConv1D, Dense on a sequence, average and
  max pooling) apply their taps to the lags: ``X'[d] = sum_j W_j^T X[d - dil j r]``; max
  pooling weights each position of the window 1/k (Price's theorem: ``Cov(max, y) = sum_j
  P(j is the max) Cov(x_j, y)``, alike positions);
* an elementwise function scales each channel by its Stein factor ``E[(x - mu) f(x)] / var``
  (exact for jointly Gaussian ``x`` and ``A``; through the Gaussian under ``x`` when known);
* BatchNormalization scales each channel by ``gamma / sd``; LayerNormalization over the
  channels first takes each position's mean over the channels off (to first order in the
  sample statistics); dropout, noise, identity keep it;
  cropping moves the offset; merges combine their inputs' links;
* every other layer drops its links (its output is taken as independent, as before);
* a global pooling of a linked sequence is, to first order, its mean over positions: two such
  flat vectors are related through their sequences.

Only forks that are the latest common fork of two inputs of some merge are linked to (the
others' links would never be read). A merge then takes ``Cov(a, b)`` from that fork ``A``:
``Cov(a, b) = Cov(a, A) Cov(A, A)^-1 Cov(A, b)``, exact when ``a`` and ``b`` depend on each
other only through ``A`` linearly (and exactly ``Cov(a, A)`` when ``b`` is ``A``); over lags
this is a product per frequency, ``G(w) = X_a(w) S_A(w)^-1 X_b(w)^H``, computed by FFT.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from autoinit_nas._mixture import _hermite
from autoinit_nas._moments import _unique_moments
from autoinit_nas._signal import Signal
from autoinit_nas._xcorr import MAX_CHANNELS, MAX_FLAT, _covariance, _fit_box, channel_mean

__all__ = ["Link", "common_fork", "covariance", "cross_cov", "fork", "merge_forks", "pairwise",
           "propagate", "related", "sum_cross_cov", "with_merged_sum_cov"]

L = keras.layers
#: Forks a tensor keeps links to (the most recent ones).
MAX_FORKS = 3
#: Longest sequence that starts or carries links.
MAX_LENGTH = 128
#: Largest ``taps x lags x fork channels`` product a linear layer's links are carried through.
_TAPS_BUDGET = 1 << 23
#: Largest ``positions x channels`` of a fork whose covariance ``sum_cross_cov`` solves against.
_SUM_BUDGET = 1024
#: Global poolings of a sequence: to first order each is its mean over positions.
_GLOBAL_POOLS = (L.GlobalAveragePooling1D, L.GlobalMaxPooling1D)
#: Keras merges whose inputs' covariance is used (with WeightedAdd).
_MERGES = (L.Add, L.Subtract, L.Average, L.Concatenate)


@dataclass(frozen=True)
class Link:
    """``x[i] = Cov(s[p, :], A[p r + o + lo + i, :])``, shape ``(n, C, C_A)``."""

    x: np.ndarray
    lo: int
    r: int
    o: int

    @property
    def hi(self) -> int:
        return self.lo + len(self.x) - 1


@dataclass(frozen=True)
class Root:
    """A fork: its covariance over lags ``-K .. K`` ``(2K + 1, C, C)``, its length, and the link
    it gives itself (passed on unchanged by identity-like layers)."""

    cov: np.ndarray
    length: int
    self_link: Link
    #: The fork's own signal (a later tensor that did not descend from it can still be related
    #: to it through an earlier fork: ``_derived``).
    signal: Signal | None = None


def _in_scope(x: Signal, channels: int = MAX_CHANNELS) -> bool:
    return (x.is_map and len(x.shape) == 2 and np.shape(x.var) == tuple(x.shape)
            and 0 < x.shape[-1] <= channels and x.shape[0] <= MAX_LENGTH)


def _carries(x: Signal) -> bool:
    """Whether ``x`` may carry links: a fork has at most ``MAX_CHANNELS`` channels, a
    descendant up to ``MAX_FLAT`` (a wide layer's links are ``C x C_A`` per lag, and its
    merges read only the position sums' covariance from them: ``sum_cross_cov``)."""
    return _in_scope(x, MAX_FLAT)


def links_of(ctx: Any, x: Signal) -> dict[int, Link]:
    return ctx.links.get(id(x), {})


def fork(ctx: Any, x: Signal) -> None:
    """Make ``x`` (read by several layers) an ancestor its descendants link to."""
    if not (ctx.realized and _in_scope(x)):
        return
    length, channels = x.shape
    k = length - 1
    cov = _fit_box(_covariance(x.xcorr, x.corr, channel_mean(x.var, x.shape), length), (k,))
    ctx.link_key += 1
    key = ctx.link_key
    own = Link(cov, -k, 1, 0)
    ctx.roots[key] = Root(cov, length, own, x)
    kept = dict(sorted(links_of(ctx, x).items())[-(MAX_FORKS - 1):])
    kept[key] = own
    ctx.links[id(x)] = kept


def merge_forks(graph: Any, fanout: dict[int, int]) -> set[int]:
    """The tensors (by ``id``) worth linking to: those read by two or more layers that are the
    latest common fork of two inputs of some merge (no other fork's links are ever used)."""
    from autoinit_nas.weighted_add import WeightedAdd

    order: dict[int, int] = {}  # fork -> walk order
    above: dict[int, frozenset[int]] = {}  # tensor -> forks it descends from

    def mark(tensor: Any, parents: frozenset[int]) -> None:
        if fanout.get(id(tensor), 0) >= 2:
            order[id(tensor)] = len(order)
            parents = parents | {id(tensor)}
        above[id(tensor)] = parents

    for tensor in graph.inputs:
        mark(tensor, frozenset())
    useful: set[int] = set()
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            ins = [above.get(id(t), frozenset()) for t in node.input_tensors]
            if isinstance(node.operation, _MERGES + (WeightedAdd,)):
                for i in range(len(ins)):
                    for j in range(i + 1, len(ins)):
                        common = ins[i] & ins[j]
                        if common:
                            useful.add(max(common, key=order.__getitem__))
            parents = frozenset().union(*ins)
            for tensor in node.outputs:
                mark(tensor, parents)
    return useful


# ------------------------------------------------------------------ propagation
def _clip(link: Link, root: Root) -> Link | None:
    """Drop lags no pair of positions reaches (beyond twice the fork's length plus the offset)
    and all-zero lags at either end; None when nothing is left."""
    bound = 2 * root.length + abs(link.o)
    lo, hi = max(link.lo, -bound), min(link.hi, bound)
    if hi < lo:
        return None
    x = link.x[lo - link.lo: hi - link.lo + 1]
    live = np.flatnonzero(np.any(x != 0.0, axis=(1, 2)))
    if not len(live):
        return None
    return Link(x[live[0]: live[-1] + 1], lo + int(live[0]), link.r, link.o)


def _taps(link: Link, kind: str, w: Any, k: int, stride: int, dilation: int, pad_left: int
          ) -> Link:
    """``X'[d] = sum_j W_j^T X[d - dil j r]`` over ``k`` taps: ``"dense"`` taps ``w`` ``(k, C,
    C')``, a ``"pool"`` window mean, or ``"depthwise"`` with ``w`` ``(k, C, M)``."""
    step = dilation * link.r
    n, c, ca = link.x.shape
    outs = c if kind == "pool" else c * w.shape[2] if kind == "depthwise" else w.shape[-1]
    out = np.zeros((n + (k - 1) * step, outs, ca))
    for j in range(k):
        part = out[j * step: j * step + n]
        if kind == "pool":
            part += link.x / k
        elif kind == "depthwise":
            part += (link.x[:, :, None, :] * w[j][None, :, :, None]).reshape(n, outs, ca)
        else:
            part += np.matmul(w[j].T, link.x)  # (C', C) @ (n, C, C_A)
    return Link(out, link.lo, link.r * stride, link.o - pad_left * link.r)


def _pad_left(padding: str, length: int, out_len: int, k: int, stride: int, dilation: int
              ) -> int:
    if padding == "same":
        return max((out_len - 1) * stride + (k - 1) * dilation + 1 - length, 0) // 2
    if padding == "causal":
        return (k - 1) * dilation
    return 0


def _value(ctx: Any, var: Any) -> np.ndarray:
    return np.asarray(ctx.value(var), float)


def _linear_taps(op: Any, ctx: Any) -> tuple[str, Any, int, int, int, str] | None:
    """(kind, taps, k, stride, dilation, padding) of a layer linear in its input (max pooling:
    to first order) for ``_taps``, or None."""
    if getattr(op, "data_format", "channels_last") != "channels_last":
        return None
    if isinstance(op, (L.AveragePooling1D, L.MaxPooling1D)):
        k = int(op.pool_size[0])
        return "pool", None, k, int(op.strides[0]), 1, op.padding
    if isinstance(op, L.Dense):
        return "dense", _value(ctx, op.kernel)[None], 1, 1, 1, "valid"
    if isinstance(op, L.SeparableConv1D):
        dw = _value(ctx, op.depthwise_kernel)  # (k, C, M)
        pw = _value(ctx, op.pointwise_kernel)[0]  # (C M, O)
        k, c, m = dw.shape
        taps = np.einsum("kcm,cmo->kco", dw, pw.reshape(c, m, -1))
        return "dense", taps, k, int(op.strides[0]), int(op.dilation_rate[0]), op.padding
    if isinstance(op, L.DepthwiseConv1D):
        dw = _value(ctx, op.kernel)  # (k, C, M)
        return ("depthwise", dw, dw.shape[0], int(op.strides[0]), int(op.dilation_rate[0]),
                op.padding)
    if type(op) is L.Conv1D and getattr(op, "groups", 1) == 1:
        kernel = _value(ctx, op.kernel)
        return ("dense", kernel, kernel.shape[0], int(op.strides[0]), int(op.dilation_rate[0]),
                op.padding)
    return None


def _stein(fn: Any, x: Signal) -> np.ndarray | None:
    """Per channel, ``Cov(f(x), y) / Cov(x, y)`` for any y jointly Gaussian with the Gaussian
    under ``x`` (averaged over positions)."""
    from autoinit_nas._functions import as_numpy_fn

    f = as_numpy_fn(fn)
    z, w = _hermite(32)
    if x.source is not None:
        mean, var = np.broadcast_to(x.source.mean, x.shape), np.broadcast_to(x.source.var, x.shape)
        inner = x.source.fn
    else:
        mean, var, inner = np.broadcast_to(x.mean, x.shape), np.broadcast_to(x.var, x.shape), None
    sd = np.sqrt(np.maximum(var, 0.0)).reshape(-1)
    keys, inverse = _unique_moments(np.ascontiguousarray(mean, float).reshape(-1), sd)
    g = keys[:, :1] + keys[:, 1:2] * z[None, :]
    with np.errstate(all="ignore"):
        h = np.asarray(inner(g), float) if inner is not None else g
        out = np.asarray(f(h), float)
    if not (np.all(np.isfinite(out)) and np.all(np.isfinite(h))):
        return None
    # E[(G - mu) f(h(G))] / E[(G - mu) h(G)]: both are sd * E[d/dG], so their ratio is the gain
    num = ((out * z[None, :]) @ w)[inverse].reshape(x.shape)
    den = ((h * z[None, :]) @ w)[inverse].reshape(x.shape)
    den_c = np.mean(den, axis=0)
    ok = np.abs(den_c) > 1e-9 * max(float(np.max(np.abs(den_c), initial=0.0)), 1e-300)
    return np.where(ok, np.mean(num, axis=0) / np.where(ok, den_c, 1.0), 0.0)


def _scaled(links: dict[int, Link], scale: np.ndarray) -> dict[int, Link]:
    return {k: Link(v.x * scale[None, :, None], v.lo, v.r, v.o) for k, v in links.items()}


def _aligned(parts: list[tuple[Link | None, int]], channels: int, ca: int) -> Link | None:
    """The parts' links to one fork, each ``(link, first channel)``, added into one link of
    ``channels`` channels over the union of their lags (parts without one: zeros); None when
    the parts step through the fork at different rates.

    Parts at different offsets (a 'same' convolution's link starts ``k // 2`` positions
    early) are moved to the smallest: at offset ``o'`` the lag ``d`` of offset ``o`` is
    ``d + o - o'``."""
    present = [lk for lk, _ in parts if lk is not None]
    if not present or len({lk.r for lk in present}) != 1:
        return None
    o = min(lk.o for lk in present)
    lo = min(lk.lo + lk.o - o for lk in present)
    hi = max(lk.hi + lk.o - o for lk in present)
    out = np.zeros((hi - lo + 1, channels, ca))
    for lk, start in parts:
        if lk is not None:
            first = lk.lo + lk.o - o - lo
            out[first: first + len(lk.x), start: start + lk.x.shape[1]] += lk.x
    return Link(out, lo, present[0].r, o)


def _merge_links(inputs: list[Signal], ctx: Any, coeffs: np.ndarray | None) -> dict[int, Link]:
    """WeightedAdd (``coeffs``) or channel Concatenate (``None``) of the inputs' links."""
    all_links = [links_of(ctx, x) for x in inputs]
    keys = sorted(set().union(*all_links))[-MAX_FORKS:]
    out = {}
    for key in keys:
        all_links = [lk if key in lk else _derived(ctx, x, key, lk)
                     for x, lk in zip(inputs, all_links, strict=True)]
        ca = ctx.roots[key].cov.shape[-1]
        if coeffs is None:
            starts = np.cumsum([0] + [x.shape[-1] for x in inputs])[:-1]
            parts = [(lk.get(key), int(s)) for lk, s in zip(all_links, starts, strict=True)]
            merged = _aligned(parts, int(sum(x.shape[-1] for x in inputs)), ca)
        else:
            parts = []
            for lk, c in zip(all_links, coeffs, strict=True):
                one = lk.get(key)
                parts.append((None if one is None else Link(c * one.x, one.lo, one.r, one.o), 0))
            merged = _aligned(parts, inputs[0].shape[-1], ca)
        if merged is not None:
            out[key] = merged
    return out


def _derived(ctx: Any, x: Signal, key: int, links: dict[int, Link]) -> dict[int, Link]:
    """``links`` with one to fork ``key`` added where ``x`` did not descend from it but both
    descend from an earlier fork ``F`` at one resolution: ``Cov(x, A)`` through ``F`` (exact
    when the fork ``A`` is a linear function of ``F``: the skip ``x`` of ``x + avgpool(x)``
    is related to the pooled branch, which the links from ``A`` alone do not see)."""
    root = ctx.roots[key]
    a = root.signal
    if a is None or not links or x.shape[0] != a.shape[0] or common_fork(ctx, x, a) is None:
        return links
    lags = root.length - 1
    g = cross_cov(ctx, x, a, lags)
    if g is None:
        return links
    derived = _clip(Link(g, -lags, 1, 0), root)
    return links if derived is None else {**links, key: derived}


def propagate(op: Any, node: Any, inputs: list[Signal], outputs: list[Signal], ctx: Any
              ) -> None:
    """Give ``outputs[0]`` its links from the inputs' (see the module notes), and make it a fork
    if several layers read it."""
    if not ctx.forks or len(outputs) != 1:  # no merge reads a fork's links (or expected mode)
        return
    out = outputs[0]
    if isinstance(op, _GLOBAL_POOLS) and inputs and id(inputs[0]) in ctx.links and \
            len(out.shape) == 1 and _in_scope(inputs[0]):
        ctx.pooled[id(out)] = inputs[0]  # a flat vector: the mean (or max) of this sequence
    result = None
    if _carries(out) and inputs and any(id(x) in ctx.links for x in inputs):
        result = _rule(op, inputs, out, ctx)
    if result:  # (an input passed through unchanged keeps its own links)
        ctx.links[id(out)] = result
    if id(node.outputs[0]) in ctx.forks:
        fork(ctx, out)


def _rule(op: Any, inputs: list[Signal], out: Signal, ctx: Any) -> dict[int, Link] | None:
    from autoinit_nas.parametric_activation import ParametricActivation
    from autoinit_nas.weighted_add import WeightedAdd

    x = inputs[0]
    if isinstance(op, WeightedAdd):
        if not all(_carries(i) and i.shape == out.shape for i in inputs):
            return None
        return _merge_links(inputs, ctx, _value(ctx, op.coefficient))
    linear = {L.Add: "add", L.Subtract: "subtract", L.Average: "average"}.get(type(op))
    if linear is not None:
        from autoinit_nas._rules import merge_coefficients

        if not all(_carries(i) and i.shape == out.shape for i in inputs):
            return None
        return _merge_links(inputs, ctx, np.asarray(merge_coefficients(linear, len(inputs))))
    if isinstance(op, L.Concatenate):
        if op.axis not in (-1, 2) or not all(_carries(i) and i.shape[0] == out.shape[0]
                                             for i in inputs):
            return None
        return _merge_links(inputs, ctx, None)
    links = links_of(ctx, x)
    if not links or not _carries(x):
        return None
    if isinstance(op, (L.Dropout, L.SpatialDropout1D, L.GaussianNoise, L.GaussianDropout,
                       L.Identity)):
        return links
    if isinstance(op, (L.Activation, ParametricActivation)):
        return _through_function(op.activation if isinstance(op, L.Activation) else op, x, links)
    if isinstance(op, L.BatchNormalization):
        if op.axis not in (-1, 2):
            return None
        from autoinit_nas._rules import normalization_stats

        var = normalization_stats(x, (0,))[1][0]
        gamma = _value(ctx, op.gamma) if op.gamma is not None else 1.0
        return _scaled(links, gamma / np.sqrt(var + float(op.epsilon)))
    if isinstance(op, L.LayerNormalization):
        from autoinit_nas._rules import _axes_of, normalization_stats

        if _axes_of(op.axis, len(x.shape)) != (len(x.shape) - 1,):
            return None
        # to first order each position's channels less their mean, over their mean spread
        var = float(np.mean(normalization_stats(x, (len(x.shape) - 1,))[1]))
        gamma = _value(ctx, op.gamma) if op.gamma is not None else np.ones(x.shape[-1])
        centered = {k: Link(v.x - v.x.mean(axis=1, keepdims=True), v.lo, v.r, v.o)
                    for k, v in links.items()}
        return _scaled(centered, np.broadcast_to(gamma / math.sqrt(var + float(op.epsilon)),
                                                 (x.shape[-1],)))
    if isinstance(op, L.Cropping1D):
        a = int(op.cropping[0])
        return {k: Link(v.x, v.lo, v.r, v.o + a * v.r) for k, v in links.items()}
    spec = _linear_taps(op, ctx)
    if spec is None:
        return None
    kind, taps, k, stride, dilation, padding = spec
    pad = _pad_left(padding, x.shape[0], out.shape[0], k, stride, dilation)
    result = {}
    for key, link in links.items():
        if kind == "dense" and taps.size * link.x.shape[0] * link.x.shape[2] > _TAPS_BUDGET:
            continue  # a wide layer's links to a wide fork: too costly to carry
        moved = _clip(_taps(link, kind, taps, k, stride, dilation, pad), ctx.roots[key])
        if moved is not None:
            result[key] = moved
    from autoinit_nas._functions import is_identity

    if not is_identity(getattr(op, "activation", None)):  # Dense(..., activation=f)
        pre = ctx.pre_activation.get(id(out))
        return None if pre is None or not result else _through_function(op.activation, pre,
                                                                          result)
    return result


def _through_function(fn: Any, x: Signal, links: dict[int, Link]) -> dict[int, Link] | None:
    """The links of ``fn(x)``: those of ``x`` scaled by ``fn``'s gain (``_stein``)."""
    gain = _stein(fn, x)
    return None if gain is None else _scaled(links, gain)


# ------------------------------------------------------------------ merges
def _fft_of(x: np.ndarray, lo: int, n: int) -> np.ndarray:
    """Real DFT over lags of ``x`` (``x[i]`` at lag ``lo + i``) on a circle of ``n``."""
    buf = np.zeros((n, *x.shape[1:]))
    buf[(lo + np.arange(len(x))) % n] = x  # len(x) <= n: no index repeats
    return np.fft.rfft(buf, axis=0)


def common_fork(ctx: Any, a: Signal, b: Signal) -> int | None:
    """The most recent fork both ``a`` and ``b`` link to at the same resolution, or None."""
    la, lb = links_of(ctx, a), links_of(ctx, b)
    common = [k for k in la if k in lb and la[k].r == lb[k].r]
    return max(common) if common else None


def related(ctx: Any, a: Signal, b: Signal) -> bool:
    """Whether ``covariance(ctx, a, b, ...)`` has something to say."""
    if max(a.shape[-1], b.shape[-1]) > MAX_CHANNELS:
        return False
    a, b = ctx.pooled.get(id(a), a), ctx.pooled.get(id(b), b)
    return common_fork(ctx, a, b) is not None


def pairwise(ctx: Any, inputs: list[Signal]) -> Callable[[int, int, int], np.ndarray | None]:
    """``cross(i, j, K)``: ``covariance`` of inputs ``i`` and ``j`` of a merge, as
    ``linear_combination`` and ``concat_xcorr`` take it (None for inputs past the channel
    budget: their merge reads ``sum_cross_cov``)."""
    def cross(i: int, j: int, lags: int) -> np.ndarray | None:
        if max(inputs[i].shape[-1], inputs[j].shape[-1]) > MAX_CHANNELS:
            return None
        return covariance(ctx, inputs[i], inputs[j], lags)

    return cross


def covariance(ctx: Any, a: Signal, b: Signal, lags: int) -> np.ndarray | None:
    """``Cov(a[p], b[p + e])`` over lags ``-lags .. lags`` for sequences (``cross_cov``); for
    flat vectors that globally pool sequences of one length, ``(1, C_a, C_b)``: the covariance
    of the two means, ``sum_e (L - |e|) Cov(a[p], b[p + e]) / L^2`` (max pooling to first
    order, as a mean); None when unrelated."""
    if id(a) not in ctx.pooled and id(b) not in ctx.pooled:
        return cross_cov(ctx, a, b, lags)
    if len(a.shape) != 1 or len(b.shape) != 1:
        return None
    sa, sb = ctx.pooled.get(id(a)), ctx.pooled.get(id(b))
    if sa is None or sb is None or sa.shape[0] != sb.shape[0]:
        return None
    length = sa.shape[0]
    g = cross_cov(ctx, sa, sb, length - 1)
    if g is None:
        return None
    weight = (length - np.abs(np.arange(1 - length, length))) / float(length) ** 2
    return np.tensordot(weight, g, axes=1)[None]


def cross_cov(ctx: Any, a: Signal, b: Signal, lags: int) -> np.ndarray | None:
    """``Cov(a[p, :], b[p + e, :])`` for ``e = -lags .. lags`` ``(2 lags + 1, C_a, C_b)``
    through their most recent common fork; None when they share none."""
    memo = (id(a), id(b), lags)
    if memo not in ctx.link_memo:
        ctx.link_memo[memo] = _cross_cov(ctx, a, b, lags)
    return ctx.link_memo[memo]


def _cross_cov(ctx: Any, a: Signal, b: Signal, lags: int) -> np.ndarray | None:
    key = common_fork(ctx, a, b)
    if key is None:
        return None
    xa, xb, root = links_of(ctx, a)[key], links_of(ctx, b)[key], ctx.roots[key]
    shift = np.arange(-lags, lags + 1) * xa.r + xb.o - xa.o
    if xb is root.self_link or xa is root.self_link:  # one input is the fork: G = its link
        if xb is root.self_link:  # Cov(a[p], A[p r + o_b + m]): a's link at lag m
            return _at(xa.x, xa.lo, shift)
        return np.swapaxes(_at(xb.x, xb.lo, -shift), -1, -2)  # Cov(b[p + e], a[p])^T
    k_root = (len(root.cov) - 1) // 2
    live = np.flatnonzero(np.any(root.cov != 0.0, axis=(1, 2)))
    k_eff = int(np.max(np.abs(live - k_root), initial=0))
    if k_eff == 0 and len(xa.x) * xa.x.shape[2] * len(shift) * xb.x.shape[1] <= _DIRECT_BUDGET:
        return _white_cross_cov(ctx, key, xa, xb, root.cov[k_root], shift)
    span = len(xa.x) + len(xb.x) + 2 * k_eff + 2 * int(np.max(np.abs(shift))) + 2
    n = 1 << int(np.ceil(np.log2(max(2 * span, 8))))
    fa = _fft_of(xa.x, xa.lo, n)
    fb = _fft_of(xb.x, xb.lo, n)
    fs = _spectrum(ctx, key, root.cov[k_root - k_eff: k_root + k_eff + 1], k_eff, n)
    # X_a S^-1 X_b^H per frequency (S + eps I: the fork's channels may be linearly dependent,
    # and X_b lies in the range of S)
    g = np.fft.irfft(fa @ np.linalg.solve(fs, np.conj(np.swapaxes(fb, -1, -2))), n=n, axis=0)
    return g[shift % n]


#: Stacked values up to which a white fork's cross-covariance is summed directly.
_DIRECT_BUDGET = 1 << 21


def _white_cross_cov(ctx: Any, key: int, xa: Link, xb: Link, cov0: np.ndarray,
                     shift: np.ndarray) -> np.ndarray:
    """``_cross_cov`` for a fork whose positions are independent (its spectrum is ``S_0`` at
    every frequency): ``G[t] = sum_i X_a[i] S_0^-1 X_b[j]^T`` over ``lo_a + i - lo_b - j = t``,
    as one matrix product over the stacked ``(i, root channel)`` pairs."""
    memo = ("white inverse", key)
    if memo not in ctx.link_memo:
        s0 = 0.5 * (cov0 + cov0.T)
        ctx.link_memo[memo] = np.linalg.inv(s0 + _ridge(cov0) * np.eye(len(s0)))
    inv = ctx.link_memo[memo]
    n_a, c_a, c_r = xa.x.shape
    c_b = xb.x.shape[1]
    ya = (xa.x @ inv).transpose(1, 0, 2).reshape(c_a, n_a * c_r)  # (C_a, (i, root))
    j = xa.lo + np.arange(n_a)[:, None] - xb.lo - shift[None, :]  # (i, t)
    padded = np.concatenate([xb.x, np.zeros((1, c_b, c_r))])
    j = np.where((j >= 0) & (j < len(xb.x)), j, len(xb.x))
    rows = padded[j].transpose(0, 3, 1, 2).reshape(n_a * c_r, len(shift) * c_b)
    return (ya @ rows).reshape(c_a, len(shift), c_b).transpose(1, 0, 2)


def _at(x: np.ndarray, lo: int, lags: np.ndarray) -> np.ndarray:
    """``x`` (``x[i]`` at lag ``lo + i``) at ``lags``, zero outside."""
    idx = lags - lo
    inside = (idx >= 0) & (idx < len(x))
    out = np.zeros((len(lags), *x.shape[1:]))
    out[inside] = x[idx[inside]]
    return out


def _ridge(cov0: np.ndarray) -> float:
    """The tiny ridge a fork's covariance is lifted by before it is solved against (its
    channels may be linearly dependent)."""
    return 1e-10 * max(float(np.trace(cov0)) / cov0.shape[-1], 1e-300)


def _spectrum(ctx: Any, key: int, cov: np.ndarray, k: int, n: int) -> np.ndarray:
    """The fork's spectral density at the ``n``-point real DFT frequencies, Hermitian and
    lifted by a tiny ridge so that it can be solved against."""
    memo = ("spectrum", key, n)
    if memo not in ctx.link_memo:
        fs = _fft_of(cov, -k, n)
        fs = 0.5 * (fs + np.conj(np.swapaxes(fs, -1, -2)))
        ctx.link_memo[memo] = fs + _ridge(cov[k]) * np.eye(cov.shape[-1])
    return ctx.link_memo[memo]


# ------------------------------------------------------------------ position sums
def _summed_link(link: Link, length: int, fork_length: int) -> np.ndarray:
    """``U[q] = Cov(sum_p s[p], A[q])`` ``(L_A, C, C_A)`` over the fork's positions ``q`` from
    the link of ``s`` (``length`` positions): ``x[i]`` is at ``q = p r + o + lo + i``."""
    n, c, ca = link.x.shape
    out = np.zeros((fork_length, c, ca))
    for p in range(length):
        first = p * link.r + link.o + link.lo  # the fork position of x[0]
        lo, hi = max(first, 0), min(first + n, fork_length)
        if lo < hi:
            out[lo:hi] += link.x[lo - first: hi - first]
    return out


def sum_cross_cov(ctx: Any, a: Signal, b: Signal) -> np.ndarray | None:
    """``Cov(sum_p a[p, :], sum_q b[q, :])`` ``(C_a, C_b)`` through the most recent common fork
    ``A``: ``U_a Cov(A, A)^-1 U_b^T`` over the fork's positions and channels (its covariance
    is block Toeplitz in its kept lags), exact when ``a`` and ``b`` depend on each other only
    through ``A`` linearly; None when they share no fork (or it is too large to solve)."""
    key = common_fork(ctx, a, b)
    if key is None:
        return None
    xa, xb, root = links_of(ctx, a)[key], links_of(ctx, b)[key], ctx.roots[key]
    ua = _summed_link(xa, a.shape[0], root.length)
    if xb is root.self_link:
        return ua.sum(axis=0)
    ub = _summed_link(xb, b.shape[0], root.length)
    if xa is root.self_link:
        return ub.sum(axis=0).T
    ca = root.cov.shape[-1]
    if root.length * ca > _SUM_BUDGET:
        return None
    memo = ("sum inverse", key)
    if memo not in ctx.link_memo:
        k = (len(root.cov) - 1) // 2
        lag = np.arange(root.length)[None, :] - np.arange(root.length)[:, None]  # q' - q
        inside = np.abs(lag) <= k
        blocks = np.where(inside[:, :, None, None], root.cov[np.clip(lag + k, 0, 2 * k)], 0.0)
        full = blocks.transpose(0, 2, 1, 3).reshape(root.length * ca, root.length * ca)
        full = 0.5 * (full + full.T)
        ctx.link_memo[memo] = np.linalg.pinv(full, rcond=1e-10, hermitian=True)
    inv = ctx.link_memo[memo]
    fa = ua.transpose(1, 0, 2).reshape(ua.shape[1], -1)
    fb = ub.transpose(1, 0, 2).reshape(ub.shape[1], -1)
    return fa @ inv @ fb.T


def _position_sum_cov(x: Signal) -> np.ndarray | None:
    """``Cov(sum_p x[p, :])`` ``(C, C)``: as carried (``sum_cov``), else from the channels'
    cross-covariance, else per channel from the positions' correlation (channels
    independent)."""
    from autoinit_nas._correlation import global_mean_var
    from autoinit_nas._linear import sum_cov
    from autoinit_nas._xcorr import global_mean_cov

    summed = sum_cov(x)
    if summed is not None:
        return summed
    length, var = x.shape[0], np.broadcast_to(x.var, x.shape)
    if x.xcorr is not None:
        return length**2 * global_mean_cov(x.xcorr, channel_mean(x.var, x.shape), x.shape[:-1])
    return np.diag(length**2 * global_mean_var(var, x.corr))


def with_merged_sum_cov(ctx: Any, inputs: list[Signal], coeffs: Any, out: Signal) -> Signal:
    """``out``, the weighted sum (``coeffs``) or channel concatenation (None) of sequences
    ``inputs``, with its position sum's covariance when it has more channels than its own
    correlation is kept for: the parts' (``sum_cov``), and between parts through their common
    fork (``sum_cross_cov``), so that a global pooling after it still knows how its wide
    channels covary (a few input channels spread over many)."""
    from autoinit_nas._linear import with_sum_cov

    if not (ctx.realized and len(out.shape) == 2 and out.is_map
            and MAX_CHANNELS < out.shape[-1] <= MAX_FLAT
            and all(len(x.shape) == 2 and x.is_map and x.shape[0] == out.shape[0]
                    and (coeffs is None or x.shape == out.shape) for x in inputs)):
        return out
    own = [_position_sum_cov(x) for x in inputs]
    if any(s is None for s in own):
        return out
    n = len(inputs)
    cross = {(i, j): sum_cross_cov(ctx, inputs[i], inputs[j])
             for i in range(n) for j in range(i + 1, n)}
    if coeffs is None:
        starts = np.cumsum([0] + [x.shape[-1] for x in inputs])
        total = np.zeros((out.shape[-1], out.shape[-1]))
        for i in range(n):
            total[starts[i]:starts[i + 1], starts[i]:starts[i + 1]] = own[i]
        for (i, j), g in cross.items():
            if g is not None:
                total[starts[i]:starts[i + 1], starts[j]:starts[j + 1]] = g
                total[starts[j]:starts[j + 1], starts[i]:starts[i + 1]] = g.T
    else:
        cs = [float(c) for c in coeffs]
        total = sum(c * c * s for c, s in zip(cs, own, strict=True))
        for (i, j), g in cross.items():
            if g is not None:
                total = total + cs[i] * cs[j] * (g + g.T)
    return with_sum_cov(out, total)
