"""A quiet console for the command line and examples/: the run's own lines, not TensorFlow's.

Three sources drown the lines a run prints (its plan, model summary, progress, epochs, results):

- TensorFlow's C++ INFO and WARNING lines. `TF_CPP_MIN_LOG_LEVEL` hides them if it is set before
  TensorFlow is imported, so the command line sets it to 2 (errors only) unless it is set already.
- The lines TensorFlow's libraries print while they load, before they apply that setting (e.g.
  "cudart_stub.cc ... Could not find cuda drivers", once per library; tensorflow/tensorflow#100442).
  They are caught while TensorFlow is imported, and those below the level are dropped.
- The INFO lines that TensorFlow, Keras and TFDS log through Python (TFDS logs two for every
  dataset it opens, i.e. for every validation pass). A filter on absl's log handler drops them;
  their warnings and errors still show. MLflow (--mlflow_tracking_uri) logs through a handler of
  its own, set up when it is imported: `MLFLOW_LOGGING_LEVEL=WARNING`, unless set already.

On a machine without an NVIDIA driver, TensorFlow also logs an error when it first looks for GPUs
("failed call to cuInit: ... UNKNOWN ERROR (303)"): it only says that there is no GPU. The devices
are listed while the start-up lines are caught, and that line is dropped when the machine has no
NVIDIA GPU (with one, trainer/gpu_check.py warns when TensorFlow cannot use it).

Everything shows again with `TF_CPP_MIN_LOG_LEVEL=0 python -m trainer.main --verbosity=1 ...`.
The project's own programs get this console: the command line and the programs of examples/.
Programs that import `trainer` themselves are left alone.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

from absl import logging as absl_logging

DEFAULT_TF_LOG_LEVEL = "2"  # TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR.
_SEVERITIES = "IWEF"  # In level order: a line of severity _SEVERITIES[i] shows at level <= i.
# A C++ log line, in absl's format ("I0000 00:00:1796.5  27156 cudart_stub.cc:31] ...") or in
# TensorFlow's older one ("2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ...").
_CPP_LOG_LINE = re.compile(r"^(?:[\d-]+ [\d:.]+: )?([IWEF])(?:\d{4} [\d:.]+ +\d+)? \S+:\d+\] ")
# What absl prints before the first C++ log line of a library that has not set its logging up.
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
_LIBRARIES = ("tensorflow", "keras", "tensorflow_datasets")
_NO_GPU_DRIVER = "failed call to cuInit"  # TensorFlow's error when it finds no NVIDIA driver.
COMMANDS = ("trainer.main", "trainer.launch", "trainer.ray", "trainer.runs")
_EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "examples")


def is_command_line() -> bool:
    """Whether this process is one of the project's programs: a command (`python -m
    trainer.main`, or a launcher of it: `python -m trainer.launch`, `python -m trainer.ray`), `python -m trainer.runs`, or
    a program of examples/ (`python examples/one_device_loop.py`)."""
    argv = sys.orig_argv
    if any(option == "-m" and module in COMMANDS for option, module in zip(argv, argv[1:])):
        return True
    return bool(sys.argv) and os.path.dirname(os.path.abspath(sys.argv[0])) == _EXAMPLES


def import_tensorflow() -> None:
    """Imports TensorFlow with the command line's log level (the user's TF_CPP_MIN_LOG_LEVEL, or
    2), dropping the start-up lines below it, and the no-GPU-driver error on a machine without
    an NVIDIA GPU. Does nothing outside the project's programs."""
    if not is_command_line() or "tensorflow" in sys.modules:
        return
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_TF_LOG_LEVEL)
    with _stderr_without_lines_below(int(level) if level.isdigit() else 0):
        import tensorflow  # pylint: disable=import-outside-toplevel
        # Looking for devices loads the GPU platform, which logs its start-up error now, caught.
        tensorflow.config.list_physical_devices()


def hide_library_info_lines(verbosity: int) -> None:
    """Drops the INFO (and DEBUG) lines TensorFlow, Keras and TFDS log through absl's handler,
    and MLflow's, unless absl's `--verbosity` is 1 or more. Call after absl has parsed the flags,
    before MLflow is imported."""
    if verbosity >= 1:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    directories = tuple(os.path.dirname(sys.modules[name].__file__) + os.sep
                        for name in _LIBRARIES if name in sys.modules)
    library_filter = _LibraryInfoFilter(directories)
    absl_logging.get_absl_handler().addFilter(library_filter)
    # TensorFlow's own logger may print through a handler of its own ("INFO:tensorflow:...").
    logging.getLogger("tensorflow").addFilter(library_filter)


class _LibraryInfoFilter(logging.Filter):
    """Passes warnings and errors, and every record logged from outside `directories`."""

    def __init__(self, directories: tuple[str, ...]):
        super().__init__()
        self.directories = directories

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(self.directories)


@contextlib.contextmanager
def _stderr_without_lines_below(level: int):
    """Catches what is written to file descriptor 2 (C++ code writes there directly, not through
    `sys.stderr`) inside the block into a temporary file, then writes it back without the C++ log
    lines below `level`. A file, not a pipe: a full pipe would block the writer."""
    if level == 0:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().decode(errors="replace").splitlines(keepends=True)
            shown = [line for line in lines if _shows(line, level)]
            if any(_NO_GPU_DRIVER in line for line in shown) and not _has_nvidia_gpus():
                shown = [line for line in shown if _NO_GPU_DRIVER not in line]
            sys.stderr.write("".join(shown))
            sys.stderr.flush()


def _has_nvidia_gpus() -> bool:
    """Whether the NVIDIA driver lists GPUs (trainer/gpu_check.py, which imports TensorFlow)."""
    from trainer import gpu_check  # pylint: disable=import-outside-toplevel
    return bool(gpu_check.nvidia_gpus())


def _shows(line: str, level: int) -> bool:
    """Whether `line` passes TF_CPP_MIN_LOG_LEVEL `level`; lines that are not C++ log lines do."""
    if line.startswith(_ABSL_PREAMBLE):
        return False  # It only announces the C++ lines that follow it.
    match = _CPP_LOG_LINE.match(line)
    return not match or _SEVERITIES.index(match.group(1)) >= level


def quiet_unless_chief(*, worker: int, workers: int, verbosity_given: bool) -> None:
    """Under multi-worker training the chief (worker 0) prints the run; the other workers print
    warnings and errors only (as Lightning prints on rank 0), since their lines would repeat its.
    An explicit --verbosity wins (`verbosity_given`), e.g. --verbosity=0 to read one worker's
    info lines."""
    if worker == 0 or verbosity_given:
        return
    absl_logging.info("worker %d of %d prints only warnings and errors (--verbosity=0: all); "
                      "the chief prints the run", worker, workers)
    absl_logging.set_verbosity(absl_logging.WARNING)
