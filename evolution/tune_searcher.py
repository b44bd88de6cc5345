"""``EvolutionSearcher``: regularized evolution over the project's genomes as a Ray Tune Searcher.

The evolution itself is ``evolution.RegularizedEvolution`` (the DEAP-based ask/tell algorithm
the command line runs); this module adapts it to Ray Tune's ``Searcher`` protocol: ``suggest``
asks it for a genome, ``on_trial_complete`` tells it the trial's metric, and ``save`` /
``restore`` pickle its whole state (population, hall of fame, the generator's bit-generator
state, trials in flight), so ``Tuner.restore`` continues the evolution where it stopped.

This module imports ray when it is imported; ``import evolution`` does not import it.

Example:
    >>> from ray import tune
    >>> from evolution.tune_searcher import EvolutionSearcher
    >>> from evolution.tune_trainable import make_trainable
    >>> from search_spaces import NetworkSearchSpace
    >>> space = NetworkSearchSpace(input_shape=(40, 1))
    >>> searcher = EvolutionSearcher(space, population_size=8, sample_size=3, seed=0)
    >>> tuner = tune.Tuner(  # doctest: +SKIP
    ...     make_trainable("mnist1d", space, epochs=3),
    ...     tune_config=tune.TuneConfig(search_alg=searcher, metric="val_accuracy",
    ...                                 mode="max", num_samples=32, max_concurrent_trials=2))
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from evolution._algorithm_base import Proposal
from evolution._algorithms import RegularizedEvolution
from evolution._spaces import require_space_methods
from search_spaces import Genome, SearchSpace, resolve_genome

__all__ = ["EvolutionSearcher", "genome_trial_dirname"]

logger = logging.getLogger(__name__)

#: Signed fitness of failed trials and of trials without a finite metric.
WORST_FITNESS = -math.inf
_STATE_VERSION = 1


def check_space(space: Any) -> None:
    """Raise ``TypeError`` unless ``space`` can sample, mutate and parse genomes.

    A throwaway generator samples one genome and mutates it, so a space whose ``mutate`` is not
    implemented fails here rather than in the middle of a Tune run.
    """
    name = type(space).__name__
    require_space_methods(
        space,
        {"sample": "sample(rng)", "mutate": "mutate(genome, rng)", "from_json": "from_json(text)"},
    )
    rng = np.random.default_rng(0)
    try:
        genome = space.sample(rng)
        child = space.mutate(genome, rng)
    except NotImplementedError as exc:
        raise TypeError(
            f"Expected a search space that can sample and mutate genomes. Received: {name}, "
            f"whose sample or mutate raised NotImplementedError ({exc})"
        ) from exc
    for value, what in ((genome, "sample"), (child, "mutate")):
        if not isinstance(value, Genome):
            raise TypeError(
                f"Expected {name}.{what} to return a search_spaces.Genome. "
                f"Received: {type(value).__name__}"
            )


class EvolutionSearcher(Searcher):
    """Regularized (aging) evolution over genomes, for ``ray.tune.TuneConfig(search_alg=...)``.

    The first ``population_size`` suggestions are the ``initial`` genomes, then random samples;
    afterwards each suggestion mutates the best of ``sample_size`` genomes drawn from the
    population, and each completed trial replaces the oldest member. Failed trials and trials
    whose metric is not finite get the worst fitness. A genome already trained is not proposed
    again (its known fitness is told to the evolution instead), nor one still in flight, as long
    as ``max_duplicates`` redraws find a new one.

    Each suggested config holds ``genome`` (the genome's JSON), ``genome_hash``, ``seed`` (for
    the trial's weights), ``origin`` (``seed``, ``random`` or ``mutation``) and ``parent`` (the
    parent's trial id, or ``""``). Constant entries of the Tuner's ``param_space`` are passed
    through; search domains there are rejected.

    To bound the number of trials in flight use ``TuneConfig(max_concurrent_trials=n)`` (Ray
    wraps the searcher in a ``ConcurrencyLimiter``): with fewer trials in flight than the
    population size, every mutation sees the newest results.

    Ray Tune passes ``TuneConfig(metric=..., mode=...)`` on to a searcher only when the
    Tuner's ``param_space`` is not empty, so give them to the searcher itself (and to
    ``TuneConfig`` for the result grid) unless ``param_space`` holds constants.

    Args:
        space: any ``search_spaces.SearchSpace`` (e.g. ``NetworkSearchSpace``).
        metric: result key to optimize, e.g. ``"val_accuracy"``.
        mode: ``"max"`` or ``"min"``.
        population_size: size of the aging population (>= 2).
        sample_size: tournament size (1 <= sample_size <= population_size); default
            ``min(3, population_size)``.
        seed: seed of the searcher's ``np.random.Generator`` (sampling, mutation, trial seeds).
        initial: genomes (or their JSON, or seed names for network spaces) proposed first.
        max_duplicates: redraws when a proposal duplicates a trained or in-flight genome.

    Raises:
        TypeError: ``space`` cannot sample or mutate.
        ValueError: bad sizes, an unknown mode, or more initial genomes than the population.
        InvalidGenomeError: an initial genome the space rejects (a ``ValueError``).
    """

    def __init__(
        self,
        space: SearchSpace,
        metric: str | None = None,
        mode: str | None = None,
        *,
        population_size: int = 10,
        sample_size: int | None = None,
        seed: int | None = None,
        initial: Sequence[Genome | str] = (),
        max_duplicates: int = 20,
    ) -> None:
        check_space(space)
        if sample_size is None:
            sample_size = min(3, population_size) if isinstance(population_size, int) else 3
        if isinstance(population_size, bool) or not isinstance(population_size, int):
            raise TypeError(f"Expected an int population_size. Received: {population_size!r}")
        if population_size < 2:
            raise ValueError(f"Expected population_size >= 2. Received: {population_size}")
        if not isinstance(sample_size, int) or not 1 <= sample_size <= population_size:
            raise ValueError(
                "Expected 1 <= sample_size <= population_size. Received: "
                f"sample_size={sample_size!r}, population_size={population_size}"
            )
        if max_duplicates < 0:
            raise ValueError(f"Expected max_duplicates >= 0. Received: {max_duplicates}")
        _check_metric_mode(metric, mode)
        super().__init__(metric=metric, mode=mode)
        genomes = [self._resolve(space, g) for g in initial]
        if len(genomes) > population_size:
            raise ValueError(
                f"Expected at most population_size={population_size} initial genomes. "
                f"Received: {len(genomes)}"
            )
        self.space = space
        self.population_size = population_size
        self.sample_size = sample_size
        self.max_duplicates = max_duplicates
        self._rng = np.random.default_rng(seed)
        self._seed_rng = np.random.default_rng(int(self._rng.integers(2**63)))
        self._algorithm = RegularizedEvolution(
            space,
            self._rng,
            population_size=population_size,
            sample_size=sample_size,
            seed_genomes=genomes,
        )
        self._live: dict[str, dict[str, Any]] = {}  # trial id -> pending proposal
        self._fitness_by_hash: dict[str, float] = {}  # trained genomes -> signed fitness
        self._trial_of: dict[int, str] = {}  # individual id -> trial id
        self._next_id = 0
        self.trials: list[dict[str, Any]] = []  # completed trials, in completion order

    # -- Ray Tune protocol -------------------------------------------------------------------

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        from ray.tune.search.variant_generator import _has_unresolved_values

        if config and _has_unresolved_values(config):
            raise ValueError(
                "Expected only constants in param_space: the EvolutionSearcher proposes the "
                f"genome. Received search domains in param_space={config!r:.300}"
            )
        _check_metric_mode(metric or self._metric, mode or self._mode)
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next genome's config, or ``None`` while waiting for a first result."""
        if not self._metric or not self._mode:
            raise ValueError(
                "EvolutionSearcher needs a metric and a mode: pass them to "
                "EvolutionSearcher(space, metric=..., mode=...) or to "
                "tune.TuneConfig(metric=..., mode=...) (Ray Tune hands TuneConfig's metric and "
                "mode to a searcher only when the Tuner's param_space is not empty). Received: "
                f"metric={self._metric!r}, mode={self._mode!r}"
            )
        live_hashes = {p["hash"] for p in self._live.values()}
        proposal = None
        for _ in range(self.max_duplicates + 1):
            proposal = self._ask()
            if proposal is None:
                return None
            genome_hash = proposal.genome.hash()
            if genome_hash in self._fitness_by_hash:
                self._tell_duplicate(proposal, genome_hash)
            elif genome_hash not in live_hashes:
                break
        else:
            logger.warning(
                "%d proposals in a row duplicated trained or running genomes; proposing "
                "genome %s again (the search space looks exhausted)",
                self.max_duplicates + 1,
                proposal.genome.hash(),
            )
        individual_id = self._new_id(trial_id)
        parent = self._trial_of.get(proposal.parents[0], "") if proposal.parents else ""
        pending = {
            "id": individual_id,
            "genome": proposal.genome.to_json(),
            "hash": proposal.genome.hash(),
            "parents": list(proposal.parents),
            "generation": proposal.generation,
            "origin": proposal.origin,
            "seed": int(self._seed_rng.integers(2**31 - 1)),
            "parent": parent,
        }
        self._live[trial_id] = pending
        return {
            "genome": pending["genome"],
            "genome_hash": pending["hash"],
            "seed": pending["seed"],
            "origin": pending["origin"],
            "parent": parent,
        }

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Tell the evolution the trial's fitness (the worst for errors and missing metrics)."""
        pending = self._live.get(trial_id)
        if pending is None:
            logger.debug("Trial %s completed but was not suggested by this searcher", trial_id)
            return
        value = None
        if not error and result:
            if self._metric not in result:
                raise ValueError(
                    f"Expected the trial's result to contain metric {self._metric!r}. "
                    f"Received keys: {sorted(k for k in result if not k.startswith('config'))}"
                )
            value = _finite(result[self._metric])
        del self._live[trial_id]
        fitness = WORST_FITNESS if value is None else (value if self._mode == "max" else -value)
        self._tell(pending, fitness)
        self._fitness_by_hash[pending["hash"]] = fitness
        self.trials.append(
            {
                "trial_id": trial_id,
                "genome_hash": pending["hash"],
                "origin": pending["origin"],
                "parent": pending["parent"],
                "metric": value,
                "failed": value is None,
            }
        )

    def add_evaluated_point(
        self,
        parameters: dict,
        value: float,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        """Warm-start with a genome evaluated elsewhere (``parameters["genome"]`` is its JSON)."""
        if not isinstance(parameters, dict) or "genome" not in parameters:
            raise ValueError(
                "Expected parameters with a 'genome' entry (the genome's JSON). "
                f"Received: {parameters!r:.200}"
            )
        genome = self.space.from_json(parameters["genome"])
        signed = _finite(value)
        if signed is not None and self._mode == "min":
            signed = -signed
        fitness = WORST_FITNESS if error or signed is None else signed
        pending = {
            "id": self._new_id(""),
            "genome": genome.to_json(),
            "hash": genome.hash(),
            "parents": [],
            "generation": 0,
            "origin": "evaluated",
        }
        self._tell(pending, fitness)
        self._fitness_by_hash[pending["hash"]] = fitness

    def save(self, checkpoint_path: str) -> None:
        """Pickle the whole state (``get_state``) to ``checkpoint_path``."""
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        """Load what ``save`` wrote; the evolution continues exactly where it stopped."""
        path = Path(checkpoint_path)
        if not path.is_file():
            raise FileNotFoundError(f"Expected a searcher state file. Received: {str(path)!r}")
        with open(path, "rb") as f:
            self.set_state(pickle.load(f))

    def get_state(self) -> dict[str, Any]:
        """Population, hall of fame, logbook, generator states, trials in flight, history."""
        return {
            "version": _STATE_VERSION,
            "metric": self._metric,
            "mode": self._mode,
            "population_size": self.population_size,
            "sample_size": self.sample_size,
            "algorithm": self._algorithm.get_state(),
            "seed_rng": self._seed_rng.bit_generator.state,
            "live": dict(self._live),
            "fitness_by_hash": dict(self._fitness_by_hash),
            "trial_of": dict(self._trial_of),
            "next_id": self._next_id,
            "trials": list(self.trials),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore ``get_state``'s dict (the space must be the one the state was made with)."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"Expected an EvolutionSearcher state of version {_STATE_VERSION}. Received: "
                f"{state.get('version') if isinstance(state, dict) else type(state).__name__!r}"
            )
        if state["population_size"] != self.population_size:
            logger.warning(
                "Restoring a population of size %d into a searcher made with %d; keeping %d",
                state["population_size"],
                self.population_size,
                state["population_size"],
            )
        self.population_size = self._algorithm.population_size = state["population_size"]
        self.sample_size = self._algorithm.sample_size = state["sample_size"]
        self._metric, self._mode = state["metric"], state["mode"]
        self._algorithm.set_state(state["algorithm"])
        self._seed_rng.bit_generator.state = state["seed_rng"]
        self._live = dict(state["live"])
        self._fitness_by_hash = dict(state["fitness_by_hash"])
        self._trial_of = dict(state["trial_of"])
        self._next_id = state["next_id"]
        self.trials = list(state["trials"])

    # -- inspection ----------------------------------------------------------------------------

    @property
    def population(self) -> list[tuple[str, Genome, float]]:
        """(trial id, genome, metric value) of the population, oldest first."""
        return [
            (self._trial_of.get(ind.id, ""), ind.genome, self._unsigned(ind.fitness.values[0]))
            for ind in self._algorithm.population
        ]

    @property
    def best(self) -> tuple[str, Genome, float]:
        """(trial id, genome, metric value) of the best trial so far."""
        ind = self._algorithm.best()
        return self._trial_of.get(ind.id, ""), ind.genome, self._unsigned(ind.fitness.values[0])

    @property
    def live_trials(self) -> dict[str, str]:
        """Trials suggested and not completed: trial id -> genome hash."""
        return {trial_id: p["hash"] for trial_id, p in self._live.items()}

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _resolve(space: SearchSpace, genome: Genome | str) -> Genome:
        # Validated here: the state stores genomes as JSON and parses them back with the space.
        if isinstance(genome, str) and genome.lstrip().startswith("{"):
            genome = space.from_json(genome)
        elif not isinstance(genome, Genome):
            genome = resolve_genome(genome)
        if callable(getattr(space, "validate", None)):
            space.validate(genome)
        return genome

    def _ask(self) -> Proposal | None:
        try:
            return self._algorithm.ask()
        except NotImplementedError as exc:
            raise TypeError(
                f"Expected a search space that can mutate genomes. Received: "
                f"{type(self.space).__name__}, whose mutate raised NotImplementedError ({exc})"
            ) from exc

    def _new_id(self, trial_id: str) -> int:
        self._next_id += 1
        self._trial_of[self._next_id] = trial_id
        return self._next_id

    def _tell(self, pending: dict[str, Any], fitness: float) -> None:
        proposal = Proposal(
            self.space.from_json(pending["genome"]),
            tuple(pending["parents"]),
            pending["generation"],
            pending["origin"],
        )
        self._algorithm.tell(self._algorithm.individual(pending["id"], proposal, (fitness,)))

    def _tell_duplicate(self, proposal: Proposal, genome_hash: str) -> None:
        # Counted as a (free) evaluation, as the command-line run does with duplicates; the
        # population member stands for the trial that trained the genome.
        original = next(
            (t["trial_id"] for t in reversed(self.trials) if t["genome_hash"] == genome_hash), ""
        )
        pending = {
            "id": self._new_id(original),
            "genome": proposal.genome.to_json(),
            "parents": list(proposal.parents),
            "generation": proposal.generation,
            "origin": proposal.origin,
        }
        self._tell(pending, self._fitness_by_hash[genome_hash])

    def _unsigned(self, fitness: float) -> float:
        return -fitness if self._mode == "min" else fitness


def genome_trial_dirname(trial: Any) -> str:
    """Short trial directory names, ``<trainable>_<trial id>_<genome hash>``.

    Ray's default names a trial's directory after its config, which here holds the genome's
    JSON; pass ``tune.TuneConfig(trial_dirname_creator=genome_trial_dirname)`` instead.
    """
    genome_hash = (getattr(trial, "config", None) or {}).get("genome_hash", "")
    return "_".join(p for p in (trial.trainable_name, trial.trial_id, str(genome_hash)) if p)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _check_metric_mode(metric: Any, mode: Any) -> None:
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(f"Expected mode 'min' or 'max'. Received: mode={mode!r}")
    if metric is not None and not isinstance(metric, str):
        raise TypeError(
            f"Expected one metric name (a str); the EvolutionSearcher is single-objective. "
            f"Received: metric={metric!r}"
        )
