"""keras-tuner with AutoInit: every model the tuner builds is AutoInit-initialized.

Wrap your HyperModel (or ``build(hp)`` function) in ``AutoInitHyperModel`` and hand it to any
keras-tuner tuner. Here: RandomSearch over a small 1-D CNN on MNIST-1D (generated offline).

    python examples/keras_tuner_hypermodel.py            # a few minutes on CPU
    python examples/keras_tuner_hypermodel.py --quick    # seconds: 2 trials, 1 epoch, less data
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import keras_tuner as kt  # noqa: E402
import numpy as np  # noqa: E402

from autoinit_nas.keras_tuner_hooks import AutoInitHyperModel  # noqa: E402
from evolution import load_task  # noqa: E402

INPUT_SHAPE, NUM_CLASSES = (40, 1), 10


def build_cnn(hp: kt.HyperParameters) -> keras.Model:
    """A 1-D CNN for MNIST-1D whose depth, widths, kernel, activation, dropout and learning
    rate are hyperparameters; per-layer widths live in conditional scopes."""
    inputs = keras.Input(INPUT_SHAPE)
    x = inputs
    layers = hp.Int("conv_layers", 1, 3)
    kernel = hp.Choice("kernel_size", [3, 5, 7])
    activation = hp.Choice("activation", ["relu", "gelu", "swish", "tanh"])
    pool = hp.Boolean("pool")
    for i in range(3):
        with hp.conditional_scope("conv_layers", list(range(i + 1, 4))):
            if i < layers:
                filters = hp.Int(f"filters_{i}", 8, 64, step=8)
                x = keras.layers.Conv1D(filters, kernel, padding="same", activation=activation)(x)
                if pool:
                    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.1))(x)
    outputs = keras.layers.Dense(NUM_CLASSES)(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(hp.Float("learning_rate", 3e-4, 1e-2, sampling="log")),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def mnist1d(quick: bool) -> tuple[np.ndarray, ...]:
    """MNIST-1D train / validation / test arrays (fewer samples with ``quick``)."""
    task = load_task("mnist1d")
    n_train, n_val = (600, 200) if quick else (len(task.x_train), len(task.x_val))
    return (
        task.x_train[:n_train],
        task.y_train[:n_train],
        task.x_val[:n_val],
        task.y_val[:n_val],
        task.x_test,
        task.y_test,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials, 1 epoch, less data")
    parser.add_argument("--max-trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--directory", default=None, help="keras-tuner project folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_trials, args.epochs = 2, 1
    directory = args.directory or tempfile.mkdtemp(prefix="kt_autoinit_")
    keras.utils.set_random_seed(args.seed)
    x, y, x_val, y_val, x_test, y_test = mnist1d(args.quick)

    # The only change to a plain keras-tuner script: wrap the hypermodel.
    hypermodel = AutoInitHyperModel(build_cnn, seed=args.seed)
    tuner = kt.RandomSearch(
        hypermodel,
        objective="val_accuracy",
        max_trials=args.max_trials,
        seed=args.seed,
        directory=directory,
        project_name="autoinit_random",
        overwrite=True,
    )
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=args.epochs, batch_size=64, verbose=0)

    best_trial = tuner.oracle.get_best_trials(1)[0]
    best = tuner.get_best_models(1)[0]  # rebuilt through AutoInitHyperModel, best epoch reloaded
    _, test_acc = best.evaluate(x_test, y_test, verbose=0)
    report = tuner.hypermodel.build(best_trial.hyperparameters).signal_report
    print(f"best val_accuracy {best_trial.score:.4f}, test accuracy {test_acc:.4f}")
    print(f"best hyperparameters: {best_trial.hyperparameters.values}")
    print(f"AutoInit seed {report.seed}, predicted output variance {report.output_vars[0]:.3f}")
    print(f"project folder: {directory}")


if __name__ == "__main__":
    main()
