"""``SignalReport``: what AutoInit predicted at every call site, and how it compares."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LayerSignal", "SignalReport", "measure_variances"]


@dataclass
class LayerSignal:
    """One call site: predicted output moments and the weight std AutoInit set."""

    name: str
    class_name: str
    estimator: str
    mean: float
    var: float
    weight_std: float | None
    weighted: bool
    measured_var: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "class": self.class_name, "mean": self.mean, "var": self.var,
             "weight_std": self.weight_std, "estimator": self.estimator, "weighted": self.weighted}
        if self.measured_var is not None:
            d["measured_var"] = self.measured_var
        return d


def measure_variances(model: Any, *, samples: int = 256, seed: int = 0, input_mean: Any = 0.0,
                      input_var: Any = 1.0, batch_size: int = 64) -> list[tuple[str, float]]:
    """Measured output variance of every call site under Gaussian input (training mode).

    Batches are measured separately and their second moments pooled, so memory stays bounded.
    """
    import keras

    from autoinit_nas._walk import graph_of, measure_handler, walk

    graph = graph_of(model)
    rng = np.random.default_rng(seed)
    n_in = len(graph.inputs)
    means = np.broadcast_to(np.asarray(input_mean, float), (n_in,))
    variances = np.broadcast_to(np.asarray(input_var, float), (n_in,))
    sums: dict[str, list[list[float]]] = {}
    order: list[str] = []
    done = 0
    while done < samples:
        n = min(batch_size, samples - done)
        xs = [keras.ops.convert_to_tensor(
            (m + math.sqrt(v) * rng.standard_normal((n, *[d or 8 for d in t.shape[1:]])))
            .astype(np.float32)) for t, m, v in zip(graph.inputs, means, variances, strict=True)]
        records: dict[str, list[tuple[float, float]]] = {}
        sites: list = []
        walk(graph, xs, measure_handler(records), sites=sites)
        if not order:
            order = [s.path for s in sites]
        for path, vals in records.items():
            acc = sums.setdefault(path, [[0.0, 0.0, 0.0] for _ in vals])
            for slot, (s1, s2, cnt) in zip(acc, vals, strict=True):
                slot[0] += s1
                slot[1] += s2
                slot[2] += cnt
        done += n
    counters: dict[str, int] = {}
    out = []
    for path in order:
        i = counters.get(path, 0)
        counters[path] = i + 1
        s1, s2, cnt = sums[path][i]
        mean = s1 / cnt
        out.append((path, s2 / cnt - mean**2))
    return out


@dataclass
class SignalReport:
    """Per call site, in graph order: class, estimator, predicted output mean and variance,
    the weight std set (None for layers without weights) and, after ``measure``, the measured
    variance."""

    layers: list[LayerSignal]
    mode: str
    seed: int
    seconds: float
    output_vars: list[float]
    warnings: list[str] = field(default_factory=list)
    options: Any = None
    _model_ref: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [layer.to_dict() for layer in self.layers], "mode": self.mode,
                "seed": self.seed, "seconds": self.seconds, "output_vars": self.output_vars,
                "warnings": self.warnings}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @property
    def max_var(self) -> float:
        return max(layer.var for layer in self.layers)

    @property
    def min_var(self) -> float:
        return min(layer.var for layer in self.layers)

    def measure(self, model: Any = None, *, samples: int = 256, seed: int = 0) -> SignalReport:
        """Add the measured variance (Gaussian input, training-mode forward) to every entry."""
        model = model if model is not None else self._model_ref
        if model is None:
            raise ValueError("Expected the model this report describes. Received: model=None")
        opts = self.options
        measured = measure_variances(
            model, samples=samples, seed=seed,
            input_mean=0.0 if opts is None else opts.input_mean,
            input_var=1.0 if opts is None else opts.input_var,
        )
        if len(measured) != len(self.layers):
            raise ValueError(
                f"Expected the model this report describes ({len(self.layers)} call sites). "
                f"Received a model with {len(measured)} call sites."
            )
        for layer, (_, var) in zip(self.layers, measured, strict=True):
            layer.measured_var = var
        return self

    def errors(self) -> np.ndarray:
        """Relative errors |predicted - measured| / measured (after ``measure``)."""
        return np.array([abs(entry.var - entry.measured_var) / max(entry.measured_var, 1e-30)
                         for entry in self.layers if entry.measured_var is not None])

    def table(self) -> str:
        """A readable per-layer table."""
        head = f"{'#':>4}  {'layer':<34} {'class':<22} {'weight std':>10} {'pred var':>10}"
        measured = any(entry.measured_var is not None for entry in self.layers)
        if measured:
            head += f" {'meas var':>10} {'rel err':>8}"
        rows = [head, "-" * len(head)]
        for i, entry in enumerate(self.layers):
            std = "" if entry.weight_std is None else f"{entry.weight_std:.5f}"
            row = f"{i:>4}  {entry.name[-34:]:<34} {entry.class_name[:22]:<22} {std:>10} {entry.var:>10.4g}"
            if measured and entry.measured_var is not None:
                err = abs(entry.var - entry.measured_var) / max(entry.measured_var, 1e-30)
                row += f" {entry.measured_var:>10.4g} {100 * err:>7.1f}%"
            rows.append(row)
        return "\n".join(rows)

    def plot(self, path: str, *, model: Any = None, default_samples: int = 64) -> str:
        """Variance by depth: AutoInit (predicted, measured) vs Keras' default initialization.

        The default-init curve is measured on a fresh clone of the model with each layer class's
        own default initializers, so the figure compares the two initializations of one architecture.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        model = model if model is not None else self._model_ref
        depth = np.arange(len(self.layers))
        fig, ax = plt.subplots(figsize=(9, 4.5))
        if model is not None:
            import keras

            def with_class_defaults(layer: Any) -> Any:
                # The model may carry placeholder initializers (a builder that lets AutoInit
                # draw starts kernels at zero): Keras' default is each class's own initializer.
                config = {k: v for k, v in layer.get_config().items()
                          if not k.endswith("_initializer")}
                return layer.__class__.from_config(config)

            clone = keras.models.clone_model(model, clone_function=with_class_defaults)
            default = measure_variances(clone, samples=default_samples, seed=1)
            ax.plot(depth[: len(default)], [max(v, 1e-300) for _, v in default],
                    color="tab:red", label="Keras default init (measured)")
        ax.plot(depth, [entry.var for entry in self.layers], color="tab:blue",
                label=f"AutoInit {self.mode} (predicted)")
        if any(entry.measured_var is not None for entry in self.layers):
            ax.plot(depth, [np.nan if entry.measured_var is None else entry.measured_var
                            for entry in self.layers], "o", ms=3, color="tab:blue", alpha=0.6,
                    label="AutoInit (measured)")
        weighted = [i for i, entry in enumerate(self.layers) if entry.weighted]
        ax.plot(weighted, [self.layers[i].var for i in weighted], "|", ms=10, color="k",
                label="weighted layers")
        ax.set_yscale("log")
        ax.set_xlabel("call site (graph order)")
        ax.set_ylabel("output variance")
        ax.axhline(1.0, color="gray", lw=0.5)
        ax.legend(loc="best", fontsize=8)
        ax.set_title("Signal propagation")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path
