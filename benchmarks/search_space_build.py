"""Time to turn a genome into a trainable model: decode + AutoInit + compile.

Random network genomes (sampled, then mutated) for the MNIST-1D task, kept when they decode to
at most ``--max-layers`` Keras layers, are built one after another, as an evolution worker would;
each build is split into decode (genome -> layer plan -> functional Keras model), AutoInit
(``autoinit_nas.initialize``, default options) and compile. Medians and 90th percentiles are
reported overall and by size bucket.

Goal: median decode + AutoInit + compile < 50 ms for candidates up to 30 layers.

By default the builds share one Keras session, cleared every 50 builds. With ``--clear-each``
``keras.backend.clear_session(free_memory=False)`` runs before every build, as the evolution
worker does before each candidate; it also empties TensorFlow's eager kernel cache, so every
variable of a shape not seen since pays for a new kernel (~0.3 ms each).

Usage:
    python benchmarks/search_space_build.py [--genomes 200] [--max-layers 30] [--seed 0]
                                            [--clear-each]
"""

from __future__ import annotations

import argparse
import time

import _common
import keras
import numpy as np

from autoinit_nas import initialize
from autoinit_nas.errors import SignalError
from search_spaces import NetworkSearchSpace, TaskSpec
from search_spaces._plan import plan_network
from search_spaces.builder import instantiate

TASK = TaskSpec((40, 1), 10)
GOAL_S = 0.050


def random_genomes(n: int, max_layers: int, seed: int) -> list:
    """``n`` genomes (sampled, then 0-10 mutations) decoding to at most ``max_layers`` layers."""
    space = NetworkSearchSpace(
        max_nodes=max_layers, sample_nodes=(2, max_layers - 4), input_shape=TASK.input_shape
    )
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        genome = space.sample(rng)
        for _ in range(int(rng.integers(0, 11))):
            genome = space.mutate(genome, rng)
        if plan_network(genome, TASK.input_shape, TASK.num_classes).num_layers <= max_layers:
            out.append(genome)
    return out


def time_build(genome: object, seed: int) -> tuple[int, float, float, float]:
    """(layers, decode s, AutoInit s, compile s) of one build."""
    t0 = time.perf_counter()
    plan = plan_network(genome, TASK.input_shape, TASK.num_classes)  # type: ignore[arg-type]
    model = instantiate(plan, seed=seed, draw=False)  # as build_network does
    t1 = time.perf_counter()
    try:
        model.signal_report = initialize(model, seed=seed)
    except SignalError:
        return plan.num_layers, t1 - t0, float("nan"), float("nan")
    t2 = time.perf_counter()
    model.compile(
        optimizer=keras.optimizers.Adam(TASK.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    t3 = time.perf_counter()
    return plan.num_layers, t1 - t0, t2 - t1, t3 - t2


def summarize(rows: list[tuple[int, float, float, float]], label: str) -> list:
    a = np.asarray([r[1:] for r in rows]) * 1000
    total = a.sum(axis=1)
    med = np.median(a, axis=0)
    return [
        label,
        len(rows),
        float(med[0]),
        float(med[1]),
        float(med[2]),
        float(np.median(total)),
        float(np.percentile(total, 90)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genomes", type=int, default=200)
    parser.add_argument("--max-layers", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clear-each", action="store_true",
                        help="clear_session before every build, as the evolution worker does")
    args = parser.parse_args()
    _common.require_engine()
    import warnings

    warnings.filterwarnings("ignore", message="No AutoInit estimator")
    genomes = random_genomes(args.genomes, args.max_layers, args.seed)
    for g in genomes[:3]:  # warm-up: first Keras/TF calls pay one-off costs
        time_build(g, 0)
    rows, failed = [], 0
    for k, genome in enumerate(genomes):
        if args.clear_each:
            keras.backend.clear_session(free_memory=False)
        row = time_build(genome, k)
        if np.isnan(row[2]):
            failed += 1
        else:
            rows.append(row)
        if k % 50 == 49 and not args.clear_each:
            keras.backend.clear_session()
    table = [summarize(rows, "all")]
    for lo, hi in ((1, 10), (11, 20), (21, 30)):
        bucket = [r for r in rows if lo <= r[0] <= hi]
        if bucket:
            table.append(summarize(bucket, f"{lo}-{hi} layers"))
    headers = [
        "genomes",
        "n",
        "decode ms",
        "autoinit ms",
        "compile ms",
        "median total",
        "p90 total",
    ]
    print(_common.format_table(table, headers))
    print(f"({failed} genomes rejected by AutoInit with a SignalError, not timed)")
    median = table[0][5] / 1000
    verdict = "meets" if median < GOAL_S else "misses"
    session = "clear_session before each build" if args.clear_each else "one session"
    print(f"\nmedian decode+AutoInit+compile {median * 1000:.1f} ms ({session}): {verdict} "
          "the < 50 ms goal")
    _common.save_json(
        "search_space_build_clear_each.json" if args.clear_each else "search_space_build.json",
        {"headers": headers, "rows": table, "per_genome": rows, "goal_ms": GOAL_S * 1000},
    )


if __name__ == "__main__":
    main()
