"""Activation expressions: op vocabulary, parser, printer and a vectorized evaluator.

An expression is a tree. A leaf is the input ``"x"``, a learnable parameter (``"alpha"``,
``"beta"``, ``"gamma"``) or a non-negative float constant; an inner node is a tuple
``(op, child, ...)`` with one child for unary ops and two for binary ops. In JSON a tree is a
nested list, e.g. ``["add", ["mul", "alpha", ["tanh", ["mul", "beta", "x"]]], ["mul", "gamma", "x"]]``,
which prints as ``alpha*tanh(beta*x) + gamma*x``.

The evaluator takes an array namespace: ``keras.ops`` (inside a layer's ``call``) or NumPy (host
float64 evaluation, e.g. for duplicate detection on a grid). Every op is elementwise and
numerically safe: ``exp`` clips its argument, products, squares and quotients are clipped to
``+-LIMIT``, so no finite input gives inf or NaN in float32.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BINARY_OPS",
    "LIMIT",
    "PARAMETERS",
    "UNARY_OPS",
    "Tree",
    "denominators",
    "evaluate",
    "format_tree",
    "from_json_tree",
    "parameters_of",
    "parse",
    "subtrees",
    "to_json_tree",
    "tree_depth",
    "tree_size",
]

Tree = str | float | tuple

#: Bound on every unbounded intermediate value (far inside float32 range: LIMIT**2 < 3.4e38).
LIMIT = 1e15
#: Largest argument of exp, so that exp never exceeds LIMIT.
EXP_MAX = math.log(LIMIT)
#: Denominator offset of the safe division.
DIV_EPS = 1e-3
PARAMETERS = ("alpha", "beta", "gamma")
_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805


@dataclass(frozen=True)
class _Op:
    name: str
    arity: int
    symbol: str  # infix symbol for binary ops, call name for the others


def _unary(names: str) -> dict[str, _Op]:
    return {n: _Op(n, 1, n) for n in names.split()}


UNARY_OPS: dict[str, _Op] = {
    "neg": _Op("neg", 1, "-"),
    "abs": _Op("abs", 1, "abs"),
    "square": _Op("square", 1, "^2"),
    **_unary("exp sin cos tanh sigmoid erf softplus relu elu selu swish gelu arctan"),
}
BINARY_OPS: dict[str, _Op] = {
    "add": _Op("add", 2, "+"),
    "sub": _Op("sub", 2, "-"),
    "mul": _Op("mul", 2, "*"),
    "div": _Op("div", 2, "/"),
    "max": _Op("max", 2, "max"),
    "min": _Op("min", 2, "min"),
}
_OPS = {**UNARY_OPS, **BINARY_OPS}
_CALL_NAMES = {op.symbol: op.name for op in _OPS.values() if op.symbol.isalpha()}
_ALIASES = "square:square neg:neg silu:swish atan:arctan maximum:max minimum:min"
_CALL_NAMES.update(dict(pair.split(":") for pair in _ALIASES.split()))


# --------------------------------------------------------------------------- tree utilities


def _check(tree: Any, path: tuple[int, ...]) -> Tree:
    """Canonical tuple tree from a tuple/list tree; raises ValueError naming the node path."""
    where = f"node at path {list(path)}"
    if isinstance(tree, bool):
        raise ValueError(f"{where}: expected a leaf or [op, ...]. Received: {tree!r}")
    if isinstance(tree, str):
        if tree == "x" or tree in PARAMETERS:
            return tree
        raise ValueError(
            f"{where}: unknown leaf {tree!r}. Expected 'x', one of {list(PARAMETERS)} or a number."
        )
    if isinstance(tree, int | float):
        value = float(tree)
        if not math.isfinite(value):
            raise ValueError(f"{where}: constants must be finite. Received: {tree!r}")
        return ("neg", -value) if value < 0 else value
    if isinstance(tree, list | tuple) and tree and isinstance(tree[0], str):
        op = _OPS.get(tree[0])
        if op is None:
            raise ValueError(f"{where}: unknown op {tree[0]!r}. Expected one of {sorted(_OPS)}.")
        if len(tree) != op.arity + 1:
            raise ValueError(
                f"{where}: op {op.name!r} takes {op.arity} operand(s). Received: {len(tree) - 1}."
            )
        return (op.name, *(_check(c, (*path, i)) for i, c in enumerate(tree[1:])))
    raise ValueError(f"{where}: expected a leaf or [op, operand, ...]. Received: {tree!r}")


def from_json_tree(tree: Any) -> Tree:
    """Validate a nested-list tree and return its canonical tuple form.

    Raises:
        ValueError: naming the path of the offending node (unknown op or leaf, wrong arity).
    """
    return _check(tree, ())


def to_json_tree(tree: Tree) -> Any:
    """Nested lists (JSON-compatible) from a tuple tree."""
    if isinstance(tree, tuple):
        return [tree[0], *(to_json_tree(c) for c in tree[1:])]
    return tree


def subtrees(tree: Tree, path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Tree]]:
    """Every (path, subtree) pair, pre-order; a path indexes the children (0-based)."""
    yield path, tree
    if isinstance(tree, tuple):
        for i, child in enumerate(tree[1:]):
            yield from subtrees(child, (*path, i))


def replace_at(tree: Tree, path: Sequence[int], new: Tree) -> Tree:
    """A copy of ``tree`` with the subtree at ``path`` replaced by ``new``."""
    if not path:
        return new
    assert isinstance(tree, tuple)
    children = list(tree[1:])
    children[path[0]] = replace_at(children[path[0]], path[1:], new)
    return (tree[0], *children)


def tree_size(tree: Tree) -> int:
    """Number of nodes (leaves included)."""
    return sum(1 for _ in subtrees(tree))


def tree_depth(tree: Tree) -> int:
    """Depth; a leaf has depth 1."""
    if isinstance(tree, tuple):
        return 1 + max(tree_depth(c) for c in tree[1:])
    return 1


def parameters_of(tree: Tree) -> tuple[str, ...]:
    """The learnable parameters the tree uses, in the order of ``PARAMETERS``."""
    used = {t for _, t in subtrees(tree) if isinstance(t, str)}
    return tuple(p for p in PARAMETERS if p in used)


# --------------------------------------------------------------------------- printing

_PREC = {"add": 1, "sub": 1, "mul": 2, "div": 2, "neg": 3, "square": 4}
_ATOM = 5


def _prec(tree: Tree) -> int:
    return _PREC.get(tree[0], _ATOM) if isinstance(tree, tuple) else _ATOM


def _fmt_const(value: float) -> str:
    return repr(float(value))


def format_tree(tree: Tree) -> str:
    """The formula of a tree, with as few parentheses as parse-back exactness allows.

    Example:
        >>> format_tree(("add", ("mul", "alpha", ("tanh", "x")), "x"))
        'alpha*tanh(x) + x'
    """
    if isinstance(tree, str):
        return tree
    if isinstance(tree, float):
        return _fmt_const(tree)
    name, *args = tree
    if name in ("add", "sub", "mul", "div"):
        p = _PREC[name]
        left, right = args
        ls = format_tree(left)
        rs = format_tree(right)
        if _prec(left) < p:
            ls = f"({ls})"
        # Right operands of equal precedence need parentheses to keep the tree's shape.
        if _prec(right) <= p:
            rs = f"({rs})"
        sym = BINARY_OPS[name].symbol
        return f"{ls} {sym} {rs}" if p == 1 else f"{ls}{sym}{rs}"
    if name == "neg":
        inner = format_tree(args[0])
        return f"-{inner}" if _prec(args[0]) >= _PREC["neg"] else f"-({inner})"
    if name == "square":
        inner = format_tree(args[0])
        return f"{inner}^2" if _prec(args[0]) == _ATOM else f"({inner})^2"
    return f"{_OPS[name].symbol}({', '.join(format_tree(a) for a in args)})"


# --------------------------------------------------------------------------- parsing

_TOKEN = re.compile(
    r"\s*(?:(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|([A-Za-z_]\w*)|(.))"
)


def _tokenize(text: str) -> list[str]:
    tokens = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing whitespace is left
            break
        tokens.append(m.group(1) or m.group(2) or m.group(3))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def error(self, expected: str) -> ValueError:
        got = self.tokens[self.i] if self.i < len(self.tokens) else "end of formula"
        return ValueError(
            f"Cannot parse formula {self.text!r}: expected {expected} at token {self.i}. "
            f"Received: {got!r}"
        )

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, token: str) -> None:
        if self.peek() != token:
            raise self.error(repr(token))
        self.i += 1

    def parse(self) -> Tree:
        tree = self.sum()
        if self.peek() is not None:
            raise self.error("an operator or the end of the formula")
        return tree

    def sum(self) -> Tree:
        tree = self.product()
        while self.peek() in ("+", "-"):
            op = "add" if self.tokens[self.i] == "+" else "sub"
            self.i += 1
            tree = (op, tree, self.product())
        return tree

    def product(self) -> Tree:
        tree = self.unary()
        while self.peek() in ("*", "/"):
            op = "mul" if self.tokens[self.i] == "*" else "div"
            self.i += 1
            tree = (op, tree, self.unary())
        return tree

    def unary(self) -> Tree:
        if self.peek() == "-":
            self.i += 1
            return ("neg", self.unary())
        return self.power()

    def power(self) -> Tree:
        tree = self.atom()
        while self.peek() == "^":
            self.i += 1
            if self.peek() not in ("2", "2.0"):
                raise self.error("the exponent 2 (only squares are in the vocabulary)")
            self.i += 1
            tree = ("square", tree)
        return tree

    def atom(self) -> Tree:
        tok = self.peek()
        if tok is None:
            raise self.error("an operand")
        if tok == "(":
            self.i += 1
            tree = self.sum()
            self.take(")")
            return tree
        if tok == "|":
            self.i += 1
            tree = self.sum()
            self.take("|")
            return ("abs", tree)
        if tok[0].isdigit() or tok[0] == ".":
            self.i += 1
            return float(tok)
        if tok[0].isalpha() or tok[0] == "_":
            self.i += 1
            if tok == "x" or tok in PARAMETERS:
                return tok
            name = _CALL_NAMES.get(tok)
            if name is None:
                raise ValueError(
                    f"Cannot parse formula {self.text!r}: unknown name {tok!r}. Expected 'x', "
                    f"one of {list(PARAMETERS)} or a function among {sorted(_CALL_NAMES)}."
                )
            self.take("(")
            args = [self.sum()]
            while self.peek() == ",":
                self.i += 1
                args.append(self.sum())
            self.take(")")
            if len(args) != _OPS[name].arity:
                raise ValueError(
                    f"Cannot parse formula {self.text!r}: {tok} takes {_OPS[name].arity} "
                    f"argument(s). Received: {len(args)}."
                )
            return (name, *args)
        raise self.error("an operand")


def parse(formula: str) -> Tree:
    """Parse a formula such as ``"alpha*tanh(beta*x) + gamma*x"`` into a canonical tree.

    Accepts ``+ - * /`` (``/`` is the safe division), unary minus, ``^2``, ``|e|``, parentheses,
    non-negative number literals and calls ``f(e)`` / ``max(a, b)`` / ``min(a, b)``.

    Raises:
        ValueError: saying where the formula stops making sense.
    """
    if not isinstance(formula, str):
        raise ValueError(f"Expected a formula string. Received: {formula!r}")
    return _check(_Parser(formula).parse(), ())


# --------------------------------------------------------------------------- evaluation


def _keras_table() -> dict[str, Callable[..., Any]]:
    from keras import ops

    def clip(v: Any) -> Any:
        return ops.clip(v, -LIMIT, LIMIT)

    def div(a: Any, b: Any) -> Any:
        sign = ops.where(ops.greater_equal(b, 0), ops.ones_like(b), -ops.ones_like(b))
        return clip(ops.divide(ops.multiply(a, sign), ops.add(ops.abs(b), DIV_EPS)))

    return {
        "neg": ops.negative,
        "abs": ops.abs,
        "square": lambda a: clip(ops.square(clip(a))),
        "exp": lambda a: ops.exp(ops.minimum(a, EXP_MAX)),
        "sin": ops.sin,
        "cos": ops.cos,
        "tanh": ops.tanh,
        "sigmoid": ops.sigmoid,
        "erf": ops.erf,
        "softplus": ops.softplus,
        "relu": ops.relu,
        "elu": ops.elu,
        "selu": ops.selu,
        "swish": ops.silu,
        "gelu": lambda a: ops.gelu(a, approximate=False),
        "arctan": ops.arctan,
        "add": ops.add,
        "sub": ops.subtract,
        "mul": lambda a, b: clip(ops.multiply(clip(a), clip(b))),
        "div": div,
        "max": ops.maximum,
        "min": ops.minimum,
    }


def _numpy_table() -> dict[str, Callable[..., Any]]:
    from scipy import special

    def clip(v: np.ndarray) -> np.ndarray:
        return np.clip(v, -LIMIT, LIMIT)

    def sigmoid(a: np.ndarray) -> np.ndarray:
        return special.expit(a)

    def elu(a: np.ndarray) -> np.ndarray:
        return np.where(a > 0, a, np.expm1(np.minimum(a, 0.0)))

    return {
        "neg": np.negative,
        "abs": np.abs,
        "square": lambda a: clip(np.square(clip(a))),
        "exp": lambda a: np.exp(np.minimum(a, EXP_MAX)),
        "sin": np.sin,
        "cos": np.cos,
        "tanh": np.tanh,
        "sigmoid": sigmoid,
        "erf": special.erf,
        "softplus": lambda a: np.logaddexp(0.0, a),
        "relu": lambda a: np.maximum(a, 0.0),
        "elu": elu,
        "selu": lambda a: (
            _SELU_SCALE * np.where(a > 0, a, _SELU_ALPHA * np.expm1(np.minimum(a, 0.0)))
        ),
        "swish": lambda a: a * sigmoid(a),
        "gelu": lambda a: 0.5 * a * (1.0 + special.erf(a / math.sqrt(2.0))),
        "arctan": np.arctan,
        "add": np.add,
        "sub": np.subtract,
        "mul": lambda a, b: clip(clip(a) * clip(b)),
        "div": lambda a, b: clip(a * np.where(b >= 0, 1.0, -1.0) / (np.abs(b) + DIV_EPS)),
        "max": np.maximum,
        "min": np.minimum,
    }


_TABLES: dict[str, dict[str, Callable[..., Any]]] = {}


def _table(backend: str) -> dict[str, Callable[..., Any]]:
    if backend not in _TABLES:
        _TABLES[backend] = _keras_table() if backend == "keras" else _numpy_table()
    return _TABLES[backend]


def evaluate(
    tree: Tree, x: Any, params: dict[str, Any] | None = None, *, backend: str = "keras"
) -> Any:
    """Evaluate ``tree`` elementwise on ``x``.

    Args:
        tree: a canonical tree (``parse`` / ``from_json_tree``).
        x: a tensor (``backend="keras"``) or array (``backend="numpy"``, computed in float64).
        params: values of alpha/beta/gamma (default 1.0); scalars or scalar tensors.
        backend: ``"keras"`` (``keras.ops``, differentiable) or ``"numpy"``.

    Returns:
        An array of the shape of ``x`` (constant subtrees are broadcast to it).
    """
    if backend not in ("keras", "numpy"):
        raise ValueError(f"Expected backend 'keras' or 'numpy'. Received: backend={backend!r}")
    table = _table(backend)
    values = dict.fromkeys(PARAMETERS, 1.0)
    values.update(params or {})
    if backend == "numpy":
        x = np.asarray(x, dtype=np.float64)
        values = {k: float(v) for k, v in values.items()}
        const = float
    else:
        from keras import ops

        def const(value: float) -> Any:
            # Constants take the input's dtype so float64 grids stay float64 throughout.
            return ops.convert_to_tensor(value, dtype=x.dtype)

    def ev(t: Tree) -> Any:
        if isinstance(t, tuple):
            return table[t[0]](*(ev(c) for c in t[1:]))
        if t == "x":
            return x
        if isinstance(t, str):
            return values[t]
        return const(t)

    out = ev(tree)
    if backend == "numpy":
        return np.broadcast_to(np.asarray(out, dtype=np.float64), x.shape).copy()
    # A tree without x (a constant) still has to give one value per element.
    return ops.add(ops.cast(out, x.dtype), ops.zeros_like(x)) if not _uses_x(tree) else out


def denominators(tree: Tree, params: dict[str, Any] | None = None
                 ) -> list[Callable[[np.ndarray], np.ndarray]]:
    """NumPy evaluators of the denominators of ``tree``'s safe divisions that depend on x:
    where one crosses zero the quotient has a spike about ``DIV_EPS`` wide, which a quadrature
    has to look for (``_moments.gaussian_moments``)."""
    found = [t[2] for _, t in subtrees(tree)
             if isinstance(t, tuple) and t[0] == "div" and _uses_x(t[2])]
    return [lambda x, d=d: evaluate(d, x, params, backend="numpy") for d in found]


def _uses_x(tree: Tree) -> bool:
    return any(t == "x" for _, t in subtrees(tree))
