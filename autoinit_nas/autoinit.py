"""``AutoInit`` and ``initialize``: plan every weight from the signal, then assign in place."""

from __future__ import annotations

import logging
import time
from typing import Any

import keras
import numpy as np

import autoinit_nas._linear  # noqa: F401  (registers estimators)
import autoinit_nas._ops  # noqa: F401
import autoinit_nas._rules  # noqa: F401
from autoinit_nas import _deferred, _links
from autoinit_nas._context import Context, Estimate, Options
from autoinit_nas._signal import Signal
from autoinit_nas._walk import estimate_handler, fanout, graph_of, walk
from autoinit_nas._xcorr import white_xcorr
from autoinit_nas.report import LayerSignal, SignalReport

__all__ = ["AutoInit", "initialize", "predict_signal"]

logger = logging.getLogger("autoinit_nas")


def _input_signals(graph: Any, options: Options) -> list[Signal]:
    n = len(graph.inputs)
    means = np.broadcast_to(np.asarray(options.input_mean, float), (n,)) \
        if np.ndim(options.input_mean) == 0 else np.asarray(options.input_mean, float)
    variances = np.broadcast_to(np.asarray(options.input_var, float), (n,)) \
        if np.ndim(options.input_var) == 0 else np.asarray(options.input_var, float)
    if len(means) != n or len(variances) != n:
        raise ValueError(
            f"Expected one input_mean and input_var per model input ({n}). Received: "
            f"input_mean={options.input_mean!r}, input_var={options.input_var!r}"
        )
    signals = []
    for tensor, m, v in zip(graph.inputs, means, variances, strict=True):
        shape = tuple(tensor.shape[1:])
        if options.mode == "realized" and all(d is not None for d in shape):
            signals.append(Signal(np.full(shape, m), np.full(shape, v), shape,
                                  xcorr=white_xcorr(shape)))
        else:  # unknown dimensions: scalar moments (expected rules) for this input
            signals.append(Signal.scalar(m, v, tuple(d or 1 for d in shape)))
    return signals


def _walk_plan(model: Any, options: Options, seed: int, planned: dict | None = None,
               known: dict | None = None
               ) -> tuple[SignalReport, Context, list[tuple[str, Any, Estimate]]]:
    """One walk. With ``planned``, every weight is taken from it (or the model) as it is;
    ``known`` holds values of variables just created (read without TensorFlow)."""
    graph = graph_of(model)
    ctx = Context(options, seed)
    ctx.known = known or {}
    if planned is not None:  # predict for these weights: every layer treated as frozen
        ctx.planned = dict(planned)
        ctx.keeps = lambda layer: True  # type: ignore[method-assign]
    records: list[tuple[str, Any, Estimate]] = []
    t0 = time.perf_counter()
    inputs = _input_signals(graph, options)
    if ctx.realized:
        ctx.forks = _links.merge_forks(graph, fanout(graph))
    for tensor, signal in zip(graph.inputs, inputs, strict=True):
        if id(tensor) in ctx.forks:
            _links.fork(ctx, signal)
    outputs = walk(graph, inputs, estimate_handler(ctx, records))
    elapsed = time.perf_counter() - t0
    layers = [
        LayerSignal(
            name=path, class_name=type(op).__name__, estimator=est.note or "rule",
            mean=est.outputs[0].total_mean if est.outputs else float("nan"),
            var=est.outputs[0].total_var if est.outputs else float("nan"),
            weight_std=est.weight_std, weighted=bool(est.weights) or est.weight_std is not None,
        )
        for path, op, est in records
    ]
    report = SignalReport(
        layers=layers, mode=options.mode, seed=seed, seconds=elapsed,
        output_vars=[o.total_var for o in outputs], warnings=list(ctx.warnings),
        options=options,
    )
    return report, ctx, records


def _rescale_shared(ctx: Context, records: list[tuple[str, Any, Estimate]]) -> dict[int, str]:
    """``shared_layers="max"``: scale each shared layer's kernel, planned at its first call site,
    for the call site with the largest input second moment. Returns {record index: note}."""
    sites: dict[int, list[tuple[int, Any, float]]] = {}
    for i, (_, op, _) in enumerate(records):
        sites.setdefault(id(op), []).append((i, op, ctx.site_inputs[i]))
    notes = {}
    for calls in sites.values():
        if len(calls) < 2 or not all(np.isfinite(c[2]) for c in calls):
            continue
        first = calls[0]
        best = max(calls, key=lambda c: c[2])
        layer = first[1]
        kernels = [v for v in layer.weights if v.path in ctx.planned and v.path.endswith("kernel")]
        if best[0] == first[0] or not kernels or best[2] <= first[2]:
            continue
        factor = float(np.sqrt(first[2] / best[2]))
        ctx.planned[kernels[0].path] = ctx.planned[kernels[0].path] * factor
        notes[first[0]] = (f"shared: scaled x{factor:.4g} for its call site #{best[0]} "
                           f"(largest input second moment {best[2]:.4g})")
    return notes


def _plan(model: Any, options: Options, keep_all: bool = False, known: dict | None = None
          ) -> tuple[SignalReport, Context]:
    seed = options.seed
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    if keep_all:
        report, ctx, _ = _walk_plan(model, options, seed, planned={}, known=known)
        return report, ctx
    report, ctx, records = _walk_plan(model, options, seed, known=known)
    if options.shared_layers == "max":
        notes = _rescale_shared(ctx, records)
        if notes:  # predict again for the rescaled weights
            seconds = report.seconds
            report, _, _ = _walk_plan(model, options, seed, planned=ctx.planned, known=known)
            report.seconds += seconds
            for i, note in notes.items():
                report.layers[i].estimator = note
            report.warnings = list(ctx.warnings)
    return report, ctx


def _apply(model: Any, planned: dict[str, np.ndarray]) -> None:
    by_path = {v.path: v for v in model.weights}
    for path, value in planned.items():
        var = by_path.get(path)
        if var is None:
            continue
        _deferred.put(var, value)


def initialize(model: keras.Model, **options: Any) -> SignalReport:
    """Initialize ``model``'s weights in place with AutoInit and return its ``SignalReport``.

    Options are those of ``AutoInit`` (``input_mean``, ``input_var``, ``signal_variance``,
    ``distribution``, ``mode``, ``center``, ``seed``, ``unknown_layers``, ``probe_samples``).

    Example:
        >>> report = initialize(model, seed=0)
        >>> report.to_dict()["layers"][0]["weight_std"]
    """
    try:
        opts = Options(**options)
        known = _deferred.create_pending(model, but_planned=True)  # a model built deferred
        report, ctx = _plan(model, opts, known=known)
        _apply(model, ctx.planned)
    finally:  # nothing planned for them, or AutoInit failed: their own initializer (zeros)
        _deferred.create_pending(model)
    report._model_ref = model
    logger.debug("AutoInit planned %d variables in %.3f s", len(ctx.planned), report.seconds)
    return report


def predict_signal(model: keras.Model, **options: Any) -> SignalReport:
    """Predicted moments for the model's current weights (nothing is changed)."""
    opts = Options(**options)
    known = _deferred.create_pending(model)
    report, _ = _plan(model, opts, keep_all=True, known=known)
    return report


class AutoInit:
    """Analytic, data-free, signal-preserving weight initialization for Keras 3 models.

    Args:
        input_mean: mean of the network input's elements (one per input for multi-input models).
        input_var: variance of the network input's elements (likewise).
        signal_variance: the variance every weighted layer's output is scaled to.
        distribution: "truncated_normal", "normal", "uniform" or "orthogonal".
        mode: "realized" (default: propagate per-element maps through the weights actually drawn
            and rescale each kernel to the exact target) or "expected" (the paper's rule).
        center: in realized mode, set biases so per-channel offsets cancel.
        seed: the same seed gives bit-identical weights; None draws one (kept in the report).
        rewrite_residuals: ``initialize_model`` returns a clone whose ``Add`` layers are
            ``WeightedAdd`` layers.
        unknown_layers: "probe" (measure, with a warning) or "raise".

    Example:
        >>> model = AutoInit(seed=0).initialize_model(model)
    """

    def __init__(self, input_mean: Any = 0.0, input_var: Any = 1.0, signal_variance: float = 1.0,
                 distribution: str = "truncated_normal", mode: str = "realized",
                 center: bool = False, seed: int | None = None, rewrite_residuals: bool = False,
                 unknown_layers: str = "probe", probe_samples: int = 64) -> None:
        self.options = Options(input_mean=input_mean, input_var=input_var,
                               signal_variance=signal_variance, distribution=distribution,
                               mode=mode, center=center, seed=seed,
                               unknown_layers=unknown_layers, probe_samples=probe_samples)
        self.rewrite_residuals = rewrite_residuals
        self.report: SignalReport | None = None

    def initialize_model(self, model: keras.Model) -> keras.Model:
        """Initialize ``model`` and return it (a rewritten clone with ``rewrite_residuals``)."""
        if self.rewrite_residuals:
            from autoinit_nas.weighted_add import rewrite_residuals
            model = rewrite_residuals(model)
        self.report = initialize(model, **self.options.__dict__)
        return model

    def __call__(self, model: keras.Model) -> keras.Model:
        return self.initialize_model(model)
