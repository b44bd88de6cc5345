"""Moments of functions of Gaussian variables: the numerical core of AutoInit.

Everything here is NumPy on float64 host arrays. Means and variances broadcast, so one call
serves a scalar (expected mode) or a whole per-element map (realized mode).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special

__all__ = [
    "PiecewiseLinear",
    "gaussian_moments",
    "max_of_iid",
    "max_of_groups",
    "clark_max",
    "clark_max_of",
    "standard_max_moments",
    "normal_pdf",
    "normal_cdf",
]

HALF_WIDTH = 12.0  # integrate over mu +- 12 sigma: the Gaussian tail beyond is < 1e-32
SCALAR_NODES = 20001
MAP_BUDGET = 20_000  # function evaluations for one map in realized mode (>= 129 per element)
MAX_ROWS = 1024  # distinct elements integrated at full precision by max_of_iid
MAX_BUDGET = 240_000  # function evaluations for one max_of_iid map (>= 129 nodes per element)


def normal_pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * np.square(z)) / np.sqrt(2.0 * np.pi)


def normal_cdf(z: np.ndarray) -> np.ndarray:
    return special.ndtr(z)


@lru_cache(maxsize=16)
def _simpson_rule(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z on [-12, 12] and weights w with sum(w * g(z)) ~ E[g(Z)], Z ~ N(0, 1)."""
    nodes = nodes if nodes % 2 == 1 else nodes + 1
    z = np.linspace(-HALF_WIDTH, HALF_WIDTH, nodes)
    h = z[1] - z[0]
    w = np.ones(nodes)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    w *= h / 3.0 * normal_pdf(z)
    w /= w.sum()  # the mass outside +-12 sigma is negligible; make the rule exact for constants
    z.flags.writeable = False
    w.flags.writeable = False
    return z, w


@dataclass(frozen=True)
class PiecewiseLinear:
    """f(x) = slopes[i] * x + intercepts[i] on the i-th interval between sorted breakpoints.

    Gaussian moments of such functions have closed forms, which makes the relu family exact and
    fast. Slopes and intercepts may be arrays that broadcast against the signal (PReLU).
    """

    breakpoints: tuple[float, ...]
    slopes: tuple
    intercepts: tuple

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(np.shape(x), *[np.shape(s) for s in self.slopes]))
        edges = (-np.inf, *self.breakpoints, np.inf)
        for i, (a, c) in enumerate(zip(self.slopes, self.intercepts, strict=True)):
            inside = (x >= edges[i]) & (x < edges[i + 1])
            out = out + np.where(inside, a * x + c, 0.0)
        return out

    def moments(self, mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact E[f(X)] and E[f(X)^2] for X ~ N(mu, var)."""
        sd = np.sqrt(np.maximum(var, 0.0))
        safe = np.where(sd > 0, sd, 1.0)
        first = np.zeros(np.broadcast_shapes(np.shape(mu), np.shape(sd)))
        second = np.zeros_like(first)
        # Per edge z = (edge - mu) / sd: Phi(z), phi(z) and z phi(z), each computed once
        # (0 at -inf, Phi = 1 at +inf); a point mass (sd = 0) sits on one side of every edge.
        at_edges = [(0.0, 0.0, 0.0)]
        for b in self.breakpoints:
            z = np.where(sd > 0, (b - mu) / safe, np.where(mu >= b, -np.inf, np.inf))
            at_edges.append((normal_cdf(z), _pdf_inf(z), _zpdf_inf(z)))
        at_edges.append((1.0, 0.0, 0.0))
        # Partial moments of X on [lo, hi): P, E[X 1], E[X^2 1], via the standard normal.
        for i, (a, c) in enumerate(zip(self.slopes, self.intercepts, strict=True)):
            if np.ndim(a) == 0 and np.ndim(c) == 0 and a == 0 and c == 0:
                continue  # the function is 0 on this interval (relu below 0)
            (cdf_lo, pdf_lo, zpdf_lo), (cdf_hi, pdf_hi, zpdf_hi) = at_edges[i], at_edges[i + 1]
            p = cdf_hi - cdf_lo
            dphi = pdf_lo - pdf_hi  # E[Z 1] = phi(zl) - phi(zh)
            zphi = zpdf_lo - zpdf_hi  # E[Z^2 1] = P + zl phi(zl) - zh phi(zh)
            ex = mu * p + sd * dphi
            ex2 = mu**2 * p + 2 * mu * sd * dphi + var * (p + zphi)
            first = first + a * ex + c * p
            second = second + a**2 * ex2 + 2 * a * c * ex + c**2 * p
        return first, second


def _pdf_inf(z: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(z), normal_pdf(np.where(np.isfinite(z), z, 0.0)), 0.0)


def _zpdf_inf(z: np.ndarray) -> np.ndarray:
    finite = np.isfinite(z)
    zz = np.where(finite, z, 0.0)
    return np.where(finite, zz * normal_pdf(zz), 0.0)


def gaussian_moments(
    fn: Callable[[np.ndarray], np.ndarray],
    mu: np.ndarray | float,
    var: np.ndarray | float,
    *,
    nodes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """E[f(X)] and E[f(X)^2] for X ~ N(mu, var), elementwise over broadcast mu and var.

    ``fn`` takes a float64 array and returns an array of the same shape. It is evaluated once,
    on all nodes of all elements together. Elements with equal moments (to 1e-6 relative) are
    integrated once, which keeps realized-mode maps cheap.
    """
    if isinstance(fn, PiecewiseLinear) and not any(np.ndim(s) for s in fn.slopes):
        return fn.moments(np.asarray(mu, float), np.asarray(var, float))
    mu, var = np.broadcast_arrays(np.asarray(mu, float), np.asarray(var, float))
    shape = mu.shape
    if isinstance(fn, PiecewiseLinear):
        return fn.moments(mu, var)
    flat_mu, flat_var = mu.reshape(-1), var.reshape(-1)
    sd = np.sqrt(np.maximum(flat_var, 0.0))
    keys, inverse = _unique_moments(flat_mu, sd)
    if not np.any(keys[:, 1] > 0):  # point masses (a table's atoms): the function's values
        with np.errstate(over="ignore", invalid="ignore"):
            fx = np.asarray(fn(keys[:, 0]), dtype=float)
            if not np.isfinite(fx).all():
                big = np.finfo(float).max ** 0.5
                fx = np.nan_to_num(fx, nan=0.0, posinf=big, neginf=-big)
            return fx[inverse].reshape(shape), np.square(fx)[inverse].reshape(shape)
    n = len(keys)
    if nodes is None:
        nodes = SCALAR_NODES if n == 1 else int(np.clip(MAP_BUDGET // n, 129, SCALAR_NODES))
    z, w = _simpson_rule(nodes)
    x = keys[:, :1] + keys[:, 1:2] * z[None, :]
    with np.errstate(over="ignore", invalid="ignore"):
        fx = np.asarray(fn(x), dtype=float)
        if fx.shape != x.shape:
            raise ValueError(
                "Expected an elementwise function (output shape equal to input shape). "
                f"Received: output shape {fx.shape} for input shape {x.shape}"
            )
        if not np.isfinite(fx).all():
            big = np.finfo(float).max ** 0.5
            fx = np.nan_to_num(fx, nan=0.0, posinf=big, neginf=-big)
        first = fx @ w
        second = np.square(fx) @ w
    spiky = getattr(fn, "denominators", None)
    if spiky:
        _refine_spikes(fn, spiky, keys, x, first, second)
    return first[inverse].reshape(shape), second[inverse].reshape(shape)


#: Points per side of a zero added by ``_refine_spikes``, spaced geometrically from
#: ``SPIKE_NEAREST`` grid steps out to three (E[f^2] of ``alpha / x`` within 0.7%).
SPIKE_POINTS = 64
SPIKE_NEAREST = 1e-5


def _refine_spikes(fn: Callable[[np.ndarray], np.ndarray],
                   dens: list[Callable[[np.ndarray], np.ndarray]], keys: np.ndarray,
                   x: np.ndarray, first: np.ndarray, second: np.ndarray) -> None:
    """Rows whose grid ``x`` (one row per distinct ``(mu, sd)`` of ``keys``) holds a zero of a
    safe division's denominator: the quotient there is a spike ``DIV_EPS`` wide, far narrower
    than the grid, which Simpson's rule misses or hits by luck (after a Dense layer, E[f^2] is
    about 2 phi(0) / DIV_EPS = 800 for ``alpha / x``: the grid gave 10,000 with a node on the
    zero, and 23 for ``softplus(alpha / x)`` without). Those rows are integrated again by the
    trapezoid rule on the grid plus points spaced geometrically around each zero (a sign
    change, or a near-zero minimum of |denominator|); ``first`` and ``second`` are updated in
    place."""
    rows, at = [], []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for den in dens:
            d = np.nan_to_num(np.asarray(den(x), dtype=float))
            a, b = d[:, :-1], d[:, 1:]
            cross = np.nonzero((a * b < 0) | (a == 0))
            gap = (x[:, 1:] - x[:, :-1])[cross]
            slope = np.where(b[cross] != a[cross], b[cross] - a[cross], 1.0)
            mag = np.abs(d)
            low = np.nonzero((mag[:, 1:-1] <= mag[:, :-2]) & (mag[:, 1:-1] <= mag[:, 2:])
                             & (mag[:, 1:-1] < 1e-2))
            rows += [cross[0], low[0]]
            at += [x[:, :-1][cross] - a[cross] * gap / slope, x[:, 1:-1][low]]
    row_of, root = np.concatenate(rows), np.concatenate(at)
    if not len(row_of):
        return
    flagged, slot = np.unique(row_of, return_inverse=True)
    per_row = np.bincount(slot)
    order = np.argsort(slot, kind="stable")  # the zeros row by row, numbered within each
    slot = slot[order]
    rank = np.arange(len(slot)) - (np.cumsum(per_row) - per_row)[slot]
    # each flagged row: its grid, then for each of its zeros the zero and points on both sides
    # (unused slots repeat the grid's last point: gaps of 0, weight 0)
    offsets = np.concatenate([[0.0], np.geomspace(SPIKE_NEAREST, 3.0, SPIKE_POINTS),
                              -np.geomspace(SPIKE_NEAREST, 3.0, SPIKE_POINTS)])
    grid = x[flagged]
    step = (grid[:, 1] - grid[:, 0])[:, None]
    extra = np.repeat(grid[:, -1:], per_row.max() * len(offsets), axis=1)
    extra = extra.reshape(len(flagged), per_row.max(), len(offsets))
    extra[slot, rank] = root[order][:, None] + step[slot] * offsets
    pts = np.sort(np.clip(np.concatenate([grid, extra.reshape(len(flagged), -1)], axis=1),
                          grid[:, :1], grid[:, -1:]), axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        f = np.nan_to_num(np.asarray(fn(pts), dtype=float))
    mu, sd = keys[flagged, :1], keys[flagged, 1:2]
    gaps = np.diff(pts, axis=1)
    w = np.zeros_like(pts)
    w[:, :-1] += 0.5 * gaps
    w[:, 1:] += 0.5 * gaps
    w *= normal_pdf((pts - mu) / np.where(sd > 0, sd, 1.0)) / np.where(sd > 0, sd, 1.0)
    live = sd[:, 0] > 0
    first[flagged[live]] = np.sum(f * w, axis=1)[live]
    second[flagged[live]] = np.sum(f * f * w, axis=1)[live]


def _unique_moments(mu: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (mu, sd) rounded to ~1e-6 of the signal scale, deduplicated, and the inverse map."""
    if mu.size == 1:
        return np.stack([mu, sd], axis=1), np.zeros(1, dtype=int)
    scale = max(float(np.sqrt(np.mean(sd**2 + mu**2))), 1e-30)
    step = 1e-6 * scale
    # One complex key per row: NumPy sorts complex numbers by real, then imaginary part, which
    # is several times faster than np.unique(axis=0) on rows.
    key = np.round(mu / step) + 1j * np.round(sd / step)
    _, first_index, inverse = np.unique(key, return_index=True, return_inverse=True)
    return np.stack([mu[first_index], sd[first_index]], axis=1), inverse.reshape(-1)


@lru_cache(maxsize=256)
def standard_max_moments(k: int) -> tuple[float, float]:
    """Mean m_k and variance v_k of the max of k i.i.d. N(0, 1), by 1-D quadrature of
    k phi(x) Phi(x)^(k-1) (exact to quadrature precision, no sampling)."""
    if k < 1:
        raise ValueError(f"Expected a window of at least 1 value. Received: k={k}")
    z, w = _simpson_rule(SCALAR_NODES)
    density = k * normal_cdf(z) ** (k - 1)  # w already carries phi(z)
    mean = float(np.sum(w * density * z))
    second = float(np.sum(w * density * z**2))
    return mean, second - mean**2


#: Correlations at which ``max_correlation`` tabulates the maxima's (interpolated between).
_MAX_CORR_GRID = np.linspace(-1.0, 1.0, 81)


@lru_cache(maxsize=64)
def _max_correlation_table(k: int) -> np.ndarray:
    """``corr(max_i X_i, max_i Y_i)`` over ``k`` i.i.d. pairs of standard normals with
    correlation ``rho`` (each of ``_MAX_CORR_GRID``), by Hoeffding's identity
    ``Cov = int int F(x, y)^k - Phi(x)^k Phi(y)^k dx dy``, ``F`` the bivariate normal CDF."""
    if k <= 1:
        return _MAX_CORR_GRID.copy()
    x = np.linspace(-7.0, 7.0, 141)  # symmetric: -x is x reversed
    z, w = np.polynomial.hermite_e.hermegauss(48)
    cdf = normal_cdf(x)
    marginal = cdf**k
    area = (x[1] - x[0]) ** 2 / standard_max_moments(k)[1]
    out = np.empty_like(_MAX_CORR_GRID)
    for i, rho in enumerate(_MAX_CORR_GRID):
        r = abs(rho)
        if r >= 1.0:  # F(x, y; 1) = min(Phi(x), Phi(y))
            joint = np.minimum(cdf[:, None], cdf[None, :])
        else:  # sum_z w_z Phi((x - sqrt(r) z) / sqrt(1 - r)) Phi((y - sqrt(r) z) / sqrt(1 - r))
            a = normal_cdf((x[None, :] - np.sqrt(r) * z[:, None]) / np.sqrt(1.0 - r))
            joint = (a * (w / w.sum())[:, None]).T @ a
        if rho < 0:  # F(x, y; rho) = Phi(x) - F(x, -y; -rho)
            joint = np.maximum(cdf[:, None] - joint[:, ::-1], 0.0)
        out[i] = float(np.sum(joint**k - marginal[:, None] * marginal[None, :])) * area
    return np.clip(out, -1.0, 1.0)


def max_correlation(rho: np.ndarray, k: np.ndarray | int) -> np.ndarray:
    """Correlation between the maxima over ``k`` independent positions of two Gaussian
    channels whose values at one position correlate ``rho`` (elementwise; ``k`` broadcast,
    rounded to whole draws): far below ``rho`` (0.27 for 0.5 over 10 positions), since the
    two maxima fall at different positions."""
    rho, k = np.broadcast_arrays(np.asarray(rho, float), np.rint(np.asarray(k, float)))
    out = np.empty(rho.shape)
    for kk in np.unique(k):
        at = k == kk
        out[at] = np.interp(np.clip(rho[at], -1.0, 1.0), _MAX_CORR_GRID,
                            _max_correlation_table(max(int(kk), 1)))
    return out


def max_of_iid(
    fn: Callable[[np.ndarray], np.ndarray] | None,
    mu: np.ndarray,
    var: np.ndarray,
    k: np.ndarray | int,
    *,
    nodes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """E[Y] and E[Y^2] for Y the max of k i.i.d. copies of f(X), X ~ N(mu, var).

    With ``fn=None`` (f is the identity) the closed form through ``standard_max_moments`` is
    used. A nondecreasing f (relu, tanh, ...) is integrated against the max of k Gaussians
    (cdf Phi^k) on 513 nodes, down to 129 for maps of many distinct elements (which share one
    integral when their moments agree to 1e-4 of the map's scale, 1e-3 beyond MAX_ROWS).
    Otherwise the distribution of f(X) is discretized on a fine grid, sorted, and the max's
    distribution is F^k: exact for any f, monotone or not (swish, gelu, ...). That grid has 2049
    nodes, fewer (down to 513) when a map has many distinct elements; the error of the variance
    falls as 1/nodes^2: about 2e-5 relative at 2049 nodes, 3e-4 at 513.
    """
    mu, var, k = np.broadcast_arrays(np.asarray(mu, float), np.asarray(var, float), np.asarray(k))
    shape = mu.shape
    sd = np.sqrt(np.maximum(var, 0.0)).reshape(-1)
    flat_mu, flat_k = mu.reshape(-1), k.reshape(-1).astype(int)
    if fn is None:
        table = {int(kk): standard_max_moments(int(kk)) for kk in np.unique(flat_k)}
        m = np.array([table[int(kk)][0] for kk in flat_k])
        v = np.array([table[int(kk)][1] for kk in flat_k])
        mean = flat_mu + sd * m
        return mean.reshape(shape), (sd**2 * v + mean**2).reshape(shape)
    ref = max(float(np.sqrt(np.mean(flat_mu**2 + sd**2))), 1e-300)

    def distinct(decimals: int) -> tuple[np.ndarray, np.ndarray]:
        """Elements whose moments agree to 10^-decimals of the map's scale: one row each, at
        the center of its cell."""
        keys = np.stack([np.round(flat_mu / ref, decimals), np.round(sd / ref, decimals),
                         flat_k], axis=1)
        cells, inverse = np.unique(keys, axis=0, return_inverse=True)
        return cells * np.array([ref, ref, 1.0]), inverse.ravel()

    def evaluate(rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        z = np.linspace(-HALF_WIDTH, HALF_WIDTH, count)
        with np.errstate(over="ignore", invalid="ignore"):
            y = np.asarray(fn(rows[:, :1] + rows[:, 1:2] * z[None, :]), float)
        return z, (y if np.all(np.isfinite(y)) else np.nan_to_num(y))

    uniq, inverse = distinct(4)
    with np.errstate(over="ignore", invalid="ignore"):  # f on the whole range, once
        probe = np.asarray(fn(np.linspace(float(np.min(flat_mu - HALF_WIDTH * sd)),
                                          float(np.max(flat_mu + HALF_WIDTH * sd)), 4097)))
    rising = bool(np.all(np.diff(np.nan_to_num(probe)) >= 0.0))
    if rising and len(uniq) > MAX_ROWS:
        uniq, inverse = distinct(3)  # 5e-4 of the scale: far below the rules' own error
    # 513 nodes, fewer (down to 129) for maps with many distinct elements: MAX_BUDGET
    # evaluations of f at most beyond that
    count = nodes or int(np.clip(MAX_BUDGET // len(uniq), 129, 513)) | 1
    z, y = evaluate(uniq, count) if rising else (None, None)
    if rising and np.all(np.diff(y, axis=1) >= 0.0):
        # f nondecreasing: the max of f(X_i) is f(max X_i), and the max of k standard normals
        # has cdf Phi^k, so each node's cell carries Phi(upper edge)^k - Phi(lower edge)^k.
        edges = normal_cdf(np.concatenate([[-np.inf], 0.5 * (z[1:] + z[:-1]), [np.inf]]))
        ks, which = np.unique(uniq[:, 2], return_inverse=True)
        mass = np.diff(edges[None, :] ** ks[:, None], axis=1)[which.ravel()]
        first = np.sum(mass * y, axis=1)
        second = np.sum(mass * y**2, axis=1)
        return first[inverse].reshape(shape), second[inverse].reshape(shape)
    # any f: sort f's values per element; the sort is the cost, so long maps (as_seq) share
    # rows at 1e-3 or 1e-2 of the scale beyond MAX_ROWS distinct elements
    for decimals in (3, 2):
        if len(uniq) <= MAX_ROWS:
            break
        uniq, inverse = distinct(decimals)
    if nodes is None:
        nodes = int(np.clip(MAX_BUDGET // 4 // len(uniq), 513, 2049)) | 1
    z, y = evaluate(uniq, nodes)
    ys, cdf = _sorted_distribution(y, z)
    kk = uniq[:, 2:3]
    mass = np.diff(np.concatenate([np.zeros((len(uniq), 1)), cdf**kk], axis=1), axis=1)
    first = np.sum(mass * ys, axis=1)
    second = np.sum(mass * ys**2, axis=1)
    return first[inverse].reshape(shape), second[inverse].reshape(shape)


def _sorted_distribution(y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values ``y = f(mu + sd z)`` on the standard-normal nodes ``z`` (last axis), sorted, with
    their cumulative probability: the discretized distribution of ``f(X)``, any ``f``."""
    p = normal_pdf(z)
    p /= p.sum()
    order = np.argsort(y, axis=-1, kind="stable")
    cdf = np.cumsum(p[order], axis=-1)
    return np.take_along_axis(y, order, axis=-1), np.minimum(cdf / cdf[..., -1:], 1.0)


def clark_max(
    m1: np.ndarray, v1: np.ndarray, m2: np.ndarray, v2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of max(X1, X2) for independent Gaussians (Clark 1961)."""
    mean, var, _, _ = _clark_step(m1, v1, m2, v2, 0.0)
    return mean, var


def _clark_step(m1: np.ndarray, v1: np.ndarray, m2: np.ndarray, v2: np.ndarray,
                cov: np.ndarray | float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and variance of max(X1, X2) for Gaussians with covariance ``cov`` (Clark 1961),
    and the probabilities that X1, X2 is the larger."""
    a = np.sqrt(np.maximum(v1 + v2 - 2.0 * cov, 0.0))
    safe = np.where(a > 0, a, 1.0)
    alpha = np.where(a > 0, (m1 - m2) / safe, np.where(m1 >= m2, np.inf, -np.inf))
    cdf, cdf_neg = normal_cdf(alpha), normal_cdf(-alpha)
    pdf = _pdf_inf(alpha)
    mean = m1 * cdf + m2 * cdf_neg + a * pdf
    second = (m1**2 + v1) * cdf + (m2**2 + v2) * cdf_neg + (m1 + m2) * a * pdf
    return mean, np.maximum(second - mean**2, 0.0), cdf, cdf_neg


def clark_max_of(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the maximum of each row's correlated Gaussians (``mean`` (R, s),
    ``cov`` (R, s, s)), by Clark's method: the running maximum taken as Gaussian, with its
    covariance to the members still to come carried along."""
    m, v = mean[:, 0], cov[:, 0, 0]
    c = cov[:, 0, :].copy()  # Cov(running max, member j)
    for k in range(1, mean.shape[1]):
        m, v, p_run, p_k = _clark_step(m, v, mean[:, k], cov[:, k, k], c[:, k])
        c = c * p_run[:, None] + cov[:, k, :] * p_k[:, None]
    return m, v


def max_of_groups(
    fn: Callable[[np.ndarray], np.ndarray] | None,
    mu: np.ndarray,
    var: np.ndarray,
    count: np.ndarray,
    *,
    nodes: int = 257,
    grid: int = 1025,
) -> tuple[np.ndarray, np.ndarray]:
    """E[Y] and E[Y^2] per row for Y the max over independent values ``f(X_g)``, ``count[r, g]``
    (any positive real) of them with ``X_g ~ N(mu[r, g], var[r, g])``: rows are channels, the
    groups (positions of similar moments) need not be alike. ``P(Y <= t) = prod_g
    P(f(X_g) <= t)^count_g`` on a common grid of ``t``; ``f`` need not be monotone."""
    mu, var, count = (np.asarray(a, float) for a in np.broadcast_arrays(mu, var, count))
    rows, groups = mu.shape
    z = np.linspace(-HALF_WIDTH / 2, HALF_WIDTH / 2, nodes)  # +-6 sigma: tails below 1e-9
    x = mu[:, :, None] + np.sqrt(np.maximum(var, 0.0))[:, :, None] * z
    with np.errstate(over="ignore", invalid="ignore"):
        y = np.nan_to_num(np.asarray(x if fn is None else fn(x), float))
    ys, cdf = _sorted_distribution(y, z)
    lo, hi = ys[:, :, 0].min(axis=1), ys[:, :, -1].max(axis=1)
    t = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, grid)[None, :]  # (rows, grid)
    log_f = np.zeros((rows, grid))
    # each node's mass spreads over the cell up to the midpoint with the next sorted value
    edges = 0.5 * (ys[:, :, 1:] + ys[:, :, :-1])
    for r in range(rows):
        for g in range(groups):  # P(f(X_g) <= t), piecewise linear between cell edges
            at = np.interp(t[r], edges[r, g], cdf[r, g, :-1], left=0.0, right=1.0)
            log_f[r] += count[r, g] * np.log(np.maximum(at, 1e-300))
    f = np.exp(log_f)
    f[:, -1] = 1.0
    mass = np.diff(np.concatenate([np.zeros((rows, 1)), f], axis=1), axis=1)
    mid = np.concatenate([t[:, :1], 0.5 * (t[:, 1:] + t[:, :-1])], axis=1)
    return np.sum(mass * mid, axis=1), np.sum(mass * mid**2, axis=1)
