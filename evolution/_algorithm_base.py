"""What every search algorithm shares: DEAP types made per run, ask/tell, state for resume."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from deap import base, tools

from search_spaces import Genome, SearchSpace

__all__ = ["Algorithm", "Individual", "Proposal", "WORST_ACCURACY", "WORST_PARAMS"]

#: Fitness given to failed candidates (worse than any trained one).
WORST_ACCURACY = 0.0
WORST_PARAMS = 1e12


@dataclass(frozen=True)
class Proposal:
    """A genome the algorithm wants evaluated, with its lineage."""

    genome: Genome
    parents: tuple[int, ...] = ()
    generation: int = 0
    origin: str = "random"


class Individual:
    """A candidate as DEAP sees it: genome, run-store id and a DEAP ``Fitness``."""

    __slots__ = ("id", "genome", "fitness", "generation", "parents")

    def __init__(
        self,
        id: int,
        genome: Genome,
        fitness: base.Fitness,
        generation: int = 0,
        parents: tuple[int, ...] = (),
    ) -> None:
        self.id, self.genome, self.fitness = id, genome, fitness
        self.generation, self.parents = generation, tuple(parents)

    def __repr__(self) -> str:
        return f"Individual(id={self.id}, fitness={self.fitness.values})"

    def to_state(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "genome": self.genome.to_json(),
            "fitness": list(self.fitness.values),
            "generation": self.generation,
            "parents": list(self.parents),
        }


def _same_genome(a: Individual, b: Individual) -> bool:
    return a.genome.to_json() == b.genome.to_json()


def _scalar(fn: Any) -> Any:
    return lambda values: float(fn(values)) if len(values) else float("nan")


class Algorithm(ABC):
    """An ask/tell search over a ``SearchSpace``, built from DEAP parts.

    ``ask`` proposes the next genome (or ``None`` while it must wait for results), ``tell``
    hands back an evaluated individual. Every random draw comes from ``rng``; ``get_state`` /
    ``set_state`` round-trip population, hall of fame, logbook and the generator's state, which
    is what resume needs. DEAP classes are created per instance, never at import time.

    Args:
        space: the search space (sampling, mutation, crossover).
        rng: the run's generator; all of this algorithm's randomness comes from it.
        population_size: size of the population.
        seed_genomes: genomes proposed before any random sample (warm start).
    """

    name: ClassVar[str] = ""
    #: DEAP fitness weights: (validation accuracy,) or (accuracy, parameter count).
    weights: ClassVar[tuple[float, ...]] = (1.0,)

    def __init__(
        self,
        space: SearchSpace,
        rng: np.random.Generator,
        *,
        population_size: int,
        seed_genomes: Sequence[Genome] = (),
    ) -> None:
        if population_size < 2:
            raise ValueError(f"Expected population_size >= 2. Received: {population_size}")
        self.space, self.rng, self.population_size = space, rng, population_size
        self.fitness_class = type("Fitness", (base.Fitness,), {"weights": self.weights})
        self.toolbox = base.Toolbox()
        self.toolbox.register("sample", space.sample, rng)
        self.toolbox.register("mutate", space.mutate, rng=rng)
        self.toolbox.register("mate", space.crossover, rng=rng)
        self.stats = tools.Statistics(key=lambda ind: ind.fitness.values[0])
        for stat, fn in (("pop_max", np.max), ("pop_median", np.median), ("pop_min", np.min)):
            self.stats.register(stat, _scalar(fn))
        self.logbook = tools.Logbook()
        self.hall_of_fame = self._new_hall_of_fame()
        self.evaluations = 0
        self._seed_genomes = list(seed_genomes)
        self._n_seeded = 0

    @property
    def multi_objective(self) -> bool:
        """Whether fitness is (accuracy, parameter count)."""
        return len(self.weights) > 1

    def _new_hall_of_fame(self) -> tools.HallOfFame:
        if self.multi_objective:
            return tools.ParetoFront(similar=_same_genome)
        return tools.HallOfFame(10, similar=_same_genome)

    # -- the interface --------------------------------------------------------------------
    @abstractmethod
    def ask(self) -> Proposal | None:
        """The next genome to evaluate, or ``None`` until more results arrive."""

    @abstractmethod
    def _tell(self, individual: Individual) -> None:
        """Take an evaluated individual into the population."""

    @property
    @abstractmethod
    def population(self) -> list[Individual]:
        """The current population (oldest first for aging evolution)."""

    @property
    @abstractmethod
    def generation(self) -> int:
        """Current generation (for steady-state algorithms: the deepest lineage so far)."""

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _set_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        pass

    # -- shared machinery -------------------------------------------------------------------
    def fitness_values(self, ok: bool, accuracy: float, param_count: int) -> tuple[float, ...]:
        """Fitness tuple of an evaluation; failures get the worst fitness."""
        if not ok:
            accuracy, param_count = WORST_ACCURACY, WORST_PARAMS
        return (float(accuracy), float(param_count))[: len(self.weights)]

    def individual(
        self, candidate_id: int, proposal: Proposal, fitness: tuple[float, ...]
    ) -> Individual:
        """An ``Individual`` for a proposal and its fitness values."""
        fit = self.fitness_class()
        fit.values = tuple(fitness)
        return Individual(candidate_id, proposal.genome, fit, proposal.generation, proposal.parents)

    def tell(self, individual: Individual) -> None:
        """Hand back an evaluated (or failed, with worst fitness) individual."""
        self.evaluations += 1
        self.hall_of_fame.update([individual])
        self._tell(individual)
        self.logbook.record(
            evals=self.evaluations,
            gen=self.generation,
            best=self.best().fitness.values[0],
            pop_size=len(self.population),
            **self.stats.compile(self.population),
        )

    def best(self) -> Individual:
        """The individual with the highest validation accuracy seen so far."""
        if not len(self.hall_of_fame):
            raise ValueError("Expected at least one evaluated individual. Received: none yet")
        return max(self.hall_of_fame, key=lambda ind: ind.fitness.values[0])

    def _random_proposal(self, generation: int = 0) -> Proposal:
        if self._n_seeded < len(self._seed_genomes):
            self._n_seeded += 1
            return Proposal(self._seed_genomes[self._n_seeded - 1], (), generation, "seed")
        return Proposal(self.toolbox.sample(), (), generation, "random")

    def _from_state(self, data: dict[str, Any]) -> Individual:
        proposal = Proposal(
            self.space.from_json(data["genome"]), tuple(data["parents"]), data["generation"]
        )
        return self.individual(data["id"], proposal, tuple(data["fitness"]))

    def get_state(self) -> dict[str, Any]:
        """JSON-compatible state: population, hall of fame, logbook, generator state."""
        return {
            "algorithm": self.name,
            "evaluations": self.evaluations,
            "rng": self.rng.bit_generator.state,
            "n_seeded": self._n_seeded,
            "population": [ind.to_state() for ind in self.population],
            "hall_of_fame": [ind.to_state() for ind in self.hall_of_fame],
            "logbook": [dict(entry) for entry in self.logbook],
            **self._extra_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what ``get_state`` returned (the generator continues where it was)."""
        if state.get("algorithm") != self.name:
            raise ValueError(
                f"Expected a state of algorithm {self.name!r}. Received: {state.get('algorithm')!r}"
            )
        self.evaluations = state["evaluations"]
        self.rng.bit_generator.state = state["rng"]
        self._n_seeded = state["n_seeded"]
        self.hall_of_fame = self._new_hall_of_fame()
        # Insert worst to best so ties keep their order (HallOfFame puts equal keys in front).
        for data in reversed(state["hall_of_fame"]):
            self.hall_of_fame.insert(self._from_state(data))
        self.logbook = tools.Logbook()
        for entry in state["logbook"]:
            self.logbook.record(**entry)
        self._set_extra_state(
            {**state, "population": [self._from_state(d) for d in state["population"]]}
        )
