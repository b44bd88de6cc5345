"""Architecture search on MNIST-1D with Ray Tune: the evolutionary Searcher over network genomes.

Every trial builds its genome with AutoInit (``evolution.tune_trainable.make_trainable``),
trains a few epochs and reports each epoch; ASHA stops weak trials early; the searcher mutates
tournament winners of an aging population. Interrupt it (Ctrl+C) and run it again with
``--resume``: ``Tuner.restore`` continues the evolution without retraining finished trials.

    python examples/ray_tune_evolution.py                 # ~24 trials, a few minutes on CPU
    python examples/ray_tune_evolution.py --quick         # 4 tiny trials, for a smoke test
    python examples/ray_tune_evolution.py --gpus-per-trial 0.25   # four trials share a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 tiny trials on a data subset")
    parser.add_argument("--out", default="ray_results", help="Ray Tune storage directory")
    parser.add_argument("--name", default="mnist1d_evolution", help="experiment name")
    parser.add_argument("--samples", type=int, default=24, help="trials in all")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per trial (ASHA's max_t)")
    parser.add_argument("--population", type=int, default=8, help="aging population size")
    parser.add_argument("--concurrent", type=int, default=2, help="trials in flight")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.epochs, args.population, args.concurrent = 4, 1, 2, 1
    return args


def main() -> None:
    args = parse_args()
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from autoinit_nas.tune_callback import SignalReportCollector
    from evolution import load_task
    from evolution.tune_searcher import EvolutionSearcher, genome_trial_dirname
    from evolution.tune_trainable import make_trainable, with_trial_resources
    from search_spaces import NetworkSearchSpace

    task = load_task("mnist1d")
    if args.quick:
        task = dataclasses.replace(
            task,
            x_train=task.x_train[:600],
            y_train=task.y_train[:600],
            x_val=task.x_val[:200],
            y_val=task.y_val[:200],
        )
    space = NetworkSearchSpace(
        input_shape=task.spec.input_shape,
        num_classes=task.spec.num_classes,
        sample_nodes=(1, 3) if args.quick else (2, 8),
        max_nodes=6 if args.quick else 16,
        max_params=20_000 if args.quick else 300_000,
    )
    trainable = with_trial_resources(
        make_trainable(task, space, epochs=args.epochs, batch_size=64),
        cpus=args.cpus_per_trial,
        gpus=args.gpus_per_trial,
    )
    ray.init(include_dashboard=False, log_to_driver=False)
    storage = str(Path(args.out).resolve())
    experiment = Path(storage) / args.name
    if args.resume and tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=True)
    else:
        searcher = EvolutionSearcher(
            space,
            metric="val_accuracy",
            mode="max",
            population_size=args.population,
            sample_size=min(3, args.population),
            seed=args.seed,
            initial=[] if args.quick else ["mnist1d_cnn"],
        )
        scheduler = (
            None
            if args.quick
            else ASHAScheduler(max_t=args.epochs, grace_period=2, reduction_factor=2)
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                metric="val_accuracy",
                mode="max",
                num_samples=args.samples,
                max_concurrent_trials=args.concurrent,
                reuse_actors=True,
                trial_dirname_creator=genome_trial_dirname,
            ),
            run_config=tune.RunConfig(
                storage_path=storage,
                name=args.name,
                verbose=0 if args.quick else 1,
                callbacks=[SignalReportCollector()],
            ),
        )
    results = tuner.fit()
    best = results.get_best_result()
    frame = results.get_dataframe()
    print(f"{len(frame)} trials, {results.num_errors} errors")
    print(
        f"best trial {best.metrics['trial_id']}: val_accuracy {best.metrics['val_accuracy']:.3f}, "
        f"{best.metrics['param_count']} parameters, genome {best.config['genome_hash']} "
        f"({best.config['origin']}), AutoInit max/min layer variance "
        f"{best.metrics['autoinit_max_var']:.3g}/{best.metrics['autoinit_min_var']:.3g}"
    )
    out = experiment / "best_genome.json"
    out.write_text(json.dumps(json.loads(best.config["genome"]), indent=1))
    print(f"best genome written to {out}; signal reports in {experiment / 'signal_reports.jsonl'}")
    ray.shutdown()


if __name__ == "__main__":
    main()
