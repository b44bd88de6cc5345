"""Ray Tune integration in real Ray Tune: EvolutionSearcher with make_trainable, ASHA, resume,
AutoInitTuneCallback in a user's trainable, SignalReportCollector, the examples.

Ray starts once per session (2 CPUs). The searcher's protocol on its own is tested in
``test_tune_searcher.py``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "evolution"))  # the shared tiny test space
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tiny_space import MLPGenome, TinyMLPSpace  # noqa: E402

from evolution import load_task  # noqa: E402
from search_spaces import NetworkSearchSpace  # noqa: E402

ray = pytest.importorskip("ray")
tune = pytest.importorskip("ray.tune")

from autoinit_nas.tune_callback import (  # noqa: E402
    AutoInitTuneCallback,
    SignalReportCollector,
    signal_summary,
)
from evolution.tune_searcher import EvolutionSearcher, genome_trial_dirname  # noqa: E402
from evolution.tune_trainable import make_trainable, with_trial_resources  # noqa: E402

METRIC = "val_accuracy"


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray (2 CPUs) for every test of this module that runs Tune."""
    from evolution._executors import WORKER_ENV, _worker_pythonpath

    started = False
    if not ray.is_initialized():
        env = {**WORKER_ENV, "PYTHONPATH": _worker_pythonpath()}
        ray.init(
            num_cpus=2,
            num_gpus=0,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env},
        )
        started = True
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_task():
    """MNIST-1D cut to 300 training and 100 validation samples."""
    task = load_task("mnist1d")
    return dataclasses.replace(
        task,
        x_train=task.x_train[:300],
        y_train=task.y_train[:300],
        x_val=task.x_val[:100],
        y_val=task.y_val[:100],
    )


def tiny_network_space() -> NetworkSearchSpace:
    return NetworkSearchSpace(
        input_shape=(40, 1),
        sample_nodes=(1, 2),
        max_nodes=4,
        max_params=5000,
        expression_rate=0.0,
    )


def local_summary(space, task, config) -> dict[str, float]:
    """Build the trial's genome here with its seed, as the trainable does; its summary."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(int(config["seed"]))
    genome = space.from_json(config["genome"])
    model = space.build(genome, task.spec, seed=int(config["seed"]))
    return signal_summary(model.signal_report, model)


# -- resources and real Tune runs --------------------------------------------------------------------------------


def test_trial_resources() -> None:
    def train(config):
        return None

    wrapped = with_trial_resources(train, cpus=1, gpus=0.25)
    assert wrapped._resources.required_resources == {"CPU": 1.0, "GPU": 0.25}
    for kwargs in ({"cpus": 0}, {"gpus": -1}, {"gpus": 1.5}):
        with pytest.raises(ValueError, match="Expected"):
            with_trial_resources(train, **kwargs)


# -- real Ray Tune ----------------------------------------------------------------------------


@pytest.mark.ray
def test_tune_run_evolves_autoinit_models(ray_session, tiny_task, tmp_path) -> None:
    space = tiny_network_space()
    searcher = EvolutionSearcher(space, METRIC, "max", population_size=2, sample_size=2, seed=0)
    tuner = tune.Tuner(
        make_trainable(tiny_task, space, epochs=1, batch_size=64),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            metric=METRIC,
            mode="max",
            num_samples=3,
            max_concurrent_trials=1,
            reuse_actors=True,
            trial_dirname_creator=genome_trial_dirname,
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            name="evo",
            verbose=0,
            callbacks=[SignalReportCollector()],
        ),
    )
    results = tuner.fit()
    assert results.num_errors == 0 and len(results) == 3
    by_trial = {r.metrics["trial_id"]: r for r in results}
    order = [t["trial_id"] for t in searcher.trials]
    assert sorted(order) == sorted(by_trial)
    for position, trial_id in enumerate(order):
        result = by_trial[trial_id]
        config, metrics = result.config, result.metrics
        assert 0.0 <= metrics[METRIC] <= 1.0 and metrics["param_count"] > 0
        assert metrics["genome_hash"] == config["genome_hash"]
        assert Path(result.path).name.endswith(config["genome_hash"])  # short directory name
        if position < 2:
            assert config["origin"] == "random"
        else:  # a mutation of a trial that had completed
            assert config["origin"] == "mutation" and config["parent"] in order[:position]
        # the weights the trial trained from are the ones AutoInit planned for its seed
        expected = local_summary(space, tiny_task, config)
        for key in ("autoinit_max_var", "autoinit_min_var", "autoinit_weight_norm"):
            assert metrics[key] == pytest.approx(expected[key], rel=1e-5), key
        saved = json.loads((Path(result.path) / "signal_report.json").read_text())
        assert saved["trial_id"] == trial_id
        assert saved["summary"]["autoinit_weight_norm"] == pytest.approx(
            expected["autoinit_weight_norm"], rel=1e-5
        )
    rows = [
        json.loads(line)
        for line in (Path(results.experiment_path) / "signal_reports.jsonl")
        .read_text()
        .splitlines()
    ]
    assert sorted(r["trial_id"] for r in rows) == sorted(by_trial)
    assert all(
        r["autoinit_max_var"] == by_trial[r["trial_id"]].metrics["autoinit_max_var"] for r in rows
    )


def own_trainable(config: dict) -> None:
    """A user's own Ray Tune trainable: a plain Keras model, one callback added to fit."""
    import keras

    data = np.random.default_rng(0)
    x = data.normal(size=(128, 12)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(config["units"], activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(
        x,
        y,
        validation_split=0.25,
        epochs=2,
        verbose=0,
        callbacks=[AutoInitTuneCallback(seed=config["units"])],
    )


@pytest.mark.slow
@pytest.mark.ray
def test_own_trainable_with_the_callback(ray_session, tmp_path) -> None:
    import keras

    from autoinit_nas import initialize

    tuner = tune.Tuner(
        own_trainable,
        param_space={"units": 8},
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            name="own",
            verbose=0,
            callbacks=[SignalReportCollector("reports.jsonl")],
        ),
    )
    results = tuner.fit()
    assert results.num_errors == 0
    for result in results:
        units = result.config["units"]
        history = result.metrics_dataframe
        assert len(history) == 2 and {"loss", "val_accuracy"} <= set(history.columns)
        model = keras.Sequential(
            [
                keras.Input((12,)),
                keras.layers.Dense(units, activation="relu"),
                keras.layers.Dense(2, activation="softmax"),
            ]
        )
        expected = signal_summary(initialize(model, seed=units), model)
        for key in ("autoinit_max_var", "autoinit_output_var", "autoinit_weight_norm"):
            assert history[key].tolist() == pytest.approx([expected[key]] * 2, rel=1e-5), key
        report = json.loads((Path(result.path) / "signal_report.json").read_text())["report"]
        assert [layer["weight_std"] for layer in report["layers"]] == pytest.approx(
            [layer.weight_std for layer in initialize(model, seed=units).layers], nan_ok=True
        )
    rows = (Path(results.experiment_path) / "reports.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["autoinit_min_var"] == pytest.approx(
        expected["autoinit_min_var"], rel=1e-5
    )


def small_model():
    import keras

    return keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


def test_callback_initializes_at_train_begin_outside_tune() -> None:

    from autoinit_nas import initialize

    model = small_model()
    model.compile("sgd", "sparse_categorical_crossentropy")
    callback = AutoInitTuneCallback(seed=7, mode="expected")
    x = np.random.default_rng(0).normal(size=(32, 12)).astype("float32")
    with pytest.warns(UserWarning, match="only be called inside"):  # ray.tune.report, no trial
        model.fit(x, np.zeros(32, "int64"), epochs=1, verbose=0, callbacks=[callback])
    twin = small_model()
    expected = signal_summary(initialize(twin, seed=7, mode="expected"), twin)
    assert callback.report is model.signal_report and callback.report.mode == "expected"
    assert callback.summary == pytest.approx(
        {**expected, "autoinit_seconds": callback.summary["autoinit_seconds"]}
    )
    keras_default = math.sqrt(sum(float(np.sum(np.square(w))) for w in small_model().get_weights()))
    assert keras_default != pytest.approx(expected["autoinit_weight_norm"], rel=1e-3)


def test_callback_rejects_unknown_autoinit_options() -> None:
    with pytest.raises(TypeError):
        AutoInitTuneCallback(sed=0)
    with pytest.raises(ValueError, match="no AutoInit options with initialize=False"):
        AutoInitTuneCallback(initialize=False, seed=0)


@pytest.mark.slow
@pytest.mark.ray
def test_asha_stops_some_trials_early(ray_session, tiny_task, tmp_path) -> None:
    import keras
    from ray.tune.schedulers import ASHAScheduler

    space = TinyMLPSpace()
    # Keras knows no such activation: the seed's build fails and its trial errors
    broken = MLPGenome(units=8, activation="no_such_activation")
    searcher = EvolutionSearcher(space, METRIC, "max", population_size=3, seed=2, initial=[broken])
    tuner = tune.Tuner(
        make_trainable(tiny_task, space, epochs=4, checkpoint=True),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            metric=METRIC,
            mode="max",
            num_samples=8,
            scheduler=ASHAScheduler(max_t=4, grace_period=1, reduction_factor=2),
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="asha", verbose=0),
    )
    results = tuner.fit()
    assert results.num_errors == 1 and len(results) == 8
    assert "no_such_activation" in str(results.errors[0])
    iterations = [r.metrics["training_iteration"] for r in results if r.error is None]
    assert min(iterations) < 4 and max(iterations) == 4  # ASHA cut some trials short
    assert len(searcher.trials) == 8
    assert [t["origin"] for t in searcher.trials if t["failed"]] == ["seed"]
    assert sum(t["origin"] == "mutation" for t in searcher.trials) == 5
    best = results.get_best_result()  # its checkpoint holds the trained Keras model
    with best.checkpoint.as_directory() as directory:
        model = keras.models.load_model(Path(directory) / "model.keras")
    assert model.count_params() == best.metrics["param_count"]
    worst = [value for trial_id, _, value in searcher.population if value == -math.inf]
    assert len(worst) <= 1  # the failed seed scored worst while it was in the population


class InterruptAfter(tune.Callback):
    """Sends this process the signal Tune treats as Ctrl+C after ``n`` completed trials, once."""

    def __init__(self, n: int, marker: str) -> None:
        self.n, self.marker, self.done = n, marker, 0

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        if self.done >= self.n and not os.path.exists(self.marker):
            Path(self.marker).write_text("interrupted")
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.slow
@pytest.mark.ray
def test_interrupted_experiment_resumes_without_repeating_trials(
    ray_session, tiny_task, tmp_path
) -> None:
    space = tiny_network_space()
    trainable = make_trainable(tiny_task, space, epochs=1)
    searcher = EvolutionSearcher(space, METRIC, "max", population_size=3, seed=4)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            metric=METRIC,
            mode="max",
            num_samples=7,
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            name="resume",
            verbose=0,
            callbacks=[InterruptAfter(3, str(tmp_path / "interrupted")), SignalReportCollector()],
        ),
    )
    first = tuner.fit()
    finished = {
        r.metrics["trial_id"]: r.metrics["timestamp"] for r in first if r.metrics.get("done")
    }
    assert 3 <= len(finished) < 7  # interrupted part-way
    experiment = first.experiment_path

    resumed = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    second = resumed.fit()
    assert second.num_errors == 0 and len(second) == 7
    metrics = {r.metrics["trial_id"]: r.metrics for r in second}
    for trial_id, timestamp in finished.items():  # finished trials were not trained again
        assert metrics[trial_id]["timestamp"] == timestamp
    hashes = [r.config["genome_hash"] for r in second]
    assert len(set(hashes)) == 7  # the restored searcher did not start the evolution over
    state = EvolutionSearcher(space, population_size=3)
    state.restore_from_dir(experiment)
    assert sorted(t["trial_id"] for t in state.trials) == sorted(metrics)
    mutations = [t for t in state.trials if t["origin"] == "mutation"]
    assert len(mutations) == 4 and all(t["parent"] in metrics for t in mutations)
    rows = (Path(experiment) / "signal_reports.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["trial_id"] for r in rows) == sorted(metrics)


@pytest.mark.slow
def test_import_stays_light() -> None:
    code = (
        "import sys, autoinit_nas, evolution, search_spaces; "
        "print(sorted(m for m in ('ray', 'keras_tuner') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("script", ["ray_tune_evolution.py", "ray_tune_own_trainable.py"])
def test_examples_run_quick(script, tmp_path) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "best" in out.stdout.lower()
