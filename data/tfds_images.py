"""An image classification DataModule for any TFDS dataset with `image` and `label` features."""

import os
import re

import tensorflow as tf
import tensorflow_datasets as tfds

from data import datamodule
from data import decoded_cache
from data import image_classification


class DamagedDatasetError(OSError):
    """A prepared dataset's file cannot be read: truncated or corrupt. Says which, and the fix."""


class TFDSImageData(image_classification.ImageClassificationData):
    """CIFAR-10, MNIST, CIFAR-100, ... from tensorflow-datasets.

    Args:
        name: TFDS dataset name, e.g. "cifar10".
        data_dir: where TFDS keeps prepared datasets; None means TFDS' default (~/tensorflow_datasets).
        download: whether `prepare_data` may download a dataset that is not prepared in `data_dir`.
        train_split, val_split, test_split: TFDS split strings such as "train[:90%]"; an empty
            string for val/test means no such stage.
        predict_split: the split `predict_dataset` reads; "" means the test split.
        cache_dir: a directory for decoded examples that later runs read instead of decoding
            the dataset's PNG/JPEG records again (data/decoded_cache.py); keyed by dataset,
            version, split, input pipeline and the prepared files. None: decode every run.
        **pipeline_kwargs: `batch_size`, `seed`, `shuffle_buffer_size`, `augment`, `data_order`
            (see ImageClassificationData).
    """

    def __init__(self, *, name: str = "cifar10", data_dir: str | None = None, download: bool = True,
                 train_split: str = "train[:90%]", val_split: str = "train[90%:]",
                 test_split: str = "test",
                 predict_split: str = "", cache_dir: str | None = None, **pipeline_kwargs):
        super().__init__(**pipeline_kwargs)
        if not train_split:
            raise ValueError("train_split ('') must name a TFDS split, e.g. 'train'")
        self.name = name
        self.data_dir = os.path.expanduser(data_dir) if data_dir else None
        self.download = download
        self.cache_dir = os.path.expanduser(cache_dir) if cache_dir else None
        self.splits = {"train": train_split, "val": val_split, "test": test_split,
                       "predict": predict_split or test_split}
        self._counts: dict[str, int] = {}
        try:
            self._builder = tfds.builder(name, data_dir=self.data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise ValueError(f"dataset ({name!r}) is not a TFDS dataset name; "
                             "see tfds.list_builders() for the names") from None

    def prepare_data(self):
        if self._builder.is_prepared():
            return
        where = self.data_dir or "TFDS' default data_dir"
        if not self.download:
            raise FileNotFoundError(
                f"dataset {self.name!r} is not prepared in {where} and downloading is off; pass "
                "data_dir (--data_dir) pointing at a directory that holds it prepared")
        try:
            self._builder.download_and_prepare()
        except Exception as error:  # Network and disk failures arrive as many unrelated types.
            raise RuntimeError(
                f"could not download and prepare dataset {self.name!r} into {where} ({error}). "
                "Without network access, pass data_dir (--data_dir) pointing at a directory that "
                "holds it prepared (<data_dir>/<dataset>/<version>/...), e.g. one copied from a "
                "machine that has it in ~/tensorflow_datasets") from error

    def setup(self):
        features = self._builder.info.features
        if "image" not in features or "label" not in features:
            raise ValueError(f"dataset ({self.name!r}) is not an image classification dataset: "
                             f"it has features {sorted(features)}, not 'image' and 'label'")
        shape = tuple(features["image"].shape)
        if None in shape:
            raise ValueError(f"dataset ({self.name!r}) has images of varying size {shape}; "
                             "this DataModule needs fixed-size images")
        self._input_shape = shape
        self.num_classes = features["label"].num_classes
        self.class_names = list(features["label"].names)
        for stage in (*datamodule.STAGES, "predict"):
            self._counts[stage] = self._count(stage)

    def _count(self, stage):
        split = self.splits[stage]
        if not split:
            return 0
        try:
            examples = self._builder.as_dataset(split=split)
        except (ValueError, KeyError, AssertionError) as error:
            raise ValueError(f"{stage}_split ({split!r}) is not a valid split of {self.name}: "
                             f"{error}") from None
        return int(examples.cardinality())

    def _num_examples(self, stage):
        if stage not in self._counts:
            raise RuntimeError("call setup() before asking for datasets")
        return self._counts[stage]

    def _read(self, stage, ctx):
        split = self.splits[stage]
        if not split:
            return None
        if ctx.num_input_pipelines > 1:  # Never in global order, which reads the whole split.
            # Shard by examples, not files: CIFAR-10 stores each split in a single file.
            split = tfds.even_splits(split, n=ctx.num_input_pipelines)[ctx.input_pipeline_id]
        if not self.cache_dir:
            return self._decode(split)
        key = {"dataset": self.name, "version": str(self._builder.version),
               "split": str(split), "pipeline": ctx.input_pipeline_id,
               "pipelines": ctx.num_input_pipelines, "source": _source_files(self._builder)}
        return decoded_cache.cached(lambda: self._decode(split), self.cache_dir, key)

    def _decode(self, split):
        """The (uint8 image, label) examples of `split`, read and decoded from the TFDS files."""
        return self._builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)

    def damage_report(self, error: tf.errors.OpError) -> DamagedDatasetError | None:
        """`error`, raised while this dataset was read, as one message that names the damaged
        file(s) and says how to prepare the dataset again; None if `error` is not about them.

        A file cut inside a record raises DataLossError ("truncated record at 58250251"); one
        cut between records, FailedPreconditionError ("expected to contain 64 elements"). Neither
        names the file, so every file of the dataset is read once more to find the damaged ones:
        a cost paid only after a failure.
        """
        directory = self._builder.data_dir
        damaged = _damaged_files(self._builder)
        if not damaged and not isinstance(error, tf.errors.DataLossError):
            return None
        what = ("; ".join(f"{path} {problem}" for path, problem in damaged.items()) if damaged
                else f"a file could not be read ({_cause(error)})")
        data_dir = self.data_dir or "~/tensorflow_datasets"
        return DamagedDatasetError(
            f"dataset {self.name!r} in {directory} is damaged: {what}. Prepare it again: delete "
            f"{directory} and run again with downloading on (--download, the default), or run "
            f"tfds build {self.name} --data_dir={data_dir}")


def _source_files(builder) -> list[list]:
    """[name, size] of each file of the prepared dataset: preparing it again changes the key."""
    directory = str(builder.data_dir)
    try:
        names = sorted(tf.io.gfile.listdir(directory))
    except tf.errors.OpError:
        return []
    return [[name, tf.io.gfile.stat(os.path.join(directory, name)).length] for name in names
            if not tf.io.gfile.isdir(os.path.join(directory, name))]


def _damaged_files(builder) -> dict[str, str]:
    """{path: what is wrong} for each prepared file of `builder` that cannot be read to the end
    or holds another number of records than the dataset's metadata lists."""
    if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
        return {}  # Only TFRecord files are checked here.
    damaged = {}
    for split in builder.info.splits.values():
        for path, expected in zip(split.filepaths, split.shard_lengths):
            try:
                records = int(tf.data.TFRecordDataset(str(path)).reduce(
                    tf.constant(0, tf.int64), lambda count, _: count + 1))
            except tf.errors.OpError as error:
                damaged[str(path)] = f"cannot be read to the end ({_cause(error)})"
                continue
            if records != expected:
                damaged[str(path)] = f"holds {records} records where the metadata lists {expected}"
    return damaged


def _cause(error: tf.errors.OpError) -> str:
    """The last line of TensorFlow's message, without its graph-node and op annotations."""
    lines = [re.sub(r"\{\{.*?\}\}|\[\[.*?\]\]|\[Op:.*", "", line).strip()
             for line in error.message.splitlines()]
    return [line for line in lines if line][-1] if any(lines) else type(error).__name__
