import math
import subprocess
import sys

import keras
import numpy as np
import pytest

from autoinit_nas import (
    AutoInit,
    AutoInitCallback,
    AutoInitError,
    Estimate,
    SignalError,
    UnsupportedLayerError,
    WeightedAdd,
    initialize,
    register_estimator,
)

L = keras.layers


def dense_after(act, fan_in=100, **opts):
    inp = keras.Input((fan_in,))
    h = L.Activation(act)(inp) if act else inp
    model = keras.Model(inp, L.Dense(50)(h))
    return initialize(model, mode="expected", seed=0, **opts).to_dict()["layers"][-1]["weight_std"]


@pytest.mark.parametrize("act,want", [("relu", 0.141421), ("tanh", 0.159254),
                                      ("sigmoid", 0.184623), ("selu", 0.1)])
def test_dense_weight_std_after_activation(act, want):
    assert dense_after(act) == pytest.approx(want, abs=1e-6)


def test_first_dense_with_nonzero_input_mean():
    assert dense_after(None, input_mean=0.5, input_var=1.0) == pytest.approx(0.089443, abs=1e-6)


def test_depthwise_fan_in_is_kernel_size_only():
    inp = keras.Input((8, 8, 4))
    model = keras.Model(inp, L.DepthwiseConv2D(3)(inp))
    report = initialize(model, mode="expected", seed=0)
    assert report.layers[-1].weight_std == pytest.approx(1 / 3, abs=1e-9)


def small_cnn(act="relu"):
    inp = keras.Input((16, 16, 3))
    h = L.Conv2D(24, 3, padding="same", activation=act)(inp)
    h = L.Conv2D(24, 3, strides=2, padding="same")(h)
    h = L.Activation(act)(h)
    h = L.MaxPooling2D()(h)
    h = L.Dropout(0.3)(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inp, L.Dense(10)(h))


def test_realized_mode_scales_every_kernel_to_the_exact_target():
    model = small_cnn()
    report = initialize(model, seed=3, signal_variance=2.0)
    conv = [entry for entry in report.layers if entry.class_name == "Conv2D"]
    # fused relu after the first conv: its pre-activation is exact, so check the second conv
    assert [entry.var for entry in report.layers if entry.name.startswith("conv2d") and entry.class_name == "Conv2D"]
    assert report.layers[1].var == pytest.approx(2.0, rel=1e-9)
    assert conv[0].weight_std > 0
    report.measure(model, samples=256, seed=0)
    errors = report.errors()
    assert np.median(errors) < 0.08, report.table()


def test_same_seed_same_weights_other_seed_other_weights():
    a, b = small_cnn(), small_cnn()
    initialize(a, seed=7)
    initialize(b, seed=7)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    initialize(b, seed=8)
    assert not np.array_equal(a.get_weights()[0], b.get_weights()[0])


@pytest.mark.parametrize("dist", ["truncated_normal", "normal", "uniform", "orthogonal"])
def test_distributions_have_the_planned_std(dist):
    inp = keras.Input((400,))
    model = keras.Model(inp, L.Dense(400)(inp))
    report = initialize(model, mode="expected", distribution=dist, seed=0)
    kernel = model.get_weights()[0]
    assert kernel.std() == pytest.approx(report.layers[0].weight_std, rel=0.01)
    assert report.layers[0].weight_std == pytest.approx(1 / 20, rel=1e-9)


def test_frozen_layers_keep_their_weights_and_propagate_them():
    inp = keras.Input((20,))
    frozen = L.Dense(20, name="frozen")
    h = frozen(inp)
    model = keras.Model(inp, L.Dense(5)(h))
    frozen.set_weights([np.eye(20, dtype="float32") * 3.0, np.zeros(20, "float32")])
    frozen.trainable = False
    report = initialize(model, seed=0)
    np.testing.assert_array_equal(frozen.get_weights()[0], np.eye(20) * 3.0)
    assert report.layers[0].var == pytest.approx(9.0, rel=1e-6)
    assert report.layers[1].var == pytest.approx(1.0, rel=1e-6)


def test_nested_shared_multi_input_multi_output_and_ops():
    block = keras.Sequential([keras.Input((8,)), L.Dense(8, activation="tanh"), L.Dense(8)], name="block")
    a, b = keras.Input((8,), name="a"), keras.Input((8,), name="b")
    shared = L.Dense(8, name="shared")
    ha, hb = shared(a), shared(b)
    x = keras.ops.relu(ha) + keras.ops.multiply(hb, 2.0)
    out1 = block(x)
    out2 = L.Concatenate()([ha, hb])
    model = keras.Model([a, b], [out1, out2])
    report = initialize(model, seed=0, input_var=[1.0, 4.0])
    names = [entry.name for entry in report.layers]
    assert names.count("shared") == 2
    assert "block/" + block.layers[0].name in names
    assert not report.warnings
    report.measure(model, samples=2048, seed=1)
    assert np.median(report.errors()) < 0.1, report.table()


def test_sequential_model_works_and_unbuilt_sequential_errors():
    model = keras.Sequential([keras.Input((10,)), L.Dense(10, activation="relu"), L.Dense(3)])
    report = initialize(model, seed=0)
    assert [entry.class_name for entry in report.layers] == ["Dense", "Dense"]
    with pytest.raises(AutoInitError, match="no input shape"):
        initialize(keras.Sequential([L.Dense(3)]))


def test_bad_inputs_give_clear_errors():
    with pytest.raises(TypeError, match="Expected a keras.Model"):
        initialize("not a model")

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3)))
    with pytest.raises(AutoInitError, match="subclassed"):
        initialize(sub)
    model = small_cnn()
    with pytest.raises(SignalError, match="input_var"):
        initialize(model, input_var=float("nan"))
    with pytest.raises(SignalError, match="input_var"):
        initialize(model, input_var=-1.0)


def test_zero_second_moment_names_the_layer():
    inp = keras.Input((10,))
    h = L.Activation(lambda x: x * 0.0)(inp)
    model = keras.Model(inp, L.Dense(4, name="after_zero")(h))
    with pytest.raises(SignalError, match="after_zero.*second moment"):
        initialize(model, seed=0)


def test_constant_input_names_the_layer():
    # E[x^2] = 1 but no variance: no weight scale gives the next layer's output variance 1
    inp = keras.Input((10,))
    h = L.Activation(lambda x: x * 0.0 + 1.0)(inp)
    model = keras.Model(inp, L.Dense(4, name="after_one")(h))
    with pytest.raises(SignalError, match="after_one.*predicted constant"):
        initialize(model, seed=0)


class Doubler(L.Layer):
    def call(self, x):
        return 2.0 * x


def test_unknown_layer_is_probed_with_a_warning():
    inp = keras.Input((50,))
    model = keras.Model(inp, L.Dense(5)(Doubler(name="doubler")(inp)))
    with pytest.warns(UserWarning, match="doubler.*register_estimator"):
        report = initialize(model, seed=0)
    assert report.layers[0].var == pytest.approx(4.0, rel=0.1)
    with pytest.raises(UnsupportedLayerError, match="Doubler"):
        initialize(model, seed=0, unknown_layers="raise")


def test_register_estimator_walks_the_mro_and_rejects_duplicates():
    class Tripler(L.Layer):
        def call(self, x):
            return 3.0 * x

    class SubTripler(Tripler):
        pass

    @register_estimator(Tripler)
    def _tripler(layer, inputs, ctx, node):
        x = inputs[0]
        return Estimate([x.like(3 * x.mean, 9 * x.var)])

    inp = keras.Input((4,))
    model = keras.Model(inp, L.Dense(2)(SubTripler()(inp)))
    report = initialize(model, seed=0)
    assert report.layers[0].var == pytest.approx(9.0)
    with pytest.raises(ValueError, match="already registered"):
        register_estimator(Tripler)(_tripler)


def resnet_like(blocks=6, add=L.Add):
    inp = keras.Input((8, 8, 8))
    h = L.Conv2D(8, 3, padding="same")(inp)
    for _ in range(blocks):
        r = L.Conv2D(8, 3, padding="same", activation="relu")(h)
        r = L.Conv2D(8, 3, padding="same")(r)
        h = add()([h, r])
    return keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(h)))


def test_weighted_add_keeps_unit_variance_and_rewrite_replaces_add():
    plain = resnet_like()
    rep = initialize(plain, seed=0)
    adds = [entry.var for entry in rep.layers if entry.class_name == "Add"]
    assert adds[-1] > 5  # variance grows with depth without WeightedAdd
    rewritten = AutoInit(seed=0, rewrite_residuals=True).initialize_model(plain)
    assert rewritten is not plain
    assert not any(type(entry) is L.Add for entry in rewritten.layers)
    rep = initialize(rewritten, seed=0).measure(rewritten, samples=256)
    wadds = [entry for entry in rep.layers if entry.class_name == "WeightedAdd"]
    assert wadds[-1].var == pytest.approx(1.0, rel=1e-6)
    assert 0.5 < wadds[-1].measured_var < 2.0


def _correlated_merges():
    inp = keras.Input((512,))
    x = L.Dense(512, name="x")(inp)
    added = L.Add(name="x_plus_relu")([x, L.Activation("relu")(x)])
    diff = L.Subtract(name="tanh_minus_x")([L.Activation("tanh")(x), x])
    weighted = WeightedAdd(name="weighted")(
        [L.Activation("tanh")(x), L.Activation("sigmoid")(x), x]
    )
    return keras.Model(inp, [added, diff, weighted])


@pytest.mark.parametrize("mode", ["expected", "realized"])
def test_merges_of_functions_of_one_tensor_are_exact(mode):
    """x + relu(x) has variance 2.5 - 1/(2 pi) for unit x, not the 1.5 of independent inputs."""
    from scipy import integrate

    model = _correlated_merges()
    rep = initialize(model, seed=0, mode=mode).measure(model, samples=2048, seed=1)
    by_name = {entry.name: entry for entry in rep.layers}
    x_var = by_name["x"].var
    assert x_var == pytest.approx(1.0, rel=1e-6)
    assert by_name["x_plus_relu"].var == pytest.approx(2.5 - 1 / (2 * math.pi), rel=2e-3)
    pdf = lambda t: math.exp(-t * t / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    e2 = integrate.quad(lambda t: (math.tanh(t) - t) ** 2 * pdf(t), -12, 12)[0]
    assert by_name["tanh_minus_x"].var == pytest.approx(e2, rel=2e-3)  # mean 0 by symmetry
    assert by_name["weighted"].var == pytest.approx(1.0, rel=1e-6)
    for name in ("x_plus_relu", "tanh_minus_x", "weighted"):
        entry = by_name[name]
        assert entry.measured_var == pytest.approx(entry.var, rel=0.05), name


def test_weighted_add_and_model_reload_without_custom_objects(tmp_path):
    model = resnet_like(2, add=WeightedAdd)
    initialize(model, seed=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 8)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-6)


def test_initialize_model_returns_same_object_and_report():
    model = small_cnn()
    ai = AutoInit(seed=1, mode="expected")
    assert ai.initialize_model(model) is model
    d = ai.report.to_dict()
    assert set(d["layers"][0]) >= {"name", "class", "mean", "var", "weight_std"}
    assert d["layers"][0]["class"] == "Conv2D"
    assert any(layer["weight_std"] is None for layer in d["layers"])


def test_callback_initializes_at_train_begin():
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((8, 16, 16, 3)).astype("float32")
    y = np.zeros(8, dtype="int32")
    twin = small_cnn()
    initialize(twin, seed=5)
    cb = AutoInitCallback(seed=5)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb], shuffle=False)
    assert model.signal_report is cb.report
    # one step of Adam moves weights by at most ~lr: they must be the AutoInit ones
    assert np.abs(model.get_weights()[0] - twin.get_weights()[0]).max() < 2e-3


def test_activations_everywhere_give_finite_moments():
    acts = ["relu", "tanh", "sigmoid", "selu", "elu", "gelu", "silu", "mish", "softplus",
            "softsign", "exponential", "hard_sigmoid", "hard_silu", "relu6", "leaky_relu",
            keras.activations.log_softmax, lambda x: x**2, keras.ops.cosh]
    inp = keras.Input((30,))
    h = inp
    for act in acts:
        h = L.Dense(30)(h)
        h = L.Activation(act)(h)
    for layer in (L.ReLU(max_value=2.0, negative_slope=0.1, threshold=0.2), L.LeakyReLU(0.3),
                  L.PReLU(alpha_initializer=keras.initializers.Constant(0.25)), L.ELU(0.5)):
        h = layer(L.Dense(30)(h))
    model = keras.Model(inp, L.Dense(4, activation="softmax")(h))
    report = initialize(model, seed=0)
    assert all(math.isfinite(entry.var) for entry in report.layers)
    assert report.layers[-1].mean == pytest.approx(0.25, abs=1e-9)
    report.measure(model, samples=512)
    assert np.median(report.errors()) < 0.1, report.table()


def test_plot_writes_a_png(tmp_path):
    model = small_cnn()
    report = initialize(model, seed=0).measure(model, samples=64)
    path = report.plot(str(tmp_path / "signal.png"))
    assert (tmp_path / "signal.png").stat().st_size > 5000
    assert path.endswith("signal.png")


def test_import_is_light():
    # Keras itself may import matplotlib: only count what autoinit_nas adds on top of it
    code = ("import sys, keras; before = set(sys.modules); import autoinit_nas; "
            "heavy = [m for m in ('ray', 'keras_tuner', 'matplotlib', 'deap') "
            "if m in sys.modules and m not in before]; print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_measure_runs_dropout_in_training_mode():
    inp = keras.Input((64,))
    h = L.Activation("relu")(L.Dense(64)(inp))
    model = keras.Model(inp, L.Dropout(0.5)(h))
    report = initialize(model, seed=0).measure(model, samples=4096)
    dropout = report.layers[-1]
    assert dropout.var > 2 * report.layers[-2].var * 0.9  # (nu + mu^2)/(1-p) - mu^2
    assert dropout.measured_var == pytest.approx(dropout.var, rel=0.05)


@pytest.mark.parametrize("variances", [[1.0, 9.0], [9.0, 1.0]])
def test_shared_layer_scaled_for_its_largest_input_with_shared_layers_max(variances):
    a, b = keras.Input((50,)), keras.Input((50,))
    dense = keras.layers.Dense(20, name="shared")
    model = keras.Model([a, b], [dense(a), dense(b)])
    first = initialize(model, input_var=variances, mode="expected", seed=0)
    first_vars = sorted(entry.var for entry in first.layers[-2:])
    report = initialize(model, input_var=variances, mode="expected", seed=0, shared_layers="max")
    report.measure(model, samples=2000, seed=1)
    max_vars = sorted(entry.var for entry in report.layers[-2:])
    # With "max" the call site with input variance 9 gets output variance 1 (the other 1/9),
    # whichever site the walk reaches first; "first" plans for the first site it reaches.
    assert max_vars == pytest.approx([1 / 9, 1.0], rel=0.05)  # the kept site: realized weights
    assert max(max_vars) == pytest.approx(1.0, rel=0.05)
    for entry in report.layers[-2:]:
        assert entry.var == pytest.approx(entry.measured_var, rel=0.05)
    if first_vars != pytest.approx(max_vars, rel=1e-3):  # the walk met the small input first
        assert first_vars == pytest.approx([1.0, 9.0], rel=0.05)
        assert any("scaled" in entry.estimator for entry in report.layers[-2:])


def test_layer_norm_over_one_feature_outputs_beta_and_the_next_layer_says_so():
    inp = keras.Input((40, 1))
    normed = L.LayerNormalization(name="ln")(inp)
    model = keras.Model(inp, L.Dense(8, name="after_ln")(normed))
    with pytest.raises(SignalError, match="after_ln.*second moment E\\[x\\^2\\]=0.0"):
        initialize(model, seed=0)
    sample = np.random.default_rng(0).standard_normal((16, 40, 1)).astype("float32")
    assert np.all(keras.ops.convert_to_numpy(L.LayerNormalization()(sample)) == 0.0)
