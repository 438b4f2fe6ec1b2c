"""Trains small runs under one strategy each and saves what the distribution tests compare.

    python tests/replica_run.py OUT.npz --strategy=mirrored --cpu_devices=2 --model=functional \
        [--then OUT2.npz --strategy=default --model=functional ...]

Several runs (separated by --then) train one after the other in this process, which saves the
start-up of a process per run: the `mirrored` ones share one MirroredStrategy (a second one in
a process breaks the first one's collectives: docs/pitfalls.md#15), the `default` ones run on
one device beside it. Every run starts from `set_random_seed(0)`, so a run's weights do not
depend on the runs before it in the process.

OUT.npz holds every module variable (replica 0's copy), named by its position and name
("03 kernel": variable paths carry Keras' per-process layer counters); OUT.json the fit and
validation logs and, per variable, the largest difference between its replica copies. Under
--strategy=multi_worker (TF_CONFIG set by the caller) every worker writes its own OUT files, and
OUT.npz also holds the test predictions and the labels gathered in the same order.
"""

import argparse
import json
import sys

import numpy as np

from trainer import distribute


def _parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--cpu_devices", type=int, default=1)
    parser.add_argument("--model", default="sequential")
    parser.add_argument("--sync_batchnorm", action="store_true")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--sgd", action="store_true",
                        help="plain SGD instead of Adam (see tests/test_distributed.py)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--gradient_clip_val", type=float, default=None)
    parser.add_argument("--gradient_clip_algorithm", default="norm")
    parser.add_argument("--accumulate_grad_batches", type=int, default=1)
    parser.add_argument("--ema_decay", type=float, default=None)
    parser.add_argument("--no_shuffle", action="store_true",
                        help="keep the training order, so that 2 workers (each reading every "
                             "second example) see the same global batches as one process")
    return parser.parse_args(argv)


def main():
    runs, current = [], []
    for arg in sys.argv[1:]:
        if arg == "--then":
            runs.append(current)
            current = []
        else:
            current.append(arg)
    runs = [_parse(argv) for argv in [*runs, current]]
    # Devices are set up once per process, by the first strategy, before anything else touches
    # TensorFlow; a one-device run beside a distributed one runs on TensorFlow's default strategy.
    first = next((args for args in runs if args.strategy != "default"), runs[0])
    strategies = {first.strategy: distribute.create_strategy(first.strategy,
                                                             cpu_devices=first.cpu_devices)}
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    strategies.setdefault("default", tf.distribute.get_strategy())
    for args in runs:
        _run(args, strategies[args.strategy])


def _run(args, strategy):
    import data  # pylint: disable=import-outside-toplevel
    import layers  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import trainer  # pylint: disable=import-outside-toplevel

    tf.keras.utils.set_random_seed(0)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(196, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=196)
    # 128 training examples = 4 steps of 32 per epoch (also with --batch_size=8
    # --accumulate_grad_batches=4); 68 validation examples are evaluated in batches of 24 (12 per
    # replica on 2): 24, 24 and a partial 20.
    datamodule = data.ArrayImageData(train=(images[:128], labels[:128]),
                                     val=(images[128:], labels[128:]),
                                     test=(images[128:], labels[128:]), num_classes=10,
                                     batch_size=args.batch_size, seed=1, eval_batch_size=24,
                                     shuffle_buffer_size=1 if args.no_shuffle else 50_000)
    datamodule.setup()
    fitter = trainer.Trainer(strategy=strategy, epochs=args.epochs, steps_per_loop=3,
                             gradient_clip_val=args.gradient_clip_val,
                             gradient_clip_algorithm=args.gradient_clip_algorithm,
                             accumulate_grad_batches=args.accumulate_grad_batches,
                             enable_progress_bar=False, enable_model_summary=False)
    with strategy.scope():
        network = layers.build_cnn(args.model, input_shape=(32, 32, 3), num_classes=10,
                                   sync_batchnorm=args.sync_batchnorm)
        module = trainer.ImageClassifier(network, learning_rate=args.learning_rate,
                                         ema_decay=args.ema_decay)
        if args.sgd:
            ema = {"use_ema": True, "ema_momentum": args.ema_decay} if args.ema_decay else {}
            module.configure_optimizers = lambda: tf.keras.optimizers.SGD(args.learning_rate,
                                                                          **ema)
    fitter.validate(module, datamodule)  # Builds the module; evaluation changes no variable.
    initial = {v.path: v.numpy() for v in module.trainable_variables}
    logs = fitter.fit(module, datamodule)
    largest_update = max(float(np.max(np.abs(v.numpy() - initial[v.path])))
                         for v in module.trainable_variables)
    report = {"logs": logs, "replicas": strategy.num_replicas_in_sync,
              "largest_update": largest_update,
              "mismatches": distribute.replica_mismatches(
                  strategy, module.variables + list(getattr(
                      fitter.optimizer, "_model_variables_moving_average", [])))}
    predictions = {"predictions": fitter.predict(module, datamodule),
                   "labels": distribute.gathered_labels(strategy, datamodule.predict_dataset)}
    position = {id(v): i for i, v in enumerate(module.variables)}
    averages = {f"ema/{_key(position[id(v)], v)}": np.asarray(average.numpy()) for v, average in zip(
        module.trainable_variables, getattr(fitter.optimizer, "_model_variables_moving_average", []))}
    np.savez(args.out, **{_key(i, v): np.asarray(v.numpy()) for i, v in enumerate(module.variables)},
             **predictions, **averages)
    with open(args.out.replace(".npz", ".json"), "w") as f:
        json.dump(report, f)


def _key(position, variable):
    return f"{position:02d} {variable.name}"


if __name__ == "__main__":
    main()
