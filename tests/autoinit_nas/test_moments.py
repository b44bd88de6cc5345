import numpy as np
import pytest
from scipy import integrate

from autoinit_nas._functions import piecewise_relu
from autoinit_nas._moments import (
    clark_max,
    gaussian_moments,
    max_correlation,
    max_of_iid,
    standard_max_moments,
)


def brute(fn, mu, var):
    sd = np.sqrt(var)
    pdf = lambda x: np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))  # noqa: E731
    pts = [0.0, -1.0, 1.0, 6.0]
    first = integrate.quad(lambda x: fn(x) * pdf(x), mu - 14 * sd, mu + 14 * sd, points=pts, limit=400)[0]
    second = integrate.quad(lambda x: fn(x) ** 2 * pdf(x), mu - 14 * sd, mu + 14 * sd, points=pts, limit=400)[0]
    return first, second


@pytest.mark.parametrize("mu,var", [(0.0, 1.0), (0.7, 0.3), (-1.5, 4.0)])
def test_relu_quadrature_matches_closed_form_to_1e6(mu, var):
    closed = piecewise_relu().moments(np.array(mu), np.array(var))
    quad = gaussian_moments(lambda x: np.maximum(x, 0.0), mu, var)
    np.testing.assert_allclose(quad, closed, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("slope,maxv,thr", [(0.2, None, 0.0), (0.0, 6.0, 0.0), (0.1, 2.0, -0.5)])
def test_piecewise_closed_form_matches_adaptive_integration(slope, maxv, thr):
    fn = piecewise_relu(slope, maxv, thr)
    for mu, var in [(0.0, 1.0), (1.0, 9.0)]:
        want = brute(lambda x: float(fn(np.array(x))), mu, var)
        np.testing.assert_allclose(fn.moments(np.array(mu), np.array(var)), want, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("fn", [np.tanh, np.sin, lambda x: x / (1 + np.exp(-x))])
def test_smooth_functions_match_adaptive_integration(fn):
    got = gaussian_moments(fn, 0.3, 2.0)
    np.testing.assert_allclose(got, brute(fn, 0.3, 2.0), rtol=1e-8, atol=1e-10)


def test_max_of_four_standard_normals():
    m, v = standard_max_moments(4)
    assert m == pytest.approx(1.029375, abs=1e-6)
    assert v == pytest.approx(0.491715, abs=1e-6)


def test_max_of_iid_general_function_agrees_with_monte_carlo():
    rng = np.random.default_rng(0)
    x = rng.normal(0.2, 1.3, size=(400_000, 3))
    swish = lambda t: t / (1 + np.exp(-t))  # noqa: E731
    y = swish(x).max(axis=1)
    first, second = max_of_iid(swish, 0.2, 1.3**2, 3)
    assert float(first) == pytest.approx(y.mean(), abs=3e-3)
    assert float(second - first**2) == pytest.approx(y.var(), rel=1e-2)


def test_clark_max_of_two_gaussians_agrees_with_monte_carlo():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.5, 1.0, 500_000), rng.normal(-0.2, 2.0, 500_000)
    mean, var = clark_max(0.5, 1.0, -0.2, 4.0)
    assert mean == pytest.approx(np.maximum(a, b).mean(), abs=5e-3)
    assert var == pytest.approx(np.maximum(a, b).var(), rel=1e-2)


def test_unbounded_functions_stay_finite():
    first, second = gaussian_moments(np.exp, 0.0, 1.0)
    assert first == pytest.approx(np.exp(0.5), rel=1e-8)
    assert second == pytest.approx(np.exp(2.0), rel=1e-8)
    first, second = gaussian_moments(np.cosh, 0.0, 400.0)  # huge but finite
    assert np.isfinite(first) and np.isfinite(second)


def test_maps_are_integrated_elementwise():
    mu = np.array([[0.0, 1.0], [-1.0, 0.5]])
    var = np.array([[1.0, 0.5], [2.0, 1.0]])
    got_first, got_second = gaussian_moments(np.tanh, mu, var)
    for idx in np.ndindex(mu.shape):
        want = brute(np.tanh, mu[idx], var[idx])
        assert got_first[idx] == pytest.approx(want[0], abs=1e-6)
        assert got_second[idx] == pytest.approx(want[1], abs=1e-6)


def test_numpy_twins_of_keras_activations_match_keras():
    """The float64 NumPy forms used for integration are Keras' own functions, not look-alikes."""
    import keras

    from autoinit_nas._functions import NUMPY_FORMS, as_numpy_fn

    assert len(NUMPY_FORMS) >= 12
    x = np.linspace(-30.0, 30.0, 6001)
    for keras_fn, numpy_fn in NUMPY_FORMS.items():
        assert as_numpy_fn(keras_fn) is numpy_fn
        ref = np.asarray(keras.ops.convert_to_numpy(keras_fn(keras.ops.convert_to_tensor(x, "float64"))))
        np.testing.assert_allclose(numpy_fn(x), ref, rtol=1e-7, atol=1e-7, err_msg=keras_fn.__name__)


def test_parametric_activation_is_integrated_in_numpy_with_its_current_parameters():
    import keras

    from autoinit_nas import ParametricActivation
    from autoinit_nas._functions import as_numpy_fn

    layer = ParametricActivation("alpha * x * sigmoid(beta * x) + gamma * sin(x)")
    layer.beta.assign(2.5)
    fn = as_numpy_fn(layer)
    x = np.linspace(-8.0, 8.0, 1001)
    ref = keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(x, "float32")))
    np.testing.assert_allclose(fn(x), ref, rtol=1e-5, atol=1e-5)
    assert fn(np.array([1.0]))[0] == pytest.approx(1.0 / (1.0 + np.exp(-2.5)) + np.sin(1.0))


def test_max_of_groups_matches_iid_closed_form_and_monte_carlo():
    from autoinit_nas._moments import max_of_groups

    # one group: the max of 4 i.i.d. N(0, 1), 2 + 2 split over two equal groups
    for count in ([[4.0]], [[2.0, 2.0]]):
        first, second = max_of_groups(None, np.zeros((1, len(count[0]))),
                                      np.ones((1, len(count[0]))), np.array(count))
        assert first[0] == pytest.approx(1.029375, abs=1e-4)
        assert second[0] - first[0] ** 2 == pytest.approx(0.491715, abs=1e-4)
    # uneven positions through tanh (10 + 3 + 2 values of different moments)
    rng = np.random.default_rng(0)
    mu, var, cnt = np.array([[0.0, 1.0, -0.5]]), np.array([[1.0, 0.2, 4.0]]), [10, 3, 2]
    draws = np.concatenate([rng.normal(mu[0, g], np.sqrt(var[0, g]), (400_000, cnt[g]))
                            for g in range(3)], axis=1)
    mx = np.tanh(draws).max(axis=1)
    first, second = max_of_groups(np.tanh, mu, var, np.array([cnt], float))
    assert first[0] == pytest.approx(mx.mean(), abs=2e-3)
    assert second[0] == pytest.approx(np.mean(mx**2), abs=2e-3)


def test_max_of_iid_nondecreasing_function_uses_the_max_of_gaussians():
    # tanh is nondecreasing: max tanh(X_i) = tanh(max X_i); relu likewise (flat, then rising)
    rng = np.random.default_rng(2)
    for fn, mu, sd, k in [(np.tanh, 0.3, 1.4, 5), (lambda t: np.maximum(t, 0.0), -0.4, 0.8, 9)]:
        y = fn(rng.normal(mu, sd, size=(400_000, k))).max(axis=1)
        first, second = max_of_iid(fn, mu, sd**2, k)
        assert float(first) == pytest.approx(y.mean(), abs=3e-3)
        assert float(second - first**2) == pytest.approx(y.var(), rel=1e-2)


def test_max_of_iid_on_a_large_map_shares_integrals_within_tolerance():
    # 5,000 distinct elements through swish (not monotone: values are sorted per element, so
    # elements whose moments agree to 1e-2 of the map's scale share one sort); the result stays
    # within 1.5% of the map's scale of integrating every element on its own
    rng = np.random.default_rng(3)
    mu, var = rng.normal(0.0, 0.5, 5000), rng.uniform(0.5, 2.0, 5000)
    swish = lambda t: t / (1 + np.exp(-t))  # noqa: E731
    first, second = max_of_iid(swish, mu, var, 4)
    exact = [max_of_iid(swish, mu[i : i + 500], var[i : i + 500], 4) for i in range(0, 5000, 500)]
    exact_first = np.concatenate([e[0] for e in exact])
    exact_second = np.concatenate([e[1] for e in exact])
    scale = float(np.sqrt(np.mean(mu**2 + var)))
    assert np.max(np.abs(first - exact_first)) < 0.015 * scale
    assert np.max(np.abs(np.sqrt(second) - np.sqrt(exact_second))) < 0.015 * scale


@pytest.mark.parametrize("expression", ["alpha/x", "softplus(alpha/x)",
                                        "min(x, beta)/(x - beta)", "tanh(x)/x"])
def test_a_safe_divisions_spike_is_integrated(expression: str) -> None:
    # the quotient is about DIV_EPS (1e-3) wide where the denominator crosses zero: on the
    # grid alone E[f^2] came out 10,000 (alpha/x, a node on the zero) or 23 (softplus(alpha/x),
    # none) instead of ~800 and ~400
    from autoinit_nas._functions import as_numpy_fn
    from autoinit_nas.parametric_activation import ParametricActivation

    fn = as_numpy_fn(ParametricActivation(expression))
    mu, var = np.array([0.0, 0.3, 0.301]), np.array([1.0, 0.5, 0.5])
    first, second = gaussian_moments(fn, mu, var)
    z = np.linspace(-12.0, 12.0, 2_000_001)
    w = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi) * (z[1] - z[0])
    for i in range(3):
        fx = fn(mu[i] + np.sqrt(var[i]) * z)
        # (the reference grid holds x = 0 itself for mu = 0, where the quotient is 1/DIV_EPS)
        assert first[i] == pytest.approx(fx @ w, rel=0.03, abs=0.01)
        assert second[i] == pytest.approx(np.square(fx) @ w, rel=0.01)


@pytest.mark.parametrize("expression", ["alpha/x", "softplus(alpha/x)", "tanh(x)/x"])
def test_a_division_after_a_dense_layer_is_predicted(expression: str) -> None:
    # measured over predicted before: 0.081, 16.4, 0.80
    import keras

    from autoinit_nas import initialize
    from autoinit_nas.parametric_activation import ParametricActivation

    keras.utils.set_random_seed(0)
    x = keras.Input((40, 1))
    out = ParametricActivation(expression)(keras.layers.Dense(16)(keras.layers.Flatten()(x)))
    model = keras.Model(x, out)
    report = initialize(model, seed=0).measure(model, samples=8192, seed=1)
    last = report.layers[-1]
    assert last.measured_var == pytest.approx(last.var, rel=0.1)


def test_a_function_after_a_division_keeps_its_spike() -> None:
    # the composed function integrates the inner quotient's spike too: softplus after
    # min(x, beta)/(x - beta) measured 2.7x the prediction without (genome 111 of the 1,000)
    import keras

    from autoinit_nas import initialize
    from autoinit_nas.parametric_activation import ParametricActivation

    keras.utils.set_random_seed(0)
    x = keras.Input((40, 1))
    h = ParametricActivation("min(x, beta)/(x - beta)")(keras.layers.Dense(16)(keras.layers.Flatten()(x)))
    model = keras.Model(x, keras.layers.Activation("softplus")(h))
    report = initialize(model, seed=0).measure(model, samples=8192, seed=1)
    last = report.layers[-1]
    assert last.measured_var == pytest.approx(last.var, rel=0.1)


@pytest.mark.parametrize("k", [2, 10, 40])
def test_correlation_of_maxima_matches_monte_carlo(k: int) -> None:
    # two channels correlated rho at each of k independent positions: their maxima correlate
    # far less (Hoeffding's identity over the bivariate normal CDF)
    rho = np.array([-0.9, -0.5, 0.2, 0.5, 0.8, 0.95])
    rng = np.random.default_rng(0)
    z, w = rng.standard_normal((2, 100_000, k))
    mc = [np.corrcoef(z.max(1), (r * z + np.sqrt(1 - r * r) * w).max(1))[0, 1] for r in rho]
    got = max_correlation(rho, k)
    assert np.max(np.abs(got - np.array(mc))) < 0.012, (got, mc)
    assert max_correlation(np.array([0.0, 1.0]), k) == pytest.approx([0.0, 1.0], abs=1e-3)
