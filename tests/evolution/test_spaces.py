"""Search spaces resolved for a task: the task's input shape reaches the space's size limit."""

from __future__ import annotations

import numpy as np
import pytest

from autoinit_nas.errors import FatalSearchError
from evolution import load_task, resolve_space
from search_spaces import NetworkSearchSpace, TaskSpec


def test_network_space_gets_the_task_shape_and_never_proposes_oversized_genomes() -> None:
    task = TaskSpec(input_shape=(40, 1), num_classes=10)
    space = resolve_space("network", {"max_params": 20_000, "sample_nodes": (4, 10)}, task=task)
    assert isinstance(space, NetworkSearchSpace)
    assert space.input_shape == (40, 1) and space.num_classes == 10
    rng = np.random.default_rng(0)
    genomes = [space.sample(rng) for _ in range(30)]
    for _ in range(3):
        genomes += [space.mutate(g, rng) for g in genomes[:30]]
    sizes = [space.num_params(g, (40, 1)) for g in genomes]
    assert max(sizes) <= 20_000
    # Without the task's shape the same space proposes larger genomes: the limit did the work.
    blind = resolve_space("network", {"max_params": 20_000, "sample_nodes": (4, 10)})
    assert blind.input_shape is None
    rng = np.random.default_rng(0)
    assert max(blind.num_params(blind.sample(rng), (40, 1)) for _ in range(30)) > 20_000


def test_explicit_options_win_over_the_task() -> None:
    task = TaskSpec(input_shape=(40, 1), num_classes=10)
    space = resolve_space("network", {"input_shape": (8, 1), "num_classes": 3}, task=task)
    assert (space.input_shape, space.num_classes) == ((8, 1), 3)
    # Spaces whose constructor takes neither are created as before.
    tiny = resolve_space("tiny_space:TinyMLPSpace", task=task)
    assert type(tiny).__name__ == "TinyMLPSpace"


def test_unknown_space_is_named() -> None:
    with pytest.raises(FatalSearchError, match="Received: space='nope'"):
        resolve_space("nope")
    with pytest.raises(FatalSearchError, match="no_such_module"):
        resolve_space("no_such_module:Space")


def test_run_space_knows_the_mnist1d_shape(tmp_path) -> None:
    from evolution import Evolution, RunConfig

    run = Evolution(
        tmp_path / "run",
        RunConfig(budget_evals=1, space_options={"max_params": 50_000}),
        task=load_task("mnist1d"),
        progress=False,
    )
    assert run.space.input_shape == (40, 1) and run.space.max_params == 50_000
    run.close()
