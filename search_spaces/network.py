"""The network-graph genome: a DAG of layer and merge nodes between the task input and a head.

Every node names its inputs by id (``"input"`` is the task input); ``output`` names the node whose
tensor feeds the task head. Layer nodes have exactly one input, merge nodes (``add``, built as
``autoinit_nas.WeightedAdd``, and ``concat``) two or more distinct ones. Ops are rank-agnostic:
``conv`` becomes Conv1D on sequences and Conv2D on images, and the builder adapts shapes, so any
valid genome decodes for any task. Constructing a genome validates it and puts its nodes in a
canonical topological order; an invalid one raises ``InvalidGenomeError`` naming the node.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from autoinit_nas import _expression as expr
from autoinit_nas.errors import InvalidGenomeError
from search_spaces.base import Genome

__all__ = [
    "ACTIVATION_FUNCTIONS",
    "HEADS",
    "INPUT",
    "LAYER_OPS",
    "MERGE_OPS",
    "NetworkGenome",
    "Node",
    "ParamSpec",
]

INPUT = "input"
HEADS = ("flatten", "global_avg", "global_max")
#: Keras activations (by name) an activation node may use besides evolved expressions.
ACTIVATION_FUNCTIONS = (
    "relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "tanh",
    "sigmoid",
    "softplus",
    "softsign",
    "mish",
    "leaky_relu",
    "relu6",
    "hard_sigmoid",
    "hard_silu",
    "linear",
)
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: its type, the accepted range and the values sampling draws from."""

    kind: type
    low: float
    high: float
    choices: tuple[Any, ...]

    def check(self, value: Any) -> Any:
        """The value in canonical type, or a ``ValueError`` saying what was expected."""
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected an integer in [{self.low}, {self.high}]")
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"expected a number in [{self.low}, {self.high}]")
            value = float(value)
        if not self.low <= value <= self.high:
            raise ValueError(f"expected a value in [{self.low}, {self.high}]")
        return value


def _int(low: int, high: int, *choices: int) -> ParamSpec:
    return ParamSpec(int, low, high, choices)


_CONV = {
    "filters": _int(1, 1024, 8, 16, 25, 32, 64),
    "kernel_size": _int(1, 15, 1, 3, 3, 5, 7),
    "strides": _int(1, 4, 1, 1, 2),
}
_POOL = {"pool_size": _int(1, 8, 2, 3), "strides": _int(1, 8, 1, 2, 2)}

#: Layer ops (one input) and their parameters. ``activation`` is special: see ``Node``.
LAYER_OPS: dict[str, dict[str, ParamSpec]] = {
    "dense": {"units": _int(1, 8192, 16, 32, 64, 100, 128, 256)},
    "conv": _CONV,
    "separable_conv": _CONV,
    "depthwise_conv": {
        "kernel_size": _CONV["kernel_size"],
        "strides": _CONV["strides"],
        "depth_multiplier": _int(1, 8, 1, 1, 2),
    },
    "max_pool": _POOL,
    "avg_pool": _POOL,
    "batch_norm": {},
    "layer_norm": {},
    "dropout": {"rate": ParamSpec(float, 0.0, 0.95, (0.1, 0.25, 0.5))},
    "activation": {},
    "identity": {},
    "flatten": {},
}
#: Merge ops (two or more distinct inputs).
MERGE_OPS: dict[str, dict[str, ParamSpec]] = {"add": {}, "concat": {}}
_ALL_OPS = {**LAYER_OPS, **MERGE_OPS}


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class Node:
    """One node of a network genome.

    Args:
        id: identifier (letter first, then letters, digits, ``_``; at most 32 characters).
        op: a key of ``LAYER_OPS`` or ``MERGE_OPS``.
        inputs: ids of the nodes (or ``"input"``) it reads.
        params: its parameters as sorted ``(name, value)`` pairs; use ``Node.make``.

    An ``activation`` node has exactly one of ``function`` (a name in ``ACTIVATION_FUNCTIONS``)
    or ``expression`` (a formula for ``autoinit_nas.ParametricActivation``).
    """

    id: str
    op: str
    inputs: tuple[str, ...]
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, id: str, op: str, inputs: Iterable[str] | str, **params: Any) -> Node:
        """Convenience constructor: ``Node.make("n0", "dense", "input", units=100)``."""
        ins = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        return cls(id, op, ins, tuple(sorted(params.items())))

    @property
    def p(self) -> dict[str, Any]:
        """The parameters as a dict."""
        return dict(self.params)

    @property
    def is_merge(self) -> bool:
        return self.op in MERGE_OPS

    def replace(self, **changes: Any) -> Node:
        """A copy with ``inputs``/``op``/``params`` changed (``params`` given as a mapping)."""
        params = changes.pop("params", None)
        if params is not None:
            changes["params"] = tuple(sorted(dict(params).items()))
        if "inputs" in changes:
            changes["inputs"] = tuple(changes["inputs"])
        return Node(**{**self.__dict__, **changes})

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op, "inputs": list(self.inputs), "params": self.p}


def _check_node(node: Node) -> Node:
    """The node with canonical parameter values; raises InvalidGenomeError naming it."""

    def bad(msg: str) -> InvalidGenomeError:
        return InvalidGenomeError(f"Invalid genome: node {node.id!r} ({node.op}): {msg}")

    if not isinstance(node.id, str) or not _ID.match(node.id) or node.id == INPUT:
        raise InvalidGenomeError(
            f"Invalid genome: node id must match {_ID.pattern} and differ from {INPUT!r}. "
            f"Received: id={node.id!r}"
        )
    if node.op not in _ALL_OPS:
        raise bad(f"unknown op. Expected one of {sorted(_ALL_OPS)}. Received: op={node.op!r}")
    if not all(isinstance(i, str) for i in node.inputs):
        raise bad(f"inputs must be node ids. Received: inputs={list(node.inputs)!r}")
    if node.is_merge:
        if len(node.inputs) < 2 or len(set(node.inputs)) != len(node.inputs):
            raise bad(f"a merge needs two or more distinct inputs. Received: {list(node.inputs)}")
    elif len(node.inputs) != 1:
        raise bad(f"a layer op takes exactly one input. Received: {list(node.inputs)}")
    params = dict(node.params)
    if node.op == "activation":
        return node.replace(params=_check_activation(params, bad))
    specs = _ALL_OPS[node.op]
    unknown = sorted(set(params) - set(specs))
    missing = sorted(set(specs) - set(params))
    if unknown or missing:
        raise bad(
            f"parameters must be exactly {sorted(specs)}. Unknown: {unknown}, missing: {missing}"
        )
    out = {}
    for name, spec in specs.items():
        try:
            out[name] = spec.check(params[name])
        except ValueError as err:
            raise bad(f"parameter {name!r}: {err}. Received: {params[name]!r}") from None
    return node.replace(params=out)


def _check_activation(params: dict[str, Any], bad: Any) -> dict[str, Any]:
    if set(params) == {"function"}:
        if params["function"] not in ACTIVATION_FUNCTIONS:
            raise bad(
                f"unknown activation function. Expected one of {list(ACTIVATION_FUNCTIONS)}. "
                f"Received: function={params['function']!r}"
            )
        return params
    if set(params) == {"expression"}:
        try:
            tree = (
                expr.parse(params["expression"])
                if isinstance(params["expression"], str)
                else expr.from_json_tree(params["expression"])
            )
        except ValueError as err:
            raise bad(f"invalid expression: {err}") from None
        return {"expression": expr.format_tree(tree)}
    raise bad(
        "an activation node needs exactly one of 'function' or 'expression'. "
        f"Received params: {sorted(params)}"
    )


def _toposort(nodes: tuple[Node, ...]) -> tuple[Node, ...]:
    """Nodes in topological order (ties keep the given order); raises on cycles."""
    index = {n.id: i for i, n in enumerate(nodes)}
    indegree = {n.id: sum(1 for i in n.inputs if i != INPUT) for n in nodes}
    consumers: dict[str, list[str]] = {n.id: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            if i != INPUT:
                consumers[i].append(n.id)
    heap = [index[k] for k, d in indegree.items() if d == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        n = nodes[heapq.heappop(heap)]
        order.append(n)
        for c in consumers[n.id]:
            indegree[c] -= 1
            if indegree[c] == 0:
                heapq.heappush(heap, index[c])
    if len(order) != len(nodes):
        stuck = sorted((n for n in nodes if indegree[n.id] > 0), key=lambda n: index[n.id])
        raise InvalidGenomeError(
            f"Invalid genome: node {stuck[0].id!r} is on a cycle "
            f"(nodes on or behind cycles: {[n.id for n in stuck]}). A genome must be acyclic."
        )
    return tuple(order)


@dataclass(frozen=True, eq=False)
class NetworkGenome(Genome):
    """A network architecture: nodes (a DAG), the node feeding the head, and the head's reduction.

    Args:
        nodes: the nodes, in any order (stored in canonical topological order).
        output: id of the node whose tensor goes to the head (``"input"`` for no hidden layers).
        head: how a sequence or image becomes a vector before the classifier: ``"flatten"``,
            ``"global_avg"`` or ``"global_max"`` (ignored for flat tensors).

    Raises:
        InvalidGenomeError: unknown op, wrong parameter or types, dangling edge, cycle, or a
            node that does not lead to the output; the message names the node.
    """

    kind: ClassVar[str] = "network"
    nodes: tuple[Node, ...]
    output: str
    head: str = "flatten"
    _by_id: dict[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nodes = tuple(self.nodes)
        if not all(isinstance(n, Node) for n in nodes):
            raise InvalidGenomeError(
                f"Invalid genome: nodes must be Node objects. Received: {nodes!r}"
            )
        nodes = tuple(_check_node(n) for n in nodes)
        ids = [n.id for n in nodes]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise InvalidGenomeError(
                f"Invalid genome: node id {dupes[0]!r} is used more than once."
            )
        known = set(ids) | {INPUT}
        for n in nodes:
            for i in n.inputs:
                if i not in known:
                    raise InvalidGenomeError(
                        f"Invalid genome: node {n.id!r} has a dangling edge: its input {i!r} is "
                        f"not a node of the genome (nor {INPUT!r})."
                    )
        if not isinstance(self.output, str) or self.output not in known:
            raise InvalidGenomeError(
                f"Invalid genome: output must be a node id or {INPUT!r}. Received: output={self.output!r}"
            )
        if self.head not in HEADS:
            raise InvalidGenomeError(
                f"Invalid genome: head must be one of {list(HEADS)}. Received: head={self.head!r}"
            )
        nodes = _toposort(nodes)
        by_id = {n.id: n for n in nodes}
        live = {self.output}
        for n in reversed(nodes):
            if n.id in live:
                live.update(n.inputs)
        for n in nodes:
            if n.id not in live:
                raise InvalidGenomeError(
                    f"Invalid genome: node {n.id!r} does not lead to the output {self.output!r} "
                    "(every node must be connected to the head)."
                )
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "_by_id", by_id)

    def __getitem__(self, node_id: str) -> Node:
        return self._by_id[node_id]

    def __len__(self) -> int:
        return len(self.nodes)

    def consumers(self) -> dict[str, list[str]]:
        """For ``"input"`` and every node, the ids reading it (``"head"`` for the head)."""
        out: dict[str, list[str]] = {INPUT: [], **{n.id: [] for n in self.nodes}}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.id)
        out[self.output].append("head")
        return out

    def fresh_id(self) -> str:
        """An id not used in the genome (``n<k>``)."""
        k = len(self.nodes)
        while f"n{k}" in self._by_id:
            k += 1
        return f"n{k}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [n.to_dict() for n in self.nodes],
            "output": self.output,
            "head": self.head,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NetworkGenome:
        if not isinstance(data, Mapping):
            raise InvalidGenomeError(f"Invalid genome: expected a JSON object. Received: {data!r}")
        extra = sorted(set(data) - {"kind", "nodes", "output", "head"})
        if extra or "nodes" not in data or "output" not in data:
            raise InvalidGenomeError(
                "Invalid genome: expected keys 'nodes', 'output' and optionally 'head'. "
                f"Received: {sorted(data)}"
            )
        if data.get("kind", cls.kind) != cls.kind:
            raise InvalidGenomeError(
                f"Invalid genome: expected kind {cls.kind!r}. Received: kind={data['kind']!r}"
            )
        if not isinstance(data["nodes"], list):
            raise InvalidGenomeError(
                f"Invalid genome: 'nodes' must be a list. Received: {data['nodes']!r}"
            )
        nodes = []
        for k, raw in enumerate(data["nodes"]):
            name = raw.get("id", f"#{k}") if isinstance(raw, Mapping) else f"#{k}"
            if (
                not isinstance(raw, Mapping)
                or set(raw) - {"id", "op", "inputs", "params"}
                or not {"id", "op", "inputs"} <= set(raw)
                or not isinstance(raw["inputs"], list)
                or not isinstance(raw.get("params", {}), Mapping)
                or not isinstance(raw["op"], str)
            ):
                raise InvalidGenomeError(
                    f"Invalid genome: node {name!r} must be an object with 'id' (str), 'op' (str), "
                    f"'inputs' (list of ids) and 'params' (object). Received: {raw!r}"
                )
            params = {k2: _freeze(v) for k2, v in raw.get("params", {}).items()}
            nodes.append(
                Node(raw["id"], raw["op"], tuple(raw["inputs"]), tuple(sorted(params.items())))
            )
        return cls(tuple(nodes), data["output"], data.get("head", "flatten"))

    def summary(self) -> str:
        """One line per node, e.g. ``n2 = conv(n1; filters=25, kernel_size=3, strides=2)``."""
        lines = []
        for n in self.nodes:
            args = ", ".join(f"{k}={v}" for k, v in n.params)
            lines.append(f"{n.id} = {n.op}({', '.join(n.inputs)}{'; ' + args if args else ''})")
        lines.append(f"head = {self.head}({self.output})")
        return "\n".join(lines)
