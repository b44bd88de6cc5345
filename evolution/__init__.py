"""Evolutionary search (DEAP), Ray-parallel evaluation, run store and the command line.

Example:
    >>> from evolution import Evolution, RunConfig
    >>> run = Evolution("runs/demo", RunConfig(task="mnist1d", budget_evals=12))  # doctest: +SKIP
    >>> run.run().best.val_accuracy  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

# Every export is imported on first use: ``import evolution`` (and so the ``autoinit-nas`` command
# line, ``evolution.cli``) loads neither TensorFlow nor Ray until a command needs them, so that
# ``--help`` is instant and the command can set TensorFlow's environment before TensorFlow starts.
_EXPORTS = {
    "Algorithm": "evolution._algorithm_base",
    "Individual": "evolution._algorithm_base",
    "Proposal": "evolution._algorithm_base",
    "ALGORITHMS": "evolution._algorithms",
    "MuPlusLambda": "evolution._algorithms",
    "NSGA2": "evolution._algorithms",
    "RegularizedEvolution": "evolution._algorithms",
    "make_algorithm": "evolution._algorithms",
    "RunConfig": "evolution._config",
    "parse_duration": "evolution._config",
    "EvalConfig": "evolution._evaluate",
    "EvalResult": "evolution._evaluate",
    "evaluate_candidate": "evolution._evaluate",
    "Executor": "evolution._executors",
    "InProcessExecutor": "evolution._executors",
    "RayExecutor": "evolution._executors",
    "ExportResult": "evolution._export",
    "export_best": "evolution._export",
    "write_report": "evolution._report",
    "Evolution": "evolution._run",
    "RunSummary": "evolution._run",
    "resolve_space": "evolution._spaces",
    "CandidateRecord": "evolution._store",
    "RunStore": "evolution._store",
    "Task": "evolution._tasks",
    "load_task": "evolution._tasks",
    "EvolutionSearcher": "evolution.tune_searcher",
    "genome_trial_dirname": "evolution.tune_searcher",
    "make_trainable": "evolution.tune_trainable",
    "with_trial_resources": "evolution.tune_trainable",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evolution' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
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
    from evolution.tune_searcher import EvolutionSearcher, genome_trial_dirname
    from evolution.tune_trainable import make_trainable, with_trial_resources
