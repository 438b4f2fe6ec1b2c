"""The `DataModule` interface: the data half of a run, as the `Trainer` sees it."""

import tensorflow as tf

# The stages of a run, in the order they first run; metric names carry them as a prefix
# ("val_loss"), and a DataModule has one split per stage.
STAGES = ("train", "val", "test")


class DataModule:
    """Owns a run's data: preparing it, and building one tf.data pipeline per input pipeline.

    The Trainer calls `prepare_data()` then `setup()` once per process, then asks for datasets
    through `tf.distribute.Strategy.distribute_datasets_from_function`, which passes a
    `tf.distribute.InputContext`: the dataset built for it must hold this input pipeline's shard
    of the data, batched with `ctx.get_per_replica_batch_size(batch_size)`.

    Attributes:
        batch_size: the global batch size: examples per training step summed over all replicas.
    """

    batch_size: int

    def prepare_data(self) -> None:
        """Runs once per host before `setup`: downloads and prepares the data on disk."""

    def setup(self) -> None:
        """Runs once per process after `prepare_data`: reads metadata and checks the splits."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input example, without the batch dimension."""
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        """Training steps (global batches) in one epoch."""
        raise NotImplementedError

    def train_dataset(self, ctx: tf.distribute.InputContext, *, start_epoch: int = 0,
                      skip_batches: int = 0,
                      batches_per_epoch: int | None = None) -> tf.data.Dataset:
        """Returns an endless dataset of training batches, epoch after epoch from `start_epoch`,
        without the first `skip_batches` global batches of that epoch; each epoch holds its first
        `batches_per_epoch` global batches (None: `steps_per_epoch()`). Each epoch's batches must
        depend only on the epoch number, so that a resumed run sees what an uninterrupted one
        would have."""
        raise NotImplementedError

    def overfit(self, num_batches: int) -> None:
        """Makes training and validation use the same first `num_batches` training batches, in a
        fixed order (Trainer's `overfit_batches`)."""
        raise NotImplementedError(f"{type(self).__name__} does not support overfit_batches")

    def val_dataset(self, ctx: tf.distribute.InputContext) -> tf.data.Dataset | None:
        """Returns the validation batches (each example exactly once), or None for no validation."""
        return None

    def test_dataset(self, ctx: tf.distribute.InputContext) -> tf.data.Dataset | None:
        """Returns the test batches (each example exactly once), or None for no test set."""
        return None

    def predict_dataset(self, ctx: tf.distribute.InputContext) -> tf.data.Dataset | None:
        """Returns the batches to predict on; by default the test batches. `Trainer.predict`
        returns the predictions as `strategy.gather` orders them, replica by replica per batch:
        dataset order if each replica's batch is its slice of a global batch (as in
        `ImageClassificationData`), interleaved shards if every worker reads its own shard."""
        return self.test_dataset(ctx)

    def evaluation_dataset(self, stage: str, ctx: tf.distribute.InputContext, *,
                           limit_batches: int | None = None) -> tf.data.Dataset | None:
        """One pass over "val", "test" or "predict": the stage's dataset above, cut to its first
        `limit_batches` global batches (None: all). The Trainer reads evaluation data through it.

        A DataModule that caches its examples overrides it to cut before the cache: a pass that
        reads a cached dataset only partly throws away what it cached, and decodes it again the
        next time (tf.data warns "did not fully read the dataset being cached").
        """
        dataset = {"val": self.val_dataset, "test": self.test_dataset,
                   "predict": self.predict_dataset}[stage](ctx)
        if dataset is None or limit_batches is None:
            return dataset
        # An input pipeline feeds num_replicas / num_pipelines replicas per global batch.
        return dataset.take(limit_batches * (ctx.num_replicas_in_sync // ctx.num_input_pipelines))
