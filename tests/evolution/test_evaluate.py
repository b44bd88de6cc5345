"""One candidate's evaluation: its score, and that it leaves nothing behind in the process."""

from __future__ import annotations

import gc

import keras
import numpy as np
import pytest
from tiny_space import MLPGenome, TinyMLPSpace

from evolution import EvalConfig, evaluate_candidate, load_task
from evolution._evaluate import _sparse_crossentropy, gradient_snapshot, release_memory


def _live_func_graphs() -> int:
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(isinstance(o, FuncGraph) for o in gc.get_objects())


@pytest.fixture(scope="module")
def task(npz_task):
    return load_task(npz_task)


def test_candidates_leave_no_training_graph_behind(task) -> None:
    space = TinyMLPSpace()
    config = EvalConfig(epochs=1, batch_size=128)
    # swish traces a tf.custom_gradient, whose registration used to keep each graph alive
    genomes = [MLPGenome(units=u, activation="swish") for u in (4, 8, 16, 32)]
    before = gradient_snapshot()
    counts = []
    for i, genome in enumerate(genomes):
        result = evaluate_candidate(space, genome.to_json(), task, config, seed=i)
        assert result.ok, result.error
        counts.append(_live_func_graphs())
    assert gradient_snapshot() == before  # no custom-gradient registration is left
    assert counts[-1] <= counts[0]  # no graph accumulates from one candidate to the next


def test_release_memory_keeps_registrations_older_than_the_snapshot() -> None:
    import tensorflow as tf

    @tf.custom_gradient
    def double(x):
        return 2 * x, lambda dy: 2 * dy

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = double(x)
        return tape.gradient(y, x)

    assert float(grad(tf.constant(1.0))) == 2.0
    kept = gradient_snapshot()
    assert any(name.startswith("CustomGradient-") for name in kept)
    release_memory(kept)
    assert gradient_snapshot() == kept
    release_memory(frozenset())  # drops every custom-gradient registration
    assert not any(name.startswith("CustomGradient-") for name in gradient_snapshot())


def test_validation_loss_is_keras_crossentropy() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=64).astype("float32")
    probs[0] = [1.0, 0.0, 0.0, 0.0, 0.0]  # a confident mistake: the clipping matters
    labels = rng.integers(5, size=64)
    labels[0] = 3
    expected = keras.losses.SparseCategoricalCrossentropy()(labels, probs)
    assert _sparse_crossentropy(probs, labels) == pytest.approx(float(expected), rel=1e-5)


def test_eval_config_defaults_and_errors() -> None:
    config = EvalConfig()
    assert (config.epochs, config.batch_size, config.init) == (10, 100, "autoinit")
    with pytest.raises(ValueError, match="Received: init='he'"):
        EvalConfig(init="he")
    with pytest.raises(ValueError, match="Received: epochs=0"):
        EvalConfig(epochs=0)
    assert config.lr_schedule == "cosine"
    with pytest.raises(ValueError, match="Received: 'step'"):
        EvalConfig(lr_schedule="step")


class _RecordRate(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_begin(self, batch, logs=None) -> None:
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def _tiny_model() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    return model


def test_cosine_schedule_decays_over_the_step_budget_and_restores_the_rate() -> None:
    from evolution._evaluate import lr_schedule_callback

    model, record = _tiny_model(), _RecordRate()
    schedule = lr_schedule_callback("cosine", epochs=2, steps_per_epoch=5)
    x, y = np.ones((50, 4), "float32"), np.zeros((50, 3), "float32")
    model.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=[schedule, record])
    expected = [0.01 * (1 + np.cos(np.pi * s / 10)) for s in range(10)]
    np.testing.assert_allclose(record.rates, expected, rtol=1e-6)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.02)
    assert lr_schedule_callback("constant", epochs=2, steps_per_epoch=5) is None


def test_cosine_schedule_by_seconds_reaches_zero_at_the_deadline() -> None:
    import time

    from evolution._evaluate import lr_schedule_callback

    class _Slow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None) -> None:
            time.sleep(0.05)

    model, record = _tiny_model(), _RecordRate()
    schedule = lr_schedule_callback("cosine", epochs=1, steps_per_epoch=1, train_seconds=0.3)
    x, y = np.ones((100, 4), "float32"), np.zeros((100, 3), "float32")
    model.fit(x, y, batch_size=10, epochs=1, verbose=0, callbacks=[schedule, record, _Slow()])
    rates = np.asarray(record.rates)
    assert rates[0] == pytest.approx(0.02)
    assert np.all(np.diff(rates) <= 1e-12)
    assert rates[-1] == 0.0  # ten batches of >= 50 ms: past the 0.3 s budget


def test_runs_saved_without_a_schedule_resume_with_a_constant_rate() -> None:
    from evolution import RunConfig

    data = RunConfig().to_dict()
    assert data["lr_schedule"] == "cosine"
    del data["lr_schedule"]
    assert RunConfig.from_dict(data).lr_schedule == "constant"
