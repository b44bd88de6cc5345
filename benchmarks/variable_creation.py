"""What one TensorFlow variable costs to create, and when TensorFlow's kernel cache makes it dear.

A ``tf.Variable`` runs a ``VarHandleOp`` whose attributes include the variable's shape, and an
``AssignVariableOp`` keyed by the shape its handle carries, so each new shape needs two new
kernels in TensorFlow's eager kernel cache. ``clear_session`` and any TF
seeding (``keras.utils.set_random_seed``, ``tf.random.set_seed``) empty that cache; the
evolution worker does both before every candidate (its memory release and its reproducible
training need them). This prints the median cost per variable, over ``--repeats`` rounds of
``--variables`` kernels of distinct shapes:

* warm: the same shapes again, nothing cleared;
* after ``clear_session``, and after ``set_random_seed`` (the cache is empty);
* each of these for ``tf.Variable`` and for the way ``autoinit_nas._deferred`` creates AutoInit's
  weights (a handle of unknown shape, the real shape set on the Python side);
* a Conv1D chain built as the search space builds candidates: variables created by each layer
  when it is built (``instantiate(draw=True)`` style), or deferred and created with their values
  afterwards (``autoinit_nas._deferred``, what ``build_network`` does for AutoInit);
* training step time of search-space candidates whose weights were created either way
  (``--genomes``, 300 alternating ``train_on_batch`` steps each): the handle's shape must not
  slow training.

Usage:
    python benchmarks/variable_creation.py [--variables 20] [--repeats 20] [--genomes 4]
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


def _plain(shapes: list[tuple[int, ...]]) -> Callable[[], object]:
    return lambda: [tf.Variable(np.zeros(s, np.float32), name="kernel") for s in shapes]


def _cache_friendly(shapes: list[tuple[int, ...]]) -> Callable[[], object]:
    with _deferred.deferred_weights():  # Keras variables with a shape and no value yet
        owners = [keras.Variable(initializer="zeros", shape=s, name="kernel") for s in shapes]
    return lambda: [_deferred._tf_variable(v, np.zeros(tuple(v.shape), np.float32))
                    for v in owners]


def per_variable(make: Callable[[], object], count: int, reset: Callable[[], object],
                 repeats: int) -> float:
    """Median ms per variable over ``repeats`` rounds of ``make()``, ``reset()`` before each."""
    times = []
    for _ in range(repeats):
        reset()
        t0 = time.perf_counter()
        make()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / count * 1000


def step_times(genomes: int, steps: int = 300) -> list[list[object]]:
    """Per candidate: median train step (ms) with usual variables and with cache-friendly
    handles, the two models' steps alternating; and their ratio."""
    from search_spaces import NetworkSearchSpace, TaskSpec

    task = TaskSpec((40, 1), 10)
    space = NetworkSearchSpace(input_shape=task.input_shape)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((100, *task.input_shape)).astype("float32")
    y = rng.integers(0, task.num_classes, 100)
    rows = []
    for k in range(genomes):
        genome = space.sample(rng)
        models = {}
        for name, make in (("usual", lambda variable, value: value),
                           ("cache-friendly", _deferred._tf_variable)):
            original = _deferred._tf_variable
            _deferred._tf_variable = make
            try:
                models[name] = space.build(genome, task, seed=k)
            finally:
                _deferred._tf_variable = original
            for _ in range(5):  # trace and warm up
                models[name].train_on_batch(x, y)
        times: dict[str, list[float]] = {name: [] for name in models}
        for i in range(steps):
            for name in (list(models) if i % 2 else list(models)[::-1]):
                t0 = time.perf_counter()
                models[name].train_on_batch(x, y)
                times[name].append(time.perf_counter() - t0)
        usual, friendly = (float(np.median(times[n])) * 1000 for n in models)
        rows.append([f"candidate {k} ({len(models['usual'].layers)} layers)", usual, friendly,
                     friendly / usual])
    return rows


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
    parser.add_argument("--genomes", type=int, default=4)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    shapes = [(3, k % 7 + 1, k % 5 + 2) for k in range(args.variables)]
    makers = [_plain(shapes), _cache_friendly(shapes)]
    for make in makers:
        make()  # the shapes' kernels are now cached
    resets = [("warm (same shapes, nothing cleared)", lambda: None),
              ("after keras.backend.clear_session()",
               lambda: keras.backend.clear_session(free_memory=False)),
              ("after keras.utils.set_random_seed(1)", lambda: keras.utils.set_random_seed(1))]
    rows = [[label] + [per_variable(make, len(shapes), reset, args.repeats) for make in makers]
            for label, reset in resets]
    print(_common.format_table(rows, ["variable of a new-to-the-cache shape, ms",
                                      "tf.Variable", "cache-friendly handle"]))
    eager, built, created, count = chain_costs(args.variables // 2, args.repeats)
    print(f"\nConv1D chain of {args.variables // 2} layers ({count:.0f} variables), "
          "clear_session before each build, ms per model:")
    print(_common.format_table(
        [["variables created by each layer as it is built", eager, "", eager],
         ["deferred, then created with their values", built, created, built + created]],
        ["build", "functional build", "variable creation", "total"]))
    steps = step_times(args.genomes) if args.genomes else []
    if steps:
        print("\nTraining step of search-space candidates (batch 100), median ms:")
        print(_common.format_table(steps, ["candidate", "usual variables",
                                           "cache-friendly handles", "ratio"]))
    _common.save_json("variable_creation.json", {
        "per_variable_ms": rows, "chain": {"eager": eager, "deferred_build": built,
                                           "deferred_create": created, "variables": count},
        "train_step_ms": steps})


if __name__ == "__main__":
    main()
