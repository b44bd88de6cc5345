"""EvolutionSearcher's protocol, driven directly: suggest / on_trial_complete / save / restore.

No Ray workers run here (``test_ray_tune.py`` runs the searcher in real Ray Tune); the space is
the tiny MLP space the evolution tests share.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evolution"))

from tiny_space import MLPGenome, TinyMLPSpace  # noqa: E402

from search_spaces import Genome, NetworkSearchSpace  # noqa: E402

tune = pytest.importorskip("ray.tune")

from evolution.tune_searcher import EvolutionSearcher  # noqa: E402

METRIC = "val_accuracy"


def tiny_network_space() -> NetworkSearchSpace:
    return NetworkSearchSpace(input_shape=(40, 1), sample_nodes=(1, 2), max_nodes=4)


def score(genome: MLPGenome) -> float:
    """A made-up fitness that prefers wide, deep tanh networks."""
    return genome.units / 32 + genome.layers / 3 + (genome.activation == "tanh")


def drive(searcher: EvolutionSearcher, n: int, start: int = 0) -> list[tuple[str, dict]]:
    """Suggest and complete ``n`` trials one by one with ``score`` as the metric."""
    out = []
    for i in range(start, start + n):
        trial_id = f"t{i:03d}"
        config = searcher.suggest(trial_id)
        genome = TinyMLPSpace().from_json(config["genome"])
        searcher.on_trial_complete(trial_id, {METRIC: score(genome)})
        out.append((trial_id, config))
    return out


# -- wrong use --------------------------------------------------------------------------------


class NoMutate:
    def sample(self, rng):
        return MLPGenome()

    def from_json(self, text):
        return MLPGenome()


class MutateNotImplemented(TinyMLPSpace):
    def mutate(self, genome: Genome, rng: np.random.Generator) -> Genome:
        raise NotImplementedError("no mutations here")


def test_space_that_cannot_mutate_is_rejected() -> None:
    with pytest.raises(TypeError, match="NoMutate without mutate"):
        EvolutionSearcher(NoMutate(), METRIC, "max")
    with pytest.raises(TypeError, match="MutateNotImplemented.*NotImplementedError"):
        EvolutionSearcher(MutateNotImplemented(), METRIC, "max")
    with pytest.raises(TypeError, match="search space"):
        EvolutionSearcher(object(), METRIC, "max")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"population_size": 1}, "population_size >= 2"),
        ({"population_size": 4, "sample_size": 5}, "sample_size <= population_size"),
        ({"sample_size": 0}, "1 <= sample_size"),
        ({"mode": "maximize"}, "mode 'min' or 'max'"),
        (
            {"initial": [MLPGenome(units=u) for u in (4, 8, 16)], "population_size": 2},
            "at most population_size=2 initial",
        ),
        ({"max_duplicates": -1}, "max_duplicates >= 0"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    kwargs = {"mode": "max", **kwargs}
    with pytest.raises(ValueError, match=match):
        EvolutionSearcher(TinyMLPSpace(), METRIC, **kwargs)


def test_initial_genomes_must_be_valid_for_the_space() -> None:
    from autoinit_nas import InvalidGenomeError

    with pytest.raises(InvalidGenomeError, match="max_nodes=4"):
        EvolutionSearcher(tiny_network_space(), METRIC, "max", initial=["mnist1d_cnn"])
    with pytest.raises(InvalidGenomeError, match="units, layers >= 1"):
        EvolutionSearcher(TinyMLPSpace(), METRIC, "max", initial=[MLPGenome(units=0)])


def test_metric_and_mode_missing_fail_at_first_suggest() -> None:
    searcher = EvolutionSearcher(TinyMLPSpace(), population_size=3, seed=0)  # fine so far
    with pytest.raises(ValueError, match=r"needs a metric and a mode.*metric=None, mode=None"):
        searcher.suggest("a")
    assert searcher.set_search_properties(METRIC, "max", {"epochs": 1})
    assert "genome" in searcher.suggest("a")
    with pytest.raises(ValueError, match="only constants in param_space"):
        searcher.set_search_properties(METRIC, "max", {"lr": tune.uniform(0, 1)})


def test_result_without_the_metric_is_an_error_and_failures_score_worst() -> None:
    searcher = EvolutionSearcher(TinyMLPSpace(), "val_acc", "max", population_size=3, seed=0)
    searcher.suggest("a")
    with pytest.raises(ValueError, match=r"metric 'val_acc'.*val_accuracy"):
        searcher.on_trial_complete("a", {"val_accuracy": 0.5})
    searcher.on_trial_complete("a", {"val_acc": 0.5})
    searcher.suggest("b")
    searcher.on_trial_complete("b", None, error=True)
    searcher.suggest("c")
    searcher.on_trial_complete("c", {"val_acc": float("nan")})
    values = [value for _, _, value in searcher.population]
    assert values == [0.5, -math.inf, -math.inf]
    assert [t["failed"] for t in searcher.trials] == [False, True, True]
    assert searcher.best[0] == "a"


# -- the evolution ----------------------------------------------------------------------------


class StrictMLPSpace(TinyMLPSpace):
    """Every mutation changes exactly one field."""

    def mutate(self, genome: Genome, rng: np.random.Generator) -> Genome:
        while True:
            child = super().mutate(genome, rng)
            if child != genome:
                return child


def test_initial_then_random_then_mutations_of_the_tournament_winner() -> None:
    seeds = [MLPGenome(units=4, layers=1, activation="relu"), MLPGenome(units=32, layers=3)]
    space = StrictMLPSpace()
    searcher = EvolutionSearcher(
        space, METRIC, "max", population_size=4, sample_size=4, seed=5, initial=seeds
    )
    genomes: dict[str, MLPGenome] = {}
    for i in range(16):
        trial_id = f"t{i:02d}"
        config = searcher.suggest(trial_id)
        population = searcher.population  # as the tournament saw it (duplicates told included)
        genome = space.from_json(config["genome"])
        genomes[trial_id] = genome
        assert config["genome_hash"] == genome.hash()
        if i < 2:
            assert genome == seeds[i] and config["origin"] == "seed"
        elif i < 4:
            assert config["origin"] == "random" and config["parent"] == ""
        else:
            assert config["origin"] == "mutation"
            # sample_size == population_size: the tournament winner is the population's best
            parent = genomes[config["parent"]]
            assert score(parent) == max(member[2] for member in population)
            changed = [k for k, v in parent.to_dict().items() if genome.to_dict()[k] != v]
            assert len(changed) == 1  # one mutation away
        searcher.on_trial_complete(trial_id, {METRIC: score(genome)})
        members = [m[0] for m in searcher.population]
        assert len(members) <= 4 and members[-1] == trial_id  # the newest joins
    # aging: the oldest die however fit (t01, the 32-unit 3-layer seed, scores high)
    assert not {"t00", "t01"} & {m[0] for m in searcher.population}
    hashes = [g.hash() for g in genomes.values()]
    assert len(set(hashes)) == len(hashes)
    assert searcher.best[2] == max(score(g) for g in genomes.values())


class OftenIdentity(TinyMLPSpace):
    """Half of its mutations return the parent unchanged (a duplicate)."""

    def mutate(self, genome: Genome, rng: np.random.Generator) -> Genome:
        return genome if rng.random() < 0.5 else super().mutate(genome, rng)


class AlwaysIdentity(TinyMLPSpace):
    def mutate(self, genome: Genome, rng: np.random.Generator) -> Genome:
        return genome


def test_duplicates_are_not_proposed_again(caplog) -> None:
    searcher = EvolutionSearcher(OftenIdentity(), METRIC, "max", population_size=3, seed=0)
    configs = [c for _, c in drive(searcher, 20)]
    hashes = [c["genome_hash"] for c in configs]
    assert len(set(hashes)) == 20
    # redrawn duplicates were told to the evolution with their known fitness, untrained
    assert searcher.get_state()["algorithm"]["evaluations"] > 20

    stuck = EvolutionSearcher(
        AlwaysIdentity(), METRIC, "max", population_size=2, seed=0, max_duplicates=3
    )
    drive(stuck, 2)
    with caplog.at_level(logging.WARNING, logger="evolution.tune_searcher"):
        config = stuck.suggest("again")
    assert config["genome_hash"] in {t["genome_hash"] for t in stuck.trials}
    assert "looks exhausted" in caplog.text


def test_min_mode_keeps_the_lowest() -> None:
    searcher = EvolutionSearcher(
        TinyMLPSpace(), "val_loss", "min", population_size=2, sample_size=2, seed=0
    )
    for trial_id, loss in (("a", 0.9), ("b", 0.2)):
        searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_id, {"val_loss": loss})
    assert searcher.best[0] == "b" and searcher.best[2] == pytest.approx(0.2)
    assert searcher.suggest("c")["parent"] == "b"


def test_save_and_restore_continue_the_same_evolution(tmp_path) -> None:
    space = TinyMLPSpace()
    original = EvolutionSearcher(space, METRIC, "max", population_size=3, seed=5)
    drive(original, 5)
    in_flight = original.suggest("flying")
    path = tmp_path / "searcher.pkl"
    original.save(str(path))

    restored = EvolutionSearcher(space, population_size=3, seed=123)  # other seed, no metric
    restored.restore(str(path))
    assert restored.metric == METRIC and restored.mode == "max"
    assert restored.live_trials == {"flying": in_flight["genome_hash"]}
    assert restored.trials == original.trials
    # the trial in flight at save time completes into the restored searcher
    for searcher in (original, restored):
        searcher.on_trial_complete("flying", {METRIC: 0.25})
    # same generator state, same population: the same next proposals, seeds and parents
    assert [c for _, c in drive(original, 6, start=10)] == [
        c for _, c in drive(restored, 6, start=10)
    ]
    with pytest.raises(FileNotFoundError, match="searcher state file"):
        restored.restore(str(tmp_path / "missing.pkl"))


def test_add_evaluated_point_warm_starts() -> None:
    searcher = EvolutionSearcher(
        TinyMLPSpace(), METRIC, "max", population_size=2, sample_size=2, seed=0
    )
    good = MLPGenome(units=32, layers=3, activation="tanh")
    searcher.add_evaluated_point({"genome": good.to_json()}, 0.9)
    searcher.add_evaluated_point({"genome": MLPGenome(units=4).to_json()}, 0.1)
    assert searcher.best[1] == good
    with pytest.raises(ValueError, match="'genome' entry"):
        searcher.add_evaluated_point({"units": 3}, 0.5)
