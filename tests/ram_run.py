"""Whole command-line runs on TensorFlow's in-memory file system, which stands in for an object
store: `python tests/ram_run.py NUM_EXAMPLES FLAGS...`.

ram:// lives as long as its process, so everything happens in this one process, through
`trainer.main.run`: the run with FLAGS, then the evaluator task on its run directory, then the same
command with one more epoch (it must resume). Prints one JSON line: every file under ram:// after
each step, and the results.
"""

import json
import sys

import tensorflow as tf
import tensorflow_datasets as tfds

from trainer import main as trainer_main


def _files() -> list[str]:
    return sorted(f"{directory.rstrip('/')}/{name}"
                  for directory, _, names in tf.io.gfile.walk("ram://") for name in names)


def main():
    num_examples, flags = int(sys.argv[1]), sys.argv[2:]
    report = {}
    with tfds.testing.mock_data(num_examples=num_examples):
        report["first"] = trainer_main.run(["trainer.main", *flags])
        report["after_first"] = _files()
        report["evaluator"] = trainer_main.run(
            ["trainer.main", *flags, "--evaluate_checkpoints", "--evaluator_timeout_s=5"])
        report["again"] = trainer_main.run(["trainer.main", *flags, "--epochs=3"])
        report["after_again"] = _files()
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
