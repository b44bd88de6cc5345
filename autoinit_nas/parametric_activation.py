"""``ParametricActivation``: an elementwise activation given by a formula with learnable scalars."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from autoinit_nas import _expression as expr

__all__ = ["ParametricActivation"]


@keras.saving.register_keras_serializable(package="autoinit_nas")
class ParametricActivation(keras.layers.Layer):
    """An activation function ``f(x)`` written as a formula, with trainable alpha, beta, gamma.

    The formula is built from ``x``, the parameters ``alpha``, ``beta``, ``gamma`` (each a
    trainable scalar initialized to 1.0, created only if the formula uses it), non-negative
    constants and the vocabulary of ``autoinit_nas._expression``: ``+ - * /`` (``/`` is a safe
    division ``a * sign(b) / (|b| + 1e-3)``), ``-e``, ``|e|``, ``e^2``, ``exp sin cos tanh
    sigmoid erf softplus relu elu selu swish gelu arctan`` and ``max(a, b)`` / ``min(a, b)``.
    Every op is elementwise and float32-safe (no inf/NaN for finite inputs).

    Floating inputs keep their dtype (no autocast), so the layer can be evaluated on a float64
    grid for numerical integration; the parameters are cast to the input's dtype.

    Args:
        expression: a formula string, or a nested-list tree such as
            ``["mul", "alpha", ["tanh", "x"]]``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ``trainable``).

    Example:
        >>> layer = ParametricActivation("alpha*tanh(beta*x) + gamma*x")
        >>> str(layer)
        'alpha*tanh(beta*x) + gamma*x'
    """

    def __init__(self, expression: str | list | tuple = "x", **kwargs: Any) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        try:
            self._tree = (
                expr.parse(expression)
                if isinstance(expression, str)
                else expr.from_json_tree(expression)
            )
        except ValueError as err:
            raise ValueError(
                f"Invalid expression for ParametricActivation. Received: expression={expression!r}. "
                f"{err}"
            ) from None
        self.expression = expr.format_tree(self._tree)
        self.parameter_names = expr.parameters_of(self._tree)
        for name in self.parameter_names:
            setattr(
                self,
                name,
                self.add_weight(
                    name=name,
                    shape=(),
                    initializer=keras.initializers.Constant(1.0),
                    trainable=True,
                ),
            )
        self.built = True

    @property
    def tree(self) -> Any:
        """The expression as a canonical tuple tree."""
        return self._tree

    def parameter_values(self) -> dict[str, float]:
        """Current values of the parameters the formula uses, as Python floats."""
        return {n: float(ops.convert_to_numpy(getattr(self, n))) for n in self.parameter_names}

    def call(self, inputs: Any) -> Any:
        x = inputs
        if not keras.backend.is_float_dtype(x.dtype):
            x = ops.cast(x, self.compute_dtype)
        params = {n: ops.cast(getattr(self, n), x.dtype) for n in self.parameter_names}
        return expr.evaluate(self._tree, x, params, backend="keras")

    def evaluate_numpy(self, x: Any) -> np.ndarray:
        """``f(x)`` in float64 NumPy with the current parameter values (no tensors involved)."""
        return expr.evaluate(self._tree, x, self.parameter_values(), backend="numpy")

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def compute_output_spec(self, inputs: Any) -> Any:
        dtype = inputs.dtype if keras.backend.is_float_dtype(inputs.dtype) else self.compute_dtype
        return keras.KerasTensor(inputs.shape, dtype=dtype)

    def formula(self, with_values: bool = False) -> str:
        """The formula; with ``with_values`` the parameters are replaced by their current values."""
        if not with_values:
            return self.expression
        values = self.parameter_values()

        def sub(t: Any) -> Any:
            if isinstance(t, tuple):
                return (t[0], *(sub(c) for c in t[1:]))
            if isinstance(t, str) and t in values:
                v = round(values[t], 4)
                return ("neg", -v) if v < 0 else v
            return t

        return expr.format_tree(sub(self._tree))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["expression"] = self.expression
        return config

    def __str__(self) -> str:
        return self.expression

    def __repr__(self) -> str:
        return f"ParametricActivation({self.expression!r}, name={self.name!r})"
