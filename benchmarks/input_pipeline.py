"""The input pipeline alone: how fast the DataModule delivers CIFAR-10 batches, with no model.

    python benchmarks/input_pipeline.py --data_dir=~/tensorflow_datasets

Epoch 1 reads and decodes the TFDS files and fills the in-memory cache; later epochs come from
the cache (a stateless shuffle, batching, uint8 -> float32). Compare with what training consumes
(the epoch lines' img/s): the pipeline must be several times faster so it never starves the model.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

import data  # noqa: E402


def _images_per_second(iterator, steps, batch_size):
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    datamodule = data.TFDSImageData(name=args.dataset, data_dir=args.data_dir,
                                    batch_size=args.batch_size, download=False)
    datamodule.prepare_data()
    datamodule.setup()
    context = tf.distribute.InputContext()
    steps = datamodule.steps_per_epoch()
    train = iter(datamodule.train_dataset(context))
    for epoch in range(1, args.epochs + 1):
        what = "read + decode + cache" if epoch == 1 else "from the cache"
        speed = _images_per_second(train, steps, args.batch_size)
        print(f"train epoch {epoch} ({what}): {speed:,.0f} img/s")
    validation = datamodule.val_dataset(context)
    for label in ("read + decode + cache", "from the cache"):
        start = time.perf_counter()
        count = sum(int(labels.shape[0]) for _, labels in validation)
        print(f"validation pass ({label}): {count / (time.perf_counter() - start):,.0f} img/s")


if __name__ == "__main__":
    main()
