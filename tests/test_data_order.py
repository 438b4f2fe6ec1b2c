"""--data_order=global: every cluster shape sees the global batches of one device.

In process, the input pipelines of a cluster are built directly from `tf.distribute.InputContext`s
(no strategy): pipeline p of P, with R replicas in all, is what worker p of a P-worker cluster
reads. The 2-worker runs that train on them are in tests/test_multiworker_order.py.
"""

import dataclasses

import numpy as np
import pytest

import data
import trainer
from conftest import input_context, random_images, run_main_mocked
from trainer.cli import explain


def _numbered(num_examples):
    """Images whose first pixel holds the example's number, and labels that repeat it."""
    images = np.zeros((num_examples, 4, 4, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(num_examples)
    return images, np.arange(num_examples)


def _global_batches(make_dataset, num_pipelines, replicas, steps=None):
    """The global batches a cluster of `num_pipelines` pipelines and `replicas` replicas sees: at
    each step, every replica's batch in replica order (pipeline by pipeline), concatenated."""
    per_pipeline = replicas // num_pipelines
    iterators = [iter(make_dataset(input_context(num_pipelines, p, replicas)))
                 for p in range(num_pipelines)]
    batches = []
    while steps is None or len(batches) < steps:
        try:
            parts = [next(iterator) for iterator in iterators for _ in range(per_pipeline)]
        except StopIteration:
            return batches
        batches.append(tuple(np.concatenate([part[i].numpy() for part in parts])
                             for i in range(2)))
    return batches


def _assert_same_batches(expected, actual):
    assert len(expected) == len(actual)
    for (images, labels), (other_images, other_labels) in zip(expected, actual):
        np.testing.assert_array_equal(labels, other_labels)
        np.testing.assert_array_equal(images, other_images)


@pytest.mark.parametrize("num_pipelines, replicas", [(1, 2), (2, 2), (2, 4), (4, 4)])
def test_every_cluster_shape_trains_on_the_global_batches_of_one_device(num_pipelines, replicas):
    # Two epochs, augmented: the order and the flips and crops are the same on every shape.
    module = data.ArrayImageData(train=random_images(72, shape=(8, 8, 3)), batch_size=8, seed=3,
                                 augment=True, data_order="global")
    one_device = _global_batches(module.train_dataset, 1, 1, steps=18)
    _assert_same_batches(one_device,
                         _global_batches(module.train_dataset, num_pipelines, replicas, steps=18))
    assert not np.array_equal(one_device[0][1], one_device[9][1])  # reshuffled per epoch


def test_one_device_trains_on_the_same_batches_in_either_order():
    train = random_images(72, shape=(8, 8, 3))
    orders = [_global_batches(data.ArrayImageData(train=train, batch_size=8, seed=3,
                                                  data_order=order).train_dataset, 1, 1, steps=18)
              for order in ("shard", "global")]
    _assert_same_batches(*orders)


def test_the_default_order_still_shards_the_split_per_pipeline():
    module = data.ArrayImageData(train=_numbered(64), batch_size=8, seed=3)
    assert module.data_order == "shard"
    one_device = _global_batches(module.train_dataset, 1, 1, steps=8)
    two_workers = _global_batches(module.train_dataset, 2, 2, steps=8)
    # Each worker reads every second example: global batch i differs from one device's.
    first_worker = {int(label) for _, labels in two_workers for label in labels[:4]}
    assert first_worker == set(range(0, 64, 2))
    assert not np.array_equal(one_device[0][1], two_workers[0][1])


def test_a_resumed_epoch_skips_exactly_the_consumed_global_batches():
    module = data.ArrayImageData(train=_numbered(64), batch_size=8, seed=3, data_order="global")
    uninterrupted = _global_batches(module.train_dataset, 2, 2, steps=16)
    resumed = _global_batches(
        lambda ctx: module.train_dataset(ctx, start_epoch=1, skip_batches=3), 2, 2, steps=5)
    _assert_same_batches(uninterrupted[11:], resumed)


@pytest.mark.parametrize("data_order", ["shard", "global"])
def test_evaluation_in_global_order_and_prediction_in_any_order_see_the_split_once_in_order(
        data_order):
    # 101 examples in global batches of 8: the last holds 5, so one pipeline of two gets 1
    # example and then nothing (empty slices), yet both yield the same number of batches.
    split = _numbered(101)
    module = data.ArrayImageData(train=split, val=split, test=split, batch_size=8,
                                 data_order=data_order)
    datasets = [module.predict_dataset] + ([module.val_dataset] if data_order == "global" else [])
    for make_dataset in datasets:
        batches = _global_batches(make_dataset, 2, 4)
        assert len(batches) == 13
        np.testing.assert_array_equal(np.concatenate([labels for _, labels in batches]),
                                      np.arange(101))


def test_an_unknown_data_order_is_named():
    with pytest.raises(ValueError, match=r"data_order \('random'\) must be one of "
                                         r"\['shard', 'global'\]"):
        data.ArrayImageData(train=random_images(8), data_order="random")


def _plan(**changes):
    plan = explain.Plan(
        strategy="MultiWorkerMirroredStrategy", devices=("/job:worker/task:0/device:CPU:0",),
        workers=2, worker_index=0, is_chief=True, replicas=2, global_batch=64, steps_per_epoch=781,
        epochs=10, dropped_per_epoch=16, train_examples=50_000, train_split="train",
        data_order="global", step=trainer.StepConfig(), compute_dtype="float32",
        variable_dtype="float32", sync_batchnorm=False, communication="auto",
        checkpoint_every_steps=1000, keep_checkpoints=3, checkpoint_dir="runs/x/checkpoints")
    return dataclasses.replace(plan, **changes)


def test_explain_says_which_order_a_cluster_uses_and_what_it_costs():
    text = " ".join(explain.explain(_plan()).split())
    assert ("--data_order=global: every worker reads the whole 'train' split (50000 examples)"
            in text)
    assert "1 device, N replicas and M workers train on identical global batches" in text
    assert "each of the 2 workers reads, decodes and caches the full split" in text
    text = " ".join(explain.explain(_plan(data_order="shard")).split())
    assert "--data_order=shard: each worker reads its own 1/2 of the 'train' split" in text
    assert "the global batches depend on the number of workers" in text


def test_explain_reads_the_data_order_flag(tmp_path):
    result = run_main_mocked(["--explain", "--data_order=global", "--batch_size=32",
                              f"--model_dir={tmp_path / 'run'}"], num_examples=70)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--data_order=global: every worker reads the whole 'train[:90%]' split" in " ".join(
        result.stdout.split())
