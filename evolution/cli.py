"""The ``autoinit-nas`` command line: evolve, resume, report, export (and signal)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

_DEFAULT_BUDGET = 24


def _add_run_options(p: argparse.ArgumentParser, *, resume: bool) -> None:
    default = argparse.SUPPRESS if resume else None
    budget = p.add_argument_group("budget")
    budget.add_argument(
        "--budget-evals",
        type=int,
        default=default,
        metavar="N",
        help=f"candidates to train (default {_DEFAULT_BUDGET} unless --time-budget)",
    )
    budget.add_argument(
        "--time-budget",
        default=default,
        metavar="DURATION",
        help="stop proposing after this run time, e.g. 90s, 30m, 1.5h",
    )
    par = p.add_argument_group("parallelism")
    par.add_argument(
        "--workers",
        type=int,
        default=argparse.SUPPRESS if resume else 0,
        help="evaluations in flight on Ray; 0 evaluates in this process (default)",
    )
    par.add_argument("--cpus-per-trial", type=float, default=argparse.SUPPRESS if resume else 1.0)
    par.add_argument(
        "--gpus-per-trial",
        type=float,
        default=argparse.SUPPRESS if resume else 0.0,
        help="fractions share a GPU, e.g. 0.25 runs four candidates per GPU",
    )
    par.add_argument(
        "--address",
        default=argparse.SUPPRESS if resume else None,
        help="address of an existing Ray cluster (default: start a local Ray)",
    )
    par.add_argument(
        "--max-retries",
        type=int,
        default=argparse.SUPPRESS if resume else 2,
        help="retries of a candidate whose Ray worker process died",
    )
    par.add_argument(
        "--recycle-after",
        type=int,
        default=argparse.SUPPRESS if resume else 10,
        help="evaluations per Ray worker process before it is replaced",
    )
    _add_output_options(p)


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``autoinit-nas``."""

    parser = argparse.ArgumentParser(
        prog="autoinit-nas",
        description="Evolve Keras architectures and activation functions; every candidate is "
        "initialized with AutoInit before training.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    ev = sub.add_parser("evolve", help="start a search (defaults: a short run on MNIST-1D)")
    ev.add_argument(
        "--task",
        default="mnist1d",
        help="'mnist1d', a .npz file with x_train, y_train (optional x_test, y_test), or "
        "package.module:function returning those arrays",
    )
    ev.add_argument("--space", default="network", help="search space: 'network' or module:Class")
    ev.add_argument(
        "--algorithm", default="regularized", choices=["regularized", "nsga2", "mu_plus_lambda"]
    )
    ev.add_argument("--population", type=int, default=8)
    ev.add_argument("--sample-size", type=int, default=3, help="tournament size (regularized)")
    ev.add_argument("--offspring", type=int, default=None, help="lambda (mu_plus_lambda, nsga2)")
    ev.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="training epochs per candidate (default 10)",
    )
    ev.add_argument(
        "--train-seconds",
        type=float,
        default=None,
        help="training time budget per candidate (stops mid-epoch)",
    )
    ev.add_argument("--batch-size", type=int, default=100)
    ev.add_argument(
        "--learning-rate",
        type=float,
        default=1e-2,
        help="Adam learning rate (default 1e-2, as the MNIST-1D paper trains its baselines)",
    )
    ev.add_argument(
        "--lr-schedule",
        default="cosine",
        choices=["cosine", "constant"],
        help="'cosine' decays the learning rate to 0 over each candidate's budget (default)",
    )
    ev.add_argument(
        "--init",
        default="autoinit",
        choices=["autoinit", "default"],
        help="'default' keeps Keras' initializers (for comparison)",
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--seed-genome",
        action="append",
        default=[],
        metavar="FILE.json",
        help="a genome (JSON) evaluated first; repeatable",
    )
    ev.add_argument(
        "--warm-start",
        default="auto",
        choices=["auto", "none"],
        help="auto: on mnist1d with the network space, start from the published "
        "MNIST-1D CNN and MLP genomes",
    )
    ev.add_argument(
        "--run-dir", default=None, help="default: runs/<algorithm>-<init>-s<seed>-<time>"
    )
    _add_run_options(ev, resume=False)

    rs = sub.add_parser("resume", help="continue an interrupted run")
    rs.add_argument("run_dir")
    _add_run_options(rs, resume=True)

    rp = sub.add_parser("report", help="write plots and a summary of a run")
    rp.add_argument("run_dir")
    rp.add_argument("-o", "--out-dir", default=None, help="default: RUN_DIR/report")
    rp.add_argument("-v", "--verbose", action="count", default=0)

    ex = sub.add_parser(
        "export",
        help="retrain the best candidate on all training data, test it and save it as .keras",
    )
    ex.add_argument("run_dir")
    ex.add_argument("-o", "--output", default="best.keras")
    ex.add_argument("--candidate", type=int, default=None, help="candidate id (default: best)")
    ex.add_argument("--epochs", type=int, default=None)
    ex.add_argument("-v", "--verbose", action="count", default=0)

    try:  # the `signal` subcommand lives in its own module (engine side)
        from evolution import signal_command
    except ImportError:
        signal_command = None
    if signal_command is not None:
        signal_command.add_parser(sub)
    return parser


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Every candidate is a new model, so TensorFlow's retracing warnings say nothing useful here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR if verbose < 2 else logging.DEBUG)


def _finish(run: Any, summary: Any, args: argparse.Namespace) -> int:
    from evolution import write_report

    best = summary.best
    print(
        f"Run {summary.run_dir}: {summary.trained} candidates trained ({summary.failed} failed, "
        f"{summary.duplicates} duplicates not retrained) in {summary.elapsed_s / 60:.1f} min"
    )
    if best is not None:
        print(
            f"Best: candidate {best.id} ({best.hash}), validation accuracy "
            f"{best.val_accuracy:.4f}, {best.param_count:,} parameters"
        )
    if not args.no_report:
        path = write_report(summary.run_dir, space=run.space)
        print(f"Report: {path}")
    print(f"Export the best network: autoinit-nas export {summary.run_dir} -o best.keras")
    return 0


def _budget(args: argparse.Namespace, *, resume: bool) -> dict[str, Any]:
    from evolution import parse_duration

    out: dict[str, Any] = {}
    if "time_budget" in args and args.time_budget is not None:
        out["time_budget_s"] = parse_duration(args.time_budget)
    if "budget_evals" in args and args.budget_evals is not None:
        out["budget_evals"] = args.budget_evals
    elif not resume:
        out["budget_evals"] = None if "time_budget_s" in out else _DEFAULT_BUDGET
    return out


def _seed_genomes(args: argparse.Namespace) -> list[str]:
    texts = [Path(path).read_text().strip() for path in args.seed_genome]
    if args.warm_start == "auto" and args.task == "mnist1d" and args.space == "network":
        from search_spaces import mnist1d_cnn_genome, mnist1d_mlp_genome

        texts += [mnist1d_cnn_genome().to_json(), mnist1d_mlp_genome().to_json()]
    return texts


def _evolve(args: argparse.Namespace) -> int:
    from evolution import Evolution, RunConfig

    run_dir = args.run_dir or os.path.join(
        "runs", f"{args.algorithm}-{args.init}-s{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    config = RunConfig(
        task=args.task,
        space=args.space,
        algorithm=args.algorithm,
        population=args.population,
        sample_size=args.sample_size,
        offspring=args.offspring,
        epochs=args.epochs,
        train_seconds=args.train_seconds,
        batch_size=args.batch_size,
        init=args.init,
        lr_schedule=args.lr_schedule,
        learning_rate=args.learning_rate,
        workers=args.workers,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        address=args.address,
        max_retries=args.max_retries,
        recycle_after=args.recycle_after,
        seed=args.seed,
        **_budget(args, resume=False),
    )
    config.seed_genomes = _seed_genomes(args)
    print(f"Run directory: {run_dir}", flush=True)
    run = Evolution(run_dir, config, progress=not args.no_progress)
    return _finish(run, run.run(), args)


def _resume(args: argparse.Namespace) -> int:
    from evolution import Evolution

    keys = (
        "workers",
        "cpus_per_trial",
        "gpus_per_trial",
        "address",
        "max_retries",
        "recycle_after",
    )
    overrides = {k: getattr(args, k) for k in keys if k in args}
    overrides.update(_budget(args, resume=True))
    run = Evolution.resume(args.run_dir, progress=not args.no_progress, **overrides)
    return _finish(run, run.run(), args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``autoinit-nas``; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", 0))
    from autoinit_nas.errors import FatalSearchError

    try:
        if args.command == "evolve":
            return _evolve(args)
        if args.command == "resume":
            return _resume(args)
        if args.command == "report":
            from evolution import write_report

            print(f"Report: {write_report(args.run_dir, out_dir=args.out_dir)}")
            return 0
        if args.command == "export":
            from evolution import export_best

            result = export_best(
                args.run_dir, args.output, candidate_id=args.candidate, epochs=args.epochs
            )
            test = "n/a" if result.test_accuracy is None else f"{result.test_accuracy:.4f}"
            print(
                f"Saved {result.path} (candidate {result.candidate_id}, {result.param_count:,} "
                f"parameters, test accuracy {test}, reloads: {result.reloaded})"
            )
            return 0
        from evolution import signal_command

        return int(signal_command.run(args))
    except FatalSearchError as exc:
        print(f"autoinit-nas: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, KeyError) as exc:
        print(f"autoinit-nas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        run_dir = getattr(args, "run_dir", None)
        print(
            f"\nInterrupted. Continue with: autoinit-nas resume {run_dir or 'RUN_DIR'}",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
