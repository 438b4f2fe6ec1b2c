"""`python -m trainer.runs runs/*`: one table of runs side by side, from the files they wrote."""

import os

from absl import app
import pytest

from trainer import files
from trainer import runs
from trainer.cli import run_files

COMMON = "--model=sequential\n--batch_size=64\n--epochs=10\n"


def _run(directory, flags, results=None, wall_time_s=None, checkpoint_step=None):
    """A run directory as a command-line run leaves it: flags.txt, and the result files once
    it has finished (or a latest checkpoint while it is not)."""
    os.makedirs(directory)
    run_files.write_flagfile(str(directory), COMMON + flags)
    if results is not None:
        files.write_json(os.path.join(directory, "results.json"), results)
        files.write_json(os.path.join(directory, "timings.json"), {"wall_time_s": wall_time_s})
    if checkpoint_step is not None:
        os.makedirs(os.path.join(directory, "checkpoints"))
        with open(os.path.join(directory, "checkpoints", "checkpoint"), "w") as f:
            f.write(f'model_checkpoint_path: "ckpt-{checkpoint_step}"\n'
                    f'all_model_checkpoint_paths: "ckpt-{checkpoint_step}"\n')
    return str(directory)


def _table(capsys, paths):
    runs.main(["trainer.runs", *paths])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    header = lines[0].split()
    return header, {row.split()[0]: dict(zip(header, row.split())) for row in lines[1:]}, err


def test_the_table_shows_the_flags_that_differ_and_the_final_metrics(tmp_path, capsys):
    first = _run(tmp_path / "a", "--learning_rate=3e-4\n--noaugment", results={
        "val_loss": 0.95, "val_accuracy": 0.678, "test_loss": 0.96, "test_accuracy": 0.6771,
        "steps": 7810, "epochs": 10, "stop_reason": "epochs"}, wall_time_s=150.4)
    second = _run(tmp_path / "b", "--learning_rate=1e-3\n--augment", results={
        "val_loss": None, "val_accuracy": 0.1, "steps": 420, "epochs": 10,
        "stop_reason": "diverged", "nonfinite": ["val_loss"]}, wall_time_s=3725.0)
    unfinished = _run(tmp_path / "c", "--learning_rate=3e-4\n--noaugment\n--dropout=0.1",
                      checkpoint_step=1562)
    header, rows, err = _table(capsys, [first, second, unfinished])
    assert header == ["run", "learning_rate", "augment", "dropout", "val_loss", "val_accuracy",
                      "test_loss", "test_accuracy", "steps", "wall", "end"]
    assert rows[first] == {"run": first, "learning_rate": "3e-4", "augment": "false",
                           "dropout": "-", "val_loss": "0.9500", "val_accuracy": "0.6780",
                           "test_loss": "0.9600", "test_accuracy": "0.6771", "steps": "7810",
                           "wall": "2:30", "end": "epochs"}
    assert (rows[second]["val_loss"], rows[second]["test_loss"]) == ("nonfinite", "-")
    assert (rows[second]["wall"], rows[second]["end"]) == ("1:02:05", "diverged")
    assert rows[unfinished]["dropout"] == "0.1" and rows[unfinished]["steps"] == "1562"
    assert (rows[unfinished]["val_accuracy"], rows[unfinished]["end"]) == ("-", "unfinished")
    assert err == ""


def test_a_path_that_is_not_a_run_gets_one_line_and_is_left_out(tmp_path, capsys):
    run = _run(tmp_path / "a", "--learning_rate=3e-4", results={"steps": 10}, wall_time_s=1.0)
    os.makedirs(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("a file")
    paths = [str(tmp_path / "empty"), str(tmp_path / "missing"), str(tmp_path / "notes.txt")]
    header, rows, err = _table(capsys, [run, *paths])
    assert list(rows) == [run] and "learning_rate" not in header  # One run: no flag differs.
    assert err.splitlines() == [f"{paths[0]}: not a run directory (no flags.txt), left out",
                                f"{paths[1]}: no such directory, left out",
                                f"{paths[2]}: not a directory, left out"]
    with pytest.raises(SystemExit, match="error: none of the paths is a run directory"):
        runs.main(["trainer.runs", *paths])
    with pytest.raises(app.UsageError, match="name the runs' directories"):
        runs.main(["trainer.runs"])
