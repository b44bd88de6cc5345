"""Correlation between positions of sequences (autoinit_nas/_correlation.py), against Monte Carlo
on networks whose channels are independent by construction (the rules' assumption)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from autoinit_nas import initialize
from autoinit_nas._correlation import centered_corr, conv_corr, function_corr, global_mean_var
from autoinit_nas.errors import SignalError

L = keras.layers


@pytest.fixture(scope="module")
def diagonal_conv():
    """y = per-channel 5-tap convolution of white noise: channels independent, positions not."""
    rng = np.random.default_rng(0)
    channels, taps = 4, 5
    kernel = np.zeros((taps, channels, channels))
    for c in range(channels):
        kernel[:, c, c] = rng.normal(size=taps)
    x = rng.normal(size=(4000, 120, channels))
    y = np.einsum("npck,kco->npo", sliding_window_view(x, taps, axis=1), kernel)
    return kernel, y


def _empirical_corr(y: np.ndarray, lags: int, start: int = 20, stop: int = 60) -> np.ndarray:
    y = y - y.mean(axis=0)
    mid = y[:, start:stop]
    var = np.mean(mid**2, axis=(0, 1))
    return np.array(
        [np.mean(mid * y[:, start + d : stop + d], axis=(0, 1)) / var for d in range(lags)]
    )


def test_convolution_maps_the_autocovariance_through_the_kernel(diagonal_conv):
    kernel, y = diagonal_conv
    corr, extra = conv_corr(None, np.ones(4), kernel, 1, 1, 8)
    np.testing.assert_allclose(corr, _empirical_corr(y, 8), atol=0.03)
    np.testing.assert_allclose(extra, 0.0, atol=1e-12)  # white input: no cross terms
    # a second, strided and dilated convolution of the correlated y
    second = np.random.default_rng(1).normal(size=(3, 4, 2))
    var_y = np.mean(y[:, 20:60] ** 2, axis=(0, 1))
    corr2, extra2 = conv_corr(corr, var_y, second, 2, 2, 5)
    z = np.einsum("npck,kco->npo", sliding_window_view(y, 5, axis=1)[..., ::2], second)[:, ::2]
    np.testing.assert_allclose(corr2, _empirical_corr(z, 5, 10, 40), atol=0.03)
    predicted = np.einsum("jco,c->o", second**2, var_y) + extra2
    np.testing.assert_allclose(predicted, np.mean(z[:, 10:40] ** 2, axis=(0, 1)), rtol=0.03)
    assert np.max(np.abs(extra2 / predicted)) > 0.05  # the cross terms matter here


def test_mehler_expansion_of_relu_is_the_arc_cosine_kernel():
    rho = np.linspace(-0.9, 0.99, 9)[:, None]
    corr = np.vstack([[[1.0]], rho])
    out = function_corr(corr, np.zeros(1), np.ones(1), lambda t: np.maximum(t, 0.0))

    def k(r):
        return (np.sqrt(1 - r**2) + (np.pi - np.arccos(r)) * r) / (2 * np.pi)

    exact = (k(rho) - 1 / (2 * np.pi)) / (0.5 - 1 / (2 * np.pi))
    np.testing.assert_allclose(out[1:], exact, atol=5e-3)  # 30 Hermite terms
    assert out[0, 0] == 1.0


def test_global_average_of_correlated_positions(diagonal_conv):
    kernel, y = diagonal_conv
    corr, _ = conv_corr(None, np.ones(4), kernel, 1, 1, 40)
    var = np.broadcast_to(np.mean(y**2, axis=(0, 1)), (40, 4)).copy()
    predicted = global_mean_var(var, corr)
    measured = np.var(y[:, :40].mean(axis=1), axis=0)
    np.testing.assert_allclose(predicted, measured, rtol=0.08)
    independent = var.sum(axis=0) / 40**2
    assert np.max(predicted / independent) > 3 or np.min(predicted / independent) < 0.3


def test_depthwise_network_head_is_predicted_with_correlated_positions():
    """Depthwise convolutions keep channels independent; the global average at the head sees
    the positions' correlation (the independence rule is off by a large factor here)."""
    inp = keras.Input((64, 8))
    x = L.DepthwiseConv1D(7, padding="valid", name="dw1")(inp)
    x = L.Activation("tanh")(x)
    x = L.DepthwiseConv1D(5, padding="valid", name="dw2")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    model = keras.Model(inp, L.Dense(4, name="logits")(x))
    rep = initialize(model, seed=3).measure(model, samples=2048, seed=1)
    entries = {e.name: e for e in rep.layers}
    gap = entries["gap"]
    assert gap.measured_var == pytest.approx(gap.var, rel=0.1)
    assert entries["logits"].measured_var == pytest.approx(1.0, rel=0.1)
    assert math.isfinite(gap.var)


def test_long_sequences_keep_a_bounded_number_of_lags():
    """A 9,000-step sequence flattened into a Dense layer: the correlation is kept up to
    max_lag(channels) lags, so memory stays O(length * max_lag), not O(length^2)."""
    from autoinit_nas._correlation import LAG_BUDGET, MAX_LAG, max_lag

    inp = keras.Input((9000, 4))
    x = L.Conv1D(8, 5, padding="same", name="conv")(inp)
    x = L.MaxPooling1D(2, name="pool")(L.Activation("relu")(x))
    x = L.Flatten(name="flat")(x)
    model = keras.Model(inp, L.Dense(3, name="logits")(x))
    rep = initialize(model, seed=0)
    assert rep.layers[-1].var == pytest.approx(1.0, rel=1e-6)
    from autoinit_nas._correlation import conv_corr

    corr, _ = conv_corr(None, np.ones(4), np.ones((5, 4, 8)), 1, 1, 9000)
    assert corr.shape == (max_lag(8) + 1, 8)
    assert max_lag(8) == max(MAX_LAG, LAG_BUDGET // 64) < 9000


def test_centering_the_positions_makes_them_sum_to_zero() -> None:
    length = 12
    var = np.broadcast_to(np.array([1.0, 2.0]), (length, 2))
    corr = np.zeros((length, 2))
    corr[0], corr[1], corr[2] = 1.0, [0.5, -0.3], [0.2, 0.1]
    out = centered_corr(var, corr)
    assert out is not None and out.shape == (length, 2)
    np.testing.assert_allclose(global_mean_var(var, out), 0.0, atol=1e-12)
    # white positions: every other position now correlates at -1 / (L - 1)
    white = centered_corr(np.ones((length, 1)), None)
    np.testing.assert_allclose(white[1:, 0], -1.0 / (length - 1))


def test_a_layer_normalization_over_positions_centers_them() -> None:
    # each sample's mean over the positions is subtracted: a global average after a function of
    # them is far smaller than 1/L of the variance (measured 0.089 of the prediction before)
    keras.utils.set_random_seed(0)
    x = keras.Input((40, 1))
    h = L.Activation("tanh")(L.Dense(8)(L.LayerNormalization(axis=[1, 2])(x)))
    model = keras.Model(x, L.GlobalAveragePooling1D()(h))
    report = initialize(model, seed=0).measure(model, samples=4096, seed=1)
    last = report.layers[-1]
    assert last.measured_var == pytest.approx(last.var, rel=0.15)


def test_a_global_average_of_centered_positions_is_reported_constant() -> None:
    # linear after the centering, the average is 0 in every sample: no scale can be set after it
    keras.utils.set_random_seed(0)
    x = keras.Input((40, 1))
    h = L.Dense(8)(L.LayerNormalization(axis=[1, 2])(x))
    model = keras.Model(x, L.Dense(4, name="head")(L.GlobalAveragePooling1D()(h)))
    with pytest.raises(SignalError, match="'head'.*LayerNormalization made sum to zero"):
        initialize(model, seed=0)


def _laid_out_linear_chain(x: keras.KerasTensor) -> keras.KerasTensor:
    f = L.Flatten()(L.Activation("sigmoid")(L.Conv1D(8, 7, padding="same")(x)))
    h = L.SeparableConv1D(16, 5, padding="same")(L.Reshape((320, 1))(f))
    return L.BatchNormalization()(L.Dense(8)(h))


def _centered_conv(x: keras.KerasTensor) -> keras.KerasTensor:
    return L.Dropout(0.2)(L.Conv1D(8, 3, padding="same")(L.LayerNormalization(axis=[1, 2])(x)))


def _valid_then_causal(x: keras.KerasTensor) -> keras.KerasTensor:
    f = L.Flatten()(L.Activation("tanh")(L.Dense(16)(x)))
    h = L.Conv1D(8, 5, padding="valid")(L.Reshape((640, 1))(f))
    return L.Conv1D(4, 3, padding="causal")(h)


# A global average after linear layers over a sequence whose sum the correlations cut at
# max_lag do not hold (a laid-out map, positions centered by a normalization): the sum's
# covariance goes through the layers instead. Measured over predicted before: 0.85, 1.14
# (with the centering; 0.008 without), 3.5.
SUMMED = {"laid-out map, linear chain": (_laid_out_linear_chain, 0.08),
          "centered positions, convolution's borders": (_centered_conv, 0.08),
          "valid and causal padding": (_valid_then_causal, 0.25)}


@pytest.mark.parametrize("name", list(SUMMED))
def test_a_global_average_after_linear_layers_reads_the_sum_they_carry(name: str) -> None:
    keras.utils.set_random_seed(0)
    x = keras.Input((40, 1))
    body, tolerance = SUMMED[name]
    model = keras.Model(x, L.GlobalAveragePooling1D()(body(x)))
    report = initialize(model, seed=0).measure(model, samples=4096, seed=1)
    last = report.layers[-1]
    assert last.measured_var == pytest.approx(last.var, rel=tolerance), name


@pytest.mark.parametrize("length, lags", [(30, 12), (700, 400)])
def test_global_mean_var_is_the_sum_over_every_pair(length: int, lags: int) -> None:
    # the long case sums the pairs by FFT
    rng = np.random.default_rng(1)
    var = rng.uniform(0.2, 2.0, (length, 2))
    corr = np.zeros((lags, 2))
    corr[0] = 1.0
    corr[1:] = rng.uniform(-0.2, 0.2, (lags - 1, 2))
    sd = np.sqrt(var)
    d = np.abs(np.arange(length)[:, None] - np.arange(length)[None, :])
    for c in range(2):
        rho = np.where(d < lags, corr[np.minimum(d, lags - 1), c], 0.0)
        want = np.sum(rho * sd[:, c, None] * sd[None, :, c]) / length**2
        assert global_mean_var(var, corr)[c] == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("size, strides", [(2, 2), (3, 2), (3, 1)])
def test_max_pooling_of_correlated_positions_reads_each_window(size: int, strides: int) -> None:
    # each channel a moving average of white noise (neighbours correlated 2/3 and 1/3): an
    # effective count of independent draws, rounded, took a window of two as one value (no
    # maximum at all: mean 0, variance unchanged); Clark's method over each window's own
    # members is exact for two and close for three ('valid': a 'same' pooling's border
    # positions are correlated more than the stationary rule says)
    x = keras.Input((40, 4))
    h = L.AveragePooling1D(3, strides=1)(x)
    model = keras.Model(x, L.MaxPooling1D(size, strides=strides, name="max")(h))
    last = initialize(model, seed=0).layers[-1]
    y = np.asarray(model(np.random.default_rng(1).standard_normal((8192, 40, 4))), float)
    assert float(y.mean()) == pytest.approx(last.mean, rel=0.03)
    assert float(y.var()) == pytest.approx(last.var, rel=0.03)


def test_global_maxima_of_correlated_channels_correlate_less_than_their_values() -> None:
    # channels mixing the same inputs (correlated at every position) read by a Dense layer
    # after a global max: taken as correlated as their means, the head was 4x the prediction
    keras.utils.set_random_seed(0)
    x = keras.Input((40, 4))
    h = L.GlobalMaxPooling1D()(L.Dense(8, use_bias=False)(x))
    model = keras.Model(x, L.Dense(1, use_bias=False, name="head")(h))
    last = initialize(model, seed=0).measure(model, samples=8192, seed=1).layers[-1]
    assert last.measured_var == pytest.approx(last.var, rel=0.06)
