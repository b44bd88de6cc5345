"""Activation-expression genomes: serialization, mutations, duplicates, building."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from autoinit_nas import ParametricActivation
from search_spaces import (
    ActivationGenome,
    ActivationSearchSpace,
    InvalidGenomeError,
    TaskSpec,
    genome_from_json,
    mnist1d_mlp_genome,
)


def test_json_round_trip_hash_and_formula() -> None:
    genome = ActivationGenome("alpha*tanh(beta*x) + gamma*x")
    text = genome.to_json()
    assert text == (
        '{"expression":["add",["mul","alpha",["tanh",["mul","beta","x"]]],["mul","gamma","x"]],'
        '"kind":"activation"}'
    )
    again = genome_from_json(text)
    assert again == genome and again.hash() == genome.hash()
    assert ActivationSearchSpace().from_json(text) == genome
    assert str(again) == "alpha*tanh(beta*x) + gamma*x"
    assert ActivationGenome(["relu", "x"]) == ActivationGenome("relu(x)")


@pytest.mark.parametrize(
    ("expression", "mentions"),
    [
        (["add", "x", ["foo", "x"]], "path [1]"),
        (["add", "x"], "2 operand"),
        (["mul", "x", ["tanh", "delta"]], "'delta'"),
        (["sin", True], "True"),
        ({"op": "sin"}, "path []"),
    ],
)
def test_bad_expressions_name_the_node(expression: object, mentions: str) -> None:
    with pytest.raises(InvalidGenomeError) as info:
        genome_from_json(f'{{"kind": "activation", "expression": {_json(expression)}}}')
    assert mentions in str(info.value)


def _json(value: object) -> str:
    import json

    return json.dumps(value)


def test_sampling_is_deterministic_and_usable() -> None:
    space = ActivationSearchSpace()
    a = [space.sample(np.random.default_rng(7)).hash() for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(8)
    genomes = [space.sample(rng) for _ in range(50)]
    assert all(space.is_usable(g) for g in genomes)
    assert len({g.hash() for g in genomes}) > 40


def test_mutations_cover_all_kinds_and_never_return_a_duplicate_of_the_parent() -> None:
    space = ActivationSearchSpace()
    rng = np.random.default_rng(0)
    genome = ActivationGenome("alpha*tanh(beta*x) + gamma*x")
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(300):
        child, name = space.mutate_named(genome, rng)
        seen[name] += 1
        assert not space.is_duplicate(child, genome)
        assert space.is_usable(child)
        space.validate(child)
        genome = child
    assert set(seen) == {"insert", "remove", "change", "regenerate"}


def test_duplicates_are_recognized_by_their_values() -> None:
    space = ActivationSearchSpace()
    same = [
        ("x + x", "2.0*x"),
        ("-(-x)", "x"),
        ("max(x, 0.0)", "relu(x)"),
        ("x*sigmoid(x)", "swish(x)"),
        ("|x|", "max(x, -x)"),
    ]
    for a, b in same:
        assert space.is_duplicate(ActivationGenome(a), ActivationGenome(b)), (a, b)
    assert not space.is_duplicate(ActivationGenome("relu(x)"), ActivationGenome("elu(x)"))
    assert not space.is_usable(ActivationGenome("x - x"))
    assert not space.is_usable(ActivationGenome("sin(alpha)"))


def test_crossover_exchanges_subtrees() -> None:
    space = ActivationSearchSpace()
    rng = np.random.default_rng(4)
    a, b = ActivationGenome("tanh(x) + alpha*x"), ActivationGenome("swish(beta*x)")
    children = {c.formula for _ in range(20) for c in space.crossover(a, b, rng)}
    assert children - {a.formula, b.formula}
    assert all(space.is_usable(ActivationGenome(f)) for f in children)


def test_validate_enforces_the_size_limits() -> None:
    space = ActivationSearchSpace(max_depth=3)
    space.validate(ActivationGenome("tanh(x)"))
    with pytest.raises(InvalidGenomeError, match="max_depth"):
        space.validate(ActivationGenome("tanh(sin(cos(x)))"))


def test_build_puts_the_expression_in_every_activation_of_the_backbone() -> None:
    space = ActivationSearchSpace(backbone="mnist1d_mlp")
    assert space.backbone == mnist1d_mlp_genome()
    genome = ActivationGenome("alpha*tanh(beta*x) + gamma*x")
    model = space.build(genome, TaskSpec((40, 1), 10), seed=0)
    acts = [layer for layer in model.layers if isinstance(layer, ParametricActivation)]
    assert len(acts) == 2 and all(str(a) == genome.formula for a in acts)
    x = np.random.default_rng(0).normal(size=(16, 40, 1)).astype("float32")
    assert np.all(np.isfinite(model.predict(x, verbose=0)))
    assert hasattr(model, "signal_report")
