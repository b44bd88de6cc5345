"""Correlation between the channels of a sequence or a flat vector (realized mode).

``_correlation.py`` keeps, per channel, the correlation between positions of a sequence, and
treats different channels as independent. They are not: every output channel of a convolution
or a Dense layer reads the same inputs, so two channels are correlated through their kernels
(with a one-channel input, as on MNIST-1D, the first layer's channels are all functions of the
same numbers). A global pooling then averages channels that move together, and the classifier's
realized variance ``w^T C w`` depends on the whole channel covariance ``C``, not only on its
diagonal. This module keeps the full stationary cross-covariance of a sequence map
``(length, C)``, as a correlation ``xcorr[K + d, c, c'] = Corr(x_c(p), x_c'(p + d))`` for lags
``-K .. K``, and of a flat vector ``(C,)`` as ``xcorr[0, c, c']``:

* a convolution (or a Dense layer on a sequence: one tap) maps the input cross-covariance
  through its kernel exactly, ``G_out[d, o, o'] = sum_{j, c, j', c'} W[j, c, o] W[j', c', o']
  G_in[s d + dil (j' - j), c, c']`` (two matrix products per tap);
* an elementwise function of Gaussian channels maps each pair by Mehler's expansion,
  ``Cov(f(X_c), f(X_c')) = sum_n a_n(c) a_n(c') rho^n`` with ``a_n(c)`` the normalized Hermite
  coefficients of ``f`` at channel ``c``'s moments;
* global average pooling sums the cross-covariance over lags with triangular weights; global
  max pooling keeps the channels' correlation from it (an approximation);
* a Dense layer on a flat vector adds ``w^T C w - sum_c w_c^2 C_cc`` to each unit's variance
  and passes on ``W^T C W``.

Other layers drop the structure (``None``), and the per-channel rules apply as before. The
cost grows as channels cubed, so maps with more than ``MAX_CHANNELS`` channels are not tracked.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from autoinit_nas._correlation import HERMITE_NODES, HERMITE_ORDER, MAX_LAG, _hermite_table

__all__ = [
    "MAX_CHANNELS",
    "conv_xcov",
    "correlation_of",
    "dense_flat",
    "function_xcorr",
    "global_pool_xcorr",
    "per_channel_corr",
    "rescale_xcorr",
]

#: Channel count above which cross-channel correlation is not tracked (cost ~ C^3 per layer).
MAX_CHANNELS = 96


def _lags(length: int) -> int:
    return int(min(max(length - 1, 0), MAX_LAG))


def _center(a: np.ndarray) -> int:
    """Index of lag 0 in an array over lags -K .. K."""
    return (a.shape[0] - 1) // 2


def _unit_diagonal(rho: np.ndarray) -> np.ndarray:
    """``rho`` with each channel's lag-0 self-correlation set to exactly 1 (in place)."""
    idx = np.arange(rho.shape[1])
    rho[_center(rho), idx, idx] = 1.0
    return rho


def _covariance(xcorr: np.ndarray | None, corr: np.ndarray | None, var_c: np.ndarray,
                length: int) -> np.ndarray:
    """(2K + 1, C, C) cross-covariance at lags -K .. K of a sequence: from ``xcorr`` when
    known, else channels independent with their per-channel ``corr`` (or white)."""
    k = _lags(length)
    channels = len(var_c)
    sd = np.sqrt(np.maximum(var_c, 0.0))
    rho = np.zeros((2 * k + 1, channels, channels))
    if xcorr is not None:
        have = _center(xcorr)
        n = min(k, have)
        rho[k - n : k + n + 1] = xcorr[have - n : have + n + 1]
    elif corr is None:
        _unit_diagonal(rho)
    else:
        idx = np.arange(channels)
        for d in range(min(k, corr.shape[0] - 1) + 1):
            rho[k + d, idx, idx] = corr[d]
            rho[k - d, idx, idx] = corr[d]
    return rho * sd[None, :, None] * sd[None, None, :]


def correlation_of(cov: np.ndarray) -> np.ndarray:
    """Covariance (lags, C, C) -> correlation, normalized by the lag-0 diagonal."""
    sd = np.sqrt(np.maximum(np.diagonal(cov[_center(cov)]), 1e-300))
    return _unit_diagonal(cov / (sd[None, :, None] * sd[None, None, :]))


def per_channel_corr(xcorr: np.ndarray) -> np.ndarray:
    """The per-channel correlation ``corr[d, c]`` (lags 0 .. K) that ``_correlation`` keeps."""
    return np.ascontiguousarray(np.diagonal(xcorr[_center(xcorr):], axis1=1, axis2=2))


def conv_xcov(
    xcorr: np.ndarray | None,
    corr: np.ndarray | None,
    var_c: np.ndarray,
    kernel: np.ndarray,
    stride: int,
    dilation: int,
    in_len: int,
    out_len: int,
) -> np.ndarray | None:
    """Output cross-covariance (2K' + 1, O, O) of a 1-D convolution with kernel (taps, C, O),
    or ``None`` when the channels exceed the budget."""
    taps, channels, outs = kernel.shape
    if max(channels, outs) > MAX_CHANNELS:
        return None
    g = _covariance(xcorr, corr, var_c, in_len)
    k_in = _center(g)
    k_out = _lags(out_len)
    d = np.arange(-k_out, k_out + 1)
    # e = s d + dil j' for every output lag d and tap j'; T[e] = sum_j W[j]^T G[e - dil j]
    e_all = (stride * d[:, None] + dilation * np.arange(taps)[None, :])  # (D, taps)
    e_min, e_max = int(e_all.min()), int(e_all.max())
    e = np.arange(e_min, e_max + 1)
    t = np.zeros((len(e), outs, channels))
    for j in range(taps):
        lag = e - dilation * j
        ok = np.abs(lag) <= k_in
        if np.any(ok):
            t[ok] += np.einsum("co,ecC->eoC", kernel[j], g[k_in + lag[ok]], optimize=True)
    out = np.zeros((len(d), outs, outs))
    for jp in range(taps):
        rows = e_all[:, jp] - e_min
        out += np.einsum("doC,CO->doO", t[rows], kernel[jp], optimize=True)
    return out


def rescale_xcorr(xcorr: np.ndarray | None, before: np.ndarray, after: np.ndarray
                  ) -> np.ndarray | None:
    """Correlation after each channel's variance changed from ``before`` to ``after`` with the
    covariances unchanged (independent noise, as dropout adds)."""
    if xcorr is None:
        return None
    s = np.sqrt(before / np.maximum(after, 1e-300))
    return _unit_diagonal(xcorr * s[None, :, None] * s[None, None, :])


def function_xcorr(xcorr: np.ndarray | None, mean_c: np.ndarray, var_c: np.ndarray,
                   fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    """Cross-correlation of ``fn(G)`` for Gaussian channels with cross-correlation ``xcorr``."""
    if xcorr is None:
        return None
    z, w, he = _hermite_table(HERMITE_ORDER, HERMITE_NODES)
    x = mean_c[:, None] + np.sqrt(np.maximum(var_c, 0.0))[:, None] * z[None, :]
    with np.errstate(all="ignore"):
        fx = np.asarray(fn(x), dtype=float)
    if not np.all(np.isfinite(fx)):
        fx = np.nan_to_num(fx)
    a = np.einsum("cz,nz,z->cn", fx, he, w)[:, 1:]  # (C, N): the varying part
    total = np.sqrt(np.maximum(np.sum(a * a, axis=1), 1e-300))
    a = a / total[:, None]
    rho = np.clip(xcorr, -1.0, 1.0)
    out = np.zeros_like(rho)
    power = np.ones_like(rho)
    for n in range(a.shape[1]):
        power = power * rho
        out += power * (a[:, n][None, :, None] * a[:, n][None, None, :])
    return _unit_diagonal(out)


def global_pool_xcorr(xcorr: np.ndarray | None, var_c: np.ndarray, length: int
                      ) -> np.ndarray | None:
    """(1, C, C) correlation between the channel means over ``length`` positions."""
    if xcorr is None:
        return None
    g = _covariance(xcorr, None, var_c, length)
    k = _center(g)
    d = np.arange(-k, k + 1)
    weight = np.maximum(length - np.abs(d), 0).astype(float)
    cov = np.einsum("d,dcC->cC", weight, g)[None]
    return correlation_of(cov)


def dense_flat(xcorr: np.ndarray, var: np.ndarray, kernel: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Dense on a flat vector with correlation ``xcorr`` (1, C, C) and variances ``var`` (C,):
    per unit, the variance the cross terms add, and the output correlation (1, O, O)."""
    sd = np.sqrt(np.maximum(var, 0.0))
    cov = xcorr[0] * sd[:, None] * sd[None, :]
    out = kernel.T @ cov @ kernel
    independent = np.einsum("co,c->o", np.square(kernel), np.maximum(var, 0.0))
    return np.diagonal(out) - independent, correlation_of(out[None])
