"""How a run stops early: signals (SIGTERM/SIGINT/SIGUSR1), divergence and anomalies (NaN/Inf),
with clear messages. What follows a SIGUSR1 inside a SLURM job, a requeue, is
trainer/cluster/slurm.py's."""

import contextlib
import math
import signal
import threading

from absl import logging
import tensorflow as tf

from trainer import distribute


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
    """Raised by `fit` with `detect_anomaly` when a step's loss or gradients are NaN or Inf
    (under fp16 loss scaling: gradients that overflow even at the minimum scale)."""

    @classmethod
    def at(cls, step: int, loss: float, checkpointer) -> "AnomalyDetected":
        latest = checkpointer.latest if checkpointer else None
        kept = (f"the last good checkpoint, {latest}, is untouched" if latest
                else "no checkpoint had been written")
        return cls(f"detect_anomaly: the loss or the gradients of step {step} are NaN or Inf "
                   f"(loss {loss}); the step was not applied and training stopped; {kept}")


class TrainingDiverged(RuntimeError):
    """Raised by `fit` when the training loss, or a weight, has become NaN or Inf.

    It is raised before anything else happens after the loop call that diverged: no callback,
    validation or checkpoint sees the diverged model, so the latest checkpoint is the last good one.
    """

    @classmethod
    def at(cls, what: str, first_step: int, step: int, checkpointer) -> "TrainingDiverged":
        latest = checkpointer.latest if checkpointer else None
        kept = (f"the latest checkpoint is still the last good one, {latest}" if latest
                else "no checkpoint had been written")
        steps = f"step {step}" if first_step == step else f"steps {first_step}-{step}"
        return cls(f"training diverged: {what} after step {step} (it turned NaN or Inf in "
                   f"{steps}: the loss is read once per loop call); training stopped and {kept}. "
                   "Usual causes: a learning rate too high for the model (learning_rate), or "
                   "float16 overflow (precision 16-mixed; bf16-mixed and 32 have float32's "
                   "range). detect_anomaly (--detect_anomaly) checks every step and stops at the "
                   "first bad one")


def stop_if_diverged(loss: float, *, weights_finite: bool, first_step: int, step: int,
                     checkpointer) -> None:
    """Raises `TrainingDiverged` if `loss` is NaN or Inf, or a weight is (`weights_finite` False).

    The host loop calls it once per loop call, before it logs, validates or saves anything, with
    what the call computed (trainer/steps.py: `train_loop`). The weights are checked too because
    a step's update can overflow while its loss is still finite.

    Args:
        loss: the last step's loss, already read to the host.
        weights_finite: whether every trainable weight was finite after the call.
        first_step, step: the first and last optimizer step of the loop call.
        checkpointer: to name the latest checkpoint (or None).
    """
    if not math.isfinite(loss):
        raise TrainingDiverged.at(f"the training loss is {loss}", first_step, step, checkpointer)
    if not weights_finite:
        raise TrainingDiverged.at("a weight is NaN or Inf", first_step, step, checkpointer)


def vote(trainer) -> bool:
    """Asks every worker whether it was signalled or asked to stop; returns whether any was
    signalled, and requests the stop on this worker if another worker's callback asked for one.

    Under multi-worker every worker must stop at the same step (saving is a collective), so a
    signal or a stop request (e.g. Timer's, which reads each host's clock) on any worker stops
    all. The host loop votes once per loop call: a signal that lands during the save that follows
    counts at the next vote. On one worker this reads the flags and communicates nothing.
    """
    strategy = trainer.strategy
    # pylint: disable-next=protected-access
    signalled = distribute.any_worker(strategy, trainer._stop_signal is not None)
    if distribute.any_worker(strategy, trainer.should_stop) and not trainer.should_stop:
        trainer.request_stop("another worker's request")
    return signalled


@contextlib.contextmanager
def held_back():
    """Within the block (a checkpoint being written) SIGINT and SIGTERM are noted, not acted on,
    so that a second Ctrl-C cannot cut a save in half (it would leave a `ckpt-N_temp/` and no
    checkpoint); after the block each noted signal goes to the handler it would have reached.
    Only the main thread can handle signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted = []
    previous = {sig: signal.signal(sig, lambda signal_number, frame: noted.append(signal_number))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for signal_number in noted:
        handler = signal.getsignal(signal_number)
        if callable(handler):
            handler(signal_number, None)  # E.g. the second Ctrl-C's KeyboardInterrupt, now.
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signal_number)


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
