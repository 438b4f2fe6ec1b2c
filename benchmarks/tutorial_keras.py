"""The CIFAR-10 tutorial's own recipe, plain Keras: the baseline that benchmarks/tutorial_job.py times.

    python benchmarks/tutorial_keras.py --model=sequential --data_dir=~/tensorflow_datasets

What the tutorial does, re-implemented here (no part of this project is used):

1. quiet TensorFlow's C++ logging (TF_CPP_MIN_LOG_LEVEL=2);
2. load CIFAR-10 whole, as NumPy arrays (here from a prepared TFDS directory, since this
   machine has no internet), and scale the uint8 pixels to float32 in [0, 1];
3. build the CNN: "sequential" with the Sequential API, "functional" (three conv blocks with
   BatchNorm, as this project defines it) with the functional API; both end in 10 logits;
4. compile with sparse categorical cross-entropy on logits, Adam at 3e-4 and accuracy;
5. `fit` on the arrays, batch 64, no validation, one log line per epoch (verbose=2);
6. `evaluate` on the test arrays, batch 64.

The last line is `test_accuracy=<x>` (and the line before it `train_accuracy=<x>`, the last
epoch's), for the job benchmark to read.
"""

import argparse
import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # Set before TensorFlow is imported, as the tutorial does.

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

keras = tf.keras


def load_cifar10(data_dir):
    """(x_train, y_train), (x_test, y_test): float32 images in [0, 1], integer labels."""
    splits = []
    for split in ("train", "test"):
        images, labels = tfds.as_numpy(tfds.load("cifar10", split=split, batch_size=-1,
                                                 as_supervised=True, data_dir=data_dir,
                                                 download=False))
        splits.append((images.astype("float32") / 255.0, labels))
    return splits


def sequential_cnn():
    """Three valid 3x3 convolutions (32, 64, 128 filters) with two 2x2 max-pools between them,
    then a 64-unit hidden layer and 10 logits."""
    return keras.Sequential([
        keras.Input(shape=(32, 32, 3)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(128, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])


def functional_cnn():
    """Conv -> BatchNorm -> ReLU three times (32 filters 3x3 valid, then a 2x2 max-pool; 64 filters
    5x5 same; 128 filters 3x3 valid), then a 64-unit hidden layer and 10 logits."""
    inputs = keras.Input(shape=(32, 32, 3))
    x = inputs
    for filters, size, padding, pool in ((32, 3, "valid", True), (64, 5, "same", False),
                                         (128, 3, "valid", False)):
        x = keras.layers.Conv2D(filters, size, padding=padding)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        if pool:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


MODELS = {"sequential": sequential_cnn, "functional": functional_cnn}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="functional")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data_dir", default=None, help="a prepared TFDS directory")
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = load_cifar10(args.data_dir)
    model = MODELS[args.model]()
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  optimizer=keras.optimizers.Adam(learning_rate=3e-4),
                  metrics=["accuracy"])
    print(f"{args.model}: {model.count_params():,} parameters")
    history = model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=2)
    _, test_accuracy = model.evaluate(x_test, y_test, batch_size=64, verbose=2)
    print(f"train_accuracy={history.history['accuracy'][-1]:.4f}")
    print(f"test_accuracy={test_accuracy:.4f}")


if __name__ == "__main__":
    main()
