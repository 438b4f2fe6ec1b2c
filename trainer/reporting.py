"""The lines a run prints: its plan, its epochs, its test, in one fixed field order; and the
training speed they report (`Throughput`).

    epoch 3/10 | step 2343 | train_loss 0.7249 | ... | val_accuracy 0.6365 | 171.9 s | 291 img/s
"""

import time

from trainer import distribute

# Names of the entries of logs and results that measure time, not the model: `train_seconds`,
# `train_images_per_s`, `wall_time_s`. They differ between two runs of the same flags.
_TIMINGS = ("_seconds", "_per_s", "_time_s")


def plan_lines(trainer) -> list[str]:
    """What a `Trainer`'s `fit` is about to do: devices, replicas, workers, batches, steps."""
    strategy, datamodule = trainer.strategy, trainer.datamodule
    epochs, max_steps = trainer.loop_config.epochs, trainer.loop_config.max_steps
    micro_batches = trainer.step_config.accumulate_grad_batches
    replicas = strategy.num_replicas_in_sync
    batch_size = datamodule.batch_size
    micro = f" x {micro_batches} micro-batches per optimizer step" if micro_batches > 1 else ""
    lines = [distribute.describe(strategy),
             f"global batch {batch_size} = {replicas} replica(s) x {batch_size // replicas} per "
             f"replica{micro}, on {distribute.num_workers(strategy)} worker(s) | "
             f"{trainer.steps_per_epoch} steps per epoch | {epochs} epochs"
             + (f" | at most {max_steps} steps" if max_steps else "")]
    describe = getattr(datamodule, "describe", None)  # e.g. an image folder's classes and splits
    if describe:
        lines.append(describe())
    eval_batch_size = getattr(datamodule, "eval_batch_size", batch_size)
    if eval_batch_size != batch_size:
        lines.append(f"evaluation batch {eval_batch_size} = {replicas} replica(s) x "
                     f"{eval_batch_size // replicas} per replica (no gradients: a larger batch)")
    dropped = getattr(datamodule, "dropped_per_epoch", lambda: 0)()
    if dropped and not trainer.loop_config.limit_train_batches:
        lines.append(f"{dropped} training examples per epoch do not fill a global batch and are "
                     "left out of that epoch (a different few each epoch: the order is reshuffled)")
    return lines


def epoch_line(epoch: int, epochs: int, step: int, logs: dict) -> str:
    return (f"epoch {epoch + 1}/{epochs} | step {step} | {format_logs(metrics_only(logs))} | "
            f"{logs['train_seconds']:.1f} s | {logs['train_images_per_s']:.0f} img/s")


def summary(what: str, logs: dict) -> str:
    """`what`, then the logs' metrics: "test | test_loss 0.8713 | test_accuracy 0.7012"."""
    return f"{what} | {format_logs(metrics_only(logs))}"


class Throughput:
    """Training speed in examples per second, per loop call and over an epoch's calls.

    Args:
        step: the optimizer step at which the measured steps start.
        examples_per_step: the examples one optimizer step sees (its global batch x micro-batches).
    """

    def __init__(self, step: int, *, examples_per_step: int):
        self.examples_per_step = examples_per_step
        self.first_step = self.last_step = step
        self.start_time = self.last_time = time.perf_counter()

    def since(self, step: int) -> float:
        """Examples per second since the previous call (the first call: since the start)."""
        now = time.perf_counter()
        speed = (step - self.last_step) * self.examples_per_step / (now - self.last_time)
        self.last_step, self.last_time = step, now
        return speed

    def epoch_logs(self, step: int) -> dict[str, float]:
        """`train_seconds` and `train_images_per_s` from the start to `step`."""
        seconds = time.perf_counter() - self.start_time
        return {"train_seconds": seconds,
                "train_images_per_s": (step - self.first_step) * self.examples_per_step / seconds}


def metrics_only(logs: dict) -> dict:
    """The logs without their timing entries."""
    return {name: value for name, value in logs.items() if not name.endswith(_TIMINGS)}


def timings_only(logs: dict) -> dict:
    """The logs' timing entries alone."""
    return {name: value for name, value in logs.items() if name.endswith(_TIMINGS)}


def format_logs(logs: dict) -> str:
    return " | ".join(f"{name} {value}" if isinstance(value, int) else f"{name} {value:.4f}"
                      for name, value in logs.items())
