"""Helpers shared by the benchmark scripts (not part of the package).

Importing this module puts the repository root on ``sys.path`` (so ``python benchmarks/X.py``
works from a checkout without installing) and quiets TensorFlow's start-up logging.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

OUT_DIR = ROOT / "benchmarks" / "out"
FIGURES_DIR = ROOT / "benchmarks" / "figures"


def out_path(name: str) -> Path:
    """Returns ``benchmarks/out/<name>``, creating the folder."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    return OUT_DIR / name


def save_json(name: str, data: Any) -> Path:
    """Writes ``data`` as JSON into ``benchmarks/out/<name>`` and returns the path."""
    path = out_path(name)
    path.write_text(json.dumps(data, indent=1, default=float))
    return path


def require_engine() -> None:
    """Exits with a readable message when the AutoInit engine cannot be imported yet."""
    try:
        from autoinit_nas import initialize  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the checkout
        sys.exit(f"The AutoInit engine is not importable yet ({exc}).")


def layer_entries(report: Any) -> list[dict[str, Any]]:
    """The per-layer entries of a SignalReport, in graph order."""
    return list(report.to_dict()["layers"])


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def gaussian_input(model: keras.Model, samples: int, seed: int) -> np.ndarray:
    """``samples`` inputs for ``model`` drawn i.i.d. N(0, 1) from a seeded generator."""
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(seed)
    return rng.standard_normal((samples, *shape), dtype=np.float32)


def measure_layers(
    model: keras.Model,
    names: Sequence[str] | None = None,
    *,
    samples: int = 64,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, float]:
    """Measures the variance of layer outputs under N(0, 1) input, independently of the engine.

    A training-mode forward pass (Dropout active, BatchNormalization on batch statistics) in
    batches; only per-batch means and variances leave the graph, so deep networks fit in memory.
    The variance is over every element of the output (samples, positions and channels), combined
    over batches with the law of total variance.

    Args:
        model: A functional model with one input.
        names: Layers whose outputs to measure; None measures every non-input layer.
        samples: Number of Gaussian samples.
        seed: Seed of the input generator.
        batch_size: Samples per forward pass.

    Returns:
        ``{layer name: measured variance}`` (inf or nan where the signal overflowed).
    """
    if names is None:
        names = [
            layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
        ]
    tensors = [model.get_layer(name).output for name in names]
    stats = []
    for tensor in tensors:
        stats.append(keras.ops.mean(tensor))
        stats.append(keras.ops.var(tensor))
    probe = keras.Model(model.inputs[0], stats)
    x = gaussian_input(model, samples, seed)
    means, variances, weights = [], [], []
    for start in range(0, samples, batch_size):
        batch = x[start : start + batch_size]
        values = [float(keras.ops.convert_to_numpy(v)) for v in probe(batch, training=True)]
        means.append(values[0::2])
        variances.append(values[1::2])
        weights.append(len(batch))
    w = np.asarray(weights, dtype=np.float64)[:, None] / sum(weights)
    m = np.asarray(means, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        grand = (w * m).sum(axis=0)
        total = (w * v).sum(axis=0) + (w * (m - grand) ** 2).sum(axis=0)
    return dict(zip(names, total.tolist(), strict=True))


def relative_errors(entries: Iterable[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """``(name, class, |predicted - measured| / measured)`` for entries with a measurement.

    Input layers are left out (their prediction is the given input variance).
    """
    errors = []
    for entry in entries:
        measured = entry.get("measured_var")
        if measured is None or entry.get("class") == "InputLayer":
            continue
        predicted = float(entry["var"])
        errors.append((entry["name"], entry["class"], abs(predicted - measured) / measured))
    return errors


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table with right-aligned numeric columns."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                return str(value)
            if value == 0 or 1e-3 <= abs(value) < 1e5:
                return f"{value:.4g}"
            return f"{value:.3e}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in text:
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def finite_or_nan(value: float) -> float:
    """The value if finite, else nan (for plotting overflowed measurements)."""
    return value if np.isfinite(value) else float("nan")
