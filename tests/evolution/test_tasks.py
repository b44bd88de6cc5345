"""Tasks: the built-in MNIST-1D (generated offline) and user .npz files."""

from __future__ import annotations

import numpy as np
import pytest

from autoinit_nas.errors import FatalSearchError
from evolution import load_task, parse_duration


def test_mnist1d_sizes_and_split() -> None:
    task = load_task("mnist1d", val_fraction=0.1, seed=0)
    assert task.spec.input_shape == (40, 1) and task.spec.num_classes == 10
    assert (len(task.x_train), len(task.x_val), len(task.x_test)) == (3600, 400, 1000)
    assert len(task.x_full) == 4000
    # validation samples come from train and are not in the training split
    train_rows = {row.tobytes() for row in task.x_train}
    assert not any(row.tobytes() in train_rows for row in task.x_val)


def test_npz_with_and_without_test(tmp_path, npz_task) -> None:
    task = load_task(npz_task, val_fraction=0.25, seed=1)
    assert task.spec.input_shape == (8, 1) and task.spec.num_classes == 3  # channel axis added
    assert (len(task.x_train), len(task.x_val), len(task.x_test)) == (450, 150, 200)
    path = tmp_path / "notest.npz"
    np.savez(path, x_train=np.zeros((20, 3, 3)), y_train=np.eye(2)[np.arange(20) % 2])
    task = load_task(path)
    assert task.x_test is None and task.spec.input_shape == (3, 3)
    assert task.y_train.dtype == np.int64  # one-hot labels became class indices


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 2))}, "missing \\['x_train', 'y_train'\\]"),
        ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(3)}, "4 samples, y_train has 3"),
        (
            {"x_train": np.zeros((4, 2)), "y_train": np.zeros(4), "x_test": np.zeros((2, 2))},
            "both x_test and y_test",
        ),
        ({"x_train": np.zeros((4, 2)), "y_train": np.array([0.5, 1, 0, 1])}, "integer class"),
        ({"x_train": np.full((4, 2), np.nan), "y_train": np.array([0, 1, 0, 1])}, "finite"),
        ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(4)}, "at least 2 classes"),
    ],
)
def test_bad_npz_files_say_what_is_wrong(tmp_path, arrays, message) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(FatalSearchError, match=message):
        load_task(path)


def test_bad_task_names(tmp_path) -> None:
    with pytest.raises(FatalSearchError, match="Received: task='cifar'"):
        load_task("cifar")
    with pytest.raises(FatalSearchError, match="existing .npz"):
        load_task(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(FatalSearchError, match="Could not read"):
        load_task(tmp_path / "junk.npz")


def test_parse_duration() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("1.5h") == 5400
    assert parse_duration("90") == 90 and parse_duration(None) is None
    with pytest.raises(ValueError, match="Received: '3 weeks'"):
        parse_duration("3 weeks")


@pytest.mark.parametrize(
    ("spec", "n_test"),
    [
        ("tiny_space:blobs_dict", 60),
        ("tiny_space:blobs_keras_style", 60),
        ("tiny_space:blobs_train_only", None),
    ],
)
def test_python_callable_tasks(spec, n_test) -> None:
    task = load_task(spec, val_fraction=0.25)
    assert task.name == spec
    assert task.spec.input_shape == (8, 1) and task.spec.num_classes == 3
    assert (len(task.x_train), len(task.x_val)) == (180, 60)
    assert (None if task.x_test is None else len(task.x_test)) == n_test
    assert task.x_train.dtype == np.float32 and task.y_train.dtype == np.int64


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tiny_space:no_such_function", "importable 'package.module:function'.*AttributeError"),
        ("no_such_module_xyz:load", "ModuleNotFoundError"),
        ("tiny_space:NOT_CALLABLE", "to be a function returning the data. Received: int"),
        ("tiny_space:task_that_raises", "raised OSError: the data server is down"),
        ("tiny_space:task_returns_a_string", "Received: str from tiny_space:task_returns_a_str"),
    ],
)
def test_bad_task_functions_say_what_is_wrong(spec, message) -> None:
    with pytest.raises(FatalSearchError, match=message):
        load_task(spec)


def test_a_run_on_a_task_function_keeps_its_name(tmp_path) -> None:
    from evolution import Evolution, RunConfig

    config = RunConfig(
        task="tiny_space:blobs_dict",
        space="tiny_space:TinyMLPSpace",
        budget_evals=1,
        epochs=1,
    )
    summary = Evolution(tmp_path / "run", config, progress=False).run()
    assert summary.trained == 1 and summary.best is not None
    resumed = Evolution.resume(tmp_path / "run", progress=False)  # re-imports the function
    assert resumed.config.task == "tiny_space:blobs_dict" and len(resumed.task.x_train) == 216
    resumed.close()
