"""Fitness evaluation of one candidate: decode, build with AutoInit, train on a budget, score."""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import math
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoinit_nas.errors import CandidateFailedError, InvalidGenomeError
from search_spaces import SearchSpace

__all__ = [
    "EvalConfig",
    "EvalResult",
    "LR_SCHEDULES",
    "evaluate_candidate",
    "lr_schedule_callback",
    "release_memory",
]

logger = logging.getLogger(__name__)

#: Failure kinds recorded in the run store.
FAILURE_KINDS = ("nan", "oom", "invalid", "error", "worker_died")
#: Learning-rate schedules of candidate training.
LR_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class EvalConfig:
    """How every candidate of a run is trained.

    Args:
        epochs: training epochs (an upper bound when ``train_seconds`` is set).
        train_seconds: wall-clock training budget per candidate; training stops at the first
            batch that ends past it. ``None``: train all ``epochs``.
        batch_size: mini-batch size.
        init: ``"autoinit"`` (the default) or ``"default"`` (Keras' initializers, for comparison).
        lr_schedule: ``"cosine"`` (the default: the learning rate decays from its initial value
            to 0 along a half cosine over the budget, epochs or seconds, updated every batch) or
            ``"constant"``. A decayed rate ends training at a settled point, which makes the
            last-epoch validation accuracy a far less noisy fitness.
    """

    epochs: int = 10
    train_seconds: float | None = None
    batch_size: int = 100
    init: str = "autoinit"
    lr_schedule: str = "cosine"

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"Expected lr_schedule in {list(LR_SCHEDULES)}. Received: {self.lr_schedule!r}"
            )
        if self.init not in ("autoinit", "default"):
            raise ValueError(f"Expected init 'autoinit' or 'default'. Received: init={self.init!r}")
        if self.epochs < 1:
            raise ValueError(f"Expected epochs >= 1. Received: epochs={self.epochs}")
        if self.train_seconds is not None and self.train_seconds <= 0:
            raise ValueError(
                f"Expected train_seconds > 0. Received: train_seconds={self.train_seconds}"
            )


@dataclass
class EvalResult:
    """Outcome of one evaluation; ``ok`` is ``False`` for a failed candidate."""

    ok: bool
    val_accuracy: float = 0.0
    val_loss: float = math.nan
    param_count: int = 0
    epochs_run: int = 0
    train_seconds: float = 0.0
    started_at: float = 0.0
    error_kind: str | None = None
    error: str | None = None
    worker: str = ""
    history: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def failure(cls, kind: str, reason: str, **fields: Any) -> EvalResult:
        """A failed result of the given kind (one of ``FAILURE_KINDS``)."""
        return cls(ok=False, error_kind=kind, error=reason, **fields)


def _gradient_registry() -> dict[str, Any] | None:
    """TensorFlow's process-wide gradient registry, if TensorFlow is loaded (never imports it).

    Every trace of a ``tf.custom_gradient`` function (``tf.nn.silu``/swish, used by Keras' silu
    and swish activations, is one) registers a gradient function under a new name in this
    registry and never removes it. That function's closure holds the traced graph, so each
    candidate's whole training graph (its ``FuncGraph``, the optimizer's graphs) stayed alive:
    about 13,000 Python objects and several MiB per candidate.
    """
    ops = sys.modules.get("tensorflow.python.framework.ops")
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None


def gradient_snapshot() -> frozenset[str]:
    """Names in TensorFlow's gradient registry now; pass to ``release_memory`` afterwards."""
    registry = _gradient_registry()
    return frozenset(registry) if registry is not None else frozenset()


@functools.cache
def _malloc_trim() -> Any:
    # glibc keeps freed heap pages in its arenas; malloc_trim(0) hands them back to the OS.
    # Other platforms (macOS, musl) have no malloc_trim: nothing to do there.
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_memory(keep_gradients: frozenset[str] | None = None) -> None:
    """Free what finished candidates left behind in this process.

    Clears the Keras session, drops the custom-gradient registrations made since
    ``keep_gradients`` was taken (``gradient_snapshot()``; ``None`` keeps every registration),
    collects garbage and returns free heap pages to the operating system. Call it only when no
    model built since the snapshot will be trained again (their gradients would be retraced).
    """
    import keras

    registry = _gradient_registry()
    if registry is not None and keep_gradients is not None:
        for name in [k for k in registry if k not in keep_gradients]:
            if name.startswith("CustomGradient-"):
                del registry[name]
    keras.backend.clear_session(free_memory=True)
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def lr_schedule_callback(
    schedule: str, *, epochs: int, steps_per_epoch: int, train_seconds: float | None = None
) -> Any:
    """A Keras callback that sets the optimizer's learning rate before every batch, or ``None``
    for ``"constant"``. ``"cosine"``: ``lr0 * (1 + cos(pi * t)) / 2`` with ``t`` the share of
    the budget spent, in steps (``epochs * steps_per_epoch``) or, with ``train_seconds``, in
    seconds since training began."""
    import keras

    if schedule == "constant":
        return None
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"Expected lr_schedule in {list(LR_SCHEDULES)}. Received: {schedule!r}")
    total_steps = max(1, epochs * steps_per_epoch)

    class _Cosine(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self.base = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.start: float | None = None
            self.step = 0

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if self.start is None:  # from the first batch: tracing the step is not training
                self.start = time.monotonic()
            if train_seconds is not None:
                spent = (time.monotonic() - self.start) / train_seconds
            else:
                spent = self.step / total_steps
            self.step += 1
            rate = 0.5 * self.base * (1.0 + math.cos(math.pi * min(spent, 1.0)))
            self.model.optimizer.learning_rate = rate

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            self.model.optimizer.learning_rate = self.base  # a later fit starts where it began

    return _Cosine()


def _make_callbacks(
    train_seconds: float | None, config: EvalConfig | None = None, samples: int = 0
) -> tuple[Any, list[Any]]:
    import keras

    class _Guard(keras.callbacks.Callback):
        """Stops on a non-finite loss (recorded as NaN) and when the time budget is spent."""

        def __init__(self) -> None:
            super().__init__()
            self.nonfinite: str | None = None
            self.deadline = None if train_seconds is None else time.monotonic() + train_seconds
            self.out_of_time = False

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.nonfinite = f"non-finite training loss {float(loss)} at batch {batch}"
                self.model.stop_training = True
            elif self.deadline is not None and time.monotonic() > self.deadline:
                self.out_of_time = True
                self.model.stop_training = True

    guard = _Guard()
    callbacks: list[Any] = [guard]
    if config is not None:
        cosine = lr_schedule_callback(
            config.lr_schedule,
            epochs=config.epochs,
            steps_per_epoch=math.ceil(samples / config.batch_size),
            train_seconds=train_seconds,
        )
        callbacks += [cosine] if cosine is not None else []
    return guard, callbacks


def _classify(exc: BaseException) -> tuple[str, str]:
    name = type(exc).__name__
    if isinstance(exc, CandidateFailedError):
        return exc.kind, exc.reason
    if (
        isinstance(exc, MemoryError)
        or "ResourceExhausted" in name
        or "out of memory" in str(exc).lower()
    ):
        return "oom", f"{name}: {str(exc)[:500]}"
    if isinstance(exc, InvalidGenomeError):
        return "invalid", f"{name}: {exc}"
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return "error", last[:2000]


def _outputs(model: Any, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs on ``x`` by direct calls (``predict`` retraces for every new model)."""
    import keras

    parts = [
        keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts).reshape(len(x), -1)


def evaluate_candidate(
    space: SearchSpace, genome_json: str, task: Any, config: EvalConfig, seed: int
) -> EvalResult:
    """Decode, build (AutoInit or default init), train and score one candidate.

    Never raises for a bad candidate: exceptions, non-finite losses and out-of-memory errors are
    returned as a failed ``EvalResult`` naming the reason, so the search can go on.

    Args:
        space: the search space that decodes and builds the genome.
        genome_json: the genome as written by ``Genome.to_json``.
        task: an ``evolution.Task`` (train and validation arrays, ``TaskSpec``).
        config: training budget and initialization.
        seed: seed of the weights and of the shuffling; same seed, same result on CPU.

    Returns:
        Validation accuracy and loss, parameter count, epochs run and timings.
    """
    started = time.time()
    clock = time.monotonic()
    worker = _worker_name()
    gradients_before = gradient_snapshot()
    try:
        return _train_and_score(space, genome_json, task, config, int(seed), started, worker)
    except Exception as exc:  # a broken candidate must not end the run
        kind, reason = _classify(exc)
        logger.debug("Candidate failed (%s): %s", kind, reason, exc_info=True)
        traceback.clear_frames(exc.__traceback__)  # the frames hold the model
        return EvalResult.failure(
            kind, reason, started_at=started, worker=worker, train_seconds=time.monotonic() - clock
        )
    finally:
        # The model, its traced functions and its weights are unreachable now (they lived in
        # the frame of _train_and_score): free them before the next candidate in this process.
        release_memory(gradients_before)


def _sparse_crossentropy(probs: np.ndarray, labels: np.ndarray) -> float:
    # As Keras computes it on probabilities (clipped to [eps, 1 - eps]); done here in NumPy so
    # that scoring traces no test function for every new model.
    eps = 1e-7
    picked = np.clip(probs[np.arange(len(labels)), labels], eps, 1.0 - eps)
    return float(-np.mean(np.log(picked)))


def _train_and_score(
    space: SearchSpace,
    genome_json: str,
    task: Any,
    config: EvalConfig,
    seed: int,
    started: float,
    worker: str,
) -> EvalResult:
    import keras

    clock = time.monotonic()
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    genome = space.from_json(genome_json)
    space.validate(genome)
    model = space.build(genome, task.spec, init=config.init, seed=seed)
    if getattr(model, "optimizer", None) is None:
        model.compile(
            optimizer=keras.optimizers.Adam(task.spec.learning_rate),
            loss="sparse_categorical_crossentropy",
        )
    param_count = int(model.count_params())
    guard, callbacks = _make_callbacks(config.train_seconds, config, len(task.x_train))
    epochs = config.epochs if config.train_seconds is None else max(config.epochs, 10_000)
    fit = model.fit(
        task.x_train,
        task.y_train,
        batch_size=config.batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    common = {
        "param_count": param_count,
        "epochs_run": len(history.get("loss", [])),
        "started_at": started,
        "train_seconds": time.monotonic() - clock,
        "worker": worker,
        "history": history,
    }
    if guard.nonfinite is not None:
        return EvalResult.failure("nan", guard.nonfinite, **common)
    # In training-sized batches: a larger one raises the allocator's high-water mark for good.
    probs = _outputs(model, task.x_val, batch_size=config.batch_size)
    if not np.all(np.isfinite(probs)):
        return EvalResult.failure("nan", "non-finite validation outputs", **common)
    val_loss = _sparse_crossentropy(probs, task.y_val)
    if not math.isfinite(val_loss):
        return EvalResult.failure("nan", f"non-finite validation loss {val_loss}", **common)
    val_accuracy = float(np.mean(probs.argmax(axis=1) == task.y_val))
    return EvalResult(ok=True, val_accuracy=val_accuracy, val_loss=val_loss, **common)
