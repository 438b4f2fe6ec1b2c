"""The local launcher: every task of one multi-worker run as a process of this host.

`python -m trainer.launch --workers=N -- <flags>` (trainer/launch.py) does for this project what
`torchrun` does for a PyTorch script. It runs `python -m trainer.main <flags>` once per task:

- Ports and TF_CONFIG. Each task gets a port on 127.0.0.1, free when the launcher looks (or N
  consecutive ones from `port`), and a `TF_CONFIG` naming every task and its own: workers 0 to
  N-1 (worker 0 is the chief) and, if asked, an "evaluator" task (trainer/cli/evaluator.py).
- Output. The chief's lines pass through as they are. The other workers print warnings and
  errors only (trainer/main.py); their lines come prefixed, "[worker 1] ...", without the INFO
  lines and the `stopped: ...` line that repeat the chief's, unless the flags set --verbosity.
  The evaluator's lines all come, prefixed.
  Every task's `error: ...` line is held back: the launcher ends with one line that names the
  task that failed first and says why, instead of N copies of the same error.
- Signals. SIGINT and SIGTERM are forwarded to every task, so the workers save a checkpoint and
  stop at one common step (trainer/stopping.py), as when each is signalled. The tasks run in
  sessions of their own: a Ctrl-C in the terminal reaches them once, through the launcher (a
  second SIGINT would stop a worker at once, unsaved). If the launcher itself dies, the kernel
  sends each task a SIGTERM (Linux).
- Failures. A multi-worker run cannot go on without one of its workers: when a task fails, the
  launcher stops the others, waits for them, and exits with the status of the failed task.
"""

import ctypes
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"  # Every task of a local cluster listens on loopback only.
GRACE_S = 5.0  # After a failure: how long the other tasks get to end before they are killed.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# trainer.main's exit statuses after a signal it handled: every worker saved and stopped.
_SAVED_AND_STOPPED = {128 + number for number in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
_POLL_S = 0.1
_INFO_LINE = re.compile(rb"^I\d{4} ")  # absl's "I0102 10:11:12.345678 4242 main.py:99] ..."
_VERBOSITY_FLAG = re.compile(r"^--?(verbosity|v)(=|$)")
# The last line of an import's traceback, or what `python -m` prints when it cannot find the module.
_IMPORT_ERROR = re.compile(r"(ModuleNotFoundError|ImportError): [^)]+|No module named .+")
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies.
_write_lock = threading.Lock()  # One relayed line at a time, whole.


@dataclasses.dataclass(frozen=True)
class Task:
    """One process of the cluster: a TF_CONFIG task."""

    type: str  # "worker" or "evaluator"
    index: int

    @property
    def name(self) -> str:
        return "evaluator" if self.type == "evaluator" else f"worker {self.index}"

    @property
    def is_chief(self) -> bool:
        return self.type == "worker" and self.index == 0


def cluster_tasks(workers: int, *, evaluator: bool = False) -> list[Task]:
    """The tasks of a cluster of `workers` workers and, with `evaluator`, an evaluator.

    Raises:
        ValueError: if `workers` is less than 1.
    """
    if workers < 1:
        raise ValueError(f"workers ({workers}) must be at least 1")
    return ([Task("worker", index) for index in range(workers)]
            + ([Task("evaluator", 0)] if evaluator else []))


def tf_configs(tasks: list[Task], ports: list[int]) -> list[str]:
    """Each task's TF_CONFIG: one cluster, every task at its port of 127.0.0.1, and the task."""
    cluster = {}
    for task, port in zip(tasks, ports):
        cluster.setdefault(task.type, []).append(f"{HOST}:{port}")
    return [json.dumps({"cluster": cluster, "task": {"type": task.type, "index": task.index}})
            for task in tasks]


def free_ports(count: int, first: int | None = None) -> list[int]:
    """`count` ports of 127.0.0.1 on which nothing listens: `first` and the ports after it, or,
    without `first`, ports the operating system chooses.

    Raises:
        ValueError: naming the port, if one from `first` on is in use or out of range.
    """
    if first is None:
        probes = [socket.socket() for _ in range(count)]
        try:  # Bound all at once, so that no port is handed out twice.
            for probe in probes:
                probe.bind((HOST, 0))
            return [probe.getsockname()[1] for probe in probes]
        finally:
            for probe in probes:
                probe.close()
    ports = list(range(first, first + count))
    if first < 1024 or ports[-1] > 65535:
        raise ValueError(f"port ({first}) must leave room for {count} consecutive ports within "
                         "1024-65535")
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
            except OSError as error:
                raise ValueError(f"port ({first}): {HOST}:{port} is in use ({error.strerror}); "
                                 f"the launcher needs {count} free consecutive ports from "
                                 "--port: choose another, or leave --port out to take free "
                                 "ports") from None
    return ports


class _Process:
    """A started task, its output relays, and what the launcher keeps of its output."""

    def __init__(self, task: Task, popen: subprocess.Popen):
        self.task = task
        self.popen = popen
        self.error_line = None  # Its `error: ...` line, held back for the launcher's last line.
        self.import_error = None
        self.relays = []


def launch(flags: list[str], *, workers: int, evaluator: bool = False,
           port: int | None = None) -> int:
    """Runs `python -m trainer.main <flags>` as every task of a cluster on this host.

    Args:
        flags: the flags every task gets, unchanged.
        workers: how many workers train (>= 1).
        evaluator: also start the evaluator task, which validates the workers' checkpoints.
        port: the first of the consecutive ports the tasks listen on (None: free ports).

    Returns:
        The launcher's exit status: 0 when every task succeeded; after a forwarded signal, the
        chief's (128 + the signal, once the state is saved); else that of the task that failed
        first, after one `error: ...` line on stderr naming it.

    Raises:
        ValueError: for a bad `workers` or `port`, before any task starts.
    """
    tasks = cluster_tasks(workers, evaluator=evaluator)
    ports = free_ports(len(tasks), port)
    show_info = any(_VERBOSITY_FLAG.match(flag) for flag in flags)
    print(f"launch: {len(tasks)} process(es) on {HOST}: "
          + ", ".join(f"{task.name} at port {number}" for task, number in zip(tasks, ports))
          + "; worker 0 (the chief) prints the run, the others their warnings and errors",
          file=sys.stderr, flush=True)
    processes, received = [], []
    previous = {number: signal.signal(number, _forwarder(processes, received))
                for number in FORWARDED_SIGNALS}
    try:
        for task, config in zip(tasks, tf_configs(tasks, ports)):
            processes.append(_start(task, config, flags))
        for process in processes:  # After every start: a fork while threads run is unsafe.
            _relay_output(process, show_info)
        failed, stopped = _wait(processes, received)
        for process in processes:
            for relay in process.relays:
                relay.join()
    except BaseException:  # E.g. no process could start: none is left behind.
        _signal_running(processes, signal.SIGKILL)
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if failed:
        print(f"error: {_failure(failed, stopped)}", file=sys.stderr, flush=True)
        return _status(failed.popen.returncode)
    return max(_status(process.popen.returncode) for process in processes)


def _start(task: Task, tf_config: str, flags: list[str]) -> _Process:
    env = dict(os.environ, TF_CONFIG=tf_config, PYTHONUNBUFFERED="1")
    popen = subprocess.Popen([sys.executable, "-m", "trainer.main", *flags], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True, preexec_fn=_stop_with_the_launcher)
    return _Process(task, popen)


def _stop_with_the_launcher():
    """In the new process: a SIGTERM (save and stop) when the launcher dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _forwarder(processes: list[_Process], received: list[int]):
    def forward(number, frame):
        del frame
        received.append(number)
        for process in processes:
            if process.popen.poll() is None:
                process.popen.send_signal(number)
    return forward


def _relay_output(process: _Process, show_info: bool) -> None:
    """Starts a thread per output pipe that copies the task's lines to the launcher's stream."""
    for pipe, stream in ((process.popen.stdout, sys.stdout), (process.popen.stderr, sys.stderr)):
        relay = threading.Thread(target=_relay, args=(process, pipe, stream, show_info),
                                 daemon=True)
        relay.start()
        process.relays.append(relay)


def _relay(process: _Process, pipe, stream, show_info: bool) -> None:
    task = process.task
    prefix = b"" if task.is_chief else f"[{task.name}] ".encode()
    for line in iter(pipe.readline, b""):
        text = line.decode(errors="replace").rstrip()
        if text.startswith("error: "):
            process.error_line = text[len("error: "):]
            continue
        import_error = _IMPORT_ERROR.search(text)
        if import_error:
            process.import_error = import_error[0]
        if (task.type == "worker" and not task.is_chief and not show_info
                and (_INFO_LINE.match(line) or line.startswith(b"stopped: "))):
            continue  # The chief's lines say the same.
        with _write_lock:
            stream.buffer.write(prefix + line)
            stream.flush()
    pipe.close()


def _wait(processes: list[_Process], received: list[int]) -> tuple[_Process | None, int]:
    """Waits for every task to end; returns the one that failed first (or None) and how many
    others were still running then. Those get a SIGTERM, and a SIGKILL if they still run GRACE_S
    seconds later (a worker waiting in a collective for the failed one would wait for minutes)."""
    failed, stopped, deadline = None, 0, None
    while any(process.popen.poll() is None for process in processes):
        if failed is None:
            failed = next((p for p in processes if _has_failed(p, received)), None)
            if failed:
                deadline = time.monotonic() + GRACE_S
                stopped = _signal_running(processes, signal.SIGTERM)
        elif time.monotonic() > deadline:
            _signal_running(processes, signal.SIGKILL)
        time.sleep(_POLL_S)
    return failed or next((p for p in processes if _has_failed(p, received)), None), stopped


def _signal_running(processes: list[_Process], number: int) -> int:
    """Sends signal `number` to the tasks still running; returns how many there were."""
    running = [process for process in processes if process.popen.poll() is None]
    for process in running:
        process.popen.send_signal(number)
    return len(running)


def _has_failed(process: _Process, received: list[int]) -> bool:
    """Ended with a status other than 0, a stop on a signal with the state saved (whoever sent
    the signal), or a death by a signal that the launcher forwarded."""
    code = process.popen.poll()
    if code in (None, 0) or code in _SAVED_AND_STOPPED:
        return False
    return _status(code) not in {128 + number for number in received}


def _status(returncode: int) -> int:
    """A process's exit status as a shell gives it: 128 + the signal for one killed by it."""
    return 128 - returncode if returncode < 0 else returncode


def _failure(failed: _Process, stopped: int) -> str:
    """The launcher's last line: which task failed, its status, why (if it said), and how many
    of the other tasks the launcher stopped."""
    code = failed.popen.returncode
    ended = (f"was killed by {signal.Signals(-code).name}" if code < 0
             else f"exited with status {code}")
    if failed.error_line:
        reason = f": {failed.error_line}"
    elif failed.import_error:
        reason = (f": it could not import the project ({failed.import_error}). Each task runs "
                  f"{sys.executable} -m trainer.main in {os.getcwd()}: install the project for "
                  'that interpreter (pip install ".") or start the launcher in the repository root')
    else:
        reason = ""
    stopped_others = f"; the launcher stopped the other {stopped} process(es)" if stopped else ""
    return f"{failed.task.name} {ended}{reason}{stopped_others}"
