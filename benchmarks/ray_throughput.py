"""Ray throughput: candidates per minute with 1 worker vs 2 (or, on a GPU, one candidate per
GPU vs several sharing it through fractional ``--gpus-per-trial``).

The same MNIST-1D candidates are evaluated by ``RayExecutor`` with each setting; the first
``--warmup`` results (worker start-up, TensorFlow import) are excluded from the rate. Writes
``benchmarks/out/ray_throughput.json``.

    python benchmarks/ray_throughput.py --quick
    python benchmarks/ray_throughput.py --gpu          # 1 per GPU vs 4 per GPU (0.25 each)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import format_table, save_json

from evolution import EvalConfig, RayExecutor, load_task
from search_spaces import NetworkSearchSpace


def measure(
    space, task, genomes, config, *, workers: int, cpus: float, gpus: float, warmup: int
) -> dict:
    import ray

    clock = time.monotonic()
    executor = RayExecutor(
        space,
        task,
        config,
        workers=workers,
        cpus_per_trial=cpus,
        gpus_per_trial=gpus,
        recycle_after=1000,
    )
    started = time.monotonic() - clock
    pending = list(enumerate(genomes))
    stamps, failed = [], 0
    t0 = time.monotonic()
    while pending or executor.in_flight:
        while pending and executor.in_flight < executor.capacity:
            cid, g = pending.pop(0)
            executor.submit(cid, g.to_json(), cid)
        for _, result in executor.wait():
            stamps.append(time.monotonic() - t0)
            failed += not result.ok
    executor.close()
    if ray.is_initialized():
        ray.shutdown()
    timed = stamps[warmup:]
    rate = 60.0 * (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else float("nan")
    return {
        "workers": workers,
        "cpus_per_trial": cpus,
        "gpus_per_trial": gpus,
        "ray_start_s": round(started, 1),
        "total_s": round(stamps[-1], 1),
        "candidates_per_min": round(rate, 2),
        "overall_per_min": round(60 * len(stamps) / stamps[-1], 2),
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 candidates, 1 epoch")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="compare GPU sharing instead")
    args = parser.parse_args()
    if args.quick:
        args.candidates, args.epochs = 8, 1
    task = load_task("mnist1d")
    space = NetworkSearchSpace()
    rng = np.random.default_rng(0)
    genomes = [space.sample(rng) for _ in range(args.candidates)]
    config = EvalConfig(epochs=args.epochs)
    settings = [(1, 1.0, 1.0), (4, 1.0, 0.25)] if args.gpu else [(1, 1.0, 0.0), (2, 1.0, 0.0)]
    results = [
        measure(space, task, genomes, config, workers=w, cpus=c, gpus=g, warmup=args.warmup)
        for w, c, g in settings
    ]
    print(
        format_table(
            [
                [
                    r["workers"],
                    r["cpus_per_trial"],
                    r["gpus_per_trial"],
                    r["ray_start_s"],
                    r["total_s"],
                    r["candidates_per_min"],
                    r["overall_per_min"],
                    r["failed"],
                ]
                for r in results
            ],
            [
                "workers",
                "cpus/trial",
                "gpus/trial",
                "ray start s",
                "total s",
                "cand/min (after warmup)",
                "cand/min (overall)",
                "failed",
            ],
        )
    )
    save_json("ray_throughput.json", {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
