"""keras-tuner integration: AutoInitHyperModel, EvolutionOracle/EvolutionTuner, AutoInitCallback.

Real keras-tuner tuners on tiny models and data (epochs=1); black-box tuners (no training) for
the oracle's logic.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import keras
import keras_tuner as kt
import numpy as np
import pytest

from autoinit_nas import AutoInitCallback, initialize
from autoinit_nas.evolution_oracle import EvolutionOracle, EvolutionTuner, mutate_value
from autoinit_nas.keras_tuner_hooks import AutoInitHyperModel

ROOT = Path(__file__).resolve().parents[2]
FEATURES, CLASSES = 12, 3


def _data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, FEATURES)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5).astype("int64")
    return x, y


X, Y = _data()
XV, YV = _data(48, seed=1)
FIT = {"x": X, "y": Y, "validation_data": (XV, YV), "epochs": 1, "batch_size": 32, "verbose": 0}


def build_mlp(hp: kt.HyperParameters) -> keras.Model:
    inputs = keras.Input((FEATURES,))
    x = keras.layers.Dense(
        hp.Int("units", 4, 16, step=4), activation=hp.Choice("act", ["relu", "tanh"])
    )(inputs)
    if hp.Boolean("second"):
        with hp.conditional_scope("second", [True]):
            x = keras.layers.Dense(hp.Int("units2", 4, 8, step=4), activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(x))
    model.compile(
        keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2, sampling="log")),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        run_eagerly=True,  # tracing costs more than these few batches
    )
    return model


class Recording(kt.HyperModel):
    """build_mlp as a HyperModel whose fit records the weights it is handed (before training)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[dict, list[np.ndarray], object]] = []

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        return build_mlp(hp)

    def fit(self, hp, model, *args, **kwargs):
        self.records.append(
            (
                dict(hp.values),
                [w.numpy() for w in model.weights],
                getattr(model, "signal_report", None),
            )
        )
        return model.fit(*args, **kwargs)


def _hp_with(values: dict) -> kt.HyperParameters:
    hp = kt.HyperParameters()
    hp.values = dict(values)
    return hp


def _planned_weights(values: dict, seed: int) -> list[np.ndarray]:
    keras.backend.clear_session()
    model = build_mlp(_hp_with(values))
    initialize(model, seed=seed)
    return [w.numpy() for w in model.weights]


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


# -- AutoInitHyperModel ----------------------------------------------------------------------
def test_built_models_carry_the_planned_weights_and_report(tmp_path):
    recording = Recording()
    hypermodel = AutoInitHyperModel(recording, seed=7)
    tuner = kt.RandomSearch(
        hypermodel,
        objective="val_accuracy",
        max_trials=3,
        seed=1,
        directory=tmp_path,
        project_name="rs",
    )
    tuner.search(**FIT)
    assert len(recording.records) == 3  # fit was delegated to the wrapped HyperModel
    seeds = set()
    for values, weights, report in recording.records:
        seed = hypermodel.seed_for(_hp_with(values))
        seeds.add(seed)
        assert report is not None and report.seed == seed
        _assert_same(weights, _planned_weights(values, seed))
        keras.backend.clear_session()
        default = [w.numpy() for w in build_mlp(_hp_with(values)).weights]
        assert not np.allclose(default[0], weights[0])  # not Keras' own initialization
    assert len(seeds) == 3


def test_seed_depends_on_values_and_base_seed_not_on_hyperband_bookkeeping():
    hypermodel = AutoInitHyperModel(build_mlp, seed=3)
    hp = kt.HyperParameters()
    build_mlp(hp)
    base = hypermodel.seed_for(hp)
    hp.values["tuner/epochs"] = 4
    hp.values["tuner/trial_id"] = "0001"
    assert hypermodel.seed_for(hp) == base
    hp.values["units"] = 8
    assert hypermodel.seed_for(hp) != base
    assert AutoInitHyperModel(build_mlp, seed=4).seed_for(hp) != hypermodel.seed_for(hp)


@pytest.mark.parametrize("make_tuner", ["random", "evolution"])
def test_resume_runs_only_new_trials_and_rebuilds_identical_weights(tmp_path, make_tuner):
    def tuner_for(recording, max_trials, overwrite):
        common = dict(
            objective="val_accuracy",
            max_trials=max_trials,
            seed=5,
            directory=tmp_path,
            project_name=make_tuner,
            overwrite=overwrite,
        )
        if make_tuner == "random":
            return kt.RandomSearch(AutoInitHyperModel(recording, seed=2), **common)
        return EvolutionTuner(
            AutoInitHyperModel(recording, seed=2), population_size=2, sample_size=2, **common
        )

    first = Recording()
    tuner = tuner_for(first, 2, True)
    tuner.search(**FIT)
    scores = {tid: t.score for tid, t in tuner.oracle.trials.items()}
    assert len(first.records) == 2

    second = Recording()
    resumed = tuner_for(second, 4, False)
    resumed.search(**FIT)
    assert len(second.records) == 2  # finished trials were not rerun
    assert len(resumed.oracle.trials) == 4
    for tid, score in scores.items():
        assert resumed.oracle.trials[tid].score == score
    # the resumed project rebuilds the first run's trials with the same AutoInit weights
    for values, weights, _ in first.records:
        keras.backend.clear_session()
        model = resumed.hypermodel.build(_hp_with(values))
        _assert_same(weights, [w.numpy() for w in model.weights])
    if make_tuner == "evolution":
        parents = resumed.oracle.parents
        assert [parents[t] for t in sorted(parents)][:2] == [None, None]
        assert all(parents[t] is not None for t in sorted(parents)[2:])


@pytest.mark.parametrize("kind", ["hyperband", "bayesian"])
def test_other_tuners_get_initialized_models(tmp_path, kind):
    recording = Recording()
    hypermodel = AutoInitHyperModel(recording, seed=11)
    if kind == "hyperband":
        tuner = kt.Hyperband(
            hypermodel,
            objective="val_accuracy",
            max_epochs=2,
            factor=2,
            hyperband_iterations=1,
            seed=0,
            directory=tmp_path,
            project_name=kind,
        )
        tuner.search(**{**FIT, "epochs": 2})
    else:
        tuner = kt.BayesianOptimization(
            hypermodel,
            objective="val_accuracy",
            max_trials=3,
            num_initial_points=2,
            seed=0,
            directory=tmp_path,
            project_name=kind,
        )
        tuner.search(**FIT)
    fresh = [r for r in recording.records if "tuner/trial_id" not in r[0]]
    assert len(fresh) >= 2  # Hyperband's later rounds load the earlier round's checkpoint
    for values, weights, report in fresh:
        model_values = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        seed = hypermodel.seed_for(_hp_with(values))
        assert report.seed == seed
        _assert_same(weights, _planned_weights(model_values, seed))


class _WeightsAtTrainBegin(keras.callbacks.Callback):
    records: ClassVar[list] = []  # class-level: the tuner deep-copies callbacks per trial

    def on_train_begin(self, logs=None):
        type(self).records.append(
            ([w.numpy() for w in self.model.weights], getattr(self.model, "signal_report", None))
        )


def test_autoinit_callback_inside_a_tuner_trial(tmp_path):
    _WeightsAtTrainBegin.records.clear()
    tuner = kt.RandomSearch(
        build_mlp,
        objective="val_accuracy",
        max_trials=2,
        seed=0,
        directory=tmp_path,
        project_name="cb",
    )
    tuner.search(**FIT, callbacks=[AutoInitCallback(seed=9), _WeightsAtTrainBegin()])
    assert len(_WeightsAtTrainBegin.records) == 2
    trials = [tuner.oracle.trials[t] for t in tuner.oracle.start_order]
    for trial, (weights, report) in zip(trials, _WeightsAtTrainBegin.records, strict=True):
        assert report is not None and report.seed == 9
        _assert_same(weights, _planned_weights(trial.hyperparameters.values, 9))
        assert trial.status == "COMPLETED"


def test_hypermodel_errors(tmp_path):
    with pytest.raises(TypeError, match="HyperModel or a callable.*int"):
        AutoInitHyperModel(42)
    with pytest.raises(TypeError, match="bogus"):
        AutoInitHyperModel(build_mlp, bogus=1)
    with pytest.raises(ValueError, match="mode"):
        AutoInitHyperModel(build_mlp, mode="fancy")

    def not_a_model(hp):
        hp.Int("units", 1, 4)
        return "a string"

    with pytest.raises(TypeError, match=r"not_a_model.*keras\.Model.*'a string'.*str"):
        kt.RandomSearch(
            AutoInitHyperModel(not_a_model),
            objective="val_accuracy",
            max_trials=1,
            directory=tmp_path,
            project_name="bad",
        )


# -- EvolutionOracle on a black box ----------------------------------------------------------
class Space(kt.HyperModel):
    def build(self, hp):
        kind = hp.Choice("kind", ["a", "b"])
        with hp.conditional_scope("kind", ["a"]):
            hp.Int("units", 1, 64, sampling="log")
        with hp.conditional_scope("kind", ["b"]):
            hp.Float("rate", 0.0, 1.0, step=0.05)
        hp.Float("lr", 1e-4, 1e-1, sampling="log")
        hp.Boolean("flag")
        hp.Fixed("fixed", 3)
        return kind


def black_box(v: dict) -> float:
    s = -abs(np.log10(v["lr"]) + 2.0) + (0.5 if v["flag"] else 0.0)
    return s + (v["units"] / 64 if v["kind"] == "a" else v["rate"] * 0.5)


class BlackBoxTuner(EvolutionTuner):
    def __init__(self, *args, **kwargs):
        super().__init__(Space(), *args, objective=kt.Objective("score", "max"), **kwargs)
        self.runs = 0

    def run_trial(self, trial, *args, **kwargs):
        self.runs += 1
        hp = trial.hyperparameters
        self.hypermodel.build(hp)
        return {"score": black_box(hp.values)}


def _values(tuner) -> list[dict]:
    return [tuner.oracle.trials[t].hyperparameters.values for t in tuner.oracle.start_order]


def test_evolution_respects_scopes_ages_population_and_mutates_one_value(tmp_path):
    tuner = BlackBoxTuner(
        max_trials=40,
        population_size=6,
        sample_size=3,
        seed=0,
        directory=tmp_path,
        project_name="bb",
    )
    tuner.search(verbose=0)
    oracle, order = tuner.oracle, tuner.oracle.start_order
    assert len(order) == 40
    values = _values(tuner)
    for v in values:
        assert ("units" in v) == (v["kind"] == "a") and ("rate" in v) == (v["kind"] == "b")
        assert v["fixed"] == 3
    assert len({tuple(sorted(v.items())) for v in values}) == 40  # no duplicates
    assert all(oracle.parents[t] is None for t in order[:6])
    for i, tid in enumerate(order[6:], start=6):
        parent = oracle.parents[tid]
        assert parent in order[i - 6 : i]  # from the aging population of the last 6 completed
        child, mother = values[i], oracle.trials[parent].hyperparameters.values
        changed = [k for k in child if k in mother and child[k] != mother[k]]
        assert len(changed) == 1, (child, mother)
        if "kind" in changed:  # the newly active branch got a value, the old one is gone
            assert set(child) - set(mother) and set(mother) - set(child)
    scores = [oracle.trials[t].score for t in order]
    assert np.mean(scores[-10:]) > np.mean(scores[:6]) + 0.3


def test_evolution_stops_when_the_space_is_exhausted(tmp_path):
    class Tiny(kt.HyperModel):
        def build(self, hp):
            hp.Boolean("a")
            hp.Boolean("b")

    class TinyTuner(EvolutionTuner):
        def run_trial(self, trial, *args, **kwargs):
            v = trial.hyperparameters.values
            return {"score": float(v["a"]) + 2 * float(v["b"])}

    tuner = TinyTuner(
        Tiny(),
        objective=kt.Objective("score", "max"),
        max_trials=10,
        population_size=2,
        sample_size=2,
        seed=1,
        directory=tmp_path,
        project_name="tiny",
    )
    tuner.search(verbose=0)
    assert sorted((v["a"], v["b"]) for v in _values(tuner)) == [
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    ]


def test_evolution_resume_matches_an_uninterrupted_run(tmp_path):
    kwargs = dict(population_size=3, sample_size=2, mutations=2, seed=4, directory=tmp_path)
    whole = BlackBoxTuner(max_trials=9, project_name="whole", **kwargs)
    whole.search(verbose=0)

    part = BlackBoxTuner(max_trials=5, project_name="part", overwrite=True, **kwargs)
    part.search(verbose=0)
    resumed = BlackBoxTuner(max_trials=9, project_name="part", overwrite=False, **kwargs)
    resumed.search(verbose=0)
    assert resumed.runs == 4
    assert _values(resumed) == _values(whole)
    assert resumed.oracle.parents == whole.oracle.parents
    assert resumed.oracle._rng.bit_generator.state == whole.oracle._rng.bit_generator.state
    assert any(p is not None for p in resumed.oracle.parents.values())


def test_mutate_value_per_type():
    rng = np.random.default_rng(0)
    hp = kt.HyperParameters()
    hp.Int("i", 8, 64, step=8)
    hp.Float("lr", 1e-5, 1e-1, sampling="log")
    hp.Choice("c", ["x", "y", "z"])
    hp.Boolean("b")
    hp.Fixed("f", 1)
    by_name = {h.name: h for h in hp.space}
    ints = [mutate_value(by_name["i"], 32, rng) for _ in range(200)]
    assert all(v != 32 and 8 <= v <= 64 and v % 8 == 0 for v in ints)
    logs = np.log10([mutate_value(by_name["lr"], 1e-3, rng) for _ in range(400)])
    assert np.all((logs >= -5) & (logs <= -1)) and np.all(logs != -3)
    assert abs(np.median(logs) + 3) < 0.2  # symmetric steps in log space, not in linear space
    assert {mutate_value(by_name["c"], "x", rng) for _ in range(50)} == {"y", "z"}
    assert mutate_value(by_name["b"], True, rng) is False
    assert mutate_value(by_name["f"], 1, rng) == 1


def test_oracle_errors():
    with pytest.raises(ValueError, match="objective=None"):
        EvolutionOracle(objective=None)
    with pytest.raises(ValueError, match="my_metric"):
        EvolutionOracle(objective="my_metric")
    with pytest.raises(ValueError, match="direction='up'"):
        EvolutionOracle(objective=kt.Objective("m", "up"))
    with pytest.raises(ValueError, match="population_size=1"):
        EvolutionOracle(objective="val_loss", population_size=1)
    with pytest.raises(ValueError, match="sample_size=5"):
        EvolutionOracle(objective="val_loss", population_size=4, sample_size=5)
    oracle = EvolutionOracle(objective=kt.Objective("m", "min"), population_size=2, sample_size=2)
    assert oracle.objective.direction == "min"


# -- examples --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("script", ["keras_tuner_hypermodel.py", "keras_tuner_evolution.py"])
def test_example_runs_quick(tmp_path, script):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--quick", "--directory", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best val_accuracy" in result.stdout
