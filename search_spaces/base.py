"""The contract every search space and genome follows.

A genome is an immutable, typed description of one candidate; it serializes to canonical JSON and
has a stable hash (equal genomes give equal hashes across processes and Python versions). A
search space samples, mutates, crosses over and validates genomes, always with the run's
``np.random.Generator``, and builds a genome into an AutoInit-initialized, compiled Keras model.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = ["Genome", "SearchSpace", "TaskSpec"]


@dataclass(frozen=True)
class TaskSpec:
    """What a built model must accept and produce.

    Args:
        input_shape: shape of one sample, without the batch axis, e.g. ``(40, 1)`` for MNIST-1D.
        num_classes: number of classes of the softmax head.
        learning_rate: learning rate of the optimizer the builder compiles with.
    """

    input_shape: tuple[int, ...]
    num_classes: int
    learning_rate: float = 1e-3
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class Genome(ABC):
    """One candidate. Subclasses are immutable and define ``to_dict`` / ``from_dict``."""

    kind: ClassVar[str] = "genome"

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict that ``from_dict`` turns back into an equal genome."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Genome:
        """Rebuild a genome; raises ``InvalidGenomeError`` naming what is wrong."""

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, so equal genomes give equal text."""
        return json.dumps(
            {"kind": self.kind, **self.to_dict()}, sort_keys=True, separators=(",", ":")
        )

    def hash(self) -> str:
        """Stable 16-hex-digit identity of the genome (SHA-256 of its canonical JSON)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Genome) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())


class SearchSpace(ABC):
    """Samples, varies and builds genomes. Every stochastic method takes the run's generator."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Genome:
        """A random valid genome."""

    @abstractmethod
    def mutate(self, genome: Genome, rng: np.random.Generator) -> Genome:
        """A new valid genome one mutation away from ``genome`` (which is left unchanged)."""

    def crossover(self, a: Genome, b: Genome, rng: np.random.Generator) -> tuple[Genome, Genome]:
        """Two children of ``a`` and ``b``; spaces without a meaningful crossover return them."""
        return a, b

    @abstractmethod
    def validate(self, genome: Genome) -> None:
        """Raise ``InvalidGenomeError`` naming the offending node if ``genome`` is invalid."""

    @abstractmethod
    def from_json(self, text: str) -> Genome:
        """Parse a genome of this space from JSON (as written by ``Genome.to_json``)."""

    @abstractmethod
    def build(
        self,
        genome: Genome,
        task: TaskSpec,
        *,
        init: str = "autoinit",
        seed: int | None = None,
        **autoinit_options: Any,
    ) -> Any:
        """Decode ``genome`` into a compiled ``keras.Model`` for ``task``.

        With ``init="autoinit"`` the model is initialized by ``autoinit_nas.initialize`` and its
        ``SignalReport`` is attached as ``model.signal_report``; with ``init="default"`` Keras'
        default initializers are kept (for comparison runs).
        """
