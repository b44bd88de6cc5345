"""Tests of the ParametricActivation layer: formulas, numerics, safety, serialization."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from scipy import special

from autoinit_nas import ParametricActivation

X = np.linspace(-6.0, 6.0, 121)


def _phi(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + special.erf(x / math.sqrt(2.0)))


REFERENCE = {
    "x": X,
    "-x": -X,
    "|x|": np.abs(X),
    "x^2": X**2,
    "exp(x)": np.exp(X),
    "sin(x)": np.sin(X),
    "cos(x)": np.cos(X),
    "tanh(x)": np.tanh(X),
    "sigmoid(x)": special.expit(X),
    "erf(x)": special.erf(X),
    "softplus(x)": np.log1p(np.exp(X)),
    "relu(x)": np.maximum(X, 0),
    "elu(x)": np.where(X > 0, X, np.expm1(X)),
    "selu(x)": 1.0507009873554805 * np.where(X > 0, X, 1.6732632423543772 * np.expm1(X)),
    "swish(x)": X * special.expit(X),
    "gelu(x)": X * _phi(X),
    "arctan(x)": np.arctan(X),
    "x + sin(x)": X + np.sin(X),
    "x - sin(x)": X - np.sin(X),
    "x*sin(x)": X * np.sin(X),
    "max(x, sin(x))": np.maximum(X, np.sin(X)),
    "min(x, sin(x))": np.minimum(X, np.sin(X)),
    "x/(x^2 + 1.0)": X / (X**2 + 1.0 + 1e-3),
    "x/(-x^2 - 1.0)": -X / (X**2 + 1.0 + 1e-3),
    "alpha*tanh(beta*x) + gamma*x": np.tanh(X) + X,
}


@pytest.mark.parametrize("formula", sorted(REFERENCE))
def test_every_op_matches_its_definition_in_float64_and_float32(formula: str) -> None:
    layer = ParametricActivation(formula)
    y64 = layer(X)  # a NumPy float64 grid, as the engine integrates it
    assert keras.backend.standardize_dtype(y64.dtype) == "float64"
    assert tuple(y64.shape) == X.shape
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(y64), REFERENCE[formula], rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(layer.evaluate_numpy(X), REFERENCE[formula], rtol=1e-6, atol=1e-9)
    y32 = keras.ops.convert_to_numpy(layer(X.astype("float32")))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, REFERENCE[formula], rtol=2e-5, atol=2e-5)


def test_layer_is_elementwise_and_keeps_any_shape() -> None:
    layer = ParametricActivation("alpha*tanh(beta*x) + gamma*x")
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    assert y.shape == x.shape
    np.testing.assert_allclose(
        y.reshape(-1), keras.ops.convert_to_numpy(layer(x.reshape(-1))), rtol=1e-6
    )
    # A constant formula still returns one value per element.
    const = keras.ops.convert_to_numpy(ParametricActivation("tanh(alpha)")(x))
    np.testing.assert_allclose(const, np.full(x.shape, np.tanh(1.0)), rtol=1e-6)


@pytest.mark.parametrize(
    "formula",
    [
        "exp(exp(exp(x)))",
        "((x^2)^2)^2",
        "x*x*x*x*x*x*x*x",
        "x/(x - x)",
        "exp(x)/(x*0.0)",
        "exp(x)*exp(x)^2 - exp(x)^2",
        "-exp(exp(x))^2",
        "(x/sin(x))^2",
    ],
)
def test_no_inf_or_nan_in_float32_for_extreme_finite_inputs(formula: str) -> None:
    x = np.concatenate([np.linspace(-1e30, 1e30, 101), [0.0, -0.0, 88.8, 1e38, -1e38]])
    layer = ParametricActivation(formula)
    y = keras.ops.convert_to_numpy(layer(x.astype("float32")))
    assert np.all(np.isfinite(y)), (formula, y)
    assert np.all(np.isfinite(layer.evaluate_numpy(x)))


def test_gradients_are_finite_and_parameters_train() -> None:
    layer = ParametricActivation("alpha*tanh(beta*x) + gamma*x/|x|")
    assert [w.name for w in layer.trainable_weights] == ["alpha", "beta", "gamma"]
    assert all(float(keras.ops.convert_to_numpy(w)) == 1.0 for w in layer.trainable_weights)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layer(keras.layers.Dense(4)(inputs)))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(31, 4)), np.zeros((1, 4))]).astype("float32")
    history = model.fit(x, 3 * rng.normal(size=(32, 4)), epochs=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert layer.parameter_values() != {"alpha": 1.0, "beta": 1.0, "gamma": 1.0}


def test_only_the_parameters_a_formula_uses_are_created() -> None:
    assert [w.name for w in ParametricActivation("gamma*relu(x)").weights] == ["gamma"]
    assert ParametricActivation("swish(x)").weights == []


@pytest.mark.parametrize(
    ("given", "printed"),
    [
        ("alpha*tanh(beta*x) + gamma*x", "alpha*tanh(beta*x) + gamma*x"),
        ("x - (x - x)", "x - (x - x)"),
        ("(x - x) - x", "x - x - x"),
        ("-x^2", "-x^2"),
        ("(-x)^2", "(-x)^2"),
        ("|x| / max(x,0.5)", "abs(x)/max(x, 0.5)"),
        ("silu(x) + atan(x)", "swish(x) + arctan(x)"),
        ("-(x*beta)", "-(x*beta)"),
        ("square(x)", "x^2"),
    ],
)
def test_formula_printing_is_canonical_and_parses_back(given: str, printed: str) -> None:
    layer = ParametricActivation(given)
    assert str(layer) == printed
    assert repr(layer).startswith(f"ParametricActivation({printed!r}")
    assert ParametricActivation(printed).tree == layer.tree


def test_formula_with_values_and_nested_list_constructor() -> None:
    layer = ParametricActivation(["add", ["mul", "alpha", ["tanh", "x"]], "x"])
    assert str(layer) == "alpha*tanh(x) + x"
    layer.alpha.assign(-0.5)
    assert layer.formula(with_values=True) == "-0.5*tanh(x) + x"


@pytest.mark.parametrize(
    ("bad", "mentions"),
    [
        ("foo(x)", "foo"),
        ("x +", "end of formula"),
        ("x^3", "exponent 2"),
        ("max(x)", "max"),
        (["mul", "x"], "path []"),
        (["add", "x", ["bogus", "x"]], "path [1]"),
        ("delta*x", "delta"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(bad: object, mentions: str) -> None:
    with pytest.raises(ValueError, match="ParametricActivation") as info:
        ParametricActivation(bad)
    assert mentions in str(info.value)


def test_get_config_keys_are_constructor_arguments() -> None:
    layer = ParametricActivation("alpha*sin(x) + x", name="act")
    config = layer.get_config()
    assert config["expression"] == "alpha*sin(x) + x"
    clone = ParametricActivation.from_config(config)
    assert clone.name == "act" and str(clone) == str(layer)


def test_saved_model_reloads_without_custom_objects(tmp_path: object) -> None:
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, name="dense")(inputs)
    h = ParametricActivation("alpha*tanh(beta*x) + gamma*max(x, -x/2.0)", name="act")(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    act = model.get_layer("act")
    act.alpha.assign(0.7)
    act.gamma.assign(-1.3)
    path = tmp_path / "model.keras"  # type: ignore[operator]
    model.save(path)
    reloaded = keras.saving.load_model(path)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )
    again = reloaded.get_layer("act")
    assert isinstance(again, ParametricActivation)
    assert again.parameter_values() == pytest.approx({"alpha": 0.7, "beta": 1.0, "gamma": -1.3})
    assert str(again) == str(act)
    # A fresh process that only imports autoinit_nas reloads it too (no custom_objects).
    np.save(tmp_path / "x.npy", x)  # type: ignore[operator]
    code = (
        "import sys, numpy as np, keras, autoinit_nas; "
        "m = keras.saving.load_model(sys.argv[1]); "
        "np.save(sys.argv[3], m.predict(np.load(sys.argv[2]), verbose=0))"
    )
    out = tmp_path / "y.npy"  # type: ignore[operator]
    subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "x.npy"), str(out)],  # type: ignore[operator]
        check=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    np.testing.assert_allclose(np.load(out), model.predict(x, verbose=0), rtol=1e-6)
