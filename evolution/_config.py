"""Settings of one run, stored in the run directory so that ``resume`` needs only the path."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from evolution._algorithms import ALGORITHMS
from evolution._evaluate import EvalConfig

__all__ = ["RunConfig", "parse_duration"]


def parse_duration(text: str | float | int | None) -> float | None:
    """Seconds from ``"90"``, ``"90s"``, ``"30m"``, ``"1.5h"`` (``None`` stays ``None``)."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    value = text.strip().lower()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        if value and value[-1] in units:
            seconds = float(value[:-1]) * units[value[-1]]
        else:
            seconds = float(value)
    except ValueError as exc:
        raise ValueError(f"Expected a duration like 90s, 30m or 1.5h. Received: {text!r}") from exc
    if seconds <= 0:
        raise ValueError(f"Expected a positive duration. Received: {text!r}")
    return seconds


@dataclass
class RunConfig:
    """Everything that defines a run (JSON-serializable; saved in the run store).

    Args:
        task: ``"mnist1d"``, a path to a ``.npz`` file or ``"package.module:function"``
            returning the arrays (see ``load_task``).
        space: search space name (``network``) or ``module:Class``; ``space_options`` are its
            constructor arguments.
        algorithm: ``regularized``, ``nsga2`` or ``mu_plus_lambda``.
        population: population size.
        sample_size: tournament size of regularized evolution.
        offspring: children per generation of mu+lambda / NSGA-II (default: ``population``).
        cxpb, mutpb: crossover and mutation probabilities of the generational algorithms.
        budget_evals: number of candidates to train (duplicates are not trained, not counted).
        time_budget_s: stop proposing after this many seconds of run time (summed over resumes).
        epochs, train_seconds, batch_size, init: training budget of each candidate.
        lr_schedule: ``cosine`` (decay to 0 over the budget) or ``constant``.
        learning_rate: initial learning rate, passed to the search space through ``TaskSpec``.
        val_fraction: share of the training data held out for fitness.
        workers: evaluations in flight; 0 evaluates in this process.
        cpus_per_trial, gpus_per_trial: Ray resources of each evaluation (fractions allowed).
        address: Ray cluster address (``None``: a local Ray started by the run).
        max_retries: retries of an evaluation whose Ray worker died.
        recycle_after: evaluations per Ray worker process before it is replaced.
        seed: seed of every random draw of the search and of the candidates' seeds.
        seed_genomes: genome JSON texts evaluated first (warm start), before random samples.
        max_duplicates: consecutive already-seen proposals after which the space is considered
            exhausted and the run stops.
    """

    task: str = "mnist1d"
    space: str = "network"
    space_options: dict[str, Any] = field(default_factory=dict)
    algorithm: str = "regularized"
    population: int = 8
    sample_size: int = 3
    offspring: int | None = None
    cxpb: float = 0.3
    mutpb: float = 0.7
    budget_evals: int | None = 24
    time_budget_s: float | None = None
    epochs: int = 10
    train_seconds: float | None = None
    batch_size: int = 100
    init: str = "autoinit"
    lr_schedule: str = "cosine"
    learning_rate: float = 1e-2
    val_fraction: float = 0.1
    workers: int = 0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    max_retries: int = 2
    recycle_after: int = 10
    seed: int = 0
    max_duplicates: int = 200
    seed_genomes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"Expected algorithm in {sorted(ALGORITHMS)}. Received: {self.algorithm!r}"
            )
        if self.budget_evals is None and self.time_budget_s is None:
            raise ValueError("Expected budget_evals or time_budget_s (or both). Received: neither")
        if self.budget_evals is not None and self.budget_evals < 1:
            raise ValueError(f"Expected budget_evals >= 1. Received: {self.budget_evals}")
        if self.workers < 0:
            raise ValueError(f"Expected workers >= 0. Received: {self.workers}")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ValueError(
                f"Expected cpus_per_trial > 0 and gpus_per_trial >= 0. Received: "
                f"{self.cpus_per_trial}, {self.gpus_per_trial}"
            )
        self.eval_config()  # validates epochs, train_seconds, init

    def eval_config(self) -> EvalConfig:
        """The per-candidate training settings."""
        return EvalConfig(
            epochs=self.epochs,
            train_seconds=self.train_seconds,
            batch_size=self.batch_size,
            init=self.init,
            lr_schedule=self.lr_schedule,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("lr_schedule", "constant")  # runs saved before schedules existed
        return cls(**values)
