"""`python -m trainer.main` with tensorflow-datasets mocked: usage `mocked_main.py NUM_EXAMPLES FLAGS...`.

Every split of every dataset yields NUM_EXAMPLES random examples, nothing is downloaded.
"""

import runpy
import sys

import tensorflow_datasets as tfds

if __name__ == "__main__":
    num_examples = int(sys.argv[1])
    sys.argv = ["trainer.main", *sys.argv[2:]]
    with tfds.testing.mock_data(num_examples=num_examples):
        runpy.run_module("trainer.main", run_name="__main__", alter_sys=True)
