"""The command line's helpers; the commands themselves are trainer/main.py (`python -m
trainer.main`) and trainer/runs.py (`python -m trainer.runs runs/*`).

- `explain.py`: `--explain`, the resolved plan of a run, in words.
- `selftest.py`: `--selftest`, proof that this strategy's replicas train like one device.
- `quiet.py`: the console shows the run's own lines, not TensorFlow's internals.
- `evaluator.py`: the evaluator task (`--evaluate_checkpoints`), which validates a run's
  checkpoints as they appear.
- `run_files.py`: the files a run writes besides checkpoints: flags.txt and its results; what
  of them goes to a tracker.
- `runs_table.py`: runs side by side in one table, from those files (`python -m trainer.runs`).
"""
