"""Memory of one worker process over many candidates: does memory accumulate?

Evaluates N small MNIST-1D candidates (random network genomes of 2-6 nodes, one epoch on 500
samples) one after another in ONE process and records its resident set size (RSS) after each:

* ``--mode inprocess``: in this process, with ``evaluate_candidate`` (what ``--workers 0`` does);
* ``--mode ray``: on one Ray worker process (``RayExecutor``, ``workers=1``); the driver reads
  the worker's RSS from ``/proc``. ``--recycle-after K`` replaces the worker every K candidates
  (the default here never does, so one process evaluates all of them).

``--baseline`` (in-process only) replaces ``release_memory`` with what evaluation did before
(``keras.backend.clear_session()`` and ``gc.collect()``), to show what the release fixes.

Prints the RSS after the first candidate, after 20 and after the last, and the slope of a
straight line through the last 100 (MiB per candidate). Writes
``benchmarks/out/worker_memory_<mode>.json`` and plots every such file into
``benchmarks/figures/worker_memory.png``. Linux only (reads ``/proc``).

    python benchmarks/worker_memory.py                         # 200 candidates in-process
    python benchmarks/worker_memory.py --baseline              # the same without the release
    python benchmarks/worker_memory.py --mode ray              # 200 on one Ray worker
    python benchmarks/worker_memory.py --quick                 # 40 candidates
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/worker_memory.py --tag onednn-off

TensorFlow's oneDNN kernels keep two things per process: a BFC memory pool that keeps its
high-water mark (one wide candidate raises it for good) and caches of compiled primitives keyed
by shape (a new candidate adds entries). ``TF_ENABLE_ONEDNN_OPTS=0`` turns both off;
``TF_ONEDNN_USE_SYSTEM_ALLOCATOR=true`` only the pool. ``--tag`` names such a run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from typing import Any

import numpy as np
from _common import FIGURES_DIR, OUT_DIR, save_json

import evolution._evaluate as evaluate_module
from evolution import EvalConfig, RayExecutor, evaluate_candidate, load_task
from search_spaces import NetworkSearchSpace


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size of a process in MiB, from /proc."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


def _old_release(keep_gradients: Any = None) -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


def run_inprocess(space: Any, genomes: list[str], task: Any, config: EvalConfig) -> list[dict]:
    rows = []
    for i, genome in enumerate(genomes):
        result = evaluate_candidate(space, genome, task, config, seed=i)
        rows.append({"rss": rss_mib(), "ok": result.ok, "worker": result.worker})
        _progress(i, rows)
    return rows


def run_ray(
    space: Any, genomes: list[str], task: Any, config: EvalConfig, recycle_after: int
) -> list[dict]:
    executor = RayExecutor(
        space, task, config, workers=1, cpus_per_trial=1.0, recycle_after=recycle_after
    )
    rows = []
    try:
        for i, genome in enumerate(genomes):
            executor.submit(i, genome, i)
            ((_, result),) = executor.wait()
            pid = result.worker.rpartition(":")[2]
            rows.append({"rss": rss_mib(pid), "ok": result.ok, "worker": result.worker})
            _progress(i, rows)
    finally:
        executor.close()
    return rows


_PARTIAL: dict[str, Any] = {}


def _progress(i: int, rows: list[dict]) -> None:
    if (i + 1) % 10 == 0:
        print(f"{i + 1} candidates: RSS {rows[-1]['rss']:.0f} MiB", flush=True)
        if _PARTIAL:  # so that an interrupted run still leaves its figures
            save_json(_PARTIAL["name"], {**_PARTIAL, "rss_mib": [r["rss"] for r in rows]})


def summarize(rss: list[float], tail: int = 100) -> dict[str, float]:
    """RSS at the start, after 20, at the end, and the slope over the last ``tail``."""
    y = np.asarray(rss)
    last = y[-min(tail, len(y)) :]
    slope = float(np.polyfit(np.arange(len(last)), last, 1)[0]) if len(last) > 1 else np.nan
    steps = np.diff(y)
    jumps = steps > 50  # one candidate raising the allocators' high-water mark for good
    tail_steps = steps[-(len(last) - 1) :] if len(last) > 1 else steps[:0]
    creep = float(np.mean(tail_steps[tail_steps <= 50])) if len(tail_steps) else np.nan
    return {
        "candidates": len(y),
        "jumps_over_50_mib": [
            {"candidate": int(i) + 2, "mib": round(float(steps[i]), 1)}
            for i in np.flatnonzero(jumps)
        ],
        "median_step_mib": round(float(np.median(steps)), 2) if len(steps) else np.nan,
        f"creep_last_{len(last)}_without_jumps_mib_per_candidate": round(creep, 3),
        "rss_first_mib": round(float(y[0]), 1),
        "rss_after_20_mib": round(float(y[min(19, len(y) - 1)]), 1),
        "rss_final_mib": round(float(y[-1]), 1),
        f"slope_last_{len(last)}_mib_per_candidate": round(slope, 3),
    }


def plot_all() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for path in sorted(OUT_DIR.glob("worker_memory_*.json")):
        data = json.loads(path.read_text())
        ax.plot(np.arange(1, len(data["rss_mib"]) + 1), data["rss_mib"], label=data["label"])
    ax.set_xlabel("candidates evaluated in the process")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title("Worker memory over candidates (MNIST-1D, small random genomes)")
    ax.grid(alpha=0.3)
    ax.legend()
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(FIGURES_DIR / "worker_memory.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 candidates")
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--samples", type=int, default=500, help="training samples per candidate")
    parser.add_argument("--mode", choices=["inprocess", "ray"], default="inprocess")
    parser.add_argument("--recycle-after", type=int, default=None, help="Ray: calls per worker")
    parser.add_argument("--baseline", action="store_true", help="without release_memory")
    parser.add_argument(
        "--tag", default="", help="suffix of the output name and label (e.g. the TF_* settings)"
    )
    args = parser.parse_args()
    if args.quick:
        args.candidates = 40
    if args.baseline and args.mode != "inprocess":
        parser.error("--baseline applies to --mode inprocess only")
    task = load_task("mnist1d")
    task.x_train, task.y_train = task.x_train[: args.samples], task.y_train[: args.samples]
    space = NetworkSearchSpace(sample_nodes=(2, 6))
    rng = np.random.default_rng(0)
    genomes = [space.sample(rng).to_json() for _ in range(args.candidates)]
    config = EvalConfig(epochs=1, batch_size=128)
    clock = time.monotonic()
    name = f"{args.mode}{'_baseline' if args.baseline else ''}"
    if args.recycle_after:
        name += f"_recycle{args.recycle_after}"
    label = {
        "inprocess": "in-process",
        "inprocess_baseline": "in-process, before (clear_session + gc)",
    }.get(
        name,
        "Ray worker" + (f", recycled every {args.recycle_after}" if args.recycle_after else ""),
    )
    if args.tag:
        name, label = f"{name}_{args.tag}", f"{label}, {args.tag}"
    _PARTIAL.update(name=f"worker_memory_{name}.json", label=label, args=vars(args), partial=True)
    if args.mode == "inprocess":
        if args.baseline:
            evaluate_module.release_memory = _old_release
        rows = run_inprocess(space, genomes, task, config)
    else:
        recycle = args.recycle_after or args.candidates + 1
        rows = run_ray(space, genomes, task, config, recycle)
    rss = [r["rss"] for r in rows]
    summary = {
        "tensorflow_env": {k: v for k, v in os.environ.items() if "ONEDNN" in k or "MKL" in k},
        **summarize(rss),
        "failed": sum(not r["ok"] for r in rows),
        "worker_processes": len({r["worker"] for r in rows}),
        "seconds": round(time.monotonic() - clock, 1),
    }
    print(label, summary)
    save_json(
        f"worker_memory_{name}.json",
        {"label": label, "args": vars(args), "summary": summary, "rss_mib": rss},
    )
    plot_all()


if __name__ == "__main__":
    main()
