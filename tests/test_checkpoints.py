"""Checkpoints: a run killed at any moment and restarted ends bit-identical to an uninterrupted one."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, TESTS, run_main_mocked, subprocess_env

NUM_EXAMPLES = 640  # 20 steps of 32 per epoch.
FLAGS = ["--model=sequential", "--epochs=3", "--batch_size=32", "--deterministic",
         "--checkpoint_every_steps=3", "--steps_per_loop=1", "--test_split="]


def _command(model_dir, extra=()):
    return [sys.executable, os.path.join(TESTS, "mocked_main.py"), str(NUM_EXAMPLES), *FLAGS,
            f"--model_dir={model_dir}", *extra]


def _start(model_dir, extra=()):
    return subprocess.Popen(_command(model_dir, extra), cwd=ROOT, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _latest_step(model_dir):
    """The step of the checkpoint the "latest" pointer names (0 if none): files of a checkpoint
    being written can exist before the pointer moves to it."""
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _wait_for_checkpoint_after(model_dir, step, process, timeout=120):
    """Waits until a checkpoint newer than `step` exists; returns its step."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _latest_step(model_dir) > step:
            return _latest_step(model_dir)
        if process.poll() is not None:
            raise AssertionError(f"the run ended before a checkpoint after step {step}:\n"
                                 + process.stderr.read()[-3000:])
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def _final_state(model_dir):
    """Every tensor of the latest checkpoint (but the save counter), and results.json."""
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    tensors = {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
               if "save_counter" not in name and name != "_CHECKPOINTABLE_OBJECT_GRAPH"}
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    return path, tensors, results


def _kill_twice_and_finish(model_dir, extra=()):
    """SIGKILLs the run right after its first checkpoint, restarts it, kills it again after a
    newer checkpoint, and lets a third start finish. Returns the resumed-from steps."""
    resumed = []
    for _ in range(2):
        process = _start(model_dir, extra)
        _wait_for_checkpoint_after(model_dir, _latest_step(model_dir), process)
        process.kill()  # SIGKILL: no chance to clean up.
        process.wait()
        log = process.stderr.read()
        resumed += [int(line.split("step ")[1].split(",")[0]) for line in log.splitlines()
                    if "resumed from" in line]
    final = subprocess.run(_command(model_dir, extra), cwd=ROOT, env=subprocess_env(),
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    resumed += [int(line.split("step ")[1].split(",")[0]) for line in final.stderr.splitlines()
                if "resumed from" in line]
    return resumed


@pytest.mark.parametrize("devices", [[], ["--strategy=mirrored", "--cpu_devices=2"]],
                         ids=["one_device", "two_replicas"])
def test_killed_and_restarted_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, devices):
    clean = run_main_mocked([*FLAGS, f"--model_dir={tmp_path / 'clean'}", *devices],
                            num_examples=NUM_EXAMPLES)
    assert clean.returncode == 0, clean.stderr[-3000:]
    resumed = _kill_twice_and_finish(str(tmp_path / "killed"), devices)
    # Two restarts, each from a checkpoint before the end (60 steps), at least one mid-epoch.
    assert len(resumed) == 2 and all(0 < step < 60 for step in resumed), resumed
    assert any(step % 20 for step in resumed), resumed
    clean_path, clean_tensors, clean_results = _final_state(str(tmp_path / "clean"))
    killed_path, killed_tensors, killed_results = _final_state(str(tmp_path / "killed"))
    assert clean_path.endswith("ckpt-60") and killed_path.endswith("ckpt-60")
    assert clean_tensors.keys() == killed_tensors.keys()
    for name, value in clean_tensors.items():
        np.testing.assert_array_equal(value, killed_tensors[name], err_msg=name)
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "steps"):
        assert killed_results[key] == clean_results[key], key


def test_sigterm_saves_a_checkpoint_and_exits_non_zero(tmp_path):
    model_dir = str(tmp_path / "run")
    process = _start(model_dir)
    _wait_for_checkpoint_after(model_dir, 0, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    message = [line for line in stderr.splitlines() if line.startswith("stopped: ")]
    assert message and "interrupted by SIGTERM at step" in message[0]
    step = int(message[0].split("at step ")[1].split(";")[0])
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith(f"ckpt-{step}")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("finished") / "run")
    result = run_main_mocked([*FLAGS, "--epochs=1", f"--model_dir={model_dir}"],
                             num_examples=NUM_EXAMPLES)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def test_changed_settings_are_an_error_not_a_mixed_run(finished_run):
    result = run_main_mocked([*FLAGS, "--epochs=1", "--batch_size=16",
                              f"--model_dir={finished_run}"], num_examples=NUM_EXAMPLES)
    assert result.returncode != 0
    assert "holds a run with other settings (batch_size: 32 there, 16 now)" in result.stderr


def test_a_corrupted_checkpoint_is_an_error_naming_it(finished_run, tmp_path):
    model_dir = str(tmp_path / "copy")
    shutil.copytree(finished_run, model_dir)
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    data_file = glob.glob(latest + ".data-*")[0]
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    result = run_main_mocked([*FLAGS, "--epochs=2", f"--model_dir={model_dir}"],
                             num_examples=NUM_EXAMPLES)
    assert result.returncode != 0
    assert f"cannot restore checkpoint {latest}" in result.stderr


def test_fresh_start_sets_the_old_run_aside(finished_run, tmp_path):
    model_dir = str(tmp_path / "copy")
    shutil.copytree(finished_run, model_dir)
    result = run_main_mocked([*FLAGS, "--epochs=1", "--batch_size=16", "--fresh_start",
                              f"--model_dir={model_dir}"], num_examples=NUM_EXAMPLES)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" not in result.stderr
    assert os.path.exists(os.path.join(model_dir + ".old-1", "results.json"))
    with open(os.path.join(model_dir, "results.json")) as f:
        assert json.load(f)["global_batch_size"] == 16
