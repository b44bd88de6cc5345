"""Data sets a search trains on: the built-in MNIST-1D, user ``.npz`` files and Python callables."""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoinit_nas.errors import FatalSearchError
from search_spaces import TaskSpec

__all__ = ["Task", "is_callable_task", "load_task"]

logger = logging.getLogger(__name__)

MNIST1D_NAME = "mnist1d"

#: ``package.module:function`` (the function may be an attribute path such as ``Class.method``).
_CALLABLE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

_EXPECTED_RETURN = (
    "a dict with x_train, y_train (optional x_test, y_test), a tuple (x_train, y_train[, "
    "x_test, y_test]) or ((x_train, y_train), (x_test, y_test))"
)


@dataclass
class Task:
    """Arrays of one classification task, already split.

    The validation split is carved out of the training data and is the only data fitness sees;
    the test split is touched only by ``export`` and ``report``.

    Attributes:
        name: ``"mnist1d"`` or the path of the ``.npz`` file.
        spec: input shape and number of classes, for the search space's builder.
        x_train, y_train: data candidates are trained on during the search.
        x_val, y_val: data fitness is measured on.
        x_test, y_test: held-out data (``None`` when the file has none).
    """

    name: str
    spec: TaskSpec
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def x_full(self) -> np.ndarray:
        """Training plus validation inputs (what ``export`` retrains on)."""
        return np.concatenate([self.x_train, self.x_val])

    @property
    def y_full(self) -> np.ndarray:
        """Training plus validation labels."""
        return np.concatenate([self.y_train, self.y_val])


def _mnist1d_arrays() -> dict[str, np.ndarray]:
    # make_dataset generates the data offline; get_dataset would download a pickle.
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    return {
        "x_train": data["x"],
        "y_train": data["y"],
        "x_test": data["x_test"],
        "y_test": data["y_test"],
    }


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FatalSearchError(
            f"Expected the task to be 'mnist1d' or an existing .npz file. Received: task={str(path)!r}"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:  # np.load raises several kinds for corrupt files
        raise FatalSearchError(f"Could not read {str(path)!r} as a .npz file: {exc}") from exc
    missing = [key for key in ("x_train", "y_train") if key not in arrays]
    if missing:
        raise FatalSearchError(
            f"Expected a .npz file with arrays x_train and y_train (optional x_test, y_test). "
            f"Received: {str(path)!r} with arrays {sorted(arrays)}, missing {missing}"
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise FatalSearchError(
            f"Expected both x_test and y_test or neither. Received: arrays {sorted(arrays)} in {str(path)!r}"
        )
    return arrays


def is_callable_task(name: str | Path) -> bool:
    """Whether ``name`` names a Python callable (``package.module:function``), not a file."""
    return isinstance(name, str) and bool(_CALLABLE_SPEC.match(name))


def _arrays_from_return(value: Any, where: str) -> dict[str, np.ndarray]:
    if isinstance(value, Mapping):
        arrays = dict(value)
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (tuple, list)) and len(v) == 2 for v in value)
    ):
        (x, y), (xt, yt) = value
        arrays = {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt}
    elif isinstance(value, (tuple, list)) and len(value) in (2, 4):
        arrays = dict(zip(("x_train", "y_train", "x_test", "y_test"), value, strict=False))
    else:
        raise FatalSearchError(
            f"Expected the task function to return {_EXPECTED_RETURN}. Received: "
            f"{type(value).__name__} from {where}"
        )
    missing = [key for key in ("x_train", "y_train") if arrays.get(key) is None]
    if missing:
        raise FatalSearchError(
            f"Expected the task function to return {_EXPECTED_RETURN}. Received: "
            f"keys {sorted(arrays)} from {where}, missing {missing}"
        )
    arrays = {k: v for k, v in arrays.items() if v is not None}
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise FatalSearchError(
            f"Expected both x_test and y_test or neither. Received: {sorted(arrays)} from {where}"
        )
    try:
        return {k: np.asarray(v) for k, v in arrays.items()}
    except Exception as exc:
        raise FatalSearchError(f"Could not turn the arrays from {where} into NumPy: {exc}") from exc


def _callable_arrays(spec: str) -> dict[str, np.ndarray]:
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise FatalSearchError(
            f"Expected the task to be 'mnist1d', a .npz file or an importable "
            f"'package.module:function'. Received: task={spec!r} ({type(exc).__name__}: {exc})"
        ) from exc
    if not callable(target):
        raise FatalSearchError(
            f"Expected {spec!r} to be a function returning the data. Received: "
            f"{type(target).__name__}"
        )
    try:
        value = target()
    except Exception as exc:
        raise FatalSearchError(
            f"The task function {spec!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    return _arrays_from_return(value, spec)


def _check_pair(
    x: np.ndarray, y: np.ndarray, split: str, where: str
) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim < 2:
        raise FatalSearchError(
            f"Expected x_{split} of shape (samples, features...). Received: shape {x.shape} in {where}"
        )
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot labels
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if len(y) != len(x):
        raise FatalSearchError(
            f"Expected as many labels as samples in the {split} split. Received: x_{split} has "
            f"{len(x)} samples, y_{split} has {len(y)} labels in {where}"
        )
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.equal(np.mod(y, 1), 0)):
        raise FatalSearchError(
            f"Expected integer class labels in y_{split}. Received: dtype {y.dtype} with "
            f"non-integer values in {where}"
        )
    y = y.astype("int64")
    if y.min() < 0:
        raise FatalSearchError(
            f"Expected labels >= 0 in y_{split}. Received: min {y.min()} in {where}"
        )
    if not np.all(np.isfinite(x)):
        raise FatalSearchError(
            f"Expected finite values in x_{split}. Received: NaN or inf in {where}"
        )
    return x.astype("float32"), y


def load_task(
    name: str | Path = MNIST1D_NAME,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    learning_rate: float = 1e-3,
) -> Task:
    """Load a task and carve a validation split out of its training data.

    Args:
        name: ``"mnist1d"`` (4000 train / 1000 test, generated offline), a path to a ``.npz``
            file with ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test``, or
            ``"package.module:function"``: a function called without arguments that returns
            those arrays as a dict, as ``(x_train, y_train[, x_test, y_test])`` or as
            ``((x_train, y_train), (x_test, y_test))`` (the shape of Keras' ``load_data``).
            It must be importable wherever the run is resumed.
        val_fraction: share of the training data held out for fitness (stratified-free, seeded).
        seed: seed of the shuffle that picks the validation samples.
        learning_rate: learning rate written into the task's ``TaskSpec``.

    Returns:
        The split task. 1-D inputs (``(samples, length)``) get a channel axis so convolutions
        apply: MNIST-1D has input shape ``(40, 1)``.

    Raises:
        FatalSearchError: the file is missing or unreadable, the function cannot be imported,
            raises or returns something else, or the arrays are inconsistent.

    Example:
        >>> task = load_task("mnist1d")
        >>> task.spec.input_shape, len(task.x_train), len(task.x_val), len(task.x_test)
        ((40, 1), 3600, 400, 1000)
    """
    if not 0.0 < val_fraction < 1.0:
        raise FatalSearchError(
            f"Expected 0 < val_fraction < 1. Received: val_fraction={val_fraction}"
        )
    key = str(name)
    if key == MNIST1D_NAME:
        arrays, where = _mnist1d_arrays(), "mnist1d"
    elif is_callable_task(key) and not key.endswith(".npz"):
        arrays, where = _callable_arrays(key), key
    else:
        path = Path(key).expanduser()
        if path.suffix != ".npz":
            raise FatalSearchError(
                f"Expected the task to be 'mnist1d', a path ending in .npz or "
                f"'package.module:function'. Received: task={key!r}"
            )
        arrays, where = _npz_arrays(path), str(path)
    x, y = _check_pair(np.asarray(arrays["x_train"]), arrays["y_train"], "train", where)
    x_test = y_test = None
    if "x_test" in arrays:
        x_test, y_test = _check_pair(np.asarray(arrays["x_test"]), arrays["y_test"], "test", where)
        if x_test.shape[1:] != x.shape[1:]:
            raise FatalSearchError(
                f"Expected x_test samples shaped like x_train {x.shape[1:]}. Received: "
                f"{x_test.shape[1:]} in {where}"
            )
    if x.ndim == 2:  # sequences without a channel axis
        x = x[..., None]
        x_test = None if x_test is None else x_test[..., None]
    num_classes = int(max(y.max(), -1 if y_test is None else y_test.max())) + 1
    if num_classes < 2:
        raise FatalSearchError(
            f"Expected at least 2 classes. Received: labels {np.unique(y)} in {where}"
        )
    n_val = max(1, int(round(len(x) * val_fraction)))
    if n_val >= len(x):
        raise FatalSearchError(
            f"Expected more training samples than validation samples. Received: {len(x)} samples "
            f"with val_fraction={val_fraction}"
        )
    order = np.random.default_rng(seed).permutation(len(x))
    val_idx, train_idx = order[:n_val], order[n_val:]
    spec = TaskSpec(
        input_shape=tuple(int(d) for d in x.shape[1:]),
        num_classes=num_classes,
        learning_rate=learning_rate,
    )
    logger.info(
        "Task %s: %d train, %d validation, %s test samples, input %s, %d classes",
        where,
        len(train_idx),
        n_val,
        "no" if x_test is None else len(x_test),
        spec.input_shape,
        num_classes,
    )
    return Task(key, spec, x[train_idx], y[train_idx], x[val_idx], y[val_idx], x_test, y_test)
