"""Whole runs in this process with real Keras training on a small .npz task."""

from __future__ import annotations

import re
import sqlite3

import keras
import numpy as np
import pytest
from tiny_space import MLPGenome

from autoinit_nas.errors import FatalSearchError
from evolution import Evolution, RunConfig, RunStore, export_best, write_report


def small_config(task, **changes) -> RunConfig:
    base = {
        "task": str(task),
        "space": "tiny_space:TinyMLPSpace",
        "population": 4,
        "budget_evals": 6,
        "epochs": 2,
        "batch_size": 64,
        "seed": 0,
    }
    return RunConfig(**{**base, **changes})


def test_failing_candidates_are_recorded_and_the_run_completes(tmp_path, npz_task) -> None:
    raises = MLPGenome(units=8, activation="no_such_activation")  # Keras raises in build
    nan = MLPGenome(units=32, layers=3, learning_rate=1e30)  # the loss overflows to NaN
    run = Evolution(
        tmp_path / "run",
        small_config(npz_task, budget_evals=5),
        seed_genomes=[raises, nan],
        progress=False,
    )
    summary = run.run()
    store = RunStore(tmp_path / "run", create=False)
    rows = {r.hash: r for r in store.candidates()}
    bad_build, bad_loss = rows[raises.hash()], rows[nan.hash()]
    assert bad_build.status == "failed" and bad_build.error_kind == "error"
    assert "no_such_activation" in bad_build.error
    assert bad_loss.status == "failed" and bad_loss.error_kind == "nan"
    assert "non-finite" in bad_loss.error
    assert bad_build.fitness == [0.0] and bad_loss.fitness == [0.0]
    assert summary.trained == 5 and summary.failed == 2
    assert store.count("done") == 3
    done = store.candidates("done")
    assert all(0.0 < r.val_accuracy <= 1.0 and r.param_count > 0 for r in done)
    assert summary.best.val_accuracy == max(r.val_accuracy for r in done)


def test_a_genome_seen_before_is_not_trained_again(tmp_path, npz_task) -> None:
    g = MLPGenome(units=4)
    run = Evolution(
        tmp_path / "run",
        small_config(npz_task, budget_evals=3),
        seed_genomes=[g, g, MLPGenome(units=8), g],
        progress=False,
    )
    run.run()
    store = RunStore(tmp_path / "run", create=False)
    rows = [r for r in store.candidates() if r.hash == g.hash()]
    assert [r.status for r in rows] == ["done", "duplicate", "duplicate"]
    assert {r.duplicate_of for r in rows[1:]} == {rows[0].id}
    assert {r.val_accuracy for r in rows} == {rows[0].val_accuracy}
    trained = store.candidates("done", "failed")
    assert len({r.hash for r in trained}) == len(trained) == 3


def test_store_schema_and_checkpoint(tmp_path, npz_task) -> None:
    Evolution(tmp_path / "run", small_config(npz_task, budget_evals=3), progress=False).run()
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = {row[1] for row in conn.execute("PRAGMA table_info(candidates)")}
        assert {
            "genome",
            "hash",
            "parents",
            "generation",
            "status",
            "val_accuracy",
            "val_loss",
            "param_count",
            "seed",
            "started_at",
            "finished_at",
            "train_seconds",
            "error",
        } <= cols
    store = RunStore(tmp_path / "run", create=False)
    state = store.latest_checkpoint()
    assert store.count("done", "failed") == 3
    assert state["algorithm"]["evaluations"] == store.count()  # duplicates are told too
    assert {"rng", "population", "hall_of_fame", "logbook"} <= set(state["algorithm"])
    assert "seed_rng" in state and state["in_flight"] == []


def test_time_budget_and_train_seconds(tmp_path, npz_task) -> None:
    config = small_config(
        npz_task, budget_evals=None, time_budget_s=4.0, epochs=1000, train_seconds=1.0
    )
    summary = Evolution(tmp_path / "run", config, progress=False).run()
    assert 1 <= summary.trained <= 6
    for r in RunStore(tmp_path / "run", create=False).candidates("done"):
        assert r.train_seconds < 8.0 and r.epochs_run < 1000


def test_report_and_export(tmp_path, npz_task) -> None:
    run_dir = tmp_path / "run"
    Evolution(run_dir, small_config(npz_task, budget_evals=4, init="default"), progress=False).run()
    md = write_report(run_dir)
    text = md.read_text()
    for name in ("fitness.png", "pareto.png", "best_network.png", "best_activation.png"):
        assert (md.parent / name).stat().st_size > 1000, name
        assert name in text
    assert (md.parent / "report.html").exists() and "| rank |" in text
    assert (md.parent / "signal_propagation.png").stat().st_size > 1000
    # the signal figure has measured points beside the predictions, and the report says how close
    error = re.search(r"median error ([0-9.]+)%", text)
    assert error is not None and float(error.group(1)) < 50.0, text
    result = export_best(run_dir, tmp_path / "best.keras")
    assert result.reloaded and 0.0 <= result.test_accuracy <= 1.0
    model = keras.models.load_model(tmp_path / "best.keras")  # no custom_objects
    assert model.count_params() == result.param_count
    assert "test accuracy" in write_report(run_dir).read_text()


def test_new_run_refuses_an_existing_run_dir(tmp_path, npz_task) -> None:
    Evolution(tmp_path / "run", small_config(npz_task, budget_evals=1), progress=False).run()
    with pytest.raises(FatalSearchError, match="already holds a run"):
        Evolution(tmp_path / "run", small_config(npz_task), progress=False)
    with pytest.raises(FatalSearchError, match="run.sqlite"):
        Evolution.resume(tmp_path / "nothing-here")


@pytest.mark.slow
def test_same_seed_same_run(tmp_path, npz_task) -> None:
    pops = []
    for name in ("a", "b"):
        run = Evolution(tmp_path / name, small_config(npz_task, budget_evals=5), progress=False)
        run.run()
        store = RunStore(tmp_path / name, create=False)
        pops.append([(r.hash, r.seed, r.val_accuracy) for r in store.candidates()])
    assert pops[0] == pops[1]
    assert np.isfinite([p[2] for p in pops[0] if p[2] is not None]).all()
