"""The network-graph search space: sampling, mutation, crossover, validation and building."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from autoinit_nas import _expression as expr
from autoinit_nas.errors import InvalidGenomeError
from search_spaces._plan import plan_network
from search_spaces.activation import random_expression
from search_spaces.base import Genome, SearchSpace, TaskSpec
from search_spaces.network import (
    ACTIVATION_FUNCTIONS,
    HEADS,
    INPUT,
    LAYER_OPS,
    MERGE_OPS,
    NetworkGenome,
    Node,
)
from search_spaces.seeds import resolve_genome

__all__ = ["MUTATIONS", "NetworkSearchSpace"]

#: How often sampling and insertion draw each layer op.
OP_WEIGHTS: dict[str, float] = {
    "dense": 0.14,
    "conv": 0.2,
    "separable_conv": 0.06,
    "depthwise_conv": 0.04,
    "max_pool": 0.05,
    "avg_pool": 0.04,
    "batch_norm": 0.06,
    "layer_norm": 0.03,
    "dropout": 0.04,
    "activation": 0.26,
    "identity": 0.02,
    "flatten": 0.06,
}
MUTATIONS = (
    "insert_node",
    "remove_node",
    "add_skip",
    "remove_skip",
    "change_op",
    "change_params",
    "change_activation",
    "change_head",
)


def _choice(rng: np.random.Generator, items: list | tuple) -> Any:
    return items[int(rng.integers(len(items)))]


class NetworkSearchSpace(SearchSpace):
    """DAGs of layer and merge nodes between the task input and a classification head.

    Args:
        max_nodes: most nodes a genome may have (merges included); insertions stop there.
        sample_nodes: range ``(low, high)`` of the number of layer nodes ``sample`` draws.
        skip_rate: expected skip edges per layer node when sampling.
        expression_rate: probability that a new activation is an evolved expression (the rest
            are Keras built-ins); 0 disables expressions.
        seeds: genomes ``sample`` may also return (mutated once): genomes, names in ``SEEDS``
            (``"mnist1d_mlp"``, ``"mnist1d_cnn"``) or genome JSON.
        seed_rate: probability that ``sample`` starts from one of ``seeds``.
        max_params: most trainable parameters a built model may have; ``build`` rejects larger
            genomes with ``InvalidGenomeError`` before any Keras work (None: no limit).
        input_shape: the task's input shape, if known: ``sample`` and ``mutate`` then only
            return genomes within ``max_params`` for it, and ``validate`` checks the limit.
        num_classes: the task's number of classes (for the parameter count of the head).
    """

    def __init__(
        self,
        *,
        max_nodes: int = 30,
        sample_nodes: tuple[int, int] = (2, 12),
        skip_rate: float = 0.15,
        expression_rate: float = 0.2,
        seeds: tuple[NetworkGenome | str, ...] = (),
        seed_rate: float = 0.0,
        max_params: int | None = 5_000_000,
        input_shape: tuple[int, ...] | None = None,
        num_classes: int = 10,
    ) -> None:
        sample_nodes = (int(sample_nodes[0]), int(sample_nodes[1]))
        if not 1 <= sample_nodes[0] <= sample_nodes[1] <= max_nodes:
            raise ValueError(
                "Expected 1 <= sample_nodes[0] <= sample_nodes[1] <= max_nodes. "
                f"Received: sample_nodes={sample_nodes}, max_nodes={max_nodes}"
            )
        self.max_nodes = max_nodes
        self.sample_nodes = sample_nodes
        self.skip_rate = skip_rate
        self.expression_rate = expression_rate
        self.seeds = tuple(resolve_genome(g) for g in seeds)
        self.seed_rate = seed_rate
        self.max_params = max_params
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.num_classes = num_classes
        self._ops = list(OP_WEIGHTS)
        w = np.array([OP_WEIGHTS[o] for o in self._ops])
        self._op_p = w / w.sum()

    # -- random pieces ---------------------------------------------------------------------

    def random_activation(self, rng: np.random.Generator) -> dict[str, Any]:
        """Parameters of a random activation node: a Keras built-in or an evolved expression."""
        if rng.random() < self.expression_rate:
            for _ in range(100):
                tree = random_expression(rng, 3)
                v = expr.evaluate(tree, np.linspace(-5, 5, 41), backend="numpy")
                if np.all(np.isfinite(v)) and np.ptp(v) > 1e-6:
                    return {"expression": expr.format_tree(tree)}
        return {"function": _choice(rng, ACTIVATION_FUNCTIONS)}

    def random_params(self, op: str, rng: np.random.Generator) -> dict[str, Any]:
        if op == "activation":
            return self.random_activation(rng)
        return {k: _choice(rng, spec.choices) for k, spec in LAYER_OPS[op].items()}

    def random_layer(self, node_id: str, src: str, rng: np.random.Generator) -> Node:
        op = str(rng.choice(self._ops, p=self._op_p))
        return Node.make(node_id, op, src, **self.random_params(op, rng))

    # -- SearchSpace -----------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> NetworkGenome:
        """A random chain of layer nodes with random skip edges, or a mutated seed genome."""
        if self.seeds and rng.random() < self.seed_rate:
            return self.mutate(_choice(rng, self.seeds), rng)
        while True:
            n = int(rng.integers(self.sample_nodes[0], self.sample_nodes[1] + 1))
            nodes, src = [], INPUT
            for k in range(n):
                nodes.append(self.random_layer(f"n{k}", src, rng))
                src = f"n{k}"
            genome = NetworkGenome(tuple(nodes), src, _choice(rng, HEADS))
            for _ in range(int(rng.poisson(self.skip_rate * n))):
                genome = self._add_skip(genome, rng) or genome
            if self._fits(genome):
                return genome

    def num_params(self, genome: NetworkGenome, input_shape: tuple[int, ...]) -> int:
        """Trainable parameters of ``genome`` built for ``input_shape`` (no Keras involved)."""
        return plan_network(genome, input_shape, self.num_classes).num_params

    def _fits(self, genome: NetworkGenome) -> bool:
        if self.max_params is None or self.input_shape is None:
            return True
        return self.num_params(genome, self.input_shape) <= self.max_params

    def mutate(self, genome: Genome, rng: np.random.Generator) -> NetworkGenome:
        return self.mutate_named(genome, rng)[0]

    def mutate_named(self, genome: Genome, rng: np.random.Generator) -> tuple[NetworkGenome, str]:
        """Like ``mutate`` and also the name of the mutation applied (one of ``MUTATIONS``)."""
        if not isinstance(genome, NetworkGenome):
            raise InvalidGenomeError(f"Expected a NetworkGenome. Received: {type(genome).__name__}")
        table: dict[str, Callable[[NetworkGenome, np.random.Generator], NetworkGenome | None]] = {
            "insert_node": self._insert_node,
            "remove_node": self._remove_node,
            "add_skip": self._add_skip,
            "remove_skip": self._remove_skip,
            "change_op": self._change_op,
            "change_params": self._change_params,
            "change_activation": self._change_activation,
            "change_head": self._change_head,
        }
        fallback = None
        for _ in range(20):
            order = list(MUTATIONS)
            rng.shuffle(order)
            for name in order:
                child = table[name](genome, rng)
                if child is not None and child != genome:
                    if self._fits(child):
                        return child, name
                    fallback = fallback or (child, name)
        if fallback is not None:  # nothing within max_params: build will reject it
            return fallback
        # change_head always applies, so this is unreachable.
        raise AssertionError(f"no mutation applies to genome {genome.hash()}")  # pragma: no cover

    def crossover(
        self, a: Genome, b: Genome, rng: np.random.Generator
    ) -> tuple[NetworkGenome, NetworkGenome]:
        """Uniform crossover of the parameters of aligned nodes (same id and op) and the head.

        Genomes descending from a common ancestor share node ids, so aligned nodes are the same
        position in the architecture; each child keeps its own parent's topology.
        """
        assert isinstance(a, NetworkGenome) and isinstance(b, NetworkGenome)
        ids_b = {n.id: n for n in b.nodes}
        swap = {
            n.id for n in a.nodes if n.id in ids_b and ids_b[n.id].op == n.op and rng.random() < 0.5
        }
        ids_a = {n.id: n for n in a.nodes}
        head_swap = rng.random() < 0.5
        c1 = NetworkGenome(
            tuple(n.replace(params=ids_b[n.id].p) if n.id in swap else n for n in a.nodes),
            a.output,
            b.head if head_swap else a.head,
        )
        c2 = NetworkGenome(
            tuple(n.replace(params=ids_a[n.id].p) if n.id in swap else n for n in b.nodes),
            b.output,
            a.head if head_swap else b.head,
        )
        return c1, c2

    def validate(self, genome: Genome) -> None:
        """Structural validity is checked when a genome is made; this adds the size limit."""
        if not isinstance(genome, NetworkGenome):
            raise InvalidGenomeError(f"Expected a NetworkGenome. Received: {type(genome).__name__}")
        if len(genome) > self.max_nodes:
            raise InvalidGenomeError(
                f"Invalid genome {genome.hash()}: {len(genome)} nodes, more than the space's "
                f"max_nodes={self.max_nodes}."
            )
        if not self._fits(genome):
            raise InvalidGenomeError(
                f"Invalid genome {genome.hash()}: "
                f"{self.num_params(genome, self.input_shape or ()):,} parameters for input shape "
                f"{self.input_shape}, more than the space's max_params={self.max_params:,}."
            )

    def from_json(self, text: str) -> NetworkGenome:
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as err:
            raise InvalidGenomeError(
                f"Invalid genome JSON: {err}. Received: {text!r:.200}"
            ) from None
        genome = NetworkGenome.from_dict(data)
        self.validate(genome)
        return genome

    def build(
        self,
        genome: Genome,
        task: TaskSpec,
        *,
        init: str = "autoinit",
        seed: int | None = None,
        **autoinit_options: Any,
    ) -> Any:
        from search_spaces.builder import build_network

        if not isinstance(genome, NetworkGenome):
            raise InvalidGenomeError(f"Expected a NetworkGenome. Received: {type(genome).__name__}")
        return build_network(
            genome, task, init=init, seed=seed, max_params=self.max_params, **autoinit_options
        )

    # -- mutations (each returns None when it does not apply) ------------------------------

    def _insert_node(self, g: NetworkGenome, rng: np.random.Generator) -> NetworkGenome | None:
        if len(g) >= self.max_nodes:
            return None
        edges = [(i, n.id) for n in g.nodes for i in n.inputs] + [(g.output, "head")]
        src, dst = _choice(rng, edges)
        new = self.random_layer(g.fresh_id(), src, rng)
        return _rewire(g, dst, src, new.id, extra=(new,))

    def _remove_node(self, g: NetworkGenome, rng: np.random.Generator) -> NetworkGenome | None:
        layers = [n for n in g.nodes if not n.is_merge]
        if not layers:
            return None
        victim = _choice(rng, layers)
        src = victim.inputs[0]
        nodes = [
            n.replace(inputs=[src if i == victim.id else i for i in n.inputs])
            for n in g.nodes
            if n.id != victim.id
        ]
        output = src if g.output == victim.id else g.output
        return _collapse_merges(nodes, output, g.head)

    def _add_skip(self, g: NetworkGenome, rng: np.random.Generator) -> NetworkGenome | None:
        order = [INPUT, *(n.id for n in g.nodes)]
        targets = [*(n.id for n in g.nodes), "head"]
        for _ in range(10):
            dst = _choice(rng, targets)
            # Anything before dst in topological order cannot depend on dst: no cycle.
            before = order[: order.index(dst)] if dst != "head" else order
            current = g[dst].inputs if dst != "head" else (g.output,)
            sources = [s for s in before if s not in current and s != dst]
            if not sources:
                continue
            src = _choice(rng, sources)
            if dst != "head" and g[dst].is_merge:
                return _replace_node(g, g[dst].replace(inputs=[*g[dst].inputs, src]))
            if len(g) >= self.max_nodes:
                return None
            merge = Node.make(g.fresh_id(), _choice(rng, tuple(MERGE_OPS)), [current[0], src])
            return _rewire(g, dst, current[0], merge.id, extra=(merge,))
        return None

    def _remove_skip(self, g: NetworkGenome, rng: np.random.Generator) -> NetworkGenome | None:
        consumers = g.consumers()
        edges = [
            (n.id, i) for n in g.nodes if n.is_merge for i in n.inputs if len(consumers[i]) >= 2
        ]
        if not edges:
            return None
        merge_id, src = _choice(rng, edges)
        nodes = [
            n.replace(inputs=[i for i in n.inputs if i != src]) if n.id == merge_id else n
            for n in g.nodes
        ]
        return _collapse_merges(nodes, g.output, g.head)

    def _change_op(self, g: NetworkGenome, rng: np.random.Generator) -> NetworkGenome | None:
        node = _choice(rng, g.nodes) if g.nodes else None
        if node is None:
            return None
        if node.is_merge:
            other = "concat" if node.op == "add" else "add"
            return _replace_node(g, node.replace(op=other, params={}))
        op = str(rng.choice(self._ops, p=self._op_p))
        if op == node.op:
            return None
        return _replace_node(g, node.replace(op=op, params=self.random_params(op, rng)))

    def _change_params(self, g: NetworkGenome, rng: np.random.Generator) -> NetworkGenome | None:
        nodes = [n for n in g.nodes if LAYER_OPS.get(n.op)]
        if not nodes:
            return None
        node = _choice(rng, nodes)
        name = _choice(rng, sorted(LAYER_OPS[node.op]))
        spec = LAYER_OPS[node.op][name]
        values = [v for v in dict.fromkeys(spec.choices) if v != node.p[name]]
        return _replace_node(g, node.replace(params={**node.p, name: _choice(rng, values)}))

    def _change_activation(
        self, g: NetworkGenome, rng: np.random.Generator
    ) -> NetworkGenome | None:
        nodes = [n for n in g.nodes if n.op == "activation"]
        if not nodes:
            return None
        node = _choice(rng, nodes)
        return _replace_node(g, node.replace(params=self.random_activation(rng)))

    def _change_head(self, g: NetworkGenome, rng: np.random.Generator) -> NetworkGenome | None:
        return NetworkGenome(g.nodes, g.output, _choice(rng, [h for h in HEADS if h != g.head]))


def _replace_node(g: NetworkGenome, node: Node) -> NetworkGenome:
    return NetworkGenome(tuple(node if n.id == node.id else n for n in g.nodes), g.output, g.head)


def _rewire(
    g: NetworkGenome, dst: str, old: str, new: str, extra: tuple[Node, ...] = ()
) -> NetworkGenome:
    """``dst`` (a node id or ``"head"``) reads ``new`` instead of ``old``; ``extra`` nodes added."""
    nodes = [
        n.replace(inputs=[new if i == old else i for i in n.inputs]) if n.id == dst else n
        for n in g.nodes
    ]
    return NetworkGenome((*nodes, *extra), new if dst == "head" else g.output, g.head)


def _collapse_merges(nodes: list[Node], output: str, head: str) -> NetworkGenome:
    """Drop duplicate merge inputs; a merge left with one input is replaced by that input."""
    while True:
        nodes = [n.replace(inputs=list(dict.fromkeys(n.inputs))) for n in nodes]
        single = next((n for n in nodes if n.is_merge and len(n.inputs) < 2), None)
        if single is None:
            return NetworkGenome(tuple(nodes), output, head)
        keep = single.inputs[0]
        nodes = [
            n.replace(inputs=[keep if i == single.id else i for i in n.inputs])
            for n in nodes
            if n.id != single.id
        ]
        output = keep if output == single.id else output
