"""Where evaluations run: in this process, or in Ray worker processes (local or a cluster)."""

from __future__ import annotations

import logging
import os
import sys
from abc import ABC, abstractmethod
from typing import Any

from evolution._evaluate import EvalConfig, EvalResult, evaluate_candidate
from search_spaces import SearchSpace

__all__ = ["Executor", "InProcessExecutor", "RayExecutor"]

logger = logging.getLogger(__name__)

#: Environment of every worker: quiet TensorFlow, and GPU memory grown on demand so that
#: several candidates can share one GPU through fractional ``num_gpus`` requests.
WORKER_ENV = {
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"),
}


class Executor(ABC):
    """Runs evaluations; at most ``capacity`` at a time."""

    capacity: int = 1

    def __init__(self) -> None:
        self._queued: dict[int, tuple[str, int]] = {}

    @abstractmethod
    def submit(self, candidate_id: int, genome_json: str, seed: int) -> None:
        """Start evaluating a candidate."""

    @abstractmethod
    def wait(self) -> list[tuple[int, EvalResult]]:
        """Block until at least one evaluation finishes; return every finished one."""

    @property
    @abstractmethod
    def in_flight(self) -> int:
        """Number of submitted evaluations not yet returned by ``wait``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers."""


class InProcessExecutor(Executor):
    """Evaluates in the calling process, one at a time (``--workers 0``); deterministic on CPU."""

    capacity = 1

    def __init__(self, space: SearchSpace, task: Any, config: EvalConfig) -> None:
        super().__init__()
        for key, value in WORKER_ENV.items():
            os.environ.setdefault(key, value)
        self.space, self.task, self.config = space, task, config

    def submit(self, candidate_id: int, genome_json: str, seed: int) -> None:
        self._queued[candidate_id] = (genome_json, seed)

    def wait(self) -> list[tuple[int, EvalResult]]:
        if not self._queued:
            raise RuntimeError(
                "Expected a submitted evaluation to wait for. Received: none in flight"
            )
        candidate_id = next(iter(self._queued))
        genome_json, seed = self._queued[candidate_id]
        result = evaluate_candidate(self.space, genome_json, self.task, self.config, seed)
        del self._queued[candidate_id]
        return [(candidate_id, result)]

    @property
    def in_flight(self) -> int:
        return len(self._queued)


def _ray_evaluate(
    space: SearchSpace, genome_json: str, task: Any, config: EvalConfig, seed: int
) -> EvalResult:
    return evaluate_candidate(space, genome_json, task, config, seed)


def _worker_pythonpath() -> str:
    # Workers must import the same modules as the driver (this package, a user's search space).
    entries = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    existing = os.environ.get("PYTHONPATH", "")
    entries += [p for p in existing.split(os.pathsep) if p]
    seen: dict[str, None] = {}
    for entry in entries:
        if os.path.isdir(entry) and "site-packages" not in entry:
            seen.setdefault(entry, None)
    return os.pathsep.join(seen)


class RayExecutor(Executor):
    """Evaluates on Ray: a local Ray started here, or the cluster at ``address``.

    Each evaluation is one Ray task with its own CPU/GPU request (fractions share a GPU). A task
    whose worker process dies is retried ``max_retries`` times, then recorded as failed. Worker
    processes exit after ``recycle_after`` evaluations, so TensorFlow memory does not pile up.

    Args:
        space: search space (shipped to the object store once).
        task: the task's arrays (shipped once).
        config: training budget.
        workers: evaluations in flight at once.
        cpus_per_trial: CPUs requested by each evaluation.
        gpus_per_trial: GPUs requested by each evaluation (e.g. 0.25: four share a GPU).
        address: address of an existing Ray cluster; ``None`` starts a local Ray.
        max_retries: retries of an evaluation whose worker died.
        recycle_after: evaluations per worker process before it is replaced.
    """

    def __init__(
        self,
        space: SearchSpace,
        task: Any,
        config: EvalConfig,
        *,
        workers: int,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float = 0.0,
        address: str | None = None,
        max_retries: int = 2,
        recycle_after: int = 10,
    ) -> None:
        super().__init__()
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a declared dependency
            raise ImportError("Ray evaluation needs ray: pip install 'ray[tune]'") from exc
        if workers < 1:
            raise ValueError(f"Expected workers >= 1 for Ray. Received: workers={workers}")
        self._ray = ray
        self.capacity = workers
        self._owns_ray = False
        env = {**WORKER_ENV, "PYTHONPATH": _worker_pythonpath()}
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "runtime_env": {"env_vars": env},
            }
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = max(1, int(round(workers * cpus_per_trial + 0.4999)))
                if gpus_per_trial == 0:
                    kwargs["num_gpus"] = 0
            ray.init(**kwargs)
            self._owns_ray = True
            logger.info("Started Ray (%s)", address or "local")
        self._space_ref = ray.put(space)
        self._task_ref = ray.put(task)
        self._config = config
        self._remote = ray.remote(
            num_cpus=cpus_per_trial,
            num_gpus=gpus_per_trial,
            max_retries=max_retries,
            max_calls=recycle_after,
            retry_exceptions=False,
        )(_ray_evaluate)
        self._futures: dict[Any, int] = {}

    def submit(self, candidate_id: int, genome_json: str, seed: int) -> None:
        ref = self._remote.remote(self._space_ref, genome_json, self._task_ref, self._config, seed)
        self._futures[ref] = candidate_id

    def wait(self) -> list[tuple[int, EvalResult]]:
        ray = self._ray
        if not self._futures:
            raise RuntimeError(
                "Expected a submitted evaluation to wait for. Received: none in flight"
            )
        ready, _ = ray.wait(list(self._futures), num_returns=1)
        rest = [r for r in self._futures if r not in ready]
        more = ray.wait(rest, num_returns=len(rest), timeout=0)[0] if rest else []
        finished = []
        for ref in [*ready, *more]:
            candidate_id = self._futures.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.OutOfMemoryError as exc:
                result = EvalResult.failure(
                    "oom", f"Ray killed the worker for memory: {str(exc)[:500]}"
                )
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
                result = EvalResult.failure(
                    "worker_died", f"worker process died (retries exhausted): {type(exc).__name__}"
                )
            except ray.exceptions.RayError as exc:
                result = EvalResult.failure("error", f"{type(exc).__name__}: {str(exc)[:1000]}")
            finished.append((candidate_id, result))
        return finished

    @property
    def in_flight(self) -> int:
        return len(self._futures)

    def close(self) -> None:
        for ref in list(self._futures):
            self._ray.cancel(ref, force=True)
        self._futures.clear()
        if self._owns_ray:
            self._ray.shutdown()
