"""An image classification DataModule over in-memory NumPy arrays (tests, benchmarks)."""

import numpy as np
import tensorflow as tf

from data import image_classification


class ArrayImageData(image_classification.ImageClassificationData):
    """Serves (images, labels) arrays through the same pipeline as the TFDS DataModule.

    Args:
        train: (images uint8 [N, H, W, C], integer labels [N]) for training.
        val: the same for validation, or None.
        test: the same for testing, or None.
        predict: the same for `predict_dataset`; None: the test arrays.
        num_classes: number of classes; by default 1 + the largest training label.
        **pipeline_kwargs: `batch_size`, `seed`, `shuffle_buffer_size`, `augment`, `data_order`
            (see ImageClassificationData).
    """

    def __init__(self, *, train, val=None, test=None, predict=None, num_classes: int | None = None,
                 **pipeline_kwargs):
        super().__init__(**pipeline_kwargs)
        self._arrays = {"train": train, "val": val, "test": test,
                        "predict": test if predict is None else predict}
        for stage, pair in self._arrays.items():
            if pair is not None and len(pair[0]) != len(pair[1]):
                raise ValueError(f"{stage}: images ({len(pair[0])}) and labels ({len(pair[1])}) "
                                 "must have the same length")
        images, labels = train
        self._input_shape = tuple(np.shape(images)[1:])
        self.num_classes = num_classes or int(np.max(labels)) + 1
        self.class_names = [str(i) for i in range(self.num_classes)]

    def _num_examples(self, stage):
        pair = self._arrays[stage]
        return 0 if pair is None else len(pair[1])

    def _read(self, stage, ctx):
        pair = self._arrays[stage]
        if pair is None:
            return None
        examples = tf.data.Dataset.from_tensor_slices(pair)
        return examples.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
