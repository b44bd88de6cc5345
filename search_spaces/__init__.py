"""Genomes that evolution mutates: network graphs and activation expressions.

Example:
    >>> import numpy as np
    >>> from search_spaces import NetworkSearchSpace, TaskSpec, mnist1d_cnn_genome
    >>> space = NetworkSearchSpace()
    >>> child = space.mutate(mnist1d_cnn_genome(), np.random.default_rng(0))
    >>> model = space.build(child, TaskSpec((40, 1), 10), seed=0)  # AutoInit-initialized
"""

from __future__ import annotations

import json
from typing import Any

from autoinit_nas.errors import InvalidGenomeError
from search_spaces.activation import ActivationGenome, ActivationSearchSpace, random_expression
from search_spaces.base import Genome, SearchSpace, TaskSpec
from search_spaces.builder import build_network, genome_size
from search_spaces.network import (
    ACTIVATION_FUNCTIONS,
    HEADS,
    INPUT,
    LAYER_OPS,
    MERGE_OPS,
    NetworkGenome,
    Node,
)
from search_spaces.network_space import MUTATIONS, NetworkSearchSpace
from search_spaces.seeds import SEEDS, mnist1d_cnn_genome, mnist1d_mlp_genome, resolve_genome

__all__ = [
    "ACTIVATION_FUNCTIONS",
    "HEADS",
    "INPUT",
    "LAYER_OPS",
    "MERGE_OPS",
    "MUTATIONS",
    "ActivationGenome",
    "ActivationSearchSpace",
    "Genome",
    "NetworkGenome",
    "NetworkSearchSpace",
    "Node",
    "SEEDS",
    "SearchSpace",
    "TaskSpec",
    "build_network",
    "genome_from_json",
    "genome_size",
    "mnist1d_cnn_genome",
    "mnist1d_mlp_genome",
    "random_expression",
    "resolve_genome",
]

_KINDS: dict[str, type[Genome]] = {
    NetworkGenome.kind: NetworkGenome,
    ActivationGenome.kind: ActivationGenome,
}


def genome_from_json(text: str) -> Genome:
    """Any genome from its JSON (``Genome.to_json``), dispatched on its ``kind``.

    Raises:
        InvalidGenomeError: malformed JSON, unknown kind, or an invalid genome.
    """
    try:
        data: Any = json.loads(text)
    except (TypeError, json.JSONDecodeError) as err:
        raise InvalidGenomeError(f"Invalid genome JSON: {err}. Received: {text!r:.200}") from None
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in _KINDS:
        raise InvalidGenomeError(
            f"Invalid genome JSON: expected 'kind' among {sorted(_KINDS)}. Received: kind={kind!r}"
        )
    return _KINDS[kind].from_dict(data)
