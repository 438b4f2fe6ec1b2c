"""Several `python -m trainer.main` runs in one process, with TFDS mocked:

    python tests/main_runs.py NUM_EXAMPLES FLAGS... [--then FLAGS...]

Starting TensorFlow costs a process several seconds, and runs on one device can share a process
(`trainer.main.run`). Prints one JSON line per run: {"results": {...}} for a run that ended well,
{"status": N, "line": "..."} with the exit status and the one line the command would have ended
with otherwise (trainer/cli/job.py: `ending`). A run that starts a distributed strategy must be
the last of its process.
"""

import json
import sys

import tensorflow_datasets as tfds

from trainer import main as trainer_main
from trainer.cli import job


def main():
    num_examples, runs, current = int(sys.argv[1]), [], []
    for arg in sys.argv[2:]:
        if arg == "--then":
            runs.append(current)
            current = []
        else:
            current.append(arg)
    with tfds.testing.mock_data(num_examples=num_examples):
        for flags in [*runs, current]:
            try:
                outcome = {"results": trainer_main.run(["trainer.main", *flags])}
            except Exception as error:  # pylint: disable=broad-except
                ended = job.ending(error, trainer_main._latest_checkpoint)  # pylint: disable=protected-access
                if ended is None:
                    raise
                outcome = {"status": ended[0], "line": ended[1]}
            print(json.dumps(outcome, default=str), flush=True)


if __name__ == "__main__":
    main()
