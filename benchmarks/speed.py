"""Speed of ``initialize(model, mode=...)`` on unnormalized CIFAR ResNets.

For each depth the model is built once (build time excluded), initialized once as a warm-up,
then timed over ``--repeats`` calls; the table gives the median and the seconds per layer, which
should stay flat if the walk is linear in the number of layers.

Goals (2 CPU cores): ResNet-164 < 1 s realized, < 0.3 s expected; ResNet-812 < 5 s.
Reference implementation (Keras 2): 16.5 s ResNet-56, 74.7 s ResNet-164.

Usage:
    python benchmarks/speed.py [--quick] [--repeats 3] [--profile 164:realized]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import _common

from autoinit_nas.zoo import resnet

GOALS = {
    (164, "realized"): 1.0,
    (164, "expected"): 0.3,
    (812, "realized"): 5.0,
    (812, "expected"): 5.0,
}
REFERENCE = {56: 16.5, 164: 74.7}


def profile(depth: int, mode: str, top: int = 30) -> str:
    """cProfile of one ``initialize`` call (after a warm-up), sorted by cumulative time."""
    from autoinit_nas import initialize

    model = resnet(depth)
    initialize(model, mode=mode, seed=0)
    profiler = cProfile.Profile()
    profiler.enable()
    initialize(model, mode=mode, seed=1)
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return stream.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-20/56/164 only, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--depths", type=int, nargs="*", default=None)
    parser.add_argument("--modes", nargs="*", default=["realized", "expected"])
    parser.add_argument(
        "--profile", default=None, help="DEPTH:MODE, e.g. 164:realized: print a cProfile and exit"
    )
    args = parser.parse_args()
    _common.require_engine()
    from autoinit_nas import initialize

    if args.profile:
        depth, mode = args.profile.split(":")
        print(profile(int(depth), mode))
        return

    depths = args.depths or ([20, 56, 164] if args.quick else [20, 56, 110, 164, 812])
    repeats = args.repeats or (1 if args.quick else 3)
    rows, results = [], []
    for depth in depths:
        start = time.perf_counter()
        model = resnet(depth)
        build_s = time.perf_counter() - start
        n_layers = len(model.layers)
        n_weighted = sum(1 for layer in model.layers if layer.weights)
        for mode in args.modes:
            seconds, times = _common.median_time(
                lambda m=mode, mdl=model: initialize(mdl, mode=m, seed=0), repeats=repeats
            )
            goal = GOALS.get((depth, mode))
            verdict = "" if goal is None else ("ok" if seconds < goal else f"MISS (<{goal:g}s)")
            rows.append(
                [
                    f"ResNet-{depth}",
                    mode,
                    n_layers,
                    n_weighted,
                    seconds,
                    1e3 * seconds / n_layers,
                    build_s,
                    REFERENCE.get(depth, ""),
                    verdict,
                ]
            )
            results.append(
                {
                    "depth": depth,
                    "mode": mode,
                    "layers": n_layers,
                    "weighted_layers": n_weighted,
                    "median_s": seconds,
                    "times_s": times,
                    "build_s": build_s,
                }
            )
            print(f"  ResNet-{depth} {mode}: {seconds:.3f} s", flush=True)
    print()
    print(
        _common.format_table(
            rows,
            [
                "model",
                "mode",
                "layers",
                "weighted",
                "median s",
                "ms/layer",
                "build s",
                "ref s",
                "goal",
            ],
        )
    )
    print(f"\n(median of {repeats} after 1 warm-up; 'ref s' = reference implementation)")
    _common.save_json("speed.json", results)
    plot(results)


def plot(results: list[dict]) -> None:
    """Seconds against number of layers, one line per mode, into benchmarks/out/speed.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for mode in sorted({r["mode"] for r in results}):
        pts = sorted((r["layers"], r["median_s"]) for r in results if r["mode"] == mode)
        ax.plot(*zip(*pts, strict=True), "o-", label=f"initialize(mode={mode!r})")
    ax.set_xlabel("layers in the model")
    ax.set_ylabel("seconds (median)")
    ax.set_title("AutoInit initialization time, unnormalized CIFAR ResNets")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = _common.out_path("speed.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
