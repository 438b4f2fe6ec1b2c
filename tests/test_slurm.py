"""SLURM without SLURM: the variables of a 2-task job step are faked, the two tasks run on
127.0.0.1, and `scontrol` is a script on PATH that records how it was called.

They train together under --strategy=auto, --explain names their cluster, and a SIGUSR1 to both
(what `#SBATCH --signal=USR1@90` sends) stops them at one saved step and requeues the job once;
the requeued job, the same command again, ends bit-identical to a run that never stopped.
"""

import json
import os
import signal

import numpy as np
import pytest

from conftest import TESTS
import local_cluster
from trainer import distribute
from trainer.cluster import slurm

JOB_ID = "4242"
NUM_EXAMPLES = 320  # mocked TFDS: 10 steps of 32 per epoch, 20 in the run
TOTAL_STEPS = 20
# Training only: evaluation, ranking and export change nothing that a checkpoint holds. No
# --strategy: inside a SLURM step of 2 tasks, auto must choose multi_worker by itself. And
# --fresh_start, as a careless job script would have it: a requeued job must resume anyway.
TRAIN_FLAGS = ["--model=sequential", "--epochs=2", "--batch_size=32", "--deterministic",
               "--checkpoint_every_steps=3", "--steps_per_loop=1", "--val_split=",
               "--test_split=", "--save_top_k=0", "--fresh_start"]
SCONTROL = """#!/bin/sh
# `scontrol show hostnames LIST` prints one host per line: here only 127.0.0.1.
if [ "$1 $2" = "show hostnames" ]; then echo 127.0.0.1; exit 0; fi
echo "$@" >> "$SCONTROL_CALLS"
"""


def _step_env(task, bin_dir, restarts=0, tasks=2):
    """What srun gives task `task` of a step of `tasks` on one node, plus the stub scontrol."""
    return {"SLURM_JOB_ID": JOB_ID, "SLURM_NTASKS": str(tasks), "SLURM_STEP_ID": "0",
            "SLURM_PROCID": str(task), "SLURM_LOCALID": str(task),
            "SLURM_STEP_NUM_TASKS": str(tasks), "SLURM_STEP_NODELIST": "127.0.0.1",
            "SLURM_STEP_TASKS_PER_NODE": str(tasks),
            "SLURMD_NODENAME": "127.0.0.1", "SLURM_RESTART_COUNT": str(restarts),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "SCONTROL_CALLS": os.path.join(bin_dir, "calls.txt")}


def _start_step(tmp_path, flags, *, log_dir, restarts=0, tasks=2):
    """Starts every task of the faked step with `flags`; returns their processes and ports."""
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        (bin_dir / "scontrol").write_text(SCONTROL)
        (bin_dir / "scontrol").chmod(0o755)
    ports = local_cluster.free_ports(tasks)
    args = [os.path.join(TESTS, "mocked_main.py"), str(NUM_EXAMPLES), *flags,
            f"--slurm_port_base={ports[0]}"]
    processes = local_cluster.start([args] * tasks, [_step_env(task, bin_dir, restarts, tasks)
                                                     for task in range(tasks)], str(log_dir))
    return processes, ports


def _scontrol_calls(tmp_path):
    path = tmp_path / "bin" / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


# ---- Detection and GPUs (no strategy is created) ----------------------------------------------

@pytest.mark.parametrize("variables, expected", [
    ({"SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2"}, True),   # srun -n 2
    ({"SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1"}, False),  # a one-task job
    ({"SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "1"}, False),  # srun -n 1 in a 2-task job
    ({"SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": None}, False),  # salloc's shell: no step
])
def test_only_a_job_step_of_several_tasks_is_a_cluster(monkeypatch, tmp_path, variables, expected):
    for name, value in _step_env(0, str(tmp_path)).items():
        monkeypatch.setenv(name, value)
    for name, value in variables.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert slurm.multi_task_step() is expected
    assert distribute.cluster_source() == ("SLURM job 4242, step 0" if expected else None)


@pytest.mark.parametrize("visible, tasks, index, bound, share", [
    (["0", "1", "2", "3"], 4, 2, False, ["2"]),        # one task per GPU, all see the node's GPUs
    (["4", "5", "6", "7"], 2, 1, False, ["6", "7"]),   # the job's GPUs, not 0..n-1
    (["0", "1", "2", "3"], 1, 0, False, None),         # one task per node: all of them
    (["3"], 4, 3, False, None),                        # SLURM gave each task its own GPU
    (["0", "1"], 2, 0, True, None),                    # --gpus-per-task: SLURM bound them
    ([], 2, 0, False, None),                           # no GPUs
])
def test_tasks_sharing_a_node_get_equal_shares_of_its_gpus(visible, tasks, index, bound, share):
    assert slurm.gpus_for_task(visible, tasks, index, bound_by_slurm=bound) == share


def test_resolving_the_step_gives_this_task_its_share_of_the_gpus(monkeypatch, tmp_path):
    for name, value in _step_env(1, str(tmp_path)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    cluster, task = slurm.resolve_step(port_base=23000)
    assert cluster.as_dict() == {"worker": ["127.0.0.1:23000", "127.0.0.1:23001"]} and task == 1
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6,7"


def test_a_task_on_another_node_than_the_resolver_expects_is_a_clear_error(monkeypatch, tmp_path):
    for name, value in _step_env(1, str(tmp_path)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_STEP_NODELIST", "node[01-02]")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "1(x2)")
    monkeypatch.setenv("SLURMD_NODENAME", "node01")  # Task 1 where the resolver expects task 0.
    with pytest.raises(ValueError, match=r"SLURM placed task 1 on node node01, but "
                                         r"SlurmClusterResolver expects it at node02:23000"):
        slurm.resolve_step(port_base=23000)


def test_a_step_whose_task_counts_disagree_is_a_clear_error(monkeypatch, tmp_path):
    for name, value in _step_env(1, str(tmp_path)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "3")  # The node list holds 2 tasks.
    with pytest.raises(ValueError, match=r"SLURM_STEP_NUM_TASKS \(3\) is not the sum of "
                                         r"SLURM_STEP_TASKS_PER_NODE \(2\)"):
        slurm.resolve_step(port_base=23000)
    assert slurm.tasks_per_node("2(x3),1") == [2, 2, 2, 1]


# ---- Two tasks on 127.0.0.1 ------------------------------------------------------------------

@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 2-task step that trains 20 steps to the end; returns (model_dir, [(code, log)])."""
    root = tmp_path_factory.mktemp("slurm-uninterrupted")
    processes, _ = _start_step(root, [*TRAIN_FLAGS, f"--model_dir={root / 'run'}"],
                               log_dir=root)
    return root / "run", local_cluster.wait(processes, str(root))


def test_two_slurm_tasks_train_together_under_strategy_auto(uninterrupted):
    model_dir, ((chief_code, chief_log), (worker_code, worker_log)) = uninterrupted
    assert (chief_code, worker_code) == (0, 0), chief_log[-3000:] + worker_log[-3000:]
    assert ("MultiWorkerMirroredStrategy with 2 replica(s) over 2 worker(s); this process is "
            "worker 0 (the chief") in chief_log
    with open(model_dir / "results.json") as f:
        results = json.load(f)
    assert results["replicas"] == 2 and results["steps"] == TOTAL_STEPS


def test_explain_names_the_two_task_cluster(tmp_path):
    processes, ports = _start_step(tmp_path, ["--explain", "--batch_size=32",
                                              f"--model_dir={tmp_path / 'run'}"],
                                   log_dir=tmp_path)
    results = local_cluster.wait(processes, str(tmp_path))
    tasks = [f"worker 0 at 127.0.0.1:{ports[0]}", f"worker 1 at 127.0.0.1:{ports[1]}"]
    for task, (code, log) in enumerate(results):
        assert code == 0, log[-3000:]
        this = [name + (" (this process)" if index == task else "")
                for index, name in enumerate(tasks)]
        assert (f"cluster 2 task(s) from SLURM job {JOB_ID}, step 0: {', '.join(this)}"
                in " ".join(log.split())), log[-3000:]  # (joined: undoes the line wrapping)
    assert not os.path.exists(tmp_path / "run")


def test_sigusr1_requeues_the_job_once_and_the_requeued_job_resumes_exactly(uninterrupted,
                                                                             tmp_path):
    model_dir = tmp_path / "run"
    flags = [*TRAIN_FLAGS, f"--model_dir={model_dir}"]
    processes, _ = _start_step(tmp_path, flags, log_dir=tmp_path / "first")
    local_cluster.wait_for_a_checkpoint(str(model_dir), processes)
    for process in processes:  # SLURM signals every task of the job.
        process.send_signal(signal.SIGUSR1)
    first = local_cluster.wait(processes, str(tmp_path / "first"))
    assert [code for code, _ in first] == [128 + signal.SIGUSR1] * 2, first[0][1][-3000:]
    steps = {int(log.split("interrupted by SIGUSR1 at step ")[1].split(";")[0])
             for _, log in first}
    assert len(steps) == 1 and 0 < min(steps) < TOTAL_STEPS, steps
    stopped_at = steps.pop()
    assert _scontrol_calls(tmp_path) == [f"requeue {JOB_ID}"]  # By the chief alone.

    # SLURM starts the requeued job: the same command, SLURM_RESTART_COUNT=1.
    processes, _ = _start_step(tmp_path, flags, log_dir=tmp_path / "requeued", restarts=1)
    requeued = local_cluster.wait(processes, str(tmp_path / "requeued"))
    for code, log in requeued:
        assert code == 0, log[-3000:]
    assert f"resumed from {model_dir}/checkpoints/ckpt-{stopped_at}: step {stopped_at}" \
        in requeued[0][1]
    assert _scontrol_calls(tmp_path) == [f"requeue {JOB_ID}"]
    clean = local_cluster.checkpoint_tensors(str(uninterrupted[0] / "checkpoints"
                                                 / f"ckpt-{TOTAL_STEPS}"))
    resumed = local_cluster.checkpoint_tensors(str(model_dir / "checkpoints"
                                                   / f"ckpt-{TOTAL_STEPS}"))
    assert clean.keys() == resumed.keys()
    for name, value in clean.items():
        np.testing.assert_array_equal(value, resumed[name], err_msg=name)


def test_a_one_task_job_trains_alone_and_slurm_requeue_requeues_it_after_sigterm(tmp_path):
    model_dir = tmp_path / "run"
    processes, _ = _start_step(tmp_path, [*TRAIN_FLAGS, "--slurm_requeue",
                                          f"--model_dir={model_dir}"], log_dir=tmp_path, tasks=1)
    local_cluster.wait_for_a_checkpoint(str(model_dir), processes)
    processes[0].send_signal(signal.SIGTERM)
    ((code, log),) = local_cluster.wait(processes, str(tmp_path))
    assert code == 128 + signal.SIGTERM, log[-3000:]
    assert "MultiWorkerMirroredStrategy" not in log  # One task: today's single-process strategy.
    assert _scontrol_calls(tmp_path) == [f"requeue {JOB_ID}"]
