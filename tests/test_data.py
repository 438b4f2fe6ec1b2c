"""DataModules: shapes, dtypes, ranges, sharding, exactly-once evaluation, seeded shuffles, errors."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import data
from conftest import input_context, labelled_by_id, random_images


def _ids(dataset, take=None):
    batches = list(dataset.take(take) if take else dataset)
    return [int(round(float(i) * 255)) for images, _ in batches for i in images[:, 0, 0, 0]]


@pytest.mark.parametrize("name, shape", [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1))])
def test_tfds_batches_are_float_images_in_unit_range(tmp_path, name, shape):
    with tfds.testing.mock_data(num_examples=50):
        module = data.TFDSImageData(name=name, data_dir=str(tmp_path), batch_size=16)
        module.prepare_data()
        module.setup()
        assert module.input_shape == shape and module.num_classes == 10
        images, labels = next(iter(module.train_dataset(input_context())))
        assert images.shape == (16, *shape) and images.dtype == tf.float32
        assert labels.shape == (16,) and labels.dtype == tf.int32
        assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
        assert float(tf.reduce_max(images)) > 0.5  # Scaled from [0, 255], not [0, 1] twice.
        val_sizes = [int(b[1].shape[0]) for b in module.val_dataset(input_context())]
        assert val_sizes == [16, 16, 16, 2]  # The partial last batch is kept.
        assert module.steps_per_epoch() == 3


def test_training_order_is_seeded_and_differs_per_epoch():
    train = labelled_by_id(64)
    module = data.ArrayImageData(train=train, batch_size=8, seed=3)
    epochs = _ids(module.train_dataset(input_context()), take=16)
    first, second = epochs[:64], epochs[64:]
    assert sorted(first) == list(range(64)) and sorted(second) == list(range(64))
    assert first != second and first != list(range(64))
    again = data.ArrayImageData(train=train, batch_size=8, seed=3)
    assert _ids(again.train_dataset(input_context()), take=16) == epochs
    other_seed = data.ArrayImageData(train=train, batch_size=8, seed=4)
    assert _ids(other_seed.train_dataset(input_context()), take=8) != first


def test_an_epoch_can_be_rebuilt_from_its_number():
    module = data.ArrayImageData(train=labelled_by_id(64), batch_size=8, seed=3)
    epochs = _ids(module.train_dataset(input_context()), take=24)
    assert _ids(module.train_dataset(input_context(), start_epoch=2), take=8) == epochs[128:]


def test_training_drops_the_remainder_but_each_epoch_a_different_one():
    module = data.ArrayImageData(train=labelled_by_id(70), batch_size=8, seed=0)
    assert module.steps_per_epoch() == 8 and module.dropped_per_epoch() == 6
    ids = _ids(module.train_dataset(input_context()), take=16)
    first, second = set(ids[:64]), set(ids[64:])
    assert len(first) == 64 and len(second) == 64 and first != second


def test_evaluation_sees_every_example_exactly_once_across_input_pipelines():
    val = labelled_by_id(101)
    module = data.ArrayImageData(train=val, val=val, batch_size=8)
    seen = []
    for pipeline in range(2):
        seen += _ids(module.val_dataset(input_context(2, pipeline, replicas=2)))
    assert sorted(seen) == list(range(101))


def test_training_shards_are_disjoint_across_input_pipelines():
    module = data.ArrayImageData(train=labelled_by_id(64), batch_size=8)
    shards = [set(_ids(module.train_dataset(input_context(2, p, replicas=2)), take=8)) for p in range(2)]
    assert len(shards[0]) == 32 and not shards[0] & shards[1]


def test_per_replica_batch_is_the_global_batch_divided_by_replicas():
    module = data.ArrayImageData(train=random_images(64), batch_size=32)
    images, _ = next(iter(module.train_dataset(input_context(1, 0, replicas=4))))
    assert images.shape[0] == 8


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match=r"dataset \('no_such_dataset'\) is not a TFDS dataset"):
        data.TFDSImageData(name="no_such_dataset")


def test_bad_split_names_the_argument(tmp_path):
    with tfds.testing.mock_data(num_examples=10):
        module = data.TFDSImageData(name="cifar10", data_dir=str(tmp_path), val_split="")
        module.setup()
        assert module.val_dataset(input_context()) is None


def test_by_default_validation_holds_out_a_slice_of_the_training_split(real_data_dir):
    # The real prepared CIFAR-10: 45,000 examples to train on, 5,000 to validate on, and the
    # test split only for the test.
    real = data.TFDSImageData(name="cifar10", data_dir=real_data_dir, download=False)
    real.setup()
    assert real.splits == {"train": "train[:90%]", "val": "train[90%:]", "test": "test",
                           "predict": "test"}
    assert [real._num_examples(stage) for stage in ("train", "val", "test")] == [  # pylint: disable=protected-access
        45_000, 5_000, 10_000]


def test_a_split_the_dataset_lacks_is_named(real_data_dir):
    # The real prepared CIFAR-10: tfds.testing.mock_data accepts any split name.
    real = data.TFDSImageData(name="cifar10", data_dir=real_data_dir, download=False,
                              val_split="validation")
    with pytest.raises(ValueError, match=r"val_split \('validation'\) is not a valid split"):
        real.setup()


def test_missing_dataset_without_download_says_to_pass_data_dir(tmp_path):
    module = data.TFDSImageData(name="mnist", data_dir=str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError, match="--data_dir"):
        module.prepare_data()


def test_failed_download_says_to_pass_data_dir(tmp_path, monkeypatch):
    module = data.TFDSImageData(name="mnist", data_dir=str(tmp_path))

    def no_network(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(module._builder, "download_and_prepare", no_network)
    with pytest.raises(RuntimeError, match=r"could not download.*mnist.*--data_dir"):
        module.prepare_data()


def test_batch_size_must_be_positive_and_fit_an_epoch():
    with pytest.raises(ValueError, match=r"batch_size \(0\)"):
        data.ArrayImageData(train=random_images(8), batch_size=0)
    with pytest.raises(ValueError, match=r"batch_size \(16\) is larger than the training split \(8"):
        data.ArrayImageData(train=random_images(8), batch_size=16).steps_per_epoch()


def _first_batches(module, epoch, count=2):
    batches = list(module.train_dataset(input_context(), start_epoch=epoch).take(count))
    return np.concatenate([images.numpy() for images, _ in batches])


def test_augmentation_is_seeded_per_epoch_and_keeps_shapes_and_range():
    train = random_images(64, shape=(8, 8, 3))
    plain = data.ArrayImageData(train=train, val=train, batch_size=16, seed=5)
    augmented = data.ArrayImageData(train=train, val=train, batch_size=16, seed=5, augment=True)
    same = data.ArrayImageData(train=train, val=train, batch_size=16, seed=5, augment=True)
    epoch0 = _first_batches(augmented, 0)
    assert epoch0.shape == (32, 8, 8, 3) and epoch0.dtype == np.float32
    assert epoch0.min() >= 0.0 and epoch0.max() <= 1.0
    np.testing.assert_array_equal(epoch0, _first_batches(same, 0))          # deterministic
    assert not np.array_equal(epoch0, _first_batches(plain, 0))             # it does something
    assert not np.array_equal(_first_batches(augmented, 1), _first_batches(plain, 1))
    # Same examples in the same order as without augmentation: labels match, pixels differ.
    labels = [l.numpy() for _, l in augmented.train_dataset(input_context()).take(2)]
    plain_labels = [l.numpy() for _, l in plain.train_dataset(input_context()).take(2)]
    np.testing.assert_array_equal(np.concatenate(labels), np.concatenate(plain_labels))
    # Evaluation is never augmented.
    for (a, _), (b, _) in zip(augmented.val_dataset(input_context()), plain.val_dataset(input_context())):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_augmented_images_are_flipped_and_shifted_copies():
    images = np.zeros((16, 8, 8, 1), np.uint8)
    images[:, 2, 3, 0] = 200  # One bright pixel per image.
    module = data.ArrayImageData(train=(images, np.zeros(16, np.int64)), num_classes=2,
                                 batch_size=16, seed=0, augment=True)
    batch = _first_batches(module, 0, count=1)
    positions = {tuple(np.argwhere(img[..., 0] > 0.5)[0]) for img in batch
                 if (img[..., 0] > 0.5).any()}
    # The pixel moved by at most 4 in each direction from (2, 3) or its mirror (2, 4).
    assert len(positions) > 3
    assert all(abs(r - 2) <= 4 and (abs(c - 3) <= 4 or abs(c - 4) <= 4) for r, c in positions)
