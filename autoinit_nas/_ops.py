"""Estimators for ``keras.ops`` calls inside functional models (Operations, not Layers),
and for layers whose documented rule is the probe (recurrent layers)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras.src.ops import math as kmath
from keras.src.ops import nn as knn
from keras.src.ops import numpy as knp

from autoinit_nas._context import Context, Estimate
from autoinit_nas._functions import apply_fn_to_signal, as_numpy_fn
from autoinit_nas._moments import PiecewiseLinear
from autoinit_nas._registry import register_estimator
from autoinit_nas._rules import merge_signals, run_on_maps
from autoinit_nas._signal import Signal

__all__: list[str] = []

_UNARY = [getattr(knp, n) for n in ("Absolute", "Exp", "Tanh", "Sin", "Cos", "Square", "Sqrt",
                                     "Negative", "Arctan", "Expm1", "Log1p", "Abs")
          if hasattr(knp, n)]
_UNARY += [getattr(knn, n) for n in ("Relu", "Relu6", "Sigmoid", "Softplus", "Softsign", "Silu",
                                      "Gelu", "Elu", "Selu", "LeakyRelu", "HardSigmoid",
                                      "HardSilu", "Celu", "SparsePlus", "Squareplus")
           if hasattr(knn, n)]
_UNARY += [kmath.Erf]


def _shape(node: Any) -> tuple[int, ...]:
    return tuple(int(d) if d is not None else 1 for d in node.outputs[0].shape[1:])


@register_estimator(*dict.fromkeys(_UNARY))
def _unary_op(op: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    """Elementwise op: integrate the op itself (called eagerly on a float64 grid)."""
    if len(inputs) != 1 or node.arguments.args[0] is not node.input_tensors[0]:
        return Estimate([], note="probe")
    return Estimate([apply_fn_to_signal(as_numpy_fn(lambda t: op(t)), inputs[0])])


def _constant(node: Any) -> tuple[int, float | None]:
    """Which positional argument is the tensor, and the other one if it is a plain number."""
    args = node.arguments.args
    if len(args) != 2:
        return -1, None
    for i in (0, 1):
        other = args[1 - i]
        if args[i] is node.input_tensors[0] and isinstance(other, (int, float)):
            return i, float(other)
    return -1, None


_BINARY = {knp.Add: "add", knp.Subtract: "subtract", knp.Multiply: "multiply",
           knp.Maximum: "maximum", knp.Minimum: "minimum"}
if hasattr(knp, "TrueDivide"):
    _BINARY[knp.TrueDivide] = "divide"
if hasattr(knp, "Divide"):
    _BINARY[knp.Divide] = "divide"


@register_estimator(*_BINARY)
def _binary_op(op: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    kind = next(k for cls, k in _BINARY.items() if isinstance(op, cls))
    out_shape = _shape(node)
    if len(inputs) == 2 and kind != "divide":
        return Estimate([merge_signals(kind, inputs, out_shape)])
    pos, c = _constant(node)
    if len(inputs) != 1 or c is None:
        return Estimate([], note="probe")
    x = inputs[0]
    if kind == "add":
        return Estimate([x.like(x.mean + c, x.var, out_shape)])
    if kind == "subtract":
        return Estimate([x.like(x.mean - c if pos == 0 else c - x.mean, x.var, out_shape)])
    if kind == "multiply" or (kind == "divide" and pos == 0 and c != 0):
        k = c if kind == "multiply" else 1.0 / c
        return Estimate([x.like(x.mean * k, x.var * k * k, out_shape)])
    if kind in ("maximum", "minimum"):
        fn = (PiecewiseLinear((c,), (0.0, 1.0), (c, 0.0)) if kind == "maximum"
              else PiecewiseLinear((c,), (1.0, 0.0), (0.0, c)))
        return Estimate([apply_fn_to_signal(fn, x)])
    return Estimate([], note="probe")


_MOVERS = [knp.Reshape, knp.Transpose, knp.ExpandDims, knp.Squeeze]


@register_estimator(*_MOVERS)
def _mover_op(op: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    x = inputs[0]
    out_shape = _shape(node)
    if not x.is_map:
        return Estimate([Signal(x.mean, x.var, out_shape)])
    return Estimate([run_on_maps(lambda t: op(t), x, out_shape)])


@register_estimator(keras.layers.RNN, keras.layers.Bidirectional)
def _recurrent(layer: Any, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    """Recurrent layers keep their weights; their moments are measured (DESIGN.md's rule)."""
    return Estimate([], note="probe")


del np
