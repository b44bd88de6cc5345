"""Correlation between channels (``_xcorr.py``), checked against Monte Carlo."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from autoinit_nas import initialize
from autoinit_nas._xcorr import conv_xcov, correlation_of, function_xcorr

L = keras.layers


def _mc_cross_cov(y: np.ndarray, lag: int) -> np.ndarray:
    """Cov(y_c(p), y_c'(p + lag)) over samples and positions of y (S, L, C)."""
    a = y[:, : y.shape[1] - lag] if lag >= 0 else y[:, -lag:]
    b = y[:, lag:] if lag >= 0 else y[:, : y.shape[1] + lag]
    a = a.reshape(-1, y.shape[2]) - a.mean()
    b = b.reshape(-1, y.shape[2]) - b.mean()
    return a.T @ b / len(a)


def test_conv_cross_covariance_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 2, 5)) / np.sqrt(6)  # 2 input channels, 5 outputs
    x = rng.standard_normal((20_000, 60, 2))
    y = sum(
        np.einsum("slc,co->slo", x[:, j : 58 + j], kernel[j]) for j in range(3)
    )  # 'valid' convolution
    cov = conv_xcov(None, None, np.ones(2), kernel, 1, 1, 60, 58)
    k = (cov.shape[0] - 1) // 2
    for lag in (0, 1, 2, 3):
        np.testing.assert_allclose(cov[k + lag], _mc_cross_cov(y, lag), atol=0.02)
    # beyond the kernel's reach the channels are independent
    np.testing.assert_allclose(cov[k + 3], 0.0, atol=1e-12)


@pytest.mark.parametrize("name", ["relu", "tanh", "swish"])
def test_function_cross_correlation_matches_monte_carlo(name: str) -> None:
    fn = keras.activations.get(name)
    rng = np.random.default_rng(1)
    rho = np.array([[1.0, 0.7, -0.4], [0.7, 1.0, 0.2], [-0.4, 0.2, 1.0]])
    mean, var = np.array([0.3, -0.2, 0.0]), np.array([1.0, 2.0, 0.5])
    cov = rho * np.sqrt(var)[:, None] * np.sqrt(var)[None, :]
    g = rng.multivariate_normal(mean, cov, size=400_000)
    f = np.asarray(fn(g.astype("float32")), float)
    expected = np.corrcoef(f.T)

    def numpy_fn(v: np.ndarray) -> np.ndarray:
        return np.asarray(fn(keras.ops.convert_to_tensor(v, dtype="float64")), float)

    got = function_xcorr(rho[None], mean, var, numpy_fn)[0]
    np.testing.assert_allclose(got, expected, atol=0.01)


def test_correlation_of_has_unit_diagonal() -> None:
    cov = np.array([[[4.0, 1.0], [1.0, 9.0]]])
    np.testing.assert_allclose(correlation_of(cov)[0], [[1.0, 1 / 6], [1 / 6, 1.0]])


@pytest.mark.parametrize("first", ["dense", "conv"])
def test_pooled_head_of_a_one_channel_input_is_predicted(first: str) -> None:
    # Every channel of the first layer reads the same single input channel, so the pooled
    # channels are strongly correlated; the classifier's realized variance follows w^T C w.
    # With channels taken as independent, 2 of these 6 seeds were 3-6% off.
    x = np.random.default_rng(1).standard_normal((4096, 40, 1)).astype("float32")
    for seed in range(6):
        inp = keras.Input((40, 1))
        h = L.Dense(64)(inp) if first == "dense" else L.Conv1D(48, 3)(inp)
        h = L.GlobalAveragePooling1D()(L.Activation("relu")(h))
        model = keras.Model(inp, L.Dense(10, name="logits")(h))
        report = initialize(model, seed=seed)
        predicted = {e["name"]: e["var"] for e in report.to_dict()["layers"]}["logits"]
        measured = float(np.var(np.asarray(model(x, training=True))))
        assert abs(measured / predicted - 1.0) < 0.02, (seed, measured, predicted)


def test_conv2d_cross_covariance_matches_monte_carlo() -> None:
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((3, 3, 2, 4)) / np.sqrt(18)
    x = rng.standard_normal((4000, 20, 20, 2))
    y = sum(
        np.einsum("shwc,co->shwo", x[:, a : 18 + a, b : 18 + b], kernel[a, b])
        for a in range(3) for b in range(3)
    )  # 'valid' convolution, 18 x 18 outputs
    cov = conv_xcov(None, None, np.ones(2), kernel, 1, 1, (20, 20), (18, 18))
    k = (cov.shape[0] - 1) // 2
    yc = y - y.mean()
    for dh, dw in [(0, 0), (1, 0), (0, 1), (1, -1), (2, 2)]:
        a = yc[:, : 18 - dh, max(0, -dw) : 18 - max(0, dw)].reshape(-1, 4)
        b = yc[:, dh:, max(0, dw) : 18 + min(0, dw)].reshape(-1, 4)
        np.testing.assert_allclose(cov[k + dh, k + dw], a.T @ b / len(a), atol=0.02)
    # symmetry of the stationary cross-covariance: G[-d] = G[d]^T
    np.testing.assert_allclose(cov[::-1, ::-1], np.swapaxes(cov, -1, -2), atol=1e-12)


def _logit_ratio(model: keras.Model, x: np.ndarray, seed: int) -> float:
    report = initialize(model, seed=seed)
    predicted = {e["name"]: e["var"] for e in report.to_dict()["layers"]}["logits"]
    return float(np.var(np.asarray(model(x, training=True)))) / predicted


def test_pooled_head_of_an_image_is_predicted() -> None:
    # A one-channel image: the first convolution's channels are functions of the same pixels,
    # and neighbouring positions overlap, so the pooled channels are correlated in both ways.
    # With channels taken as independent (images kept no correlation at all) three of these
    # four seeds were 4-7% off; now all are within 2.1%.
    x = np.random.default_rng(3).standard_normal((2048, 12, 12, 1)).astype("float32")
    for seed in range(4):
        inp = keras.Input((12, 12, 1))
        h = L.Conv2D(16, 3, padding="same", activation="relu")(inp)
        h = L.Conv2D(24, 3, activation="relu")(h)
        h = L.GlobalAveragePooling2D()(h)
        model = keras.Model(inp, L.Dense(10, name="logits")(h))
        assert abs(_logit_ratio(model, x, seed) - 1.0) < 0.03, seed


def test_flattened_map_laid_out_as_a_sequence_keeps_its_correlation() -> None:
    # The search space's as_seq: Flatten a (length, channels) map, then Reshape it to a
    # one-channel sequence. Its positions are the map's channels side by side, all correlated;
    # the global average of that sequence sums the covariance of every pair of them (taken as
    # independent positions, the prediction was 85% off).
    x = np.random.default_rng(5).standard_normal((4096, 40, 1)).astype("float32")
    for seed in range(3):
        inp = keras.Input((40, 1))
        h = L.Activation("tanh")(L.Conv1D(8, 3)(inp))
        h = L.Reshape((38 * 8, 1))(L.Flatten()(h))
        out = L.GlobalAveragePooling1D(name="gap")(h)
        model = keras.Model(inp, out)
        report = initialize(model, seed=seed)
        predicted = {e["name"]: e["var"] for e in report.to_dict()["layers"]}["gap"]
        measured = float(np.var(np.asarray(model(x, training=True))))
        assert abs(measured / predicted - 1.0) < 0.05, (seed, measured, predicted)


def test_global_max_over_uneven_positions_is_predicted() -> None:
    # After as_seq the positions of one channel are the channels of the layer before, each with
    # its own realized variance: the maximum is set by the widest of them, not by the average.
    # Taken as alike positions the mean was 30% low; now within 3% (the variance within 20%:
    # the correlation between positions enters only through an effective count).
    x = np.random.default_rng(6).standard_normal((4096, 40, 1)).astype("float32")
    for seed in range(3):
        inp = keras.Input((40, 1))
        h = L.Activation("relu")(L.Conv1D(16, 5, strides=2)(inp))
        h = L.Reshape((18 * 16, 1))(L.Flatten()(h))
        model = keras.Model(inp, L.GlobalMaxPooling1D(name="gmp")(h))
        report = initialize(model, seed=seed)
        entry = {e["name"]: e for e in report.to_dict()["layers"]}["gmp"]
        y = np.asarray(model(x, training=True))
        assert abs(float(np.mean(y)) / entry["mean"] - 1.0) < 0.05, seed
        assert abs(float(np.var(y)) / entry["var"] - 1.0) < 0.25, seed


@pytest.mark.parametrize("rank, stride", [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_pointwise_convolution_shortcut_equals_the_general_rule(rank: int, stride: int) -> None:
    # a 1x1 kernel maps each lag on its own (W^T G[s d] W); the same kernel padded with a zero
    # tap goes through the general two-stage rule
    rng = np.random.default_rng(7)
    size = (40,) if rank == 1 else (8, 8)
    out = tuple(n // stride for n in size)
    first = rng.standard_normal((3,) * rank + (5, 5))
    xc = correlation_of(conv_xcov(None, None, np.ones(5), first, 1, 1, size, size))
    w = rng.standard_normal((1,) * rank + (5, 7))
    padded = np.concatenate([w, np.zeros_like(w)], axis=0)
    np.testing.assert_allclose(conv_xcov(xc, None, np.ones(5), w, stride, 1, size, out),
                               conv_xcov(xc, None, np.ones(5), padded, stride, 1, size, out),
                               atol=1e-12)


@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2)])
def test_lags_past_the_inputs_reach_are_zero_as_the_full_rule_gives(
        stride: int, dilation: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # an input correlated over a few lags only (one 3-tap convolution of white channels): the
    # output is computed on the lags it can reach and padded; the full box gives the same
    # (sequences: images keep 2 lags per axis, which a 3-tap convolution already reaches)
    import autoinit_nas._xcorr as xc_module

    rng = np.random.default_rng(3)
    first = rng.standard_normal((3, 4, 6))
    xc = correlation_of(conv_xcov(None, None, np.ones(4), first, 1, 1, 40, 40))
    kernel = rng.standard_normal((3, 6, 5))
    var_c = rng.uniform(0.5, 2.0, 6)
    out = -(-40 // stride)
    trimmed = conv_xcov(xc, None, var_c, kernel, stride, dilation, 40, out)
    assert (len(trimmed) - 1) // 2 > 2 * dilation + 2  # the kept box reaches past the nonzero lags
    monkeypatch.setattr(xc_module, "_support", lambda g: tuple((n - 1) // 2 for n in g.shape[:-2]))
    full = conv_xcov(xc, None, var_c, kernel, stride, dilation, 40, out)
    np.testing.assert_allclose(trimmed, full, rtol=0, atol=1e-12 * np.max(np.abs(full)))


def test_concatenated_branches_keep_their_channel_correlation() -> None:
    # two one-channel inputs, each through its own Dense layer: the channels of each branch are
    # functions of the same input value (correlated), the branches are independent
    # (block-diagonal). With Concatenate dropping the correlation one seed was 17% off.
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal((4096, 40, 1)).astype("float32") for _ in range(2)]
    ratios = []
    for seed in range(6):
        ins = [keras.Input((40, 1)), keras.Input((40, 1))]
        hs = [L.Activation("relu")(L.Dense(32)(i)) for i in ins]
        h = L.GlobalAveragePooling1D()(L.Concatenate()(hs))
        model = keras.Model(ins, L.Dense(10, name="logits")(h))
        report = initialize(model, seed=seed)
        predicted = {e["name"]: e["var"] for e in report.to_dict()["layers"]}["logits"]
        ratios.append(float(np.var(np.asarray(model(xs, training=True)))) / predicted)
    assert max(abs(r - 1.0) for r in ratios) < 0.02, ratios


def test_wide_dense_on_a_correlated_vector_adds_per_unit_terms_without_the_full_matrix() -> None:
    # a Dense layer of more than MAX_FLAT units gets w_o^T C w_o per unit; its output
    # correlation (units x units) is not formed (a 3-feature vector into 15,000 units took 6 GB)
    from autoinit_nas._xcorr import MAX_FLAT, dense_flat

    rng = np.random.default_rng(9)
    rho = np.array([[1.0, 0.6, -0.2], [0.6, 1.0, 0.3], [-0.2, 0.3, 1.0]])
    var = np.array([1.0, 2.0, 0.5])
    kernel = rng.standard_normal((3, MAX_FLAT + 1))
    extra, xcorr = dense_flat(rho[None], var, kernel)
    cov = rho * np.sqrt(var)[:, None] * np.sqrt(var)[None, :]
    expected = np.diagonal(kernel.T @ cov @ kernel) - (kernel**2).T @ var
    np.testing.assert_allclose(extra, expected, rtol=1e-12, atol=1e-12)
    assert xcorr is None
    _, small = dense_flat(rho[None], var, kernel[:, :MAX_FLAT])
    assert small.shape == (1, MAX_FLAT, MAX_FLAT)


def test_flattened_correlation_of_many_independent_channels_matches_the_general_rule() -> None:
    # over the channel budget only whole-position offsets (multiples of C) carry correlation;
    # the shortcut equals the general rule given the same (diagonal) correlation
    import autoinit_nas._xcorr as xc

    rng = np.random.default_rng(10)
    var = rng.uniform(0.5, 2.0, (30, 40))
    corr = np.exp(-np.arange(20)[:, None] / rng.uniform(1.0, 4.0, 40))
    general = xc.flattened_corr(var, xc.sequence_xcorr(corr), None)
    budget = xc.MAX_CHANNELS
    try:
        xc.MAX_CHANNELS = 10  # 40 channels now count as many
        shortcut = xc.flattened_corr(var, None, corr)
    finally:
        xc.MAX_CHANNELS = budget
    n = len(shortcut)
    np.testing.assert_allclose(shortcut[:, 0], general[:n, 0], atol=1e-12)


@pytest.mark.parametrize("taps, dilation", [((1,), 1), ((5,), 2), ((3, 3), 1)])
def test_output_variance_past_the_budget_is_the_diagonal_of_the_full_rule(
        taps: tuple[int, ...], dilation: int) -> None:
    # conv_var forms only the inputs' (taps x C)^2 covariance, never the outputs' O x O one
    from autoinit_nas._xcorr import conv_var, lag_zero

    rng = np.random.default_rng(11)
    rank = len(taps)
    size = (40,) if rank == 1 else (8, 8)
    first = rng.standard_normal((3,) * rank + (1, 6))
    xc = correlation_of(conv_xcov(None, None, np.ones(1), first, 1, 1, size, size))
    var_c = rng.uniform(0.5, 2.0, 6)
    w = rng.standard_normal((*taps, 6, 9))
    full = np.diagonal(lag_zero(conv_xcov(xc, None, var_c, w, 1, dilation, size, size)))
    np.testing.assert_allclose(conv_var(xc, None, var_c, w, dilation, size), full, rtol=1e-12)


def test_wide_dense_on_a_sequence_gets_each_units_variance() -> None:
    # Dense(256) after a convolution of a one-channel sequence: the conv's 16 channels are
    # correlated, so each unit's variance w_o^T G w_o differs from unit to unit (coefficient of
    # variation 1.4 here); with the channels taken as independent the predicted pattern
    # correlated 0.2 with the measured one
    from autoinit_nas._context import Options
    from autoinit_nas.autoinit import _walk_plan

    rng = np.random.default_rng(12)
    x = rng.standard_normal((4096, 32, 1)).astype("float32")
    for seed in range(3):
        inp = keras.Input((32, 1))
        model = keras.Model(inp, L.Dense(256, name="wide")(L.Conv1D(16, 5, padding="same")(inp)))
        initialize(model, seed=seed)
        _, _, records = _walk_plan(model, Options(seed=seed), seed, planned={})
        sig = {path: est.outputs[0] for path, op, est in records if est.outputs}["wide"]
        predicted = np.broadcast_to(sig.var, (32, 256))[8:24].mean(axis=0)
        measured = np.asarray(model(x)).var(axis=0)[8:24].mean(axis=0)
        assert np.corrcoef(predicted, measured)[0, 1] > 0.98, seed
        assert np.median(np.abs(predicted / measured - 1.0)) < 0.05, seed


@pytest.mark.parametrize("channels", [8, 16])
def test_layer_norm_over_correlated_channels_keeps_their_centered_correlation(
        channels: int) -> None:
    # LayerNormalization subtracts each position's mean over the channels: the channels'
    # covariance becomes P G P (P = I - 11^T / C), and a head's Dense reads that correlation
    from autoinit_nas._context import Options
    from autoinit_nas.autoinit import _walk_plan

    rng = np.random.default_rng(13)
    x = rng.standard_normal((8192, 64, 1)).astype("float32")
    inp = keras.Input((64, 1))
    h = L.LayerNormalization(name="ln")(L.Conv1D(channels, 5, padding="same")(inp))
    model = keras.Model(inp, h)
    initialize(model, seed=channels)
    _, _, records = _walk_plan(model, Options(seed=channels), channels, planned={})
    sig = {path: est.outputs[0] for path, op, est in records if est.outputs}["ln"]
    y = np.asarray(model(x))[:, 16:48].reshape(-1, channels)
    xc = np.asarray(sig.xcorr)
    err = np.abs(xc[(xc.shape[0] - 1) // 2] - np.corrcoef(y.T))
    assert np.mean(err) < 0.04, np.mean(err)
    predicted = np.broadcast_to(sig.var, (64, channels))[16:48].mean(axis=0)
    assert np.max(np.abs(predicted / y.var(axis=0) - 1.0)) < 0.2


def test_wide_layers_of_one_channel_stay_convolutions_of_it() -> None:
    # Dense(128) on a one-channel sequence: every unit is a_u z, correlated +-1 past the channel
    # budget. The next Dense(128) and a SeparableConv1D are convolutions of z with composed
    # kernels, so their per-channel variances are exact (before: the 128 channels were taken as
    # independent, and the second Dense's units were all predicted alike, pattern correlation
    # 0.1 with the measured)
    from autoinit_nas._context import Options
    from autoinit_nas.autoinit import _walk_plan

    rng = np.random.default_rng(14)
    x = rng.standard_normal((4096, 40, 1)).astype("float32")
    for seed in range(2):
        inp = keras.Input((40, 1))
        h = L.Dense(128, name="second")(L.Dense(128)(L.Conv1D(1, 3, padding="same")(inp)))
        model = keras.Model(inp, L.SeparableConv1D(8, 5, padding="same", name="third")(h))
        initialize(model, seed=seed)
        _, _, records = _walk_plan(model, Options(seed=seed), seed, planned={})
        sig = {path: est.outputs[0] for path, op, est in records if est.outputs}
        sub = keras.Model(inp, [model.get_layer("second").output, model.output])
        for name, y in zip(("second", "third"), sub(x), strict=True):
            y = np.asarray(y)
            predicted = np.broadcast_to(sig[name].var, y.shape[1:])[8:32].mean(axis=0)
            measured = y.var(axis=0)[8:32].mean(axis=0)
            assert np.median(np.abs(predicted / measured - 1.0)) < 0.05, (seed, name)
            assert np.corrcoef(predicted, measured)[0, 1] > 0.98, (seed, name)


def _signals(model: keras.Model, seed: int) -> dict:
    from autoinit_nas._context import Options
    from autoinit_nas.autoinit import _walk_plan

    _, _, records = _walk_plan(model, Options(seed=seed), seed, planned={})
    return {path: est.outputs[0] for path, op, est in records if est.outputs}


@pytest.mark.parametrize("pool, stride", [("avg", 2), ("avg", 1), ("max", 2)])
def test_pooled_windows_keep_the_channels_correlation(pool: str, stride: int) -> None:
    # Dense(24) then a convolution on a one-channel sequence: its channels are correlated. A
    # pooling layer used to drop that (taken as independent after it, a mean error of 0.35 at
    # lag 0); window means keep G_out[d] = sum_m (k - |m|) G[s d + m] / k^2 exactly (edges
    # aside), window maxima the means' covariance plus their spreads' (``pooled_xcorr``).
    x = np.random.default_rng(15).standard_normal((4096, 40, 1)).astype("float32")
    inp = keras.Input((40, 1))
    h = L.Conv1D(24, 3, padding="same", activation="tanh")(L.Dense(24)(inp))
    layer = L.AveragePooling1D if pool == "avg" else L.MaxPooling1D
    model = keras.Model(inp, layer(3, strides=stride, name="pooled")(h))
    initialize(model, seed=0)
    sig = _signals(model, 0)["pooled"]
    y = np.asarray(model(x, training=True))[:, 2:-2]
    k = (sig.xcorr.shape[0] - 1) // 2
    sd = np.sqrt(np.diagonal(_mc_cross_cov(y, 0)))
    for lag in (0, 1):
        measured = _mc_cross_cov(y, lag) / np.outer(sd, sd)
        error = np.abs(sig.xcorr[k + lag] - measured).mean()
        assert error < (0.03 if pool == "avg" else 0.15), (lag, error)


def test_pooling_window_of_one_passes_its_input_through() -> None:
    inp = keras.Input((40, 1))
    h = L.Dense(8)(inp)
    model = keras.Model(inp, L.MaxPooling1D(1, strides=1, name="pooled")(h))
    initialize(model, seed=0)
    sig = _signals(model, 0)
    assert sig["pooled"] is sig[model.layers[1].name]


def test_merged_parts_at_different_offsets_keep_their_links() -> None:
    # A 'same' convolution's link to its fork starts a position early; concatenated with a
    # pointwise branch of the same fork, the merge used to drop both links, so a second
    # Concatenate with the fork took them as independent (cross-block correlation 0 predicted,
    # 0.4 measured) and the logits of a pooled head were 20-40% off.
    x = np.random.default_rng(16).standard_normal((4096, 40, 1)).astype("float32")
    for seed in range(3):
        inp = keras.Input((40, 1))
        fork = L.Dense(8)(L.Conv1D(1, 3, padding="same")(inp))
        first = L.Concatenate()([L.Conv1D(8, 3, padding="same")(fork), L.Conv1D(8, 1)(fork)])
        both = L.Concatenate(name="both")([first, fork])
        h = L.GlobalAveragePooling1D()(L.Activation("softplus")(both))
        model = keras.Model(inp, L.Dense(10, name="logits")(h))
        initialize(model, seed=seed)
        sig = _signals(model, seed)["both"]
        y = np.asarray(keras.Model(inp, both)(x, training=True))
        sd = np.sqrt(np.diagonal(_mc_cross_cov(y, 0)))
        measured = _mc_cross_cov(y, 0) / np.outer(sd, sd)
        k = (sig.xcorr.shape[0] - 1) // 2
        block = np.abs(sig.xcorr[k][:8, 16:] - measured[:8, 16:]).mean()
        assert block < 0.03, (seed, block)
        assert abs(_logit_ratio(model, x, seed) - 1.0) < 0.05, seed


def test_wide_layers_of_few_channels_stay_convolutions_of_them() -> None:
    # Dense(128) on 8 channels is past the channel budget, but every unit is a combination of
    # the same 8: kept as an image of them, the next Dense(48) is one convolution of the 8 with
    # the composed kernel, so its channels' correlation (and the pooled head's w^T C w) is exact.
    # Taken as independent, the logits were up to 2x off.
    x = np.random.default_rng(17).standard_normal((4096, 40, 1)).astype("float32")
    ratios = []
    for seed in range(4):
        inp = keras.Input((40, 1))
        h = L.Conv1D(8, 3, padding="same", activation="tanh")(inp)
        h = L.Dense(48)(L.Dense(128)(L.BatchNormalization()(h)))
        h = L.GlobalAveragePooling1D()(h)
        model = keras.Model(inp, L.Dense(10, name="logits")(h))
        ratios.append(_logit_ratio(model, x, seed))
    assert max(abs(r - 1.0) for r in ratios) < 0.05, ratios


@pytest.mark.parametrize("wide", [128, 256])
def test_a_wide_pooled_head_keeps_its_channels_correlation(wide: int) -> None:
    # Dense(128 or 256) on 16 correlated channels (a convolution of a selu of one): past the
    # channel budget, so the map's correlation is not tracked, but its position sum's is
    # (K^T S K from the 16 channels' S), and the pooled head keeps it as a flat vector's: the
    # logits' w^T C w. Taken as independent features the logits were 0.35-0.6x.
    x = np.random.default_rng(5).standard_normal((4096, 40, 1)).astype("float32")
    ratios = []
    for seed in range(3):
        inp = keras.Input((40, 1))
        h = L.Conv1D(16, 5, padding="same", activation="selu")(inp)
        h = L.Dense(wide)(L.Dense(16)(L.Conv1D(32, 5, padding="same")(h)))
        h = L.GlobalAveragePooling1D()(h)
        model = keras.Model(inp, L.Dense(10, name="logits")(h))
        ratios.append(_logit_ratio(model, x, seed))
    assert max(abs(r - 1.0) for r in ratios) < 0.06, ratios


@pytest.mark.parametrize("units, then", [(32, None), (32, "abs"), (16, "tanh")])
def test_units_of_a_dense_on_independent_features_covary(units: int, then: str | None) -> None:
    # Dense of one feature: every unit is w_u m, all +-1 correlated, whatever the input; laid
    # out and averaged, taken as independent units: measured 0.20, 18.8 and 0.022 of predicted
    keras.utils.set_random_seed(0)
    x = keras.Input((40, 1))
    s = L.Reshape((units, 1))(L.Dense(units)(L.GlobalAveragePooling1D()(x)))
    if then is not None:
        s = L.Activation(keras.ops.abs if then == "abs" else then)(s)
    model = keras.Model(x, L.GlobalAveragePooling1D()(s))
    report = initialize(model, seed=0).measure(model, samples=4096, seed=1)
    last = report.layers[-1]
    assert last.measured_var == pytest.approx(last.var, rel=0.1)


def test_border_positions_of_padded_convolutions_get_their_own_correlated_variance() -> None:
    # The cross terms of correlated inputs were added alike at every position: at the border
    # a window lacks some taps, and its elements there have a variance of their own. Three
    # 'same' convolutions in a row (after a smoothing average or a first conv) were up to 0.61x
    # and 1.40x the measured variance at the first and last positions; each border position now
    # works out its terms from its own receptive field (border_var)
    x = np.random.default_rng(1).standard_normal((8192, 40, 1)).astype("float32")
    border = [0, 1, 2, 37, 38, 39]
    errors = []
    for seed in range(3):
        for first in ("avg", "conv"):
            inp = keras.Input((40, 1))
            h = (L.AveragePooling1D(3, strides=1, padding="same")(inp) if first == "avg"
                 else L.Conv1D(8, 3, padding="same")(inp))
            h = L.Conv1D(16, 3, padding="same")(h)
            model = keras.Model(inp, L.Conv1D(16, 5, padding="same", name="last")(h))
            initialize(model, seed=seed)
            predicted = np.broadcast_to(_signals(model, seed)["last"].var, (40, 16)).mean(-1)
            measured = np.asarray(model(x)).var(axis=0).mean(-1)
            errors.append(np.abs(predicted[border] / measured[border] - 1.0))
    errors = np.array(errors)
    assert float(np.mean(errors)) < 0.06, np.round(errors, 3)
    assert float(np.max(errors)) < 0.3, np.round(errors, 3)
