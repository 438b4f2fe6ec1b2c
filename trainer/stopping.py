"""How a run stops early: signals (SIGTERM/SIGINT/SIGUSR1) and anomalies (NaN/Inf), with clear
messages. What follows a SIGUSR1 inside a SLURM job, a requeue, is trainer/slurm.py's."""

import contextlib
import signal
import threading

from absl import logging


class TrainingInterrupted(Exception):
    """Raised by `fit` after a SIGTERM, SIGINT or SIGUSR1, once the state is saved."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number

    @classmethod
    def after(cls, signal_number: int, step: int, checkpointer) -> "TrainingInterrupted":
        saved = checkpointer.latest if checkpointer else "no checkpoint"
        return cls(f"interrupted by {signal.Signals(signal_number).name} at step {step}; "
                   f"state saved in {saved}", signal_number)


class AnomalyDetected(RuntimeError):
    """Raised by `fit` with `detect_anomaly` when a step's loss or gradients are NaN or Inf."""

    @classmethod
    def at(cls, step: int, loss: float, checkpointer) -> "AnomalyDetected":
        latest = checkpointer.latest if checkpointer else None
        kept = (f"the last good checkpoint, {latest}, is untouched" if latest
                else "no checkpoint had been written")
        return cls(f"detect_anomaly: the loss or the gradients of step {step} are NaN or Inf "
                   f"(loss {loss}); the step was not applied and training stopped; {kept}")


@contextlib.contextmanager
def on_signals(trainer):
    """SIGTERM, SIGUSR1 or a first SIGINT set `trainer._stop_signal`: the host loop saves a
    checkpoint and stops after the current call. A second SIGINT interrupts at once. SIGUSR1 is
    what SLURM sends before a job's time limit (`#SBATCH --signal=USR1@90`); its default action
    would kill the process unsaved. Only the main thread can install signal handlers; elsewhere
    this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signal_number, frame):
        del frame
        trainer._stop_signal = signal_number  # pylint: disable=protected-access
        signal.signal(signal.SIGINT, signal.default_int_handler)
        logging.warning("%s received: saving a checkpoint after the current steps "
                        "(Ctrl-C again to stop at once)", signal.Signals(signal_number).name)

    previous = {sig: signal.signal(sig, request_stop)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
