"""--cache_dir: decoded examples saved by one run, read by the next; a changed key is not reused."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import data
from conftest import input_context
from data import decoded_cache
from trainer import datasets


@pytest.fixture
def decodes(monkeypatch):
    """The splits TFDSImageData decoded from the TFDS records, in order."""
    calls = []
    original = data.TFDSImageData._decode

    def counting(self, split):
        calls.append(str(split))
        return original(self, split)

    monkeypatch.setattr(data.TFDSImageData, "_decode", counting)
    return calls


def _module(tmp_path, cache=True, **kwargs):
    # The splits the tests name (validation on "test", as the tutorial does).
    kwargs = {"train_split": "train", "val_split": "test", **kwargs}
    module = data.TFDSImageData(name="cifar10", data_dir=str(tmp_path / "tfds"), batch_size=8,
                                augment=True, cache_dir=str(tmp_path / "cache") if cache else None,
                                **kwargs)
    module.prepare_data()
    module.setup()
    return module


def _batches(dataset, take):
    return [(images.numpy(), labels.numpy()) for images, labels in dataset.take(take)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (images_a, labels_a), (images_b, labels_b) in zip(a, b):
        np.testing.assert_array_equal(images_a, images_b)
        np.testing.assert_array_equal(labels_a, labels_b)


def test_a_second_run_reads_the_cache_and_gets_identical_batches(tmp_path, decodes):
    with tfds.testing.mock_data(num_examples=40):
        uncached = _module(tmp_path, cache=False)
        expected_train = _batches(uncached.train_dataset(input_context()), 10)  # 2 epochs of 5
        expected_val = _batches(uncached.val_dataset(input_context()), 100)
        assert decodes == ["train", "test"]

        first = _module(tmp_path)  # Writes the cache (decodes once) ...
        _assert_same(_batches(first.train_dataset(input_context()), 10), expected_train)
        _assert_same(_batches(first.val_dataset(input_context()), 100), expected_val)
        assert decodes == ["train", "test"] * 2

        second = _module(tmp_path)  # ... a later run reads it: no decoding.
        _assert_same(_batches(second.train_dataset(input_context()), 10), expected_train)
        _assert_same(_batches(second.val_dataset(input_context()), 100), expected_val)
        _assert_same(_batches(second.test_dataset(input_context()), 100), expected_val)  # same split
        assert decodes == ["train", "test"] * 2
    entries = sorted(os.listdir(tmp_path / "cache" / "cifar10"))
    assert len(entries) == 1  # one version directory
    splits = sorted(os.listdir(tmp_path / "cache" / "cifar10" / entries[0]))
    assert [name.split("-")[0] for name in splits] == ["test", "train"]


def test_another_split_or_input_pipeline_is_not_served_from_the_cache(tmp_path, decodes):
    with tfds.testing.mock_data(num_examples=40):
        _module(tmp_path).train_dataset(input_context())
        _module(tmp_path, train_split="train[:50%]").train_dataset(input_context())
        assert decodes == ["train", "train[:50%]"]
        # Two input pipelines read halves of the split: cached per pipeline.
        module = _module(tmp_path)
        halves = [module.train_dataset(input_context(2, pipeline, replicas=2)) for pipeline in (0, 1)]
        assert len(decodes) == 4 and decodes[2] != decodes[3]
        for pipeline in (0, 1):
            module.train_dataset(input_context(2, pipeline, replicas=2))
        assert len(decodes) == 4
        del halves


def test_a_changed_key_builds_a_new_entry_and_an_unchanged_one_is_reused(tmp_path):
    made = []

    def make(values):
        def examples():
            made.append(values)
            return tf.data.Dataset.from_tensor_slices(values)
        return examples

    key = {"dataset": "d", "version": "1.0.0", "split": "train", "pipeline": 0, "pipelines": 1,
           "source": [["d-train.tfrecord", 100]]}
    read = lambda dataset: [int(x) for x in dataset]  # noqa: E731
    assert read(decoded_cache.cached(make([3, 1, 2]), str(tmp_path), key)) == [3, 1, 2]
    assert read(decoded_cache.cached(make([9, 9, 9]), str(tmp_path), key)) == [3, 1, 2]
    assert len(made) == 1  # read back, in the order it was written
    new_version = {**key, "version": "2.0.0"}
    assert read(decoded_cache.cached(make([4, 5]), str(tmp_path), new_version)) == [4, 5]
    # Same directory, but the prepared files changed: the stale entry is replaced.
    reprepared = {**key, "source": [["d-train.tfrecord", 101]]}
    assert read(decoded_cache.cached(make([7, 8]), str(tmp_path), reprepared)) == [7, 8]
    assert read(decoded_cache.cached(make([0]), str(tmp_path), reprepared)) == [7, 8]
    assert len(made) == 3
    leftovers = [name for _, dirs, _ in os.walk(tmp_path) for name in dirs if name.startswith(".")]
    assert not leftovers  # no temporary entries left behind


class _SecondOfTwoWorkers:
    """What `DistributedData` sees of a 2-worker strategy on the second worker: the cluster, and
    `distribute_datasets_from_function` calling the DataModule with that worker's context."""

    num_replicas_in_sync = 2
    cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": ["127.0.0.1:1", "127.0.0.1:2"]}), task_type="worker",
        task_id=1)

    def distribute_datasets_from_function(self, make_dataset):
        return make_dataset(input_context(2, 1, replicas=2))


def test_a_worker_caches_only_its_own_shard_of_the_evaluation_data(tmp_path, decodes):
    with tfds.testing.mock_data(num_examples=40):
        module = _module(tmp_path)
        evaluation = datasets.DistributedData(_SecondOfTwoWorkers(), module, limits=lambda _: None)
        assert evaluation.evaluation("val") is not None
    # Deciding whether the stage has data must not decode (and cache) the whole split.
    assert decodes == [str(tfds.even_splits("test", n=2)[1])]
    entry, = os.listdir(tmp_path / "cache" / "cifar10")
    shards = [pipeline for split in os.listdir(tmp_path / "cache" / "cifar10" / entry)
              for pipeline in os.listdir(tmp_path / "cache" / "cifar10" / entry / split)]
    assert shards == ["pipeline-1-of-2"]
