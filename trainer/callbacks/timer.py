"""`Timer`: stop training after a wall-clock budget (`--max_time`), resumable."""

import re
import time

from absl import logging

from trainer.callbacks import base


def parse_duration(text: str) -> float:
    """Parses "DD:HH:MM:SS", "HH:MM:SS" or "MM:SS" into seconds.

    Raises:
        ValueError: naming the value, if it is not one of those forms.
    """
    if not re.fullmatch(r"\d+(:\d+){1,3}", text or ""):
        raise ValueError(f"max_time ({text!r}) must be DD:HH:MM:SS, HH:MM:SS or MM:SS, "
                         "e.g. 00:12:00:00 for 12 hours")
    seconds = 0.0
    for part, unit in zip(reversed(text.split(":")), (1, 60, 3600, 86400)):
        seconds += int(part) * unit
    return seconds


class Timer(base.Callback):
    """Stops training once it has run for `max_seconds` (time before a resume counts too).

    The check runs after each traced loop call, so the run stops within one call of the limit;
    the Trainer then saves a checkpoint, and a rerun with a larger limit continues from it.
    """

    def __init__(self, max_seconds: float):
        if max_seconds <= 0:
            raise ValueError(f"max_time ({max_seconds} s) must be positive")
        self.max_seconds = max_seconds
        self.used_before = 0.0  # Training seconds of earlier runs that this one resumes.
        self._start = None

    def on_train_begin(self, logs):
        self._start = time.monotonic()
        if self.elapsed >= self.max_seconds:  # Restored from a run that had used it all.
            self.trainer.request_stop("max_time")

    def on_train_end(self, logs):
        self.used_before, self._start = self.elapsed, None  # Only training time counts.

    @property
    def elapsed(self) -> float:
        return self.used_before + (time.monotonic() - self._start if self._start else 0.0)

    def on_train_batch_end(self, step, logs):
        if self.elapsed >= self.max_seconds and not self.trainer.should_stop:
            self.trainer.request_stop("max_time")
            logging.info("max_time: stopping at step %d after %.0f s of training (limit %.0f s)",
                         step, self.elapsed, self.max_seconds)

    def state_dict(self):
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state):
        self.used_before = state["elapsed"]
