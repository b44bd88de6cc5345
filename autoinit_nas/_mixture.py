"""Non-Gaussian distributions of sums: the shape a signal keeps across residual merges.

After an elementwise function the signal is ``f(G)`` for a Gaussian G, and ``Source`` keeps that
exactly. A merge such as ``relu(x) + conv(x)`` breaks it: the sum is neither Gaussian nor a
function of one Gaussian, and treating it as Gaussian biases the next activation (a ReLU after
a residual Add is 2-16% off per block on an unnormalized ResNet, and the skip path carries the
error forward; DESIGN.md, effect 3).

A ``Mixture`` describes, per channel (last axis), the distribution of an element as a mixture
of Gaussians ``N(atom_k + noise_mean, spread_k + noise_var)`` with probabilities ``probs_k``: the
atoms and spreads are the shape, the noise is the Gaussian part that merges add.
Merges add Gaussians to ``N`` or convolve two discrete parts; an elementwise function ``h`` is
integrated exactly against it (closed form or quadrature over ``N`` for every atom), and the
distribution of the result is discretized again (bins finer in the tails, each keeping its mean
and inner variance) so the shape is carried through any number of blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from autoinit_nas._moments import gaussian_moments

__all__ = ["Mixture", "channel_moments", "source_nodes"]

ATOMS = 16  # atoms kept per channel
NOISE_NODES = 8  # Gauss-Hermite nodes that discretize N before re-binning
SOURCE_NODES = 96  # nodes that discretize a single Gaussian (a function's input)
INNER_NODES = 129  # quadrature nodes per atom for functions without a closed form
MAX_NODES = 32  # Gauss-Hermite nodes per component for the maximum of draws from a mixture
_DEDUPE_FROM = 128  # channels from which a function's pass looks for alike channels first
_NORM_NODES = 7  # Gauss-Hermite nodes per axis for the other channels' sums (normalized_over_channels)


@lru_cache(maxsize=4)
def _hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and probabilities of an n-point Gauss-Hermite rule for N(0, 1)."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return z, w / w.sum()


@lru_cache(maxsize=1)
def source_nodes() -> tuple[np.ndarray, np.ndarray]:
    """The ``SOURCE_NODES`` Gauss-Hermite nodes that weigh anything (|z| < 7; the others set
    the scale of a function's tails but not its moments) and their probabilities."""
    z, w = _hermite(SOURCE_NODES)
    keep = w > 1e-12
    return z[keep], w[keep] / w[keep].sum()


def channel_moments(mean: np.ndarray, var: np.ndarray, channels: int) -> tuple[np.ndarray, ...]:
    """Per-channel (last axis) average element mean and variance, shape (channels,)."""
    mean, var = np.asarray(mean, float), np.asarray(var, float)
    if mean.ndim == 0 and var.ndim == 0:
        return np.full(channels, float(mean)), np.full(channels, float(var))
    shape = np.broadcast_shapes(mean.shape, var.shape)
    m = np.broadcast_to(mean, shape).reshape(-1, shape[-1]).mean(axis=0)
    v = np.broadcast_to(var, shape).reshape(-1, shape[-1]).mean(axis=0)
    return np.broadcast_to(m, channels).copy(), np.broadcast_to(v, channels).copy()


#: Bins of the re-binned shape, spaced evenly in the normal quantile up to +-TAIL_Z: the tails
#: keep finer bins (0.1% at the ends) than equal probabilities would (6%), for the maximum of
#: many draws, which reads the top 1/n of the distribution.
TAIL_Z = 3.0


@lru_cache(maxsize=4)
def _edges(k: int) -> np.ndarray:
    """The ``k - 1`` cumulative probabilities between ``k`` bins."""
    from scipy.special import ndtr

    return ndtr(np.linspace(-TAIL_Z, TAIL_Z, k - 1))


def _rebin(values: np.ndarray, probs: np.ndarray, k: int,
           spread: np.ndarray | float = 0.0) -> tuple[np.ndarray, ...]:
    """(C, n) weighted components (value, variance ``spread``) -> k bins per row (by cumulative
    probability, ``_edges``): each bin's probability, mean and inner variance (mean and variance
    are preserved)."""
    c, n = values.shape
    order = np.argsort(values, axis=1, kind="stable")
    v = np.take_along_axis(values, order, axis=1)
    p = np.take_along_axis(probs, order, axis=1)
    sv = np.take_along_axis(np.broadcast_to(spread, values.shape), order, axis=1)
    total = p.sum(axis=1, keepdims=True)
    p = p / np.where(total > 0, total, 1.0)
    mid = np.cumsum(p, axis=1) - 0.5 * p
    group = np.searchsorted(_edges(k), mid) + k * np.arange(c)[:, None]
    mass = np.bincount(group.ravel(), p.ravel(), minlength=c * k).reshape(c, k)
    s1 = np.bincount(group.ravel(), (p * v).ravel(), minlength=c * k).reshape(c, k)
    s2 = np.bincount(group.ravel(), (p * (v * v + sv)).ravel(), minlength=c * k).reshape(c, k)
    safe = np.where(mass > 0, mass, 1.0)
    atoms = np.where(mass > 0, s1 / safe, 0.0)
    inner = np.where(mass > 0, np.maximum(s2 / safe - atoms**2, 0.0), 0.0)
    return atoms, mass, inner


def _max_of_members(values: np.ndarray, cdf: np.ndarray, powers: np.ndarray
                    ) -> tuple[float, float]:
    """Mean and variance of the maximum of independent members, member m ``powers[m]`` draws
    of the discrete distribution with sorted ``values[m]`` and CDF ``cdf[m]``: on the union of
    their values the CDF is ``prod_m F_m^powers[m]``."""
    grid = np.sort(values.ravel())
    total = np.ones(len(grid))
    for v, f, p in zip(values, cdf, powers, strict=True):
        if p <= 0:
            continue
        at = np.searchsorted(v, grid, side="right")  # F_m(t): the mass of m's values <= t
        total *= np.where(at > 0, f[np.maximum(at - 1, 0)], 0.0) ** p
    mass = np.diff(total, prepend=0.0)
    first = float(np.sum(mass * grid))
    return first, max(float(np.sum(mass * grid**2)) - first**2, 0.0)


@dataclass(frozen=True)
class Mixture:
    """Per channel c: x ~ sum_k probs[c, k] N(atoms[c, k] + noise_mean[c],
    spread[c, k] + noise_var[c])."""

    atoms: np.ndarray
    probs: np.ndarray
    spread: np.ndarray
    noise_mean: np.ndarray
    noise_var: np.ndarray

    @property
    def channels(self) -> int:
        return self.atoms.shape[0]

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance per channel."""
        mean_a = np.sum(self.probs * self.atoms, axis=1)
        second = np.sum(self.probs * (self.atoms**2 + self.spread), axis=1)
        return mean_a + self.noise_mean, np.maximum(second - mean_a**2, 0.0) + self.noise_var

    @staticmethod
    def of_function(fn: Callable[[np.ndarray], np.ndarray], mean: np.ndarray,
                    var: np.ndarray) -> Mixture:
        """The distribution of ``fn(G)``, G ~ N(mean[c], var[c]) per channel."""
        return Mixture.gaussian(mean, var).apply(fn, nodes=SOURCE_NODES)[2]

    def shifted(self, mean: np.ndarray, var: np.ndarray, scale: float = 1.0) -> Mixture:
        """``scale * x + G`` with G ~ N(mean, var) independent (per channel arrays)."""
        return Mixture(self.atoms * scale, self.probs, self.spread * scale**2,
                       self.noise_mean * scale + mean, self.noise_var * scale**2 + var)

    def dropped(self, rate: float) -> Mixture:
        """``x * b / (1 - rate)`` with ``b ~ Bernoulli(1 - rate)`` (dropout): an atom at 0 with
        probability ``rate`` beside the scaled mixture (its noise folded into the atoms)."""
        c = self.channels
        keep = 1.0 - rate
        return Mixture(
            np.concatenate([np.zeros((c, 1)), (self.atoms + self.noise_mean[:, None]) / keep], 1),
            np.concatenate([np.full((c, 1), rate), keep * self.probs], 1),
            np.concatenate([np.zeros((c, 1)), (self.spread + self.noise_var[:, None]) / keep**2],
                           1),
            np.zeros(c), np.zeros(c))

    def _rows(self, index: np.ndarray) -> Mixture:
        """The channels ``index`` (in that order)."""
        return Mixture(self.atoms[index], self.probs[index], self.spread[index],
                       self.noise_mean[index], self.noise_var[index])

    @staticmethod
    def points(values: np.ndarray, probs: np.ndarray) -> Mixture:
        """Point masses ``values`` (C, n) with probabilities ``probs`` ((n,) or (C, n))."""
        values = np.asarray(values, float)
        c = values.shape[0]
        return Mixture(values, np.broadcast_to(probs, values.shape).copy(),
                       np.zeros(values.shape), np.zeros(c), np.zeros(c))

    @staticmethod
    def rebinned(values: np.ndarray, probs: np.ndarray) -> Mixture:
        """Point masses ``values`` (C, n) with probabilities ``probs``, re-binned to ``ATOMS``."""
        atoms, mass, inner = _rebin(np.asarray(values, float), np.asarray(probs, float), ATOMS)
        c = atoms.shape[0]
        return Mixture(atoms, mass, inner, np.zeros(c), np.zeros(c))

    @staticmethod
    def gaussian(mean: np.ndarray, var: np.ndarray) -> Mixture:
        """One Gaussian per channel (a single atom)."""
        c = len(mean)
        return Mixture(np.asarray(mean, float)[:, None], np.ones((c, 1)), np.zeros((c, 1)),
                       np.zeros(c), np.maximum(np.asarray(var, float), 0.0))

    @staticmethod
    def stacked(parts: list[Mixture]) -> Mixture:
        """Channels side by side (atoms padded with empty ones to the longest)."""
        k = max(m.atoms.shape[1] for m in parts)

        def pad(a: np.ndarray, value: float = 0.0) -> np.ndarray:
            return np.pad(a, ((0, 0), (0, k - a.shape[1])), constant_values=value)

        return Mixture(np.concatenate([pad(m.atoms) for m in parts]),
                       np.concatenate([pad(m.probs) for m in parts]),
                       np.concatenate([pad(m.spread) for m in parts]),
                       np.concatenate([m.noise_mean for m in parts]),
                       np.concatenate([m.noise_var for m in parts]))

    def plus(self, other: Mixture, scale: float = 1.0) -> Mixture:
        """``self + scale * other`` for independent mixtures (atoms convolved and re-binned)."""
        c, k = self.atoms.shape
        values = (self.atoms[:, :, None] + scale * other.atoms[:, None, :]).reshape(c, -1)
        probs = (self.probs[:, :, None] * other.probs[:, None, :]).reshape(c, -1)
        spread = (self.spread[:, :, None] + scale**2 * other.spread[:, None, :]).reshape(c, -1)
        atoms, mass, inner = _rebin(values, probs, max(k, other.atoms.shape[1]), spread)
        return Mixture(atoms, mass, inner, self.noise_mean + scale * other.noise_mean,
                       self.noise_var + scale**2 * other.noise_var)

    def matched(self, mean: np.ndarray, var: np.ndarray,
                sign: np.ndarray | float = 1.0) -> Mixture:
        """The same shapes moved and scaled (mirrored where ``sign`` < 0) to each channel's
        ``mean`` and ``var``: an affine map per channel, or a discretization matched to exact
        moments."""
        d_mean, d_var = self.moments()
        s = np.sqrt(np.where(d_var > 0, var / np.where(d_var > 0, d_var, 1.0), 0.0))
        s = (s * np.where(np.broadcast_to(sign, s.shape) < 0, -1.0, 1.0))[:, None]
        atoms = np.asarray(mean, float)[:, None] + s * (self.atoms + self.noise_mean[:, None]
                                                         - d_mean[:, None])
        c = self.channels
        return Mixture(atoms, self.probs, s**2 * (self.spread + self.noise_var[:, None]),
                       np.zeros(c), np.zeros(c))

    def max_moments(self, count: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, the mean and variance of the maximum of ``count`` independent draws:
        every component discretized by ``MAX_NODES`` Gauss-Hermite nodes (atoms alone stay one
        value each), and over the sorted values ``P(max = v_i) = F_i^n - F_(i-1)^n`` exactly."""
        values, mass = self._max_distribution(count)
        first = np.sum(mass * values, axis=1)
        second = np.sum(mass * values**2, axis=1)
        return first, np.maximum(second - first**2, 0.0)

    def max_mixture(self, count: np.ndarray | float) -> Mixture:
        """Per channel, the distribution of the maximum of ``count`` independent draws,
        re-binned (its shape, for a function after a max pooling)."""
        return Mixture.rebinned(*self._max_distribution(count))

    def _nodes(self, nodes: int) -> tuple[np.ndarray, np.ndarray]:
        """Every component discretized by ``nodes`` Gauss-Hermite nodes (atoms alone stay one
        value each): values and probabilities, (C, n) each."""
        sd = np.sqrt(np.maximum(self.spread + self.noise_var[:, None], 0.0))
        z, u = _hermite(nodes) if np.any(sd > 0) else (np.zeros(1), np.ones(1))
        values = ((self.atoms + self.noise_mean[:, None])[:, :, None]
                  + sd[:, :, None] * z).reshape(self.channels, -1)
        return values, (self.probs[:, :, None] * u).reshape(self.channels, -1)

    def _sorted_cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, every component discretized by ``MAX_NODES`` Gauss-Hermite nodes (atoms
        alone stay one value each): the sorted values (C, n) and the CDF at each."""
        values, probs = self._nodes(MAX_NODES)
        order = np.argsort(values, axis=1, kind="stable")
        values = np.take_along_axis(values, order, axis=1)
        cdf = np.cumsum(np.take_along_axis(probs, order, axis=1), axis=1)
        return values, np.clip(cdf / np.maximum(cdf[:, -1:], 1e-300), 0.0, 1.0)

    def _max_distribution(self, count: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Sorted values (C, n) and their probabilities as the maximum of ``count`` draws."""
        values, cdf = self._sorted_cdf()
        n = np.broadcast_to(np.asarray(count, float), (self.channels,))[:, None]
        return values, np.diff(cdf**n, axis=1, prepend=0.0)

    def max_over_groups(self, mean: np.ndarray, var: np.ndarray, count: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Per channel c, the mean and variance of the maximum over groups of positions, group
        g ``count[c, g]`` independent draws of the channel's shape moved and scaled to
        ``mean[c, g]``, ``var[c, g]``: on the union of the groups' discretized values the CDF
        is ``prod_g F_g^count``."""
        channels, groups = mean.shape
        rows = self._rows(np.repeat(np.arange(channels), groups)).matched(
            mean.reshape(-1), var.reshape(-1))
        values, cdf = rows._sorted_cdf()
        n = values.shape[1]
        values, cdf = values.reshape(channels, groups, n), cdf.reshape(channels, groups, n)
        first, var = np.zeros(channels), np.zeros(channels)
        for c in range(channels):
            first[c], var[c] = _max_of_members(values[c], cdf[c],
                                               np.maximum(count[c], 0.0))
        return first, var

    def max_of(self, rows: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of ``max_j x[rows[w, j]]`` over the members ``inside[w, j]`` of
        each window ``w``, the members independent draws of their own channels (a flat vector
        laid out as one channel: each element its own distribution). Exact for the discretized
        mixtures: the window's CDF is the product of its members' on their values."""
        values, cdf = self._sorted_cdf()
        mean, var = np.zeros(len(rows)), np.zeros(len(rows))
        for w, (row, keep) in enumerate(zip(rows, inside, strict=True)):
            members = row[keep]
            mean[w], var[w] = _max_of_members(values[members], cdf[members],
                                              np.ones(len(members)))
        return mean, var

    def normalized_over_channels(self, eps: float) -> Mixture:
        """Per channel c, the shape of ``(x_c - m) / sqrt(s^2 + eps)`` where m and s^2 are the
        mean and variance of one position's channels (each channel a draw of its own mixture,
        independent): a LayerNormalization over the channels. Given ``x_c = v``, the other
        channels' sum A (Gaussian) and squared deviations Q (lognormal, correlated with A),
        their moments from each channel's first four, are integrated on a Gauss-Hermite grid:
        the normalizer's own spread from sample to sample is kept (as an affine map of the
        input's shape, the maximum of ten layer-normed cos values over 25 channels had a sixth
        of its variance; now 0.85x, relu's 0.96x, exp's 1.24x). Values are clipped to the bound
        ``|y| <= sqrt(C - 1)``."""
        c = self.channels
        values, probs = self._nodes(NOISE_NODES)
        probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-300)
        moments = [np.sum(probs * values**k, axis=1) for k in (1, 2, 3, 4)]
        m1, m2, m3, m4 = moments
        n = max(c - 1, 1)
        a_mean, a_var = np.sum(m1) - m1, np.sum(m2 - m1**2) - (m2 - m1**2)
        b_mean, b_var = np.sum(m2) - m2, np.sum(m4 - m2**2) - (m4 - m2**2)
        ab = np.sum(m3 - m1 * m2) - (m3 - m1 * m2)
        # Q = B - A^2 / n >= 0, the others' squared deviations from their own mean: lognormal
        # (matched mean and variance, by the delta method), A Gaussian beside it; as a Gaussian
        # pair, (A, B) put mass where Q < 0 and the normalizer near 0
        k = 2.0 * a_mean / n
        q_mean = np.maximum(b_mean - (a_var + a_mean**2) / n, 1e-12)
        q_var = np.maximum(b_var - 2 * k * ab + k * k * a_var + 2 * a_var**2 / n**2, 0.0)
        aq = ab - k * a_var
        log_var = np.log1p(q_var / q_mean**2)
        log_sd = np.sqrt(log_var)
        sa = np.sqrt(np.maximum(a_var, 0.0))
        # Stein: Cov(sa z1, exp(log_sd (rho z1 + ...))) = sa rho log_sd E[Q]
        den = sa * log_sd * q_mean
        rho = np.clip(np.where(den > 0, aq / np.where(den > 0, den, 1.0), 0.0), -1.0, 1.0)
        z, u = _hermite(_NORM_NODES)
        z1, z2 = (g.ravel() for g in np.meshgrid(z, z, indexing="ij"))
        weights = (u[:, None] * u[None, :]).ravel()
        big_a = a_mean[:, None] + sa[:, None] * z1  # (C, nodes^2)
        big_q = q_mean[:, None] * np.exp(log_sd[:, None] * (
            rho[:, None] * z1 + np.sqrt(1.0 - rho[:, None]**2) * z2) - 0.5 * log_var[:, None])
        big_b = big_q + big_a**2 / n
        v = values[:, :, None]
        mean = (v + big_a[:, None, :]) / c
        second = (v * v + big_b[:, None, :]) / c
        spread = np.maximum(second - mean**2, 0.0)
        bound = np.sqrt(max(c - 1, 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.clip(np.nan_to_num((v - mean) / np.sqrt(spread + eps)), -bound, bound)
        mass = probs[:, :, None] * weights[None, None, :]
        return Mixture.rebinned(y.reshape(c, -1), mass.reshape(c, -1))

    def _discretize(self, fn: Callable[[np.ndarray], np.ndarray], nodes: int) -> Mixture:
        """The distribution of ``fn(A + N)`` as atoms (N discretized by Gauss-Hermite; atoms
        without spread, as a table's, stay one value each)."""
        sd = np.sqrt(self.spread + self.noise_var[:, None])
        z, u = _hermite(nodes) if np.any(sd > 0) else (np.zeros(1), np.ones(1))
        x = (self.atoms + self.noise_mean[:, None])[:, :, None] + sd[:, :, None] * z
        with np.errstate(over="ignore", invalid="ignore"):
            y = np.nan_to_num(np.asarray(fn(x), float))
        probs = self.probs[:, :, None] * u
        c = self.channels
        atoms, mass, inner = _rebin(y.reshape(c, -1), probs.reshape(c, -1), ATOMS)
        return Mixture(atoms, mass, inner, np.zeros(c), np.zeros(c))

    def apply(self, fn: Callable[[np.ndarray], np.ndarray],
              nodes: int = NOISE_NODES) -> tuple[np.ndarray, np.ndarray, Mixture]:
        """Exact per-channel mean and variance of ``fn(x)``, and its mixture. Channels alike (a
        flattened map repeats its channels' mixtures at every position) are worked out once."""
        if self.channels > _DEDUPE_FROM:
            rows = np.ascontiguousarray(np.concatenate(
                [self.atoms, self.probs, self.spread, self.noise_mean[:, None],
                 self.noise_var[:, None]], axis=1))
            keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            if len(first) <= self.channels // 2:
                mean, var, mix = self._rows(first).apply(fn, nodes)
                return mean[inverse], var[inverse], mix._rows(inverse)
        mu = self.atoms + self.noise_mean[:, None]
        var = self.spread + self.noise_var[:, None]
        first, second = gaussian_moments(fn, mu, var, nodes=INNER_NODES)
        mean = np.sum(self.probs * first, axis=1)
        out_var = np.maximum(np.sum(self.probs * second, axis=1) - mean**2, 0.0)
        # the discretized mixture matched to the exact moments (shift atoms, scale the spread)
        return mean, out_var, self._discretize(fn, nodes).matched(mean, out_var)

