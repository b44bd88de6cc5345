"""Seed-to-seed spread of the signal at the head's input.

One architecture, initialized with ``--seeds`` different seeds by Keras' default initializers
and by AutoInit in expected mode, realized mode, and realized mode with ``center=True`` (biases
cancel the per-channel offsets). For each seed the variance is measured
(independent probe, training-mode forward pass, the same Gaussian inputs for every seed) at
``features`` (the last layer before pooling: the last block's output, or the last activation of
All-CNN-C) and at ``pool`` (global average pooling: the input of the classifier head). The table
gives min, median, max and max/min over seeds; a small ratio means the architecture's fitness
does not depend on the luck of the draw.

Usage:
    python benchmarks/seed_spread.py [--quick] [--seeds 10] [--samples 128]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import _common
import keras

from autoinit_nas.zoo import all_cnn_c, resnet

LAYERS = ("features", "pool")
# Display name -> initialize() options (None: Keras' default initializers only).
INITS: dict[str, dict | None] = {
    "keras default": None,
    "expected": {"mode": "expected"},
    "realized": {"mode": "realized"},
    "realized, center": {"mode": "realized", "center": True},
}


def spread(
    build: Callable[[], keras.Model], init: str, seeds: range, samples: int
) -> dict[str, list[float]]:
    """Measured variance at each of LAYERS, one value per seed."""
    from autoinit_nas import initialize

    values: dict[str, list[float]] = {name: [] for name in LAYERS}
    for seed in seeds:
        keras.utils.set_random_seed(seed)  # Keras' default initializers draw from this seed
        model = build()
        options = INITS[init]
        if options is not None:
            initialize(model, seed=seed, **options)
        measured = _common.measure_layers(model, LAYERS, samples=samples, seed=12345)
        for name in LAYERS:
            values[name].append(measured[name])
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, 32 samples")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None)
    args = parser.parse_args()
    _common.require_engine()

    n_seeds = args.seeds or (3 if args.quick else 10)
    samples = args.samples or (32 if args.quick else 128)
    archs: dict[str, Callable[[], keras.Model]] = {
        "All-CNN-C relu": lambda: all_cnn_c(activation="relu"),
        "ResNet-20": lambda: resnet(20),
    }
    rows, results = [], {}
    for arch, build in archs.items():
        for init in INITS:
            values = spread(build, init, range(n_seeds), samples)
            results[f"{arch} [{init}]"] = values
            for name in LAYERS:
                v = values[name]
                rows.append(
                    [arch, init, name, min(v), statistics.median(v), max(v), max(v) / min(v)]
                )
            print(f"  {arch} {init}: pool var {values['pool']}", flush=True)
    print()
    print(_common.format_table(rows, ["model", "init", "layer", "min", "median", "max", "max/min"]))
    print(
        f"\n({n_seeds} seeds, measured on {samples} Gaussian samples, same inputs for every seed)"
    )
    _common.save_json("seed_spread.json", results)


if __name__ == "__main__":
    main()
