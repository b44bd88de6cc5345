"""Ray Tune trainables that build each trial's genome with AutoInit and report every epoch.

``make_trainable`` returns a function trainable for ``ray.tune.Tuner``: it decodes
``config["genome"]`` (as suggested by ``EvolutionSearcher``), builds it with the search space
(which initializes it with AutoInit and attaches its ``SignalReport``), trains it with
``model.fit`` and reports each epoch through Ray's own Keras callback
(``ray.tune.integration.keras.TuneReportCheckpointCallback``, as
``autoinit_nas.tune_callback.AutoInitTuneCallback``): the Keras logs (``loss``, ``accuracy``,
``val_loss``, ``val_accuracy``), ``param_count``, ``genome_hash`` and the signal summary
(``autoinit_max_var``, ...). Epoch-wise reports let schedulers such as ASHA stop trials early.

Example:
    >>> from evolution.tune_trainable import make_trainable, with_trial_resources
    >>> trainable = with_trial_resources(make_trainable("mnist1d", space, epochs=5),
    ...                                  cpus=1, gpus=0.25)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from autoinit_nas.errors import CandidateFailedError
from evolution._evaluate import (
    EvalConfig,
    _classify,
    _make_callbacks,
    gradient_snapshot,
    release_memory,
)
from evolution._executors import WORKER_ENV
from evolution._spaces import require_space_methods
from evolution._tasks import Task, load_task
from search_spaces import NetworkSearchSpace, SearchSpace

__all__ = ["make_trainable", "with_trial_resources"]

#: Gradient registrations present before the first trial of this process (see ``trainable``).
_PROCESS_GRADIENTS: frozenset[str] | None = None


def make_trainable(
    task: str | Task = "mnist1d",
    space: SearchSpace | None = None,
    *,
    epochs: int = 5,
    batch_size: int = 64,
    init: str = "autoinit",
    lr_schedule: str = "cosine",
    checkpoint: bool = False,
    autoinit_options: dict[str, Any] | None = None,
    name: str = "autoinit_nas_trial",
) -> Callable[[dict[str, Any]], None]:
    """A Ray Tune function trainable that trains the genome in ``config["genome"]``.

    Args:
        task: ``"mnist1d"``, a ``.npz`` path (loaded here, on the driver) or an
            ``evolution.Task``. Its arrays travel with the trainable; for large data sets
            wrap with ``ray.tune.with_parameters`` instead of closing over them.
        space: the search space that decodes and builds genomes (the searcher's space);
            default: ``NetworkSearchSpace`` for the task's input shape and classes.
        epochs: training epochs; one report per epoch (the ``training_iteration``).
        batch_size: mini-batch size.
        init: ``"autoinit"`` or ``"default"`` (Keras' initializers, for comparison runs).
        lr_schedule: ``"cosine"`` (decay to 0 over ``epochs``) or ``"constant"``.
        checkpoint: also save a model checkpoint with every report (costs a model save).
        autoinit_options: options for AutoInit passed to ``space.build`` (``mode``, ...).
        name: the trainable's name (Ray uses it for the experiment name).

    Returns:
        ``trainable(config)``; ``config`` needs ``genome`` (JSON) and may hold ``seed``.
        A genome that fails to build, or a non-finite training loss, ends the trial with
        ``CandidateFailedError`` (the trial errors; ``EvolutionSearcher`` scores it worst).
    """
    eval_config = EvalConfig(
        epochs=epochs, batch_size=batch_size, init=init, lr_schedule=lr_schedule
    )
    task_obj = task if isinstance(task, Task) else load_task(task)
    if space is None:
        space = NetworkSearchSpace(
            input_shape=task_obj.spec.input_shape, num_classes=task_obj.spec.num_classes
        )
    require_space_methods(
        space, {"from_json": "from_json(text)", "validate": "validate(genome)", "build": "build"}
    )
    options = dict(autoinit_options or {})

    def trainable(config: dict[str, Any]) -> None:
        # Ray reuses trial processes: drop what earlier trials in this process left behind (their
        # graphs and gradient registrations, as evaluate_candidate does after each candidate).
        # At the start of a trial, not at its end: with reused actors Ray may start the next
        # trial while the last one is still unwinding, and a clear_session there broke it.
        global _PROCESS_GRADIENTS
        if _PROCESS_GRADIENTS is None:
            _PROCESS_GRADIENTS = gradient_snapshot()
        else:
            release_memory(_PROCESS_GRADIENTS)
        _train_trial(space, task_obj, eval_config, options, checkpoint, config)

    trainable.__name__ = trainable.__qualname__ = name
    return trainable


def _train_trial(
    space: SearchSpace,
    task: Task,
    eval_config: EvalConfig,
    options: dict[str, Any],
    checkpoint: bool,
    config: dict[str, Any],
) -> None:
    for key, value in WORKER_ENV.items():  # before Keras loads TensorFlow in this process
        os.environ.setdefault(key, value)
    import keras

    from autoinit_nas.tune_callback import AutoInitTuneCallback

    genome_json = config.get("genome")
    if not isinstance(genome_json, str):
        raise ValueError(
            "Expected config['genome'] to be a genome's JSON (use EvolutionSearcher, or put "
            f"genome.to_json() in param_space). Received: {genome_json!r:.200}"
        )
    seed = int(config.get("seed", 0))
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    try:
        genome = space.from_json(genome_json)
        space.validate(genome)
        model = space.build(genome, task.spec, init=eval_config.init, seed=seed, **options)
        if getattr(model, "optimizer", None) is None:
            model.compile(
                optimizer=keras.optimizers.Adam(task.spec.learning_rate),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
    except Exception as exc:  # recorded as a failed trial, like evaluate_candidate does
        kind, reason = _classify(exc)
        raise CandidateFailedError(reason, kind=kind) from exc
    guard, callbacks = _make_callbacks(None, eval_config, len(task.x_train))
    reporter = AutoInitTuneCallback(
        initialize=False,
        checkpoint_on="epoch_end" if checkpoint else (),
        extra_metrics={"param_count": int(model.count_params()), "genome_hash": genome.hash()},
    )
    model.fit(
        task.x_train,
        task.y_train,
        validation_data=(task.x_val, task.y_val),
        batch_size=eval_config.batch_size,
        epochs=eval_config.epochs,
        shuffle=True,
        verbose=0,
        callbacks=[*callbacks, reporter],
    )
    if guard.nonfinite is not None:
        raise CandidateFailedError(guard.nonfinite, kind="nan")


def with_trial_resources(trainable: Any, *, cpus: float = 1.0, gpus: float = 0.0) -> Any:
    """``ray.tune.with_resources(trainable, {"cpu": cpus, "gpu": gpus})`` with checked values.

    Fractions share a device: ``gpus=0.25`` runs four trials on one GPU (the trials grow GPU
    memory on demand, so they fit side by side when their models are small).

    Raises:
        ValueError: ``cpus <= 0``, ``gpus < 0``, or a GPU count above 1 that is not whole.
    """
    from ray import tune

    if not cpus > 0:
        raise ValueError(f"Expected cpus > 0. Received: cpus={cpus}")
    if not gpus >= 0 or (gpus > 1 and float(gpus) != int(gpus)):
        raise ValueError(
            f"Expected gpus >= 0, a fraction up to 1 or a whole number. Received: gpus={gpus}"
        )
    return tune.with_resources(trainable, {"cpu": float(cpus), "gpu": float(gpus)})
