"""The tf.data pipeline shared by every image classification DataModule.

A source (TFDS, NumPy arrays) provides (uint8 image, integer label) examples of a split, either
this input pipeline's shard or the whole split; this module turns them into batches:

    training:   take what an epoch reads -> cache -> [per epoch: stateless shuffle(seed, epoch)
                -> batch(drop_remainder) -> take] -> (global order: this pipeline's slices)
                -> to float -> prefetch
    evaluation: [take a limited pass's batches] -> cache -> batch (partial last batch kept)
                -> (global order: this pipeline's slices) -> to float -> prefetch

Two data orders say which examples an input pipeline (one per worker) reads:

    shard   each pipeline reads its own shard of the split and batches it for its replicas. Scales
            to any dataset size; the global batches depend on the number of workers.
    global  each pipeline reads the whole split, builds the global batches exactly as one device
            would, and keeps its replicas' slices of each. 1 device, N replicas and M workers see
            identical global batches, at the cost of every worker reading the whole split.

Prediction always reads in global order, whatever the data order: `strategy.gather` then returns
the predictions in dataset order on any number of workers.
"""

import math

import tensorflow as tf

from data import datamodule

DATA_ORDERS = ("shard", "global")
# The context of one device: one input pipeline with one replica, which reads the whole split and
# whose per-replica batch is the global batch.
_ONE_DEVICE = tf.distribute.InputContext()


def scale_pixels(images: tf.Tensor) -> tf.Tensor:
    """uint8 pixels in [0, 255] -> float32 in [0, 1]: the network's input.

    Training, evaluation and the exported serving signature (trainer/vision/export.py) all call
    this one function, so serving cannot silently diverge from training.
    """
    return tf.cast(images, tf.float32) / 255.0


def _to_float(images, labels):
    """Scales a batch's pixels; done per batch, after the cache, to keep the cache small (uint8)."""
    return scale_pixels(images), tf.cast(labels, tf.int32)


def _without_autotune(dataset):
    """Turns tf.data autotuning off: destroying an autotuned iterator waits out the autotune
    thread's back-off, which grows with the iterator's age (53 s after a 10-epoch run here;
    docs/pitfalls.md#18). Per-batch work is a cast, so fixed small buffers keep up."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class ImageClassificationData(datamodule.DataModule):
    """Batches (image, label) examples for training and evaluation under any `tf.distribute` strategy.

    Subclasses provide `_read(stage, ctx)` and `_num_examples(stage)`, and set `input_shape`,
    `num_classes` and `class_names` in `setup()`.

    Args:
        batch_size: global batch size (all replicas together); each replica gets
            `batch_size / num_replicas` examples per step.
        seed: seeds the shuffle; epoch e's order is a pure function of (seed, e).
        shuffle_buffer_size: examples shuffled together as one block; the default covers all of
            CIFAR-10, which gives a uniform permutation every epoch. Larger splits are permuted
            block by block.
        augment: training batches get a random horizontal flip and a random crop after
            zero-padding `crop_padding` pixels on each side, drawn by stateless ops keyed by
            (seed, epoch, input pipeline, batch), so a resumed run sees the same augmented
            batches. Evaluation is never augmented.
        crop_padding: pixels of zero padding on each side before the random crop, so images
            shift by up to that many pixels; 0: flips only.
        data_order: "shard" or "global" (see the module docstring); in "global" order the
            augmentation is drawn per global batch, so it too is the same on any cluster.
        eval_batch_size: global batch size of validation, test and prediction (all replicas
            together; None: `batch_size`). Evaluation keeps no activations for gradients, so it
            can afford a larger batch: fewer, bigger steps. Every example is still evaluated
            exactly once, the partial last batch kept.
    """

    def __init__(self, *, batch_size: int = 64, seed: int = 0, shuffle_buffer_size: int = 50_000,
                 augment: bool = False, data_order: str = "shard",
                 eval_batch_size: int | None = None, crop_padding: int = 4):
        if batch_size < 1:
            raise ValueError(f"batch_size ({batch_size}) must be a positive number of examples")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"eval_batch_size ({eval_batch_size}) must be a positive number of "
                             "examples (or None: batch_size)")
        if crop_padding < 0:
            raise ValueError(f"crop_padding ({crop_padding}) must be >= 0 pixels")
        if shuffle_buffer_size < 1:
            raise ValueError(f"shuffle_buffer_size ({shuffle_buffer_size}) must be positive")
        if data_order not in DATA_ORDERS:
            raise ValueError(f"data_order ({data_order!r}) must be one of {list(DATA_ORDERS)}")
        self.data_order = data_order
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.seed = seed
        self.shuffle_buffer_size = shuffle_buffer_size
        self.augment = augment
        self.crop_padding = crop_padding
        self.overfit_batches = 0
        self.num_classes: int | None = None
        self.class_names: list[str] = []
        self._input_shape: tuple[int, ...] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self._input_shape is None:
            raise RuntimeError("call setup() before reading input_shape")
        return self._input_shape

    def _read(self, stage: str, ctx: tf.distribute.InputContext) -> tf.data.Dataset | None:
        """Returns this input pipeline's shard of (image, label) examples of `stage` ("train",
        "val", "test" or "predict"), or None if there is no such split. A context of one
        pipeline gets the whole split."""
        raise NotImplementedError

    def _num_examples(self, stage: str) -> int:
        """Returns the number of examples of `stage` over all input pipelines (0 if no such split)."""
        raise NotImplementedError

    def overfit(self, num_batches: int) -> None:
        """Trains and validates on the same first `num_batches` training batches, unshuffled and
        unaugmented: a model that cannot drive their loss down has a bug."""
        if num_batches * self.batch_size > self._num_examples("train"):
            raise ValueError(f"overfit_batches ({num_batches}) x batch_size ({self.batch_size}) is "
                             f"more than the {self._num_examples('train')} training examples")
        self.overfit_batches = num_batches

    def steps_per_epoch(self) -> int:
        if self.overfit_batches:
            return self.overfit_batches
        num_examples = self._num_examples("train")
        if num_examples < self.batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) is larger than the training split "
                             f"({num_examples} examples): not even one step fits in an epoch")
        return num_examples // self.batch_size

    def dropped_per_epoch(self) -> int:
        """Training examples left out of each epoch by drop_remainder (a different few each epoch)."""
        return self._num_examples("train") - self.steps_per_epoch() * self.batch_size

    def train_dataset(self, ctx, *, start_epoch=0, skip_batches=0, batches_per_epoch=None):
        return self._in_data_order(ctx, lambda context: self._training_batches(
            context, start_epoch, skip_batches, batches_per_epoch), parallel_calls=2)

    def _training_batches(self, ctx, start_epoch, skip_batches, batches_per_epoch):
        """The endless uint8 training batches of `ctx`'s pipeline, one per replica per step."""
        batch_size = ctx.get_per_replica_batch_size(self.batch_size)
        # One global batch takes one batch from each of this pipeline's replicas.
        replicas_per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        batches_per_epoch = (batches_per_epoch or self.steps_per_epoch()) * replicas_per_pipeline
        examples = self._read("train", ctx)
        # Only what an epoch reads is cached, so that every epoch reads the cache to its end: a
        # partly read cache is thrown away, and its examples decoded again, every epoch.
        if self.overfit_batches:
            examples = examples.take(batches_per_epoch * batch_size)
        else:  # An epoch shuffles whole blocks of examples: as many as its batches need.
            blocks = math.ceil(batches_per_epoch * batch_size / self.shuffle_buffer_size)
            examples = examples.take(blocks * self.shuffle_buffer_size)
        examples = examples.cache()  # decoded once, in memory from epoch 2 on

        def one_epoch(epoch):
            if self.overfit_batches:  # The same batches, in the same order, every epoch.
                return examples.batch(batch_size, drop_remainder=True)
            blocks = examples.batch(self.shuffle_buffer_size).enumerate()
            shuffled = blocks.map(lambda block, pair: self._shuffle_block(pair, epoch, block))
            # Full batches only: every step has the same static shapes, so the step is traced once.
            batches = shuffled.unbatch().batch(batch_size, drop_remainder=True)
            batches = batches.take(batches_per_epoch)
            if self.augment:
                batches = batches.enumerate().map(
                    lambda index, pair: self._augment(pair, epoch, ctx.input_pipeline_id, index))
            return batches

        batches = tf.data.Dataset.counter(start_epoch).flat_map(one_epoch)
        # A run resumed mid-epoch skips the batches its first epoch had already trained on.
        return batches.skip(skip_batches * replicas_per_pipeline)

    def _in_data_order(self, ctx, make_batches, data_order=None, parallel_calls=None,
                       global_batch_size=None):
        """The float batches of `ctx`'s pipeline, from `make_batches(context)`'s uint8 batches,
        cast in `parallel_calls` parallel calls (None: one at a time).

        In "shard" order they are `make_batches(ctx)`: the pipeline's own shard. In "global" order
        `make_batches` builds the global batches of one device, and the pipeline keeps its
        replicas' slices of each. None if `make_batches` returns None (no such split).
        """
        if (data_order or self.data_order) == "shard":
            batches = make_batches(ctx)
        else:
            batches = make_batches(_ONE_DEVICE)
            if batches is not None:
                batches = _replica_slices(batches, ctx, global_batch_size or self.batch_size)
        if batches is None:
            return None
        return _without_autotune(
            batches.map(_to_float, num_parallel_calls=parallel_calls).prefetch(2))

    def _shuffle_block(self, pair, epoch, block):
        """Permutes a block of examples with a stateless shuffle keyed by (seed, epoch, block).

        The order of every epoch is a pure function of the seed and the epoch number, so a resumed
        run can rebuild any epoch without checkpointing a shuffle buffer. A split that fits in one
        block (`shuffle_buffer_size` examples) gets a uniform random permutation.
        """
        images, labels = pair
        key = tf.stack([tf.cast(self.seed, tf.int64), epoch * 1_000_003 + block])
        order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(labels)[0]), seed=key)
        return tf.gather(images, order), tf.gather(labels, order)

    def _augment(self, pair, epoch, pipeline, index):
        """Random horizontal flip, then a random crop, of the image's own size, of the image
        padded by `crop_padding` pixels on each side (no crop when 0).

        Vectorized over the batch: each image gets its own flip and offsets, drawn from a
        stateless key folded from (seed, epoch, input pipeline, batch index). The pipeline is in
        the key because every worker's pipeline counts its batches from 0: without it, batch i
        of every worker would get the same flips and crops.
        """
        images, labels = pair
        key = tf.constant([self.seed, 1], tf.int64)
        for part in (epoch, pipeline, index):
            key = tf.random.experimental.stateless_fold_in(key, tf.cast(part, tf.int64))
        flip_key, crop_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
        flip = tf.random.stateless_uniform([batch], flip_key) < 0.5
        images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
        pad = self.crop_padding
        if not pad:
            return images, labels
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        offsets = tf.random.stateless_uniform([batch, 2], crop_key, minval=0, maxval=2 * pad + 1,
                                              dtype=tf.int32)
        rows = offsets[:, :1] + tf.range(height)[None, :]  # [batch, height] rows to keep
        cols = offsets[:, 1:] + tf.range(width)[None, :]
        cropped = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2,
                            batch_dims=1)
        return cropped, labels

    def val_dataset(self, ctx):
        return self.evaluation_dataset("val", ctx)

    def test_dataset(self, ctx):
        return self.evaluation_dataset("test", ctx)

    def predict_dataset(self, ctx):
        """The batches of the predict split (by default the test split), in global order whatever
        the data order: slices of global batches, which `strategy.gather` puts back together in
        dataset order on any number of workers. Each worker reads the whole predict split."""
        return self.evaluation_dataset("predict", ctx)

    def evaluation_dataset(self, stage, ctx, *, limit_batches=None):
        data_order = "global" if stage == "predict" else None
        return self._in_data_order(
            ctx, lambda context: self._evaluation_batches(stage, context, limit_batches),
            data_order=data_order, global_batch_size=self._evaluation_batch_size(stage))

    def _evaluation_batch_size(self, stage):
        """The global batch of `stage`'s passes: overfitting validates on exactly the training
        batches; everything else is evaluated in batches of `eval_batch_size`."""
        return self.batch_size if stage == "val" and self.overfit_batches else self.eval_batch_size

    def _evaluation_batches(self, stage, ctx, limit_batches):
        overfit = stage == "val" and self.overfit_batches  # Validate on the batches being overfit.
        examples = self._read("train" if overfit else stage, ctx)
        if examples is None:
            return None
        batch_size = ctx.get_per_replica_batch_size(self._evaluation_batch_size(stage))
        replicas_per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
        if overfit:
            limit_batches = min(limit_batches or self.overfit_batches, self.overfit_batches)
        if limit_batches is not None:  # Cut before the cache, so that a pass reads all of it.
            examples = examples.take(limit_batches * replicas_per_pipeline * batch_size)
        # The partial last batch is kept: evaluation sees every example exactly once.
        return examples.cache().batch(batch_size)

    def has_stage(self, stage: str) -> bool:
        """Whether `stage` ("train", "val", "test" or "predict") has examples to read."""
        return self._num_examples(stage) > 0


def _replica_slices(global_batches: tf.data.Dataset, ctx: tf.distribute.InputContext,
                    global_batch_size: int) -> tf.data.Dataset:
    """This input pipeline's replicas' slices of each global batch, one per-replica batch each.

    Replica r, counted over all pipelines (worker by worker, as `strategy.gather` counts them),
    gets examples [r * b, (r + 1) * b) of every global batch, b = the per-replica batch: fewer, or
    none, in a partial last batch. Every pipeline yields the same number of batches.
    """
    per_replica = ctx.get_per_replica_batch_size(global_batch_size)
    replicas_per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
    first_replica = ctx.input_pipeline_id * replicas_per_pipeline

    def slices(images, labels):
        replicas = tf.data.Dataset.range(first_replica, first_replica + replicas_per_pipeline)
        # Past the end of a partial batch a slice is cut short, or empty, as in Python.
        return replicas.map(lambda replica: tf.nest.map_structure(
            lambda t: t[replica * per_replica:(replica + 1) * per_replica], (images, labels)))

    return global_batches.flat_map(slices)
