"""An image classification DataModule over a folder of image files, one folder per class.

    root/<class>/*.png|jpg|jpeg|bmp|gif            one split, "train", holding every image
    root/<split>/<class>/*.png|...                 split folders: train, val, test, ...

Class names are the class folders' names, sorted; images in subfolders of a class folder belong
to it. A folder is read as split folders when none of its folders holds images directly. Split
strings keep TFDS' syntax: "train", "train[:90%]", "train[90%:]", "test", "train[:100]+val".

Each split's files are ordered by a hash of their path inside the split folder (`cat/001.jpg`):
a fixed, class-mixed order that does not depend on the seed, on where the folder lives or on
the order the file system lists it, so "train[:90%]" and "train[90%:]" are the same files on
every run and every machine, and every class is held out in proportion.

`setup()` decodes every image once before anything trains: a corrupt file is named then, not in
the middle of an epoch, and the images' sizes and channels decide the input shape.
"""

import hashlib
import io
import os
import types
import uuid

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data import datamodule
from data import decoded_cache
from data import image_classification
from data import image_files


def has_images_directly(directory: str) -> bool:
    """Whether `directory` itself (not a subfolder) holds an image file."""
    return any(image_files.is_image_name(name) for name in tf.io.gfile.listdir(directory)
               if not tf.io.gfile.isdir(os.path.join(directory, name)))


def _subfolders(directory: str) -> list[str]:
    """The names of `directory`'s folders, sorted (tf.io.gfile marks some with a trailing /)."""
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(directory)
                  if tf.io.gfile.isdir(os.path.join(directory, name)))


def split_folders(root: str) -> dict[str, str]:
    """{split name: folder} of the image folder `root`: its split folders, or {"train": root}.

    Raises:
        ValueError: if `root` is not a folder or holds no folders.
    """
    if not tf.io.gfile.isdir(root):
        raise ValueError(f"dataset ({root!r}) is not a folder")
    folders = _subfolders(root)
    if not folders:
        raise ValueError(f"dataset folder {root} holds no class folders: put each class's images "
                         f"in a folder of its own, {os.path.join(root, '<class>', '*.jpg')}")
    paths = {name: os.path.join(root, name) for name in folders}
    if any(has_images_directly(path) for path in paths.values()):
        return {"train": root}
    return paths


def identity(root: str) -> str:
    """What identifies the image folder `root` wherever it lives: its name and its classes (a
    moved folder, or a moved run directory, keeps it); recorded in a run's run_config.json."""
    splits = split_folders(root)
    names = _subfolders(splits.get("train", next(iter(splits.values()))))
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:8]
    name = os.path.basename(os.path.normpath(root))
    return f"image folder {name}: {len(names)} classes ({digest})"


def _file_order(relative_path: str) -> str:
    return hashlib.sha1(relative_path.encode()).hexdigest()


class ImageFolderData(image_classification.ImageClassificationData):
    """Your own images: `root/<class>/*.jpg` (or with split folders), through the same pipeline
    as the TFDS DataModule: seeded order per epoch, exact resume, sharding, the decoded cache.

    Args:
        root: the folder (local, or any `tf.io.gfile` file system such as gs://).
        train_split, val_split, test_split: TFDS-style split strings over the split folders, e.g.
            "train[:90%]"; "" turns validation or test off. A val or test split that names a
            split folder the dataset does not have (e.g. "test" in a folder without split
            folders) is off too, and `describe()` says so.
        predict_split: the split `predict_dataset` reads; "" means the test split.
        image_size: (height, width) every image is resized to; None: the size all images share
            (an error if they differ).
        cache_dir: where decoded examples are kept for later runs (data/decoded_cache.py), keyed
            by the files' paths, sizes and modification times, the size and the channels.
        **pipeline_kwargs: `batch_size`, `seed`, `shuffle_buffer_size`, `augment`, `data_order`,
            `eval_batch_size` (see ImageClassificationData).
    """

    def __init__(self, *, root: str, train_split: str = "train[:90%]",
                 val_split: str = "train[90%:]", test_split: str = "test", predict_split: str = "",
                 image_size: tuple[int, int] | None = None, cache_dir: str | None = None,
                 **pipeline_kwargs):
        super().__init__(**pipeline_kwargs)
        if not train_split:
            raise ValueError("train_split ('') must name a split, e.g. 'train' or 'train[:90%]'")
        self.root = root
        self.image_size = tuple(image_size) if image_size else None
        self.cache_dir = os.path.expanduser(cache_dir) if cache_dir else None
        self.splits = {"train": train_split, "val": val_split, "test": test_split,
                       "predict": predict_split or test_split}
        self._explicit_predict = bool(predict_split)
        self._files: dict[str, list[tuple[str, int]]] = {}
        self._missing: dict[str, str] = {}  # stage -> the split folder it names but lacks
        self._skipped = 0
        self._resized = self._made_rgb = 0

    # ---- Finding the files -------------------------------------------------------------------

    def setup(self):
        if self._files:  # Set up once: this reads and decodes every image.
            return
        folders = split_folders(self.root)
        train_folder = self._folder_of("train", folders)
        self.class_names = _subfolders(train_folder)
        self.num_classes = len(self.class_names)
        used = {name for stage in self.splits for name in self._split_names(stage, folders)}
        listed = {name: self._list_split(name, folders[name]) for name in sorted(used)}
        for stage in self.splits:
            self._files[stage] = self._select(stage, listed, folders)
        self._check_and_shape([pair for files in listed.values() for pair in files])

    def _folder_of(self, stage, folders):
        """The first split folder `stage` reads (the training split's holds the class names)."""
        return folders[self._split_names(stage, folders)[0]]

    def _split_names(self, stage, folders) -> list[str]:
        """The split folders `stage`'s split string reads ([] if none: no such stage)."""
        spec = self.splits[stage]
        if not spec:
            return []
        try:
            tfds.core.ReadInstruction.from_spec(spec)  # Checks the syntax.
        except (ValueError, NotImplementedError) as error:
            raise ValueError(f"{stage}_split ({spec!r}) is not a split string such as 'train' or "
                             f"'train[:90%]': {str(error).splitlines()[0]}") from None
        names = [part.split("[")[0].strip() for part in spec.split("+")]
        if names == ["all"]:
            return sorted(folders)
        missing = [name for name in names if name not in folders]
        # A bare "val" or "test" the folder does not have: no such stage (a folder without a
        # test folder, under the default --test_split=test). A slice of it is a mistake, and so
        # is a missing train split or a predict split asked for by name.
        optional = stage in ("val", "test") or (stage == "predict" and not self._explicit_predict)
        if missing and optional and spec.strip() == missing[0]:
            self._missing[stage] = missing[0]
            return []
        if missing:
            raise ValueError(f"{stage}_split ({spec!r}) names a split that dataset folder "
                             f"{self.root} does not have ({missing[0]!r}): it has "
                             f"{sorted(folders)}")
        return names

    def _list_split(self, name, folder) -> list[tuple[str, int]]:
        """(path, label) of every image of split folder `folder`, in the split's fixed order."""
        classes = _subfolders(folder)
        if classes != self.class_names:
            raise ValueError(f"split folder {folder} has classes {classes}, but the training "
                             f"split's folder has {self.class_names}: every split needs the "
                             "same class folders")
        files = []
        for label, class_name in enumerate(classes):
            class_folder = os.path.join(folder, class_name)
            images, skipped = image_files.images_under(class_folder)
            if not images:
                raise ValueError(f"class folder {class_folder} holds no images "
                                 f"({', '.join(image_files.IMAGE_EXTENSIONS)})")
            self._skipped += skipped
            files += [(path, label) for path in images]
        if name == "train" and folder == self.root:  # Files beside the class folders.
            self._skipped += sum(1 for entry in tf.io.gfile.listdir(folder)
                                 if not tf.io.gfile.isdir(os.path.join(folder, entry)))
        return sorted(files, key=lambda pair: _file_order(os.path.relpath(pair[0], folder)))

    def _select(self, stage, listed, folders) -> list[tuple[str, int]]:
        """The files of `stage`'s split string, in order: its slices of the split folders."""
        names = self._split_names(stage, folders)
        if not names:
            return []
        sizes = {name: types.SimpleNamespace(num_examples=len(files), shard_lengths=[len(files)])
                 for name, files in listed.items()}
        try:
            parts = tfds.core.ReadInstruction.from_spec(self.splits[stage]).to_absolute(sizes)
        except ValueError as error:
            raise ValueError(f"{stage}_split ({self.splits[stage]!r}) does not fit dataset folder "
                             f"{self.root}: {error}") from None
        return [pair for part in parts for pair in listed[part.splitname][part.from_:part.to]]

    def _check_and_shape(self, files):
        """Decodes every image once (a bad file is named now) and sets the input shape."""
        shapes = self._checked_shapes(files)
        channels = 3 if np.any(shapes[:, 2] >= 3) else 1
        sizes = {(int(height), int(width)) for height, width in shapes[:, :2]}
        if self.image_size is None and len(sizes) > 1:
            small = min(sizes, key=lambda size: size[0] * size[1])
            large = max(sizes, key=lambda size: size[0] * size[1])
            raise ValueError(
                f"the images of dataset folder {self.root} have {len(sizes)} different sizes "
                f"(from {small[0]}x{small[1]} to {large[0]}x{large[1]}): pass an image size to "
                "resize them all to (--image_size=HEIGHTxWIDTH, e.g. "
                f"--image_size={large[0]}x{large[1]})")
        size = self.image_size or sizes.pop()
        self._input_shape = (*size, channels)
        self._resized = int(np.sum(np.any(shapes[:, :2] != size, axis=1)))
        self._made_rgb = int(np.sum(shapes[:, 2] < 3)) if channels == 3 else 0

    def _checked_shapes(self, files) -> np.ndarray:
        """Every image's [height, width, channels] (`image_files.check_images`). With a cache_dir
        they are kept there, keyed like the decoded cache by the files' paths, sizes and
        modification times, so a later run on unchanged files skips the check."""
        paths = [path for path, _ in files]
        if not self.cache_dir:
            return image_files.check_images(paths)
        record = os.path.join(self.cache_dir, "image_folder", _name(self.root),
                              f"checked-{_fingerprint(files, self.root)[:16]}.npy")
        if tf.io.gfile.exists(record):
            with tf.io.gfile.GFile(record, "rb") as f:
                return np.load(io.BytesIO(f.read()))
        shapes = image_files.check_images(paths)
        content = io.BytesIO()
        np.save(content, shapes)
        tf.io.gfile.makedirs(os.path.dirname(record))
        # Written whole under another name first: a killed run leaves no partial record.
        temporary = f"{record}.{uuid.uuid4().hex[:8]}.tmp"
        with tf.io.gfile.GFile(temporary, "wb") as f:
            f.write(content.getvalue())
        tf.io.gfile.rename(temporary, record, overwrite=True)
        return shapes

    # ---- What the pipeline reads -------------------------------------------------------------

    def _num_examples(self, stage):
        if stage not in self._files:
            raise RuntimeError("call setup() before asking for datasets")
        return len(self._files[stage])

    def _read(self, stage, ctx):
        files = self._files[stage]
        if not files:
            return None
        if ctx.num_input_pipelines > 1:  # Never in global order, which reads the whole split.
            files = files[ctx.input_pipeline_id::ctx.num_input_pipelines]
        if not self.cache_dir:
            return self._decode(files)
        key = {"dataset": "image_folder", "version": _name(self.root), "split": self.splits[stage],
               "pipeline": ctx.input_pipeline_id, "pipelines": ctx.num_input_pipelines,
               "shape": list(self.input_shape), "source": _fingerprint(files, self.root)}
        return decoded_cache.cached(lambda: self._decode(files), self.cache_dir, key)

    def _decode(self, files):
        """The (uint8 image, label) examples of `files`, read and decoded in parallel, in order."""
        paths, labels = zip(*files)
        height, width, channels = self.input_shape
        examples = tf.data.Dataset.from_tensor_slices((list(paths), np.array(labels, np.int64)))
        resize = self._resized > 0  # Otherwise every image has the size already: no check.
        return examples.map(lambda path, label: (
            image_files.decode(path, channels=channels, size=(height, width),
                               resize_if_needed=resize), label),
            num_parallel_calls=tf.data.AUTOTUNE)

    def example_paths(self, stage: str) -> list[str]:
        """The file of each example of `stage`, in the order the pipeline reads them (one
        pipeline): predictions.csv names them."""
        return [path for path, _ in self._files[stage]]

    def damage_report(self, error):
        """Files are checked in `setup()`; an error later (a file changed since) is not rewritten."""
        del error
        return None

    def describe(self) -> str:
        """One line for the run's plan: the folder, its classes and splits, what was skipped."""
        counts = []
        for stage in datamodule.STAGES:
            if self._files[stage]:
                counts.append(f"{stage} {len(self._files[stage])} ({self.splits[stage]})")
            elif stage in self._missing:
                counts.append(f"no {stage} (no {self._missing[stage]!r} split folder)")
            else:
                counts.append(f"no {stage}")
        height, width, channels = self.input_shape
        notes = [f"{height}x{width}x{channels}"]
        if self._resized:
            notes.append(f"{self._resized} resized")
        if self._made_rgb:
            notes.append(f"{self._made_rgb} grayscale made RGB")
        if self._skipped == 1:
            notes.append("1 file that is not an image skipped")
        elif self._skipped:
            notes.append(f"{self._skipped} files that are not images skipped")
        return (f"image folder {self.root}: {self.num_classes} classes | {' | '.join(counts)} | "
                f"{', '.join(notes)}")


def _name(root: str) -> str:
    return os.path.basename(os.path.normpath(root)) or "root"


def _fingerprint(files, root) -> str:
    """A digest of the files' paths (inside `root`), sizes and modification times: a changed,
    added or removed image gives another cache entry."""
    digest = hashlib.sha1()
    for path, label in files:
        stat = tf.io.gfile.stat(path)
        digest.update(f"{os.path.relpath(path, root)}\t{label}\t{stat.length}\t"
                      f"{stat.mtime_nsec}\n".encode())
    return digest.hexdigest()
