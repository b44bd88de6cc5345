"""Correlation between the channels of a map (realized mode): sequences, images, flat vectors.

``_correlation.py`` keeps, per channel, the correlation between positions of a sequence, and
treats different channels as independent. They are not: every output channel of a convolution
or a Dense layer reads the same inputs, so two channels are correlated through their kernels
(with a one-channel input, as on MNIST-1D, the first layer's channels are all functions of the
same numbers), and neighbouring positions share inputs. The next layer's realized variance
``sum W_j^T G[j' - j] W_j'`` depends on all of it, and so does a pooled head's ``w^T C w``.
This module keeps the stationary cross-covariance of a channels-last map as a correlation
``xcorr[K + d, c, c'] = Corr(x_c(p), x_c'(p + d))`` for offsets ``d`` in ``-K .. K`` per
spatial axis (``(2K + 1, ..., C, C)``; a flat vector ``(C,)`` has ``(1, C, C)``):

* a convolution (or a Dense layer: one tap) maps the input cross-covariance through its kernel
  exactly, ``G_out[d] = sum_{j, j'} W[j]^T G_in[s d + dil (j' - j)] W[j']`` (two matrix
  products per tap, half the offsets computed: ``G[-d] = G[d]^T``);
* an elementwise function of Gaussian channels maps each pair by Mehler's expansion,
  ``Cov(f(X_c), f(X_c')) = sum_n a_n(c) a_n(c') rho^n`` with ``a_n(c)`` the normalized Hermite
  coefficients of ``f`` at channel ``c``'s moments;
* Add sums the parts' covariances (parts independent), Concatenate places them block by block,
  Dropout adds white noise, BatchNormalization keeps it, LayerNormalization over the channels
  centers it (``P G P``, then the per-sample division by the delta method);
* average pooling of a sequence sums it over each window's pairs of positions (exact, edges
  aside), max pooling adds the covariance of the window's spreads to that (``pooled_xcorr``);
* global average pooling sums the cross-covariance over offsets with triangular weights; global
  max pooling keeps the channels' correlation from it (an approximation);
* a Dense layer on a flat vector adds ``w^T C w - sum_c w_c^2 C_cc`` to each unit's variance
  and passes on ``W^T C W``; a layer with more outputs than the budget gets only each output's
  own variance (``conv_var``), and its output's correlation is not tracked;
* a flat vector laid out as a one-channel sequence (Flatten or Dense, then Reshape to
  ``(n, 1)``) gets the correlation between all its positions (``flattened_corr``).

Sequences keep up to ``max_lag(C)`` offsets, images ``MAX_LAG_ND`` per axis. Model inputs are
white (``white_xcorr``). For images ``None`` means unknown (a layer dropped it) and is not
tracked further; for sequences it means independent channels. Other layers drop the structure,
and the per-channel rules apply as before. The cost grows as channels cubed, so maps with more
than ``MAX_CHANNELS`` channels are not tracked.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from autoinit_nas._correlation import hermite_shares, max_lag

__all__ = [
    "MAX_CHANNELS",
    "MAX_FLAT",
    "border_var",
    "channel_mean",
    "concat_xcorr",
    "conv_var",
    "conv_xcov",
    "correlation_of",
    "dense_flat",
    "flattened_corr",
    "function_xcorr",
    "lag_zero",
    "global_mean_cov",
    "per_channel_corr",
    "pooled_xcorr",
    "rescale_xcorr",
    "sequence_xcorr",
    "sum_xcorr",
    "white_xcorr",
]

#: Channel count above which cross-channel correlation is not tracked (cost ~ C^3 per layer).
MAX_CHANNELS = 96
#: The same for flat vectors (a global pooling's output, a Dense on it): one ``C x C`` matrix
#: and no lags (a Dense on it costs ``C^2 O``), so a wide head keeps its correlation.
MAX_FLAT = 256
#: Lags kept per spatial axis for images and volumes (sequences: ``max_lag``): the cost of a
#: convolution grows as ``(2 K + 1)^rank``, and the correlation of a 3x3 stack decays within a
#: few positions.
MAX_LAG_ND = 2


def channel_mean(values: object, shape: tuple[int, ...]) -> np.ndarray:
    """Per-channel mean of a (broadcastable) map of a channels-last ``shape`` over its spatial
    axes."""
    return np.mean(np.broadcast_to(values, shape).reshape(-1, shape[-1]), axis=0)


def _as_tuple(value: int | tuple[int, ...], rank: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * rank


def _lags(spatial: int | tuple[int, ...], channels: int) -> tuple[int, ...]:
    """Lags kept per axis for a map with these spatial sizes and channels."""
    sizes = _as_tuple(spatial, 1)
    cap = max_lag(channels) if len(sizes) == 1 else MAX_LAG_ND
    return tuple(int(min(max(n - 1, 0), cap)) for n in sizes)


def _center(a: np.ndarray) -> tuple[int, ...]:
    """Index of lag 0 in an array over lags ``-K .. K`` per spatial axis (then C, C)."""
    return tuple((n - 1) // 2 for n in a.shape[:-2])


def lag_zero(a: np.ndarray) -> np.ndarray:
    """The ``(C, C)`` slice at offset 0 of an array over offsets ``-K .. K`` per axis."""
    return a[_center(a)]


def _fit_box(a: np.ndarray, ks: tuple[int, ...]) -> np.ndarray:
    """``a`` (offsets per axis, then C, C) cut or zero-padded to offsets ``-k .. k`` per axis."""
    have = _center(a)
    out = np.zeros(tuple(2 * k + 1 for k in ks) + a.shape[-2:])
    n = [min(k, h) for k, h in zip(ks, have, strict=True)]
    dst = tuple(slice(k - m, k + m + 1) for k, m in zip(ks, n, strict=True))
    src = tuple(slice(h - m, h + m + 1) for h, m in zip(have, n, strict=True))
    out[dst] = a[src]
    return out


def _unit_diagonal(rho: np.ndarray) -> np.ndarray:
    """``rho`` with each channel's lag-0 self-correlation set to exactly 1 (in place)."""
    idx = np.arange(rho.shape[-1])
    rho[(*_center(rho), idx, idx)] = 1.0
    return rho


def _covariance(xcorr: np.ndarray | None, corr: np.ndarray | None, var_c: np.ndarray,
                spatial: int | tuple[int, ...]) -> np.ndarray:
    """Cross-covariance ``(2K + 1, ..., C, C)`` at lags ``-K .. K`` per spatial axis of a map:
    from ``xcorr`` when known, else channels independent with their per-channel ``corr``
    (sequences) or white."""
    channels = len(var_c)
    ks = _lags(spatial, channels)
    sd = np.sqrt(np.maximum(var_c, 0.0))
    if xcorr is not None:
        return _fit_box(xcorr, ks) * sd[:, None] * sd[None, :]
    rho = np.zeros(tuple(2 * k + 1 for k in ks) + (channels, channels))
    if corr is None or len(ks) != 1:
        _unit_diagonal(rho)
    else:
        k = ks[0]
        idx = np.arange(channels)
        for d in range(min(k, corr.shape[0] - 1) + 1):
            rho[k + d, idx, idx] = corr[d]
            rho[k - d, idx, idx] = corr[d]
    return rho * sd[:, None] * sd[None, :]


def correlation_of(cov: np.ndarray) -> np.ndarray:
    """Covariance (lags..., C, C) -> correlation, normalized by the lag-0 diagonal."""
    var = np.diagonal(lag_zero(cov))
    live = var > 1e-12 * max(float(np.max(var, initial=0.0)), 1e-300)  # constant channels: 0
    inv = np.zeros(len(var))
    np.divide(1.0, np.sqrt(var, where=live, out=np.ones(len(var))), where=live, out=inv)
    with np.errstate(invalid="ignore"):
        rho = cov * (inv[:, None] * inv[None, :])
    if not np.isfinite(rho).all():
        rho = np.nan_to_num(rho)
    np.clip(rho, -1.0, 1.0, out=rho)
    return _unit_diagonal(rho)


def per_channel_corr(xcorr: np.ndarray) -> np.ndarray:
    """The per-channel correlation ``corr[d, c]`` (lags 0 .. K) that ``_correlation`` keeps
    for sequences."""
    return np.ascontiguousarray(np.diagonal(xcorr[_center(xcorr)[0]:], axis1=1, axis2=2))


def _grid(ks: tuple[int, ...]) -> np.ndarray:
    """Every lag vector of the box ``-K .. K`` per axis, in C order: ``(prod(2K + 1), rank)``.
    Row ``i`` and row ``len - 1 - i`` are opposite lags."""
    axes = np.meshgrid(*[np.arange(-k, k + 1) for k in ks], indexing="ij")
    return np.stack(axes, axis=-1).reshape(-1, len(ks))


def _mirrored(half: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The full lag box from its second half (flat lag index >= center), using
    ``G[-d] = G[d]^T``."""
    n = int(np.prod(shape))
    c = n // 2
    full = np.empty((n, *half.shape[1:]))
    full[c:] = half
    full[:c] = np.swapaxes(half[:0:-1], -1, -2)
    return full.reshape(*shape, *half.shape[1:])


def _sandwich(w: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``W^T G[d] W`` for every ``d``, as two matrix products over the stacked lags."""
    lags, channels, outs = len(g), w.shape[0], w.shape[1]
    right = (g.reshape(lags * channels, channels) @ w).reshape(lags, channels, outs)
    both = w.T @ right.transpose(1, 0, 2).reshape(channels, lags * outs)
    return both.reshape(outs, lags, outs).transpose(1, 0, 2)


def conv_xcov(
    xcorr: np.ndarray | None,
    corr: np.ndarray | None,
    var_c: np.ndarray,
    kernel: np.ndarray,
    stride: int | tuple[int, ...],
    dilation: int | tuple[int, ...],
    in_size: int | tuple[int, ...],
    out_size: int | tuple[int, ...],
) -> np.ndarray | None:
    """Output cross-covariance ``(2K' + 1, ..., O, O)`` of a convolution with kernel
    ``(*taps, C, O)`` (any spatial rank), or ``None`` when the channels exceed the budget."""
    rank = kernel.ndim - 2
    taps, (channels, outs) = kernel.shape[:rank], kernel.shape[rank:]
    if max(channels, outs) > MAX_CHANNELS:
        return None
    strides = np.asarray(_as_tuple(stride, rank))
    dilations = np.asarray(_as_tuple(dilation, rank))
    g = _covariance(xcorr, corr, var_c, _as_tuple(in_size, rank))
    k_in = np.asarray(_center(g))
    k_box = _lags(_as_tuple(out_size, rank), outs)
    # lags the output can reach from the input's nonzero ones; beyond them it is exactly 0
    k_out = tuple(min(k, (m + d * (t - 1)) // s) for k, m, d, t, s in zip(
        k_box, _support(g), dilations, taps, strides, strict=True))
    out = _conv_xcov_box(g, k_in, k_out, kernel, strides, dilations)
    return out if k_out == k_box else _fit_box(out, k_box)


def _support(g: np.ndarray) -> tuple[int, ...]:
    """Per spatial axis, the largest |lag| at which the box ``g`` has a nonzero entry."""
    rank = g.ndim - 2
    nonzero = np.any(g != 0, axis=(-2, -1))
    out = []
    for axis, center in enumerate(_center(g)):
        hit = np.nonzero(np.any(nonzero, axis=tuple(i for i in range(rank) if i != axis)))[0]
        out.append(int(np.max(np.abs(hit - center), initial=0)))
    return tuple(out)


def _conv_xcov_box(g: np.ndarray, k_in: np.ndarray, k_out: tuple[int, ...], kernel: np.ndarray,
                   strides: np.ndarray, dilations: np.ndarray) -> np.ndarray:
    """``conv_xcov`` at the output lags ``-k_out .. k_out``, from the input covariance box
    ``g``."""
    rank = kernel.ndim - 2
    taps, (channels, outs) = kernel.shape[:rank], kernel.shape[rank:]
    w = kernel.reshape(-1, channels, outs)
    if len(w) == 1:  # 1x1: G_out[d] = W^T G[s d] W, lags beyond the input's are 0
        sel = tuple(k + s * np.arange(-ko, ko + 1) for k, s, ko in zip(k_in, strides, k_out,
                                                                        strict=True))
        inside = [np.abs(a - k) <= k for a, k in zip(sel, k_in, strict=True)]
        picked = g[np.ix_(*[np.clip(a, 0, 2 * k) for a, k in zip(sel, k_in, strict=True)])]
        mask = np.ones(picked.shape[:rank], bool)
        for axis, ok in enumerate(inside):
            mask &= np.expand_dims(ok, tuple(i for i in range(rank) if i != axis))
        shape = picked.shape[:rank]
        flat = (picked * mask[..., None, None]).reshape(-1, channels, channels)
        half = _sandwich(w[0], flat[len(flat) // 2:])  # lags >= 0; the rest by symmetry
        return _mirrored(half, shape)
    tap = np.stack(np.meshgrid(*[np.arange(n) for n in taps], indexing="ij"), -1).reshape(-1, rank)
    lags_out = _grid(k_out)
    half = lags_out[len(lags_out) // 2:]
    # G_out[-d] = sum_{j, j'} W[j']^T G[dil j - s d - dil j']^T... written with e = s d + dil j':
    # T[e] = sum_j G[dil j - e] W[j]  (= (sum_j W[j]^T G[e - dil j])^T), then
    # G_out[d]^T = sum_j' W[j']^T T[s d + dil j'], i.e. G_out[-d].
    e = half[:, None, :] * strides + tap[None, :, :] * dilations  # (H, J, rank)
    uniq, where = np.unique(e.reshape(-1, rank), axis=0, return_inverse=True)
    where = where.reshape(e.shape[:2])
    gflat = np.concatenate([g.reshape(-1, channels, channels),
                            np.zeros((1, channels, channels))])  # last: zero for far lags
    lag = tap[None, :, :] * dilations - uniq[:, None, :]  # (U, J, rank)
    ok = np.all(np.abs(lag) <= k_in, axis=-1)
    idx = np.full(ok.shape, len(gflat) - 1)
    idx[ok] = np.ravel_multi_index(tuple((lag[ok] + k_in).T), g.shape[:rank])
    # one matrix product each: t[u] = sum_j G[idx[u, j]] W[j] over the stacked (j, c) rows,
    # then neg[h] = sum_j W[j]^T t[where[h, j]]
    units, n_taps = len(uniq), len(tap)
    stacked = w.reshape(n_taps * channels, outs)
    rows = gflat[idx].transpose(0, 2, 1, 3).reshape(units * channels, n_taps * channels)
    t = (rows @ stacked).reshape(units, channels, outs)
    picked = t[where].transpose(1, 2, 0, 3).reshape(n_taps * channels, len(half) * outs)
    neg = (stacked.T @ picked).reshape(outs, len(half), outs).transpose(1, 0, 2)
    shape = tuple(2 * k + 1 for k in k_out)
    # neg[i] is the lag opposite half[i]: flat index c - i; so G_out[c + i] = neg[i]^T
    return _mirrored(np.swapaxes(neg, -1, -2), shape)


def pooled_xcorr(xcorr: np.ndarray | None, corr: np.ndarray | None, var_c: np.ndarray,
                 size: int, stride: int, in_len: int, out_len: int,
                 var_out: np.ndarray | None = None) -> np.ndarray | None:
    """Cross-correlation ``(2K' + 1, C, C)`` of the window means of ``size`` positions taken
    every ``stride`` along a sequence: ``G_out[d] = sum_m (size - |m|) G[stride d + m] / size^2``
    (edges ignored); ``None`` when the channels' correlation is not tracked.

    With ``var_out`` (each channel's variance after window maxima) the maxima's correlation:
    a window's values are its mean plus deviations independent of it (Gaussian, positions
    alike), so ``max = mean + S(deviations)`` and ``Cov(max_a, max_b) = Cov(mean_a, mean_b) +
    Cov(S_a, S_b)``. The spreads ``S`` are even to leading order (``|x_1 - x_2| / 2`` for two
    values), so ``Cov(S_a, S_b) ~ sd(S_a) sd(S_b) rho_dev^2`` within one window, with ``rho_dev``
    the correlation of the two channels' deviations; exact at ``rho = 0, +-1`` for windows of
    two independent values. Windows at other offsets keep the means' covariance only."""
    channels = len(var_c)
    if xcorr is None or channels > MAX_CHANNELS:
        return None
    g = _covariance(xcorr, corr, var_c, in_len)
    k_in = _center(g)[0]
    k_out = _lags(out_len, channels)[0]
    m = np.arange(1 - size, size)
    lags = np.arange(0, k_out + 1)[:, None] * stride + m[None, :]  # (K' + 1, 2 size - 1)
    inside = np.abs(lags) <= k_in
    gathered = g[np.clip(lags + k_in, 0, 2 * k_in)] * inside[..., None, None]
    half = np.einsum("dmab,m->dab", gathered, (size - np.abs(m)).astype(float)) / size**2
    cov = _mirrored(half, (2 * k_out + 1,))
    if var_out is None:
        return correlation_of(cov)
    dev = g[k_in] - cov[k_out]  # covariance of the deviations from the window means
    dev_sd = np.sqrt(np.maximum(np.diagonal(dev), 1e-300))
    rho_dev = np.clip(dev / (dev_sd[:, None] * dev_sd[None, :]), -1.0, 1.0)
    spread = np.sqrt(np.maximum(var_out - np.diagonal(cov[k_out]), 0.0))
    cov[k_out] += spread[:, None] * spread[None, :] * rho_dev**2
    sd = np.sqrt(np.maximum(var_out, 1e-300))
    return _unit_diagonal(np.clip(cov / (sd[:, None] * sd[None, :]), -1.0, 1.0))


def conv_var(
    xcorr: np.ndarray | None,
    corr: np.ndarray | None,
    var_c: np.ndarray,
    kernel: np.ndarray,
    dilation: int | tuple[int, ...],
    in_size: int | tuple[int, ...],
) -> np.ndarray:
    """Per output channel, the lag-0 variance ``sum_{j, j'} W[j]^T G[dil (j' - j)] W[j']`` of a
    convolution with kernel ``(*taps, C, O)``: the diagonal of ``conv_xcov``'s lag 0, for
    outputs past the budget (only the input's ``C x C`` covariance is formed)."""
    rank = kernel.ndim - 2
    taps, (channels, outs) = kernel.shape[:rank], kernel.shape[rank:]
    dilations = np.asarray(_as_tuple(dilation, rank))
    g = _covariance(xcorr, corr, var_c, _as_tuple(in_size, rank))
    k_in = np.asarray(_center(g))
    tap = np.stack(np.meshgrid(*[np.arange(n) for n in taps], indexing="ij"), -1).reshape(-1, rank)
    lag = (tap[None, :, :] - tap[:, None, :]) * dilations  # (J, J', rank): j' - j
    ok = np.all(np.abs(lag) <= k_in, axis=-1)
    idx = np.ravel_multi_index(tuple(np.moveaxis(np.clip(lag + k_in, 0, 2 * k_in), -1, 0)),
                               g.shape[:rank])
    blocks = g.reshape(-1, channels, channels)[idx] * ok[..., None, None]  # (J, J', C, C)
    big = blocks.transpose(0, 2, 1, 3).reshape(len(tap) * channels, len(tap) * channels)
    w = kernel.reshape(-1, outs)
    return np.einsum("ao,ao->o", big @ w, w)


#: Most multiply-adds ``border_var`` spends, ``P taps^2 C^2 O`` (two border positions of a
#: 5-tap conv from 64 to 25 channels: 5.1e6).
BORDER_BUDGET = 2e7


def border_var(
    xcorr: np.ndarray | None,
    corr: np.ndarray | None,
    kernel: np.ndarray,
    dilation: int,
    fields: np.ndarray,
) -> np.ndarray | None:
    """The variance that correlated inputs add to some output positions of a 1-D convolution
    with kernel ``(taps, C, O)``, from their own receptive fields: ``fields`` ``(P, C, taps)``
    holds each input element's standard deviation (0 in the padding), and the result
    ``(P, O)`` is ``sum_{j, j'} W[j]^T (s_j s_j'^T * R[dil (j' - j)]) W[j']`` less its
    independent terms (R: the correlation the stationary rule uses). At the borders this
    drops the cross terms of the taps in the padding, and elsewhere weighs them by the
    elements' own variance (a stationary rule left both in and drove the first position of
    a 16-channel conv after a border-damped one to 0; it measured 0.27). None past
    ``BORDER_BUDGET`` multiply-adds."""
    taps, channels, outs = kernel.shape
    positions = len(fields)
    if positions * taps * taps * channels * channels * outs > BORDER_BUDGET:
        return None
    # the correlation alone: each element's own sd is in ``fields``
    rho = _covariance(xcorr, corr, np.ones(channels), (fields.shape[-1] * dilation,))
    k_in = _center(rho)[0]
    scaled = fields.transpose(2, 0, 1)[..., None] * kernel[:, None]  # (taps, P, C, O)
    out = np.zeros((positions, outs))
    for j in range(taps):
        for jj in range(taps):
            lag = (jj - j) * dilation
            if abs(lag) > k_in:
                continue
            block = rho[k_in + lag]
            if j == jj:
                block = block - np.eye(channels)
            right = np.einsum("cd,pdo->pco", block, scaled[jj])
            out += np.einsum("pco,pco->po", scaled[j], right)
    return out


def rescale_xcorr(xcorr: np.ndarray | None, before: np.ndarray, after: np.ndarray
                  ) -> np.ndarray | None:
    """Correlation after each channel's variance changed from ``before`` to ``after`` with the
    covariances unchanged (independent noise, as dropout adds)."""
    if xcorr is None:
        return None
    s = np.sqrt(before / np.maximum(after, 1e-300))
    return _unit_diagonal(xcorr * s[:, None] * s[None, :])


def function_xcorr(xcorr: np.ndarray | None, mean_c: np.ndarray, var_c: np.ndarray,
                   fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    """Cross-correlation of ``fn(G)`` for Gaussian channels with cross-correlation ``xcorr``."""
    if xcorr is None:
        return None
    a, order = hermite_shares(mean_c, var_c, fn)
    channels = len(mean_c)
    lag_shape = xcorr.shape[:-2]
    flat = xcorr.reshape(-1, channels, channels)
    rho = np.clip(flat[len(flat) // 2:], -1.0, 1.0)  # lags >= 0; the rest by symmetry
    out = np.zeros_like(rho)
    for n in range(order - 1, -1, -1):  # Horner: sum_n b_n rho^(n + 1)
        out += a[:, n][:, None] * a[:, n][None, :]
        out *= rho
    return _unit_diagonal(_mirrored(out, lag_shape))


def global_mean_cov(xcorr: np.ndarray, var_c: np.ndarray, spatial: int | tuple[int, ...]
                    ) -> np.ndarray:
    """(C, C) covariance between the channel means over a map of these spatial sizes: the
    cross-covariance summed over lags with the weights ``prod_axis (n - |d|) / n^2``."""
    sizes = _as_tuple(spatial, xcorr.ndim - 2)
    g = _covariance(xcorr, None, var_c, sizes)
    weight = np.ones(())
    for n, k in zip(sizes, _center(g), strict=True):
        d = np.arange(-k, k + 1)
        w_axis = np.maximum(n - np.abs(d), 0).astype(float) / float(n) ** 2
        weight = np.multiply.outer(weight, w_axis)
    return np.tensordot(weight, g, axes=weight.ndim)


def sum_xcorr(parts: list[tuple[float, np.ndarray, np.ndarray | None, np.ndarray | None]],
              spatial: tuple[int, ...]) -> np.ndarray | None:
    """Correlation between channels of ``sum_i c_i x_i`` for independent maps ``x_i``, each
    given as ``(c_i, var_c, xcorr, corr)``; ``None`` when no part tracks it."""
    if all(xc is None for _, _, xc, _ in parts) or len(parts[0][1]) > MAX_CHANNELS:
        return None
    if len(spatial) > 1 and any(xc is None for _, _, xc, _ in parts):
        return None  # an image part of unknown correlation (see white_xcorr)
    cov = sum(c * c * _covariance(xc, corr, var_c, spatial) for c, var_c, xc, corr in parts)
    return correlation_of(cov)


def dense_flat(xcorr: np.ndarray, var: np.ndarray, kernel: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Dense on a flat vector with correlation ``xcorr`` (1, C, C) and variances ``var`` (C,):
    per unit, the variance the cross terms add, and the output correlation (1, O, O) (``None``
    for more than ``MAX_FLAT`` units)."""
    sd = np.sqrt(np.maximum(var, 0.0))
    cov = xcorr[0] * sd[:, None] * sd[None, :]
    independent = np.einsum("co,c->o", np.square(kernel), np.maximum(var, 0.0))
    if kernel.shape[1] > MAX_FLAT:  # per unit only: w_o^T C w_o, no O x O matrix
        return np.einsum("co,cC,Co->o", kernel, cov, kernel, optimize=True) - independent, None
    out = kernel.T @ cov @ kernel
    return np.diagonal(out) - independent, correlation_of(out[None])


def flattened_corr(var: np.ndarray, xcorr: np.ndarray | None, corr: np.ndarray | None
                   ) -> np.ndarray | None:
    """Correlation ``(D + 1, 1)`` between positions ``i`` and ``i + d`` of the one-channel
    sequence that lays a ``(L, C)`` map out position by position, channels fastest (Flatten,
    then Reshape to ``(L * C, 1)``); a flat vector is ``L = 1`` with its ``(1, C, C)`` xcorr.

    ``corr[d] = sum_i Cov(i, i + d) / sum_i sd_i sd_(i + d)``, so that global pooling of the
    sequence, which sums the covariance of all pairs, is exact. ``None`` when neither the
    channels' nor the positions' correlation is known."""
    length, channels = var.shape
    if xcorr is None and corr is None:
        return None
    sd = np.sqrt(np.maximum(var, 0.0))
    n = length * channels
    if xcorr is None and channels > MAX_CHANNELS:
        # channels independent: only offsets of whole positions (d C) are correlated
        out = np.zeros(min(n - 1, corr.shape[0] * channels - 1, max_lag(1)) + 1)
        for d in range(1, min(corr.shape[0] - 1, length - 1, (len(out) - 1) // channels) + 1):
            pairs = np.sum(sd[: length - d] * sd[d:], axis=0)  # (C,)
            out[d * channels] = np.sum(corr[d] * pairs) / max(float(np.sum(pairs)), 1e-300)
        out[0] = 1.0
        return out[:, None]
    rho = _covariance(xcorr, corr, np.ones(channels), length)
    k = _center(rho)[0]
    top = min(n - 1, (k + 1) * channels - 1, max_lag(1))
    pairs_dp = min(length - 1, k + 1) + 1
    # m[dp, c, c'] = sum_p sd[p, c] sd[p + dp, c']: one product per offset, or by FFT when the
    # offsets are many (a long one-channel sequence keeps thousands)
    if pairs_dp <= 64:
        m = np.stack([sd[: length - dp].T @ sd[dp:] for dp in range(pairs_dp)])
    else:
        spec = np.fft.rfft(sd, n=2 * length, axis=0)
        m = np.fft.irfft(np.conj(spec)[:, :, None] * spec[:, None, :], n=2 * length,
                         axis=0)[:pairs_dp]
    c = np.arange(channels)[None, :]
    total = c + np.arange(top + 1)[:, None]  # (D + 1, C): flat index offsets
    dp, c2 = total // channels, total % channels
    inside = dp < pairs_dp
    pair_sd = np.where(inside, m[np.minimum(dp, pairs_dp - 1), c, c2], 0.0)
    near = dp <= k
    r = rho[k + np.minimum(dp, k), c, c2]
    num = np.sum(np.where(near, r, 0.0) * pair_sd, axis=1)
    den = np.sum(pair_sd, axis=1)
    out = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
    out[0] = 1.0
    return out[:, None]


def sequence_xcorr(corr: np.ndarray) -> np.ndarray:
    """The ``(2D + 1, C, C)`` cross-correlation of channels that are independent of each other,
    each with its correlation between positions ``corr`` ``(D + 1, C)``."""
    lags, channels = corr.shape
    out = np.zeros((2 * lags - 1, channels, channels))
    idx = np.arange(channels)
    out[lags - 1:, idx, idx] = corr
    out[:lags, idx, idx] = corr[::-1]
    return out


def white_xcorr(shape: tuple[int, ...]) -> np.ndarray | None:
    """The correlation of a map of independent elements (a model input) for images and
    volumes within the channel budget; ``None`` otherwise. For them ``None`` means *unknown*
    (a layer dropped it), and convolutions of such maps do not track it."""
    if len(shape) < 3 or shape[-1] > MAX_CHANNELS:
        return None
    rho = np.zeros((1,) * (len(shape) - 1) + (shape[-1], shape[-1]))
    return _unit_diagonal(rho)


def concat_xcorr(parts: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]],
                 spatial: tuple[int, ...],
                 cross: Callable[[int, int, int], np.ndarray | None] | None = None
                 ) -> np.ndarray | None:
    """Correlation of maps concatenated along the channels, each given as ``(var_c, xcorr,
    corr)``: block diagonal (parts taken as independent of each other) except where
    ``cross(i, j, K)`` gives ``Cov(part_i[p], part_j[p + e])`` at lags ``-K .. K`` (sequences
    related through a fork); ``None`` over the channel budget, or for images with a part of
    unknown correlation."""
    channels = sum(len(v) for v, _, _ in parts)
    if channels > MAX_CHANNELS or (len(spatial) > 1 and any(x is None for _, x, _ in parts)):
        return None
    ks = _lags(spatial, channels)
    cov = np.zeros(tuple(2 * k + 1 for k in ks) + (channels, channels))
    starts = np.cumsum([0] + [len(v) for v, _, _ in parts])
    for (var_c, xc, corr), start in zip(parts, starts[:-1], strict=True):
        n = len(var_c)
        cov[..., start:start + n, start:start + n] = _fit_box(
            _covariance(xc, corr, var_c, spatial), ks)
    for i in range(len(parts) if cross is not None and len(ks) == 1 else 0):
        for j in range(i + 1, len(parts)):
            g = cross(i, j, ks[0])
            if g is not None:
                si, sj = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
                cov[:, si, sj] += g
                cov[:, sj, si] += np.swapaxes(g[::-1], -1, -2)
    return correlation_of(cov)
