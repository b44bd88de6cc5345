"""The activation-expression genome and its search space.

A genome is one expression tree (see ``autoinit_nas._expression``) over ``x`` and the learnable
alpha, beta, gamma. Mutations insert an op above a node, remove an op (keeping one operand),
change an op for another of the same arity (or a leaf for another leaf) and regenerate a
subtree. Two expressions that take the same values on a grid (with alpha = beta = gamma = 1)
are duplicates: ``signature`` gives the key, and mutation never returns a duplicate of its
parent nor a constant or non-finite function. The space builds a genome by putting it in every
activation node of a backbone network.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from autoinit_nas import _expression as expr
from autoinit_nas.errors import InvalidGenomeError
from search_spaces.base import Genome, SearchSpace, TaskSpec

__all__ = ["ActivationGenome", "ActivationSearchSpace", "random_expression"]

_UNARY = tuple(sorted(expr.UNARY_OPS))
_BINARY = tuple(sorted(expr.BINARY_OPS))
_LEAVES = ("x", "x", "x", *expr.PARAMETERS)


@dataclass(frozen=True, eq=False)
class ActivationGenome(Genome):
    """An activation function as an expression tree.

    Args:
        tree: a formula string, a nested-list tree or a canonical tuple tree.

    Example:
        >>> str(ActivationGenome("alpha*tanh(beta*x) + gamma*x"))
        'alpha*tanh(beta*x) + gamma*x'
    """

    kind: ClassVar[str] = "activation"
    tree: Any

    def __post_init__(self) -> None:
        try:
            tree = (
                expr.parse(self.tree)
                if isinstance(self.tree, str)
                else expr.from_json_tree(self.tree)
            )
        except ValueError as err:
            raise InvalidGenomeError(f"Invalid activation genome: {err}") from None
        object.__setattr__(self, "tree", tree)

    @property
    def formula(self) -> str:
        return expr.format_tree(self.tree)

    def __str__(self) -> str:
        return self.formula

    def __repr__(self) -> str:
        return f"ActivationGenome({self.formula!r})"

    def values(self, grid: np.ndarray) -> np.ndarray:
        """f on ``grid`` (float64) with alpha = beta = gamma = 1."""
        return expr.evaluate(self.tree, grid, backend="numpy")

    def to_dict(self) -> dict[str, Any]:
        return {"expression": expr.to_json_tree(self.tree)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActivationGenome:
        if not isinstance(data, Mapping) or set(data) - {"kind"} != {"expression"}:
            raise InvalidGenomeError(
                f"Invalid activation genome: expected an object with key 'expression'. Received: {data!r}"
            )
        if data.get("kind", cls.kind) != cls.kind:
            raise InvalidGenomeError(
                f"Invalid activation genome: expected kind {cls.kind!r}. Received: {data['kind']!r}"
            )
        return cls(data["expression"])


def random_expression(rng: np.random.Generator, max_depth: int = 3, p_leaf: float = 0.3) -> Any:
    """A random canonical tree of depth at most ``max_depth`` (grow method)."""
    if max_depth <= 1 or (max_depth < 3 and rng.random() < p_leaf):
        return str(rng.choice(_LEAVES))
    if rng.random() < 0.6:
        return (str(rng.choice(_UNARY)), random_expression(rng, max_depth - 1, p_leaf))
    return (
        str(rng.choice(_BINARY)),
        random_expression(rng, max_depth - 1, p_leaf),
        random_expression(rng, max_depth - 1, p_leaf),
    )


class ActivationSearchSpace(SearchSpace):
    """Activation functions for a fixed backbone architecture.

    Args:
        backbone: the network whose activation nodes all get the evolved function: a
            ``NetworkGenome``, a seed name (``"mnist1d_cnn"``, ``"mnist1d_mlp"``) or genome JSON;
            by default the MNIST-1D CNN (rank-agnostic, so it also serves images and vectors).
        max_depth: largest tree depth sampling and mutation produce.
        max_size: largest number of tree nodes sampling and mutation produce.
        grid: points where values are compared for duplicates and degeneracy.
    """

    def __init__(
        self,
        backbone: Any = None,
        *,
        max_depth: int = 5,
        max_size: int = 15,
        grid: np.ndarray | None = None,
    ) -> None:
        from search_spaces.seeds import resolve_genome

        self.backbone = resolve_genome("mnist1d_cnn" if backbone is None else backbone)
        self.max_depth = max_depth
        self.max_size = max_size
        self.grid = np.linspace(-5.0, 5.0, 201) if grid is None else np.asarray(grid, np.float64)

    # -- identity of functions -------------------------------------------------------------

    def signature(self, genome: ActivationGenome) -> str:
        """Key equal for expressions with equal values on the grid (to 6 decimals)."""
        # + 0.0 turns -0.0 into 0.0 so that sign-of-zero noise does not split duplicates.
        v = np.round(genome.values(self.grid), 6) + 0.0
        return hashlib.sha256(v.tobytes()).hexdigest()[:16]

    def is_duplicate(self, a: ActivationGenome, b: ActivationGenome) -> bool:
        return self.signature(a) == self.signature(b)

    def is_usable(self, genome: ActivationGenome) -> bool:
        """Finite, not constant on the grid, and within the size and depth limits."""
        v = genome.values(self.grid)
        return (
            bool(np.all(np.isfinite(v)))
            and float(np.ptp(v)) > 1e-6
            and expr.tree_depth(genome.tree) <= self.max_depth
            and expr.tree_size(genome.tree) <= self.max_size
        )

    # -- SearchSpace -----------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> ActivationGenome:
        for _ in range(1000):
            g = ActivationGenome(random_expression(rng, min(self.max_depth, 4)))
            if self.is_usable(g):
                return g
        return ActivationGenome("x")  # pragma: no cover - practically unreachable

    def mutate(self, genome: Genome, rng: np.random.Generator) -> ActivationGenome:
        return self.mutate_named(genome, rng)[0]

    def mutate_named(
        self, genome: Genome, rng: np.random.Generator
    ) -> tuple[ActivationGenome, str]:
        """Like ``mutate`` and also the mutation's name (insert/remove/change/regenerate)."""
        assert isinstance(genome, ActivationGenome)
        parent = self.signature(genome)
        ops = {
            "insert": self._insert,
            "remove": self._remove,
            "change": self._change,
            "regenerate": self._regenerate,
        }
        names = list(ops)
        for _ in range(200):
            name = names[int(rng.integers(len(names)))]
            tree = ops[name](genome.tree, rng)
            if tree is None:
                continue
            child = ActivationGenome(tree)
            if self.is_usable(child) and self.signature(child) != parent:
                return child, name
        return self.sample(rng), "regenerate"

    def _pick(self, tree: Any, rng: np.random.Generator, inner: bool = False) -> Any:
        nodes = [(p, t) for p, t in expr.subtrees(tree) if not inner or isinstance(t, tuple)]
        return nodes[int(rng.integers(len(nodes)))] if nodes else (None, None)

    def _insert(self, tree: Any, rng: np.random.Generator) -> Any:
        path, sub = self._pick(tree, rng)
        if rng.random() < 0.5:
            new = (str(rng.choice(_UNARY)), sub)
        else:
            other = random_expression(rng, 2)
            new = (
                str(rng.choice(_BINARY)),
                *((sub, other) if rng.random() < 0.5 else (other, sub)),
            )
        return expr.replace_at(tree, path, new)

    def _remove(self, tree: Any, rng: np.random.Generator) -> Any:
        path, sub = self._pick(tree, rng, inner=True)
        if sub is None:
            return None
        return expr.replace_at(tree, path, sub[1 + int(rng.integers(len(sub) - 1))])

    def _change(self, tree: Any, rng: np.random.Generator) -> Any:
        path, sub = self._pick(tree, rng)
        if isinstance(sub, tuple):
            pool = _UNARY if len(sub) == 2 else _BINARY
            return expr.replace_at(
                tree, path, (str(rng.choice([o for o in pool if o != sub[0]])), *sub[1:])
            )
        leaves = [leaf for leaf in ("x", *expr.PARAMETERS) if leaf != sub]
        return expr.replace_at(tree, path, str(rng.choice(leaves)))

    def _regenerate(self, tree: Any, rng: np.random.Generator) -> Any:
        path, _ = self._pick(tree, rng)
        return expr.replace_at(tree, path, random_expression(rng, 3))

    def crossover(
        self, a: Genome, b: Genome, rng: np.random.Generator
    ) -> tuple[ActivationGenome, ActivationGenome]:
        """Subtree exchange; a child that is unusable is replaced by its parent."""
        assert isinstance(a, ActivationGenome) and isinstance(b, ActivationGenome)
        pa, sa = self._pick(a.tree, rng)
        pb, sb = self._pick(b.tree, rng)
        c1 = ActivationGenome(expr.replace_at(a.tree, pa, sb))
        c2 = ActivationGenome(expr.replace_at(b.tree, pb, sa))
        return (c1 if self.is_usable(c1) else a), (c2 if self.is_usable(c2) else b)

    def validate(self, genome: Genome) -> None:
        if not isinstance(genome, ActivationGenome):
            raise InvalidGenomeError(
                f"Expected an ActivationGenome. Received: {type(genome).__name__}"
            )
        depth, size = expr.tree_depth(genome.tree), expr.tree_size(genome.tree)
        if depth > self.max_depth or size > self.max_size:
            raise InvalidGenomeError(
                f"Invalid activation genome {genome.formula!r}: depth {depth} / size {size} exceed "
                f"the space's limits (max_depth={self.max_depth}, max_size={self.max_size})."
            )

    def from_json(self, text: str) -> ActivationGenome:
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as err:
            raise InvalidGenomeError(
                f"Invalid activation genome JSON: {err}. Received: {text!r}"
            ) from None
        return ActivationGenome.from_dict(data)

    def network_for(self, genome: ActivationGenome) -> Any:
        """The backbone with every activation node set to ``genome``'s expression."""
        from search_spaces.network import NetworkGenome

        nodes = tuple(
            n.replace(params={"expression": genome.formula}) if n.op == "activation" else n
            for n in self.backbone.nodes
        )
        return NetworkGenome(nodes, self.backbone.output, self.backbone.head)

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

        assert isinstance(genome, ActivationGenome)
        return build_network(
            self.network_for(genome), task, init=init, seed=seed, **autoinit_options
        )
