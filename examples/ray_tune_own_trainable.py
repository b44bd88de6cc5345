"""Your own Ray Tune trainable, AutoInit-initialized by one line: ``AutoInitTuneCallback``.

A plain Keras CNN for MNIST-1D whose width, kernel size, activation and learning rate Ray
Tune searches. The only change to an ordinary trainable is the callback in ``model.fit``: it
initializes the model with AutoInit when training begins, reports every epoch to Tune (it is
Ray's own Keras report callback) together with the signal summary (``autoinit_max_var``,
``autoinit_min_var``, ...), and writes the full signal report into the trial directory.
``SignalReportCollector`` gathers the summaries into the experiment directory.

    python examples/ray_tune_own_trainable.py            # 12 trials, a few minutes on CPU
    python examples/ray_tune_own_trainable.py --quick    # 3 tiny trials, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def train_mnist1d(config: dict, data: dict) -> None:
    """An ordinary Keras training function; the AutoInit callback is the one added line."""
    import keras

    from autoinit_nas.tune_callback import AutoInitTuneCallback

    keras.utils.set_random_seed(config["seed"])
    model = keras.Sequential([keras.Input(data["x_train"].shape[1:])])
    for _ in range(config["blocks"]):
        model.add(
            keras.layers.Conv1D(
                config["filters"], config["kernel"], padding="same", activation=config["activation"]
            )
        )
        model.add(keras.layers.MaxPooling1D(2))
    model.add(keras.layers.GlobalAveragePooling1D())
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(
        keras.optimizers.Adam(config["lr"]), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(
        data["x_train"],
        data["y_train"],
        validation_data=(data["x_val"], data["y_val"]),
        epochs=config["epochs"],
        batch_size=64,
        verbose=0,
        callbacks=[AutoInitTuneCallback(seed=config["seed"])],  # <- the one line
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 tiny trials on a data subset")
    parser.add_argument("--out", default="ray_results", help="Ray Tune storage directory")
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.epochs = 3, 1

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from autoinit_nas.tune_callback import SignalReportCollector
    from evolution import load_task

    task = load_task("mnist1d")
    n_train, n_val = (600, 200) if args.quick else (len(task.x_train), len(task.x_val))
    data = {
        "x_train": task.x_train[:n_train],
        "y_train": task.y_train[:n_train],
        "x_val": task.x_val[:n_val],
        "y_val": task.y_val[:n_val],
    }
    ray.init(include_dashboard=False, log_to_driver=False)
    param_space = {
        "filters": tune.choice([16, 32, 64]),
        "kernel": tune.choice([3, 5, 7]),
        "blocks": tune.choice([1, 2, 3]),
        "activation": tune.choice(["relu", "gelu", "tanh", "swish"]),
        "lr": tune.loguniform(3e-4, 1e-2),
        "seed": tune.randint(0, 10_000),
        "epochs": args.epochs,
    }
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(train_mnist1d, data=data), {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="val_accuracy",
            mode="max",
            num_samples=args.samples,
            scheduler=None if args.quick else ASHAScheduler(grace_period=2, max_t=args.epochs),
            max_concurrent_trials=1 if args.quick else 2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=str(Path(args.out).resolve()),
            name="own_trainable",
            verbose=0 if args.quick else 1,
            callbacks=[SignalReportCollector()],
        ),
    )
    results = tuner.fit()
    best = results.get_best_result()
    print(f"{len(results)} trials, {results.num_errors} errors")
    print(
        f"best config { ({k: v for k, v in best.config.items() if k != 'epochs'}) }: "
        f"val_accuracy {best.metrics['val_accuracy']:.3f}"
    )
    rows = [
        json.loads(line)
        for line in (Path(results.experiment_path) / "signal_reports.jsonl")
        .read_text()
        .splitlines()
    ]
    print("trial     AutoInit max var  min var   output var  seconds")
    for row in rows:
        print(
            f"{row['trial_id']:<9} {row['autoinit_max_var']:>16.3g} {row['autoinit_min_var']:>8.3g}"
            f" {row['autoinit_output_var']:>11.3g} {row['autoinit_seconds']:>8.3f}"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
