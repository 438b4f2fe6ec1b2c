"""Runs side by side: `python -m trainer.runs runs/*` prints one table of the given runs.

For each run directory: the flags that differ between the runs, the final validation and test
metrics, the optimizer steps, the wall time and why training ended, read from the files every run
writes (flags.txt, results.json, timings.json; trainer/cli/runs_table.py). A path that is not a
run gets one line on stderr saying why, and is left out.
"""

import sys

from absl import app

from trainer.cli import runs_table


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("name the runs' directories, e.g. python -m trainer.runs runs/*")
    runs = []
    for path in paths:
        try:
            runs.append(runs_table.read_run(path))
        except runs_table.NotARunError as reason:
            print(f"{path}: {reason}, left out", file=sys.stderr)
    if not runs:
        sys.exit("error: none of the paths is a run directory (one with flags.txt)")
    print(runs_table.table(runs))


if __name__ == "__main__":
    app.run(main)
