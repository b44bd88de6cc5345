"""Network genomes: validation, canonical JSON, stable hash, clear errors on bad JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search_spaces import (
    INPUT,
    InvalidGenomeError,
    NetworkGenome,
    NetworkSearchSpace,
    Node,
    TaskSpec,
    genome_from_json,
    genome_size,
    mnist1d_cnn_genome,
    mnist1d_mlp_genome,
)

CNN_HASH = mnist1d_cnn_genome().hash()


def test_json_round_trip_and_equality() -> None:
    for genome in (mnist1d_cnn_genome(), mnist1d_mlp_genome()):
        text = genome.to_json()
        again = genome_from_json(text)
        assert again == genome and again.hash() == genome.hash() and again.to_json() == text
        assert NetworkSearchSpace().from_json(text) == genome
        assert hash(again) == hash(genome)
    assert mnist1d_cnn_genome() != mnist1d_mlp_genome()
    assert mnist1d_cnn_genome().hash() != mnist1d_cnn_genome(channels=26).hash()


def test_hash_is_stable_across_processes() -> None:
    code = "from search_spaces import mnist1d_cnn_genome; print(mnist1d_cnn_genome().hash())"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == CNN_HASH
    assert len(CNN_HASH) == 16 and int(CNN_HASH, 16) >= 0


def test_node_order_is_canonical() -> None:
    genome = mnist1d_cnn_genome()
    shuffled = NetworkGenome(tuple(reversed(genome.nodes)), genome.output, genome.head)
    assert shuffled.to_json() == genome.to_json()


def test_seed_genomes_match_the_published_baselines() -> None:
    task = TaskSpec((40, 1), 10)
    # Greydanus' MLP: 40-100-100-10; CNN: 1->25 (k5), 25->25 (k3), 25->25 (k3), 125->10.
    assert genome_size(mnist1d_mlp_genome(), task)[1] == 40 * 100 + 100 + 100 * 100 + 100 + 1010
    cnn_params = (5 * 25 + 25) + 2 * (3 * 25 * 25 + 25) + (125 * 10 + 10)
    assert genome_size(mnist1d_cnn_genome(), task)[1] == cnn_params


def _cnn_dict() -> dict:
    return json.loads(mnist1d_cnn_genome().to_json())


def _bad(mutate: object) -> str:
    data = _cnn_dict()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(InvalidGenomeError) as info:
        genome_from_json(json.dumps(data))
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_unknown_op_names_the_node() -> None:
    msg = _bad(lambda d: d["nodes"][2].update(op="convolution"))
    assert "'n2'" in msg and "convolution" in msg


def test_cycle_names_a_node_on_it() -> None:
    msg = _bad(lambda d: d["nodes"][0].update(inputs=["n3"]))
    assert "cycle" in msg and "'n0'" in msg


def test_dangling_edge_names_the_node_and_the_missing_input() -> None:
    msg = _bad(lambda d: d["nodes"][4].update(inputs=["n9"]))
    assert "'n4'" in msg and "'n9'" in msg and "dangling" in msg
    assert "output" in _bad(lambda d: d.update(output="n42"))


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        (lambda d: d["nodes"][0]["params"].update(filters="25"), "'n0'"),
        (lambda d: d["nodes"][0]["params"].update(filters=True), "filters"),
        (lambda d: d["nodes"][0]["params"].update(strides=2.0), "strides"),
        (lambda d: d["nodes"][0]["params"].update(kernel_size=0), "kernel_size"),
        (lambda d: d["nodes"][0]["params"].pop("filters"), "missing"),
        (lambda d: d["nodes"][0]["params"].update(bias=True), "bias"),
        (lambda d: d["nodes"][1]["params"].update(function="relu7"), "'n1'"),
        (lambda d: d["nodes"][1].update(params={"expression": "alpha*foo(x)"}), "'n1'"),
        (lambda d: d["nodes"][1].update(params={"function": "relu", "expression": "x"}), "'n1'"),
        (lambda d: d["nodes"][2].update(inputs="n1"), "'n2'"),
        (lambda d: d["nodes"][2].update(inputs=["n1", "n0"]), "'n2'"),
        (lambda d: d["nodes"][2].update(id=7), "7"),
        (lambda d: d["nodes"][3].update(id="n1"), "'n1'"),
        (lambda d: d["nodes"].append("conv"), "#6"),
        (lambda d: d.update(nodes={"n0": {}}), "nodes"),
        (lambda d: d.update(head="attention"), "head"),
        (lambda d: d.update(extra=1), "extra"),
    ],
)
def test_wrong_types_and_values_are_rejected_with_the_node_named(
    change: object, mentions: str
) -> None:
    assert mentions in _bad(change)


def test_merges_need_distinct_inputs_and_nodes_must_reach_the_head() -> None:
    nodes = (
        Node.make("a", "dense", INPUT, units=4),
        Node.make("b", "dense", INPUT, units=4),
        Node.make("m", "add", ["a", "a"]),
    )
    with pytest.raises(InvalidGenomeError, match="'m'"):
        NetworkGenome(nodes, "m")
    with pytest.raises(InvalidGenomeError, match="'b' does not lead to the output"):
        NetworkGenome(nodes[:2], "a")
    with pytest.raises(InvalidGenomeError, match="JSON"):
        genome_from_json("{not json")
    with pytest.raises(InvalidGenomeError, match="kind"):
        genome_from_json('{"kind": "tree"}')


def test_a_genome_without_hidden_nodes_is_valid() -> None:
    genome = NetworkGenome((), INPUT, "flatten")
    assert genome_size(genome, TaskSpec((40, 1), 10)) == (3, 410)
