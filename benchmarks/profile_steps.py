"""Where the time of a training step goes: Keras `fit` and the `Trainer`, op by op, same steps.

    python benchmarks/profile_steps.py [--models=sequential,functional] [--steps=800]

Each contender runs in its own child process, exactly as benchmarks/throughput.py runs it (same
network, optimizer, data pipeline, batch 64; fit with steps_per_execution=32, the Trainer with its
defaults), warmed for 64 steps; then TensorFlow's profiler traces --steps steps (a multiple of
800, so both end at one of their sync points). The trace's TensorFlow op events (executor
threads of the host plane) are summed per op type. Printed per model: wall seconds of the traced
window, total op time per step of each contender, and the op types whose time per step differs
most between them (Trainer minus fit), so a difference in throughput can be traced to ops
(metric updates, loss reduction, copies, the input pipeline's ops) rather than guessed. Op time
is summed over threads (it can exceed wall time on 2 cores), and the two contenders are traced
one after the other: on a shared machine, compare op types, not a few percent of total.
"""

import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

WARMUP = 64
# Events that contain other ops' events (function calls, loops, the executor's own spans): left
# out, so that each op's time is counted once.
_CONTAINERS = {"Process", "Run", "PartitionedCall", "StatefulPartitionedCall", "While", "If",
               "StatelessIf", "StatelessWhile", "Case", "StatelessCase"}


class _Traced:
    """`at_sync` hook for throughput.py's children: traces from step WARMUP to WARMUP + steps."""

    def __init__(self, steps, log_dir, out):
        self.steps, self.log_dir, self.out = steps, log_dir, out
        self.start = None

    def at_sync(self, position):
        import tensorflow as tf
        if self.start is None and position >= WARMUP:
            tf.profiler.experimental.start(self.log_dir)
            self.start = (position, time.perf_counter(), time.process_time())
        elif self.start is not None and position >= self.start[0] + self.steps:
            wall, cpu = time.perf_counter() - self.start[1], time.process_time() - self.start[2]
            tf.profiler.experimental.stop()
            with open(self.out, "w") as f:
                json.dump({"steps": position - self.start[0], "wall_s": wall, "cpu_s": cpu}, f)
            os._exit(0)


def _child(args):
    import tensorflow as tf
    import throughput
    tf.get_logger().setLevel("ERROR")
    tf.keras.utils.set_random_seed(0)
    hook = _Traced(args.steps, args.log_dir, args.out)
    run = throughput._run_fit if args.child == "fit" else throughput._run_trainer
    run(args.model, True, hook, bf16=False)


def op_times(log_dir):
    """{op type: total microseconds} over the TensorFlow op events of the trace in `log_dir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    paths = glob.glob(os.path.join(log_dir, "plugins", "profile", "*", "*.xplane.pb"))
    space = xplane_pb2.XSpace()
    with open(paths[0], "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        stat_names = {i: m.name for i, m in plane.stat_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                metadata = plane.event_metadata[event.metadata_id]
                tf_op = None
                for stat in list(event.stats) + list(metadata.stats):
                    if stat_names.get(stat.metadata_id) == "tf_op":
                        tf_op = stat.str_value or plane.stat_metadata[stat.ref_value].name
                        break
                name = tf_op or metadata.name
                if ":" not in name:  # Not an op of a graph (python, runtime, host events).
                    continue
                op_type = name.rsplit(":", 1)[1].strip()
                if op_type in _CONTAINERS or op_type.startswith("__"):
                    continue
                totals[op_type] += event.duration_ps / 1e6
    return totals


def _profile(name, model, args):
    log_dir = tempfile.mkdtemp(prefix=f"profile-{name}-")
    out = os.path.join(log_dir, "window.json")
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f"--child={name}", f"--model={model}",
         f"--steps={args.steps}", f"--log_dir={log_dir}", f"--out={out}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if not os.path.exists(out):
        sys.exit(f"{name} failed:\n{result.stderr[-3000:]}")
    with open(out) as f:
        window = json.load(f)
    return window, op_times(log_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="sequential,functional")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--child")
    parser.add_argument("--model")
    parser.add_argument("--log_dir")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        return _child(args)
    for model in args.models.split(","):
        results = {name: _profile(name, model, args) for name in ("fit", "trainer")}
        print(f"\n{model}: {args.steps} traced steps of batch 64 (after {WARMUP} warm-up steps)")
        for name, (window, ops) in results.items():
            steps = window["steps"]
            print(f"  {name:<8} wall {window['wall_s']:.2f} s ({steps * 64 / window['wall_s']:,.0f}"
                  f" img/s traced), CPU {window['cpu_s']:.2f} s, op time "
                  f"{sum(ops.values()) / steps / 1e3:.2f} ms/step over {len(ops)} op types")
        (fit_window, fit_ops), (trainer_window, trainer_ops) = results["fit"], results["trainer"]
        per_step = {op: (trainer_ops.get(op, 0) / trainer_window["steps"]
                         - fit_ops.get(op, 0) / fit_window["steps"])
                    for op in set(fit_ops) | set(trainer_ops)}
        print(f"  op types by |Trainer - fit| time per step (us): op, fit, Trainer, difference")
        for op in sorted(per_step, key=lambda o: -abs(per_step[o]))[:args.top]:
            print(f"    {op:<36}{fit_ops.get(op, 0) / fit_window['steps']:>10.1f}"
                  f"{trainer_ops.get(op, 0) / trainer_window['steps']:>10.1f}{per_step[op]:>+10.1f}")


if __name__ == "__main__":
    main()
