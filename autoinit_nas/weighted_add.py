"""``WeightedAdd``: a residual merge whose fixed coefficients AutoInit sets, and a rewrite of
a model's ``Add`` layers into it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from autoinit_nas import _links
from autoinit_nas._context import Context, Estimate
from autoinit_nas._functions import linear_combination
from autoinit_nas._registry import register_estimator
from autoinit_nas._signal import Signal

__all__ = ["WeightedAdd", "rewrite_residuals"]


@keras.saving.register_keras_serializable(package="autoinit_nas")
class WeightedAdd(keras.layers.Layer):
    """Sum of same-shape inputs with non-trainable coefficients: ``sum_i c_i x_i``.

    AutoInit sets ``c_i = sqrt(target_var / (var_i * N))`` from the realized input variances,
    so a residual stack keeps unit variance at any depth instead of growing it.

    Args:
        coefficients: initial coefficients, one per input (default: all 1, a plain ``Add``).

    Example:
        >>> y = WeightedAdd()([x, keras.layers.Conv2D(16, 3, padding="same")(x)])
    """

    def __init__(self, coefficients: Sequence[float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.coefficients = None if coefficients is None else [float(c) for c in coefficients]

    def build(self, input_shape: Any) -> None:
        if not isinstance(input_shape, (list, tuple)) or not input_shape or \
                not isinstance(input_shape[0], (list, tuple)):
            raise ValueError(
                f"Expected WeightedAdd to be called on a list of tensors. Received: input_shape={input_shape}"
            )
        n = len(input_shape)
        if self.coefficients is not None and len(self.coefficients) != n:
            raise ValueError(
                f"Expected {n} coefficients for {n} inputs. Received: coefficients={self.coefficients}"
            )
        init = self.coefficients or [1.0] * n
        self.coefficient = self.add_weight(
            name="coefficient", shape=(n,), trainable=False,
            initializer=keras.initializers.Constant(np.asarray(init, dtype="float32")),
        )

    def call(self, inputs: Sequence[Any]) -> Any:
        out = inputs[0] * keras.ops.cast(self.coefficient[0], inputs[0].dtype)
        for i in range(1, len(inputs)):
            out = out + inputs[i] * keras.ops.cast(self.coefficient[i], inputs[i].dtype)
        return out

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        coeffs = self.coefficients
        if self.built:
            coeffs = [float(c) for c in keras.ops.convert_to_numpy(self.coefficient)]
        config["coefficients"] = coeffs
        return config


@register_estimator(WeightedAdd)
def _weighted_add(layer: WeightedAdd, inputs: list[Signal], ctx: Context, node: Any) -> Estimate:
    out_shape = tuple(int(d) for d in node.outputs[0].shape[1:])
    n = len(inputs)
    cross = _links.pairwise(ctx, inputs)  # inputs related through a fork

    if ctx.keeps(layer):
        coeffs = ctx.value(layer.coefficient)
        plan: dict[str, np.ndarray] = {}
    else:
        variances = [x.total_var for x in inputs]
        for i, v in enumerate(variances):
            if not math.isfinite(v) or v <= 0:
                from autoinit_nas.errors import SignalError
                raise SignalError(
                    f"Cannot set the coefficients of layer '{ctx.current_path}' (WeightedAdd): input "
                    f"{i} has variance {v!r}. Expected a positive finite variance."
                )
        coeffs = np.array([math.sqrt(ctx.target / (v * n)) for v in variances])
        # The exact variance of the sum (realized maps, inputs that are functions of one
        # Gaussian such as x and f(x), inputs related through a fork) sets the common scale.
        total = linear_combination(inputs, coeffs, out_shape, shape_too=False,
                                   cross=cross).total_var
        if math.isfinite(total) and total <= 1e-9 * ctx.target:
            from autoinit_nas.errors import SignalError
            raise SignalError(
                f"Cannot set the coefficients of layer '{ctx.current_path}' (WeightedAdd): its "
                f"inputs cancel (the sum has variance {total:.3g} for inputs of variance "
                f"{', '.join(f'{v:.3g}' for v in variances)}; one is the negative of another). "
                "Expected inputs that do not cancel."
            )
        if math.isfinite(total) and total > 0:
            coeffs = coeffs * math.sqrt(ctx.target / total)
        plan = {layer.coefficient.path: coeffs}
    out = linear_combination(inputs, coeffs, out_shape, cross=cross)
    return Estimate([_links.with_merged_sum_cov(ctx, inputs, coeffs, out)], plan, None)


def rewrite_residuals(model: keras.Model) -> keras.Model:
    """A clone of ``model`` whose ``keras.layers.Add`` layers are ``WeightedAdd`` layers.

    Meant for models that have not been trained yet; the weights of other layers are copied.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model. Received: model={model!r}")

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if type(layer) is keras.layers.Add:
            return WeightedAdd(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(model, clone_function=clone)
    old_layers = {layer.name: layer for layer in model.layers}
    for layer in new.layers:
        src = old_layers.get(layer.name)
        if src is not None and not isinstance(layer, WeightedAdd) and src.weights:
            layer.set_weights(src.get_weights())
    return new
