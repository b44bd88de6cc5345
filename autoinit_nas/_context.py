"""Options, per-walk state, and the result type of an estimator."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoinit_nas import _deferred
from autoinit_nas._signal import Signal
from autoinit_nas.errors import SignalError

__all__ = ["Options", "Estimate", "Context", "DISTRIBUTIONS", "MODES"]

DISTRIBUTIONS = ("truncated_normal", "normal", "uniform", "orthogonal")
MODES = ("realized", "expected")
_TRUNC_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2]


@dataclass(frozen=True)
class Options:
    """Validated options of one AutoInit pass (see ``AutoInit`` for their meaning)."""

    input_mean: Any = 0.0
    input_var: Any = 1.0
    signal_variance: float = 1.0
    distribution: str = "truncated_normal"
    mode: str = "realized"
    center: bool = False
    seed: int | None = None
    unknown_layers: str = "probe"
    shared_layers: str = "first"
    probe_samples: int = 64

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"Expected distribution in {DISTRIBUTIONS}. Received: distribution={self.distribution!r}"
            )
        if self.mode not in MODES:
            raise ValueError(f"Expected mode in {MODES}. Received: mode={self.mode!r}")
        if self.unknown_layers not in ("probe", "raise"):
            raise ValueError(
                f"Expected unknown_layers 'probe' or 'raise'. Received: unknown_layers={self.unknown_layers!r}"
            )
        if self.shared_layers not in ("first", "max"):
            raise ValueError(
                f"Expected shared_layers 'first' or 'max'. Received: shared_layers={self.shared_layers!r}"
            )
        sv = self.signal_variance
        if not (isinstance(sv, (int, float)) and math.isfinite(sv) and sv > 0):
            raise ValueError(f"Expected a positive finite signal_variance. Received: signal_variance={sv!r}")
        for name in ("input_mean", "input_var"):
            for v in np.ravel(np.asarray(getattr(self, name), dtype=float)):
                if not math.isfinite(v) or (name == "input_var" and v < 0):
                    raise SignalError(
                        f"Expected {'a finite' if name == 'input_mean' else 'a finite non-negative'} "
                        f"{name}. Received: {name}={getattr(self, name)!r}"
                    )


@dataclass
class Estimate:
    """What an estimator returns: output signals, the planned weights, and what it chose.

    ``weights`` maps variable *paths* to new values; the walk applies them after planning.
    """

    outputs: list[Signal]
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    weight_std: float | None = None
    note: str = ""


class Context:
    """State of one walk: options, planned weights, seeded generators."""

    def __init__(self, options: Options, seed: int) -> None:
        self.options = options
        self.seed = seed
        self.planned: dict[str, np.ndarray] = {}
        self.owner: dict[str, str] = {}
        self._counter = 0
        self.warnings: list[str] = []
        self.current_path = ""
        self.site_inputs: list[float] = []  # per call site, in walk order: E[x^2] of input 0
        # links to fork ancestors (``_links.py``): id(signal) -> {fork key: Link}
        self.links: dict[int, dict[int, Any]] = {}
        self.roots: dict[int, Any] = {}  # fork key -> Root
        self.forks: set[int] = set()  # id(tensor) of the forks worth linking to
        self.link_key = 0
        self.link_memo: dict[Any, Any] = {}
        self.pooled: dict[int, Any] = {}  # id(flat signal) -> the sequence it pools
        self.known: dict[str, np.ndarray] = {}  # path -> value of a variable just created
        # id(output) -> its pre-activation signal, for layers with a built-in activation
        self.pre_activation: dict[int, Any] = {}

    @property
    def realized(self) -> bool:
        return self.options.mode == "realized"

    @property
    def target(self) -> float:
        return float(self.options.signal_variance)

    def next_rng(self) -> np.random.Generator:
        """A generator per weighted call site, in graph order: the same seed, the same weights."""
        self._counter += 1  # as default_rng([seed, counter]), without its argument checks
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [self.seed, self._counter])))

    def keeps(self, layer: Any) -> bool:
        """Whether the layer's weights are used as they are (frozen, or planned at another call site)."""
        if not getattr(layer, "trainable", True):
            return True
        return any(v.path in self.planned for v in layer.weights)

    def value(self, variable: Any) -> np.ndarray:
        if variable.path in self.planned:
            return self.planned[variable.path]
        known = self.known.get(variable.path)
        if known is None and _deferred.is_pending(variable):
            known = _deferred.create(variable)
        if known is not None:
            return np.asarray(known, dtype=float)
        return np.asarray(variable.numpy(), dtype=float)

    def draw(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Unit-variance, zero-mean draws from the configured distribution."""
        dist = self.options.distribution
        if dist == "normal":
            return rng.standard_normal(shape)
        if dist == "uniform":
            return rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), size=shape)
        if dist == "truncated_normal":
            out = rng.standard_normal(shape)
            flat = out.reshape(-1)
            bad = np.flatnonzero(np.abs(flat) > 2.0)
            while bad.size:  # redraw the rejected ones, in order, until none is left
                again = rng.standard_normal(bad.size)
                flat[bad] = again
                bad = bad[np.abs(again) > 2.0]
            out /= _TRUNC_STD
            return out
        rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        cols = shape[-1]
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (q * math.sqrt(max(rows, cols))).reshape(shape)

    def require_second_moment(self, x: Signal, where: str) -> float:
        ex2 = x.second_moment
        if not math.isfinite(ex2) or ex2 <= 1e-30:
            raise SignalError(
                f"Cannot scale the weights of {where}: its input has second moment E[x^2]={ex2!r}. "
                "Expected a positive finite value; an earlier function maps everything to a constant "
                "(e.g. an activation that is 0 everywhere, or a global average over positions "
                "that a LayerNormalization made sum to zero)."
            )
        if float(np.max(x.var, initial=0.0)) <= 1e-12 * ex2:
            # a constant input (E[x^2] all mean): the layer's output cannot depend on the
            # network's input, and no scale of its weights sets the variance it is asked for
            raise SignalError(
                f"Cannot scale the weights of {where}: its input is predicted constant (variance 0 "
                f"at every element, E[x^2]={ex2!r} all from its mean). Expected an input that "
                "varies with the network's input; an earlier layer maps everything to one value "
                "(e.g. a constant activation, or a global max over values that are 0 in nearly "
                "every sample)."
            )
        return ex2
