"""The image task's pictures of a run: sample predictions and the test confusion matrix.

    SamplePredictions  val/samples/images   the first validation images, framed green where the
                                            module is right and red where it is wrong
                       val/samples/labels   their true and predicted classes (text)
    ConfusionMatrix    test/confusion_matrix/heat_map, test/confusion_matrix/counts, and
                       <model_dir>/confusion_matrix.png

Both write into the runs of a `TensorBoardLogger` (trainer/callbacks/loggers.py). An image and a
text summary get different tags: TensorBoard shows a tag in one tab only. Only the chief writes.
"""

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import distribute
from trainer.callbacks import base
from trainer.callbacks import loggers
from trainer.callbacks import summaries
from trainer.vision import plots


class SamplePredictions(base.Callback):
    """After every validation pass, shows how the module classifies a few validation images.

    Args:
        tensorboard: the run's `TensorBoardLogger`, whose `val` run receives the pictures.
        num_samples: how many validation images to show (the same ones every time).
    """

    writes_files = True

    def __init__(self, tensorboard: loggers.TensorBoardLogger, *, num_samples: int = 8):
        if num_samples < 1:
            raise ValueError(f"num_samples ({num_samples}) must be at least 1")
        self.tensorboard = tensorboard
        self.num_samples = num_samples
        self._samples = None  # The same validation images every time: their predictions change.

    def on_validation_end(self, logs):
        if not self.trainer.is_chief:
            return
        images, labels = self._sample_batch()
        # An eager call, on this process only: no collective, so only the chief needs to run it.
        with self.trainer.model_weights.in_module():  # The model validation scored.
            probabilities = self.trainer.module.predict_step((images, labels))
        predicted, true = np.argmax(probabilities, axis=-1), labels.numpy()
        names = self.trainer.datamodule.class_names
        lines = [f"{i + 1}. true {names[label]} / predicted {names[guess]}"
                 f"{'' if label == guess else ' (wrong)'}"
                 for i, (label, guess) in enumerate(zip(true, predicted))]
        step = self.trainer.global_step
        with self.tensorboard.writing("val"):
            summaries.images("samples/images", summaries.framed(images, predicted == true), step)
            summaries.text("samples/labels", "\n".join(lines), step)
        self.tensorboard.flush()

    def _sample_batch(self):
        """The first `num_samples` examples of the validation set (taken once, then kept)."""
        if self._samples is None:
            # The chief's own input pipeline (one replica per worker), which starts where the split
            # starts; with --cache_dir it is cached already, where a one-pipeline context would
            # decode and cache the whole split once more.
            strategy = self.trainer.strategy
            workers, worker = distribute.num_workers(strategy), distribute.worker_index(strategy)
            context = tf.distribute.InputContext(num_input_pipelines=workers,
                                                 input_pipeline_id=worker,
                                                 num_replicas_in_sync=workers)
            dataset = self.trainer.datamodule.evaluation_dataset("val", context, limit_batches=1)
            images, labels = next(iter(dataset))  # One global batch's share: eval batch / workers.
            self._samples = images[:self.num_samples], labels[:self.num_samples]
        return self._samples


class ConfusionMatrix(base.Callback):
    """After `Trainer.test`, predicts the test set once and counts (true, predicted) classes.

    The counts go to TensorBoard (a heat map and a Markdown table) and to a PNG picture, and stay
    in `matrix` for whoever needs them next. Every worker predicts (the gathers are collectives);
    the labels travel the same distributed path as the predictions, so they pair up also when
    each worker reads its own shard.

    Args:
        tensorboard: the run's `TensorBoardLogger` (its `test` run gets the matrix), or None.
        png_path: where to draw the matrix as a PNG (needs matplotlib), or None.
    """

    writes_files = True

    def __init__(self, *, tensorboard: loggers.TensorBoardLogger | None = None,
                 png_path: str | None = None):
        self.tensorboard = tensorboard
        self.png_path = png_path
        self.matrix: np.ndarray | None = None

    def on_test_end(self, logs):
        trainer, datamodule = self.trainer, self.trainer.datamodule
        probabilities = trainer.predict(trainer.module, datamodule, stage="test")
        labels = distribute.gathered_labels(trainer.strategy, datamodule.test_dataset)
        self.matrix = plots.confusion_matrix(labels, probabilities.argmax(axis=-1),
                                             len(datamodule.class_names))
        if not trainer.is_chief:
            return
        if self.tensorboard:
            with self.tensorboard.writing("test"):
                summaries.images("confusion_matrix/heat_map", summaries.heat_map(self.matrix),
                                 trainer.global_step)
                summaries.text("confusion_matrix/counts",
                               summaries.confusion_table(self.matrix, datamodule.class_names),
                               trainer.global_step)
            self.tensorboard.flush()
        if self.png_path and plots.plot_confusion_matrix(self.matrix, datamodule.class_names,
                                                         self.png_path):
            logging.info("wrote %s", self.png_path)
