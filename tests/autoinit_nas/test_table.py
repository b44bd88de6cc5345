"""Maps whose channels are all functions of one variable per position (``meta['table']``).

A Dense layer on a one-channel sequence makes every unit a function of the one value at its
position; activations, more Dense layers and batch normalization keep that. The walk then keeps
the joint distribution of a position's channels (a table over the variable's discrete values),
which gives the channels' exact covariance past the 96-channel budget, the exact shape of each
unit for a maximum, and a point mass (relu's zeros) in its place for a division.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from autoinit_nas import initialize
from autoinit_nas.parametric_activation import ParametricActivation

L = keras.layers


def _signals(model: keras.Model, seed: int) -> dict:
    from autoinit_nas._context import Options
    from autoinit_nas.autoinit import _walk_plan

    _, _, records = _walk_plan(model, Options(seed=seed), seed, planned={})
    return {path: est.outputs[0] for path, op, est in records if est.outputs}


def _measured(model: keras.Model, names: list[str], samples: int = 4096) -> list[np.ndarray]:
    x = np.random.default_rng(3).standard_normal((samples, 40, 1)).astype("float32")
    sub = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = sub(x, training=True)
    return [np.asarray(y, float) for y in (outs if isinstance(outs, list) else [outs])]


@pytest.mark.parametrize("seed", [0, 1])
def test_wide_functions_of_one_channel_keep_their_covariance_to_the_logits(seed: int) -> None:
    # 100 units of one value, a function of them, a Dense(32), Dense(100), two functions and a
    # batch normalization: every channel is a function of the input's value at the position,
    # and past the channel budget they were taken as independent. The pooled head's channels
    # then covary at |0.5-0.8| and the logits measured 0.29x the prediction (genome 321).
    inp = keras.Input((40, 1))
    h = ParametricActivation("alpha*tanh(beta*x) + gamma*x")(L.Dense(100)(inp))
    h = L.Dense(100)(L.Dense(32)(h))
    h = L.BatchNormalization()(L.Activation("swish")(L.Activation("relu")(h)))
    head = L.GlobalAveragePooling1D(name="head")(h)
    model = keras.Model(inp, L.Dense(10, name="logits")(head))
    report = initialize(model, seed=seed)
    predicted = {e["name"]: e["var"] for e in report.to_dict()["layers"]}
    (logits,) = _measured(model, ["logits"])
    assert logits.var(axis=0).mean() / predicted["logits"] == pytest.approx(1.0, abs=0.15)


def test_a_point_mass_stays_at_zero_for_a_division() -> None:
    # relu's zeros through a Dense without bias stay exactly 0, where elu(x)/x (the safe
    # division: 0 at 0, 1 just above) jumps. Matching the units' moments put them at 0.005,
    # where the function is 0.83, and the variance after it was 0.04x the measured (genome 462)
    inp = keras.Input((40, 1))
    h = L.Dense(16, use_bias=False, name="dense")(L.Activation("relu")(inp))
    h = ParametricActivation("elu(x)/x", name="div")(h)
    model = keras.Model(inp, L.GlobalAveragePooling1D(name="head")(L.Dense(16, name="mix")(h)))
    initialize(model, seed=0)
    sig = _signals(model, 0)
    for name, y in zip(("div", "mix", "head"), _measured(model, ["div", "mix", "head"]),
                       strict=True):
        predicted = np.broadcast_to(sig[name].var, y.shape[1:])
        predicted = predicted.reshape(-1, predicted.shape[-1]).mean(axis=0)
        measured = y.var(axis=0).reshape(-1, y.shape[-1]).mean(axis=0)
        assert np.median(np.abs(predicted / measured - 1.0)) < 0.1, name


def test_convolution_over_wide_functions_of_one_channel_is_exact() -> None:
    # A Conv1D over 100 channels that are functions of one white value per position: its taps
    # see independent positions, each with the table's covariance between channels
    inp = keras.Input((40, 1))
    h = L.Activation("gelu")(L.Dense(100)(inp))
    model = keras.Model(inp, L.Conv1D(8, 5, padding="valid", name="conv")(h))
    initialize(model, seed=2)
    sig = _signals(model, 2)
    (y,) = _measured(model, ["conv"])
    predicted = np.broadcast_to(sig["conv"].var, y.shape[1:]).mean(axis=0)
    measured = y.var(axis=0).mean(axis=0)
    assert np.max(np.abs(predicted / measured - 1.0)) < 0.08


@pytest.mark.parametrize("first", ["conv", "separable"])
def test_layer_norm_of_one_variable_is_a_sign(first: str) -> None:
    # A one-tap Conv1D (or a SeparableConv1D's pointwise step) of one channel makes every unit
    # w_u z; normalizing them over the channels leaves sign(z) times a fixed vector (softened
    # by epsilon), and the maximum over 40 positions hardly varies: relative variance ~1e-8,
    # predicted 1e-4 as a Gaussian's maximum corrected by the table's (genomes 630 and 742)
    inp = keras.Input((40, 1))
    h = (L.Conv1D(16, 1) if first == "conv" else L.SeparableConv1D(32, 7, padding="same"))(inp)
    h = L.LayerNormalization(name="ln")(L.Dense(64)(h))
    h = L.BatchNormalization()(L.Dense(64)(h))
    model = keras.Model(inp, L.GlobalMaxPooling1D(name="head")(h))
    initialize(model, seed=630)
    sig = _signals(model, 630)
    for name, y in zip(("ln", "head"), _measured(model, ["ln", "head"]), strict=True):
        ratio = y.var(axis=0).mean() / np.mean(sig[name].var)
        assert ratio == pytest.approx(1.0, abs=0.05 if name == "ln" else 0.3), name


def _per_channel(model: keras.Model, names: list[str], seed: int) -> list[tuple]:
    """(predicted, measured) per-channel variances of the layers ``names``."""
    sig = _signals(model, seed)
    out = []
    for name, y in zip(names, _measured(model, names), strict=True):
        predicted = np.broadcast_to(sig[name].var, y.shape[1:])
        predicted = predicted.reshape(-1, predicted.shape[-1]).mean(axis=0)
        out.append((predicted, y.var(axis=0).reshape(-1, y.shape[-1]).mean(axis=0)))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_a_sum_of_branches_over_one_variable_is_exact(seed: int) -> None:
    # u (Dense on one channel, normalized) and BatchNormalization(hard_silu(u)) are functions
    # of the same value at each position: their sum covaries by the table, and so does the
    # hard_silu after it. Taken as independent the sum was predicted at half its variance and
    # the function after it 1.5x off (genome 892)
    inp = keras.Input((40, 1))
    u = L.BatchNormalization()(L.Dense(100)(inp))
    b = L.BatchNormalization()(L.Activation("hard_silu")(u))
    from autoinit_nas import WeightedAdd

    s = WeightedAdd(name="sum")([b, u])
    model = keras.Model(inp, L.Activation("hard_silu", name="after")(s))
    initialize(model, seed=seed)
    for name, (predicted, measured) in zip(("sum", "after"),
                                           _per_channel(model, ["sum", "after"], seed),
                                           strict=True):
        assert np.median(np.abs(predicted / measured - 1.0)) < 0.05, name
        assert predicted.mean() / measured.mean() == pytest.approx(1.0, abs=0.05), name


def test_a_separable_convolution_over_wide_functions_of_one_channel_is_exact() -> None:
    # 128 channels (past the budget) that are functions of one value per position, through a
    # one-tap SeparableConv1D: each output channel's variance comes from the table's covariance
    # (it was taken as if the channels were independent: 0.03-0.16 measured, all ~0.07
    # predicted; genome 976)
    inp = keras.Input((40, 1))
    h = L.Activation("softsign")(L.Dense(128)(inp))
    h = L.Dense(128)(L.Dense(64)(h))
    model = keras.Model(inp, L.SeparableConv1D(8, 1, name="sep")(h))
    initialize(model, seed=3)
    ((predicted, measured),) = _per_channel(model, ["sep"], 3)
    assert np.max(np.abs(predicted / measured - 1.0)) < 0.05


def test_a_concatenation_with_the_variable_itself_keeps_the_table() -> None:
    # 100 functions of one value beside that value (a skip of the one-channel input, as the
    # builder concatenates it): the 101 channels are past the budget, and only the joint table
    # gives the Dense after them each unit's variance (genome 442's first layers)
    inp = keras.Input((40, 1))
    a = L.Activation("gelu")(inp)
    b = L.Activation("tanh")(L.Dense(100)(a))
    h = L.Concatenate()([b, a])
    model = keras.Model(inp, L.Dense(8, name="mix")(h))
    initialize(model, seed=4)
    ((predicted, measured),) = _per_channel(model, ["mix"], 4)
    assert np.max(np.abs(predicted / measured - 1.0)) < 0.05


def test_global_max_over_a_laid_out_table_reads_its_tails() -> None:
    # Genome 752's head: every unit a function of one value per position, laid out as one
    # channel, a 1x1 convolution, batch normalization, relu6 and a global max over the 640
    # positions. The positions are uneven (each is one of 16 units), and the max of Gaussians
    # at their moments missed the table's heavy tail (kurtosis ~15): the head measured 2.26x
    # its prediction here, genome 752's max 4.4x
    inp = keras.Input((40, 1))
    h = L.Dense(16)(L.Activation("hard_silu")(L.Dense(16)(inp)))
    h = L.Reshape((640, 1))(L.Flatten()(h))
    h = L.Activation("relu6")(L.BatchNormalization()(L.Conv1D(64, 1)(h)))
    head = L.GlobalMaxPooling1D(name="head")(L.BatchNormalization()(h))
    model = keras.Model(inp, L.Dense(10, name="logits")(head))
    report = initialize(model, seed=0)
    predicted = {e["name"]: e["var"] for e in report.to_dict()["layers"]}
    head_out, logits = _measured(model, ["head", "logits"])
    assert head_out.var() / predicted["head"] == pytest.approx(1.0, abs=0.4)
    assert logits.var() / predicted["logits"] == pytest.approx(1.0, abs=0.3)
