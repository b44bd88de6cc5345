"""Evolutionary search (DEAP), Ray-parallel evaluation, run store and the command line."""

from __future__ import annotations

__all__: list[str] = []
