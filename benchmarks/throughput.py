"""Training throughput: Keras `fit` against this project's `Trainer`, measured identically.

    python benchmarks/throughput.py [--models=sequential,functional] [--repeats=5]
        [--mode=steady|epochs|steady,epochs] [--contenders=fit,trainer,trainer-bf16,fit-bf16]
        [--contenders=trainer,trainer-mlflow]   (the cost of MLflow logging)

Contenders (same network, optimizer, loss, batch and tf.data pipeline):

    fit           Keras compile + fit: Adam(3e-4), SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=32, jit_compile left at Keras' default
    trainer       trainer.Trainer with its defaults (steps_per_loop=100, log_every_n_steps=50:
                  a traced loop call of 50 steps), no checkpoints
    trainer-bf16  the same with precision="bf16-mixed" (Keras policy mixed_bfloat16)
    trainer-mlflow  trainer with an MLflowLogger logging every loop call (50 steps) to a local
                  sqlite store in a temporary directory (needs mlflow; not run by default)
    fit-bf16      fit with the Keras policy mixed_bfloat16, so bf16 is compared with bf16 too

How it measures:

- Every contender runs in its OWN child process (this script with --child), started once per
  model and kept alive across all repeats. It trains inside one long `fit` call; at each of its
  host-sync points a callback (Keras: `on_train_batch_end` / `on_epoch_end` with
  `float(logs["loss"])`; Trainer: a `trainer.callbacks.Callback`'s same hooks, which run after the
  Trainer has read the step counter and the metrics) may end a window: the child then reports
  the window's steps and seconds over stdout and blocks until the parent says "go" again. So
  the device is idle at both ends of every window, and both contenders are timed between the
  same kind of point: a completed, synced loop call.
- Warm before the first window: traced, the data cached, one pass over the data (64 steps)
  trained (steady mode), or one whole epoch trained (epochs mode).
- Each repeat times one window of every contender, one after another, in a rotated order
  (repeat r starts with contender r mod n), so slow phases of this shared machine hit all of
  them. Ratios are paired: contender / fit within the same repeat; the median and range of
  those ratios are reported, along with median images/s.
- Besides wall time, each child reports its own CPU time (user + sys) over the window: images
  per CPU-second is less sensitive to other processes competing for the cores.
- Data: the same 4,096 synthetic uint8 32x32x3 images and labels, through the same
  `data.ArrayImageData(...).train_dataset(...)` pipeline (stateless reshuffle every 64 batches,
  uint8 -> float32 per batch), batch 64, for both contenders.

Modes:

    steady  one endless epoch; a window is --window_steps optimizer steps (default 800: the
            least common multiple of fit's 32 steps per execution and the Trainer's 50 steps
            per loop call, so a window begins and ends at a sync point of both; any multiple
            of 50 is accepted for shorter runs, fit then running up to 31 steps more). No epoch
            boundary falls inside a window; the data pipeline's reshuffle every 64 batches
            does, equally often for both.
    epochs  64-step epochs (the 4,096 images once); a window is --window_epochs whole epochs,
            from one on_epoch_end to a later one, so it includes each epoch's begin and end
            work (metric resets and reads, iterator hand-over, epoch logs) as real epochs do.

FLOPs per training image are counted by TF's profiler from the layer shapes (forward x 3), and
images/s x FLOPs is printed as a fraction of this machine's float32 matmul peak (2048x2048,
measured at start). The last line is `ratio_vs_fit sequential=<x> functional=<y>`: the median
paired ratio trainer / fit in steady mode (in epochs mode if steady was not run); with
trainer-mlflow and trainer, `ratio_mlflow_vs_trainer sequential=<x> ...` follows it.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BATCH_SIZE = 64
NUM_IMAGES = 4096  # 64 steps per pass over the data
ENDLESS = 10**9  # steps per epoch (steady) or epochs (epochs mode): the parent stops the child
CONTENDERS = ("fit", "trainer", "trainer-bf16", "fit-bf16")
WINDOW_EPOCHS = {"sequential": 8, "functional": 2}  # about 10 s each here


# ---- The child: one contender, trained until told to quit ----------------------------------

class _Windows:
    """Times windows between host-sync points and talks to the parent between them.

    `at_sync(position)` is called at every sync point with the steps (steady) or epochs done.
    """

    def __init__(self, protocol, warmup, window):
        self.protocol = protocol
        self.target, self.window = warmup, window
        self.start_time = self.start_cpu = self.start_position = None

    def at_sync(self, position):
        if position < self.target:
            return
        if self.start_time is None:
            self._send({"ready": position})
        else:
            self._send({"units": position - self.start_position,
                        "seconds": time.perf_counter() - self.start_time,
                        "cpu_seconds": time.process_time() - self.start_cpu})
        command = sys.stdin.readline().strip()
        if command != "go":  # "quit", or "" when the parent is gone
            if command == "quit":
                self._send({"max_rss_mb": _peak_rss_mb()})
            os._exit(0)
        self.start_position, self.target = position, position + self.window
        self.start_time, self.start_cpu = time.perf_counter(), time.process_time()

    def _send(self, message):
        try:
            self.protocol.write(json.dumps(message) + "\n")
            self.protocol.flush()
        except BrokenPipeError:  # The parent is gone.
            os._exit(1)


def _peak_rss_mb():
    """This process's peak resident memory. /proc's VmHWM, not ru_maxrss: Linux carries
    ru_maxrss over an exec, so a child would report its (large) parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(args):
    """Trains `args.child` on `args.model`, reporting windows over the original stdout."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # Anything else printed goes to the log, not into the protocol.
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    tf.keras.utils.set_random_seed(0)
    if args.child.endswith("-bf16"):
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")  # Before any layer.
    steady = args.mode == "steady"
    windows = _Windows(protocol, warmup=64 if steady else 1,
                       window=args.window_steps if steady else args.window_epochs)
    run = _run_fit if args.child.startswith("fit") else _run_trainer
    run(args.model, steady, windows, bf16=args.child.endswith("-bf16"),
        tracked=args.child == "trainer-mlflow")


def _datamodule(steady):
    import numpy as np
    import data

    class EndlessEpoch(data.ArrayImageData):
        """The same data, but the Trainer's epoch never ends (steady mode)."""

        def steps_per_epoch(self):
            return ENDLESS

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (NUM_IMAGES, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, NUM_IMAGES)
    kind = EndlessEpoch if steady else data.ArrayImageData
    return kind(train=(images, labels), num_classes=10, batch_size=BATCH_SIZE)


def _network(model_name):
    import layers
    return layers.build_cnn(model_name, input_shape=(32, 32, 3), num_classes=10)


def _run_fit(model_name, steady, windows, bf16, tracked):
    import tensorflow as tf

    class Sync(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # A host sync (Keras has already made one: it pythonifies logs).
            if steady:
                windows.at_sync(batch + 1)  # `batch`: the execution's last step in the epoch

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])
            if not steady:
                windows.at_sync(epoch + 1)

    del bf16, tracked  # The policy was set before the network was built; fit is not tracked.
    model = _network(model_name)
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-4),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=32)
    dataset = _datamodule(steady).train_dataset(tf.distribute.InputContext())
    model.fit(dataset, epochs=1 if steady else ENDLESS,
              steps_per_epoch=ENDLESS if steady else NUM_IMAGES // BATCH_SIZE,
              callbacks=[Sync()], verbose=0)


def _run_trainer(model_name, steady, windows, bf16, tracked):
    import trainer

    class Sync(trainer.callbacks.Callback):
        def on_train_batch_end(self, step, logs):
            if steady:  # The Trainer has read optimizer.iterations and the metrics: synced.
                windows.at_sync(step)

        def on_epoch_end(self, epoch, logs):
            if not steady:
                windows.at_sync(epoch + 1)

    tracking = []
    if tracked:  # Before Sync: the logging at a window's last step counts in that window.
        store = tempfile.mkdtemp(prefix="throughput-mlflow-")
        tracking = [trainer.callbacks.MLflowLogger(tracking_uri=f"sqlite:///{store}/mlflow.db",
                                                   experiment="throughput")]
    module = trainer.ImageClassifier(_network(model_name), learning_rate=3e-4)
    fitter = trainer.Trainer(epochs=1 if steady else ENDLESS, callbacks=[*tracking, Sync()],
                             precision="bf16-mixed" if bf16 else "32",
                             enable_progress_bar=False, enable_model_summary=False)
    fitter.fit(module, _datamodule(steady))


# ---- The parent: starts the children, drives the repeats, reports ----------------------------

class _Contender:
    """A child process training one contender, warmed up and waiting for "go"."""

    def __init__(self, name, model_name, mode, args):
        self.name = name
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"throughput-{name}-", suffix=".log")
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), f"--child={name}",
             f"--model={model_name}", f"--mode={mode}", f"--window_steps={args.window_steps}",
             f"--window_epochs={args.window_epochs or WINDOW_EPOCHS[model_name]}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT)
        self._receive()  # {"ready": position}

    def window(self):
        """Trains one window; returns (steps or epochs, wall seconds, CPU seconds of the child)."""
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        reply = self._receive()
        return reply["units"], reply["seconds"], reply["cpu_seconds"]

    def close(self):
        """Stops the child; returns its peak resident memory in MB."""
        self.process.stdin.write("quit\n")
        self.process.stdin.flush()
        peak = self._receive()["max_rss_mb"]
        self.process.wait()
        self.log.close()
        return peak

    def _receive(self):
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            sys.exit(f"{self.name} child failed:\n{self.log.read()[-4000:]}")
        return json.loads(line)


def _measure(model_name, mode, args, names):
    """Runs the repeats; returns {name: [images/s per repeat]}, {name: [images per CPU-second
    per repeat]} and {name: peak RSS MB}."""
    contenders = {}
    for name in names:  # One at a time: a warming child must not slow a measured one.
        contenders[name] = _Contender(name, model_name, mode, args)
    speeds = {name: [] for name in names}
    cpu_speeds = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for name in order:
            units, seconds, cpu_seconds = contenders[name].window()
            steps = units if mode == "steady" else units * NUM_IMAGES // BATCH_SIZE
            speeds[name].append(steps * BATCH_SIZE / seconds)
            cpu_speeds[name].append(steps * BATCH_SIZE / cpu_seconds)
            print(f"  {mode} {model_name} repeat {repeat + 1}/{args.repeats} {name}: "
                  f"{steps} steps in {seconds:.2f} s = {speeds[name][-1]:,.0f} img/s "
                  f"({cpu_seconds:.2f} CPU-s = {cpu_speeds[name][-1]:,.0f} img/CPU-s)", flush=True)
    peaks = {name: contender.close() for name, contender in contenders.items()}
    return speeds, cpu_speeds, peaks


def _paired(speeds, name, baseline):
    ratios = [a / b for a, b in zip(speeds[name], speeds[baseline])]
    return statistics.median(ratios), min(ratios), max(ratios)


def _report(model_name, mode, args, speeds, cpu_speeds, peaks, flops, peak_flops):
    window = (f"{args.window_steps} steps" if mode == "steady" else
              f"{args.window_epochs or WINDOW_EPOCHS[model_name]} epochs of "
              f"{NUM_IMAGES // BATCH_SIZE} steps")
    print(f"\n{mode} mode, {model_name}: windows of {window}, batch {BATCH_SIZE}, "
          f"{args.repeats} repeats; {flops / 1e6:.1f} MFLOP per training image")
    print(f"{'contender':<14}{'median img/s':>13}{'range':>16}{'vs fit: median [range]':>26}"
          f"{'of peak':>9}{'child RSS':>11}")
    for name, values in speeds.items():
        median = statistics.median(values)
        spread = f"{min(values):,.0f}-{max(values):,.0f}"
        ratio = "" if "fit" not in speeds else "{:.2f} [{:.2f}-{:.2f}]".format(
            *_paired(speeds, name, "fit"))
        print(f"{name:<14}{median:>13,.0f}{spread:>16}{ratio:>26}"
              f"{median * flops / peak_flops:>9.1%}{peaks[name]:>8,.0f} MB")
    if "trainer-bf16" in speeds and "fit-bf16" in speeds:
        print("trainer-bf16 / fit-bf16: {:.2f} [{:.2f}-{:.2f}]".format(
            *_paired(speeds, "trainer-bf16", "fit-bf16")))
    if "trainer-mlflow" in speeds and "trainer" in speeds:
        print("trainer-mlflow / trainer: {:.3f} [{:.3f}-{:.3f}], per CPU-second {:.3f} "
              "[{:.3f}-{:.3f}]".format(*_paired(speeds, "trainer-mlflow", "trainer"),
                                       *_paired(cpu_speeds, "trainer-mlflow", "trainer")))
    if "fit" in speeds:  # Less sensitive to other processes on the machine than wall time.
        print("images per CPU-second of the child, paired vs fit: " + ", ".join(
            "{} {:.2f} [{:.2f}-{:.2f}]".format(name, *_paired(cpu_speeds, name, "fit"))
            for name in cpu_speeds if name != "fit"))


def training_flops_per_image(model_name):
    """Forward FLOPs of one image counted by TF's profiler from the layer shapes, times 3
    (the backward pass costs about twice the forward: gradients for inputs and for weights)."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer
    from tensorflow.python.profiler import option_builder
    model = _network(model_name)
    forward = tf.function(lambda images: model(images, training=False))
    graph = forward.get_concrete_function(tf.TensorSpec([1, 32, 32, 3], tf.float32)).graph
    options = option_builder.ProfileOptionBuilder(
        option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return 3 * model_analyzer.profile(graph, options=options).total_float_ops


def matmul_peak_flops():
    """Best float32 FLOP/s of a 2048x2048 matmul on this machine, now."""
    import tensorflow as tf
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


def _native_bf16():
    """Whether this CPU has bfloat16 instructions (Linux); without them bf16 is emulated, slowly."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return None
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="sequential,functional")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", default="steady", help="steady, epochs, or steady,epochs")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--window_steps", type=int, default=800,
                        help="steady mode: steps per window; a multiple of 800 (of 32 and 50) "
                             "ends every window at a sync point of both. Otherwise fit's window "
                             "ends at its first sync point past it (images/s counts the steps "
                             "actually run)")
    parser.add_argument("--window_epochs", type=int, default=None,
                        help="epochs mode: epochs per window (default: sequential 8, functional 2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.window_steps % 50:
        parser.error("--window_steps must be a multiple of 50 (the Trainer's steps per loop "
                     "call); a multiple of 800 also ends at a sync point of fit (32 steps)")
    return args


def main():
    args = _parse_args()
    if args.child:
        return _child(args)
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    names = args.contenders.split(",")
    peak_flops = matmul_peak_flops()
    print(f"TensorFlow {tf.__version__}, Keras {tf.keras.version()}, {os.cpu_count()} CPU cores; "
          f"float32 matmul peak {peak_flops / 1e9:.0f} GFLOP/s", flush=True)
    if any(name.endswith("-bf16") for name in names) and _native_bf16() is False:
        print("note: this CPU has no bfloat16 instructions (avx512_bf16/amx_bf16): the bf16 "
              "contenders run emulated", flush=True)
    ratios, tracking_ratios = {}, {}
    for mode in args.mode.split(","):
        for model_name in args.models.split(","):
            flops = training_flops_per_image(model_name)
            speeds, cpu_speeds, peaks = _measure(model_name, mode, args, names)
            _report(model_name, mode, args, speeds, cpu_speeds, peaks, flops, peak_flops)
            if "trainer" in speeds and "fit" in speeds and (mode == "steady" or
                                                            model_name not in ratios):
                ratios[model_name] = _paired(speeds, "trainer", "fit")[0]
            if "trainer" in speeds and "trainer-mlflow" in speeds and (
                    mode == "steady" or model_name not in tracking_ratios):
                tracking_ratios[model_name] = _paired(speeds, "trainer-mlflow", "trainer")[0]
    print()
    if ratios:
        print("ratio_vs_fit " + " ".join(f"{name}={ratio:.2f}" for name, ratio in ratios.items()))
    if tracking_ratios:
        print("ratio_mlflow_vs_trainer " + " ".join(
            f"{name}={ratio:.3f}" for name, ratio in tracking_ratios.items()))


if __name__ == "__main__":
    main()
