"""Checkpoints: SIGTERM, settings checks, damaged checkpoints, the best models, the export.

Kills at every point of a run and exact resume: tests/test_resume.py.
"""

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

import layers
import trainer
from conftest import ROOT, TESTS, run_main_mocked, subprocess_env
from trainer import checkpointing
from trainer import model_weights
from trainer.vision import export

NUM_EXAMPLES = 640  # 20 steps of 32 per epoch.
# Dropout and augmentation make every step draw random numbers: resume must redraw the same ones.
FLAGS = ["--model=sequential", "--epochs=3", "--batch_size=32", "--deterministic",
         "--checkpoint_every_steps=3", "--steps_per_loop=1", "--test_split=", "--dropout=0.3",
         "--augment"]


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


def test_a_damaged_newest_checkpoint_is_named_and_the_run_resumes_from_the_one_before(
        finished_run, tmp_path):
    model_dir = str(tmp_path / "copy")
    shutil.copytree(finished_run, model_dir)
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert latest.endswith("ckpt-20")  # Saved every 3 steps and at the epoch's end, step 20.
    data_file = glob.glob(latest + ".data-*")[0]
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    result = run_main_mocked([*FLAGS, "--epochs=2", f"--model_dir={model_dir}"],
                             num_examples=NUM_EXAMPLES)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"cannot restore checkpoint {latest}" in result.stderr
    assert "resumed from ckpt-18 instead, the newest checkpoint that restores" in result.stderr
    with open(os.path.join(model_dir, "results.json")) as f:
        assert json.load(f)["steps"] == 40  # Steps 19 and 20 trained again, then epoch 2.


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


def test_best_models_keep_the_top_k_and_survive_a_restart(tmp_path):
    module = tf.keras.Sequential([tf.keras.layers.Dense(2)])
    module(tf.zeros([1, 3]))
    model = model_weights.ModelWeights(module)
    best = checkpointing.BestModels(str(tmp_path), monitor="val_accuracy", top_k=2)
    kept = [best.update(model, epoch, 10 * epoch, {"val_accuracy": score})
            for epoch, score in enumerate([0.5, 0.7, 0.6, 0.8, 0.1])]
    assert kept == [True, True, True, True, False]
    assert [(e["epoch"], e["score"]) for e in best.ranking] == [(4, 0.8), (2, 0.7)]
    assert sorted(p.name.split(".")[0] for p in tmp_path.glob("step-*.index")) == ["step-10", "step-30"]
    again = checkpointing.BestModels(str(tmp_path), monitor="val_accuracy", top_k=2)
    assert again.ranking == best.ranking
    lowest = checkpointing.BestModels(str(tmp_path / "loss"), monitor="val_loss", top_k=1)
    for epoch, loss in enumerate([0.9, 0.4, 0.6]):
        lowest.update(model, epoch, epoch, {"val_loss": loss})
    assert lowest.best["epoch"] == 2 and lowest.best["score"] == 0.4
    with pytest.raises(ValueError, match=r"monitor \('val_f1'\) is not a logged metric"):
        checkpointing.BestModels(str(tmp_path / "f1"), monitor="val_f1").update(
            model, 0, 0, {"val_loss": 1.0})


def test_exported_model_serves_uint8_images_in_a_fresh_process(tmp_path):
    module = trainer.ImageClassifier(
        layers.build_cnn("functional", input_shape=(32, 32, 3), num_classes=10))
    module(tf.zeros([1, 32, 32, 3]))
    path = export.export_for_serving(module, (32, 32, 3), str(tmp_path / "export"))
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    expected = tf.nn.softmax(module(images.astype(np.float32) / 255.0)).numpy()
    code = ("import numpy as np, tensorflow as tf, sys\n"
            "model = tf.saved_model.load(sys.argv[1])\n"
            "images = tf.constant(np.load(sys.argv[2]))\n"
            "out = model.signatures['serving_default'](images=images)['probabilities']\n"
            "np.save(sys.argv[3], out.numpy())\n")
    result = subprocess.run([sys.executable, "-c", code, path, str(tmp_path / "images.npy"),
                             str(tmp_path / "out.npy")], env=subprocess_env(), cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-5, atol=1e-6)


def test_a_finished_run_ranked_its_epochs_and_exported_the_best(finished_run):
    with open(os.path.join(finished_run, "best", "best.json")) as f:
        best = json.load(f)
    with open(os.path.join(finished_run, "results.json")) as f:
        results = json.load(f)
    assert best["monitor"] == "val_accuracy" and len(best["ranking"]) == 1
    assert best["ranking"][0]["score"] == results["val_accuracy"]
    assert os.path.exists(os.path.join(finished_run, "export", "saved_model.pb"))


def test_dropout_seed_state_is_in_the_checkpoint(tmp_path):
    network = layers.build_cnn("sequential", input_shape=(32, 32, 3), num_classes=3, dropout=0.5)
    network(tf.zeros([1, 32, 32, 3]))
    untracked = checkpointing.untracked_variables(network)
    assert untracked and all("seed_generator" in v.path for v in untracked)
    checkpointer = checkpointing.Checkpointer(str(tmp_path))
    checkpointer.track(network=network, untracked=untracked)
    saved = [name for name, _ in tf.train.list_variables(checkpointer.save(1))]
    assert sum("untracked" in name for name in saved) == len(untracked)


def test_an_unusable_model_dir_is_an_error_naming_it(tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    result = run_main_mocked([*FLAGS, f"--model_dir={not_a_directory}"], num_examples=64)
    assert result.returncode != 0
    assert "error: " in result.stderr and str(not_a_directory) in result.stderr


def test_ckpt_path_resumes_from_the_named_checkpoint(finished_run, tmp_path):
    model_dir = str(tmp_path / "copy")
    shutil.copytree(finished_run, model_dir)
    older = os.path.join(model_dir, "checkpoints", "ckpt-15")
    assert os.path.exists(older + ".index")  # --keep_checkpoints=3 kept steps 15, 18 and 20.
    result = run_main_mocked([*FLAGS, "--epochs=1", f"--ckpt_path={older}",
                              f"--model_dir={model_dir}"], num_examples=NUM_EXAMPLES)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from {older}: step 15, epoch 1 at batch 15" in result.stderr
