"""EvolutionTuner vs keras-tuner's RandomSearch on MNIST-1D at equal budget, several seeds.

Both tuners get the same AutoInit-wrapped hypermodel (the 1-D CNN of
``examples/keras_tuner_hypermodel.py``: depth, widths, kernel, activation, pooling, dropout and
learning rate), the same number of trials and epochs, and the same data. For every seed and
tuner: the best validation accuracy found, and the test accuracy of the best trial's model (its
best epoch, as ``get_best_models`` reloads it). Writes ``benchmarks/out/oracle_vs_random.json``
and prints a table and the medians over seeds.

    python benchmarks/oracle_vs_random.py --quick         # a minute: 1 seed, 4 trials, 1 epoch
    python benchmarks/oracle_vs_random.py --max-trials 24 --epochs 4 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

from _common import ROOT, format_table, out_path, save_json

# isort: split

import keras  # noqa: E402  (after _common: quiet TensorFlow, repository on sys.path)
import keras_tuner as kt  # noqa: E402

from autoinit_nas.evolution_oracle import EvolutionTuner  # noqa: E402
from autoinit_nas.keras_tuner_hooks import AutoInitHyperModel  # noqa: E402
from examples.keras_tuner_hypermodel import build_cnn, mnist1d  # noqa: E402

TUNERS = ("random", "evolution")


def one_run(kind: str, seed: int, data: tuple, args: argparse.Namespace) -> dict:
    x, y, x_val, y_val, x_test, y_test = data
    directory = out_path("oracle_vs_random_runs")
    shutil.rmtree(directory / f"{kind}-s{seed}", ignore_errors=True)
    keras.utils.set_random_seed(seed)  # shuffling and dropout: the same stream for both tuners
    common = dict(
        objective="val_accuracy",
        max_trials=args.max_trials,
        seed=seed,
        directory=str(directory),
        project_name=f"{kind}-s{seed}",
        overwrite=True,
    )
    hypermodel = AutoInitHyperModel(build_cnn, seed=seed)
    if kind == "random":
        tuner = kt.RandomSearch(hypermodel, **common)
    else:
        tuner = EvolutionTuner(
            hypermodel, population_size=args.population, sample_size=args.sample, **common
        )
    clock = time.monotonic()
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=args.epochs, batch_size=64, verbose=0)
    seconds = time.monotonic() - clock
    oracle = tuner.oracle
    best = oracle.get_best_trials(1)[0]
    _, test_acc = tuner.get_best_models(1)[0].evaluate(x_test, y_test, verbose=0)
    curve, running = [], float("-inf")
    for tid in oracle.start_order:
        score = oracle.trials[tid].score
        running = max(running, score if score is not None else float("-inf"))
        curve.append(running)
    return {
        "tuner": kind,
        "seed": seed,
        "best_val_accuracy": float(best.score),
        "test_accuracy": float(test_acc),
        "best_values": best.hyperparameters.values,
        "trials": len(oracle.trials),
        "seconds": round(seconds, 1),
        "best_so_far": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 4 trials, 1 epoch, less data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--population", type=int, default=6)
    parser.add_argument("--sample", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.max_trials, args.epochs, args.population, args.sample = [0], 4, 1, 2, 2
    data = mnist1d(args.quick)
    runs = [one_run(kind, seed, data, args) for seed in args.seeds for kind in TUNERS]

    rows = [
        (r["seed"], r["tuner"], r["best_val_accuracy"], r["test_accuracy"], r["seconds"])
        for r in runs
    ]
    print(format_table(rows, ["seed", "tuner", "best val acc", "test acc", "seconds"]))
    medians = {}
    for kind in TUNERS:
        mine = [r for r in runs if r["tuner"] == kind]
        medians[kind] = {
            "best_val_accuracy": statistics.median(r["best_val_accuracy"] for r in mine),
            "test_accuracy": statistics.median(r["test_accuracy"] for r in mine),
        }
        print(
            f"median over {len(mine)} seeds, {kind:9s}: best val acc "
            f"{medians[kind]['best_val_accuracy']:.4f}, test acc "
            f"{medians[kind]['test_accuracy']:.4f}"
        )
    config = {k: v for k, v in vars(args).items()}
    path = save_json(
        "oracle_vs_random.json",
        {
            "config": config,
            "runs": runs,
            "medians": medians,
            "command": "python benchmarks/oracle_vs_random.py",
        },
    )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
