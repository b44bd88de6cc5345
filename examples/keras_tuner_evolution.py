"""Regularized evolution inside keras-tuner: ``EvolutionTuner`` with AutoInit-initialized models.

The population is the last ``--population`` completed trials; each new trial mutates one
hyperparameter of the best of ``--sample`` random members (conditional scopes respected).
Run it again with ``--resume`` and a larger ``--max-trials`` to continue the same evolution.

    python examples/keras_tuner_evolution.py                # a few minutes on CPU
    python examples/keras_tuner_evolution.py --quick        # seconds: 4 trials, 1 epoch
    python examples/keras_tuner_evolution.py --resume --max-trials 30 --directory DIR
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from keras_tuner_hypermodel import build_cnn, mnist1d  # noqa: E402  (the sibling example)

from autoinit_nas.evolution_oracle import EvolutionTuner  # noqa: E402
from autoinit_nas.keras_tuner_hooks import AutoInitHyperModel  # noqa: E402


def lineage(oracle, trial_id: str) -> list[str]:
    """Trial ids from the first random ancestor down to ``trial_id``."""
    chain = [trial_id]
    while oracle.parents.get(chain[-1]) is not None:
        chain.append(oracle.parents[chain[-1]])
    return chain[::-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 trials, 1 epoch, less data")
    parser.add_argument("--max-trials", type=int, default=16)
    parser.add_argument("--population", type=int, default=6)
    parser.add_argument("--sample", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--directory", default=None, help="keras-tuner project folder")
    parser.add_argument("--resume", action="store_true", help="continue the project in --directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_trials, args.population, args.sample, args.epochs = 4, 2, 2, 1
    if args.resume and args.directory is None:
        parser.error("--resume needs the --directory of the run to continue")
    directory = args.directory or tempfile.mkdtemp(prefix="kt_evolution_")
    keras.utils.set_random_seed(args.seed)
    x, y, x_val, y_val, x_test, y_test = mnist1d(args.quick)

    tuner = EvolutionTuner(
        AutoInitHyperModel(build_cnn, seed=args.seed),
        objective="val_accuracy",
        max_trials=args.max_trials,
        population_size=args.population,
        sample_size=args.sample,
        seed=args.seed,
        directory=directory,
        project_name="autoinit_evolution",
        overwrite=not args.resume,
    )
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=args.epochs, batch_size=64, verbose=0)

    oracle = tuner.oracle
    best_trial = oracle.get_best_trials(1)[0]
    _, test_acc = tuner.get_best_models(1)[0].evaluate(x_test, y_test, verbose=0)
    print(
        f"trials: {len(oracle.trials)} ({sum(p is None for p in oracle.parents.values())} random)"
    )
    print(f"best val_accuracy {best_trial.score:.4f}, test accuracy {test_acc:.4f}")
    print(f"best hyperparameters: {best_trial.hyperparameters.values}")
    print(
        "lineage of the best: "
        + " -> ".join(
            f"{t} ({oracle.trials[t].score:.3f})" for t in lineage(oracle, best_trial.trial_id)
        )
    )
    print(f"project folder: {directory} (continue with --resume --directory {directory})")


if __name__ == "__main__":
    main()
