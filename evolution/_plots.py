"""Figures of a run report (matplotlib, Agg backend, imported only here)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from evolution._store import CandidateRecord

__all__ = ["plot_activations", "plot_fitness", "plot_network", "plot_pareto", "pareto_front"]

logger = logging.getLogger(__name__)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fitness(logbook: list[dict[str, Any]], records: list[CandidateRecord], path: Path) -> None:
    """Best-so-far and population-median validation accuracy over evaluations."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    told = [r for r in records if r.status in ("done", "failed", "duplicate")]
    told.sort(key=lambda r: (r.finished_at or 0.0, r.id))
    if told:
        ax.scatter(
            range(1, len(told) + 1),
            [r.fitness[0] if r.fitness else 0.0 for r in told],
            s=10,
            color="0.6",
            label="candidate",
        )
    if logbook:
        evals = [e["evals"] for e in logbook]
        ax.plot(evals, [e["best"] for e in logbook], color="C0", lw=2, label="best so far")
        ax.plot(evals, [e["pop_median"] for e in logbook], color="C1", label="population median")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pareto_front(records: list[CandidateRecord]) -> list[CandidateRecord]:
    """Candidates no other candidate beats on both accuracy (up) and parameter count (down)."""
    points = sorted(
        (r for r in records if r.status == "done" and r.param_count),
        key=lambda r: (r.param_count, -(r.val_accuracy or 0.0)),
    )
    front, best = [], -1.0
    for r in points:
        if (r.val_accuracy or 0.0) > best:
            front.append(r)
            best = r.val_accuracy or 0.0
    return front


def plot_pareto(records: list[CandidateRecord], path: Path) -> None:
    """Validation accuracy vs parameter count, the Pareto front highlighted."""
    plt = _pyplot()
    done = [r for r in records if r.status == "done" and r.param_count]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(
        [r.param_count for r in done],
        [r.val_accuracy for r in done],
        s=12,
        color="0.6",
        label="trained",
    )
    front = pareto_front(records)
    if front:
        ax.step(
            [r.param_count for r in front],
            [r.val_accuracy for r in front],
            where="post",
            color="C3",
            lw=2,
            marker="o",
            label="Pareto front",
        )
    if done:
        ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _keras_edges(config: dict[str, Any]) -> list[tuple[str, str]]:
    edges = []

    def sources(obj: Any) -> list[str]:
        if isinstance(obj, dict):
            if "keras_history" in obj.get("config", {}):
                return [obj["config"]["keras_history"][0]]
            return [s for v in obj.values() for s in sources(v)]
        if isinstance(obj, list):
            if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
                return [obj[0]]  # legacy [layer, node, tensor] triple
            return [s for v in obj for s in sources(v)]
        return []

    for layer in config.get("layers", []):
        for node in layer.get("inbound_nodes", []):
            for src in sources(node):
                edges.append((src, layer["name"]))
    return edges


def plot_network(model: Any, path: Path, title: str = "") -> None:
    """The model's layer graph: one box per layer, laid out by depth."""
    plt = _pyplot()
    layers = [(layer.name, type(layer).__name__) for layer in model.layers]
    try:
        edges = _keras_edges(model.get_config())
    except Exception:  # a model without a functional config: draw it as a chain
        edges = []
    if not edges:
        edges = list(zip([n for n, _ in layers][:-1], [n for n, _ in layers][1:], strict=False))
    names = [n for n, _ in layers]
    depth = {name: 0 for name in names}
    for _ in range(len(names)):  # longest path by relaxation; the graph is a small DAG
        changed = False
        for src, dst in edges:
            if src in depth and dst in depth and depth[dst] < depth[src] + 1:
                depth[dst], changed = depth[src] + 1, True
        if not changed:
            break
    columns: dict[int, list[str]] = {}
    for name in names:
        columns.setdefault(depth[name], []).append(name)
    pos = {
        name: (i - (len(col) - 1) / 2, -d)
        for d, col in columns.items()
        for i, name in enumerate(col)
    }
    kind = dict(layers)
    height = max(3.0, 0.6 * (max(columns) + 1))
    width = max(4.0, 2.2 * max(len(c) for c in columns.values()))
    fig, ax = plt.subplots(figsize=(width, height))
    for src, dst in edges:
        if src in pos and dst in pos:
            (x0, y0), (x1, y1) = pos[src], pos[dst]
            ax.annotate(
                "",
                xy=(x1, y1 + 0.18),
                xytext=(x0, y0 - 0.18),
                arrowprops={"arrowstyle": "->", "color": "0.4"},
            )
    for name, (x, y) in pos.items():
        ax.text(
            x,
            y,
            kind[name],
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "fc": "#dde8f5", "ec": "0.3"},
        )
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 1, max(xs) + 1)
    ax.set_ylim(-max(columns) - 0.6, 0.6)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _activation_callables(model: Any) -> list[tuple[str, Any]]:
    found: dict[str, Any] = {}
    for layer in model.layers:
        cls = type(layer).__name__
        if cls == "Activation":
            name, fn = str(layer.get_config().get("activation")), layer
        elif "Activation" in cls or cls in ("ReLU", "LeakyReLU", "ELU"):
            name, fn = f"{cls} ({layer.name})", layer
        else:
            fn = getattr(layer, "activation", None)
            name = getattr(fn, "__name__", "")
            if not callable(fn) or name in ("linear", "softmax", ""):
                continue
        if "softmax" not in name:
            found.setdefault(name, fn)
    return list(found.items())


def plot_activations(model: Any, path: Path) -> bool:
    """Curves of the model's distinct activation functions on [-4, 4]; False if none."""
    import keras

    plt = _pyplot()
    grid = np.linspace(-4, 4, 401).astype("float32")
    curves = []
    for name, fn in _activation_callables(model)[:6]:
        try:
            y = np.asarray(
                keras.ops.convert_to_numpy(fn(keras.ops.convert_to_tensor(grid[None, :, None])))
            )
            curves.append((name, y.reshape(-1)[: len(grid)]))
        except Exception as exc:  # an activation that needs another input shape: skip it
            logger.debug("Could not plot activation %s: %s", name, exc)
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, y in curves:
        ax.plot(grid, y, label=name[:40])
    ax.axhline(0, color="0.7", lw=0.5)
    ax.axvline(0, color="0.7", lw=0.5)
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
