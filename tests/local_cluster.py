"""Clusters for tests: one subprocess per task on 127.0.0.1, on ports found free at runtime.

Output goes to files, not pipes: a task blocked on a full pipe would stall the others in their
next collective. A hang fails through the timeout of `wait`.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from conftest import ROOT, subprocess_env

TIMEOUT_S = 300  # A hang guard only: a loaded 2-core machine runs a small cluster in 30-120 s.


def free_ports(count: int) -> list[int]:
    """`count` consecutive ports that are free on 127.0.0.1 now (SLURM's tasks of a node take
    consecutive ports)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count <= 65535 and all(_is_free(first + k) for k in range(count)):
            return [first + k for k in range(count)]
    raise RuntimeError(f"found no {count} consecutive free ports on 127.0.0.1")


def _is_free(port):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start(args_per_task: list[list[str]], env_per_task: list[dict], log_dir: str,
          log_name: str = "task") -> list[subprocess.Popen]:
    """Starts `python <args>` per task, with the test environment plus its own variables;
    `<log_dir>/<log_name><k>.log` receives task k's output."""
    os.makedirs(log_dir, exist_ok=True)
    processes = []
    for index, (args, extra_env) in enumerate(zip(args_per_task, env_per_task)):
        env = {name: value for name, value in subprocess_env().items()
               if name != "TF_CONFIG" and not name.startswith("SLURM")}
        env.update(extra_env)
        with open(os.path.join(log_dir, f"{log_name}{index}.log"), "w") as log:
            processes.append(subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env,
                                              stdout=log, stderr=subprocess.STDOUT, text=True))
    return processes


def start_workers(args_per_worker: list[list[str]], log_dir: str,
                  env_per_worker: list[dict] | None = None) -> list[subprocess.Popen]:
    """Starts `python <args>` per worker of one TF_CONFIG cluster on 127.0.0.1;
    `<log_dir>/worker<k>.log` receives worker k's output."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(len(args_per_worker))]
    envs = [dict(extra, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                              "task": {"type": "worker", "index": index}}))
            for index, extra in enumerate(env_per_worker or [{}] * len(args_per_worker))]
    return start(args_per_worker, envs, log_dir, log_name="worker")


def run_workers(args_per_worker: list[list[str]], log_dir: str,
                env_per_worker: list[dict] | None = None) -> list[tuple[int, str]]:
    """`start_workers`, then `wait`: [(return code, log text)] per worker."""
    return wait(start_workers(args_per_worker, log_dir, env_per_worker), log_dir, "worker")


def wait(processes: list[subprocess.Popen], log_dir: str,
         log_name: str = "task") -> list[tuple[int, str]]:
    """Waits for every task; returns [(return code, log text)]. Kills all on a timeout."""
    deadline = time.time() + TIMEOUT_S
    try:
        for process in processes:
            process.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        raise AssertionError(f"the cluster did not finish in {TIMEOUT_S} s:\n"
                             + read(os.path.join(log_dir, f"{log_name}0.log"))[-3000:]) from None
    return [(process.returncode, read(os.path.join(log_dir, f"{log_name}{index}.log")))
            for index, process in enumerate(processes)]


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def wait_for_a_checkpoint(model_dir: str, processes: list[subprocess.Popen]) -> int:
    """Returns the step of the first checkpoint in `<model_dir>/checkpoints` once it exists."""
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
        if latest:
            return int(latest.rsplit("-", 1)[1])
        if any(process.poll() is not None for process in processes):
            raise AssertionError("a task ended before the first checkpoint")
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def checkpoint_tensors(path: str) -> dict:
    """Every tensor of a checkpoint but the save counter. Of the run's record, only what training
    wrote: its timings differ from run to run, and validation may be switched off in one of the
    runs compared."""
    reader = tf.train.load_checkpoint(path)
    tensors = {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
               if "save_counter" not in name and name != "_CHECKPOINTABLE_OBJECT_GRAPH"}
    record = json.loads(tensors.pop("record/.ATTRIBUTES/py_state"))
    tensors["record/training"] = np.array(json.dumps([
        {key: entry[key] for key in ("epoch", "step", "train_loss", "train_accuracy")}
        for entry in record["history"]]))
    return tensors
