"""``autoinit-nas signal``: predicted vs measured variance, Keras default init vs AutoInit."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]

DEMOS = ("resnet20", "resnet56", "resnet110", "resnet164", "allcnn")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "signal",
        help="per-layer predicted vs measured variance for Keras default init and AutoInit",
        description="Print per-layer predicted and measured variance of a model under Keras' "
        "default initialization and under AutoInit, and draw the signal-propagation plot.",
    )
    p.add_argument("model", nargs="?", help="a .keras model file")
    p.add_argument("--demo", choices=DEMOS, help="a built-in model instead of a file")
    p.add_argument("--plot", default=None, help="write the plot here (PNG)")
    p.add_argument("--mode", choices=("realized", "expected"), default="realized")
    p.add_argument("--samples", type=int, default=256, help="Gaussian samples for measuring")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batchnorm", action="store_true", help="demo ResNets with BatchNorm")
    p.set_defaults(func=run)
    return p


def _load(args: argparse.Namespace) -> Any:
    if (args.model is None) == (args.demo is None):
        raise SystemExit("autoinit-nas signal: give either MODEL.keras or --demo NAME, not both or neither.")
    if args.demo:
        from autoinit_nas import zoo

        if args.demo == "allcnn":
            return zoo.all_cnn_c()
        return zoo.resnet(int(args.demo[len("resnet"):]), batchnorm=args.batchnorm)
    import keras

    import autoinit_nas  # noqa: F401  (registers WeightedAdd, ParametricActivation)

    try:
        return keras.saving.load_model(args.model, compile=False)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"autoinit-nas signal: cannot load {args.model!r}: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    import keras

    from autoinit_nas import initialize, predict_signal

    model = _load(args)
    default_model = keras.models.clone_model(model)
    default = predict_signal(default_model, seed=args.seed)
    default.measure(default_model, samples=args.samples, seed=args.seed)
    report = initialize(model, mode=args.mode, seed=args.seed)
    report.measure(model, samples=args.samples, seed=args.seed)
    out = sys.stdout
    out.write(f"Model {model.name}: {len(report.layers)} call sites, AutoInit ({args.mode}) "
              f"took {report.seconds:.3f} s\n\n")
    head = (f"{'#':>4}  {'layer':<30} {'class':<20} {'default pred':>12} {'default meas':>12} "
            f"{'AutoInit std':>12} {'AutoInit pred':>13} {'AutoInit meas':>13}")
    out.write(head + "\n" + "-" * len(head) + "\n")
    for i, (d, a) in enumerate(zip(default.layers, report.layers, strict=True)):
        std = "" if a.weight_std is None else f"{a.weight_std:.5f}"
        out.write(f"{i:>4}  {a.name[-30:]:<30} {a.class_name[:20]:<20} {d.var:>12.4g} "
                  f"{d.measured_var:>12.4g} {std:>12} {a.var:>13.4g} {a.measured_var:>13.4g}\n")
    errs = report.errors()
    out.write(f"\nAutoInit: median relative error {100 * float(__import__('numpy').median(errs)):.2f}%, "
              f"max {100 * float(errs.max()):.2f}% (predicted vs measured variance)\n")
    last = report.layers[-2] if len(report.layers) > 1 else report.layers[-1]
    dlast = default.layers[len(report.layers) - 2] if len(report.layers) > 1 else default.layers[-1]
    out.write(f"Variance before the head: default init {dlast.measured_var:.4g}, "
              f"AutoInit {last.measured_var:.4g}\n")
    if args.plot:
        report.plot(args.plot, model=model)
        out.write(f"Plot written to {args.plot}\n")
    return 0
