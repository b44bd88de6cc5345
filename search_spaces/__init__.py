"""Genomes that evolution mutates: network graphs and activation expressions."""

from __future__ import annotations

from search_spaces.base import Genome, SearchSpace, TaskSpec

__all__ = ["Genome", "SearchSpace", "TaskSpec"]
