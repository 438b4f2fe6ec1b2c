"""The launchers of a multi-worker run, as a user runs them on this machine.

`python -m trainer.launch --workers=2` trains two workers on 127.0.0.1 under one command; a
SIGTERM to the launcher leaves a checkpoint from which the same command resumes exactly;
`python -m trainer.ray --workers=2` (a local Ray, CPU workers) ends with the same results and
weights as the launcher; and each bad input gets one clear line.

The workers are processes that the tests do not start themselves: tests/worker_site (on their
PYTHONPATH) mocks TFDS in them, as tests/mocked_main.py does in a process a test starts.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags as absl_flags

import local_cluster
from conftest import ROOT, TESTS, subprocess_env
from trainer import distribute
from trainer import launch
from trainer import main as trainer_main
from trainer import ray as ray_command
from trainer.cluster import launcher
from trainer.cluster import ray_train

NUM_EXAMPLES = 320  # mocked TFDS: 10 steps of 32 per epoch, 20 in the run
TOTAL_STEPS = 20
# Training only, in one global data order: evaluation and export change nothing that the
# checkpoints or the training results hold, and --data_order=global makes the order of the
# examples the same for any number of workers.
FLAGS = ["--model=sequential", "--epochs=2", "--batch_size=32", "--deterministic",
         "--data_order=global", "--checkpoint_every_steps=3", "--steps_per_loop=1",
         "--val_split=", "--test_split=", "--save_top_k=0"]
COMPARED = ("train_loss", "train_accuracy", "steps", "epochs", "replicas", "global_batch_size")


def _env(**extra):
    env = {name: value for name, value in subprocess_env().items()
           if name != "TF_CONFIG" and not name.startswith("SLURM")}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(TESTS, "worker_site")])
    env.update(TRAINER_TEST_MOCK_TFDS=str(NUM_EXAMPLES), **extra)
    return {name: value for name, value in env.items() if value is not None}


def _start(module, args, log_dir, **env):
    """Starts `python -m <module> <args>`; its stdout and stderr go to files in `log_dir`."""
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, "stdout"), "w") as out, \
            open(os.path.join(log_dir, "stderr"), "w") as err:
        return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=_env(**env),
                                stdout=out, stderr=err)


def _finish(process, log_dir):
    """Waits for the process; returns (exit status, stdout, stderr)."""
    try:
        process.wait(timeout=local_cluster.TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(local_cluster.read(os.path.join(log_dir, "stderr"))[-3000:]) from None
    return (process.returncode, local_cluster.read(os.path.join(log_dir, "stdout")),
            local_cluster.read(os.path.join(log_dir, "stderr")))


def _launch_args(model_dir):
    return ["--workers=2", "--", *FLAGS, f"--model_dir={model_dir}"]


def _final_checkpoint(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert path.endswith(f"ckpt-{TOTAL_STEPS}"), path
    return local_cluster.checkpoint_tensors(path)


def _results(model_dir):
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One uninterrupted `python -m trainer.launch --workers=2` run."""
    root = tmp_path_factory.mktemp("launched")
    model_dir = str(root / "run")
    code, stdout, stderr = _finish(_start("trainer.launch", _launch_args(model_dir), root), root)
    assert code == 0, stderr[-3000:]
    return model_dir, stdout, stderr


def test_two_workers_train_under_one_command(launched):
    model_dir, stdout, stderr = launched
    assert ("MultiWorkerMirroredStrategy with 2 replica(s) over 2 worker(s); this process is "
            "worker 0 (the chief") in stderr
    assert f"epoch 2/2 | step {TOTAL_STEPS}" in stderr and "Total params" in stdout
    # Worker 1's lines come prefixed, and only its warnings and errors.
    worker_lines = [line for line in stderr.splitlines() if line.startswith("[worker 1] ")]
    assert all(line[len("[worker 1] "):][:1] in "WEF" for line in worker_lines), worker_lines
    assert not any("[worker" in line and "epoch" in line for line in stderr.splitlines())
    results = _results(model_dir)
    assert results["replicas"] == 2 and results["steps"] == TOTAL_STEPS


def test_sigterm_to_the_launcher_saves_and_the_same_command_resumes_exactly(launched, tmp_path):
    model_dir = str(tmp_path / "run")
    process = _start("trainer.launch", _launch_args(model_dir), tmp_path / "stopped")
    saved = local_cluster.wait_for_a_checkpoint(model_dir, [process])
    process.send_signal(signal.SIGTERM)  # As a cluster manager, or `kill`, would.
    code, _, stderr = _finish(process, tmp_path / "stopped")
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    stopped_at = int(stderr.split("interrupted by SIGTERM at step ")[1].split(";")[0])
    assert saved <= stopped_at < TOTAL_STEPS
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith(
        f"ckpt-{stopped_at}")
    assert "\nerror: " not in stderr  # A requested stop is not a failure.
    code, _, stderr = _finish(_start("trainer.launch", _launch_args(model_dir),
                                     tmp_path / "resumed"), tmp_path / "resumed")
    assert code == 0, stderr[-3000:]
    assert f"resumed from {model_dir}/checkpoints/ckpt-{stopped_at}: step {stopped_at}" in stderr
    clean, resumed = _final_checkpoint(launched[0]), _final_checkpoint(model_dir)
    assert clean.keys() == resumed.keys()
    for name, value in clean.items():
        np.testing.assert_array_equal(value, resumed[name], err_msg=name)


def test_a_worker_that_cannot_import_the_project_stops_the_run_in_one_line(tmp_path):
    # Worker 1 fails at once; worker 0 would wait for it in the strategy's set-up for minutes.
    process = _start("trainer.launch", _launch_args(tmp_path / "run"), tmp_path,
                     TRAINER_TEST_NO_PROJECT="worker:1")
    code, _, stderr = _finish(process, tmp_path)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith(
        "error: worker 1 exited with status 1: it could not import the project "
        "(ModuleNotFoundError: No module named 'trainer'). Each task runs ")
    assert errors[0].endswith("; the launcher stopped the other 1 process(es)")


def test_an_error_that_every_worker_prints_is_reported_once(tmp_path):
    process = _start("trainer.launch", _launch_args(tmp_path / "run"), tmp_path,
                     TRAINER_TEST_NO_PROJECT="worker:0,worker:1")
    code, _, stderr = _finish(process, tmp_path)
    errors = [line for line in stderr.splitlines() if "could not import the project" in line]
    assert code == 1 and len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith("error: worker ")


def test_a_one_process_strategy_inside_a_cluster_is_refused(monkeypatch):
    # Each worker would train alone, and each would write the chief's files.
    monkeypatch.setenv("TF_CONFIG", launcher.tf_configs(launcher.cluster_tasks(2), [1, 2])[1])
    with pytest.raises(ValueError, match=re.escape(
            "strategy ('mirrored') trains in this process alone, but TF_CONFIG names a cluster of "
            "2 training tasks: use --strategy=multi_worker (or auto) to train together, or unset "
            "TF_CONFIG to train alone")):
        distribute.create_strategy("mirrored")


@pytest.fixture
def flags_restored():
    """Tests that parse the workers' flags in this process leave absl's flags as they were."""
    yield
    absl_flags.FLAGS.unparse_flags()


def test_run_is_the_command_as_a_function_once_per_process(monkeypatch, capsys, flags_restored):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(trainer_main, "_runs_started", [])  # As in a new process.
    with tfds.testing.mock_data(num_examples=70):
        assert trainer_main.run(["trainer.main", "--explain", "--batch_size=32"]) == {}
    assert "2 optimizer steps per epoch x 10 epoch(s)" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"flag --epochs=0: 0 is not a positive integer"):
        trainer_main.run(["trainer.main", "--epochs=0"])  # Refused before anything starts.
    with pytest.raises(RuntimeError, match=r"a run has already started in this process \(pid "
                                           r"\d+\): start each run in a new process"):
        trainer_main.run(["trainer.main", "--explain"])


@pytest.mark.parametrize("args, message", [
    (["--workers=0", "--", "--epochs=1"], "error: workers (0) must be at least 1"),
    (["--workers=2", "--model=functional"],
     "error: --model=functional is not an option of python -m trainer.launch: give the flags of "
     "trainer.main after --, e.g. python -m trainer.launch --workers=2 -- --model=functional"),
    (["--", "--epochs=1"], "error: the following arguments are required: --workers"),
    (["--workers=2", "--", "--epochs=0"], "error: flag --epochs=0: 0 is not a positive integer"),
    (["--workers=2", "--", "--no_such_flag"], "error: Unknown command line flag 'no_such_flag'"),
])
def test_bad_launcher_input_gets_one_clear_line_before_any_worker_starts(
        args, message, capsys, flags_restored):
    assert launch.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_a_port_in_use_gets_one_clear_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert launch.main(["--workers=2", f"--port={port}", "--", "--epochs=1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: port ({port}): 127.0.0.1:{port} is in use (Address already "
                          "in use); the launcher needs 2 free consecutive ports from --port")


def test_each_task_gets_the_cluster_and_its_own_task():
    tasks = launcher.cluster_tasks(2, evaluator=True)
    configs = [json.loads(config) for config in launcher.tf_configs(tasks, [5001, 5002, 5003])]
    cluster = {"worker": ["127.0.0.1:5001", "127.0.0.1:5002"], "evaluator": ["127.0.0.1:5003"]}
    assert configs == [{"cluster": cluster, "task": {"type": "worker", "index": 0}},
                       {"cluster": cluster, "task": {"type": "worker", "index": 1}},
                       {"cluster": cluster, "task": {"type": "evaluator", "index": 0}}]


# ---- Ray Train ----------------------------------------------------------------------------

def _ray_missing() -> str | None:
    """Why Ray Train cannot be imported, or None."""
    try:
        import ray.train.tensorflow  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError as error:
        return f"Ray Train cannot be imported ({error}): {ray_train.INSTALL_HINT}"
    return None


RAY_MISSING = _ray_missing()
needs_ray = pytest.mark.skipif(RAY_MISSING is not None, reason=str(RAY_MISSING))


@needs_ray
def test_two_ray_workers_end_like_two_launched_workers(launched, tmp_path):
    model_dir = str(tmp_path / "run")
    process = _start("trainer.ray", ["--workers=2", f"--storage_path={tmp_path / 'ray'}", "--",
                                     *FLAGS, f"--model_dir={model_dir}"], tmp_path,
                     RAY_ADDRESS=None)
    code, stdout, stderr = _finish(process, tmp_path)
    assert code == 0, stderr[-3000:]
    printed = json.loads(stdout.splitlines()[-1])  # The chief's results, on the last line.
    launched_results = _results(launched[0])
    for key in COMPARED:
        assert printed[key] == launched_results[key] == _results(model_dir)[key], key
    clean, on_ray = _final_checkpoint(launched[0]), _final_checkpoint(model_dir)
    assert clean.keys() == on_ray.keys()
    for name, value in clean.items():
        np.testing.assert_array_equal(value, on_ray[name], err_msg=name)


@needs_ray
def test_a_failure_on_several_ray_workers_is_one_line():
    from ray import train as ray_train_api  # pylint: disable=import-outside-toplevel
    error = ray_train_api.WorkerGroupError("...", {
        1: ValueError("batch_size (15) must be divisible by the number of replicas (2)"),
        0: ValueError("batch_size (15) must be divisible by the number of replicas (2)")})
    assert ray_train._first_failure(error) == (  # pylint: disable=protected-access
        "Ray worker 0 (and worker(s) 1) failed: ValueError: batch_size (15) must be divisible "
        "by the number of replicas (2)")


def test_without_ray_the_ray_command_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # What `import ray` finds when it is missing.
    assert ray_command.main(["--workers=2", "--", "--epochs=1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: Ray is not installed: pip install ".[ray]"') and \
        err.count("\n") == 1, err
