"""Time to accuracy: the tutorial's script against the command line with a fast recipe, whole runs.

    python benchmarks/time_to_accuracy.py --data_dir=~/tensorflow_datasets [--seeds=0,1,2]
        [--recipe=recipes/functional_fast.flags] [--tutorial_epochs=10] [--cache=warm|none]
        [--recipe_flags="--epochs=6 ..."]

Each run (one per seed) starts two programs one after the other, the order alternating from run
to run so that a slow phase of a shared machine does not always hit the same one:

    tutorial  python benchmarks/tutorial_keras.py --model=functional --epochs=10: the tutorial's
              own recipe (Adam 3e-4, batch 64, no validation), then the test split, once
    recipe    python -m trainer.main --flagfile=<recipe> --train_split=train --val_split=''
              --seed=<seed>: the recipe's fixed number of epochs on all of `train`, no
              validation (nothing is decided during the run), then the test split, once

Neither program takes any decision on test data: each trains for its fixed epochs and reads the
test split once, at the end. The recipe's settings were chosen on a validation slice of `train`
(docs/benchmarks.md says how). Measured per process, from the parent: wall time (start to exit)
and the test accuracy it reports (the tutorial's last line, the run's results.json).

--cache=warm (default): the recipe runs pass --cache_dir=<a directory of this benchmark>, filled
before the timed runs by an untimed one-step run, as any second run of a command would find it;
--cache=none: every recipe run decodes CIFAR-10's PNG records (the tutorial always does).

The last line is `time_to_accuracy functional tutorial_s=<T> recipe_s=<t> recipe_accuracy=<a>
ratio=<t/T>`, with the medians over the runs (T, t, a) and the median of the runs' paired
ratios (recipe wall / tutorial wall within one run).
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import tutorial_job  # pylint: disable=wrong-import-position  # Its warm_cache, shared.
TARGET = 0.80  # The test accuracy the recipe aims at, in at most half the tutorial's wall time.


def _tutorial_command(args):
    return [sys.executable, os.path.join(ROOT, "benchmarks", "tutorial_keras.py"),
            "--model=functional", f"--epochs={args.tutorial_epochs}",
            f"--data_dir={args.data_dir}"]


def _recipe_command(args, seed, model_dir):
    command = [sys.executable, "-m", "trainer.main", f"--flagfile={args.recipe}",
               "--train_split=train", "--val_split=", f"--seed={seed}",
               f"--data_dir={args.data_dir}", "--download=false", f"--model_dir={model_dir}",
               "--progress_bar=false"]
    if args.cache_dir:
        command.append(f"--cache_dir={args.cache_dir}")
    return command + shlex.split(args.recipe_flags)  # Last: they override the recipe's.


def _run(contender, args, seed):
    """Runs one process to its end; returns its wall time and test accuracy."""
    work_dir = tempfile.mkdtemp(prefix=f"time-to-accuracy-{contender}-")
    model_dir = os.path.join(work_dir, "model_dir")
    command = (_tutorial_command(args) if contender == "tutorial"
               else _recipe_command(args, seed, model_dir))
    try:
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode:
            sys.exit(f"{contender} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")
        return {"wall_s": wall, "test_accuracy": _test_accuracy(contender, result, model_dir)}
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _test_accuracy(contender, result, model_dir):
    if contender == "tutorial":
        last = [line for line in result.stdout.splitlines() if line.startswith("test_accuracy=")]
        return float(last[-1].split("=", 1)[1])
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f)["test_accuracy"]


def _warm_cache(args):
    """An untimed one-step run of the recipe that decodes the train and test splits into the
    cache (the cache is keyed by split: it must read the splits the timed runs read)."""
    tutorial_job.warm_cache(lambda model_dir: _recipe_command(args, 0, model_dir) + [
        "--epochs=1", "--limit_train_batches=1", "--limit_test_batches=1", "--warmup_steps=0"])


def _measure(args):
    """Runs tutorial and recipe once per seed, alternating which goes first; returns the pairs."""
    pairs = []
    for index, seed in enumerate(args.seeds):
        order = ("tutorial", "recipe") if index % 2 == 0 else ("recipe", "tutorial")
        pair = {}
        for contender in order:
            pair[contender] = _run(contender, args, seed)
            print(f"  run {index + 1}/{len(args.seeds)} (seed {seed}) {contender}: wall "
                  f"{pair[contender]['wall_s']:.1f} s, test accuracy "
                  f"{pair[contender]['test_accuracy']:.4f}", flush=True)
        pairs.append(pair)
    return pairs


def _report(args, pairs):
    ratios = [pair["recipe"]["wall_s"] / pair["tutorial"]["wall_s"] for pair in pairs]
    print(f"\n{'seed':>5}{'tutorial s':>12}{'accuracy':>10}{'recipe s':>10}{'accuracy':>10}"
          f"{'ratio':>8}  0.80 within 0.5x")
    for seed, pair, ratio in zip(args.seeds, pairs, ratios):
        tutorial, recipe = pair["tutorial"], pair["recipe"]
        reached = recipe["test_accuracy"] >= TARGET and ratio <= 0.5
        print(f"{seed:>5}{tutorial['wall_s']:>12.1f}{tutorial['test_accuracy']:>10.4f}"
              f"{recipe['wall_s']:>10.1f}{recipe['test_accuracy']:>10.4f}{ratio:>8.3f}  "
              f"{'yes' if reached else 'no'}")
    reached = sum(pair["recipe"]["test_accuracy"] >= TARGET and ratio <= 0.5
                  for pair, ratio in zip(pairs, ratios))
    print(f"{reached} of {len(pairs)} runs reached test accuracy {TARGET} in at most half the "
          "tutorial's wall time")

    def median(contender, key):
        return statistics.median(pair[contender][key] for pair in pairs)

    print(f"time_to_accuracy functional tutorial_s={median('tutorial', 'wall_s'):.1f} "
          f"recipe_s={median('recipe', 'wall_s'):.1f} "
          f"recipe_accuracy={median('recipe', 'test_accuracy'):.4f} "
          f"ratio={statistics.median(ratios):.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True, help="a prepared TFDS directory")
    parser.add_argument("--seeds", default="0,1,2",
                        help="one run (tutorial and recipe) per seed; the recipe's --seed")
    parser.add_argument("--recipe", default=os.path.join("recipes", "functional_fast.flags"),
                        help="the recipe's flagfile, relative to the repository or absolute")
    parser.add_argument("--recipe_flags", default="",
                        help="more flags for the recipe's runs, after the flagfile's (e.g. an "
                             "ablation: '--notta_flip')")
    parser.add_argument("--tutorial_epochs", type=int, default=10)
    parser.add_argument("--cache", choices=("warm", "none"), default="warm",
                        help="warm: recipe runs load a decoded cache filled before timing; "
                             "none: every recipe run decodes")
    args = parser.parse_args()
    args.data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    args.recipe = os.path.join(ROOT, args.recipe)
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    args.cache_dir = tempfile.mkdtemp(prefix="time-to-accuracy-cache-") if args.cache == "warm" \
        else None
    try:
        if args.cache_dir:
            _warm_cache(args)
        _report(args, _measure(args))
    finally:
        if args.cache_dir:
            shutil.rmtree(args.cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
