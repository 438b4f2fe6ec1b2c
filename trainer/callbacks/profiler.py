"""`Profiler`: a TensorFlow profiler trace of chosen optimizer steps (`--profile_steps=A,B`)."""

from absl import logging
import tensorflow as tf

from trainer.callbacks import base


class Profiler(base.Callback):
    """Records a TensorFlow profiler trace of the optimizer steps after `first` up to `last`.

    Its `step_boundaries` make the Trainer end loop calls at both steps, so the trace covers
    exactly those steps. Open it in TensorBoard's Profile tab (it goes to `logdir/plugins/profile`).

    Args:
        first: the trace starts after this optimizer step (0: before the first step).
        last: the trace stops after this step; `0 <= first < last`.
        logdir: where the profiler writes, e.g. `<model_dir>/tensorboard`.
    """

    def __init__(self, first: int, last: int, logdir: str):
        if not 0 <= first < last:
            raise ValueError(f"profile_steps ({first},{last}) must be two optimizer steps A,B "
                             "with 0 <= A < B")
        if not logdir:
            raise ValueError("Profiler needs logdir: where the profiler writes its trace")
        self.first, self.last, self.logdir = first, last, logdir
        self._running = False

    @property
    def step_boundaries(self):
        return (self.first, self.last)

    def on_train_begin(self, logs):
        self.on_train_batch_end(self.trainer.global_step, logs)

    def on_train_batch_end(self, step, logs):
        if not self.trainer.is_chief:
            return
        if step == self.first and not self._running:
            tf.profiler.experimental.start(self.logdir)
            self._running = True
        elif step >= self.last and self._running:
            self._stop()

    def on_train_end(self, logs):
        if self._running:
            self._stop()

    def _stop(self):
        tf.profiler.experimental.stop()
        self._running = False
        logging.info("profiler: traced steps %d-%d into %s", self.first + 1, self.last, self.logdir)


def parse_profile_steps(values: list[str] | None) -> tuple[int, int] | None:
    """Parses the `--profile_steps` list ("A", "B") into (A, B); None when it is not set.

    Raises:
        ValueError: naming the flag and the value, if it is not two integers.
    """
    if not values:
        return None
    try:
        first, last = (int(value) for value in values)
    except ValueError:
        raise ValueError(f"profile_steps ({','.join(values)}) must be two optimizer steps A,B, "
                         "e.g. 10,20") from None
    return first, last
