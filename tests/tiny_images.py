"""`tiny_images`: a TFDS dataset prepared on disk like a real one, without a download.

64 training and 32 test random 32x32x3 images in 4 classes, written by TFDS as TFRecord files
with their metadata. Once prepared, TFDS reads it by name from its data_dir (`--dataset=
tiny_images --data_dir=...`) without importing this module.
"""

import numpy as np
import tensorflow_datasets as tfds


class TinyImages(tfds.core.GeneratorBasedBuilder):
    """The builder; TFDS registers it as "tiny_images" when this module is imported."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(32, 32, 3)),
                "label": tfds.features.ClassLabel(num_classes=4)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {"train": self._generate_examples(64, seed=0),
                "test": self._generate_examples(32, seed=1)}

    def _generate_examples(self, num_examples, seed):
        rng = np.random.default_rng(seed)
        for index in range(num_examples):
            yield index, {"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                          "label": int(rng.integers(0, 4))}


def prepare(data_dir: str) -> str:
    """Prepares the dataset in `data_dir`; returns the directory that holds its files."""
    builder = TinyImages(data_dir=data_dir)
    builder.download_and_prepare()
    return str(builder.data_dir)
