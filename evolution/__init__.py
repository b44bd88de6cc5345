"""Evolutionary search (DEAP), Ray-parallel evaluation, run store and the command line.

Example:
    >>> from evolution import Evolution, RunConfig
    >>> run = Evolution("runs/demo", RunConfig(task="mnist1d", budget_evals=12))  # doctest: +SKIP
    >>> run.run().best.val_accuracy  # doctest: +SKIP
"""

from __future__ import annotations

from autoinit_nas._lazy import lazy_exports
from evolution._algorithm_base import Algorithm, Individual, Proposal
from evolution._algorithms import (
    ALGORITHMS,
    NSGA2,
    MuPlusLambda,
    RegularizedEvolution,
    make_algorithm,
)
from evolution._config import RunConfig, parse_duration
from evolution._evaluate import EvalConfig, EvalResult, evaluate_candidate
from evolution._executors import Executor, InProcessExecutor, RayExecutor
from evolution._export import ExportResult, export_best
from evolution._report import write_report
from evolution._run import Evolution, RunSummary
from evolution._spaces import resolve_space
from evolution._store import CandidateRecord, RunStore
from evolution._tasks import Task, load_task
from evolution.tune_trainable import make_trainable, with_trial_resources

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "CandidateRecord",
    "EvalConfig",
    "EvalResult",
    "Evolution",
    "EvolutionSearcher",
    "Executor",
    "ExportResult",
    "InProcessExecutor",
    "Individual",
    "MuPlusLambda",
    "NSGA2",
    "Proposal",
    "RayExecutor",
    "RegularizedEvolution",
    "RunConfig",
    "RunStore",
    "RunSummary",
    "Task",
    "evaluate_candidate",
    "export_best",
    "genome_trial_dirname",
    "load_task",
    "make_algorithm",
    "make_trainable",
    "parse_duration",
    "resolve_space",
    "with_trial_resources",
    "write_report",
]

# The Ray Tune searcher imports ray.tune: loaded on first use, so ``import evolution`` stays light.
_LAZY = {
    "EvolutionSearcher": "evolution.tune_searcher",
    "genome_trial_dirname": "evolution.tune_searcher",
}

__getattr__ = lazy_exports('evolution', _LAZY, globals())
