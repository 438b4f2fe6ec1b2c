"""Runs side by side, for people without a tracker: `python -m trainer.runs runs/*`.

One table from the files every run writes into its model_dir, one row per run:

    run        learning_rate  weight_decay  val_accuracy  val_loss  test_accuracy  ...  steps  wall
    runs/a     0.0003         0.0           0.6780        0.9512    0.6780         ...  7810   2:30
    runs/b     0.001          0.01          0.7102        0.8731    0.7102         ...  7810   2:41

    run                 the run's directory, as given
    <flag> ...          the flags whose values differ between the runs (flags.txt; `-`: not set)
    val_* test_* ...    the final validation and test metrics (results.json)
    steps               optimizer steps trained (results.json; for a run without results yet,
                        the step of its latest checkpoint)
    wall                `fit`'s wall time (timings.json), h:mm:ss
    end                 why training ended (results.json's stop_reason); `unfinished`: no
                        results.json yet (still training, or stopped before the end)
"""

import dataclasses
import json
import os
import re

from trainer.cli import run_files

MISSING = "-"
_STAGES = ("val_", "test_", "live_test_")  # The metric columns, in this order.


class NotARunError(ValueError):
    """A path that holds no run: why, in words."""


@dataclasses.dataclass(frozen=True)
class Run:
    """What the table shows of one run directory."""

    path: str
    flags: dict[str, str]
    results: dict
    steps: int | None
    wall_time_s: float | None


def read_run(path: str) -> Run:
    """Reads a run directory's flags.txt, results.json, timings.json and latest checkpoint.

    Raises:
        NotARunError: if `path` is not a directory, or has no flags.txt (every run writes one
            before it trains).
    """
    if not os.path.isdir(path):
        raise NotARunError("not a directory" if os.path.exists(path) else "no such directory")
    flagfile = os.path.join(path, run_files.FLAGFILE)
    if not os.path.isfile(flagfile):
        raise NotARunError(f"not a run directory (no {run_files.FLAGFILE})")
    with open(flagfile) as f:
        flags = run_files.parse_flags(f.read())
    results = _json(os.path.join(path, "results.json")) or {}
    timings = _json(os.path.join(path, "timings.json")) or {}
    steps = results.get("steps", _latest_checkpoint_step(os.path.join(path, "checkpoints")))
    return Run(path=path, flags=flags, results=results, steps=steps,
               wall_time_s=timings.get("wall_time_s"))


def table(runs: list[Run]) -> str:
    """The runs as an aligned text table: differing flags, final metrics, steps, wall, end."""
    flag_names = differing_flags(runs)
    metric_names = _in_order_of_appearance(name for stage in _STAGES for run in runs
                                           for name in run.results if name.startswith(stage))
    header = ["run", *flag_names, *metric_names, "steps", "wall", "end"]
    rows = [[run.path, *(run.flags.get(name, MISSING) for name in flag_names),
             *(_number(run.results, name) for name in metric_names),
             MISSING if run.steps is None else str(run.steps), _duration(run.wall_time_s),
             run.results.get("stop_reason", "unfinished")] for run in runs]
    numeric = {index for index, name in enumerate(header) if name in metric_names
               or name in ("steps", "wall")}
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) if i in numeric else cell.ljust(width)
                               for i, (cell, width) in enumerate(zip(row, widths))).rstrip()
                     for row in [header, *rows])


def differing_flags(runs: list[Run]) -> list[str]:
    """The flags whose values are not the same in every run (a flag one run lacks differs), in
    the order of the first run's flags.txt, then of the others'."""
    names = _in_order_of_appearance(name for run in runs for name in run.flags)
    return [name for name in names if len({run.flags.get(name) for run in runs}) > 1]


def _in_order_of_appearance(names) -> list[str]:
    return list(dict.fromkeys(names))


def _json(path: str):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _latest_checkpoint_step(directory: str) -> int | None:
    """The step of `directory`'s latest checkpoint, read from TensorFlow's `checkpoint` index
    file (`model_checkpoint_path: "ckpt-40"`), or None without one."""
    index = os.path.join(directory, "checkpoint")
    if not os.path.isfile(index):
        return None
    with open(index) as f:
        match = re.search(r'^model_checkpoint_path: ".*?(\d+)"$', f.read(), re.MULTILINE)
    return int(match.group(1)) if match else None


def _number(results: dict, name: str) -> str:
    value = results.get(name)
    if value is None:  # Absent, or null in results.json: NaN or Inf, listed under "nonfinite".
        return "nonfinite" if name in results.get("nonfinite", ()) else MISSING
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"
