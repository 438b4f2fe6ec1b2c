"""Validation pass time against the evaluation batch: the Trainer's `validate`, alternating.

    python benchmarks/eval_batch.py [--model=sequential] [--eval_batch_sizes=64,256] [--repeats=5]

One process; one Trainer per evaluation batch size, each over the same network weights and the
same 10,000 synthetic uint8 32x32x3 validation images (CIFAR-10's test split size, so the last
batch is partial for most sizes) through `data.ArrayImageData(..., eval_batch_size=...)`. Each
is warmed by one untimed pass (traced, data cached); then every repeat times one pass of each,
in a rotated order. Printed: the median `val_seconds` (the traced evaluation loop, as the
Trainer reports it) and images/s per size, and the median paired ratio of each to the first
size. The last line is `val_speedup_vs_<first> <size>=<x> ...` (time of the first / time).
"""

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NUM_IMAGES = 10_000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="sequential")
    parser.add_argument("--eval_batch_sizes", default="64,256")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    import data
    import layers
    import trainer
    tf.get_logger().setLevel("ERROR")

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (NUM_IMAGES, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, NUM_IMAGES)
    sizes = [int(size) for size in args.eval_batch_sizes.split(",")]
    weights = None
    runs = {}
    for size in sizes:
        tf.keras.utils.set_random_seed(0)
        network = layers.build_cnn(args.model, input_shape=(32, 32, 3), num_classes=10)
        module = trainer.ImageClassifier(network)
        datamodule = data.ArrayImageData(train=(images[:64], labels[:64]), val=(images, labels),
                                         num_classes=10, batch_size=64, eval_batch_size=size)
        fitter = trainer.Trainer(enable_progress_bar=False, enable_model_summary=False)
        fitter.validate(module, datamodule)  # Warm: traced, cached.
        if weights is None:
            weights = module.get_weights()
        module.set_weights(weights)
        runs[size] = (fitter, module, datamodule)
    seconds = {size: [] for size in sizes}
    for repeat in range(args.repeats):
        order = sizes[repeat % len(sizes):] + sizes[:repeat % len(sizes)]
        for size in order:
            fitter, module, datamodule = runs[size]
            logs = fitter.validate(module, datamodule)
            seconds[size].append(logs["val_seconds"])
            print(f"  repeat {repeat + 1}/{args.repeats} eval batch {size}: "
                  f"{logs['val_seconds']:.2f} s, val_loss {logs['val_loss']:.4f}", flush=True)
    first = sizes[0]
    print(f"\n{args.model}: a validation pass over {NUM_IMAGES:,} images, {args.repeats} repeats")
    speedups = {}
    for size in sizes:
        median = statistics.median(seconds[size])
        ratios = [a / b for a, b in zip(seconds[first], seconds[size])]
        speedups[size] = statistics.median(ratios)
        print(f"  eval batch {size:>5}: {median:.2f} s = {NUM_IMAGES / median:,.0f} img/s; "
              f"{first}'s time / this: {speedups[size]:.2f} [{min(ratios):.2f}-{max(ratios):.2f}]")
    print(f"val_speedup_vs_{first} " + " ".join(f"{s}={x:.2f}" for s, x in speedups.items()))


if __name__ == "__main__":
    main()
