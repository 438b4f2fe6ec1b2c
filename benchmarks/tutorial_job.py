"""The real job, whole processes: the tutorial's Keras script against `python -m trainer.main`.

    python benchmarks/tutorial_job.py --data_dir=~/tensorflow_datasets [--models=sequential,functional]
        [--runs=2] [--epochs=10] [--cache=warm|none]

For each model, every run starts these three programs one after another (the order rotated from
run to run, so a slow phase of a shared machine does not always hit the same one):

    tutorial    python benchmarks/tutorial_keras.py: CIFAR-10 as NumPy arrays, compile, fit
                (batch 64, no validation), evaluate on the test split
    cli         python -m trainer.main with its defaults: training on train[:90%] (45,000
                images per epoch, where the tutorial trains on all 50,000), validation on the
                other 10% after every epoch (work the tutorial does not do; in batches of
                --eval_batch_size, 4 x 64), then the test, checkpoints, TensorBoard and CSV
                logs, the export and the plots
    cli-val-end the same with --check_val_every_n_epoch=<epochs>: one validation, at the end,
                then the test: the tutorial's amount of evaluation

--cache=warm (default): the CLI runs pass --cache_dir=<a directory of this benchmark>, filled
before the timed runs by an untimed one-step CLI run, so every timed CLI run is a "second run"
that loads decoded examples instead of decoding CIFAR-10's PNG records. --cache=none: no
--cache_dir, every CLI run decodes (as the tutorial always does).

Each CLI run gets a fresh temporary --model_dir. Measured per process, from the parent: wall
time (start to exit), CPU time (user + sys of the child, from os.wait4) and peak resident memory
(the child's ru_maxrss; Linux carries the launching process's peak over the exec, and this
script imports no TensorFlow, so that floor is a few tens of MB). Ratios are paired (CLI /
tutorial within the same run), median over runs. The test accuracies of every run are printed.
The last two lines: `wall_ratio_vs_tutorial_val_at_end sequential=<x> ...` (cli-val-end, the
tutorial's amount of work) and `wall_ratio_vs_tutorial sequential=<x> functional=<y>` (cli, the
CLI's defaults: validation after every epoch).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("tutorial", "cli", "cli-val-end")


def _command(variant, model, args, model_dir):
    if variant == "tutorial":
        return [sys.executable, os.path.join(ROOT, "benchmarks", "tutorial_keras.py"),
                f"--model={model}", f"--epochs={args.epochs}", f"--data_dir={args.data_dir}"]
    command = [sys.executable, "-m", "trainer.main", f"--model={model}",
               f"--epochs={args.epochs}", f"--data_dir={args.data_dir}",
               f"--model_dir={model_dir}", "--download=false"]
    if args.cache_dir:
        command.append(f"--cache_dir={args.cache_dir}")
    if variant == "cli-val-end":
        command.append(f"--check_val_every_n_epoch={args.epochs}")
    return command


def _run(variant, model, args):
    """Runs one process; returns {wall_s, cpu_s, peak_mb, test_accuracy}."""
    work_dir = tempfile.mkdtemp(prefix=f"tutorial-job-{variant}-")
    model_dir = os.path.join(work_dir, "model_dir")
    log_path = os.path.join(work_dir, "output.log")
    try:
        with open(log_path, "w") as log:
            start = time.perf_counter()
            child = subprocess.Popen(_command(variant, model, args, model_dir), cwd=ROOT,
                                     stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - start
        with open(log_path) as log:
            output = log.read()
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"{variant} {model} failed:\n{output[-4000:]}")
        return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                "peak_mb": usage.ru_maxrss / 1024,
                "test_accuracy": _test_accuracy(variant, output, model_dir)}
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _test_accuracy(variant, output, model_dir):
    if variant == "tutorial":
        last = [line for line in output.splitlines() if line.startswith("test_accuracy=")][-1]
        return float(last.split("=", 1)[1])
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f)["test_accuracy"]


def _measure(model, args):
    """Runs the variants `args.runs` times, rotating their order; returns {variant: [results]}."""
    results = {variant: [] for variant in VARIANTS}
    for run in range(args.runs):
        order = VARIANTS[run % len(VARIANTS):] + VARIANTS[:run % len(VARIANTS)]
        for variant in order:
            result = _run(variant, model, args)
            results[variant].append(result)
            print(f"  {model} run {run + 1}/{args.runs} {variant}: wall {result['wall_s']:.1f} s, "
                  f"CPU {result['cpu_s']:.1f} s, peak {result['peak_mb']:,.0f} MB, "
                  f"test accuracy {result['test_accuracy']:.4f}", flush=True)
    return results


def _paired_ratio(results, variant, key):
    ratios = [a[key] / b[key] for a, b in zip(results[variant], results["tutorial"])]
    return statistics.median(ratios), min(ratios), max(ratios)


def _report(model, args, results):
    print(f"\n{model}, {args.epochs} epochs, {args.runs} runs (median; ratio = paired "
          "variant / tutorial, median [range])")
    print(f"{'variant':<13}{'wall s':>8}{'ratio':>19}{'CPU s':>8}{'ratio':>19}{'peak MB':>9}"
          f"{'ratio':>19}  test accuracy per run")
    for variant, runs in results.items():
        row = f"{variant:<13}"
        for key, unit in (("wall_s", ".1f"), ("cpu_s", ".1f"), ("peak_mb", ",.0f")):
            median = statistics.median(r[key] for r in runs)
            ratio = "{:.2f} [{:.2f}-{:.2f}]".format(*_paired_ratio(results, variant, key))
            row += f"{median:>{8 if key != 'peak_mb' else 9}{unit}}{ratio:>19}"
        accuracies = ", ".join(f"{r['test_accuracy']:.4f}" for r in runs)
        print(f"{row}  {accuracies}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="sequential,functional")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data_dir", required=True, help="a prepared TFDS directory")
    parser.add_argument("--cache", choices=("warm", "none"), default="warm",
                        help="warm: CLI runs load a decoded cache filled before timing; none: "
                             "every CLI run decodes")
    args = parser.parse_args()
    args.data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    args.cache_dir = None
    if args.cache == "warm":
        args.cache_dir = tempfile.mkdtemp(prefix="tutorial-job-cache-")
    try:
        if args.cache_dir:
            _warm_cache(args)
        ratios = {}
        for model in args.models.split(","):
            results = _measure(model, args)
            _report(model, args, results)
            ratios[model] = {variant: _paired_ratio(results, variant, "wall_s")[0]
                             for variant in ("cli", "cli-val-end")}
    finally:
        if args.cache_dir:
            shutil.rmtree(args.cache_dir, ignore_errors=True)
    print("\nwall_ratio_vs_tutorial_val_at_end "
          + " ".join(f"{model}={ratio['cli-val-end']:.2f}" for model, ratio in ratios.items()))
    print("wall_ratio_vs_tutorial "
          + " ".join(f"{model}={ratio['cli']:.2f}" for model, ratio in ratios.items()))


def _warm_cache(args):
    """An untimed one-step CLI run that decodes the train and test splits into the cache."""
    warm_cache(lambda model_dir: [
        sys.executable, "-m", "trainer.main", "--model=sequential", "--epochs=1",
        "--limit_train_batches=1", "--limit_val_batches=1", "--limit_test_batches=1",
        f"--data_dir={args.data_dir}", "--download=false", f"--model_dir={model_dir}",
        f"--cache_dir={args.cache_dir}"])


def warm_cache(command_for):
    """Runs `command_for(model_dir)`, a short CLI run that fills a --cache_dir, untimed, in a
    scratch model_dir; exits with its output if it fails. benchmarks/time_to_accuracy.py uses
    it too."""
    work_dir = tempfile.mkdtemp(prefix="warm-cache-")
    try:
        start = time.perf_counter()
        result = subprocess.run(command_for(os.path.join(work_dir, "model_dir")), cwd=ROOT,
                                capture_output=True, text=True)
        if result.returncode:
            sys.exit(f"warming the cache failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        print(f"decoded cache warmed in {time.perf_counter() - start:.1f} s (untimed)", flush=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
