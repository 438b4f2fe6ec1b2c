"""Training throughput: Keras `fit` against this project's `Trainer`, on the same model and data.

    python benchmarks/throughput.py [--repeats=3] [--models=sequential,functional]

Everything runs in ONE process, contenders alternating within each repeat, because this machine
is shared and noisy: a ratio taken within one run is meaningful, absolute numbers less so.

    fit      Keras compile + fit: Adam(3e-4), sparse categorical cross-entropy on logits, accuracy,
             steps_per_execution=32, jit_compile left at Keras' default ("auto")
    default  Trainer.fit with the command line's defaults
    best     Trainer.fit with the fastest flags measured here (--precision=bf16-mixed)
    xla      Trainer.fit with --jit_compile (to measure XLA; off by default)
    ckpt100  Trainer.fit with defaults plus a full checkpoint every 100 steps (checkpoint cost)

All three read the same synthetic uint8 CIFAR-shaped images through the same tf.data pipeline
(`data.ArrayImageData`), batch 64. Each measurement trains two epochs and times the second, so
tracing and the first pass over the data are excluded. The last line is
`ratio_vs_fit sequential=<x> functional=<y>`: default Trainer / fit, medians.
"""

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.profiler import model_analyzer  # noqa: E402
from tensorflow.python.profiler import option_builder  # noqa: E402

import data  # noqa: E402
import layers  # noqa: E402
import trainer  # noqa: E402
from trainer import checkpointing  # noqa: E402
from trainer import precision  # noqa: E402

BATCH_SIZE = 64
STEPS_PER_EPOCH = {"sequential": 200, "functional": 60}


def _datamodule(steps):
    rng = np.random.default_rng(0)
    num_examples = steps * BATCH_SIZE
    images = rng.integers(0, 256, (num_examples, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, num_examples)
    return data.ArrayImageData(train=(images, labels), num_classes=10, batch_size=BATCH_SIZE)


def _network(model_name):
    return layers.build_cnn(model_name, input_shape=(32, 32, 3), num_classes=10)


class _EpochTimer(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def run_fit(model_name, steps):
    """Images/s of Keras fit's second epoch."""
    model = _network(model_name)
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-4),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=32)
    dataset = _datamodule(steps).train_dataset(tf.distribute.InputContext())
    timer = _EpochTimer()
    model.fit(dataset, epochs=2, steps_per_epoch=steps, callbacks=[timer], verbose=0,
              shuffle=False)
    return steps * BATCH_SIZE / timer.seconds


def run_trainer(model_name, steps, precision_name="32", steps_per_loop=100, jit_compile=False,
                checkpoint_every=0):
    """Images/s of Trainer.fit's second epoch."""
    precision.set_precision(precision_name)
    checkpoint_dir = tempfile.mkdtemp(prefix="throughput-")
    try:
        module = trainer.ImageClassifier(_network(model_name), learning_rate=3e-4)
        checkpointer = (checkpointing.Checkpointer(checkpoint_dir, every_n_steps=checkpoint_every)
                        if checkpoint_every else None)
        # Loop calls of steps_per_loop steps, as measured: logging cadence matched to it.
        fitter = trainer.Trainer(epochs=2, steps_per_loop=steps_per_loop,
                                 log_every_n_steps=steps_per_loop, precision=precision_name,
                                 jit_compile=jit_compile, checkpointer=checkpointer,
                                 enable_progress_bar=False, enable_model_summary=False)
        fitter.fit(module, _datamodule(steps))
    finally:
        precision.set_precision("32")
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return fitter.history[-1]["train_images_per_s"]


CONTENDERS = {
    "fit": run_fit,
    "default": run_trainer,
    "best": lambda model_name, steps: run_trainer(model_name, steps, precision_name="bf16-mixed"),
    "xla": lambda model_name, steps: run_trainer(model_name, steps, jit_compile=True),
    # Checkpoints every 100 steps: about 4x more often than the default cadence (1000 steps and
    # every epoch end, 781 steps on CIFAR-10), so its cost bounds the default's from above.
    "ckpt100": lambda model_name, steps: run_trainer(model_name, steps, checkpoint_every=100),
}


def training_flops_per_image(model_name):
    """Forward FLOPs of one image counted by TF's profiler from the layer shapes, times 3
    (the backward pass costs about twice the forward: gradients for inputs and for weights)."""
    model = _network(model_name)
    forward = tf.function(lambda images: model(images, training=False))
    graph = forward.get_concrete_function(tf.TensorSpec([1, 32, 32, 3], tf.float32)).graph
    options = option_builder.ProfileOptionBuilder(
        option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return 3 * model_analyzer.profile(graph, options=options).total_float_ops


def matmul_peak_flops():
    """Best float32 FLOP/s of a 2048x2048 matmul on this machine, now."""
    a = tf.random.normal([2048, 2048])
    matmul = tf.function(lambda a: tf.matmul(a, a))
    matmul(a).numpy()
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            result = matmul(a)
        result.numpy()
        best = max(best, 10 * 2 * 2048**3 / (time.perf_counter() - start))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="sequential,functional")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")

    peak = matmul_peak_flops()
    print(f"TensorFlow {tf.__version__}, Keras {tf.keras.__version__ if hasattr(tf.keras, '__version__') else ''}, "
          f"{os.cpu_count()} CPU cores; float32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    ratios = {}
    for model_name in args.models.split(","):
        steps = STEPS_PER_EPOCH[model_name]
        flops = training_flops_per_image(model_name)
        speeds = {name: [] for name in CONTENDERS}
        for repeat in range(args.repeats):
            for name, run in CONTENDERS.items():
                speeds[name].append(run(model_name, steps))
                print(f"  {model_name} repeat {repeat + 1}/{args.repeats} {name}: "
                      f"{speeds[name][-1]:,.0f} img/s", flush=True)
        fit_median = statistics.median(speeds["fit"])
        print(f"\n{model_name}: {flops / 1e6:.1f} MFLOP per training image, "
              f"{steps} steps of {BATCH_SIZE} per timed epoch, {args.repeats} repeats")
        print(f"{'contender':<10}{'median img/s':>14}{'range':>20}{'vs fit':>9}{'of peak':>10}")
        for name, values in speeds.items():
            median = statistics.median(values)
            spread = f"{min(values):,.0f}-{max(values):,.0f}"
            print(f"{name:<10}{median:>14,.0f}{spread:>20}{median / fit_median:>8.2f}x"
                  f"{median * flops / peak:>10.1%}")
        ratios[model_name] = statistics.median(speeds["default"]) / fit_median
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak resident memory of this process so far: {peak_rss_mb:,.0f} MB\n")
    print("ratio_vs_fit " + " ".join(f"{name}={ratio:.2f}" for name, ratio in ratios.items()))


if __name__ == "__main__":
    main()
