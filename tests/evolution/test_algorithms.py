"""The DEAP-based algorithms, driven by ask/tell with a cheap, deterministic stand-in fitness.

The fitness here is a fixed function of the genome (no training), which isolates what the
algorithms do: who is selected, who dies, what state they keep.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_space import MLPGenome, TinyMLPSpace

from evolution import ALGORITHMS, NSGA2, RegularizedEvolution, make_algorithm


def score(genome: MLPGenome) -> tuple[float, int]:
    """A deterministic 'accuracy' and parameter count of a tiny MLP genome."""
    acc = (
        0.5
        + 0.1 * genome.layers
        - abs(genome.units - 16) / 64
        + (genome.activation == "elu") * 0.05
    )
    return acc, genome.units * genome.units * genome.layers + 11 * genome.units


def drive(algo, steps: int, start_id: int = 1) -> list[tuple[int, str]]:
    """Ask/tell one at a time for `steps` evaluations; returns (id, genome hash) proposed."""
    trace, next_id = [], start_id
    while algo.evaluations < steps:
        proposal = algo.ask()
        assert proposal is not None, "with nothing in flight an algorithm must propose"
        acc, params = score(proposal.genome)
        algo.tell(algo.individual(next_id, proposal, algo.fitness_values(True, acc, params)))
        trace.append((next_id, proposal.genome.hash()))
        next_id += 1
    return trace


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_state_round_trip_continues_identically(name: str) -> None:
    space = TinyMLPSpace()
    a = make_algorithm(name, space, np.random.default_rng(7), population_size=4)
    drive(a, 9)
    state = json.loads(json.dumps(a.get_state()))  # what the run store keeps
    b = make_algorithm(name, space, np.random.default_rng(12345), population_size=4)
    b.set_state(state)
    assert [i.genome for i in b.population] == [i.genome for i in a.population]
    assert json.dumps(list(b.logbook)) == json.dumps(list(a.logbook))  # NaN-safe
    assert [i.id for i in b.hall_of_fame] == [i.id for i in a.hall_of_fame]
    assert drive(a, 20, start_id=100) == drive(b, 20, start_id=100)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_same_seed_same_search_and_improvement(name: str) -> None:
    space = TinyMLPSpace()
    runs = [make_algorithm(name, space, np.random.default_rng(3), population_size=6) for _ in "ab"]
    traces = [drive(algo, 40) for algo in runs]
    assert traces[0] == traces[1]
    algo = runs[0]
    first = algo.logbook[5]["best"]
    assert algo.logbook[-1]["best"] >= first
    assert algo.logbook[-1]["pop_median"] >= algo.logbook[5]["pop_median"]
    assert make_algorithm(name, space, np.random.default_rng(4), population_size=6) is not None
    other = make_algorithm(name, space, np.random.default_rng(4), population_size=6)
    assert drive(other, 40) != traces[0]


def test_no_deap_classes_created_at_import_and_per_run_types() -> None:
    from deap import creator

    import evolution  # noqa: F401

    assert not [n for n in vars(creator) if n.startswith(("Fitness", "Individual"))]
    a = RegularizedEvolution(TinyMLPSpace(), np.random.default_rng(0), population_size=3)
    b = NSGA2(TinyMLPSpace(), np.random.default_rng(0), population_size=3)
    assert a.fitness_class is not b.fitness_class
    assert a.fitness_class.weights == (1.0,) and b.fitness_class.weights == (1.0, -1.0)


def test_regularized_evolution_kills_the_oldest_not_the_worst() -> None:
    algo = RegularizedEvolution(
        TinyMLPSpace(), np.random.default_rng(1), population_size=3, sample_size=2
    )
    for cid in range(1, 6):
        proposal = algo.ask()
        acc = 0.99 if cid == 1 else 0.1  # the first is by far the fittest
        algo.tell(algo.individual(cid, proposal, (acc,)))
    assert [i.id for i in algo.population] == [3, 4, 5]
    assert algo.best().id == 1  # still in the hall of fame


def test_regularized_is_asynchronous() -> None:
    algo = RegularizedEvolution(TinyMLPSpace(), np.random.default_rng(1), population_size=3)
    first = [algo.ask() for _ in range(3)]
    assert all(p.origin == "random" for p in first)
    assert algo.ask() is None  # nothing evaluated yet: nothing to mutate
    algo.tell(algo.individual(1, first[0], (0.5,)))
    children = [algo.ask() for _ in range(4)]  # with 3 still in flight it keeps proposing
    assert all(c is not None and c.parents == (1,) and c.origin == "mutation" for c in children)


def test_generational_waits_for_its_generation_and_sorts_by_id() -> None:
    space = TinyMLPSpace()
    algo = make_algorithm("mu_plus_lambda", space, np.random.default_rng(2), population_size=3)
    props = [algo.ask() for _ in range(3)]
    assert algo.ask() is None
    # results arrive out of order: selection must not depend on that order
    for cid in (3, 1, 2):
        algo.tell(algo.individual(cid, props[cid - 1], (0.5,)))
    assert algo.generation == 1
    assert [i.id for i in algo.population] == [1, 2, 3]
    assert algo.ask().generation == 1


def test_nsga2_keeps_the_pareto_front() -> None:
    space = TinyMLPSpace()
    algo = NSGA2(space, np.random.default_rng(5), population_size=6)
    drive(algo, 30)
    front = list(algo.hall_of_fame)
    assert front
    for a in front:  # nothing in the front is dominated by anything evaluated
        for b in algo.population:
            assert not b.fitness.dominates(a.fitness)
    assert all(len(ind.fitness.values) == 2 for ind in algo.population)


def test_failed_candidates_get_the_worst_fitness() -> None:
    algo = NSGA2(TinyMLPSpace(), np.random.default_rng(0), population_size=3)
    worst = algo.fitness_values(False, 0.9, 10)
    assert worst[0] == 0.0 and worst[1] >= 1e12
    for values in ((0.1, 10.0**9), (0.0, 5.0)):
        good = algo.fitness_class()
        good.values = values
        bad = algo.fitness_class()
        bad.values = worst
        assert not bad.dominates(good)


def test_unknown_algorithm_is_named() -> None:
    with pytest.raises(ValueError, match="Received: 'tabu'"):
        make_algorithm("tabu", TinyMLPSpace(), np.random.default_rng(0), population_size=4)
