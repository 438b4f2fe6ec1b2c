"""What a run shows on the console: `ProgressBar` (one bar per epoch) and `ModelSummary` (layers).

    epoch 3/10 [=========>           ] 412/782 | 2,951 img/s | ETA 0:08 | train_loss 0.8123 | ...

On a terminal (a TTY) the bar is redrawn in place after every traced loop call; when the output
is a file or a pipe it prints one plain line every `every_s` seconds instead, so logs stay short.
Only the chief process draws.
"""

import sys
import time

import numpy as np
import tensorflow as tf

from trainer.callbacks import base

_WIDTH = 24  # Characters of the bar itself.


class ProgressBar(base.Callback):
    """Shows steps, images/s, ETA and the running metrics of the current epoch.

    Args:
        every_s: seconds between lines when the output is not a terminal.
        stream: where to draw (default: standard error, like Keras and Lightning).
    """

    def __init__(self, *, every_s: float = 20.0, stream=None):
        if every_s < 0:
            raise ValueError(f"every_s ({every_s}) must be >= 0")
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self._epoch = 0
        self._epoch_start_step = 0
        self._epoch_start_time = 0.0
        self._last_line_time = 0.0
        self._drawn = False

    @property
    def _is_tty(self) -> bool:
        return getattr(self.stream, "isatty", lambda: False)()

    def on_epoch_begin(self, epoch, logs):
        self._epoch = epoch
        self._epoch_start_step = self.trainer.global_step
        self._epoch_start_time = self._last_line_time = time.monotonic()

    def on_train_batch_end(self, step, logs):
        if not self.trainer.is_chief:
            return
        now = time.monotonic()
        if not self._is_tty and now - self._last_line_time < self.every_s:
            return
        self._last_line_time = now
        self._write(self._line(step, logs, now), in_place=self._is_tty)

    def on_epoch_end(self, epoch, logs):
        if self.trainer.is_chief and self._drawn:
            self.stream.write("\n")  # Keep the finished bar; the epoch line follows in the log.
            self.stream.flush()
            self._drawn = False

    def _line(self, step, logs, now) -> str:
        steps_per_epoch = self.trainer.steps_per_epoch
        first_step = self._epoch * steps_per_epoch
        done = step - first_step
        rate = (step - self._epoch_start_step) / max(now - self._epoch_start_time, 1e-9)
        eta = (steps_per_epoch - done) / rate if rate > 0 else 0.0
        filled = int(_WIDTH * done / steps_per_epoch)
        bar = "=" * filled + (">" if filled < _WIDTH else "") + " " * (_WIDTH - filled - 1)
        metrics = " | ".join(f"{name} {value:.4f}" for name, value in logs.items()
                             if name.startswith("train_"))
        epochs = self.trainer.loop_config.epochs
        return (f"epoch {self._epoch + 1}/{epochs} [{bar}] {done}/{steps_per_epoch}"
                f" | {logs.get('images_per_s', 0):,.0f} img/s | ETA {_minutes(eta)} | {metrics}")

    def _write(self, line, *, in_place):
        if in_place:
            self.stream.write("\r" + line + "\033[K")  # \033[K clears what a longer line left.
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


class ModelSummary(base.Callback):
    """Prints the module's layers, output shapes and parameter counts when training begins.

    Only the chief prints. The layers are listed in the order a forward pass calls them, nested
    layers indented under the layer that calls them:

        layer                                   output shape               parameters
        sequential_cnn (SequentialCNN)          (None, 10)                    225,034
          conv2d (Conv2D)                       (None, 30, 30, 32)                896
          ...
    """

    def on_train_begin(self, logs):
        if self.trainer.is_chief:
            print(summary(self.trainer.module, self.trainer.datamodule.input_shape), flush=True)


def summary(model, input_shape: tuple[int, ...]) -> str:
    """`model`'s layers as a table (see `ModelSummary`), then its parameter counts."""
    rows = [("  " * depth + f"{layer.name} ({type(layer).__name__})", str(shape),
             f"{layer.count_params():,}") for depth, layer, shape in _layer_calls(model, input_shape)]
    width = max([len("layer"), *(len(name) for name, _, _ in rows)])
    lines = [f"model {model.name} ({type(model).__name__})",
             f"  {'layer':<{width}}  {'output shape':<20} {'parameters':>12}"]
    lines += [f"  {name:<{width}}  {shape:<20} {count:>12}" for name, shape, count in rows]
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    total = model.count_params()
    lines += [f"Total params: {total:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}"]
    return "\n".join(lines)


def _layer_calls(model, input_shape) -> list[tuple[int, object, tuple | None]]:
    """(depth, layer, output shape) of every layer call in one forward pass of `model`, in order.

    Keras' own `summary()` shows "?" for the layers of a subclassed model: it knows the shapes of
    layers called on `tf.keras.Input`s only. So each layer's `call` is wrapped for the duration
    of one symbolic pass (`compute_output_spec`: shapes only, no computation), to note its output.
    """
    calls, depth = [], 0
    layers = model._flatten_layers(include_self=False)  # pylint: disable=protected-access

    def noting(layer):
        call = layer.call

        def noting_call(*args, **kwargs):
            nonlocal depth
            row = [depth, layer, None]
            calls.append(row)
            depth += 1
            try:
                outputs = call(*args, **kwargs)
            finally:
                depth -= 1
            row[2] = tuple(outputs.shape) if hasattr(outputs, "shape") else None
            return outputs
        return noting_call

    for layer in layers:
        layer.call = noting(layer)
    try:
        model.compute_output_spec(tf.keras.KerasTensor((None, *input_shape)))
    finally:
        for layer in layers:
            del layer.call  # The class's own `call` again.
    return [tuple(row) for row in calls]


def _minutes(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
