"""How close AutoInit's predicted layer variances are to measured ones.

For each model and mode: ``report = initialize(model, mode=mode, seed=0)``, then
``report.measure(model, samples=..., seed=1)`` (Gaussian input, training-mode forward pass) and
the per-layer relative error ``|predicted - measured| / measured`` (input layer excluded).

Models: All-CNN-C with relu, tanh, selu, swish, dropout 0 and 0.5; unnormalized ResNet-56.
Goals (mode="realized"): median < 5%, max < 25%. Reference implementation's median error:
25% (All-CNN-C relu), 44% (ResNet-56).

Usage:
    python benchmarks/accuracy.py [--quick] [--samples 256] [--check-measure] [--probe own]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import _common
import keras

from autoinit_nas.zoo import all_cnn_c, resnet

REFERENCE_MEDIAN = {"All-CNN-C relu p=0": 0.25, "ResNet-56": 0.44}


def configs(quick: bool) -> dict[str, Callable[[], keras.Model]]:
    """Model builders by display name."""
    out: dict[str, Callable[[], keras.Model]] = {}
    activations = ["relu", "swish"] if quick else ["relu", "tanh", "selu", "swish"]
    for activation in activations:
        for rate in (0.0, 0.5):
            if quick and (activation, rate) not in {("relu", 0.0), ("swish", 0.5)}:
                continue
            label = f"All-CNN-C {activation} p={rate:g}"
            out[label] = lambda a=activation, r=rate: all_cnn_c(activation=a, dropout=r)
    if quick:
        out["ResNet-20"] = lambda: resnet(20)
    else:
        out["ResNet-56"] = lambda: resnet(56)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 models, 64 samples")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--modes", nargs="*", default=["realized", "expected"])
    parser.add_argument(
        "--check-measure",
        action="store_true",
        help="also measure with an independent probe and report its gap to report.measure",
    )
    parser.add_argument(
        "--probe",
        choices=["engine", "own"],
        default="engine",
        help="measured variances from report.measure (engine) or from the scripts' own probe",
    )
    args = parser.parse_args()
    _common.require_engine()
    from autoinit_nas import initialize

    samples = args.samples or (64 if args.quick else 256)
    rows, results = [], {}
    for label, build in configs(args.quick).items():
        model = build()
        for mode in args.modes:
            report = initialize(model, mode=mode, seed=0)
            report.measure(model, samples=samples, seed=1)
            entries = _common.layer_entries(report)
            if args.probe == "own":
                entries = _own_measurements(model, entries, samples)
            errors = _common.relative_errors(entries)
            if not errors:
                raise RuntimeError(f"No measured_var in the report of {label} ({mode}).")
            values = [e for _, _, e in errors]
            worst = max(errors, key=lambda e: e[2])
            median, largest = statistics.median(values), max(values)
            verdict = ""
            if mode == "realized":
                verdict = "ok" if median < 0.05 and largest < 0.25 else "MISS"
            row = [
                label,
                mode,
                len(values),
                100 * median,
                100 * largest,
                f"{worst[0]} ({worst[1]})",
            ]
            gap = None
            if args.check_measure:
                own = _common.measure_layers(
                    model,
                    [e["name"] for e in entries if e["class"] != "InputLayer"],
                    samples=samples,
                    seed=1,
                )
                engine_key = "engine_measured_var" if args.probe == "own" else "measured_var"
                gaps = [
                    abs(e[engine_key] - own[e["name"]]) / own[e["name"]]
                    for e in entries
                    if e["name"] in own and e.get(engine_key) is not None
                ]
                gap = max(gaps) if gaps else float("nan")
                row.append(100 * gap)
            ref = REFERENCE_MEDIAN.get(label)
            row += [f"{100 * ref:.0f}" if ref and mode == "expected" else "", verdict]
            rows.append(row)
            results[f"{label} [{mode}]"] = {
                "median": median,
                "max": largest,
                "measure_gap": gap,
                "layers": [
                    {
                        k: e.get(k)
                        for k in (
                            "name",
                            "class",
                            "var",
                            "measured_var",
                            "weight_std",
                            "engine_measured_var",
                        )
                    }
                    for e in entries
                ],
            }
            print(
                f"  {label} {mode}: median {100 * median:.2f}%  max {100 * largest:.2f}%",
                flush=True,
            )
    headers = ["model", "mode", "layers", "median %", "max %", "worst layer"]
    if args.check_measure:
        headers.append("measure gap %")
    headers += ["ref median %", "goal"]
    print()
    print(_common.format_table(rows, headers))
    print(
        f"\n(relative error |pred - measured| / measured per layer, {samples} Gaussian samples;"
        " 'ref median' = reference implementation, which uses expected moments)"
    )
    suffix = "" if args.probe == "engine" else "_own_probe"
    _common.save_json(f"accuracy{suffix}.json", results)
    plot(results, f"accuracy{suffix}.png")


def _own_measurements(model: keras.Model, entries: list[dict], samples: int) -> list[dict]:
    """Entries whose measured_var comes from the scripts' own probe (engine's kept aside)."""
    names = [e["name"] for e in entries if e["class"] != "InputLayer"]
    own = _common.measure_layers(model, names, samples=samples, seed=1)
    return [
        {**e, "engine_measured_var": e.get("measured_var"), "measured_var": own.get(e["name"])}
        for e in entries
    ]


def plot(results: dict, filename: str = "accuracy.png") -> None:
    """Relative error by layer for each model and mode, into benchmarks/out/<filename>."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({key.rsplit(" [", 1)[0] for key in results})
    fig, axes = plt.subplots(len(labels), 1, figsize=(8, 2.2 * len(labels)), squeeze=False)
    for ax, label in zip(axes[:, 0], labels, strict=True):
        for mode, style in (("realized", "o-"), ("expected", "s--")):
            res = results.get(f"{label} [{mode}]")
            if res is None:
                continue
            errs = [
                abs(e["var"] - e["measured_var"]) / e["measured_var"]
                for e in res["layers"]
                if e.get("measured_var") and e["class"] != "InputLayer"
            ]
            ax.plot(
                range(1, len(errs) + 1),
                [max(100 * e, 0.01) for e in errs],
                style,
                ms=2.5,
                lw=1,
                label=mode,
            )
        ax.axhline(5, color="gray", lw=0.7, ls=":")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.01)
        ax.set_ylabel("rel. error %")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("layer (graph order)")
    fig.tight_layout()
    path = _common.out_path(filename)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
