"""How noisy is fitness? Random network candidates, each trained with two seeds, under AutoInit
and under Keras' default initialization.

Reports, per initialization: the Spearman rank correlation of validation accuracy between the
two seeds (how reproducible the ranking of candidates is), and the share of candidates that
fail to learn (validation accuracy below 2x chance, i.e. < 0.2 on MNIST-1D's 10 classes, or a
failed training). Writes ``benchmarks/out/fitness_noise.json``.

    python benchmarks/fitness_noise.py --quick        # 8 candidates, 2 epochs
    python benchmarks/fitness_noise.py                # 30 candidates, 5 epochs
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import format_table, save_json
from scipy.stats import spearmanr

from evolution import EvalConfig, evaluate_candidate, load_task
from search_spaces import NetworkSearchSpace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.candidates, args.epochs = 8, 2
    task = load_task("mnist1d")
    chance = 1.0 / task.spec.num_classes
    space = NetworkSearchSpace()
    rng = np.random.default_rng(args.seed)
    genomes = [space.sample(rng) for _ in range(args.candidates)]
    results: dict[str, list[list[float]]] = {"autoinit": [], "default": []}
    clock = time.monotonic()
    for i, genome in enumerate(genomes):
        for init in results:
            config = EvalConfig(epochs=args.epochs, init=init)
            accs = []
            for seed in (1, 2):
                r = evaluate_candidate(space, genome.to_json(), task, config, seed)
                accs.append(r.val_accuracy if r.ok else float("nan"))
            results[init].append(accs)
        print(
            f"candidate {i + 1}/{len(genomes)}: autoinit {results['autoinit'][-1]}, "
            f"default {results['default'][-1]}",
            flush=True,
        )
    rows, summary = [], {}
    for init, pairs in results.items():
        a = np.array(pairs, dtype=float)
        filled = np.nan_to_num(a, nan=0.0)  # failed training ranks last
        rho = float(spearmanr(filled[:, 0], filled[:, 1]).statistic)
        fail = float(np.mean(~(filled >= 2 * chance)))
        mean_gap = float(np.mean(np.abs(filled[:, 0] - filled[:, 1])))
        summary[init] = {
            "spearman": rho,
            "fail_to_learn_share": fail,
            "mean_abs_seed_gap": mean_gap,
            "mean_accuracy": float(filled.mean()),
        }
        rows.append([init, f"{rho:.3f}", f"{fail:.2%}", f"{mean_gap:.4f}", f"{filled.mean():.4f}"])
    print(
        format_table(
            rows, ["init", "Spearman seed1 vs seed2", "fail to learn", "mean |acc gap|", "mean acc"]
        )
    )
    print(f"{len(genomes)} candidates x 2 seeds x 2 inits in {time.monotonic() - clock:.0f} s")
    save_json(
        "fitness_noise.json",
        {
            "args": vars(args),
            "summary": summary,
            "accuracies": results,
            "genomes": [g.to_json() for g in genomes],
        },
    )


if __name__ == "__main__":
    main()
