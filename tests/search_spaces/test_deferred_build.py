"""Candidates are built with deferred variables: AutoInit creates each kernel with its value."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

from autoinit_nas import _deferred, initialize, predict_signal
from autoinit_nas.errors import SignalError
from search_spaces import InvalidGenomeError, NetworkGenome, NetworkSearchSpace, Node, TaskSpec
from search_spaces._plan import plan_network
from search_spaces.builder import _functional, instantiate

TASK = TaskSpec((40, 1), 10)


def _genomes(n: int) -> list[NetworkGenome]:
    space = NetworkSearchSpace(input_shape=TASK.input_shape)
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        genome = space.sample(rng)
        for _ in range(3):
            genome = space.mutate(genome, rng)
        out.append(genome)
    return out


@pytest.mark.parametrize("k", range(6))
def test_deferred_build_gives_the_same_weights_as_an_eager_build(k: int) -> None:
    genome = _genomes(6)[k]
    plan = plan_network(genome, TASK.input_shape, TASK.num_classes)
    deferred = instantiate(plan, seed=k, draw=False)
    assert _deferred.pending(deferred), "nothing was deferred"
    eager = _functional(plan, None, None, draw=False)  # same layers, variables created at once
    assert not _deferred.pending(eager)
    report_d = initialize(deferred, seed=k)
    report_e = initialize(eager, seed=k)
    assert not _deferred.pending(deferred)
    assert [w.path for w in deferred.weights] == [w.path for w in eager.weights]
    for a, b in zip(deferred.weights, eager.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert [e.var for e in report_d.layers] == [e.var for e in report_e.layers]
    x = np.random.default_rng(0).standard_normal((8, *TASK.input_shape)).astype("float32")
    np.testing.assert_allclose(deferred.predict(x, verbose=0), eager.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_a_later_stateless_scope_does_not_touch_deferred_variables() -> None:
    plan = plan_network(_genomes(1)[0], TASK.input_shape, TASK.num_classes)
    model = instantiate(plan, seed=0, draw=False)
    with keras.StatelessScope():  # its exit initializes Keras' pending variables
        pass
    assert _deferred.pending(model)  # still ours, and still creatable with planned values
    initialize(model, seed=0)
    assert not _deferred.pending(model)


def test_a_failed_autoinit_still_creates_every_variable() -> None:
    plan = plan_network(_genomes(1)[0], TASK.input_shape, TASK.num_classes)
    model = instantiate(plan, seed=0, draw=False)
    with pytest.raises(SignalError, match="input_var"):
        initialize(model, seed=0, input_var=-1.0)
    assert not _deferred.pending(model)
    assert np.all(np.isfinite(model.predict(np.ones((2, *TASK.input_shape)), verbose=0)))
    # x - x is the constant 0: the genome decodes, AutoInit refuses it
    nodes = (
        Node.make("a", "dense", "input", units=8),
        Node.make("b", "activation", "a", expression="x - x"),
    )
    genome = NetworkGenome(nodes, "b", "flatten")
    with pytest.raises(InvalidGenomeError, match="signal"):
        NetworkSearchSpace().build(genome, TASK, seed=0)


def test_predict_signal_creates_pending_variables_with_their_initializers() -> None:
    plan = plan_network(_genomes(1)[0], TASK.input_shape, TASK.num_classes)
    model = instantiate(plan, seed=0, draw=False)
    report = predict_signal(model, seed=0)
    assert not _deferred.pending(model)
    kernels = [w for w in model.weights if w.path.endswith("kernel")]
    assert kernels and all(not np.any(w.numpy()) for w in kernels)  # PLANNED is zeros
    assert report.layers


def test_create_checks_the_shape() -> None:
    with _deferred.deferred_weights():
        layer = keras.layers.Dense(3, kernel_initializer=_deferred.PLANNED)
        layer.build((None, 4))
    assert _deferred.is_pending(layer.kernel)
    with pytest.raises(ValueError, match=r"shape \(4, 3\).*Received shape \(3, 4\)"):
        _deferred.create(layer.kernel, np.zeros((3, 4)))
    _deferred.create(layer.kernel, np.ones((4, 3)))
    np.testing.assert_array_equal(layer.kernel.numpy(), np.ones((4, 3)))


def _trained(genome: NetworkGenome, fast_handles: bool, monkeypatch: pytest.MonkeyPatch
             ) -> tuple[keras.Model, list[float]]:
    """A candidate built as the worker builds it, trained for 4 steps."""
    with monkeypatch.context() as patch:
        if not fast_handles:  # the usual tf.Variable, shape in the handle
            patch.setattr(_deferred, "_tf_variable", lambda variable, value: value)
        keras.utils.set_random_seed(3)
        model = NetworkSearchSpace(input_shape=TASK.input_shape).build(genome, TASK, seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, *TASK.input_shape)).astype("float32")
    y = rng.integers(0, TASK.num_classes, 32)
    return model, [float(np.ravel(model.train_on_batch(x, y))[0]) for _ in range(4)]


@pytest.mark.parametrize("k", [2, 5])  # 5 has dropout: its seed generator's state is made too
def test_cache_friendly_handles_train_exactly_like_usual_variables(
        k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    genome = _genomes(6)[k]
    fast, losses_fast = _trained(genome, True, monkeypatch)
    usual, losses_usual = _trained(genome, False, monkeypatch)
    assert losses_fast == losses_usual
    for a, b in zip(fast.weights, usual.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
        # the static shape graphs see is the real one, not the handle's unknown shape
        assert tuple(a.value.shape) == tuple(a.shape)
        read = tf.function(functools.partial(tf.identity, a.value), autograph=False)
        assert tuple(read.get_concrete_function().outputs[0].shape) == tuple(a.shape)
    # TensorFlow still has the private API the fast path needs (else it silently falls back)
    assert _deferred._shape_setter() is not None
    assert _deferred._variable_maker() is not None


def test_a_variable_creator_scope_sees_every_variable_made() -> None:
    import tensorflow as tf

    with _deferred.deferred_weights():
        layer = keras.layers.Dense(3, kernel_initializer=_deferred.PLANNED)
        layer.build((None, 4))
    value = np.arange(12, dtype="float32").reshape(4, 3)
    seen = []

    def creator(next_creator, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        made = _deferred._tf_variable(layer.kernel, value)
    assert seen == ["kernel"]  # not the direct handle path, which would bypass the creator
    np.testing.assert_array_equal(made.numpy(), value)
    fast = _deferred._tf_variable(layer.kernel, value)  # no scope: the direct path
    assert type(fast) is type(made) and fast.trainable and fast.name == made.name
    np.testing.assert_array_equal(fast.numpy(), value)


def test_cache_friendly_handles_save_and_reload(tmp_path: object) -> None:
    genome = _genomes(6)[4]
    model = NetworkSearchSpace(input_shape=TASK.input_shape).build(genome, TASK, seed=1)
    path = f"{tmp_path}/m.keras"
    model.save(path)
    again = keras.models.load_model(path)
    x = np.random.default_rng(1).standard_normal((4, *TASK.input_shape)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), again.predict(x, verbose=0))


def test_under_a_distribution_strategy_variables_are_created_the_usual_way() -> None:
    import tensorflow as tf

    with _deferred.deferred_weights():
        layer = keras.layers.Dense(3, kernel_initializer=_deferred.PLANNED)
        layer.build((None, 4))
    value = np.ones((4, 3), dtype="float32")
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert _deferred._tf_variable(layer.kernel, value) is value
    made = _deferred._tf_variable(layer.kernel, value)  # no strategy: a variable, real shape
    assert isinstance(made, tf.Variable) and tuple(made.shape) == (4, 3)
