"""The run directory survives what users do to it: a deleted or damaged newest checkpoint, a second
process, a copy or a move, a changed monitor, flags added on a resume, damaged JSON files, shared
file modes. In process, on one device; the command-line cases are in test_run_directory_cli.py."""

import json
import logging
import os
import shutil
import stat
import subprocess
import sys

import pytest
import tensorflow as tf

import trainer
from conftest import quadrant_datamodule, tiny_network
from trainer import callbacks
from trainer import checkpointing
from trainer import files
from trainer import precision
from trainer import run_directory
from trainer import schedule


def _fit(model_dir, epochs, caplog=None, **options):
    """Fits the quadrant task with checkpoints in `<model_dir>/checkpoints`; returns the Trainer."""
    tf.keras.utils.set_random_seed(0)
    fitter = trainer.Trainer(epochs=epochs, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0,
                             checkpointer=checkpointing.Checkpointer(
                                 os.path.join(model_dir, "checkpoints")), **options)
    fitter.fit(trainer.ImageClassifier(tiny_network(), learning_rate=1e-2),
               quadrant_datamodule())
    return fitter


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch run: checkpoints at steps 16 and 32."""
    model_dir = str(tmp_path_factory.mktemp("finished") / "run")
    _fit(model_dir, epochs=2)
    return model_dir


def _copy(model_dir, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(model_dir, copy)
    return copy


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_run_whose_newest_checkpoint_is_gone_resumes_from_the_one_before(
        finished, tmp_path, caplog, damage):
    model_dir = _copy(finished, tmp_path)
    newest = os.path.join(model_dir, "checkpoints", "ckpt-32")
    if damage == "deleted":  # The `checkpoint` state file still names it.
        for path in tf.io.gfile.glob(newest + ".*"):
            os.remove(path)
    else:
        data = tf.io.gfile.glob(newest + ".data-*")[0]
        with open(data, "r+b") as f:
            f.truncate(os.path.getsize(data) // 2)
    caplog.set_level(logging.INFO, logger="absl")
    fitter = _fit(model_dir, epochs=3)
    assert "resumed from ckpt-16 instead, the newest checkpoint that restores" in caplog.text
    assert "resumed from " + os.path.join(model_dir, "checkpoints", "ckpt-16") in caplog.text
    assert fitter.global_step == 48 and [e["step"] for e in fitter.history] == [16, 32, 48]


def test_a_run_none_of_whose_checkpoints_restores_never_starts_over_them(finished, tmp_path):
    model_dir = _copy(finished, tmp_path)
    for data in tf.io.gfile.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.data-*")):
        with open(data, "r+b") as f:
            f.truncate(100)
    with pytest.raises(ValueError, match=r"No checkpoint in .* can be restored; --fresh_start"):
        _fit(model_dir, epochs=3)
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == sorted(
        os.listdir(os.path.join(finished, "checkpoints")))  # Nothing overwritten.


def test_ckpt_path_naming_a_directory_says_which_checkpoint_to_name(finished):
    checkpointer = checkpointing.Checkpointer(os.path.join(finished, "checkpoints"))
    directory = os.path.join(finished, "checkpoints")
    with pytest.raises(ValueError, match=r"ckpt_path \(.*checkpoints\) is a directory; pass one "
                                         r"checkpoint, e.g. .*checkpoints/ckpt-32"):
        checkpointer.restore(directory)


def test_a_save_cut_short_leaves_nothing_behind_for_the_next_run(finished, tmp_path):
    model_dir = _copy(finished, tmp_path)
    leftover = os.path.join(model_dir, "checkpoints", "ckpt-48_temp")
    os.makedirs(leftover)
    with open(os.path.join(leftover, "part-00000-of-00001.data-00000-of-00001"), "w") as f:
        f.write("half a checkpoint")
    _fit(model_dir, epochs=2)  # Finished already: it restores, completes and leaves.
    assert not os.path.exists(leftover)


def test_flags_added_on_a_resume_do_not_block_it(finished, tmp_path):
    model_dir = _copy(finished, tmp_path)
    # Clipping and anomaly checks add step bookkeeping (skipped_steps) the checkpoint lacks.
    fitter = _fit(model_dir, epochs=3, gradient_clip_val=1.0, detect_anomaly=True)
    assert fitter.global_step == 48
    # fp16 adds the loss scale too (its variables are float32 as before: the policy changes
    # the computation, not the weights).
    precision.set_precision("16-mixed")
    try:
        assert _fit(model_dir, epochs=4, precision="16-mixed").global_step == 64
    finally:
        precision.set_precision("32")
    # And the reverse: a checkpoint with that bookkeeping resumes in a run without it.
    assert _fit(model_dir, epochs=5).global_step == 80


def test_turning_moving_averages_on_or_off_on_a_resume_is_refused_naming_the_flag(tmp_path):
    run_directory.record_settings(str(tmp_path), {"model": "sequential", "ema_decay": "off"})
    with pytest.raises(ValueError, match=r"other settings \(ema_decay: 'off' there, 'on' now\)"):
        run_directory.check_settings(str(tmp_path), {"model": "sequential", "ema_decay": "on"})
    # A setting an older run_config.json does not hold is not compared.
    run_directory.check_settings(str(tmp_path), {"model": "sequential", "new_setting": 1})


def test_a_copied_run_directory_keeps_its_own_best_weights(tmp_path):
    original = str(tmp_path / "original")
    tf.keras.utils.set_random_seed(0)
    best = checkpointing.BestModels(os.path.join(original, "best"), monitor="val_loss")
    _fit(original, epochs=1, best_models=best)
    copy = str(tmp_path / "copy")
    shutil.move(original, copy)  # Moved: the original's files are gone.
    moved = checkpointing.BestModels(os.path.join(copy, "best"), monitor="val_loss")
    assert moved.path_of(moved.best) == os.path.join(copy, "best", "step-16")
    with open(os.path.join(copy, "best", "best.json")) as f:
        assert json.load(f)["ranking"][0]["path"] == "step-16"  # Relative to best/.


def test_a_resume_with_another_monitor_is_refused_naming_both(tmp_path):
    directory = str(tmp_path / "best")
    files.write_json(os.path.join(directory, "best.json"), {
        "monitor": "val_accuracy", "higher_is_better": True,
        "ranking": [{"epoch": 1, "step": 8, "score": 0.21, "path": "/elsewhere/best/step-8"}]})
    with pytest.raises(ValueError, match=r"monitor \('val_loss', mode min\) differs from the "
                                         r"ranking in .*best.json \('val_accuracy', mode max\)"):
        checkpointing.BestModels(directory, monitor="val_loss")
    kept = checkpointing.BestModels(directory, monitor="val_accuracy")
    assert kept.best["path"] == "step-8"  # An absolute path of an older version: its name.


@pytest.mark.parametrize("name,content", [("best/best.json", '{"monitor": "val_acc'),
                                          ("run_config.json", "")])
def test_a_damaged_json_file_is_named_with_the_way_out(tmp_path, name, content):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"{path} \(.*\) is damaged: it is not valid JSON .*; "
                                         r"to go on, delete"):
        if name == "run_config.json":
            run_directory.check_settings(str(tmp_path), {"model": "sequential"})
        else:
            checkpointing.BestModels(str(tmp_path / "best"))


def test_files_the_run_writes_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        files.write_json(str(tmp_path / "results.json"), {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "results.json").st_mode) == 0o644


def test_validation_happens_when_training_ends_however_long_the_interval():
    plan = schedule.RunSchedule(steps_per_epoch=8, epochs=2, val_check_interval=1000)
    assert [step for step in range(1, 17) if plan.validate_after_loop(step)] == []
    assert not plan.validate_at_epoch_end(0, 8) and plan.validate_at_epoch_end(1, 16)
    divides = schedule.RunSchedule(steps_per_epoch=8, epochs=2, val_check_interval=4)
    assert not divides.validate_at_epoch_end(1, 16)  # Validated there already, once.


def test_early_stopping_without_validation_data_says_so(caplog):
    caplog.set_level(logging.INFO, logger="absl")
    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=1)
    fitter = trainer.Trainer(epochs=1, limit_val_batches=0, callbacks=[stopper],
                             enable_progress_bar=False, enable_model_summary=False)
    fitter.fit(trainer.ImageClassifier(tiny_network(), learning_rate=1e-2), quadrant_datamodule())
    assert "early stopping is off in this run: it watches val_loss" in caplog.text


# ---- The lock: one process per run directory ------------------------------------------------

def test_a_run_directory_in_use_is_refused_naming_the_process(tmp_path):
    model_dir = str(tmp_path / "run")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.makedirs(model_dir)
        lock = run_directory.RunLock(model_dir)
        with lock:  # Taken by this process, then made to look like the other's.
            holder = json.loads(open(lock.path).read())
            holder.update(pid=other.pid, process_start=run_directory._process_start(other.pid))
            with open(lock.path, "w") as f:
                json.dump(holder, f)
            with pytest.raises(ValueError, match=rf"model_dir \({model_dir}\) is in use: process "
                                                 rf"{other.pid} on .* trains there"):
                run_directory.RunLock(model_dir).acquire()
    finally:
        other.kill()
        other.wait()
    # Now that process is gone: its lock is stale and taken over.
    with open(os.path.join(model_dir, run_directory.LOCK), "w") as f:
        json.dump(holder, f)
    with run_directory.RunLock(model_dir):
        assert json.loads(open(lock.path).read())["pid"] == os.getpid()
    assert not os.path.exists(lock.path)  # Released.


def test_a_lock_copied_with_the_run_directory_is_taken_over(tmp_path):
    original = str(tmp_path / "run")
    lock = run_directory.RunLock(original)
    lock.acquire()  # This process holds the original's lock,
    copy = str(tmp_path / "copy")
    shutil.copytree(original, copy)
    with run_directory.RunLock(copy):  # and the copy is another run directory.
        pass
    lock.release()
