"""AutoInit search vs default-init search on MNIST-1D at equal budget, several seeds.

For each seed and each initialization, one regularized-evolution run (network search space,
warm-started from the published MNIST-1D CNN and MLP genomes) with the same budget: a number of
candidates (``--budget-evals``) or a wall-clock time per run (``--time-budget``). The best
candidate by validation accuracy is then retrained on the full training set (train + validation)
and tested on the 1,000 test samples (``export``). The test split is touched only there.

Prints one row per run (candidates trained, best validation and test accuracy) and, per
initialization, the test accuracy of every seed. Writes ``benchmarks/out/search_mnist1d.json``
and ``benchmarks/figures/search_mnist1d.png`` (best validation accuracy so far against
evaluations and against minutes, one line per run). Published MNIST-1D test accuracies for
reference: logistic regression 32%, MLP 68%, CNN 94%, GRU 91%, human expert 96%.

    python benchmarks/search_mnist1d.py --quick                          # a few minutes
    python benchmarks/search_mnist1d.py --time-budget 60m --seeds 3      # the 60-minute goal

Runs of one initialization can go to separate processes (``--inits autoinit``, ``--inits
default``, each pinned to a core) and their JSON files be joined afterwards with
``--combine FILE FILE``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from typing import Any

from _common import FIGURES_DIR, format_table, out_path, save_json

from evolution import Evolution, RunConfig, RunStore, export_best, parse_duration
from search_spaces import mnist1d_cnn_genome, mnist1d_mlp_genome

INITS = ("autoinit", "default")


def best_so_far(store: RunStore) -> tuple[list[float], list[float]]:
    """Best validation accuracy after each finished candidate, and its minute in the run."""
    rows = sorted(
        (r for r in store.candidates("done", "failed") if r.finished_at is not None),
        key=lambda r: r.finished_at,
    )
    if not rows:
        return [], []
    start = min(r.started_at or r.created_at for r in rows)
    best, curve, minutes = 0.0, [], []
    for r in rows:
        best = max(best, r.val_accuracy or 0.0)
        curve.append(best)
        minutes.append((r.finished_at - start) / 60)
    return curve, minutes


def one_run(init: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
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
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
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
    run.close()
    search_s = time.monotonic() - clock
    store = RunStore(run_dir, create=False)
    curve, minutes = best_so_far(store)
    seed_cnn = next(
        (r.val_accuracy for r in store.candidates() if r.hash == mnist1d_cnn_genome().hash()),
        None,
    )
    store.close()
    exported = export_best(run_dir, run_dir / "best.keras", epochs=args.export_epochs)
    total_s = time.monotonic() - clock  # search and export: the time to a tested network
    return {
        "init": init,
        "seed": seed,
        "trained": summary.trained,
        "failed": summary.failed,
        "search_s": round(search_s, 1),
        "seed_cnn_val_accuracy": seed_cnn,
        "best_val_accuracy": summary.best.val_accuracy,
        "best_params": summary.best.param_count,
        "test_accuracy": exported.test_accuracy,
        "export_epochs": exported.epochs,
        "total_s": round(total_s, 1),
        "curve": curve,
        "minutes": minutes,
    }


def plot(results: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for r in results:
        style = {
            "color": "C0" if r["init"] == "autoinit" else "C1",
            "linestyle": ("-", "--", ":", "-.")[r["seed"] % 4],
            "label": f"{r['init']} seed {r['seed']} (test {r['test_accuracy']:.3f})",
        }
        axes[0].step(range(1, len(r["curve"]) + 1), r["curve"], where="post", **style)
        axes[1].step(r["minutes"], r["curve"], where="post", **style)
    axes[0].set_xlabel("candidates trained")
    axes[1].set_xlabel("minutes into the run")
    axes[0].set_ylabel("best validation accuracy so far")
    for ax in axes:
        ax.axhline(0.94, color="0.5", lw=0.8, ls=":")  # published hand-made CNN (test)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Evolution on MNIST-1D: AutoInit vs Keras default initialization, equal budget")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 6 candidates, 2 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-evals", type=int, default=40)
    parser.add_argument("--time-budget", default=None, help="per run, e.g. 60m (overrides evals)")
    parser.add_argument("--epochs", type=int, default=RunConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=RunConfig.batch_size)
    parser.add_argument("--learning-rate", type=float, default=RunConfig.learning_rate)
    parser.add_argument("--export-epochs", type=int, default=None, help="default: as searched")
    parser.add_argument("--population", type=int, default=10)
    parser.add_argument("--algorithm", default="regularized")
    parser.add_argument("--workers", type=int, default=0, help="Ray workers; 0: in-process")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--inits", nargs="+", choices=INITS, default=list(INITS))
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--combine", nargs="+", default=None, metavar="JSON", help="table and figure from saved runs"
    )
    args = parser.parse_args()
    if args.combine:
        import json
        from pathlib import Path

        results = [r for f in args.combine for r in json.loads(Path(f).read_text())["results"]]
        report(results, args, tag="")
        return
    if args.quick:
        args.seeds, args.budget_evals, args.epochs, args.population = 1, 6, 2, 4
    args.time_budget_s = parse_duration(args.time_budget)
    if args.time_budget_s is not None:
        args.budget_evals = None
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    results = [one_run(init, seed, args) for seed in seeds for init in args.inits]
    tag = "" if list(args.inits) == list(INITS) else "-" + "-".join(args.inits)
    if args.first_seed or args.seeds != 3:  # one file per set of runs: nothing overwritten
        tag += f"-s{seeds.start}" + (f"-{seeds.stop - 1}" if len(seeds) > 1 else "")
    report(results, args, tag=tag)


def report(results: list[dict[str, Any]], args: argparse.Namespace, tag: str) -> None:
    """Print the table, save the JSON (``search_mnist1d{tag}.json``) and draw the figure."""
    rows = [
        [
            r["init"],
            r["seed"],
            r["trained"],
            r["failed"],
            "n/a" if r["seed_cnn_val_accuracy"] is None else f"{r['seed_cnn_val_accuracy']:.4f}",
            f"{r['best_val_accuracy']:.4f}",
            f"{r['test_accuracy']:.4f}",
            r["best_params"],
            r["search_s"],
            r.get("total_s", "n/a"),
        ]
        for r in results
    ]
    headers = ["init", "seed", "trained", "failed", "seed CNN val", "best val", "test", "params"]
    print(format_table(rows, [*headers, "search s", "search+export s"]))
    for init in INITS:
        tests = [r["test_accuracy"] for r in results if r["init"] == init]
        if not tests:
            continue
        per_seed = ", ".join(f"{t:.4f}" for t in tests)
        print(f"{init}: best test accuracy per seed {per_seed}; max {max(tests):.4f}")
    save_json(f"search_mnist1d{tag}.json", {"args": dict(vars(args)), "results": results})
    figure = FIGURES_DIR / f"search_mnist1d{tag}.png"
    plot(results, figure)
    print(f"Figure: {figure}")


if __name__ == "__main__":
    main()
