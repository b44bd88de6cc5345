"""Merges of inputs related through a fork (``_links.py``): predicted against measured."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest

from autoinit_nas import _links, initialize
from autoinit_nas._context import Options
from autoinit_nas.autoinit import _walk_plan
from autoinit_nas.errors import SignalError
from autoinit_nas.weighted_add import WeightedAdd

L = keras.layers


def _conv(x: keras.KerasTensor, k: int = 3, strides: int = 1) -> keras.KerasTensor:
    return L.Conv1D(8, k, strides=strides, padding="same")(x)


# Each model ends with a merge whose inputs share an ancestor. Treated as independent (the rule
# before links) the merge's measured variance was 1.58x, 1.99x, 1.05x, ... the prediction.
MERGES: dict[str, Callable[[keras.KerasTensor], keras.KerasTensor]] = {
    "x + avgpool(x)": lambda x: WeightedAdd()([x, L.AveragePooling1D(3, 1, padding="same")(x)]),
    "h + batchnorm(h)": lambda x: (lambda h: WeightedAdd()([h, L.BatchNormalization()(h)]))(
        _conv(x)),
    "x + conv(relu(conv(x)))": lambda x: WeightedAdd()(
        [x, _conv(L.Activation("relu")(_conv(x)))]),
    "x + tanh(x) through a 1x1 conv": lambda x: WeightedAdd()(
        [x, L.Activation("tanh")(_conv(x, k=1))]),
    "avgpool(x) + maxpool(conv(x)), stride 2": lambda x: WeightedAdd()(
        [L.AveragePooling1D(2)(x), L.MaxPooling1D(2)(_conv(x))]),
    "strided conv + pooled skip": lambda x: WeightedAdd()(
        [L.AveragePooling1D(2)(x), _conv(x, k=5, strides=2)]),
    "separable + depthwise branches": lambda x: WeightedAdd()(
        [L.SeparableConv1D(8, 3, padding="same")(x), L.DepthwiseConv1D(3, padding="same")(x)]),
    "concat(x, conv(x)) -> dense": lambda x: L.Dense(4)(L.GlobalAveragePooling1D()(
        L.Concatenate()([x, _conv(x, k=1)]))),
    "keras Add: x + avgpool(x)": lambda x: L.Add()(
        [x, L.AveragePooling1D(3, 1, padding="same")(x)]),
    "keras Average: x and a causal conv of x": lambda x: L.Average()(
        [x, L.Conv1D(8, 3, padding="causal")(x)]),
    # centered over the channels at each position: taken as unrelated, measured 1.81x
    "relu(h) + layernorm(relu(h))": lambda x: (lambda h: WeightedAdd()(
        [h, L.LayerNormalization()(h)]))(L.Activation("relu")(_conv(x))),
    # a skip around a pooled fork, added to that fork again: the skip's sum is related to the
    # fork through the input before it too (links only from the fork: measured 1.21x)
    "(x + avgpool(x)) + avgpool(x)": lambda x: (lambda p: WeightedAdd()(
        [WeightedAdd()([p, x]), p]))(L.AveragePooling1D(3, 1, padding="same")(x)),
    # flat vectors that globally pool related sequences
    "concat(GAP(x), GAP(conv(x))) -> dense": lambda x: L.Dense(4)(L.Concatenate()(
        [L.GlobalAveragePooling1D()(x), L.GlobalAveragePooling1D()(_conv(x))])),
    "GAP(x) + GAP(avgpool(x))": lambda x: WeightedAdd()(
        [L.GlobalAveragePooling1D()(x),
         L.GlobalAveragePooling1D()(L.AveragePooling1D(3, 1, padding="same")(x))]),
}


@pytest.mark.parametrize("name", list(MERGES))
def test_a_merge_of_related_inputs_is_predicted(name: str) -> None:
    keras.utils.set_random_seed(0)
    x = keras.Input((40, 8))
    model = keras.Model(x, MERGES[name](x))
    report = initialize(model, seed=0).measure(model, samples=4096, seed=1)
    last = report.layers[-1]
    assert last.measured_var == pytest.approx(last.var, rel=0.06), name


def _signals(model: keras.Model) -> tuple[dict[str, object], object]:
    _, ctx, records = _walk_plan(model, Options(seed=0), 0)
    return {path: est.outputs[0] for path, _, est in records}, ctx


def test_the_cross_covariance_with_the_fork_itself_is_the_link() -> None:
    x = keras.Input((24, 4))
    h = L.Conv1D(4, 3, padding="same", name="h")(x)  # h is read by two layers: a fork
    branch = L.Conv1D(4, 5, padding="same", name="branch")(L.Activation("tanh", name="a")(h))
    model = keras.Model(x, WeightedAdd(name="add")([h, branch]))
    sig, ctx = _signals(model)
    key = _links.common_fork(ctx, sig["branch"], sig["h"])
    assert key is not None
    link = _links.links_of(ctx, sig["branch"])[key]
    got = _links.cross_cov(ctx, sig["branch"], sig["h"], 6)  # Cov(branch[p], h[p + e])
    want = np.zeros_like(got)
    for e in range(-6, 7):  # Cov(branch[p], h[p + e]) = X[e - o] (r = 1)
        d = e - link.o
        if link.lo <= d <= link.hi:
            want[e + 6] = link.x[d - link.lo]
    np.testing.assert_allclose(got, want, atol=1e-9 * np.max(np.abs(want)))
    # the general route (by FFT, through the fork's inverse spectrum) gives the same
    root = ctx.roots[key]
    ctx.roots[key] = _links.Root(root.cov, root.length, _links.Link(root.cov, -1, 1, 0))
    ctx.link_memo.clear()
    general = _links.cross_cov(ctx, sig["branch"], sig["h"], 6)
    np.testing.assert_allclose(general, want, atol=1e-6 * np.max(np.abs(want)))


def test_inputs_of_separate_model_inputs_share_no_fork() -> None:
    x1, x2 = keras.Input((24, 4)), keras.Input((24, 4))
    a = L.Conv1D(4, 3, padding="same", name="a")(x1)
    b = L.Conv1D(4, 3, padding="same", name="b")(x2)
    model = keras.Model([x1, x2], WeightedAdd(name="add")([a, b]))
    sig, ctx = _signals(model)
    assert _links.common_fork(ctx, sig["a"], sig["b"]) is None
    assert _links.cross_cov(ctx, sig["a"], sig["b"], 3) is None


@pytest.mark.parametrize("channels", [1, 3])
def test_a_white_forks_cross_covariance_summed_directly_equals_the_spectral_rule(
        channels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # the network input is a fork with independent positions: its branches' cross-covariance
    # is summed over lags with S_0^-1 once; the per-frequency solve gives the same
    def cross(direct: bool) -> np.ndarray:
        monkeypatch.setattr(_links, "_DIRECT_BUDGET", 1 << 21 if direct else -1)
        keras.utils.set_random_seed(0)
        x = keras.Input((40, channels))
        a = _conv(L.Activation("tanh")(_conv(x, k=5)))
        b = L.AveragePooling1D(3, 1, padding="same")(_conv(x, k=3))
        model = keras.Model(x, WeightedAdd()([a, b]))
        signals, ctx = _signals(model)
        inputs = [signals[t._keras_history[0].name] for t in model.layers[-1].input]
        return _links.cross_cov(ctx, inputs[0], inputs[1], 6)

    direct, spectral = cross(True), cross(False)
    assert np.max(np.abs(direct)) > 1e-3  # related branches
    np.testing.assert_allclose(direct, spectral, rtol=0, atol=1e-10 * np.max(np.abs(spectral)))


# A layer's own activation (Dense(..., activation=f), the usual Keras style) must scale the links
# as an Activation layer does. Taken as linear, the merges below measured 0.956-0.974 of the
# prediction.
FUSED = {
    "tanh": lambda x, act: L.Conv1D(8, 1, padding="same", activation=act)(x),
    "relu": lambda x, act: L.Conv1D(8, 3, padding="same", activation=act)(x),
    "gelu": lambda x, act: L.Dense(8, activation=act)(x),
}


@pytest.mark.parametrize("act", list(FUSED))
def test_a_layer_with_its_own_activation_links_as_a_separate_activation(act: str) -> None:
    def branch(x: keras.KerasTensor, fused: bool) -> keras.KerasTensor:
        if fused:
            return FUSED[act](x, act)
        return L.Activation(act)(FUSED[act](x, None))

    predicted, measured = [], []
    for fused in (False, True):
        keras.utils.set_random_seed(0)
        x = keras.Input((40, 8))
        model = keras.Model(x, WeightedAdd()([x, branch(x, fused)]))
        report = initialize(model, seed=0).measure(model, samples=4096, seed=1)
        predicted.append(report.layers[-1].var)
        measured.append(report.layers[-1].measured_var)
    assert predicted[1] == pytest.approx(predicted[0], rel=1e-9)
    assert measured[1] == pytest.approx(measured[0], rel=1e-6)  # the same weights
    assert measured[1] == pytest.approx(predicted[1], rel=0.02)


def test_inputs_that_cancel_are_refused_with_a_reason() -> None:
    x = keras.Input((16, 1))
    y = L.Activation("elu")(x)
    neg = L.Conv1D(1, 1, use_bias=False)(y)
    model = keras.Model(x, WeightedAdd()([y, neg]))
    # a frozen weight of -1: the branch is exactly -y, and the sum is 0 whatever the scale
    model.layers[2].trainable = False
    model.layers[2].kernel.assign(-np.ones((1, 1, 1)))
    with pytest.raises(SignalError, match="inputs cancel"):
        initialize(model, seed=0)


def test_pooling_independent_positions_correlates_overlapping_windows() -> None:
    # a window mean of white positions: neighbours share 2 of 3 values, so the global mean of
    # the pooled sequence keeps the input mean's variance (1/40), not a third of it
    x = keras.Input((40, 8))
    pooled = L.AveragePooling1D(3, 1, padding="same")(x)
    model = keras.Model(x, L.GlobalAveragePooling1D()(pooled))
    report = initialize(model, seed=0).measure(model, samples=4096, seed=1)
    assert report.layers[-1].var == pytest.approx(1 / 40, rel=0.05)
    assert report.layers[-1].measured_var == pytest.approx(report.layers[-1].var, rel=0.06)


# A few input channels spread over more channels than are correlated (MAX_CHANNELS): the head's
# pooled vector has rank 1-3, and a Dense after it is far from its independent-channels sum.
# Without the position sums' covariance (wide merges dropped it) the logits measured 0.75x,
# 0.88x and 1.23x the prediction.
WIDE: dict[str, Callable[[keras.KerasTensor], keras.KerasTensor]] = {
    "dense(avgpool(x)) + avgpool(dense(x))": lambda x: WeightedAdd()(
        [L.Dense(200)(L.AveragePooling1D(2)(x)), L.AveragePooling1D(2)(L.Dense(200)(x))]),
    "avgpool(dense(x)) + dense(tanh(maxpool(x)))": lambda x: WeightedAdd()(
        [L.AveragePooling1D(2)(L.Dense(256)(x)),
         L.Dense(256)(L.Activation("tanh")(L.MaxPooling1D(2)(x)))]),
    "concat(dense(conv(x)), avgpool(x))": lambda x: L.Concatenate()(
        [L.Dense(128)(L.Conv1D(16, 5, padding="same")(x)), L.AveragePooling1D(3, 1, "same")(x)]),
}


@pytest.mark.parametrize("name", list(WIDE))
def test_a_wide_merge_keeps_its_position_sums_covariance_for_the_head(name: str) -> None:
    keras.utils.set_random_seed(0)
    x = keras.Input((40, 1))
    head = L.GlobalAveragePooling1D()(WIDE[name](x))
    model = keras.Model(x, L.Dense(10, name="logits")(head))
    report = initialize(model, seed=0).measure(model, samples=4096, seed=1)
    last = report.layers[-1]
    assert last.measured_var == pytest.approx(last.var, rel=0.1), name
