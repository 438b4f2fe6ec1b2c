"""The run directory from the command line: a second command on it, a moved copy, a run that fails
before it starts, a full disk, a second Ctrl-C during a save, workers given different flags."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import local_cluster
from conftest import ROOT, TESTS, run_main_mocked, start_main_mocked, subprocess_env

NUM_EXAMPLES = 64  # mocked TFDS: 2 steps of 32 per epoch
FLAGS = ["--model=sequential", "--batch_size=32", "--num_sanity_val_steps=0",
         "--tensorboard=false", "--progress_bar=false", "--model_summary=false"]


def _main(model_dir, *flags, env=None):
    return run_main_mocked([*FLAGS, f"--model_dir={model_dir}", *flags],
                           num_examples=NUM_EXAMPLES, env=env)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("finished") / "run"
    result = _main(model_dir, "--epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def test_a_second_command_on_a_run_directory_stops_at_once_naming_the_first(tmp_path):
    model_dir = tmp_path / "run"
    # Epochs enough that the first is still training when it is stopped below.
    first = start_main_mocked([*FLAGS, f"--model_dir={model_dir}", "--epochs=1000"],
                              num_examples=NUM_EXAMPLES)

    def wait_for(path):
        deadline = time.time() + 120
        while not os.path.exists(path) and time.time() < deadline:
            assert first.poll() is None, first.communicate()[1][-3000:]
            time.sleep(0.1)

    try:
        wait_for(model_dir / ".lock")  # Taken before the model is even built.
        second = _main(model_dir, "--epochs=1000")
        assert second.returncode == 1
        assert f"model_dir ({model_dir}) is in use: process {first.pid} on " in second.stderr
        assert "Traceback" not in second.stderr
        # The first's SIGTERM handler is set when training starts: its first checkpoint (an
        # epoch's end) says it has. Before that, a SIGTERM ends a run that has nothing to save.
        wait_for(model_dir / "checkpoints" / "checkpoint")
    finally:
        first.send_signal(signal.SIGTERM)  # Saves and stops; the lock goes with it.
        first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM
    assert not os.path.exists(model_dir / ".lock")


def test_a_moved_copy_resumes_on_its_own_files_after_a_start_that_failed(finished, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(finished, tmp_path / "copy")
    shutil.move(tmp_path / "copy", moved)  # Nothing is left where these files were written.
    os.remove(moved / "run_config.json")  # As a copy made by hand might lack it.
    flagfile = (moved / "flags.txt").read_text()
    # A run that fails before it starts (not the checkpoints' model) writes no records,
    wrong = _main(moved, "--epochs=2", "--model=functional")
    assert wrong.returncode == 1 and "cannot restore checkpoint" in wrong.stderr
    assert not os.path.exists(moved / "run_config.json")
    assert (moved / "flags.txt").read_text() == flagfile
    # so the right command resumes, on the moved directory's own checkpoints and best weights.
    right = _main(moved, "--epochs=2")
    assert right.returncode == 0, right.stderr[-3000:]
    assert f"resumed from {moved / 'checkpoints' / 'ckpt-2'}" in right.stderr
    assert json.loads((moved / "run_config.json").read_text())["model"] == "sequential"
    ranking = json.loads((moved / "best" / "best.json").read_text())["ranking"]
    assert all(entry["path"] == f"step-{entry['step']}" for entry in ranking)
    assert os.path.exists(moved / "export" / "saved_model.pb")


def test_a_second_ctrl_c_during_a_save_stops_after_the_save_in_one_line(tmp_path):
    model_dir = tmp_path / "run"
    # A Ctrl-C after the first training call (step 1) asks for a save at the next vote, at the
    # epoch's end (step 2); a second one lands during that save.
    result = _main(model_dir, "--epochs=3", "--steps_per_loop=1",
                   env={"TRAINER_KILL_AT": "train_call:1:SIGINT,saving:1:SIGINT"})
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    stopped = [line for line in result.stderr.splitlines() if line.startswith("stopped: ")]
    assert len(stopped) == 1 and "second Ctrl-C" in stopped[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
    checkpoints = sorted(os.listdir(model_dir / "checkpoints"))
    assert checkpoints == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    assert stopped[0].endswith(str(model_dir / "checkpoints" / "ckpt-2")), stopped


def _unshare_available():
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True,
                               timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_available(),
                    reason="needs `unshare -rm` (user and mount namespaces) to mount a small "
                           "tmpfs as a full disk")
def test_a_full_disk_ends_the_run_in_one_line_and_the_run_resumes_after(tmp_path):
    # In a private mount namespace, small tmpfs disks: a 16 KB one for the decoded cache, which
    # the first run fills before it trains; then, the cache disk grown, a 4 MB one for the run
    # directory, where one checkpoint (2.7 MB) and the best weights fit but the second
    # checkpoint does not. Then that disk grows, as if space were freed: the run resumes.
    disk, cache, out = tmp_path / "disk", tmp_path / "cache", tmp_path / "out"
    os.makedirs(disk)
    os.makedirs(cache)
    command = subprocess.list2cmdline([
        sys.executable, os.path.join(TESTS, "mocked_main.py"), str(NUM_EXAMPLES), *FLAGS,
        f"--model_dir={disk}/run", "--epochs=2", f"--cache_dir={cache}"])
    script = (f"mount -t tmpfs -o size=16k none {cache} && "
              f"mount -t tmpfs -o size=4m none {disk} && "
              f"{{ {command} 2> {out}.cache; echo $? > {out}.cache_code; "
              f"mount -o remount,size=16m {cache}; "
              f"{command} 2> {out}.first; echo $? > {out}.first_code; "
              f"mount -o remount,size=64m {disk}; "
              f"{command} 2> {out}.second; echo $? > {out}.second_code; "
              f"cp -r {disk}/run {out}; }}")
    setup = subprocess.run(["unshare", "-rm", "bash", "-c", script], capture_output=True,
                           text=True, timeout=600, cwd=ROOT, env=subprocess_env())
    assert setup.returncode == 0, setup.stderr[-3000:]
    for name in ("cache", "first"):
        log = (tmp_path / f"out.{name}").read_text()
        assert (tmp_path / f"out.{name}_code").read_text().strip() == "1", log[-3000:]
        errors = [line for line in log.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in log, log[-3000:]
        assert errors[0].startswith("error: a disk is full (") and "Nothing is lost" in errors[0]
    assert "resumed from" not in (tmp_path / "out.first").read_text()  # The cache held it up.
    first = (tmp_path / "out.first").read_text()
    assert "ckpt-2" in [line for line in first.splitlines() if line.startswith("error: ")][0]
    second = (tmp_path / "out.second").read_text()
    assert (tmp_path / "out.second_code").read_text().strip() == "0", second[-3000:]
    assert "resumed from" in second
    assert json.loads((out / "results.json").read_text())["steps"] == 4
    assert not [name for name in os.listdir(out / "checkpoints") if name.endswith("_temp")]


def test_workers_started_with_different_flags_stop_before_training_naming_the_flag(tmp_path):
    args = [[os.path.join(TESTS, "mocked_main.py"), str(NUM_EXAMPLES), *FLAGS, "--epochs=1",
             "--strategy=multi_worker", f"--model_dir={tmp_path / 'run'}", *extra]
            for extra in ([], ["--lr_find"])]
    results = local_cluster.run_workers(args, str(tmp_path))
    for code, log in results:
        assert code == 1, log[-3000:]
        assert "error: the workers were started with different flags: --lr_find differs" in log
        assert "Traceback" not in log
