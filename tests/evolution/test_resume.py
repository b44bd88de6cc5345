"""Resume: a run killed with SIGKILL mid-evaluation (a real subprocess) and resumed."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest


def read_rows(run_dir: Path) -> list[dict]:
    conn = sqlite3.connect(f"file:{run_dir / 'run.sqlite'}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM candidates ORDER BY id")]
    finally:
        conn.close()


def final_population(run_dir: Path) -> list[tuple[str, list[float]]]:
    conn = sqlite3.connect(f"file:{run_dir / 'run.sqlite'}?mode=ro", uri=True)
    state = json.loads(
        conn.execute("SELECT state FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()[0]
    )
    conn.close()
    return [(ind["genome"], ind["fitness"]) for ind in state["algorithm"]["population"]]


@pytest.mark.slow
def test_resume_after_sigkill_loses_nothing_and_trains_nothing_twice(
    tmp_path, npz_task, subprocess_env
) -> None:
    cli = [sys.executable, "-m", "evolution.cli"]
    args = [
        "evolve",
        "--task",
        str(npz_task),
        "--space",
        "tiny_space:TinyMLPSpace",
        "--population",
        "4",
        "--budget-evals",
        "9",
        "--epochs",
        "3",
        "--seed",
        "11",
        "--no-progress",
        "--no-report",
    ]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(
        [*cli, *args, "--run-dir", str(reference)],
        env=subprocess_env,
        check=True,
        timeout=300,
        capture_output=True,
    )

    proc = subprocess.Popen(
        [*cli, *args, "--run-dir", str(killed)],
        env=subprocess_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    victim = None
    while time.monotonic() < deadline and proc.poll() is None:
        if (killed / "run.sqlite").exists():
            try:
                rows = read_rows(killed)
            except sqlite3.OperationalError:  # the schema is still being created
                continue
            running = [r for r in rows if r["status"] == "running"]
            if sum(r["status"] == "done" for r in rows) >= 4 and running:
                victim = running[0]["id"]
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert victim is not None, "the run finished or stalled before it could be killed"
    assert proc.returncode == -signal.SIGKILL

    before = {r["id"]: r for r in read_rows(killed) if r["status"] in ("done", "failed")}
    assert victim not in before
    done = subprocess.run(
        [*cli, "resume", str(killed), "--no-progress", "--no-report"],
        env=subprocess_env,
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert "candidates trained" in done.stdout

    after = {r["id"]: r for r in read_rows(killed)}
    for cid, row in before.items():  # no finished candidate lost or retrained
        assert after[cid]["finished_at"] == row["finished_at"]
        assert after[cid]["val_accuracy"] == row["val_accuracy"]
    assert after[victim]["status"] == "done"  # the interrupted one was trained after resume
    trained = [r for r in after.values() if r["status"] in ("done", "failed")]
    assert len(trained) == 9
    assert len({r["hash"] for r in trained}) == len(trained)  # none trained twice
    assert final_population(killed) == final_population(reference)
    ref_rows = read_rows(reference)
    assert [(r["hash"], r["seed"], r["status"]) for r in ref_rows] == [
        (r["hash"], r["seed"], r["status"]) for r in after.values()
    ]
