"""The graph walk: one traversal of a Keras 3 model's live graph, two interpreters.

The walk visits call sites (nodes) in topological order, iteratively within each model, and
descends into nested Functional/Sequential models. The same traversal predicts moments
(``estimate``) and measures real tensors (``measure``), so both see identical call sites.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from autoinit_nas import _links
from autoinit_nas._context import Context, Estimate
from autoinit_nas._registry import lookup_estimator
from autoinit_nas._signal import Signal
from autoinit_nas.errors import AutoInitError, SignalError, UnsupportedLayerError

__all__ = ["CallSite", "walk", "graph_of", "estimate_handler", "measure_handler", "probe"]

logger = logging.getLogger("autoinit_nas")


@dataclass
class CallSite:
    """One call of one operation, as the walk saw it."""

    path: str
    operation: Any
    inputs: list[Any]
    outputs: list[Any]
    result: Any = None


Handler = Callable[[Any, Any, list[Any], tuple, dict, str], list[Any]]


def graph_of(model: Any) -> Any:
    """The Functional graph behind a model, or a clear error for models without one."""
    if not isinstance(model, keras.Model) and not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"Expected a keras.Model. Received: model={model!r} of type {type(model).__name__}"
        )
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise AutoInitError(
                f"The Sequential model '{model.name}' has no input shape yet, so it has no graph. "
                "Expected a built model: start it with keras.Input(shape=...) or call "
                "model.build(input_shape) first."
            )
        return functional
    if hasattr(model, "_nodes_by_depth") and getattr(model, "_inputs", None) is not None:
        return model
    raise AutoInitError(
        f"The model '{getattr(model, 'name', model)}' ({type(model).__name__}) is a subclassed "
        "model without a functional graph. Expected a Functional or Sequential model (AutoInit "
        "walks the graph of layer calls). Wrap the computation in keras.Model(inputs, outputs)."
    )


def _is_graph_model(op: Any) -> bool:
    if isinstance(op, keras.Sequential):
        return getattr(op, "_functional", None) is not None
    return isinstance(op, keras.Model) and hasattr(op, "_nodes_by_depth") and \
        getattr(op, "_inputs", None) is not None


def fanout(model: Any) -> dict[int, int]:
    """How many layer calls of ``model``'s graph read each tensor (by ``id``); the model's
    outputs count once more."""
    graph = graph_of(model)
    counts: dict[int, int] = {}
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            if node.operation is None or node.is_input:
                continue
            for t in {id(t) for t in node.input_tensors}:
                counts[t] = counts.get(t, 0) + 1
    for t in graph.outputs:
        counts[id(t)] = counts.get(id(t), 0) + 1
    return counts


def walk(model: Any, inputs: list[Any], handler: Handler, *, prefix: str = "",
         sites: list[CallSite] | None = None) -> list[Any]:
    """Run ``handler`` at every call site of ``model``; returns the model's outputs."""
    graph = graph_of(model)
    sites = [] if sites is None else sites
    values: dict[int, Any] = {}
    if len(graph.inputs) != len(inputs):
        raise ValueError(
            f"Expected {len(graph.inputs)} input signal(s) for model '{model.name}'. "
            f"Received: {len(inputs)}"
        )
    for tensor, value in zip(graph.inputs, inputs, strict=True):
        values[id(tensor)] = value
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            if any(id(t) not in values for t in node.input_tensors):
                continue
            args, kwargs = node.arguments.fill_in(values)
            flat_in = [values[id(t)] for t in node.input_tensors]
            path = f"{prefix}{op.name}"
            if _is_graph_model(op):
                outs = walk(op, flat_in, handler, prefix=f"{path}/", sites=sites)
            else:
                outs = handler(op, node, flat_in, args, kwargs, path)
                sites.append(CallSite(path, op, flat_in, list(outs)))
            for tensor, value in zip(node.outputs, outs, strict=True):
                values[id(tensor)] = value
    return [values[id(t)] for t in graph.outputs]


# ------------------------------------------------------------------ estimation
def estimate_handler(ctx: Context, records: list[tuple[str, Any, Estimate]]) -> Handler:
    def handle(op: Any, node: Any, flat_in: list[Signal], args: tuple, kwargs: dict,
               path: str) -> list[Signal]:
        ctx.current_path = path
        ctx.site_inputs.append(flat_in[0].second_moment if flat_in else float("nan"))
        fn = lookup_estimator(op)
        if fn is None:
            if ctx.options.unknown_layers == "raise":
                raise UnsupportedLayerError(
                    f"No AutoInit estimator for layer '{path}' ({type(op).__name__}). Expected a "
                    "registered layer; register one with @autoinit_nas.register_estimator"
                    f"({type(op).__name__})."
                )
            message = (
                f"No AutoInit estimator for layer '{path}' ({type(op).__module__}."
                f"{type(op).__qualname__}); its output moments were measured on a seeded Gaussian "
                "probe and its weights were left as they are. For an analytic rule, register one: "
                f"@autoinit_nas.register_estimator({type(op).__name__}) on a function "
                "(layer, inputs, ctx, node) -> Estimate."
            )
            warnings.warn(message, stacklevel=4)
            ctx.warnings.append(message)
            est = Estimate(probe(op, node, flat_in, args, kwargs, ctx), note="probe")
        else:
            est = fn(op, flat_in, ctx, node)
            if not est.outputs and est.note == "probe":
                est = Estimate(probe(op, node, flat_in, args, kwargs, ctx), note="probe")
        for out in est.outputs:
            out.check(f"layer '{path}' ({type(op).__name__})")
        ctx.planned.update(est.weights)
        _links.propagate(op, node, flat_in, est.outputs, ctx)
        records.append((path, op, est))
        return est.outputs

    return handle


def _sample_shape(tensor: Any, fallback: int = 8) -> tuple[int, ...]:
    return tuple(fallback if d is None else int(d) for d in tensor.shape[1:])


def _calls_with_training(op: Any) -> bool:
    call = getattr(op, "call", None)
    if call is None:
        return False
    try:
        return "training" in inspect.signature(call).parameters
    except (TypeError, ValueError):
        return False


def _fill(args: tuple, kwargs: dict, tensors: list[Any], node: Any) -> tuple[tuple, dict]:
    values = {id(t): v for t, v in zip(node.input_tensors, tensors, strict=True)}
    return node.arguments.fill_in(values)


def probe(op: Any, node: Any, flat_in: list[Signal], args: tuple, kwargs: dict,
          ctx: Context) -> list[Signal]:
    """Seeded, bounded Gaussian probe: run the op on samples with the input moments."""
    rng = np.random.default_rng([ctx.seed, 7919])
    tensors = []
    for sig, kt in zip(flat_in, node.input_tensors, strict=True):
        shape = _sample_shape(kt)
        size = max(1, int(np.prod(shape)))
        n = int(max(4, min(ctx.options.probe_samples, 2_000_000 // size)))
        if "int" in str(kt.dtype):
            tensors.append(keras.ops.convert_to_tensor(rng.integers(0, 2, (n, *shape)), kt.dtype))
            continue
        m = np.broadcast_to(sig.mean, shape) if np.shape(sig.mean) in ((), shape) else sig.total_mean
        v = np.broadcast_to(sig.var, shape) if np.shape(sig.var) in ((), shape) else sig.total_var
        x = m + np.sqrt(v) * rng.standard_normal((n, *shape))
        tensors.append(keras.ops.convert_to_tensor(x.astype(np.float32)))
    n = min(int(t.shape[0]) for t in tensors) if tensors else 1
    tensors = [t[:n] for t in tensors]
    args2, kwargs2 = _fill(args, kwargs, tensors, node)
    if _calls_with_training(op):  # nodes record training=False: force training mode
        kwargs2["training"] = True
    outs = op(*args2, **kwargs2)
    outs = keras.tree.flatten(outs)
    result = []
    for out, kt in zip(outs, node.outputs, strict=True):
        a = np.asarray(keras.ops.convert_to_numpy(out), dtype=float)
        if not np.all(np.isfinite(a)):
            raise SignalError(f"The probe of layer '{ctx.current_path}' produced non-finite values.")
        result.append(Signal.scalar(float(a.mean()), float(a.var()), _sample_shape(kt)))
    return result


# ------------------------------------------------------------------ measurement
def measure_handler(records: dict[str, list[tuple[float, float, int]]]) -> Handler:
    """Run each op on real tensors in training mode; record (sum, sum of squares, count) of
    each call site's first output, so batches can be pooled."""

    def handle(op: Any, node: Any, flat_in: list[Any], args: tuple, kwargs: dict,
               path: str) -> list[Any]:
        if _calls_with_training(op):  # nodes record training=False: force training mode
            kwargs = {**kwargs, "training": True}
        outs = keras.tree.flatten(op(*args, **kwargs))
        a = np.asarray(keras.ops.convert_to_numpy(outs[0]), dtype=np.float64)
        records.setdefault(path, []).append((float(a.sum()), float(np.square(a).sum()), a.size))
        return outs

    return handle
