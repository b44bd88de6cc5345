"""AutoInit search vs default-init search on MNIST-1D at equal budget, several seeds.

For each seed and each initialization, one regularized-evolution run (network search space,
warm-started from the published MNIST-1D CNN and MLP genomes); the best candidate by validation
accuracy is then retrained on the full training set and tested (``export``). Writes
``benchmarks/out/search_mnist1d.json`` and ``search_mnist1d.png`` (best validation accuracy vs
evaluations, one line per run).

    python benchmarks/search_mnist1d.py --quick                  # minutes, 1 seed, tiny budget
    python benchmarks/search_mnist1d.py --time-budget 60m --workers 2   # the 60-minute goal
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import time

from _common import format_table, out_path, save_json

from evolution import Evolution, RunConfig, RunStore, export_best
from search_spaces import mnist1d_cnn_genome, mnist1d_mlp_genome


def one_run(init: str, seed: int, args: argparse.Namespace) -> dict:
    run_dir = out_path(f"search_mnist1d_runs/{init}-s{seed}")
    shutil.rmtree(run_dir, ignore_errors=True)
    config = RunConfig(
        task="mnist1d",
        space="network",
        algorithm=args.algorithm,
        population=args.population,
        budget_evals=args.budget_evals,
        time_budget_s=args.time_budget_s,
        epochs=args.epochs,
        init=init,
        seed=seed,
        workers=args.workers,
    )
    clock = time.monotonic()
    run = Evolution(
        run_dir,
        config,
        seed_genomes=[mnist1d_cnn_genome(), mnist1d_mlp_genome()],
        progress=not args.no_progress,
    )
    summary = run.run()
    search_s = time.monotonic() - clock
    store = RunStore(run_dir, create=False)
    curve = [e["best"] for e in store.latest_checkpoint()["algorithm"]["logbook"]]
    store.close()
    exported = export_best(run_dir, run_dir / "best.keras", epochs=args.export_epochs)
    return {
        "init": init,
        "seed": seed,
        "trained": summary.trained,
        "failed": summary.failed,
        "search_s": round(search_s, 1),
        "best_val_accuracy": summary.best.val_accuracy,
        "best_params": summary.best.param_count,
        "test_accuracy": exported.test_accuracy,
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 6 candidates, 2 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-evals", type=int, default=40)
    parser.add_argument("--time-budget", default=None, help="per run, e.g. 30m (overrides evals)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--export-epochs", type=int, default=None)
    parser.add_argument("--population", type=int, default=10)
    parser.add_argument("--algorithm", default="regularized")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.budget_evals, args.epochs, args.population = 1, 6, 2, 4
    from evolution import parse_duration

    args.time_budget_s = parse_duration(args.time_budget)
    if args.time_budget_s is not None:
        args.budget_evals = None
    logging.basicConfig(level=logging.WARNING)
    results = [
        one_run(init, seed, args) for seed in range(args.seeds) for init in ("autoinit", "default")
    ]
    rows = [
        [
            r["init"],
            r["seed"],
            r["trained"],
            r["failed"],
            f"{r['best_val_accuracy']:.4f}",
            f"{r['test_accuracy']:.4f}",
            r["best_params"],
            r["search_s"],
        ]
        for r in results
    ]
    print(
        format_table(
            rows, ["init", "seed", "trained", "failed", "best val", "test", "params", "search s"]
        )
    )
    for init in ("autoinit", "default"):
        tests = [r["test_accuracy"] for r in results if r["init"] == init]
        print(
            f"{init}: mean test accuracy {statistics.mean(tests):.4f} over {len(tests)} seeds "
            f"(max {max(tests):.4f})"
        )
    save_json(
        "search_mnist1d.json", {"args": {k: v for k, v in vars(args).items()}, "results": results}
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        ax.plot(
            range(1, len(r["curve"]) + 1),
            r["curve"],
            color="C0" if r["init"] == "autoinit" else "C1",
            alpha=0.8,
            label=f"{r['init']} seed {r['seed']}",
        )
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best validation accuracy so far")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path("search_mnist1d.png"), dpi=120)


if __name__ == "__main__":
    main()
