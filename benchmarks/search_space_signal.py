"""How often random genomes lose their signal under Keras' default init, and under AutoInit.

For each of ``--genomes`` random network genomes (sampled, then mutated) on the MNIST-1D input
shape, the model is built twice with the same seed: with Keras' default initializers (seeded
Glorot uniform, zero biases) and with AutoInit (``autoinit_nas.initialize``, default options).
At two points of the head, ``head_input`` (the vector entering the classifier) and ``logits``
(the classifier's pre-softmax output), the variance under N(0, 1) input is

* measured for the default init (``_common.measure_layers``, training-mode forward pass),
* predicted by AutoInit (the ``SignalReport`` entry) and measured (``report.measure``).

A genome "vanishes or explodes" when the variance is outside [0.5, 2]; the table counts them.
AutoInit scales every weighted layer's output to variance 1, so ``logits`` is its controlled
point; ``head_input`` follows whatever the last layers do (e.g. ReLU halves the second moment).

Usage:
    python benchmarks/search_space_signal.py [--genomes 1000] [--seed 0] [--samples 256]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import _common
import keras
import numpy as np

from autoinit_nas.errors import SignalError
from search_spaces import InvalidGenomeError, NetworkSearchSpace, TaskSpec, build_network

TASK = TaskSpec((40, 1), 10)
POINTS = ("head_input", "logits")
LOW, HIGH = 0.5, 2.0


def random_genomes(n: int, seed: int) -> list:
    space = NetworkSearchSpace(max_nodes=30, sample_nodes=(2, 20), input_shape=TASK.input_shape)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        genome = space.sample(rng)
        for _ in range(int(rng.integers(0, 6))):
            genome = space.mutate(genome, rng)
        out.append(genome)
    return out


def outside(v: float) -> bool:
    return not (math.isfinite(v) and LOW <= v <= HIGH)


def evaluate(genome: object, seed: int, samples: int) -> dict[str, float | str | bool] | None:
    """Variances at POINTS: default measured, AutoInit predicted and measured (None: rejected)."""
    default = build_network(genome, TASK, init="default", seed=seed, compile=False)  # type: ignore[arg-type]
    with np.errstate(all="ignore"):
        measured_default = _common.measure_layers(default, POINTS, samples=samples, seed=seed)
    try:
        model = build_network(genome, TASK, init="autoinit", seed=seed, compile=False)  # type: ignore[arg-type]
    except InvalidGenomeError as err:
        if isinstance(err.__cause__, SignalError):
            return None
        raise
    report = model.signal_report.measure(model, samples=samples, seed=seed)
    entries = {e["name"]: e for e in report.to_dict()["layers"]}
    row: dict[str, float | str | bool] = {
        "head": type(model.get_layer("head_input")).__name__,
        # a flat vector the builder turned back into a (length, 1) sequence for a sequence op
        "as_seq": any(layer.name.endswith("_as_seq") for layer in model.layers),
    }
    for point in POINTS:
        row[f"default_{point}"] = float(measured_default[point])
        row[f"predicted_{point}"] = float(entries[point]["var"])
        row[f"measured_{point}"] = float(entries[point].get("measured_var", float("nan")))
    return row


def failures_by_head(rows: list[dict]) -> list[list]:
    """Rows ``[head layer class, as_seq, AutoInit measured logits out, genomes]``."""
    groups: dict[tuple[str, bool], list[int]] = {}
    for r in rows:
        counts = groups.setdefault((str(r["head"]), bool(r["as_seq"])), [0, 0])
        counts[0] += outside(float(r["measured_logits"]))
        counts[1] += 1
    return [[h, a, out, n] for (h, a), (out, n) in sorted(groups.items(), key=lambda kv: -kv[1][0])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genomes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    _common.require_engine()
    warnings.filterwarnings("ignore", message="No AutoInit estimator")
    genomes = random_genomes(args.genomes, args.seed)
    rows, rejected = [], []
    start = time.perf_counter()
    for k, genome in enumerate(genomes):
        row = evaluate(genome, k, args.samples)
        if row is None:
            rejected.append(k)
        else:
            rows.append({"genome": k, **row})
        if k % 50 == 49:
            keras.backend.clear_session()
    n = len(rows)
    table = []
    for point in POINTS:
        d = [r[f"default_{point}"] for r in rows]
        p = [r[f"predicted_{point}"] for r in rows]
        m = [r[f"measured_{point}"] for r in rows]
        bad_default = {i for i, v in enumerate(d) if outside(v)}
        table.append(
            [
                point,
                n,
                sum(outside(v) for v in d),
                sum(outside(v) for v in p),
                sum(outside(v) for v in m),
                sum(outside(m[i]) for i in bad_default),
                len(bad_default),
                float(np.nanmedian(np.abs(np.asarray(p) - np.asarray(m)) / np.asarray(m))),
            ]
        )
    headers = [
        "point",
        "genomes",
        "default out",
        "AutoInit pred out",
        "AutoInit meas out",
        "of default-out: AutoInit meas out",
        "default-out",
        "median |pred-meas|/meas",
    ]
    print(_common.format_table(table, headers))
    by_head = failures_by_head(rows)
    print("\nAutoInit measured logits outside [0.5, 2], by the layer entering the classifier:")
    print(_common.format_table(by_head, ["head input", "as_seq in model", "out", "genomes"]))
    out = [str(r["genome"]) for r in rows if outside(float(r["measured_logits"]))]
    print(f"genomes with AutoInit logits out: {', '.join(out) or 'none'}")
    print(
        f"\n{len(rejected)} genomes rejected by AutoInit (SignalError, e.g. a constant activation: "
        f"{', '.join(map(str, rejected)) or 'none'}); "
        f"{time.perf_counter() - start:.0f} s. 'out' = variance outside [{LOW}, {HIGH}] or not finite."
    )
    _common.save_json(
        "search_space_signal.json",
        {
            "headers": headers,
            "rows": table,
            "rejected": len(rejected),
            "rejected_genomes": rejected,
            "by_head": by_head,
            "per_genome": rows,
        },
    )


if __name__ == "__main__":
    main()
