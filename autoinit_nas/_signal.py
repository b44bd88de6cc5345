"""The description of one tensor that flows through the graph walk."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoinit_nas._mixture import Mixture
from autoinit_nas.errors import SignalError

__all__ = ["Signal", "Source"]


@dataclass(frozen=True)
class Source:
    """The tensor is ``fn(G)`` with G elementwise independent N(mean, var).

    Kept after elementwise functions so that rules which are wrong for non-Gaussian inputs (max
    pooling after relu, say) can work on the Gaussian underneath instead.
    """

    mean: np.ndarray
    var: np.ndarray
    fn: Callable[[np.ndarray], np.ndarray]
    corr: np.ndarray | None = None  # G's correlation between positions (see Signal.corr)
    xcorr: np.ndarray | None = None  # G's correlation between channels (see Signal.xcorr)
    phase: np.ndarray | None = None  # G's correlation by phase (see Signal.phase)
    #: False when G stands in for a non-Gaussian input (a function of a mixture): its rules are
    #: then the Gaussian approximation the mixture corrects
    exact: bool = True


@dataclass(frozen=True)
class Signal:
    """Mean and variance of a tensor's elements, for one sample (no batch axis).

    In expected mode ``mean`` and ``var`` are 0-d arrays (one value for the whole tensor); in
    realized mode they are maps of the sample's shape. ``shape`` is the sample shape either way.
    ``source`` (the signal is exactly ``fn`` of a Gaussian) and ``mixture`` (the per-channel
    shape of a non-Gaussian sum) are kept only by the operations that preserve them.
    """

    mean: np.ndarray
    var: np.ndarray
    shape: tuple[int, ...]
    source: Source | None = None
    mixture: Mixture | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    #: For sequence maps ``(length, channels)``: correlation between positions ``p`` and
    #: ``p + d`` per channel, ``corr[d, c]`` (``_correlation.py``); None: independent positions.
    corr: np.ndarray | None = None
    #: Realized mode, channels-last maps (sequences, images, flat vectors): correlation between
    #: channels, ``xcorr[K + d, c, c']`` for offsets ``-K .. K`` per spatial axis
    #: (``_xcorr.py``); None: channels independent (sequences, flat vectors) or unknown (images).
    xcorr: np.ndarray | None = None
    #: One-channel sequences and flat vectors that lay out a map (``as_seq``): correlation
    #: between elements ``i`` and ``i + d`` per phase ``i mod P``, ``phase[c, d]``
    #: (``_phases.py``); None: not tracked.
    phase: np.ndarray | None = None

    @staticmethod
    def scalar(mean: float, var: float, shape: tuple[int, ...]) -> Signal:
        return Signal(np.asarray(float(mean)), np.asarray(float(var)), tuple(shape))

    @property
    def is_map(self) -> bool:
        return np.ndim(self.mean) > 0 or np.ndim(self.var) > 0

    @property
    def total_mean(self) -> float:
        """Mean over every element (and every sample)."""
        return float(np.mean(self.mean))

    @property
    def second_moment(self) -> float:
        """E[x^2] over every element."""
        return float(np.mean(self.var + np.square(self.mean)))

    @property
    def total_var(self) -> float:
        """Variance over every element and sample: what ``np.var`` of the tensor measures."""
        return max(self.second_moment - self.total_mean**2, 0.0)

    def as_map(self) -> Signal:
        """The same signal with maps of the full sample shape."""
        if np.shape(self.mean) == self.shape and np.shape(self.var) == self.shape:
            return self
        return Signal(
            np.broadcast_to(self.mean, self.shape).astype(float),
            np.broadcast_to(self.var, self.shape).astype(float),
            self.shape,
            self.source,
            self.mixture,
            corr=self.corr,
            xcorr=self.xcorr,
            phase=self.phase,
        )

    def collapse(self) -> Signal:
        """Scalar summary (total mean and variance) of this signal."""
        return Signal.scalar(self.total_mean, self.total_var, self.shape)

    def like(self, mean: Any, var: Any, shape: tuple[int, ...] | None = None,
              source: Source | None = None) -> Signal:
        """A new signal in the same mode as this one (collapses maps when this is scalar)."""
        mean = np.asarray(mean, dtype=float)
        var = np.maximum(np.asarray(var, dtype=float), 0.0)
        shape = self.shape if shape is None else tuple(shape)
        if not self.is_map and (mean.ndim or var.ndim):
            m = float(np.mean(mean))
            v = float(np.mean(var + mean**2) - m**2)
            return Signal.scalar(m, max(v, 0.0), shape)
        return Signal(mean, var, shape, source)

    def check(self, where: str) -> Signal:
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.var))):
            raise SignalError(
                f"The signal at {where} is not finite. Expected finite mean and variance. "
                f"Received: mean={self.total_mean!r}, var={self.total_var!r}"
            )
        return self
