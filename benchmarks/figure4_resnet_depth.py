"""The AutoInit paper's Figure 4: signal variance by depth in CIFAR ResNets.

For each depth, with and without BatchNormalization, the variance of the last block's output
(layer ``features``) is measured (independent probe, training-mode forward pass, Gaussian input)
after each initialization:

* Keras default (``glorot_uniform`` kernels, zero biases),
* He normal (``he_normal``: the initializer of the Keras CIFAR ResNet example, the paper's
  baseline),
* AutoInit (``initialize(model)``, realized mode, ``keras.layers.Add`` merges),
* AutoInit + WeightedAdd (the same network built with ``weighted_add=True``, which is what
  ``AutoInit(rewrite_residuals=True)`` produces), realized and expected mode.

Goal: AutoInit + WeightedAdd keeps the last block of ResNet-812 within [0.5, 2]; the default
initializations explode with depth without BatchNormalization. The lower panels follow the
variance block by block through the deepest network.

Usage:
    python benchmarks/figure4_resnet_depth.py [--quick] [--samples 32]
"""

from __future__ import annotations

import argparse
import time

import _common
import keras

from autoinit_nas.zoo import resnet

INITS = {
    "Keras default (glorot_uniform)": {"kernel_initializer": "glorot_uniform"},
    "He normal": {"kernel_initializer": "he_normal"},
    "AutoInit": {"mode": "realized"},
    "AutoInit + WeightedAdd": {"mode": "realized", "weighted_add": True},
    "AutoInit + WeightedAdd (expected)": {"mode": "expected", "weighted_add": True},
}
FLOAT32_MAX = 3.4028235e38


def run_one(depth: int, batchnorm: bool, spec: dict, samples: int, seed: int) -> dict[str, float]:
    """Measured variance at every block output (``..._out``) and at ``features``."""
    from autoinit_nas import initialize

    keras.utils.set_random_seed(seed)
    model = resnet(
        depth,
        batchnorm=batchnorm,
        weighted_add=spec.get("weighted_add", False),
        kernel_initializer=spec.get("kernel_initializer", "glorot_uniform"),
    )
    if "mode" in spec:
        initialize(model, mode=spec["mode"], seed=seed)
    names = [layer.name for layer in model.layers if layer.name.endswith("_out")]
    names.append("features")
    return _common.measure_layers(model, names, samples=samples, seed=seed + 1000, batch_size=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="depths 20/56/164, 16 samples")
    parser.add_argument("--depths", type=int, nargs="*", default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _common.require_engine()

    depths = args.depths or ([20, 56, 164] if args.quick else [20, 56, 110, 164, 812])
    samples = args.samples or (16 if args.quick else 32)
    results: dict[str, dict] = {}
    rows = []
    for batchnorm in (False, True):
        for label, spec in INITS.items():
            for depth in depths:
                start = time.perf_counter()
                measured = run_one(depth, batchnorm, spec, samples, args.seed)
                key = f"{'BN' if batchnorm else 'no BN'} | {label} | {depth}"
                results[key] = measured
                last = measured["features"]
                rows.append(["yes" if batchnorm else "no", label, f"ResNet-{depth}", last])
                print(
                    f"  {key}: features var {last:.4g} ({time.perf_counter() - start:.1f} s)",
                    flush=True,
                )
    print()
    print(_common.format_table(rows, ["BN", "init", "model", "var at last block"]))
    deepest = max(depths)
    ok = results.get(f"no BN | AutoInit + WeightedAdd | {deepest}", {}).get("features")
    if ok is not None:
        verdict = "ok" if 0.5 <= ok <= 2.0 else "MISS"
        print(
            f"\nResNet-{deepest}, AutoInit + WeightedAdd, no BN: {ok:.4g} (goal [0.5, 2]: {verdict})"
        )
    _common.save_json("figure4_resnet_depth.json", results)
    plot(results, depths)


def plot(results: dict[str, dict], depths: list[int]) -> None:
    """Two rows (last block by depth; block by block in the deepest net) x (no BN, BN)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deepest = max(depths)
    # Distinct dashes so curves that coincide (e.g. with BatchNormalization) stay visible.
    dashes = ["-", "--", "-", "-.", ":"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey="row")
    for col, bn in enumerate(("no BN", "BN")):
        top, bottom = axes[0, col], axes[1, col]
        for label, ls in zip(INITS, dashes, strict=True):
            ys = [results[f"{bn} | {label} | {d}"]["features"] for d in depths]
            capped = [y if y == y and y < FLOAT32_MAX else FLOAT32_MAX for y in ys]
            (line,) = top.plot(depths, capped, marker="o", ls=ls, label=label)
            for d, y in zip(depths, ys, strict=True):
                if not (y == y and y < FLOAT32_MAX):
                    top.annotate(
                        "overflow",
                        (d, FLOAT32_MAX),
                        fontsize=7,
                        color=line.get_color(),
                        xytext=(-20, -12),
                        textcoords="offset points",
                    )
            per_block = results[f"{bn} | {label} | {deepest}"]
            blocks = [v for k, v in per_block.items() if k.endswith("_out")]
            blocks = [v if v == v and v < FLOAT32_MAX else float("nan") for v in blocks]
            bottom.plot(range(1, len(blocks) + 1), blocks, ls=ls, lw=1.2, label=label)
        for ax in (top, bottom):
            ax.set_yscale("log")
            ax.axhspan(0.5, 2.0, color="green", alpha=0.08)
            ax.grid(alpha=0.3, which="major")
        top.set_xscale("log")
        top.minorticks_off()
        top.set_xticks(depths, [str(d) for d in depths])
        top.set_xlabel("ResNet depth")
        top.set_title(f"Variance at the last block, {bn}")
        bottom.set_xlabel(f"block of ResNet-{deepest}")
        bottom.set_title(f"Block outputs through ResNet-{deepest}, {bn}")
    axes[0, 0].set_ylabel("measured variance")
    axes[1, 0].set_ylabel("measured variance")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Signal variance in CIFAR ResNets (Gaussian input, training mode)")
    fig.tight_layout()
    path = _common.out_path("figure4_resnet_depth.png")
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
