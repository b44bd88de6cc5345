"""Hand-written genomes that seed a population: the classic MNIST-1D baselines.

From Greydanus, "Scaling down deep learning with MNIST-1D" (2020; models.py of the mnist1d
repository): the MLP (two hidden layers of 100 ReLU units, ~68% test accuracy) and the CNN
(three Conv1D layers of 25 channels, kernels 5, 3, 3 with stride 2, ReLU, then a linear layer on
the flattened features, ~94%). Both are rank-agnostic genomes: on images the CNN's convolutions
become Conv2D.
"""

from __future__ import annotations

from typing import Any

from autoinit_nas.errors import InvalidGenomeError
from search_spaces.network import INPUT, NetworkGenome, Node

__all__ = ["SEEDS", "mnist1d_cnn_genome", "mnist1d_mlp_genome", "resolve_genome"]


def mnist1d_mlp_genome(hidden: int = 100, activation: str = "relu") -> NetworkGenome:
    """Flatten, Dense(100), ReLU, Dense(100), ReLU, then the task head."""
    nodes = (
        Node.make("n0", "flatten", INPUT),
        Node.make("n1", "dense", "n0", units=hidden),
        Node.make("n2", "activation", "n1", function=activation),
        Node.make("n3", "dense", "n2", units=hidden),
        Node.make("n4", "activation", "n3", function=activation),
    )
    return NetworkGenome(nodes, output="n4", head="flatten")


def mnist1d_cnn_genome(channels: int = 25, activation: str = "relu") -> NetworkGenome:
    """Conv(25, 5, stride 2), ReLU, Conv(25, 3, stride 2), ReLU, Conv(25, 3, stride 2), ReLU,
    flatten, then the task head (40 steps -> 20 -> 10 -> 5, so 125 features)."""
    nodes = []
    src = INPUT
    for k, kernel in enumerate((5, 3, 3)):
        conv, act = f"n{2 * k}", f"n{2 * k + 1}"
        nodes.append(Node.make(conv, "conv", src, filters=channels, kernel_size=kernel, strides=2))
        nodes.append(Node.make(act, "activation", conv, function=activation))
        src = act
    return NetworkGenome(tuple(nodes), output=src, head="flatten")


#: Seed genomes by name, for configuration files.
SEEDS = {"mnist1d_mlp": mnist1d_mlp_genome, "mnist1d_cnn": mnist1d_cnn_genome}


def resolve_genome(spec: Any) -> NetworkGenome:
    """A network genome from itself, a name in ``SEEDS``, its JSON text or its dict.

    Raises:
        InvalidGenomeError: an unknown name or an invalid genome.
    """
    if isinstance(spec, NetworkGenome):
        return spec
    if isinstance(spec, str) and spec in SEEDS:
        return SEEDS[spec]()
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        import json

        return NetworkGenome.from_dict(json.loads(spec))
    if isinstance(spec, dict):
        return NetworkGenome.from_dict(spec)
    raise InvalidGenomeError(
        f"Expected a NetworkGenome, one of {sorted(SEEDS)}, or a genome's JSON. Received: {spec!r:.200}"
    )
