"""Small measurements for the "break it" exercises of docs/the_training_loop.md.

    python examples/break_it.py scope           # 2 replicas: where the optimizer is created
    python examples/break_it.py scope_trainer   # 2 replicas: the Trainer, same mistake
    python examples/break_it.py clip            # 2 replicas: clipping the summed gradient
    python examples/break_it.py batchnorm       # 1 device: what evaluation does to BatchNorm
    python examples/break_it.py print           # 1 device: what runs when a step is traced

`--replicas=N` after the name runs it on N replicas instead (`clip --replicas=1`: one device).
Each prints a few lines that hold while the loop keeps its rules. An exercise tells you what to
change (in the project, or in `scope` below), and the lines it then prints. Everything runs on
tiny random data in memory: no download, a few seconds each.
"""

import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from trainer import distribute  # pylint: disable=wrong-import-position

LEARNING_RATE = 1.0  # SGD with rate 1: the update is the gradient the optimizer applied.
CLIP_NORM = 1.0


def quadrant_data(num_examples: int, seed: int):
    """8x8 one-channel images whose label (0-3) is the bright quadrant."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, num_examples)
    images = rng.integers(0, 60, (num_examples, 8, 8, 1)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 2)
        images[i, row * 4:row * 4 + 4, col * 4:col * 4 + 4] += 150
    return images, labels


def datamodule(batch_size: int = 16):
    """64 training examples (4 global batches of 16, unshuffled) and 32 validation examples."""
    import data  # pylint: disable=import-outside-toplevel
    return data.ArrayImageData(train=quadrant_data(64, 0), val=quadrant_data(32, 1),
                               num_classes=4, batch_size=batch_size, seed=0,
                               shuffle_buffer_size=1)


def scope(strategy) -> dict:
    """Four steps of the minimal loop's train_loop; counts the optimizer's steps and compares
    the replicas' copies of the weights."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from examples import minimal_loop  # pylint: disable=import-outside-toplevel
    tf.keras.utils.set_random_seed(0)
    data_module = datamodule()
    data_module.setup()
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(4)])
        model(tf.zeros([1, 8, 8, 1]))
        metrics = tf.keras.metrics.Mean(), tf.keras.metrics.SparseCategoricalAccuracy()
        optimizer = tf.keras.optimizers.Adam(1e-2)
        optimizer.build(model.trainable_variables)
    train_loop = minimal_loop.make_train_loop(strategy, model, optimizer, metrics,
                                              data_module.batch_size)
    iterator = iter(strategy.distribute_datasets_from_function(data_module.train_dataset))
    train_loop(iterator, tf.constant(4))
    copies = strategy.experimental_local_results(model.trainable_variables[0].value)
    spread = max(float(np.max(np.abs(copy.numpy() - copies[0].numpy()))) for copy in copies)
    print("steps run: 4")
    print(f"optimizer.iterations: {int(optimizer.iterations.numpy())}")
    print(f"largest difference between the replicas' copies of the weights: {spread:.4g}")
    return {"iterations": int(optimizer.iterations.numpy()), "spread": spread}


def scope_trainer(strategy) -> dict:
    """The Trainer's fit, given a module whose optimizer was created outside the strategy's
    scope; prints the error that stops it."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import trainer  # pylint: disable=import-outside-toplevel
    outside = tf.keras.optimizers.Adam(1e-2)  # Created here, under no strategy's scope.

    class OptimizerFromOutside(trainer.ImageClassifier):
        def configure_optimizers(self):
            return outside

    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        network = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(4)])
        module = OptimizerFromOutside(network, learning_rate=1e-2)
    fitter = trainer.Trainer(strategy=strategy, max_steps=1, num_sanity_val_steps=0,
                             enable_progress_bar=False, enable_model_summary=False)
    print("fit, with an optimizer created outside the strategy's scope:")
    try:
        fitter.fit(module, datamodule())
    except RuntimeError as error:
        print(f"{type(error).__name__}: {error}")
        return {"error": f"{type(error).__name__}: {error}"}
    print(f"trained {fitter.global_step} step(s) without an error")
    return {"error": None}


def clip(strategy) -> dict:
    """One SGD step with gradient_clip_val=1.0 through the Trainer; the norm of the update."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import trainer  # pylint: disable=import-outside-toplevel

    class SGDClassifier(trainer.ImageClassifier):
        def configure_optimizers(self):
            return tf.keras.optimizers.SGD(LEARNING_RATE)

    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        network = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(4)])
        module = SGDClassifier(network, learning_rate=LEARNING_RATE)
        module(tf.zeros([1, 8, 8, 1]))
    before = [v.numpy() for v in module.trainable_variables]
    fitter = trainer.Trainer(strategy=strategy, max_steps=1, gradient_clip_val=CLIP_NORM,
                             num_sanity_val_steps=0, enable_progress_bar=False,
                             enable_model_summary=False)
    fitter.fit(module, datamodule())
    update = np.sqrt(sum(float(np.sum((v.numpy() - b) ** 2))
                         for v, b in zip(module.trainable_variables, before)))
    print(f"{strategy.num_replicas_in_sync} replica(s), gradient_clip_val={CLIP_NORM}")
    print(f"norm of the first update / learning rate: {update / LEARNING_RATE:.3f}")
    return {"update_norm": update / LEARNING_RATE}


def batchnorm(strategy) -> dict:
    """Validates the same weights twice; reports BatchNorm's moving mean and both losses."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import trainer  # pylint: disable=import-outside-toplevel
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        network = tf.keras.Sequential([
            tf.keras.layers.Conv2D(4, 3), tf.keras.layers.BatchNormalization(),
            tf.keras.layers.ReLU(), tf.keras.layers.Flatten(), tf.keras.layers.Dense(4)])
        module = trainer.ImageClassifier(network, learning_rate=1e-2)
    fitter = trainer.Trainer(strategy=strategy, enable_progress_bar=False,
                             enable_model_summary=False)
    data_module = datamodule()
    first = fitter.validate(module, data_module)["val_loss"]
    moving_mean = network.layers[1].moving_mean.numpy().copy()
    second = fitter.validate(module, data_module)["val_loss"]
    moved = float(np.max(np.abs(network.layers[1].moving_mean.numpy() - moving_mean)))
    print(f"val_loss, first and second validation of the same weights: {first:.4f} {second:.4f}")
    print(f"BatchNorm moving mean moved during the second validation by: {moved:.4g}")
    return {"first": first, "second": second, "moved": moved}


def print_(strategy) -> dict:
    """One epoch (4 steps) through the Trainer, 2 steps per traced call."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import trainer  # pylint: disable=import-outside-toplevel
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        network = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(4)])
        module = trainer.ImageClassifier(network, learning_rate=1e-2)
    fitter = trainer.Trainer(strategy=strategy, epochs=1, steps_per_loop=2,
                             num_sanity_val_steps=0, enable_progress_bar=False,
                             enable_model_summary=False)
    logs = fitter.fit(module, datamodule())
    print(f"training ran {logs['steps']} steps, 2 per call of the traced loop")
    return {"steps": logs["steps"]}


EXERCISES = {"scope": (scope, 2), "scope_trainer": (scope_trainer, 2), "clip": (clip, 2),
             "batchnorm": (batchnorm, 1), "print": (print_, 1)}


def parse(argv: list[str]):
    """(the measurement, its number of replicas) that `argv` asks for; exits with the usage."""
    name, options = argv[1] if len(argv) > 1 else None, argv[2:]
    replicas_options = [re.fullmatch(r"--replicas=([1-9][0-9]*)", option) for option in options]
    if name not in EXERCISES or len(options) > 1 or not all(replicas_options):
        sys.exit(f"usage: python examples/break_it.py {{{','.join(EXERCISES)}}} [--replicas=N]")
    measure, replicas = EXERCISES[name]
    return measure, int(replicas_options[0].group(1)) if replicas_options else replicas


def main(argv) -> None:
    measure, replicas = parse(argv)
    # The strategy first: devices are fixed once TensorFlow has initialised them.
    strategy = distribute.create_strategy("mirrored" if replicas > 1 else "default",
                                          cpu_devices=replicas)
    measure(strategy)


if __name__ == "__main__":
    main(sys.argv)
