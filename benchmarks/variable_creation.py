"""What one TensorFlow variable costs to create, and when TensorFlow's kernel cache makes it dear.

A ``tf.Variable`` runs a ``VarHandleOp`` whose attributes include the variable's shape, so each
new shape needs a new kernel in TensorFlow's eager kernel cache. ``clear_session`` and any TF
seeding (``keras.utils.set_random_seed``, ``tf.random.set_seed``) empty that cache; the
evolution worker does both before every candidate (its memory release and its reproducible
training need them). This prints the median cost per variable, over ``--repeats`` rounds of
``--variables`` kernels of distinct shapes:

* warm: the same shapes again, nothing cleared;
* after ``clear_session``, and after ``set_random_seed`` (the cache is empty);
* a Conv1D chain built as the search space builds candidates: variables created by each layer
  when it is built (``instantiate(draw=True)`` style), or deferred and created with their values
  afterwards (``autoinit_nas._deferred``, what ``build_network`` does for AutoInit).

Usage:
    python benchmarks/variable_creation.py [--variables 20] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import _common
import keras
import numpy as np
import tensorflow as tf

from autoinit_nas import _deferred


def per_variable(shapes: list[tuple[int, ...]], reset: Callable[[], object], repeats: int
                 ) -> float:
    """Median ms per variable over ``repeats`` rounds, ``reset()`` before each round."""
    times = []
    for _ in range(repeats):
        reset()
        t0 = time.perf_counter()
        for s in shapes:
            tf.Variable(np.zeros(s, np.float32), name="kernel")
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / len(shapes) * 1000


def conv_chain(n: int) -> keras.Model:
    x = keras.Input((40, 1))
    h = x
    for i in range(n):
        h = keras.layers.Conv1D(4 + i, 3, padding="same", kernel_initializer="zeros",
                                name=f"n{i}_conv")(h)
    return keras.Model(x, h)


def chain_costs(n: int, repeats: int) -> tuple[float, float, float, float]:
    """(eager build, deferred build, deferred creation, variables) in ms per model, medians,
    with clear_session before each build."""
    eager, built, created = [], [], []
    count = 0
    for _ in range(repeats):
        keras.backend.clear_session(free_memory=False)
        t0 = time.perf_counter()
        conv_chain(n)
        eager.append(time.perf_counter() - t0)
        keras.backend.clear_session(free_memory=False)
        t0 = time.perf_counter()
        with _deferred.deferred_weights():
            model = conv_chain(n)
        t1 = time.perf_counter()
        pending = _deferred.pending(model)
        for v in pending:
            _deferred.create(v, np.zeros(tuple(v.shape)))
        created.append(time.perf_counter() - t1)
        built.append(t1 - t0)
        count = len(pending)
    return (float(np.median(eager)) * 1000, float(np.median(built)) * 1000,
            float(np.median(created)) * 1000, float(count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variables", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    shapes = [(3, k % 7 + 1, k % 5 + 2) for k in range(args.variables)]
    per_variable(shapes, lambda: None, 1)  # the shapes' kernels are now cached
    rows = [
        ["warm (same shapes, nothing cleared)", per_variable(shapes, lambda: None, args.repeats)],
        ["after keras.backend.clear_session()", per_variable(
            shapes, lambda: keras.backend.clear_session(free_memory=False), args.repeats)],
        ["after keras.utils.set_random_seed(1)", per_variable(
            shapes, lambda: keras.utils.set_random_seed(1), args.repeats)],
    ]
    print(_common.format_table(rows, ["tf.Variable of a new-to-the-cache shape", "ms"]))
    eager, built, created, count = chain_costs(args.variables // 2, args.repeats)
    print(f"\nConv1D chain of {args.variables // 2} layers ({count:.0f} variables), "
          "clear_session before each build, ms per model:")
    print(_common.format_table(
        [["variables created by each layer as it is built", eager, "", eager],
         ["deferred, then created with their values", built, created, built + created]],
        ["build", "functional build", "variable creation", "total"]))
    _common.save_json("variable_creation.json", {
        "per_variable_ms": rows, "chain": {"eager": eager, "deferred_build": built,
                                           "deferred_create": created, "variables": count}})


if __name__ == "__main__":
    main()
