"""The image folder source in-process: layouts, splits, sizes and channels, bad input, and the
pipeline's guarantees (seeded order, sharding, exactly-once evaluation, the decoded cache)."""

import csv
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import data
from conftest import input_context
from data import image_files
from data import image_folder
from image_folders import CLASSES, class_image, make_folder, write_image


def _setup(root, **kwargs):
    module = data.ImageFolderData(root=str(root), batch_size=4, **kwargs)
    module.setup()
    return module


def _labels(dataset):
    return [int(label) for _, labels in dataset for label in labels]


def _pixels(dataset):
    return np.concatenate([images.numpy() for images, _ in dataset])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes x 12 images, PNG and JPEG, 8x8 and 12x10, every 5th grayscale; a text file."""
    root = tmp_path_factory.mktemp("pictures") / "pets"
    make_folder(str(root), gray_every=5)
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_default_splits_hold_out_a_fixed_class_mixed_tenth(folder):
    module = _setup(folder, image_size=(8, 8))
    assert module.class_names == list(CLASSES) and module.num_classes == 3
    train, val = module._files["train"], module._files["val"]
    assert len(train) == 32 and len(val) == 4  # round(36 * 0.9) = 32
    assert not {path for path, _ in train} & {path for path, _ in val}
    assert len({label for _, label in val}) > 1  # Not the last class in alphabetical order.
    other_seed = data.ImageFolderData(root=str(folder), batch_size=4, seed=7, image_size=(8, 8))
    other_seed.setup()
    assert other_seed._files["val"] == val  # The held-out files do not depend on the seed.
    line = module.describe()
    assert "3 classes | train 32 (train[:90%]) | val 4 (train[90%:])" in line
    assert "no test (no 'test' split folder)" in line
    assert "8x8x3" in line and "grayscale made RGB" in line
    assert "1 file that is not an image skipped" in line


def test_a_moved_folder_keeps_its_order_identity_and_batches(folder, tmp_path):
    moved = tmp_path / "elsewhere" / "pets"
    shutil.copytree(folder, moved)
    module, copy = _setup(folder, image_size=(8, 8)), _setup(moved, image_size=(8, 8))
    relative = [os.path.relpath(path, folder) for path, _ in module._files["train"]]
    assert [os.path.relpath(path, moved) for path, _ in copy._files["train"]] == relative
    assert image_folder.identity(str(moved)) == image_folder.identity(str(folder))
    batches = module.train_dataset(input_context()).take(5)
    np.testing.assert_array_equal(_pixels(copy.train_dataset(input_context()).take(5)),
                                  _pixels(batches))


def test_images_of_different_sizes_need_an_image_size(folder):
    with pytest.raises(ValueError, match=r"2 different sizes \(from 8x8 to 12x10\).*"
                                         r"--image_size=12x10"):
        _setup(folder)
    module = _setup(folder, image_size=(6, 7))
    images, _ = next(iter(module.train_dataset(input_context())))
    assert module.input_shape == (6, 7, 3) and images.shape == (4, 6, 7, 3)


def test_grayscale_only_stays_grayscale_and_one_size_needs_no_flag(tmp_path):
    make_folder(str(tmp_path), per_class=4, sizes=((8, 8),), gray_every=1)
    module = _setup(tmp_path, val_split="", test_split="")
    assert module.input_shape == (8, 8, 1)
    assert "no val |" in module.describe() and "resized" not in module.describe()
    stored = tf.io.decode_png(tf.io.read_file(module._files["train"][0][0])).numpy()
    first = next(iter(module._decode(module._files["train"][:1])))[0].numpy()
    np.testing.assert_array_equal(first, stored)  # Read as stored: no resize, no conversion.


def test_split_folders_and_slices(tmp_path):
    make_folder(str(tmp_path / "train"), per_class=10, sizes=((8, 8),))
    make_folder(str(tmp_path / "test"), per_class=2, sizes=((8, 8),), seed=50)
    module = _setup(tmp_path, train_split="train[:80%]", val_split="train[80%:]",
                    test_split="test")
    counts = {stage: len(module._files[stage]) for stage in ("train", "val", "test", "predict")}
    assert counts == {"train": 24, "val": 6, "test": 6, "predict": 6}
    assert module.has_stage("test")
    with pytest.raises(ValueError, match=r"val_split \('val\[:50%\]'\) names a split that "
                                         r"dataset folder .* does not have \('val'\): it has "
                                         r"\['test', 'train'\]"):
        _setup(tmp_path, val_split="val[:50%]")
    with pytest.raises(ValueError, match=r"predict_split \('val'\) names a split"):
        _setup(tmp_path, predict_split="val")
    with pytest.raises(ValueError, match=r"train_split \('train\[x\]'\) is not a split string"):
        _setup(tmp_path, train_split="train[x]")


def test_a_split_folder_with_other_classes_is_named(tmp_path):
    make_folder(str(tmp_path / "train"), per_class=2, sizes=((8, 8),))
    write_image(str(tmp_path / "test" / "cat" / "1.png"), class_image(0))
    write_image(str(tmp_path / "test" / "owl" / "1.png"), class_image(1))
    with pytest.raises(ValueError, match=rf"split folder {tmp_path / 'test'} has classes "
                                         r"\['cat', 'owl'\], but the training split's folder has "
                                         r"\['cat', 'dog', 'fox'\]"):
        _setup(tmp_path)


def test_an_empty_folder_or_a_class_folder_without_images_is_named(tmp_path):
    with pytest.raises(ValueError, match=rf"dataset folder {tmp_path} holds no class folders"):
        _setup(tmp_path)
    write_image(str(tmp_path / "cat" / "1.png"), class_image(0))
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "list.txt").write_text("dog photos to come")
    with pytest.raises(ValueError, match=rf"class folder {tmp_path / 'dog'} holds no images"):
        _setup(tmp_path)
    with pytest.raises(ValueError, match=r"dataset \('.*missing'\) is not a folder"):
        _setup(tmp_path / "missing")


@pytest.mark.parametrize("damage", ["cut", "not_an_image"])
def test_a_corrupt_image_is_named_before_anything_is_read(tmp_path, damage):
    paths = make_folder(str(tmp_path), per_class=3, sizes=((8, 8),))
    bad = next(path for path in paths if path.endswith(".jpg"))
    with open(bad, "rb") as f:
        content = f.read()
    with open(bad, "wb") as f:
        f.write(content[:len(content) // 2] if damage == "cut" else b"<html>not found</html>")
    with pytest.raises(image_files.UnreadableImageError, match=rf"image file {bad} cannot be read "
                                                               r"as an image \(.+\)"):
        _setup(tmp_path)


def test_training_order_is_a_function_of_seed_and_epoch(folder):
    first = _setup(folder, image_size=(8, 8), val_split="")
    again = _setup(folder, image_size=(8, 8), val_split="")
    epochs = _labels(first.train_dataset(input_context()).take(16))  # 2 epochs of 8 batches
    assert _labels(again.train_dataset(input_context()).take(16)) == epochs
    assert epochs[:32] != epochs[32:]
    resumed = _labels(again.train_dataset(input_context(), start_epoch=1, skip_batches=3).take(5))
    assert resumed == epochs[44:64]


def test_pipelines_share_out_training_and_see_each_evaluation_example_once(folder):
    module = _setup(folder, image_size=(8, 8), test_split="train")
    whole = _pixels(module.test_dataset(input_context()))
    shards = [_pixels(module.test_dataset(input_context(2, p, replicas=2))) for p in range(2)]
    assert len(whole) == 36 and sum(len(shard) for shard in shards) == 36
    assert sorted(map(bytes, np.concatenate(shards))) == sorted(map(bytes, whole))
    train = [_pixels(module.train_dataset(input_context(2, p, replicas=2)).take(4))
             for p in range(2)]
    assert not set(map(bytes, train[0])) & set(map(bytes, train[1]))


def test_global_order_gives_every_pipeline_slices_of_one_devices_batches(folder):
    one = data.ImageFolderData(root=str(folder), batch_size=4, image_size=(8, 8),
                               data_order="global")
    one.setup()
    batches = _pixels(one.train_dataset(input_context()).take(3))
    slices = [_pixels(one.train_dataset(input_context(2, p, replicas=2)).take(3))
              for p in range(2)]
    for step in range(3):
        np.testing.assert_array_equal(slices[0][2 * step:2 * step + 2], batches[4 * step:4 * step + 2])
        np.testing.assert_array_equal(slices[1][2 * step:2 * step + 2], batches[4 * step + 2:4 * step + 4])


def test_the_decoded_cache_serves_the_same_examples_and_a_changed_file_rebuilds_it(tmp_path):
    root, cache_dir = tmp_path / "pets", str(tmp_path / "cache")
    paths = make_folder(str(root), per_class=4, sizes=((8, 8),))
    decoded = _pixels(_setup(root, test_split="train").test_dataset(input_context()))
    writing = _setup(root, test_split="train", cache_dir=cache_dir)
    np.testing.assert_array_equal(_pixels(writing.test_dataset(input_context())), decoded)
    write_image(paths[0], class_image(2, seed=99))  # Another image under the same name.
    changed = _pixels(_setup(root, test_split="train").test_dataset(input_context()))
    assert not np.array_equal(changed, decoded)
    reading = _setup(root, test_split="train", cache_dir=cache_dir)
    dataset = reading.test_dataset(input_context())
    for path in paths:  # From now on only the cache can serve the examples.
        os.remove(path)
    np.testing.assert_array_equal(_pixels(dataset), changed)


def test_with_a_cache_dir_a_later_run_on_the_same_files_skips_the_check(tmp_path, monkeypatch):
    root, cache_dir = tmp_path / "pets", str(tmp_path / "cache")
    paths = make_folder(str(root), per_class=2, sizes=((8, 8), (6, 6)), gray_every=2)
    first = _setup(root, image_size=(8, 8), cache_dir=cache_dir)

    def no_check(paths):
        raise AssertionError("the images were checked again")

    monkeypatch.setattr(image_files, "check_images", no_check)
    again = _setup(root, image_size=(8, 8), cache_dir=cache_dir)
    assert again.describe() == first.describe()  # The same sizes and channels, from the record.
    write_image(paths[0], class_image(0, size=(9, 9)))  # A changed file: checked again.
    with pytest.raises(AssertionError, match="checked again"):
        _setup(root, image_size=(8, 8), cache_dir=cache_dir)


def test_predictions_of_a_split_name_their_files(folder, tmp_path):
    import trainer
    from trainer.vision import predictions
    datamodule = data.ImageFolderData(root=str(folder), batch_size=4, image_size=(8, 8),
                                      val_split="", predict_split="train[90%:]")
    network = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)])
    module = trainer.ImageClassifier(network, learning_rate=1e-3)
    fitter = trainer.Trainer(epochs=1, enable_progress_bar=False, enable_model_summary=False)
    path = str(tmp_path / "predictions.csv")
    assert predictions.write_predictions(fitter, module, datamodule, path) == 4
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["index", "path", "label"]
    for row, (file_path, label) in zip(rows, datamodule._files["predict"]):
        assert row["path"] == file_path and row["label_name"] == CLASSES[label]
        assert file_path.startswith(os.path.join(str(folder), row["label_name"], ""))


def test_a_folder_on_another_file_system_is_read_through_tf_io_gfile():
    # TensorFlow's in-memory file system stands in for gs:// and the other plugins' schemes.
    for label, name in enumerate(CLASSES[:2]):
        for index in range(3):
            tf.io.write_file(f"ram://store/pets/{name}/{index}.png",
                             tf.io.encode_png(class_image(label)))
    tf.io.write_file("ram://store/pets/dog/list.txt", "not an image")
    module = _setup("ram://store/pets", train_split="train[:50%]", val_split="train[50%:]")
    assert "2 classes | train 3 (train[:50%]) | val 3 (train[50%:])" in module.describe()
    assert "1 file that is not an image skipped" in module.describe()
    assert sorted(_labels(module.val_dataset(input_context())) + _labels(
        module.evaluation_dataset("train", input_context()))) == [0, 0, 0, 1, 1, 1]
    _setup("ram://store/pets", cache_dir="ram://store/cache")  # The check's record goes there.
    assert tf.io.gfile.glob("ram://store/cache/image_folder/pets/checked-*.npy")


def test_image_size_text():
    assert image_files.parse_image_size("24") == (24, 24)
    assert image_files.parse_image_size("24x32") == (24, 32)
    with pytest.raises(ValueError, match=r"image_size \('24x'\) must be HEIGHTxWIDTH"):
        image_files.parse_image_size("24x")


def test_the_command_line_tells_a_folder_from_a_tfds_name(folder):
    from absl import flags as absl_flags
    from absl.testing import flagsaver
    from trainer import main
    if not absl_flags.FLAGS.is_parsed():
        absl_flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver(dataset=str(folder), image_size="8", model="sequential",
                             val_split="train[90%:]", test_split="", batch_size=4):
        assert main._model_dir() == os.path.join("runs", "pets-sequential")  # Not inside it.
        assert main._dataset_identity() == image_folder.identity(str(folder))
        datamodule = main._datamodule()
        assert isinstance(datamodule, data.ImageFolderData)
        assert datamodule.input_shape == (8, 8, 3) and not datamodule.has_stage("test")
    with flagsaver.flagsaver(dataset="cifar10", image_size="32"):
        assert main._dataset_identity() == "cifar10"
        with pytest.raises(ValueError, match=r"image_size \('32'\) applies to image folders only, "
                                             r"and dataset \('cifar10'\) is not a folder"):
            main._datamodule()
    with flagsaver.flagsaver(dataset=str(folder), predict_files="new/*.jpg", predict_split="test"):
        with pytest.raises(ValueError, match=r"predict_files \('new/\*.jpg'\) and predict_split "
                                             r"\('test'\) both write predictions.csv"):
            main._datamodule()
