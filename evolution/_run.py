"""A search run: the loop that asks the algorithm, evaluates, records and checkpoints."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoinit_nas.errors import FatalSearchError
from evolution._algorithm_base import Algorithm, Proposal
from evolution._algorithms import make_algorithm
from evolution._config import RunConfig
from evolution._evaluate import EvalResult
from evolution._executors import Executor, InProcessExecutor, RayExecutor
from evolution._spaces import resolve_space, space_spec
from evolution._store import CandidateRecord, RunStore
from evolution._tasks import Task, is_callable_task, load_task
from search_spaces import Genome, SearchSpace

__all__ = ["Evolution", "RunSummary"]

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    trained: int
    failed: int
    duplicates: int
    elapsed_s: float
    best: CandidateRecord | None
    population: list[int]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _proposal_state(candidate_id: int, proposal: Proposal) -> dict[str, Any]:
    return {
        "id": candidate_id,
        "genome": proposal.genome.to_json(),
        "parents": list(proposal.parents),
        "generation": proposal.generation,
        "origin": proposal.origin,
    }


class Evolution:
    """One evolution run, backed by the SQLite store in ``run_dir``.

    Every finished candidate and the checkpoint that follows from it (algorithm state with
    population, hall of fame, logbook and generator state; the candidate-seed generator; the
    evaluations in flight) are committed in one transaction, so a run killed at any moment
    resumes with no finished candidate lost and none trained twice.

    Args:
        run_dir: the run directory (created; must not already hold a run, see ``resume``).
        config: run settings; defaults to a short regularized evolution on MNIST-1D.
        space: a search-space instance (otherwise resolved from ``config.space``).
        task: an already loaded task (otherwise loaded from ``config.task``).
        seed_genomes: genomes evaluated first, before random ones (added to
            ``config.seed_genomes``, so that resume knows them).
        progress: show a tqdm progress bar.

    Example:
        >>> run = Evolution("runs/demo", RunConfig(budget_evals=12, epochs=3))  # doctest: +SKIP
        >>> summary = run.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: RunConfig | None = None,
        *,
        space: SearchSpace | None = None,
        task: Task | None = None,
        seed_genomes: Sequence[Genome] = (),
        progress: bool = True,
        _resume: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.store = RunStore(self.run_dir, create=not _resume)
        if not _resume:
            if self.store.get_meta("config") is not None:
                raise FatalSearchError(
                    f"Expected a new run directory. Received: {str(self.run_dir)!r} already holds "
                    f"a run; continue it with `autoinit-nas resume {self.run_dir}`"
                )
            config = config or RunConfig()
            config.seed_genomes = [*config.seed_genomes, *(g.to_json() for g in seed_genomes)]
            if space is not None and config.space == RunConfig.space:
                config.space = space_spec(space)
            if config.task != "mnist1d" and not is_callable_task(config.task):
                config.task = str(Path(config.task).expanduser().resolve())
            self.store.set_meta("config", config.to_dict())
            self.store.set_meta("created_at", time.time())
        self.config = (
            config if config is not None else RunConfig.from_dict(self.store.get_meta("config"))
        )
        self.progress = progress
        self.task = (
            task
            if task is not None
            else load_task(
                self.config.task,
                val_fraction=self.config.val_fraction,
                seed=self.config.seed,
                learning_rate=self.config.learning_rate,
            )
        )
        self.space = (
            space
            if space is not None
            else resolve_space(self.config.space, self.config.space_options, task=self.task.spec)
        )
        spec = self.task.spec
        self.store.set_meta(
            "task_spec",
            {
                "input_shape": list(spec.input_shape),
                "num_classes": spec.num_classes,
                "learning_rate": spec.learning_rate,
            },
        )
        search_seq, seed_seq = np.random.SeedSequence(self.config.seed).spawn(2)
        self.seed_rng = np.random.default_rng(seed_seq)
        self.algorithm: Algorithm = make_algorithm(
            self.config.algorithm,
            self.space,
            np.random.default_rng(search_seq),
            population_size=self.config.population,
            sample_size=self.config.sample_size,
            offspring=self.config.offspring,
            cxpb=self.config.cxpb,
            mutpb=self.config.mutpb,
            seed_genomes=[self.space.from_json(text) for text in self.config.seed_genomes],
        )
        self._in_flight: dict[int, Proposal] = {}
        self._waiting: dict[int, tuple[Proposal, int]] = {}  # duplicate of an in-flight genome
        self._consecutive_duplicates = 0
        self._elapsed_before = 0.0
        self._started = time.monotonic()
        state = self.store.latest_checkpoint()
        if state is None:
            with self.store.transaction():
                self._write_checkpoint()
        else:
            self._restore(state)

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        *,
        space: SearchSpace | None = None,
        task: Task | None = None,
        progress: bool = True,
        **overrides: Any,
    ) -> Evolution:
        """Reopen a run; ``overrides`` change settings such as ``workers`` or ``budget_evals``.

        Raises:
            FatalSearchError: ``run_dir`` holds no run.
        """
        store = RunStore(run_dir, create=False)
        data = store.get_meta("config")
        store.close()
        if data is None:
            raise FatalSearchError(
                f"Expected a run in {str(run_dir)!r}. Received: no settings stored"
            )
        config = RunConfig.from_dict({**data, **overrides})
        run = cls(run_dir, config, space=space, task=task, progress=progress, _resume=True)
        if overrides:
            run.store.set_meta("config", config.to_dict())
        return run

    # -- checkpoints --------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self._elapsed_before + (time.monotonic() - self._started)

    def _write_checkpoint(self) -> None:
        state = {
            "algorithm": self.algorithm.get_state(),
            "seed_rng": self.seed_rng.bit_generator.state,
            "elapsed": self._elapsed(),
            "in_flight": [_proposal_state(cid, p) for cid, p in self._in_flight.items()],
            "waiting": [
                {**_proposal_state(cid, p), "of": of} for cid, (p, of) in self._waiting.items()
            ],
            "consecutive_duplicates": self._consecutive_duplicates,
        }
        self.store.write_checkpoint(state, self.algorithm.evaluations)

    def _restore(self, state: dict[str, Any]) -> None:
        self.algorithm.set_state(state["algorithm"])
        self.seed_rng.bit_generator.state = state["seed_rng"]
        self._elapsed_before = state["elapsed"]
        self._consecutive_duplicates = state["consecutive_duplicates"]

        def proposal(d: dict[str, Any]) -> Proposal:
            return Proposal(
                self.space.from_json(d["genome"]), tuple(d["parents"]), d["generation"], d["origin"]
            )

        self._in_flight = {d["id"]: proposal(d) for d in state["in_flight"]}
        self._waiting = {d["id"]: (proposal(d), d["of"]) for d in state["waiting"]}
        logger.info(
            "Resumed %s: %d evaluations told, %d to re-submit",
            self.run_dir,
            self.algorithm.evaluations,
            len(self._in_flight),
        )

    # -- the loop -------------------------------------------------------------------------
    def _make_executor(self) -> Executor:
        cfg = self.config
        if cfg.workers == 0:
            return InProcessExecutor(self.space, self.task, cfg.eval_config())
        return RayExecutor(
            self.space,
            self.task,
            cfg.eval_config(),
            workers=cfg.workers,
            cpus_per_trial=cfg.cpus_per_trial,
            gpus_per_trial=cfg.gpus_per_trial,
            address=cfg.address,
            max_retries=cfg.max_retries,
            recycle_after=cfg.recycle_after,
        )

    def _may_propose(self) -> bool:
        cfg = self.config
        if cfg.budget_evals is not None and (
            self.store.count("done", "failed") + len(self._in_flight) >= cfg.budget_evals
        ):
            return False
        if cfg.time_budget_s is not None and self._elapsed() >= cfg.time_budget_s:
            return False
        if self._consecutive_duplicates >= cfg.max_duplicates:
            logger.warning(
                "Stopping: %d proposals in a row were already trained (the search "
                "space looks exhausted)",
                self._consecutive_duplicates,
            )
            return False
        return True

    def _tell_duplicate(
        self, candidate_id: int, proposal: Proposal, original: CandidateRecord
    ) -> None:
        fitness = self.algorithm.fitness_values(
            original.status == "done", original.val_accuracy or 0.0, original.param_count or 0
        )
        self.store.finish_candidate(
            candidate_id,
            status="duplicate",
            fitness=fitness,
            duplicate_of=original.id,
            val_accuracy=original.val_accuracy,
            val_loss=original.val_loss,
            param_count=original.param_count,
            error_kind=original.error_kind,
            error=original.error,
        )
        self.algorithm.tell(self.algorithm.individual(candidate_id, proposal, fitness))

    def _propose(self, executor: Executor) -> bool:
        proposal = self.algorithm.ask()
        if proposal is None:
            return False
        genome_hash, genome_json = proposal.genome.hash(), proposal.genome.to_json()
        seed = int(self.seed_rng.integers(2**31 - 1))
        original = self.store.trained_with_hash(genome_hash)
        in_flight_same = next(
            (cid for cid, p in self._in_flight.items() if p.genome.hash() == genome_hash), None
        )
        with self.store.transaction():
            cid = self.store.add_candidate(
                hash=genome_hash,
                genome=genome_json,
                parents=proposal.parents,
                origin=proposal.origin,
                generation=proposal.generation,
                seed=seed,
                duplicate_of=original.id if original else in_flight_same,
            )
            if original is not None:
                self._tell_duplicate(cid, proposal, original)
                self._consecutive_duplicates += 1
            elif in_flight_same is not None:
                self._waiting[cid] = (proposal, in_flight_same)
            else:
                self._in_flight[cid] = proposal
            self._write_checkpoint()
        if cid in self._in_flight:
            self._submit(executor, cid, proposal, seed)
        return True

    def _submit(self, executor: Executor, cid: int, proposal: Proposal, seed: int) -> None:
        self.store.mark_running(cid)
        executor.submit(cid, proposal.genome.to_json(), seed)

    def _finish(self, cid: int, result: EvalResult) -> None:
        proposal = self._in_flight.pop(cid)
        fitness = self.algorithm.fitness_values(result.ok, result.val_accuracy, result.param_count)
        with self.store.transaction():
            self.store.finish_candidate(
                cid,
                status="done" if result.ok else "failed",
                fitness=fitness,
                val_accuracy=result.val_accuracy if result.ok else None,
                val_loss=_finite(result.val_loss),
                param_count=result.param_count or None,
                epochs_run=result.epochs_run,
                started_at=result.started_at or None,
                train_seconds=result.train_seconds,
                error_kind=result.error_kind,
                error=result.error,
                worker=result.worker or None,
            )
            self.algorithm.tell(self.algorithm.individual(cid, proposal, fitness))
            self._consecutive_duplicates = 0
            record = self.store.candidate(cid)
            for waiting_id, (waiting_proposal, of) in list(self._waiting.items()):
                if of == cid:
                    del self._waiting[waiting_id]
                    self._tell_duplicate(waiting_id, waiting_proposal, record)
            self._write_checkpoint()
        if result.ok:
            logger.info(
                "Candidate %d: val_accuracy %.4f, %d parameters, %.1f s",
                cid,
                result.val_accuracy,
                result.param_count,
                result.train_seconds,
            )
        else:
            logger.warning("Candidate %d failed (%s): %s", cid, result.error_kind, result.error)

    def run(self) -> RunSummary:
        """Search until the budget is spent; returns a summary (the store has everything)."""
        from tqdm.auto import tqdm

        self._started = time.monotonic()
        executor = self._make_executor()
        bar = tqdm(
            total=self.config.budget_evals,
            initial=self.store.count("done", "failed"),
            desc=f"evolve[{self.config.algorithm}]",
            unit="cand",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        try:
            for cid, proposal in list(self._in_flight.items()):
                self._submit(executor, cid, proposal, self.store.candidate(cid).seed)
            while True:
                while executor.in_flight < executor.capacity and self._may_propose():
                    if not self._propose(executor):
                        break
                if executor.in_flight == 0:
                    break
                for cid, result in executor.wait():
                    self._finish(cid, result)
                    bar.update(1)
                    bar.set_postfix(
                        best=f"{self.algorithm.best().fitness.values[0]:.4f}",
                        failed=self.store.count("failed"),
                    )
        finally:
            executor.close()
            bar.close()
        with self.store.transaction():
            self._write_checkpoint()
            self.store.set_meta("finished_at", time.time())
        return self.summary()

    def summary(self) -> RunSummary:
        """Counts, elapsed time, best candidate and current population of the run."""
        done = self.store.candidates("done")
        best = max(done, key=lambda r: (r.val_accuracy or 0.0, -r.id), default=None)
        return RunSummary(
            self.run_dir,
            trained=self.store.count("done", "failed"),
            failed=self.store.count("failed"),
            duplicates=self.store.count("duplicate"),
            elapsed_s=self._elapsed(),
            best=best,
            population=[ind.id for ind in self.algorithm.population],
        )

    def close(self) -> None:
        """Close the run store."""
        self.store.close()
