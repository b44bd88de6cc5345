"""Evaluation on a real local Ray: parallel workers, a worker process killed mid-candidate."""

from __future__ import annotations

import pytest
from tiny_space import MLPGenome

from evolution import Evolution, RunConfig, RunStore

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def config(task, **changes) -> RunConfig:
    base = {
        "task": str(task),
        "space": "tiny_space:TinyMLPSpace",
        "population": 4,
        "budget_evals": 5,
        "epochs": 2,
        "workers": 2,
        "cpus_per_trial": 1.0,
        "seed": 0,
        "recycle_after": 2,
    }
    return RunConfig(**{**base, **changes})


def test_killed_worker_is_retried_then_recorded(tmp_path, npz_task) -> None:
    retried_marker = tmp_path / "retried.marker"
    lost_marker = tmp_path / "lost.marker"
    retried = MLPGenome(units=8, crash_marker=str(retried_marker))
    run = Evolution(
        tmp_path / "retry", config(npz_task, max_retries=1), seed_genomes=[retried], progress=False
    )
    summary = run.run()
    assert retried_marker.exists()  # the worker process did kill itself
    row = next(
        r
        for r in RunStore(tmp_path / "retry", create=False).candidates()
        if r.hash == retried.hash()
    )
    assert row.status == "done" and row.val_accuracy > 0  # the retry trained it
    assert summary.trained == 5
    pids = {r.worker for r in RunStore(tmp_path / "retry", create=False).candidates("done")}
    assert len(pids) >= 2  # more than one worker process (parallel and recycled)

    lost = MLPGenome(units=16, crash_marker=str(lost_marker))
    run = Evolution(
        tmp_path / "lost", config(npz_task, max_retries=0), seed_genomes=[lost], progress=False
    )
    summary = run.run()
    store = RunStore(tmp_path / "lost", create=False)
    row = next(r for r in store.candidates() if r.hash == lost.hash())
    assert row.status == "failed" and row.error_kind == "worker_died"
    assert summary.trained == 5 and store.count("done") == 4
