"""`ModelWeights`: the run's model, the one set of weights that every consumer gets.

With moving averages of the weights (Keras' `use_ema`, `--ema_decay`) a module has two sets of
trainable weights: its live weights, which the optimizer steps, and their averages, which the
optimizer keeps beside them. One rule says which of them is the run's model:

    the model is the weights that validation scores: the averages when EMA is on, the
    module's own weights otherwise.

Every consumer gets exactly those, through this class and nothing else:

    in_module()          within the block the module holds the model: validation, ranking by any
                         monitor, the test, predictions, the export, early stopping's best copy
    save(path)           the model to disk: the top-k weights in best/, the evaluator's best
    load(path), assign(values)
                         a saved model becomes the run's model again (restoring the best, early
                         stopping's restore): the live weights AND the averages take its values,
                         so that every later reader gets it, not the averages of the last step
    read_checkpoint(path)
                         the model of a full run checkpoint (the evaluator task): the module and
                         the optimizer, whose averages are the model under EMA

Before the optimizer's first step the averages hold nothing yet (Keras fills them at step 1 with
the weights themselves): the model is then the module's own weights. Non-trainable weights
(BatchNorm's moving statistics) have no averages: they belong to the model as they are.
"""

import contextlib

import tensorflow as tf


def uses_ema(optimizer) -> bool:
    """Whether `optimizer` keeps exponential moving averages of the weights (Keras' `use_ema`)."""
    return bool(getattr(optimizer, "use_ema", False))


class ModelWeights:
    """The model of one module trained by one optimizer (None: a module without an optimizer).

    Call the methods in cross-replica context (outside `strategy.run`); those that read or write
    files need the strategy's scope, as restoring any variable does.
    """

    def __init__(self, module: tf.keras.Model, optimizer=None):
        self.module, self.optimizer = module, optimizer

    @property
    def averaged(self) -> bool:
        """Whether the model is the optimizer's moving averages (EMA on, at least one step taken)."""
        return uses_ema(self.optimizer) and int(self.optimizer.iterations.numpy()) > 0

    @contextlib.contextmanager
    def in_module(self):
        """Within the block the module's weights are the model's; afterwards the live weights
        are back. Under a strategy every replica holds the same weights, so one copy of the live
        values is enough to put back on every replica."""
        if not self.averaged:
            yield
            return
        variables = self.module.trainable_variables
        live = [tf.identity(variable.value) for variable in variables]
        for variable, average in zip(variables, self._averages()):
            variable.assign(average)
        try:
            yield
        finally:
            for variable, value in zip(variables, live):
                variable.assign(value)

    def values(self) -> list[tf.Tensor]:
        """A copy of the model's weights, in the order of `module.weights`."""
        with self.in_module():
            return [tf.identity(weight.value) for weight in self.module.weights]

    def assign(self, values) -> None:
        """Makes `values` (as `values()` returned them) the run's model."""
        for weight, value in zip(self.module.weights, values):
            weight.assign(value)
        self._adopt()

    def save(self, path: str) -> str:
        """Writes the model as a module checkpoint at `path` (`path.index`, `path.data-*`)."""
        with self.in_module():
            return tf.train.Checkpoint(module=self.module).write(path)

    def load(self, path: str) -> None:
        """Makes the weights `save` wrote at `path` the run's model."""
        tf.train.Checkpoint(module=self.module).read(path).assert_existing_objects_matched()
        self._adopt()

    def read_checkpoint(self, path: str) -> None:
        """Restores the model of a full run checkpoint (trainer/checkpointing.py): the module's
        weights and the optimizer's state, so that `in_module` gives the weights training
        validated at that step. The rest of the run's state (metrics, callbacks) is not read."""
        tf.train.Checkpoint(module=self.module, optimizer=self.optimizer).read(
            path).assert_existing_objects_matched().expect_partial()

    def _averages(self):
        # Keras keeps one average per trainable variable, in the order the optimizer was built.
        return self.optimizer._model_variables_moving_average  # pylint: disable=protected-access

    def _adopt(self):
        """The averages take the module's current trainable weights: the model is now them."""
        if uses_ema(self.optimizer):
            for average, variable in zip(self._averages(), self.module.trainable_variables):
                average.assign(variable.value)
