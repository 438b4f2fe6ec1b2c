"""`Module`: the model, its per-batch steps and its optimizer, in one `tf.keras.Model` subclass.

It is Lightning's `LightningModule` in Keras: the Trainer owns the loop, the Module owns the math.
"""

import contextlib

import tensorflow as tf

import data
from trainer import distribute


class LogBook:
    """One `tf.keras.metrics.Mean` per name a step hook logs, per stage.

    The Trainer learns the names by tracing each hook once before training (`discovering`),
    creates the metrics inside `strategy.scope()` (`create`), and reads them outside the graph.
    It is a plain object, not a Keras layer, so Keras does not freeze it once the model is built.
    """

    def __init__(self):
        self.metrics: dict[str, dict[str, tf.keras.metrics.Mean]] = {s: {} for s in data.STAGES}
        self.stage: str | None = None
        self._discovered: list[str] | None = None

    @contextlib.contextmanager
    def recording(self, stage: str):
        """Routes `Module.log` calls made inside the block to `stage`'s metrics."""
        previous, self.stage = self.stage, stage
        try:
            yield
        finally:
            self.stage = previous

    @contextlib.contextmanager
    def discovering(self, stage: str):
        """Inside the block, `Module.log` only collects names (into the yielded list)."""
        self._discovered = []
        try:
            with self.recording(stage):
                yield self._discovered
        finally:
            self._discovered = None

    def record(self, name, value, weight):
        if self.stage is None:
            raise RuntimeError(f"log({name!r}, ...) was called outside a step hook run by the Trainer")
        if self._discovered is not None:
            if name not in self._discovered:
                self._discovered.append(name)
            return
        self.metrics[self.stage][name].update_state(value, sample_weight=weight)

    def create(self, stage: str, names: list[str]) -> None:
        """Creates the missing metrics of `stage`; call inside `strategy.scope()`."""
        for name in names:
            if name not in self.metrics[stage]:
                self.metrics[stage][name] = tf.keras.metrics.Mean(name=f"{stage}_{name}")

    def create_for(self, strategy, stage: str, hook, make_dataset) -> None:
        """Creates, inside `strategy.scope()`, a metric for each name `hook` logs.

        The names are learned by tracing `hook` once under `strategy.run`, on the element spec
        of one replica's batch, without running it: tracing is how Python code inside a
        `tf.function` is discovered, and the metrics must exist before the first real step.

        Raises:
            TypeError: if `hook` is the training step and returns no loss.
        """
        # This worker's own pipeline, as training will build it: with --cache_dir, building a
        # pipeline caches its examples, and a one-pipeline context would cache the whole split.
        replica_batch = make_dataset(distribute.input_context(strategy)).element_spec
        with self.discovering(stage) as names:
            traced = tf.function(lambda batch: strategy.run(hook, args=(batch,)))
            outputs = traced.get_concrete_function(replica_batch).structured_outputs
        if stage == "train" and outputs is None:
            raise TypeError("training_step(batch) must return the loss to minimize, got None")
        with strategy.scope():
            self.create(stage, names)

    def variables(self, stage: str) -> list:
        """The variables of `stage`'s metrics (totals and counts), e.g. to checkpoint: a Keras 3
        metric object itself is not tracked by `tf.train.Checkpoint`, its variables are."""
        return [variable for metric in self.metrics[stage].values()
                for variable in metric.variables]

    def even_out(self, stage: str, strategy) -> None:
        """Gives every replica's copy of `stage`'s metric variables the same share of their sum.

        Each replica sums into its own copy; a read (or a checkpoint) sees the sum, and a
        restore hands every replica sum / replicas. Called before each checkpoint, this puts the
        running run into the very state a run resumed from that checkpoint starts in, so the two
        go on to the same means bit for bit (exactly, for a power-of-two number of replicas).
        """
        replicas = strategy.num_replicas_in_sync
        if replicas == 1:
            return
        for variable in self.variables(stage):
            share = variable.value.read_value() / replicas  # The read is the sum (a collective).
            for copy in strategy.experimental_local_results(variable.value):
                copy.assign(share)

    def reset(self, stage: str) -> None:
        for metric in self.metrics[stage].values():
            metric.reset_state()

    def results(self, stage: str) -> dict[str, float]:
        """Returns {"<stage>_<name>": mean}; a host sync, and under MultiWorker a collective."""
        return {name: float(value) for name, value in self.result_tensors(stage).items()}

    def result_tensors(self, stage: str) -> dict[str, tf.Tensor]:
        """`results` as tensors, e.g. for a traced function to return with its other outputs."""
        return {f"{stage}_{name}": metric.result() for name, metric in self.metrics[stage].items()}


class Module(tf.keras.Model):
    """A `tf.keras.Model` that also knows how to train, evaluate and predict on a batch.

    Subclass it, build the layers in `__init__`, write `call`, and fill in the hooks below. The
    `Trainer` calls each step hook on every replica, inside a traced `tf.function`, on that
    replica's slice of the global batch. Keras' own `fit`/`evaluate`/`predict` are not used: the
    Trainer's loop replaces them (and `test_step`/`predict_step` override Keras' methods of the
    same names).

    Attributes:
        global_batch_size: examples per optimizer step summed over all replicas and micro-batches;
            set by the Trainer and used by `average_over_global_batch`.
        micro_batches_per_step: batches whose gradients add up to one optimizer step (set by
            the Trainer from `accumulate_grad_batches`).
        total_steps: optimizer steps the Trainer plans to take, e.g. for a learning-rate schedule
            built in `configure_optimizers`; set before `configure_optimizers` runs.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.global_batch_size: int | None = None
        self.micro_batches_per_step = 1
        self.total_steps: int | None = None
        self.logbook = LogBook()

    def training_step(self, batch):
        """Runs on every replica for each training batch; returns the loss to minimize, averaged over the global batch."""

    def validation_step(self, batch):
        """Runs on every replica for each validation batch; logs metrics with `self.log`."""

    def test_step(self, batch):
        """Runs on every replica for each test batch; logs metrics with `self.log`."""

    def predict_step(self, batch):
        """Runs on every replica for each prediction batch; returns a batch of predictions."""

    def configure_optimizers(self):
        """Runs once, inside `strategy.scope()`, before training; returns a `tf.keras.optimizers.Optimizer`."""

    def log(self, name: str, value, *, weight=None) -> None:
        """Adds `value` to the running mean of `name` for the stage being run.

        Pass per-example values (a vector with one entry per example) for an exact mean over the
        epoch, also when the last batch is partial; a scalar counts once per call unless `weight`
        says otherwise. The mean reaches the progress lines, the epoch line, the logs dict and
        results.json as `<stage>_<name>`, e.g. `val_accuracy`.

        Args:
            name: metric name, without the stage prefix.
            value: a scalar or a tensor of values to average.
            weight: optional weight of each value (broadcast to `value`'s shape).
        """
        self.logbook.record(name, value, weight)

    def average_over_global_batch(self, per_example_loss):
        """Returns the loss this replica contributes to the step: the sum of its per-example
        losses divided by the GLOBAL batch size, plus its share of the regularization losses
        (`self.losses`, e.g. kernel regularizers). Always float32, whatever the precision policy.

        Each replica computes gradients on its slice and the optimizer step SUMS them across
        replicas. Dividing by the global batch (not the replica's slice) makes that sum the
        gradient of the mean loss over the global batch, exactly as on one device
        (docs/pitfalls.md#1). With gradient accumulation the global batch counts every
        micro-batch of the step, and each micro-batch adds its share of the regularization loss.
        """
        per_example_loss = tf.cast(per_example_loss, tf.float32)
        loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=self.global_batch_size)
        if self.losses:
            regularization = tf.nn.scale_regularization_loss(
                tf.add_n([tf.cast(term, tf.float32) for term in self.losses]))
            loss += regularization / self.micro_batches_per_step
        return loss


def build_with_optimizer(module: Module, input_shape) -> tf.keras.optimizers.Optimizer:
    """Creates `module`'s variables (one call on a dummy batch, unless it is built) and the
    optimizer `configure_optimizers` returns, with its slots; returns the optimizer.

    Call it inside `strategy.scope()`, so that every variable gets one copy per replica. The
    slots are built now, eagerly: created lazily inside the distributed step they crash on
    Keras 3.15 (docs/pitfalls.md#2).
    """
    if not module.built:
        module(tf.zeros([1, *input_shape]), training=False)
    optimizer = module.configure_optimizers()
    if not isinstance(optimizer, tf.keras.optimizers.Optimizer):
        raise TypeError(f"configure_optimizers() must return a tf.keras optimizer, got {optimizer!r}")
    optimizer.build(module.trainable_variables)
    return optimizer
