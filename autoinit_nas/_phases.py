"""Correlation of a one-channel sequence that lays out a map: one row per phase.

The search space reshapes a flat vector to a one-channel sequence (``as_seq``: Flatten of an
``(L, C)`` map, or a Dense layer's units, then Reshape to ``(n, 1)``) so that sequence layers can
read it. Neighbouring elements of such a sequence are different channels of one position, so
its statistics repeat with period ``C`` but are not stationary: the correlation between elements
``i`` and ``i + d`` depends on ``i mod C``. ``Signal.corr`` keeps only its average over ``i``,
which is exact for sums (global average pooling reads it) but loses what nonlinear layers
depend on: pairs at the same lag can correlate at +0.5 and -0.5, averaging to 0, while the
maxima or the squares of those pairs correlate in both cases (``Cov(f(X), f(Y))`` has a
``rho^2`` term). Global pooling after such a layer then sees the sum of ``rho^2`` over every
pair, often the larger part of its variance.

``Signal.phase`` keeps the correlation per phase: ``rho[c, d] = Corr(x_i, x_(i + d))`` for
``i = c (mod P)``, lags ``d = 0 .. D`` (``rho[:, 0] = 1``), with ``P`` the period and the
elements' spread per phase taken from the variance map. It starts at the layout (from the
map's cross-channel correlation, ``Signal.xcorr``) and follows:

* elementwise functions (Mehler's expansion per pair, with each phase's Hermite coefficients);
* affine maps and dropout (the covariances stay, the variances change);
* average pooling and one-channel depthwise convolution (a linear window, exactly), and max
  pooling: each window's maximum by Clark's method over its own correlated members, and
  ``Cov(max A, max B)`` to second order in the windows' cross-covariance
  ``C = Cov(A, B)`` (Price's theorem), ``sum pi_i pi_j C_ij + 1/2 sum_(e, f) h_e h_f
  (D_e C D_f)^2``, with ``pi`` uniform, ``e = (i, i')`` the pairs of a window, ``D_e`` their
  difference and ``h_e`` the density that the two tie at the top;
* global average pooling (the exact sum over all pairs).

Other layers drop it. The period is at most ``MAX_PERIOD`` and the lags at most ``MAX_SPAN``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache

import numpy as np

from autoinit_nas._correlation import HERMITE_NODES, HERMITE_ORDER, _hermite_table
from autoinit_nas._moments import normal_cdf, normal_pdf
from autoinit_nas._signal import Signal
from autoinit_nas._xcorr import MAX_CHANNELS, sequence_xcorr

__all__ = [
    "MAX_PERIOD",
    "attach",
    "averaged",
    "concatenated",
    "correlation",
    "crop",
    "from_xcorr",
    "to_xcorr",
    "function_phase",
    "global_mean_var",
    "per_phase",
    "rescale",
    "window",
]

#: Periods beyond the channel budget of ``_xcorr`` are not tracked (their maps have no xcorr).
MAX_PERIOD = MAX_CHANNELS
MAX_SPAN = 4096
#: Lags whose correlation is below this at every phase are cut from the end.
_NEGLIGIBLE = 1e-4


def _trim(rho: np.ndarray) -> np.ndarray:
    big = np.nonzero(np.max(np.abs(rho[:, 1:]), axis=0) > _NEGLIGIBLE)[0]
    return rho[:, : (big[-1] + 2 if len(big) else 1)]


def from_xcorr(xcorr: np.ndarray, length: int) -> np.ndarray | None:
    """Phases of the sequence that lays out, channels fastest, a map with correlation ``xcorr``
    ``(2K + 1, C, C)`` (a flat vector: ``K = 0``) and ``length`` elements in all."""
    k, channels = xcorr.shape[0] // 2, xcorr.shape[-1]
    if channels > MAX_PERIOD:
        return None
    lags = np.arange(min(length, (k + 1) * channels, MAX_SPAN + 1))
    total = np.arange(channels)[:, None] + lags[None, :]  # (P, D + 1)
    dp, c2 = total // channels, total % channels
    rho = np.where(dp <= k, xcorr[k + np.minimum(dp, k), np.arange(channels)[:, None], c2], 0.0)
    rho[:, 0] = 1.0
    return _trim(rho)


def to_xcorr(rho: np.ndarray, positions: int) -> np.ndarray:
    """The inverse of ``from_xcorr``: the ``(2K + 1, C, C)`` correlation between the channels of
    the ``(positions, C)`` map that a sequence with phases ``rho`` (period ``C``) lays out,
    channels fastest. ``Corr(x[p, a], x[p + d, b])`` is the phase-``a`` correlation at lag
    ``d C + b - a``; lags past the tracked ones are 0 (they were cut as negligible)."""
    channels, span = rho.shape
    k = min(positions - 1, (span - 1 + channels - 1) // channels)
    lag = np.arange(k + 1)[:, None, None] * channels + np.arange(channels)[None, None, :] \
        - np.arange(channels)[None, :, None]  # (K + 1, C, C): element distance at (d, a, b)
    a = np.broadcast_to(np.arange(channels)[None, :, None], lag.shape)
    ahead = np.where((lag >= 0) & (lag < span), rho[a, np.clip(lag, 0, span - 1)], 0.0)
    # at offset 0 the pairs with b < a are the phase-b correlations at lag a - b
    ahead[0] = np.triu(ahead[0]) + np.triu(ahead[0], 1).T
    out = np.concatenate([np.transpose(ahead[:0:-1], (0, 2, 1)), ahead])
    out[k, np.arange(channels), np.arange(channels)] = 1.0
    return out


def per_phase(values: np.ndarray, period: int) -> np.ndarray:
    """Mean of a map's values (any shape, laid out in order) at each phase."""
    flat = np.asarray(values, float).reshape(-1)
    n = len(flat)
    pad = (-n) % period
    counts = (n - np.arange(period) + period - 1) // period
    full = np.concatenate([flat, np.zeros(pad)]).reshape(-1, period)
    return full.sum(axis=0) / np.maximum(counts, 1)


def _pair_counts(length: int, period: int, lags: int) -> np.ndarray:
    """``n[c, d]``: how many ``i`` with ``i = c (mod P)`` and ``0 <= i < length - d``."""
    room = length - np.arange(lags)[None, :] - np.arange(period)[:, None]
    return np.maximum(np.ceil(room / period), 0.0)


def _partner(period: int, lags: int) -> np.ndarray:
    """Phase of ``i + d`` for ``i`` at phase ``c``: ``(P, D + 1)``."""
    return (np.arange(period)[:, None] + np.arange(lags)[None, :]) % period


def _pair_weights(rho: np.ndarray, sd: np.ndarray, length: int) -> np.ndarray:
    period, lags = rho.shape
    return _pair_counts(length, period, lags) * sd[:, None] * sd[_partner(period, lags)]


def averaged(rho: np.ndarray, var: np.ndarray, length: int) -> np.ndarray:
    """The stationary correlation ``(D + 1, 1)`` that ``Signal.corr`` keeps: each lag's
    covariance summed over its pairs over the sum of their spreads, so that sums are exact."""
    w = _pair_weights(rho, np.sqrt(np.maximum(per_phase(var, len(rho)), 0.0)), length)
    den = w.sum(axis=0)
    out = np.where(den > 0, (w * rho).sum(axis=0) / np.maximum(den, 1e-300), 0.0)
    out[0] = 1.0
    return out[:, None]


def attach(out: Signal, rho: np.ndarray) -> Signal:
    """``out`` with phases ``rho`` and the average correlation the other rules read (for a
    sequence also as its one-channel ``xcorr``)."""
    corr = averaged(rho, np.broadcast_to(out.var, out.shape), int(np.prod(out.shape)))
    return replace(out, corr=corr, xcorr=sequence_xcorr(corr) if len(out.shape) == 2 else None,
                   phase=rho)


def global_mean_var(rho: np.ndarray, var: np.ndarray, length: int) -> float:
    """Variance of the mean of all ``length`` elements."""
    w = _pair_weights(rho, np.sqrt(per_phase(var, len(rho))), length)
    total = np.sum(w[:, 0]) + 2.0 * np.sum(w[:, 1:] * rho[:, 1:])
    return max(float(total), 0.0) / length**2


def rescale(rho: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Phases after white noise raised each phase's variance from ``before`` to ``after``."""
    ratio = np.sqrt(before / np.maximum(after, 1e-300))
    out = rho * ratio[:, None] * ratio[_partner(*rho.shape)]
    out[:, 0] = 1.0
    return out


def concatenated(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """Phases of flat vectors laid end to end, each given as ``(rho, var)``: its own phases
    (period ``len(rho)``, counted from its first element) and variance map. The period is the
    least common multiple of theirs (None above ``MAX_PERIOD``). Pairs within a part keep their
    covariance and pairs across parts are taken as uncorrelated, so sums stay exact."""
    period = 1
    for rho, _ in parts:
        period = math.lcm(period, len(rho))
    if period > MAX_PERIOD:
        return None
    lags = min(max(rho.shape[1] for rho, _ in parts), MAX_SPAN + 1)
    var_out = np.concatenate([np.reshape(v, -1) for _, v in parts])
    c, d = np.arange(period)[:, None], np.arange(lags)[None, :]
    cov = np.zeros((period, lags))
    start = 0
    for rho, var in parts:
        n, own = len(var), len(rho)
        sd = np.sqrt(np.maximum(per_phase(var, own), 0.0))
        # i = c (mod P) with start <= i < start + n - d: both ends of the pair in this part
        count = np.maximum((start + n - d - 1 - c) // period - (start - 1 - c) // period, 0)
        local = (c - start) % own
        r = np.zeros((period, lags))
        r[:, : min(lags, rho.shape[1])] = rho[local[:, 0], :lags]
        cov += count * sd[local] * sd[(local + d) % own] * r
        start += n
    sd_out = np.sqrt(np.maximum(per_phase(var_out, period), 0.0))
    den = _pair_counts(len(var_out), period, lags) * sd_out[:, None] * sd_out[_partner(period, lags)]
    out = np.clip(np.where(den > 0, cov / np.maximum(den, 1e-300), 0.0), -1.0, 1.0)
    out[:, 0] = 1.0
    return _trim(out)


def crop(rho: np.ndarray, start: int) -> np.ndarray:
    """Phases after dropping the first ``start`` elements."""
    return np.roll(rho, -start, axis=0)


def _coefficients(mean: np.ndarray, var: np.ndarray, fn: Callable) -> np.ndarray:
    """Normalized Hermite coefficients ``a[c, n]`` (``n >= 1``) of ``fn`` at each phase's
    Gaussian moments, scaled to unit sum of squares."""
    z, w, he = _hermite_table(HERMITE_ORDER, HERMITE_NODES)
    x = mean[:, None] + np.sqrt(np.maximum(var, 0.0))[:, None] * z[None, :]
    with np.errstate(all="ignore"):
        fx = np.nan_to_num(np.asarray(fn(x), dtype=float))
    a = np.einsum("cz,nz,z->cn", fx, he, w)[:, 1:]
    norm = np.sqrt(np.sum(np.square(a), axis=1, keepdims=True))
    return np.where(norm > 0, a / np.maximum(norm, 1e-300), 0.0)


def function_phase(rho: np.ndarray, mean: np.ndarray, var: np.ndarray,
                   fn: Callable) -> np.ndarray:
    """Phases of ``fn(G)`` for G Gaussian with these phases and per-phase moments (Mehler:
    ``sum_n a_n(c) a_n(c') rho^n``, summed by Horner's rule)."""
    a = _coefficients(mean, var, fn)
    other = _partner(*rho.shape)
    r = np.clip(rho, -1.0, 1.0)
    acc = np.zeros_like(r)
    for n in range(a.shape[1] - 1, -1, -1):
        acc = (acc + a[:, n][:, None] * a[other, n]) * r
    acc[:, 0] = 1.0
    return _trim(acc)


def correlation(rho: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``Corr(x_i, x_j)`` for arrays of element indices (stationary across periods)."""
    period, lags = rho.shape
    lo, d = np.minimum(i, j), np.abs(j - i)
    return np.where(d < lags, rho[lo % period, np.minimum(d, lags - 1)], 0.0)


def _covariance(rho: np.ndarray, sd: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``Cov(x_i, x_j)`` for arrays of element indices, ``sd`` per phase."""
    period = len(rho)
    return correlation(rho, i, j) * sd[i % period] * sd[j % period]


@lru_cache(maxsize=16)
def _tie_share(size: int) -> float:
    """For ``size`` i.i.d. Gaussians: the share of a pair's tie density at which both are
    above the others, ``int phi^2 Phi^(size - 2) / int phi^2`` (1 for a pair)."""
    z, w, _ = _hermite_table(1, HERMITE_NODES)
    # int phi(t)^2 Phi(t)^(s-2) dt = E_t~N(0,1)[phi(t) Phi(t)^(s-2)]
    pdf = normal_pdf(z)
    return float(np.sum(w * pdf * normal_cdf(z) ** (size - 2)) / np.sum(w * pdf))


def _window_starts(period: int, stride: int, pad: int) -> tuple[int, np.ndarray]:
    """The output period and, per output phase, the first element read by a representative
    window far enough in that it reads no padding."""
    out_period = period // math.gcd(period, stride)
    first = out_period * math.ceil(pad / (stride * out_period)) if pad else 0
    return out_period, (first + np.arange(out_period)) * stride - pad


def window(rho: np.ndarray, var: np.ndarray, mean: np.ndarray, weights: np.ndarray | None,
           stride: int, pad: int, out_length: int, out_var: np.ndarray | None = None,
           ) -> tuple[np.ndarray, np.ndarray]:
    """Phases of ``y_q = sum_j w_j x_(q stride + j - pad)`` (``weights``), or of the maximum over
    ``size = len`` of the window when ``weights`` is an int (``out_var``: the maxima's variance
    per output phase, from the max rule). Returns the output phases and, per output phase, the
    variance of ``y`` (the window rule's; for the maximum: ``out_var``)."""
    period = len(rho)
    out_period, a = _window_starts(period, stride, pad)
    is_max = np.ndim(weights) == 0
    size = int(weights) if is_max else len(weights)
    w = np.full(size, 1.0 / size) if is_max else np.asarray(weights, float)
    sd = np.sqrt(per_phase(var, period))
    mu = per_phase(mean, period)
    lags = min(out_length, (rho.shape[1] + size) // stride + 2)
    b = a[:, None] + np.arange(lags)[None, :] * stride  # (P', E) partner window starts
    taps = np.arange(size)
    ii = a[:, None, None, None] + taps[None, None, :, None]  # (P', 1, s, 1)
    jj = b[:, :, None, None] + taps[None, None, None, :]  # (P', E, 1, s)
    g = _covariance(rho, sd, np.broadcast_to(ii, jj.shape[:2] + (size, size)),
                    np.broadcast_to(jj, jj.shape[:2] + (size, size)))  # (P', E, s, s)
    cov = np.einsum("pejk,j,k->pe", g, w, w)
    if is_max and size > 1:
        cov = cov + _second_order(mu, a, g, size)
    v = np.maximum(out_var if is_max else cov[:, 0], 1e-300)
    sd_out = np.sqrt(v)  # (the product of two variances can underflow to 0)
    out = cov / (sd_out[:, None] * sd_out[_partner(out_period, lags)])
    out = np.clip(out, -1.0, 1.0)
    out[:, 0] = 1.0
    return _trim(out), v


def _second_order(mu: np.ndarray, a: np.ndarray, g: np.ndarray, size: int) -> np.ndarray:
    """``1/2 sum_(e, f) h_e h_f (D_e C D_f)^2`` for the maxima of windows ``A`` (start ``a``)
    and ``B`` at every lag, ``g`` their cross-covariance ``(P', E, s, s)`` (lag 0: ``A``'s own
    covariance); ``mu`` the input's mean per phase."""
    pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
    out_period, lags = g.shape[:2]
    share = _tie_share(size)
    own = g[:, 0]
    h = np.zeros((out_period, len(pairs)))
    for e, (i, j) in enumerate(pairs):
        var_d = own[:, i, i] + own[:, j, j] - 2.0 * own[:, i, j]
        sd_d = np.sqrt(np.maximum(var_d, 1e-300))
        z = (mu[(a + i) % len(mu)] - mu[(a + j) % len(mu)]) / sd_d
        h[:, e] = share * np.exp(-0.5 * z**2) / (math.sqrt(2.0 * math.pi) * sd_d)
    partner = _partner(out_period, lags)
    total = np.zeros((out_period, lags))
    for e, (i, j) in enumerate(pairs):
        for f, (k, m) in enumerate(pairs):
            dcd = g[:, :, i, k] - g[:, :, i, m] - g[:, :, j, k] + g[:, :, j, m]
            total += h[:, e][:, None] * h[partner, f] * np.square(dcd)
    return 0.5 * total
