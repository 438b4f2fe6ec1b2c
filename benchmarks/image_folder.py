"""An image folder against the TFDS source: CIFAR-10 as 60,000 PNG files vs its TFDS records.

    python benchmarks/image_folder.py --data_dir=~/tensorflow_datasets --folder=/tmp/cifar10-png
        [--model=sequential] [--runs=2] [--epochs=2]

First, unless `--folder` already holds it, the prepared CIFAR-10 of `--data_dir` is written out
as an image folder with split folders, the PNG bytes TFDS stores copied unchanged:

    <folder>/train/<class>/<index>.png    50,000 files
    <folder>/test/<class>/<index>.png     10,000 files

Then each run trains `python -m trainer.main` once on each source, one after the other (the order
rotated from run to run, so that a slow phase of a shared machine does not always hit the same
one), with the same flags: `--train_split=train --val_split=test --test_split=test`, no
`--cache_dir`, so both decode every image in epoch 1. Read from each run's history.json: the
training images/s of epoch 1 (reads and decodes the files, fills the in-memory cache) and of the
later epochs (from the cache); and the process's wall time, which includes the image folder's
check of every file before training. Ratios are paired (folder / TFDS within one run); the
medians over runs are printed last:

    folder_vs_tfds epoch1=<x> later=<y>
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("tfds", "folder")


def export_cifar10(data_dir: str, folder: str) -> None:
    """Writes CIFAR-10's PNG bytes to <folder>/<split>/<class>/<index>.png (a marker file, written
    last, says the export is complete)."""
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return
    import tensorflow as tf  # Only here: the parent process of the timed runs stays small.
    import tensorflow_datasets as tfds
    builder = tfds.builder("cifar10", data_dir=os.path.expanduser(data_dir))
    names = builder.info.features["label"].names
    start = time.perf_counter()
    for split in ("train", "test"):
        for name in names:
            os.makedirs(os.path.join(folder, split, name), exist_ok=True)
        examples = builder.as_dataset(split=split, shuffle_files=False,
                                      decoders={"image": tfds.decode.SkipDecoding()})
        for index, example in enumerate(examples):
            label = names[int(example["label"])]
            tf.io.write_file(os.path.join(folder, split, label, f"{index:05d}.png"),
                             example["image"])
    with open(done, "w") as f:
        f.write("cifar10\n")
    print(f"exported cifar10 to {folder} in {time.perf_counter() - start:.0f} s", flush=True)


def _run(source, args):
    """Trains once on `source`; returns {epoch1, later (img/s), wall_s}."""
    model_dir = tempfile.mkdtemp(prefix=f"image-folder-bench-{source}-")
    dataset = args.folder if source == "folder" else "cifar10"
    command = [sys.executable, "-m", "trainer.main", f"--dataset={dataset}",
               f"--data_dir={args.data_dir}", "--download=false", f"--model={args.model}",
               f"--epochs={args.epochs}", "--train_split=train", "--val_split=test",
               "--test_split=test", f"--model_dir={model_dir}", "--progress_bar=false",
               "--model_summary=false"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    wall = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{source} failed:\n{result.stderr[-4000:]}")
    with open(os.path.join(model_dir, "history.json")) as f:
        speeds = [entry["train_images_per_s"] for entry in json.load(f)]
    return {"epoch1": speeds[0], "later": statistics.median(speeds[1:]), "wall_s": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True, help="a TFDS data_dir with cifar10 prepared")
    parser.add_argument("--folder", required=True, help="where the image folder is (or goes)")
    parser.add_argument("--model", default="sequential")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: epoch 1 and the later ones are measured apart")
    export_cifar10(args.data_dir, args.folder)
    ratios = {"epoch1": [], "later": []}
    for run in range(args.runs):
        order = SOURCES if run % 2 == 0 else SOURCES[::-1]
        measured = {source: _run(source, args) for source in order}
        for what in ratios:
            ratios[what].append(measured["folder"][what] / measured["tfds"][what])
        for source in SOURCES:
            m = measured[source]
            print(f"run {run + 1} {source:6s}: epoch 1 {m['epoch1']:,.0f} img/s | later "
                  f"{m['later']:,.0f} img/s | wall {m['wall_s']:.0f} s", flush=True)
        print(f"run {run + 1} folder / tfds: epoch 1 {ratios['epoch1'][-1]:.2f} | later "
              f"{ratios['later'][-1]:.2f}", flush=True)
    print(f"folder_vs_tfds epoch1={statistics.median(ratios['epoch1']):.2f} "
          f"later={statistics.median(ratios['later']):.2f}")


if __name__ == "__main__":
    main()
