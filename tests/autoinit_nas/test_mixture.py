"""Residual sums are not Gaussian: the mixture that carries their shape (DESIGN.md, effect 3)."""

import keras
import numpy as np
import pytest

from autoinit_nas import initialize
from autoinit_nas._context import Options
from autoinit_nas._mixture import Mixture, source_nodes
from autoinit_nas.autoinit import _walk_plan


def _relu_after_residual_moments(grid: int = 1601) -> tuple[float, float]:
    """E and Var of relu(relu(X) + Y), X, Y i.i.d. N(0, 1), by 2-D quadrature on a fine grid."""
    z = np.linspace(-10, 10, grid)
    w = np.exp(-0.5 * z**2)
    w /= w.sum()
    v = np.maximum(np.maximum(z, 0)[:, None] + z[None, :], 0)
    ww = w[:, None] * w[None, :]
    mean = float(np.sum(ww * v))
    return mean, float(np.sum(ww * v**2)) - mean**2


def _residual_model(width: int = 64) -> keras.Model:
    a = keras.Input((width,), name="a")
    b = keras.Input((width,), name="b")
    s = keras.layers.Add(name="add")([keras.layers.ReLU(name="r1")(a), b])
    return keras.Model([a, b], keras.layers.ReLU(name="r2")(s))


@pytest.mark.parametrize("mode", ["expected", "realized"])
def test_relu_after_residual_add_is_exact(mode):
    want_mean, want_var = _relu_after_residual_moments()
    layers = initialize(_residual_model(), mode=mode).to_dict()["layers"]
    out = layers[-1]
    assert out["name"] == "r2"
    assert out["mean"] == pytest.approx(want_mean, rel=2e-3)
    assert out["var"] == pytest.approx(want_var, rel=2e-3)
    # The Gaussian rule on the sum (mean 0.399, var 1.341) would give a variance 3.4% off.
    s_mean, s_var = 1 / np.sqrt(2 * np.pi), 1 + 0.5 - 1 / (2 * np.pi)
    t = s_mean / np.sqrt(s_var)
    from scipy.stats import norm

    g_mean = s_mean * norm.cdf(t) + np.sqrt(s_var) * norm.pdf(t)
    g_second = (s_mean**2 + s_var) * norm.cdf(t) + s_mean * np.sqrt(s_var) * norm.pdf(t)
    assert abs((g_second - g_mean**2) / want_var - 1) > 0.02  # the test can tell them apart


def _residual_mlp(blocks: int, width: int, activation: str) -> keras.Model:
    x = inp = keras.Input((width,))
    x = keras.layers.Activation(activation)(keras.layers.Dense(width)(x))
    for _ in range(blocks):
        h = keras.layers.Dense(width)(x)
        h = keras.layers.Activation(activation)(h)
        h = keras.layers.Dense(width)(h)
        x = keras.layers.Activation(activation)(keras.layers.Add()([x, h]))
    return keras.Model(inp, x)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_deep_residual_stack_stays_predicted(activation):
    """Twelve unnormalized residual blocks: the skip path's shape is carried block to block.

    Without the mixture (Gaussian rule at every ReLU after an Add) the last layer's predicted
    variance is 6% low on this model (relu, seed 3), the mixture brings it within 1%.
    """
    model = _residual_mlp(12, 512, activation)
    report = initialize(model, seed=3).measure(model, samples=512, seed=1)
    last = report.layers[-1]
    assert last.measured_var > (3.0 if activation == "relu" else 0.4)
    assert last.var == pytest.approx(last.measured_var, rel=0.03)
    assert np.median(report.errors()) < 0.015


def _predicted_and_measured(model: keras.Model, name: str) -> tuple[float, float, float, float]:
    """(predicted mean, var, measured mean, var) of layer ``name`` under N(0, 1) input."""
    report = initialize(model, seed=0)
    entry = {e["name"]: e for e in report.to_dict()["layers"]}[name]
    x = np.random.default_rng(3).standard_normal((8192, 40, 1)).astype("float32")
    sub = keras.Model(model.inputs, model.get_layer(name).output)
    y = np.asarray(sub(x, training=True), float)
    return entry["mean"], entry["var"], float(y.mean()), float(y.var())


def _square(t):
    return t * t


@pytest.mark.parametrize("rate, fn, between, tolerance", [
    (0.25, "exponential", None, 0.15),  # Gaussian rule: 0.51x
    (0.5, "relu", None, 0.02),  # 0.81x
    (0.25, "softplus", "flatten", 0.02),
    (0.5, _square, "concat", 0.02),  # 0.76x
])
def test_function_after_dropout_sees_its_mixture(rate, fn, between, tolerance):
    # each element after dropout is 0 (probability rate) or x / (1 - rate): a function of it is
    # integrated over that mixture, also through a Flatten or a Concatenate in between
    inp = keras.Input((40, 1))
    h = keras.layers.Dropout(rate)(inp)
    if between == "flatten":
        h = keras.layers.Flatten()(h)
    if between == "concat":
        h = keras.layers.Concatenate()([h, keras.layers.Conv1D(8, 3, padding="same")(inp)])
    model = keras.Model(inp, keras.layers.Activation(fn, name="act")(h))
    p_mean, p_var, m_mean, m_var = _predicted_and_measured(model, "act")
    assert abs(p_var / m_var - 1.0) < tolerance, (p_var, m_var)
    assert abs(p_mean - m_mean) < 0.02 * max(1.0, abs(m_mean)), (p_mean, m_mean)


@pytest.mark.parametrize("first, second", [("tanh", "exponential"), ("sigmoid", "exponential"),
                                           ("relu", _square)])
def test_dense_layers_of_one_channel_keep_its_shape(first, second):
    # Dense on a one-channel sequence, then Dense again: every unit is an affine image of the
    # same f(x), so the function after them integrates over f(x), not over a Gaussian
    # (tanh then exp was predicted at 4364 for a measured 12.3)
    inp = keras.Input((40, 1))
    h = keras.layers.Dense(24)(keras.layers.Dense(16)(keras.layers.Activation(first)(inp)))
    model = keras.Model(inp, keras.layers.Activation(second, name="act")(h))
    p_mean, p_var, m_mean, m_var = _predicted_and_measured(model, "act")
    assert abs(p_var / m_var - 1.0) < 0.05, (p_var, m_var)
    assert abs(p_mean / m_mean - 1.0) < 0.02, (p_mean, m_mean)


def test_maximum_of_mixture_draws_matches_monte_carlo():
    from autoinit_nas._mixture import Mixture

    # half the elements 0, half N(1, 4) (dropout), and a one-atom Gaussian (the closed form)
    mix = Mixture.gaussian(np.array([0.5, 0.0]), np.array([1.0, 1.0])).dropped(0.5)
    rng = np.random.default_rng(4)
    draws = (0.5 + rng.standard_normal((400_000, 12))) * 2.0 * (rng.random((400_000, 12)) < 0.5)
    mean, var = mix.max_moments(np.array([12.0, 12.0]))
    # (the components' discretization: within 1% and 3% here; the engine uses the difference
    # to a Gaussian discretized alike, which cancels most of it)
    assert abs(mean[0] / draws.max(axis=1).mean() - 1.0) < 0.02, mean
    assert abs(var[0] / draws.max(axis=1).var() - 1.0) < 0.05, var


def test_maximum_over_windows_of_unlike_independent_elements_matches_monte_carlo():
    from autoinit_nas._mixture import Mixture

    # each element its own shape: exp of N(0, s^2) (heavy right tails of unlike sizes) and
    # Gaussians of unlike means; windows of three and a window cut by padding
    rng = np.random.default_rng(6)
    scales = np.array([0.5, 0.8, 1.0, 0.6, 0.9])
    mix = Mixture.stacked([Mixture.of_function(np.exp, np.zeros(5), scales**2),
                           Mixture.gaussian(np.array([-1.0, 0.0, 2.0]), np.array([1.0, 4.0, 0.25]))])
    g = rng.standard_normal((400_000, 8))
    draws = np.concatenate([np.exp(g[:, :5] * scales),
                            np.array([-1.0, 0.0, 2.0]) + g[:, 5:] * np.array([1.0, 2.0, 0.5])], 1)
    rows = np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 0]])
    inside = np.array([[True] * 3] * 3 + [[True, True, False]])
    mean, var = mix.max_of(rows, inside)
    for w, (row, keep) in enumerate(zip(rows, inside, strict=True)):
        top = draws[:, row[keep]].max(axis=1)
        assert abs(mean[w] / top.mean() - 1.0) < 0.01, (w, mean[w], top.mean())
        assert abs(var[w] / top.var() - 1.0) < 0.04, (w, var[w], top.var())


def test_max_pooling_of_a_laid_out_concatenation_sees_each_elements_shape():
    # a flat concatenation of small pooled features and skewed ones (a batch-normalized x^2),
    # laid out as one channel and max pooled over 3: the skewed windows' maximum has more
    # variance than a Gaussian one, and the layout does not repeat with the features' period.
    # Before (per phase of a period of 16, as Gaussians): measured 2.4x the predicted
    x = keras.Input((40, 1))
    small = keras.layers.GlobalAveragePooling1D()(keras.layers.Conv1D(16, 3, padding="same")(x))
    heavy = keras.layers.BatchNormalization()(
        keras.layers.Flatten()(keras.layers.Activation(keras.ops.square)(x)))
    flat = keras.layers.Concatenate()([small, heavy])
    seq = keras.layers.Reshape((56, 1))(flat)
    out = keras.layers.MaxPooling1D(3, strides=2, padding="same", name="max")(seq)
    model = keras.Model(x, out)
    report = initialize(model, seed=0).measure(model, samples=16384, seed=1)
    last = report.layers[-1]
    assert last.measured_var == pytest.approx(last.var, rel=0.05)


@pytest.mark.parametrize("first, pool", [("exponential", "global"), ("dropout", "global"),
                                         ("dropout", "window")])
def test_maximum_of_a_non_gaussian_signal_sees_its_mixture(first, pool):
    # the maximum of dropout's zeros-or-scaled values, or of Dense units that are all affine
    # images of one exp(x), reaches further than that of Gaussians of the same moments: the
    # Gaussian maximum was 1.5x (dropout) to 3x (exp) off in variance
    inp = keras.Input((40, 1))
    if first == "dropout":
        h = keras.layers.Dropout(0.5)(keras.layers.Conv1D(8, 3, padding="same")(inp))
    else:
        h = keras.layers.Dense(16)(keras.layers.Activation(first)(inp))
    if pool == "global":
        out = keras.layers.GlobalMaxPooling1D(name="max")(h)
    else:
        out = keras.layers.MaxPooling1D(8, name="max")(h)
    p_mean, p_var, m_mean, m_var = _predicted_and_measured(keras.Model(inp, out), "max")
    assert abs(p_var / m_var - 1.0) < 0.15, (p_var, m_var)
    assert abs(p_mean - m_mean) < 0.05 * max(1.0, abs(m_mean)), (p_mean, m_mean)



@pytest.mark.parametrize("seed", [0, 1])
def test_max_of_a_function_of_a_mixture_reads_the_mixture(seed: int) -> None:
    # relu(x)^2 after dropout: the function's source takes its input as a Gaussian, but the
    # input is half zeros and half twice a softplus. The maximum over 38 positions read the
    # source alone and was 6.5-6.9x too small in variance (genome 689); the mixture now
    # corrects it, by ratio against the source's rule on the same nodes.
    from autoinit_nas.parametric_activation import ParametricActivation

    inp = keras.Input((40, 1))
    h = keras.layers.Dropout(0.5)(keras.layers.Activation("softplus")(keras.layers.Conv1D(16, 3)(inp)))
    h = ParametricActivation("relu(x)^2")(h)
    model = keras.Model(inp, keras.layers.GlobalMaxPooling1D(name="head")(h))
    report = initialize(model, seed=seed)
    head = next(e for e in report.measure(model, samples=2048, seed=1).to_dict()["layers"]
                if e["name"] == "head")
    assert head["measured_var"] / head["var"] == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("layer, fn", [
    (lambda: keras.layers.DepthwiseConv1D(7, padding="valid"), "relu"),
    (lambda: keras.layers.Conv1D(16, 3, padding="valid"), "hard_silu"),
    (lambda: keras.layers.Conv1D(16, 3, strides=2, padding="valid"), _square),
])
def test_a_convolution_of_few_non_gaussian_taps_keeps_their_shape(layer, fn):
    # a few taps over x^2 (chi-square) or over dropout's spike at 0 are far from Gaussian: the
    # function after the convolution integrates over the sum of the taps' mixtures (relu after
    # 7 taps of x^2 was 0.35x; genome 430: max(2x, 0.54) after them, 10x)
    inp = keras.Input((40, 1))
    first = keras.layers.Activation(_square)(inp) if fn == "relu" else \
        keras.layers.Dropout(0.5)(keras.layers.Dropout(0.5)(inp))
    model = keras.Model(inp, keras.layers.Activation(fn, name="act")(layer()(first)))
    p_mean, p_var, m_mean, m_var = _predicted_and_measured(model, "act")
    assert abs(p_var / m_var - 1.0) < 0.1, (p_var, m_var)
    assert abs(p_mean - m_mean) < 0.05 * max(1.0, abs(m_mean)), (p_mean, m_mean)


def test_dense_layers_after_a_convolution_of_few_taps_keep_its_shape():
    # every unit of the two Dense layers is still a sum of the same three dropped-out taps,
    # however many channels it reads (genome 145: silu after them was 1.19x off)
    inp = keras.Input((40, 1))
    h = keras.layers.Dropout(0.5)(keras.layers.Dropout(0.5)(inp))
    h = keras.layers.Conv1D(64, 3, strides=2, padding="valid")(h)
    h = keras.layers.Dense(64)(keras.layers.Dense(32)(h))
    model = keras.Model(inp, keras.layers.Activation("silu", name="act")(h))
    p_mean, p_var, m_mean, m_var = _predicted_and_measured(model, "act")
    assert abs(p_var / m_var - 1.0) < 0.05, (p_var, m_var)
    assert abs(p_mean - m_mean) < 0.03 * max(1.0, abs(m_mean)), (p_mean, m_mean)


@pytest.mark.parametrize("first", ["relu", "tanh", "hard_silu"])
def test_a_function_after_batch_normalization_of_a_function_sees_its_shape(first):
    # BatchNormalization is an affine map per channel: relu(z) standardized is still half a
    # point mass, and a relu after it was predicted 0.34 for a measured 0.58 as if Gaussian
    inp = keras.Input((40, 1))
    h = keras.layers.Activation(first)(keras.layers.Conv1D(16, 3, padding="same")(inp))
    h = keras.layers.BatchNormalization()(h)
    model = keras.Model(inp, keras.layers.Activation("relu", name="act")(h))
    p_mean, p_var, m_mean, m_var = _predicted_and_measured(model, "act")
    assert abs(p_var / m_var - 1.0) < 0.03, (p_var, m_var)
    assert abs(p_mean - m_mean) < 0.02 * max(1.0, abs(m_mean)), (p_mean, m_mean)


@pytest.mark.parametrize("first, pool, tolerance", [
    ("relu", lambda: keras.layers.MaxPooling1D(2), 0.05),  # 1.35x as Gaussian
    ("exponential", lambda: keras.layers.MaxPooling1D(3, 1, padding="same"), 0.1),  # 17.8x
])
def test_a_function_after_max_pooling_sees_the_shape_of_the_maximum(first, pool, tolerance):
    # a window's maximum of relu(z) or exp(z) is not Gaussian: the function after it integrates
    # over the maximum of the mixture's draws
    inp = keras.Input((40, 1))
    h = keras.layers.Activation(first)(keras.layers.Conv1D(16, 3, padding="same")(inp))
    model = keras.Model(inp, keras.layers.Activation("tanh", name="act")(pool()(h)))
    p_mean, p_var, m_mean, m_var = _predicted_and_measured(model, "act")
    assert abs(p_var / m_var - 1.0) < tolerance, (p_var, m_var)
    assert abs(p_mean - m_mean) < 0.03 * max(1.0, abs(m_mean)), (p_mean, m_mean)


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_global_max_after_dropout_reads_its_zeros_position_by_position(rate: float) -> None:
    # channels of Gaussian values below 0 (biases -3 .. 1 set after AutoInit): dropout's zeros
    # decide their maximum; as one mixture per channel over alike positions the variance of the
    # lowest channels was 0 and 0.3x the measured
    keras.utils.set_random_seed(0)
    x = keras.Input((40, 8))
    dense = keras.layers.Dense(8)
    model = keras.Model(x, keras.layers.GlobalMaxPooling1D()(keras.layers.Dropout(rate)(dense(x))))
    initialize(model, seed=0)
    dense.bias.assign(np.linspace(-3.0, 1.0, 8).astype("float32"))
    _, _, records = _walk_plan(model, Options(seed=0), 0, planned={})  # for these weights
    out = records[-1][2].outputs[0]
    y = np.asarray(model(np.random.default_rng(1).standard_normal((16384, 40, 8)),
                         training=True), float)
    assert np.asarray(out.mean) == pytest.approx(y.mean(0), rel=0.01, abs=0.02)
    assert np.asarray(out.var) == pytest.approx(y.var(0), rel=0.06, abs=0.005)


@pytest.mark.parametrize("name", ["cos", "relu"])
@pytest.mark.parametrize("channels", [16, 64])
def test_layer_normalized_channels_keep_a_shape_for_their_maximum(name: str, channels: int) -> None:
    # (x_c - m) / s over one position's channels: the normalizer varies from sample to sample
    # with the very values it divides. The maximum of 10 such values of cos(z), z ~ N(0, 1),
    # over 25 channels has variance 0.017: 0.34 as Gaussians of the same moments, 0.003 as the
    # input's shape moved and scaled (an affine map). normalized_over_channels integrates the
    # other channels' sum and spread.
    fn = {"cos": np.cos, "relu": lambda z: np.maximum(z, 0.0)}[name]
    rng = np.random.default_rng(0)
    y = fn(rng.standard_normal((20000, 10, channels)))
    y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-3)
    want = float(y.max(axis=1).var())
    z, w = source_nodes()
    mix = Mixture.points(np.tile(fn(z), (channels, 1)), w).normalized_over_channels(1e-3)
    mean, var = mix.moments()
    assert float(np.mean(var)) == pytest.approx(float(y.var()), rel=0.06)
    got = float(np.mean(mix.max_moments(10.0)[1]))
    assert got == pytest.approx(want, rel=0.25)


@pytest.mark.parametrize("expression", ["cos(x)", "tanh(x)"])
def test_a_global_max_after_a_layer_norm_over_channels_reads_their_shape(expression: str) -> None:
    # bounded functions, layer-normed over 24 channels, then a global max over 36 positions:
    # as Gaussians the maxima's variance was 12x (cos) and 5x (tanh) what was measured
    from autoinit_nas.parametric_activation import ParametricActivation

    for seed in range(2):
        inp = keras.Input((40, 1))
        h = ParametricActivation(expression)(keras.layers.Conv1D(24, 5)(inp))
        h = keras.layers.GlobalMaxPooling1D(name="gmp")(keras.layers.LayerNormalization()(h))
        model = keras.Model(inp, h)
        last = initialize(model, seed=seed).measure(model, samples=4096, seed=1).layers[-1]
        assert 0.5 <= last.measured_var / last.var <= 2.0, (seed, last.measured_var, last.var)
