"""Runs a script with tensorflow-datasets mocked: `mocked_example.py NUM_EXAMPLES SCRIPT FLAGS...`.

Every split of every dataset yields NUM_EXAMPLES random examples; nothing is downloaded or read.
"""

import runpy
import sys

import tensorflow_datasets as tfds

if __name__ == "__main__":
    num_examples, script = int(sys.argv[1]), sys.argv[2]
    sys.argv = [script, *sys.argv[3:]]
    with tfds.testing.mock_data(num_examples=num_examples):
        runpy.run_path(script, run_name="__main__")
