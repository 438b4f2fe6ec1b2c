"""The lines a run prints: its plan, its epochs, its test, in one fixed field order.

    epoch 3/10 | step 2343 | train_loss 0.7249 | ... | val_accuracy 0.6365 | 171.9 s | 291 img/s
"""

from trainer import distribute

_TIMINGS = ("_seconds", "_per_s")  # Suffixes of the logs' timing entries.


def plan_lines(strategy, datamodule, *, steps_per_epoch: int, epochs: int,
               max_steps: int | None, micro_batches: int, limited: bool) -> list[str]:
    """What `fit` is about to do: devices, replicas, workers, batches, steps."""
    replicas = strategy.num_replicas_in_sync
    batch_size = datamodule.batch_size
    micro = f" x {micro_batches} micro-batches per optimizer step" if micro_batches > 1 else ""
    lines = [distribute.describe(strategy),
             f"global batch {batch_size} = {replicas} replica(s) x {batch_size // replicas} per "
             f"replica{micro}, on {distribute.num_workers(strategy)} worker(s) | "
             f"{steps_per_epoch} steps per epoch | {epochs} epochs"
             + (f" | at most {max_steps} steps" if max_steps else "")]
    dropped = getattr(datamodule, "dropped_per_epoch", lambda: 0)()
    if dropped and not limited:
        lines.append(f"{dropped} training examples per epoch do not fill a global batch and are "
                     "left out of that epoch (a different few each epoch: the order is reshuffled)")
    return lines


def epoch_line(epoch: int, epochs: int, step: int, logs: dict) -> str:
    return (f"epoch {epoch + 1}/{epochs} | step {step} | {format_logs(metrics_only(logs))} | "
            f"{logs['train_seconds']:.1f} s | {logs['train_images_per_s']:.0f} img/s")


def metrics_only(logs: dict) -> dict:
    """The logs without their timing entries."""
    return {name: value for name, value in logs.items() if not name.endswith(_TIMINGS)}


def format_logs(logs: dict) -> str:
    return " | ".join(f"{name} {value}" if isinstance(value, int) else f"{name} {value:.4f}"
                      for name, value in logs.items())
