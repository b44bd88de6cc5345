"""The AutoInit paper's Figure 2: signal variance through All-CNN-C by activation and dropout.

For every (activation, dropout rate) pair, All-CNN-C is initialized by Keras' defaults
(``glorot_uniform`` kernels, zero biases) and by AutoInit (realized and expected mode), and the
variance of every layer's output is measured (independent probe, training-mode forward pass,
Gaussian input). AutoInit's own prediction (realized mode) is drawn dashed beside its
measurement. One panel per pair; log-scale variance against the layer.

Usage:
    python benchmarks/figure2_allcnn.py [--quick] [--samples 64]
"""

from __future__ import annotations

import argparse
import statistics

import _common
import keras

from autoinit_nas.zoo import all_cnn_c

ACTIVATIONS = ["relu", "tanh", "selu", "swish", "gelu", "sigmoid"]
DROPOUTS = [0.0, 0.25, 0.5]
INITS = ("Keras default", "AutoInit", "AutoInit (expected)")


def run_pair(activation: str, rate: float, samples: int, seed: int) -> dict[str, dict]:
    """Measured variances by layer for each initialization, plus AutoInit's prediction."""
    from autoinit_nas import initialize

    out: dict[str, dict] = {}
    for init in INITS:
        keras.utils.set_random_seed(seed)
        model = all_cnn_c(activation=activation, dropout=rate)
        names = [
            layer.name
            for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer) and layer.name != "head"
        ]
        if init != "Keras default":
            mode = "expected" if "expected" in init else "realized"
            report = initialize(model, mode=mode, seed=seed)
            if mode == "realized":
                predicted = {e["name"]: e["var"] for e in _common.layer_entries(report)}
                out["AutoInit predicted"] = {n: predicted.get(n) for n in names}
        out[init] = _common.measure_layers(model, names, samples=samples, seed=seed + 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="relu/swish, dropout 0/0.5, 16 samples"
    )
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _common.require_engine()

    activations = ["relu", "swish"] if args.quick else ACTIVATIONS
    dropouts = [0.0, 0.5] if args.quick else DROPOUTS
    samples = args.samples or (16 if args.quick else 64)
    results: dict[str, dict] = {}
    rows = []
    for rate in dropouts:
        for activation in activations:
            res = run_pair(activation, rate, samples, args.seed)
            results[f"{activation} p={rate:g}"] = res
            row = [activation, rate]
            for init in INITS:
                values = [v for k, v in res[init].items() if k.startswith("act")]
                row += [min(values), max(values), res[init]["features"]]
            pred, meas = res["AutoInit predicted"], res["AutoInit"]
            errs = [abs(pred[k] - meas[k]) / meas[k] for k in meas if pred.get(k) is not None]
            row.append(100 * statistics.median(errs))
            rows.append(row)
            print(f"  {activation} p={rate:g} done", flush=True)
    headers = ["act", "dropout"]
    for init in ("default", "AutoInit", "expected"):
        headers += [f"{init} min", f"{init} max", f"{init} last"]
    headers.append("pred err %")
    print()
    print(_common.format_table(rows, headers))
    print(
        "\n(min/max over the activation layers act1..act9; 'last' = act9 output ('features');"
        f" {samples} Gaussian samples; 'pred err' = median |predicted-measured|/measured, realized)"
    )
    _common.save_json("figure2_allcnn.json", results)
    plot(results, activations, dropouts)


def plot(results: dict[str, dict], activations: list[str], dropouts: list[float]) -> None:
    """A grid of panels (dropout rate x activation), variance against layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(dropouts),
        len(activations),
        figsize=(2.8 * len(activations), 2.6 * len(dropouts)),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    styles = {
        "Keras default": ("tab:red", "-"),
        "AutoInit": ("tab:blue", "-"),
        "AutoInit (expected)": ("tab:green", "-"),
        "AutoInit predicted": ("black", ":"),
    }
    # One x position per layer name over all panels, so layers line up with and without Dropout.
    all_names = max((list(r["Keras default"]) for r in results.values()), key=len)
    for i, rate in enumerate(dropouts):
        for j, activation in enumerate(activations):
            ax = axes[i, j]
            res = results[f"{activation} p={rate:g}"]
            names = list(res["Keras default"])
            xs = [all_names.index(n) for n in names]
            for init, (color, ls) in styles.items():
                ys = [res[init].get(n) for n in names]
                ys = [float("nan") if y is None else _common.finite_or_nan(y) for y in ys]
                ax.plot(xs, ys, ls, color=color, lw=1.2, label=init)
                if init != "AutoInit predicted":
                    # Weighted layers (convolutions) marked, as in the paper's figure.
                    conv = [
                        (x, y)
                        for x, y, n in zip(xs, ys, names, strict=True)
                        if n.startswith("conv")
                    ]
                    ax.plot(*zip(*conv, strict=True), "o", color=color, ms=2.5)
            ax.set_yscale("log")
            ax.axhline(1.0, color="gray", lw=0.6)
            ax.grid(alpha=0.3)
            ax.set_title(f"{activation}, dropout {rate:g}", fontsize=9)
            if i == len(dropouts) - 1:
                ax.set_xticks(range(len(all_names)), all_names, rotation=90, fontsize=6)
    axes[0, 0].legend(fontsize=6)
    for ax in axes[:, 0]:
        ax.set_ylabel("variance")
    fig.suptitle("Signal variance through All-CNN-C (Gaussian input, training mode)")
    fig.tight_layout()
    path = _common.out_path("figure2_allcnn.png")
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
