"""Constant vs cosine-decayed learning rate for hand-written MNIST-1D networks.

Why candidates are trained with ``--lr-schedule cosine`` by default: with Adam at a constant 1e-2
(the MNIST-1D paper's rate) the last-epoch accuracy of a network jumps by several points from
epoch to epoch, so fitness is noisy and low; decaying the rate to 0 over the budget ends
training at a settled point. Each network is built with AutoInit (seed 0), trained on the
3,600-sample training split and tested on the 1,000 test samples.

    python benchmarks/lr_schedule.py                     # 40 epochs, the networks below
    python benchmarks/lr_schedule.py --epochs 10 --nets pub25 wide64
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
from _common import format_table, save_json

from evolution import load_task
from evolution._evaluate import lr_schedule_callback
from search_spaces import NetworkSearchSpace
from search_spaces.network import INPUT, NetworkGenome, Node


def cnn(channels: int, kernels: tuple, strides: tuple, head: str = "flatten") -> NetworkGenome:
    nodes, src = [], INPUT
    for k, (size, stride) in enumerate(zip(kernels, strides, strict=True)):
        nodes.append(Node.make(f"c{k}", "conv", src, filters=channels, kernel_size=size,
                               strides=stride))
        nodes.append(Node.make(f"a{k}", "activation", f"c{k}", function="relu"))
        src = f"a{k}"
    return NetworkGenome(tuple(nodes), output=src, head=head)


NETS = {
    "pub25": cnn(25, (5, 3, 3), (2, 2, 2)),  # the published MNIST-1D CNN
    "pub64": cnn(64, (5, 3, 3), (2, 2, 2)),
    "wide64": cnn(64, (5, 3, 3, 3, 3), (1, 1, 2, 2, 2), head="global_avg"),
    "wide128": cnn(128, (5, 3, 3, 3, 3, 3), (1, 1, 2, 2, 2, 2), head="global_avg"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--nets", nargs="+", choices=sorted(NETS), default=list(NETS))
    args = parser.parse_args()
    task = load_task("mnist1d")
    space = NetworkSearchSpace(input_shape=task.spec.input_shape)
    steps = int(np.ceil(len(task.x_train) / 100))
    rows = []
    for name in args.nets:
        for schedule in ("constant", "cosine"):
            keras.utils.set_random_seed(0)
            model = space.build(NETS[name], task.spec, seed=0, compile=False)
            model.compile(optimizer=keras.optimizers.Adam(1e-2),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            callback = lr_schedule_callback(schedule, epochs=args.epochs, steps_per_epoch=steps)
            clock = time.monotonic()
            history = model.fit(task.x_train, task.y_train, batch_size=100, epochs=args.epochs,
                                validation_data=(task.x_val, task.y_val), verbose=0,
                                callbacks=[callback] if callback else [])
            val = history.history["val_accuracy"]
            test = float(np.mean(model.predict(task.x_test, verbose=0).argmax(1) == task.y_test))
            rows.append([name, schedule, int(model.count_params()), round(val[-1], 4),
                         round(float(np.std(val[-5:])), 4), round(test, 4),
                         round(time.monotonic() - clock, 1)])
            print(rows[-1], flush=True)
    headers = ["net", "schedule", "params", "last val", "sd last 5 val", "test", "seconds"]
    print(format_table(rows, headers))
    save_json("lr_schedule.json", {"args": vars(args), "headers": headers, "rows": rows})


if __name__ == "__main__":
    main()
