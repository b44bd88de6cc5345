"""Memory of one worker process over many candidates: does TensorFlow memory accumulate?

Evaluates N MNIST-1D candidates (random network genomes, short training on a subset) one after
another in this process with ``evaluate_candidate`` (which clears the Keras session after each)
and records the resident set size after each. Reports the RSS after the first 10% of candidates
(the warm-up: imports, kernels, allocator pools) and the growth per 100 candidates over the rest.
Writes ``benchmarks/out/worker_memory.json``.

    python benchmarks/worker_memory.py --quick     # 40 candidates
    python benchmarks/worker_memory.py             # 200 candidates
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import save_json

from evolution import EvalConfig, evaluate_candidate, load_task
from search_spaces import NetworkSearchSpace


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--samples", type=int, default=500, help="training samples per candidate")
    args = parser.parse_args()
    if args.quick:
        args.candidates = 40
    task = load_task("mnist1d")
    task.x_train, task.y_train = task.x_train[: args.samples], task.y_train[: args.samples]
    space = NetworkSearchSpace(sample_nodes=(2, 6))
    rng = np.random.default_rng(0)
    config = EvalConfig(epochs=1, batch_size=128)
    rss, failed = [], 0
    clock = time.monotonic()
    for i in range(args.candidates):
        result = evaluate_candidate(space, space.sample(rng).to_json(), task, config, seed=i)
        failed += not result.ok
        rss.append(rss_mib())
        if (i + 1) % 10 == 0:
            print(f"{i + 1} candidates: RSS {rss[-1]:.0f} MiB", flush=True)
    warm = max(1, args.candidates // 10)
    x = np.arange(warm, args.candidates)
    slope = float(np.polyfit(x, np.array(rss[warm:]), 1)[0]) * 100 if len(x) > 1 else float("nan")
    summary = {
        "candidates": args.candidates,
        "failed": failed,
        "rss_after_warmup_mib": round(rss[warm - 1], 1),
        "rss_final_mib": round(rss[-1], 1),
        "growth_mib_per_100_candidates": round(slope, 1),
        "seconds": round(time.monotonic() - clock, 1),
    }
    print(summary)
    save_json("worker_memory.json", {"args": vars(args), "summary": summary, "rss_mib": rss})


if __name__ == "__main__":
    main()
