"""The same run on any cluster shape: with --data_order=global, two workers (two local processes,
TF_CONFIG on 127.0.0.1) train like one process with two replicas over a whole run, not just one
step; and predictions.csv holds the same rows on 1 device, 2 replicas and 2 workers.

tfds.testing.mock_data ignores split slicing: in shard order each mocked worker would read every
example, so a 2-worker run would train on duplicated data. Global order reads the whole split on
every worker anyway, which makes mocked data a fair test of it.
"""

import concurrent.futures
import csv
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import local_cluster
from conftest import TESTS, run_main_mocked

TIMEOUT_S = 300  # A 2-worker run has taken over 120 s on a loaded 2-core machine.
# Every mocked split holds 170 examples: 5 steps of 32 per epoch, and the predictions' last global
# batch holds 10, all of them replica 0's: replica 1 (worker 1) predicts an empty slice.
NUM_EXAMPLES = 170
TOTAL_STEPS = 24  # into the 5th epoch: several reshuffles, and validation at every epoch end
FLAGS = ["--model=sequential", "--batch_size=32", "--deterministic", "--data_order=global",
         "--predict_split=test", f"--max_steps={TOTAL_STEPS}", "--steps_per_loop=7",
         "--num_sanity_val_steps=0", "--tensorboard=false", "--progress_bar=false",
         "--model_summary=false"]


@pytest.fixture(scope="module")
def three_shapes(tmp_path_factory):
    """The same flags on 2 workers and on one process with 2 replicas, then on one device from
    the 2-replica run's finished model_dir (with Adam, one device would train to weights that
    differ in the last digits, and so would its predictions)."""
    root = tmp_path_factory.mktemp("order")
    os.makedirs(root / "tmp1")
    worker_args = [[os.path.join(TESTS, "mocked_main.py"), str(NUM_EXAMPLES), *FLAGS,
                    "--strategy=multi_worker", f"--model_dir={root / f'worker{index}'}"]
                   for index in (0, 1)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        mirrored = pool.submit(run_main_mocked, [*FLAGS, "--strategy=mirrored", "--cpu_devices=2",
                                                 f"--model_dir={root / 'mirrored'}"],
                               num_examples=NUM_EXAMPLES, timeout=TIMEOUT_S)
        cluster = local_cluster.run_workers(worker_args, str(root),
                                            [{}, {"TMPDIR": str(root / "tmp1")}])
        assert mirrored.result().returncode == 0, mirrored.result().stderr[-3000:]
    for returncode, log in cluster:
        assert returncode == 0, log[-3000:]
    assert not os.path.exists(root / "worker1")  # Only the chief writes.
    shutil.copytree(root / "mirrored", root / "one_device")
    os.remove(root / "one_device" / "predictions.csv")
    one_device = run_main_mocked([*FLAGS, "--strategy=default",
                                  f"--model_dir={root / 'one_device'}"],
                                 num_examples=NUM_EXAMPLES, timeout=TIMEOUT_S)
    assert one_device.returncode == 0, one_device.stderr[-3000:]
    assert "training had already finished" in one_device.stderr
    return {"two_workers": root / "worker0", "mirrored": root / "mirrored",
            "one_device": root / "one_device"}


def _results(model_dir):
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f)


def _weights(model_dir):
    """The trainable variables of the run's last checkpoint (the optimizer holds them too)."""
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert path.endswith(f"ckpt-{TOTAL_STEPS}"), path
    return {name: tf.train.load_checkpoint(path).get_tensor(name)
            for name, _ in tf.train.list_variables(path)
            if name.startswith("optimizer/_trainable_variables/")}


def test_two_workers_end_where_one_process_with_two_replicas_ends(three_shapes):
    workers, mirrored = (_results(three_shapes[name]) for name in ("two_workers", "mirrored"))
    assert workers["replicas"] == mirrored["replicas"] == 2 and workers["steps"] == TOTAL_STEPS
    for key in ("train_loss", "val_loss", "test_loss", "train_accuracy", "val_accuracy"):
        assert workers[key] == pytest.approx(mirrored[key], rel=1e-4), key
    worker_weights, mirrored_weights = (_weights(three_shapes[name])
                                        for name in ("two_workers", "mirrored"))
    assert worker_weights.keys() == mirrored_weights.keys() and len(worker_weights) == 10
    for name, value in mirrored_weights.items():
        np.testing.assert_allclose(worker_weights[name], value, rtol=0, atol=1e-5, err_msg=name)


def test_predictions_are_one_file_in_split_order_on_every_shape(three_shapes):
    rows = {name: _prediction_rows(model_dir) for name, model_dir in three_shapes.items()}
    one_device = rows["one_device"]
    # One device reads the split through one pipeline into one replica: split order by definition.
    assert [int(row["index"]) for row in one_device] == list(range(NUM_EXAMPLES))
    assert len({row["label"] for row in one_device}) > 5  # Random labels: another order would show.
    # The same two replicas in one process or two: weights equal to ~1e-6 (oneDNN's results can
    # depend on the process's thread pool), so the same rows, probabilities to the last digits.
    _assert_same_rows(rows["two_workers"], rows["mirrored"], abs=1e-5)
    # The same weights, but a batch of 32 and two of 16 can round the last digit apart.
    _assert_same_rows(rows["mirrored"], one_device, abs=1.5e-6)


def _prediction_rows(model_dir):
    return list(csv.DictReader(local_cluster.read(os.path.join(model_dir, "predictions.csv"))
                               .splitlines()))


def _assert_same_rows(rows, reference, abs):  # pylint: disable=redefined-builtin
    assert len(rows) == len(reference) == NUM_EXAMPLES
    for row, expected in zip(rows, reference):
        row, expected = dict(row), dict(expected)
        probability, expected_probability = (float(r.pop("probability")) for r in (row, expected))
        assert row == expected  # index, label, predicted class
        assert probability == pytest.approx(expected_probability, abs=abs)
