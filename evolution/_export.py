"""Export: retrain the best candidate on all training data, score it on test, save ``.keras``."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autoinit_nas.errors import FatalSearchError
from evolution._config import RunConfig
from evolution._evaluate import _outputs, lr_schedule_callback
from evolution._spaces import resolve_space
from evolution._store import RunStore
from evolution._tasks import Task, load_task
from search_spaces import SearchSpace

__all__ = ["ExportResult", "export_best"]

logger = logging.getLogger(__name__)


@dataclass
class ExportResult:
    """Where the model went and how it scored."""

    path: Path
    candidate_id: int
    val_accuracy: float | None
    test_accuracy: float | None
    test_loss: float | None
    param_count: int
    epochs: int
    train_seconds: float
    reloaded: bool


def export_best(
    run_dir: str | Path,
    output: str | Path,
    *,
    candidate_id: int | None = None,
    epochs: int | None = None,
    space: SearchSpace | None = None,
    task: Task | None = None,
) -> ExportResult:
    """Retrain the run's best candidate on train+validation data, test it, save it.

    The saved file reloads with ``keras.models.load_model(path)`` and no ``custom_objects``
    (every layer the builders use is registered serializable); this is checked after saving.

    Args:
        run_dir: the run directory.
        output: path of the ``.keras`` file to write.
        candidate_id: export this candidate instead of the best by validation accuracy.
        epochs: training epochs (default: as many as the candidate ran during the search).
        space, task: instances to use instead of those named in the run's settings.

    Raises:
        FatalSearchError: no finished candidate, or the output path does not end in ``.keras``.
    """
    import keras

    output = Path(output)
    if output.suffix != ".keras":
        raise FatalSearchError(
            f"Expected an output path ending in .keras. Received: {str(output)!r}"
        )
    store = RunStore(run_dir, create=False)
    try:
        config = RunConfig.from_dict(store.get_meta("config"))
        done = store.candidates("done")
        if candidate_id is not None:
            record = store.candidate(candidate_id)
        elif done:
            record = max(done, key=lambda r: (r.val_accuracy or 0.0, -r.id))
        else:
            raise FatalSearchError(
                f"Expected at least one trained candidate in {str(run_dir)!r}. "
                f"Received: none finished successfully"
            )
        task = task or load_task(
            config.task,
            val_fraction=config.val_fraction,
            seed=config.seed,
            learning_rate=config.learning_rate,
        )
        space = space or resolve_space(config.space, config.space_options, task=task.spec)
        n_epochs = epochs or record.epochs_run or config.epochs
        keras.backend.clear_session()
        keras.utils.set_random_seed(record.seed)
        model = space.build(
            space.from_json(record.genome), task.spec, init=config.init, seed=record.seed
        )
        schedule = lr_schedule_callback(
            config.lr_schedule,
            epochs=n_epochs,
            steps_per_epoch=math.ceil(len(task.x_full) / config.batch_size),
        )
        clock = time.monotonic()
        model.fit(
            task.x_full,
            task.y_full,
            epochs=n_epochs,
            batch_size=config.batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[schedule] if schedule is not None else [],
        )
        train_seconds = time.monotonic() - clock
        test_accuracy = test_loss = None
        if task.x_test is not None:
            probs = _outputs(model, task.x_test)
            test_accuracy = float(np.mean(probs.argmax(axis=-1) == task.y_test))
            test_loss = float(
                model.evaluate(
                    task.x_test, task.y_test, batch_size=512, verbose=0, return_dict=True
                )["loss"]
            )
        else:
            logger.warning("The task has no test split: test accuracy not measured")
        output.parent.mkdir(parents=True, exist_ok=True)
        model.save(output)
        reloaded_model = keras.models.load_model(output)
        sample = task.x_full[:64]
        reloaded = bool(
            np.allclose(_outputs(model, sample), _outputs(reloaded_model, sample), atol=1e-5)
        )
        result = ExportResult(
            output,
            record.id,
            record.val_accuracy,
            test_accuracy,
            test_loss,
            int(model.count_params()),
            int(n_epochs),
            train_seconds,
            reloaded,
        )
        store.set_meta("export", {**asdict(result), "path": str(output.resolve())})
        logger.info(
            "Exported candidate %d to %s (test accuracy %s)",
            record.id,
            output,
            "n/a" if test_accuracy is None else f"{test_accuracy:.4f}",
        )
        return result
    finally:
        store.close()
