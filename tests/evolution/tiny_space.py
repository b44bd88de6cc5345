"""A small real search space for the evolution tests: a few hyperparameters of a Keras MLP.

Two fields exist only to inject faults: ``activation`` may name an activation Keras does not
know (the build raises), and ``crash_marker`` makes the process evaluating it kill itself with
SIGKILL the first time (when the marker file does not exist yet), like a worker dying.
"""

from __future__ import annotations

import os
import signal
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from autoinit_nas.errors import InvalidGenomeError
from search_spaces import Genome, SearchSpace, TaskSpec

UNITS = (4, 8, 16, 32)
LAYERS = (1, 2, 3)
ACTIVATIONS = ("relu", "tanh", "elu", "swish")
LEARNING_RATES = (3e-3, 1e-2, 3e-2)


@dataclass(frozen=True, eq=False)
class MLPGenome(Genome):
    kind = "tiny_mlp"
    units: int = 16
    layers: int = 1
    activation: str = "relu"
    learning_rate: float = 1e-2
    crash_marker: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MLPGenome:
        data = {k: v for k, v in data.items() if k != "kind"}
        try:
            return cls(**data)
        except TypeError as exc:
            raise InvalidGenomeError(f"Bad MLP genome {data}: {exc}") from exc


class TinyMLPSpace(SearchSpace):
    """Genomes: width, depth, activation and learning rate of an MLP."""

    def sample(self, rng: np.random.Generator) -> MLPGenome:
        return MLPGenome(
            int(rng.choice(UNITS)),
            int(rng.choice(LAYERS)),
            str(rng.choice(ACTIVATIONS)),
            float(rng.choice(LEARNING_RATES)),
        )

    def mutate(self, genome: Genome, rng: np.random.Generator) -> MLPGenome:
        field_name = ("units", "layers", "activation", "learning_rate")[int(rng.integers(4))]
        choices = {
            "units": UNITS,
            "layers": LAYERS,
            "activation": ACTIVATIONS,
            "learning_rate": LEARNING_RATES,
        }[field_name]
        value = choices[int(rng.integers(len(choices)))]
        return replace(genome, **{field_name: value})

    def crossover(self, a: Genome, b: Genome, rng: np.random.Generator) -> tuple[Genome, Genome]:
        da, db = a.to_dict(), b.to_dict()
        for key in ("units", "layers", "activation", "learning_rate"):
            if rng.random() < 0.5:
                da[key], db[key] = db[key], da[key]
        return MLPGenome.from_dict(da), MLPGenome.from_dict(db)

    def validate(self, genome: Genome) -> None:
        if not isinstance(genome, MLPGenome) or genome.units < 1 or genome.layers < 1:
            raise InvalidGenomeError(
                f"Expected an MLPGenome with units, layers >= 1. Received: {genome}"
            )

    def from_json(self, text: str) -> MLPGenome:
        import json

        return MLPGenome.from_dict(json.loads(text))

    def build(
        self,
        genome: Genome,
        task: TaskSpec,
        *,
        init: str = "autoinit",
        seed: int | None = None,
        **autoinit_options: Any,
    ) -> Any:
        import keras

        if genome.crash_marker and not Path(genome.crash_marker).exists():
            Path(genome.crash_marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        inputs = keras.Input(task.input_shape)
        x = keras.layers.Flatten()(inputs)
        for _ in range(genome.layers):
            x = keras.layers.Dense(genome.units, activation=genome.activation)(x)
        outputs = keras.layers.Dense(task.num_classes, activation="softmax")(x)
        model = keras.Model(inputs, outputs)
        if init == "autoinit":
            from autoinit_nas import initialize

            model.signal_report = initialize(model, seed=seed, **autoinit_options)
        model.compile(
            optimizer=keras.optimizers.Adam(genome.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model


def make_npz(path: Path, *, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """A 3-class, 8-feature data set an MLP learns in a couple of epochs."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=0.6, size=(3, 8))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(3, size=n)
        return (centers[y] + rng.normal(size=(n, 8))).astype("float32"), y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def blobs_dict() -> dict[str, np.ndarray]:
    """A task function (``tiny_space:blobs_dict``): the arrays of ``make_npz`` as a dict."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=0.6, size=(3, 8))
    y = rng.integers(3, size=300)
    x = (centers[y] + rng.normal(size=(300, 8))).astype("float32")
    return {"x_train": x[:240], "y_train": y[:240], "x_test": x[240:], "y_test": y[240:]}


def blobs_keras_style() -> tuple:
    """``((x_train, y_train), (x_test, y_test))``, as Keras' ``load_data`` returns."""
    d = blobs_dict()
    return (d["x_train"], d["y_train"]), (d["x_test"], d["y_test"])


def blobs_train_only() -> tuple:
    """``(x_train, y_train)`` without a test split."""
    d = blobs_dict()
    return d["x_train"], d["y_train"]


def task_returns_a_string() -> str:
    return "not arrays"


def task_that_raises() -> dict:
    raise OSError("the data server is down")


NOT_CALLABLE = 42
