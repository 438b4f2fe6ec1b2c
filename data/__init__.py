"""DataModules: where a run's examples come from and how they become per-replica batches.

- `DataModule`: the interface the `Trainer` uses (Lightning's `LightningDataModule`).
- `ImageClassificationData`: the tf.data pipeline shared by every image classification source.
- `TFDSImageData`: any TFDS image classification dataset (cifar10, mnist, ...).
- `ImageFolderData`: your own images, one folder per class (data/image_folder.py).
- `ArrayImageData`: in-memory NumPy arrays (tests, benchmarks, quick experiments).
"""

from data.arrays import ArrayImageData
from data.datamodule import STAGES, DataModule
from data.image_classification import ImageClassificationData, scale_pixels
from data.image_folder import ImageFolderData
from data.tfds_images import TFDSImageData

__all__ = ["STAGES", "ArrayImageData", "DataModule", "ImageClassificationData", "ImageFolderData",
           "TFDSImageData", "scale_pixels"]
