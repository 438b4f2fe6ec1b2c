"""The learning-rate finder: a learning rate to train on, found in about 100 optimizer steps.

Lightning's `Tuner.lr_find`, after Leslie Smith's learning-rate range test: train while the
learning rate grows exponentially from `min_rate` to `max_rate`, one optimizer step per rate, and
watch the loss. It barely moves while the rate is too small, falls fast where the rate is good
and blows up once it is too large. The suggestion is the rate at which the smoothed loss falls
fastest (its steepest descent against the log of the rate).

    find_learning_rate(trainer, module, datamodule)   the search; returns a `LearningRateSearch`
    use_learning_rate(trainer, rate)                  trains on `rate` from now on
    LearningRateFinder                                the callback behind `--lr_find`: searches
                                                      when `fit` starts, writes lr_find.csv and
                                                      lr_find.png, trains on the suggestion if asked

The search runs the Trainer's own traced training loop (`StepFunctions.train_loop`, one step per
call, the rate set between calls) under the Trainer's strategy, so N replicas and M workers search
exactly as they train. Afterwards every variable a checkpoint holds (the weights, the optimizer's
slots and `iterations`, which is also the data position, the training metrics) is put back as it
was on every replica: a run that searches first trains as if it had not.
"""

import contextlib
import dataclasses
import math

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import files
from trainer.callbacks import base
from trainer.vision import plots

DIVERGENCE = 4.0  # The search stops once the smoothed loss exceeds this multiple of its minimum.


@dataclasses.dataclass(frozen=True)
class LearningRateSearch:
    """What `find_learning_rate` saw, one entry per optimizer step.

    Attributes:
        learning_rates: the rate of each step.
        losses: each step's training loss (mean over its global batch).
        smoothed_losses: each loss averaged with the `num_steps // 10` losses on either side
            (fewer at the ends). A centered average does not lag behind the ramp as an
            exponential one (Lightning's) does, which moves the steepest descent to larger rates.
        suggestion: the rate where the smoothed loss falls fastest (None: too few steps).
        stop_reason: "max_rate" (the ramp ended) or "diverged" (the loss blew up first).
    """

    learning_rates: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    suggestion: float | None
    stop_reason: str

    def write_csv(self, path: str) -> None:
        """Writes step, learning_rate, loss and smoothed_loss, one row per step."""
        files.write_csv(path, ["step", "learning_rate", "loss", "smoothed_loss"], [
            [step, *(f"{value:.6g}" for value in row)] for step, row in enumerate(
                zip(self.learning_rates, self.losses, self.smoothed_losses))])

    def summary(self) -> str:
        """One line: the range searched, why it stopped, and the suggestion."""
        stopped = ("the ramp ended" if self.stop_reason == "max_rate" else
                   f"the smoothed loss passed {DIVERGENCE:g}x its minimum")
        suggestion = ("none (too few steps to tell)" if self.suggestion is None
                      else f"{self.suggestion:.3g} (steepest descent of the smoothed loss)")
        return (f"lr_find: {len(self.losses)} steps, learning rate {self.learning_rates[0]:.3g} "
                f"to {self.learning_rates[-1]:.3g}, stopped because {stopped} | suggested "
                f"learning rate {suggestion}")


def find_learning_rate(trainer, module, datamodule, *, min_rate: float = 1e-7,
                       max_rate: float = 1.0, num_steps: int = 100) -> LearningRateSearch:
    """Runs the learning-rate range test with `trainer` and puts everything back afterwards.

    Every worker must call it (the steps are collectives); each sees the same all-reduced losses,
    so all stop at the same step.

    Args:
        min_rate, max_rate: the first and the last learning rate of the exponential ramp.
        num_steps: optimizer steps from `min_rate` to `max_rate` (fewer if the loss diverges).

    Raises:
        ValueError: naming the argument, if the range or the step count is unusable.
    """
    if not 0 < min_rate < max_rate:
        raise ValueError(f"lr_find_min ({min_rate}) and lr_find_max ({max_rate}) must satisfy "
                         "0 < lr_find_min < lr_find_max")
    if num_steps < 2:
        raise ValueError(f"lr_find_steps ({num_steps}) must be at least 2")
    # The Trainer's own set-up: the module's variables and optimizer, in its strategy's scope.
    trainer.setup(module, datamodule)
    rates = np.geomspace(min_rate, max_rate, num_steps).tolist()
    half_width = num_steps // 10
    saved = _capture(trainer)
    try:
        losses, diverged = _ramp(trainer, rates, half_width)
    finally:
        _restore(trainer, saved)
    rates = rates[:len(losses)]
    smoothed = [float(np.mean(losses[max(0, i - half_width):i + half_width + 1]))
                for i in range(len(losses))]
    return LearningRateSearch(rates, losses, smoothed, _steepest_descent(rates, smoothed),
                              "diverged" if diverged else "max_rate")


def _ramp(trainer, rates, half_width):
    """Trains one step per rate until the rates end or the loss diverges; returns the losses and
    whether it diverged.

    Diverged: a loss is not finite, or the mean of the last 2 x `half_width` + 1 losses (the
    smoothing window, which cannot look ahead during the search) passes DIVERGENCE x its lowest.
    """
    functions = trainer.step_functions
    start_epoch, steps_done = divmod(trainer.global_step, trainer.steps_per_epoch)
    iterator = iter(trainer.data.training(start_epoch=start_epoch, steps_done=steps_done,
                                          steps_per_epoch=trainer.steps_per_epoch))
    losses, lowest = [], math.inf
    with _own_traces(functions), _learning_rate_control(trainer) as set_rate:
        train_loop = functions.traced("train", functions.train_loop)
        for rate in rates:
            set_rate(rate)
            # A host sync per step: the search must see every loss.
            losses.append(float(train_loop(iterator, tf.constant(1))["loss"]))
            recent = float(np.mean(losses[-(2 * half_width + 1):]))
            lowest = min(lowest, recent)
            if not math.isfinite(recent) or recent > DIVERGENCE * lowest:
                return losses, True
    return losses, False


def _steepest_descent(rates, smoothed):
    """The rate where the smoothed loss falls fastest against log(rate), or None.

    Only the descent to the lowest smoothed loss counts: past it the loss rises, and a dip
    between two spikes of a diverging loss is no rate to train on. The first tenth of the steps
    is left out too: the loss is still at its starting value there.
    """
    if not np.isfinite(smoothed).any():
        return None
    first, lowest = len(rates) // 10, int(np.nanargmin(smoothed))
    if lowest - first < 2:
        return None
    slopes = np.gradient(smoothed[first:lowest + 1], np.log(rates[first:lowest + 1]))
    return float(rates[first + int(np.argmin(slopes))])


@contextlib.contextmanager
def _own_traces(functions):
    """Within the block the step functions are traced afresh, and the traces are dropped after:
    they hold the search's learning rate, which the run's own traces must never see."""
    kept, functions.compiled = functions.compiled, {}
    try:
        yield
    finally:
        functions.compiled = kept


@contextlib.contextmanager
def _learning_rate_control(trainer):
    """Yields `set_rate(rate)`, which sets the learning rate of the steps that follow.

    Keras keeps a float learning rate as a variable and a schedule as the object itself, both in
    the private `_learning_rate` (there is no public getter for the object). The variable is
    assigned, and restored with the optimizer's other variables; a schedule is replaced by a
    variable for the search and put back after it.
    """
    optimizer = trainer.optimizer
    current = optimizer._learning_rate  # pylint: disable=protected-access
    if isinstance(current, tf.keras.Variable):
        yield current.assign
        return
    with trainer.strategy.scope():
        rate = tf.Variable(0.0, trainable=False, name="lr_find_rate")
    optimizer.learning_rate = lambda: rate  # Keras calls a callable learning rate every step.
    try:
        yield rate.assign
    finally:
        optimizer.learning_rate = current


def _checkpointed_variables(trainer) -> list:
    """Every variable a checkpoint of the run holds (trainer/checkpointing.py)."""
    module = trainer.module
    metrics = [variable for metric in module.logbook.metrics["train"].values()
               for variable in metric.variables]
    return [*module.variables, *trainer.optimizer.variables, *metrics,
            *tf.nest.flatten(trainer.step_functions.checkpointed())]


def _replica_copies(trainer, variable) -> tuple:
    """The variable's copy on each of this process's replicas (BatchNorm's may differ)."""
    value = variable.value if isinstance(variable, tf.keras.Variable) else variable
    return trainer.strategy.experimental_local_results(value)


def _capture(trainer) -> list:
    return [[np.array(copy) for copy in _replica_copies(trainer, variable)]
            for variable in _checkpointed_variables(trainer)]


def _restore(trainer, saved) -> None:
    for variable, values in zip(_checkpointed_variables(trainer), saved):
        for copy, value in zip(_replica_copies(trainer, variable), values):
            copy.assign(value)


def use_learning_rate(trainer, rate: float) -> None:
    """Makes `rate` the learning rate of the training that follows (`--learning_rate=auto`).

    As Lightning's `update_attr`: sets `module.learning_rate`, then gives the optimizer what the
    module's `configure_optimizers` builds from it: the rate itself, or a schedule around it
    (a warmup to it, a cosine decay from it). The step functions are retraced when next called:
    a trace keeps the schedule it was traced with.

    Raises:
        TypeError: if the module has no `learning_rate` attribute to set.
    """
    module, optimizer = trainer.module, trainer.optimizer
    if not hasattr(module, "learning_rate"):
        raise TypeError(f"learning_rate ('auto') needs {type(module).__name__}.learning_rate, "
                        "read by its configure_optimizers, to set the found rate")
    module.learning_rate = rate
    # Only its learning rate is used: built outside the strategy's scope, no collective creates
    # its variables.
    rebuilt = module.configure_optimizers()
    new = rebuilt._learning_rate  # pylint: disable=protected-access
    current = optimizer._learning_rate  # pylint: disable=protected-access
    if isinstance(current, tf.keras.Variable):
        current.assign(float(tf.convert_to_tensor(new)))
    else:
        optimizer.learning_rate = new
    trainer.step_functions.compiled.clear()


class LearningRateFinder(base.Callback):
    """Searches for a learning rate when `fit` starts (`find_learning_rate`), once per run.

    The chief logs the search's summary and writes its CSV and PNG. The rate found is part of the
    run's checkpointed state: a resumed run does not search again, and with `update_learning_rate`
    it trains on the rate its start found.

    Args:
        csv_path, png_path: where to write the search's steps and its plot (None: not written).
        update_learning_rate: train on the suggested rate (`use_learning_rate`).
        **search_options: `min_rate`, `max_rate`, `num_steps` of `find_learning_rate`.
    """

    writes_files = True  # Left out of a fast_dev_run, which trains one step, not a search.

    def __init__(self, *, csv_path: str | None = None, png_path: str | None = None,
                 update_learning_rate: bool = False, **search_options):
        self.csv_path = csv_path
        self.png_path = png_path
        self.update_learning_rate = update_learning_rate
        self.search_options = search_options
        self.learning_rate: float | None = None  # The suggestion, once found.

    def on_train_begin(self, logs):
        trainer = self.trainer
        if self.learning_rate is None:
            search = find_learning_rate(trainer, trainer.module, trainer.datamodule,
                                        **self.search_options)
            if trainer.is_chief:
                self._report(search)
            if search.suggestion is None and self.update_learning_rate:
                raise RuntimeError(f"{search.summary()}: no rate to train on with "
                                   "learning_rate ('auto'); raise lr_find_steps or lower "
                                   "lr_find_max")
            self.learning_rate = search.suggestion
        elif trainer.is_chief:
            logging.info("lr_find: not run again; this run's search suggested %.3g",
                         self.learning_rate)
        if self.update_learning_rate:
            use_learning_rate(trainer, self.learning_rate)
            if trainer.is_chief:
                logging.info("training on learning rate %.3g (--learning_rate=auto)",
                             self.learning_rate)

    @property
    def sets_learning_rate(self):
        return self.update_learning_rate

    def _report(self, search):
        logging.info("%s", search.summary())
        if self.csv_path:
            search.write_csv(self.csv_path)
            logging.info("wrote %s", self.csv_path)
        if self.png_path and plots.plot_learning_rate_search(
                search.learning_rates, search.losses, search.smoothed_losses, search.suggestion,
                self.png_path):
            logging.info("wrote %s", self.png_path)

    def state_dict(self):
        return {} if self.learning_rate is None else {"learning_rate": self.learning_rate}

    def load_state_dict(self, state):
        self.learning_rate = state.get("learning_rate")
