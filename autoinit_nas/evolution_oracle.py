"""Regularized (aging) evolution for keras-tuner: ``EvolutionOracle`` and ``EvolutionTuner``.

Real et al., "Regularized Evolution for Image Classifier Architecture Search" (AAAI 2019), over
keras-tuner ``HyperParameters``: the population is the last ``population_size`` completed
trials; each new trial mutates the best of ``sample_size`` population members drawn at random.
Until the population is full, trials are random. Conditional scopes are respected: only active
hyperparameters are mutated, and hyperparameters that a mutation activates get random values.

This module imports ``keras_tuner``; ``import autoinit_nas`` does not import this module.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

try:
    import keras_tuner
    from keras_tuner.engine import trial as trial_module  # public export path
except ImportError as exc:  # pragma: no cover - keras-tuner is a declared dependency
    raise ImportError(
        "autoinit_nas.evolution_oracle needs keras-tuner: pip install keras-tuner"
    ) from exc

__all__ = ["EvolutionOracle", "EvolutionTuner", "mutate_value"]

logger = logging.getLogger("autoinit_nas")

_HP = keras_tuner.HyperParameters
# Mutations (then random samples) tried before the space counts as exhausted of new values.
_MAX_TRIES = 20


def _reflect(p: float) -> float:
    """Folds a cumulative probability back into [0, 1)."""
    p = abs(p)
    if p >= 1.0:
        p = 2.0 - p
    return float(min(max(p, 0.0), np.nextafter(1.0, 0.0)))


def _mutable(hp: Any) -> bool:
    if isinstance(hp, keras_tuner.engine.hyperparameters.Fixed):
        return False
    if isinstance(hp, keras_tuner.engine.hyperparameters.Boolean):
        return True
    if isinstance(hp, keras_tuner.engine.hyperparameters.Choice):
        return len(hp.values) > 1
    return hp.max_value > hp.min_value  # Int, Float


def mutate_value(hp: Any, value: Any, rng: np.random.Generator, scale: float = 0.2) -> Any:
    """A new value for one hyperparameter, different from ``value`` whenever the range allows.

    Boolean: flipped. Choice: another of its values, uniformly. Int/Float: a Gaussian step of
    ``scale`` (a fraction of the range) in keras-tuner's cumulative-probability space, which
    follows the hyperparameter's ``sampling`` (linear, log, reverse_log) and ``step`` grid,
    reflected at the bounds. Fixed: unchanged.

    Args:
        hp: a keras-tuner hyperparameter.
        value: its current value.
        rng: the generator that draws the mutation.
        scale: standard deviation of numeric steps, as a fraction of the range.
    """
    hps = keras_tuner.engine.hyperparameters
    if isinstance(hp, hps.Fixed):
        return value
    if isinstance(hp, hps.Boolean):
        return not value
    if isinstance(hp, hps.Choice):
        others = [v for v in hp.values if v != value]
        return others[int(rng.integers(len(others)))] if others else value
    try:
        prob = float(hp.value_to_prob(value))
    except (ValueError, TypeError, ZeroDivisionError):  # value outside the range: resample
        prob = float(rng.random())
    for attempt in range(_MAX_TRIES):  # grids can map a small step back onto the same value
        new = hp.prob_to_value(_reflect(prob + rng.normal(0.0, scale * (1 + attempt))))
        if new != value:
            return new
    return value


class EvolutionOracle(keras_tuner.Oracle):
    """Regularized (aging) evolution over keras-tuner hyperparameters.

    State (population order, parents, the generator's state) is saved with the oracle, so a
    tuner created again with ``overwrite=False`` continues the same evolution.

    Args:
        objective: the metric to optimize: a name keras-tuner can infer a direction for (e.g.
            ``"val_accuracy"``, ``"val_loss"``) or a ``keras_tuner.Objective``. Required.
        max_trials: total number of trials.
        population_size: number of most recent completed trials that form the population (>= 2).
        sample_size: tournament size, 1 <= sample_size <= population_size.
        mutations: number of active hyperparameters mutated per child.
        mutation_scale: standard deviation of numeric mutations as a fraction of the range.
        seed: seed of the oracle's ``np.random.Generator`` (None: drawn and recorded).
        hyperparameters, allow_new_entries, tune_new_entries, max_retries_per_trial,
        max_consecutive_failed_trials: as for ``keras_tuner.Oracle``.

    Raises:
        ValueError: objective missing or without a direction, population_size < 2,
            sample_size outside [1, population_size], mutations < 1.
    """

    def __init__(
        self,
        objective: Any = None,
        max_trials: int = 10,
        population_size: int = 10,
        sample_size: int = 3,
        mutations: int = 1,
        mutation_scale: float = 0.2,
        seed: int | None = None,
        hyperparameters: Any = None,
        allow_new_entries: bool = True,
        tune_new_entries: bool = True,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
    ) -> None:
        _check_objective(objective)
        if not isinstance(population_size, int) or population_size < 2:
            raise ValueError(
                f"Expected population_size >= 2. Received: population_size={population_size!r}"
            )
        if not isinstance(sample_size, int) or not 1 <= sample_size <= population_size:
            raise ValueError(
                f"Expected 1 <= sample_size <= population_size ({population_size}). "
                f"Received: sample_size={sample_size!r}"
            )
        if not isinstance(mutations, int) or mutations < 1:
            raise ValueError(f"Expected mutations >= 1. Received: mutations={mutations!r}")
        if not mutation_scale > 0:
            raise ValueError(
                f"Expected mutation_scale > 0. Received: mutation_scale={mutation_scale!r}"
            )
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**31 - 1)) + 1
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            allow_new_entries=allow_new_entries,
            tune_new_entries=tune_new_entries,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        self.seed = seed  # Oracle replaces a falsy seed (0) with a draw from the global random
        self._seed_state = seed
        self.population_size = population_size
        self.sample_size = sample_size
        self.mutations = mutations
        self.mutation_scale = float(mutation_scale)
        self._rng = np.random.default_rng(seed)
        self.parents: dict[str, str | None] = {}

    # -- proposals -------------------------------------------------------------------------
    def population(self) -> list[Any]:
        """The last ``population_size`` completed trials, oldest first."""
        done = [
            self.trials[tid]
            for tid in self.end_order
            if self.trials[tid].status == trial_module.TrialStatus.COMPLETED
            and self.trials[tid].score is not None
        ]
        return done[-self.population_size :]

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        population = self.population()
        parent = None
        values = None
        if len(population) >= self.population_size:
            parent = self._tournament(population)
            values = self._child_of(parent)
        if values is None:
            values = self._random_values_rng()
            parent = None
        if values is None:
            logger.info(
                "EvolutionOracle: no new configuration found; the search space is exhausted"
            )
            return {"status": trial_module.TrialStatus.STOPPED, "values": None}
        self.parents[trial_id] = None if parent is None else parent.trial_id
        return {"status": trial_module.TrialStatus.RUNNING, "values": values}

    def _tournament(self, population: list[Any]) -> Any:
        idx = self._rng.choice(len(population), size=self.sample_size, replace=False)
        sample = [population[i] for i in sorted(idx)]
        sign = 1.0 if self.objective.direction == "max" else -1.0
        return max(sample, key=lambda t: sign * t.score)

    def _complete(self, values: dict[str, Any]) -> dict[str, Any]:
        """Active values only: kept where given and valid, random where newly active."""
        hps = _HP()
        for hp in self.hyperparameters.space:
            hps.merge([hp], overwrite=False)
            if not hps.is_active(hp):
                continue
            if hp.name in values and _valid(hp, values[hp.name]):
                hps.values[hp.name] = values[hp.name]
            else:
                hps.values[hp.name] = hp.prob_to_value(float(self._rng.random()))
        return hps.values

    def _random_values_rng(self) -> dict[str, Any] | None:
        for _ in range(_MAX_TRIES):
            values = self._complete({})
            if not self._duplicate(values):
                return values
        return None

    def _child_of(self, parent: Any) -> dict[str, Any] | None:
        base = dict(parent.hyperparameters.values)
        active = _HP()
        active.values = dict(base)
        candidates = []
        for hp in self.hyperparameters.space:
            active.merge([hp], overwrite=False)
            if _mutable(hp) and active.is_active(hp) and hp.name in base:
                candidates.append(hp)
        if not candidates:
            return None
        for _ in range(_MAX_TRIES):
            k = min(self.mutations, len(candidates))
            chosen = [
                candidates[i] for i in self._rng.choice(len(candidates), size=k, replace=False)
            ]
            child = dict(base)
            for hp in chosen:
                child[hp.name] = mutate_value(hp, child[hp.name], self._rng, self.mutation_scale)
            child = self._complete(child)
            if not self._duplicate(child):
                logger.debug(
                    "EvolutionOracle: child of trial %s, mutated %s",
                    parent.trial_id,
                    [hp.name for hp in chosen],
                )
                return child
        return None

    # -- state -----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["evolution"] = {
            "population_size": self.population_size,
            "sample_size": self.sample_size,
            "mutations": self.mutations,
            "mutation_scale": self.mutation_scale,
            "parents": dict(self.parents),
            "rng_state": self._rng.bit_generator.state,
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        evo = state["evolution"]
        for key in ("population_size", "sample_size", "mutations", "mutation_scale"):
            if getattr(self, key) != evo[key]:
                logger.warning(
                    "EvolutionOracle: resuming with the saved %s=%r (constructor gave %r)",
                    key,
                    evo[key],
                    getattr(self, key),
                )
            setattr(self, key, evo[key])
        self.parents = dict(evo["parents"])
        self._rng = np.random.default_rng(self.seed)
        self._rng.bit_generator.state = evo["rng_state"]  # continue the saved stream


def _valid(hp: Any, value: Any) -> bool:
    hps = keras_tuner.engine.hyperparameters
    if value is None:
        return False
    if isinstance(hp, hps.Fixed):
        return value == hp.value
    if isinstance(hp, (hps.Choice, hps.Boolean)):
        return value in hp.values
    return hp.min_value <= value <= hp.max_value


def _check_objective(objective: Any) -> None:
    if objective is None:
        raise ValueError(
            "Expected an objective for evolution (e.g. 'val_accuracy' or "
            "keras_tuner.Objective('my_metric', direction='max')). Received: objective=None"
        )
    objectives = objective if isinstance(objective, list) else [objective]
    for obj in objectives:
        if isinstance(obj, keras_tuner.Objective):
            if obj.direction not in ("min", "max"):
                raise ValueError(
                    f"Expected the objective's direction to be 'min' or 'max'. Received: "
                    f"Objective({obj.name!r}, direction={obj.direction!r})"
                )
            continue
        if not isinstance(obj, str):
            raise TypeError(
                f"Expected the objective as a metric name or keras_tuner.Objective. Received: "
                f"objective={obj!r} of type {type(obj).__name__}"
            )
        if keras_tuner.engine.metrics_tracking.infer_metric_direction(obj) is None:
            raise ValueError(
                f"Expected an objective with a known direction. Received: objective={obj!r}, "
                f"whose direction cannot be inferred; pass keras_tuner.Objective({obj!r}, "
                "direction='max') or direction='min'"
            )


class EvolutionTuner(keras_tuner.Tuner):
    """A keras-tuner ``Tuner`` driven by ``EvolutionOracle`` (like ``keras_tuner.RandomSearch``).

    Args:
        hypermodel: a HyperModel or ``build(hp)`` function (e.g. an ``AutoInitHyperModel``).
        objective, max_trials, population_size, sample_size, mutations, mutation_scale, seed,
        hyperparameters, tune_new_entries, allow_new_entries, max_retries_per_trial,
        max_consecutive_failed_trials: see ``EvolutionOracle``.
        **kwargs: ``keras_tuner.Tuner`` arguments (``directory``, ``project_name``,
            ``overwrite``, ``executions_per_trial``, ...).

    Example:
        >>> tuner = EvolutionTuner(AutoInitHyperModel(build), objective="val_accuracy",
        ...                        max_trials=30, population_size=10, sample_size=3, seed=0,
        ...                        directory="kt", project_name="evo")
        >>> tuner.search(x, y, validation_data=(x_val, y_val), epochs=5)
    """

    def __init__(
        self,
        hypermodel: Any = None,
        objective: Any = None,
        max_trials: int = 10,
        population_size: int = 10,
        sample_size: int = 3,
        mutations: int = 1,
        mutation_scale: float = 0.2,
        seed: int | None = None,
        hyperparameters: Any = None,
        tune_new_entries: bool = True,
        allow_new_entries: bool = True,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
        **kwargs: Any,
    ) -> None:
        self.seed = seed
        oracle = EvolutionOracle(
            objective=objective,
            max_trials=max_trials,
            population_size=population_size,
            sample_size=sample_size,
            mutations=mutations,
            mutation_scale=mutation_scale,
            seed=seed,
            hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        super().__init__(oracle, hypermodel, **kwargs)
