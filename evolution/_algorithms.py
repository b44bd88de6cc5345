"""The search algorithms: regularized (aging) evolution, mu+lambda and NSGA-II."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from deap import tools

from evolution._algorithm_base import Algorithm, Individual, Proposal
from search_spaces import Genome, SearchSpace

__all__ = ["ALGORITHMS", "MuPlusLambda", "NSGA2", "RegularizedEvolution", "make_algorithm"]


class RegularizedEvolution(Algorithm):
    """Aging evolution (Real et al. 2019), asynchronous and steady-state.

    The first ``population_size`` proposals are random; afterwards each proposal mutates the
    best of ``sample_size`` individuals drawn from the population, and each result that comes
    back replaces the oldest individual. ``ask`` never waits once one result is in, so any
    number of evaluations can be in flight.
    """

    name = "regularized"

    def __init__(
        self,
        space: SearchSpace,
        rng: np.random.Generator,
        *,
        population_size: int,
        sample_size: int = 3,
        seed_genomes: Sequence[Genome] = (),
    ) -> None:
        super().__init__(space, rng, population_size=population_size, seed_genomes=seed_genomes)
        if sample_size < 1:
            raise ValueError(f"Expected sample_size >= 1. Received: {sample_size}")
        self.sample_size = sample_size
        self._population: list[Individual] = []
        self._n_random = 0
        self._max_generation = 0

    @property
    def population(self) -> list[Individual]:
        return self._population

    @property
    def generation(self) -> int:
        return self._max_generation

    def ask(self) -> Proposal | None:
        if self._n_random < self.population_size:
            self._n_random += 1
            return self._random_proposal()
        if not self._population:
            return None
        k = min(self.sample_size, len(self._population))
        picks = np.sort(self.rng.choice(len(self._population), size=k, replace=False))
        parent = tools.selBest([self._population[i] for i in picks], 1)[0]
        child = self.toolbox.mutate(parent.genome)
        return Proposal(child, (parent.id,), parent.generation + 1, "mutation")

    def _tell(self, individual: Individual) -> None:
        self._population.append(individual)
        if len(self._population) > self.population_size:
            self._population.pop(0)  # the oldest dies, however fit
        self._max_generation = max(self._max_generation, individual.generation)

    def _extra_state(self) -> dict[str, Any]:
        return {"n_random": self._n_random, "max_generation": self._max_generation}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self._population = list(state["population"])
        self._n_random = state["n_random"]
        self._max_generation = state["max_generation"]


class _Generational(Algorithm):
    """Generation by generation: ``offspring`` proposals, then survivor selection."""

    def __init__(
        self,
        space: SearchSpace,
        rng: np.random.Generator,
        *,
        population_size: int,
        offspring: int | None = None,
        cxpb: float = 0.3,
        mutpb: float = 0.7,
        seed_genomes: Sequence[Genome] = (),
    ) -> None:
        super().__init__(space, rng, population_size=population_size, seed_genomes=seed_genomes)
        if not (0 <= cxpb <= 1 and 0 <= mutpb <= 1 and cxpb + mutpb <= 1):
            raise ValueError(
                f"Expected 0 <= cxpb, mutpb and cxpb + mutpb <= 1. Received: "
                f"cxpb={cxpb}, mutpb={mutpb}"
            )
        self.offspring_size = offspring or population_size
        self.cxpb, self.mutpb = cxpb, mutpb
        self._population: list[Individual] = []
        self._offspring: list[Individual] = []
        self._n_asked = 0
        self._generation = 0

    @property
    def population(self) -> list[Individual]:
        return self._population

    @property
    def generation(self) -> int:
        return self._generation

    def _select(self, individuals: list[Individual], k: int) -> list[Individual]:
        raise NotImplementedError

    def _vary(self) -> Proposal:
        raise NotImplementedError

    def ask(self) -> Proposal | None:
        wanted = self.population_size if self._generation == 0 else self.offspring_size
        if self._n_asked >= wanted:
            return None  # wait for the generation to come back
        self._n_asked += 1
        if self._generation == 0:
            return self._random_proposal(0)
        return self._vary()

    def _tell(self, individual: Individual) -> None:
        self._offspring.append(individual)
        wanted = self.population_size if self._generation == 0 else self.offspring_size
        if len(self._offspring) < wanted:
            return
        # Sorting by id makes selection independent of the order results came back in.
        offspring = sorted(self._offspring, key=lambda ind: ind.id)
        self._population = self._select(self._population + offspring, self.population_size)
        self._offspring, self._n_asked = [], 0
        self._generation += 1

    def _child_of(self, a: Individual, b: Individual | None) -> Proposal:
        if b is not None:
            child = self.toolbox.mate(a.genome, b.genome)[0]
            if child != a.genome and child != b.genome:
                return Proposal(child, (a.id, b.id), self._generation, "crossover")
            # a space without crossover hands the parents back: mutate to get something new
            return Proposal(
                self.toolbox.mutate(child), (a.id, b.id), self._generation, "crossover+mutation"
            )
        return Proposal(self.toolbox.mutate(a.genome), (a.id,), self._generation, "mutation")

    def _extra_state(self) -> dict[str, Any]:
        return {
            "generation": self._generation,
            "n_asked": self._n_asked,
            "offspring": [ind.to_state() for ind in self._offspring],
        }

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self._population = list(state["population"])
        self._generation, self._n_asked = state["generation"], state["n_asked"]
        self._offspring = [self._from_state(d) for d in state["offspring"]]


class MuPlusLambda(_Generational):
    """(mu + lambda): ``offspring`` children by crossover (``cxpb``) or mutation, DEAP's
    ``varOr``; the best ``population_size`` of parents and children survive (``selBest``)."""

    name = "mu_plus_lambda"

    def _select(self, individuals: list[Individual], k: int) -> list[Individual]:
        return tools.selBest(individuals, k)

    def _vary(self) -> Proposal:
        pop = self._population
        if self.rng.random() < self.cxpb and len(pop) >= 2:
            i, j = self.rng.choice(len(pop), size=2, replace=False)
            return self._child_of(pop[int(i)], pop[int(j)])
        return self._child_of(pop[int(self.rng.integers(len(pop)))], None)


class NSGA2(_Generational):
    """NSGA-II over (validation accuracy up, parameter count down), DEAP's ``selNSGA2``.

    Parents are picked by binary tournaments on (front rank, crowding distance); a child is a
    crossover with probability ``cxpb`` and is then mutated.
    """

    name = "nsga2"
    weights = (1.0, -1.0)

    def _select(self, individuals: list[Individual], k: int) -> list[Individual]:
        return tools.selNSGA2(individuals, k)

    def _ranks(self) -> dict[int, tuple[int, float]]:
        fronts = tools.sortNondominated(self._population, len(self._population))
        ranks = {}
        for rank, front in enumerate(fronts):
            tools.emo.assignCrowdingDist(front)
            for ind in front:
                ranks[ind.id] = (rank, ind.fitness.crowding_dist)
        return ranks

    def _tournament(self, ranks: dict[int, tuple[int, float]]) -> Individual:
        i, j = self.rng.choice(len(self._population), size=2, replace=False)
        a, b = self._population[int(i)], self._population[int(j)]
        (rank_a, crowd_a), (rank_b, crowd_b) = ranks[a.id], ranks[b.id]
        if rank_a != rank_b:
            return a if rank_a < rank_b else b
        return a if crowd_a >= crowd_b else b

    def _vary(self) -> Proposal:
        ranks = self._ranks()
        a = self._tournament(ranks)
        if self.rng.random() < self.cxpb:
            b = self._tournament(ranks)
            if b.id != a.id:
                child = self.toolbox.mate(a.genome, b.genome)[0]
                return Proposal(
                    self.toolbox.mutate(child), (a.id, b.id), self._generation, "crossover+mutation"
                )
        return self._child_of(a, None)


ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (RegularizedEvolution, NSGA2, MuPlusLambda)
}


def make_algorithm(
    name: str, space: SearchSpace, rng: np.random.Generator, *, population_size: int, **options: Any
) -> Algorithm:
    """Create an algorithm by name (``regularized``, ``nsga2``, ``mu_plus_lambda``).

    Options that the algorithm does not take (e.g. ``sample_size`` for NSGA-II) are ignored.
    """
    if name not in ALGORITHMS:
        raise ValueError(f"Expected an algorithm in {sorted(ALGORITHMS)}. Received: {name!r}")
    cls = ALGORITHMS[name]
    accepted = {"sample_size"} if cls is RegularizedEvolution else {"offspring", "cxpb", "mutpb"}
    accepted.add("seed_genomes")
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    return cls(space, rng, population_size=population_size, **kwargs)
