"""Beyond one host: two workers (two local processes, TF_CONFIG on 127.0.0.1) train like one
process with two replicas, only the chief writes files, and a killed cluster resumes exactly.

Every worker is its own subprocess (one strategy per process: docs/pitfalls.md#15), on
ports chosen free at runtime. Output goes to files, not pipes: a worker blocked on a full pipe
would stall the other in its next collective. A hang fails through the subprocess timeout.
"""

import concurrent.futures
import glob
import json
import os
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

import data
import local_cluster
from conftest import TESTS, run_main_mocked, run_python
from trainer import distribute

TIMEOUT_S = 300  # A hang guard only: a loaded 2-core machine runs a small cluster in ~30-120 s.
NUM_EXAMPLES = 320  # mocked TFDS: 10 steps of 32 per epoch, 20 in the run
TOTAL_STEPS = 20
MAIN_FLAGS = ["--model=sequential", "--epochs=2", "--batch_size=32", "--deterministic",
              "--checkpoint_every_steps=3", "--steps_per_loop=1", "--strategy=multi_worker"]


# ---- Configuration errors and sharding (in this process, no strategy is created) -------------

@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the TF_CONFIG environment variable, which is not set"),
    ("{not json", "is not usable (JSONDecodeError"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "is not usable (KeyError: 'task')"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
     "gives task index 3, but the cluster has 1 'worker' task(s)"),
])
def test_multi_worker_without_a_usable_tf_config_is_a_clear_error(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError) as error:
        distribute.create_strategy("multi_worker")
    assert message in str(error.value)
    assert '{"cluster": {"worker": ["host1:12345", "host2:12345"]}' in str(error.value)


def test_communication_applies_to_multi_worker_only(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=r"communication \('ring'\) only applies to "
                                         r"--strategy=multi_worker, not to 'mirrored'"):
        distribute.create_strategy("mirrored", communication="ring")


def test_each_of_two_workers_reads_its_own_half_of_a_tfds_split(real_data_dir):
    # The real prepared CIFAR-10 (tfds.testing.mock_data ignores split slicing: every shard of a
    # mocked split yields all its examples).
    datamodule = data.TFDSImageData(name="cifar10", data_dir=real_data_dir, download=False,
                                    test_split="test[:21]", batch_size=4)
    datamodule.setup()
    whole = _labels_and_pixel_sums(datamodule.test_dataset(tf.distribute.InputContext()))
    shards = [_labels_and_pixel_sums(datamodule.test_dataset(tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)))
        for worker in (0, 1)]
    assert [len(shard) for shard in shards] == [11, 10]  # even_splits: no example dropped
    assert shards[0] + shards[1] == whole  # disjoint halves, in order


def _labels_and_pixel_sums(dataset):
    return [(int(label), float(np.sum(image))) for images, labels in dataset
            for image, label in zip(images.numpy(), labels.numpy())]


# ---- Two workers train like one process with two replicas ----------------------------------

REPLICA_FLAGS = ["--model=sequential", "--sgd", "--learning_rate=0.05", "--no_shuffle"]


@pytest.fixture(scope="module")
def two_workers_and_two_replicas(tmp_path_factory):
    """tests/replica_run.py on a 2-worker cluster and, meanwhile, in one process with 2 replicas."""
    out = tmp_path_factory.mktemp("replicas")
    worker_args = [["tests/replica_run.py", str(out / f"worker{index}.npz"),
                    "--strategy=multi_worker", *REPLICA_FLAGS] for index in (0, 1)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        mirrored = pool.submit(run_python, ["tests/replica_run.py", str(out / "mirrored.npz"),
                                            "--strategy=mirrored", "--cpu_devices=2",
                                            *REPLICA_FLAGS])
        cluster = local_cluster.run_workers(worker_args, str(out))
        assert mirrored.result().returncode == 0, mirrored.result().stderr[-3000:]
    for returncode, log in cluster:
        assert returncode == 0, log[-3000:]
    return {name: (dict(np.load(out / f"{name}.npz")), json.loads(local_cluster.read(out / f"{name}.json")))
            for name in ("mirrored", "worker0", "worker1")}


def test_two_workers_end_with_the_weights_of_one_process_with_two_replicas(
        two_workers_and_two_replicas):
    mirrored_weights, mirrored_report = two_workers_and_two_replicas["mirrored"]
    for worker in ("worker0", "worker1"):
        weights, report = two_workers_and_two_replicas[worker]
        assert report["replicas"] == 2 and report["logs"]["steps"] == 8
        assert report["largest_update"] > 50 * 2e-5  # the tolerance below is small against it
        for path in mirrored_weights:
            if path not in ("predictions", "labels"):
                np.testing.assert_allclose(weights[path], mirrored_weights[path], rtol=0,
                                           atol=2e-5, err_msg=path)
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert report["logs"][key] == pytest.approx(mirrored_report["logs"][key], abs=1e-5)


def test_the_two_workers_hold_bit_identical_weights(two_workers_and_two_replicas):
    worker0, _ = two_workers_and_two_replicas["worker0"]
    worker1, _ = two_workers_and_two_replicas["worker1"]
    for path in worker0:
        np.testing.assert_array_equal(worker0[path], worker1[path], err_msg=path)


def test_gathered_labels_line_up_with_gathered_predictions(two_workers_and_two_replicas):
    # Each test example's probability vector identifies it: find every 2-worker prediction's
    # example among the one-process predictions (in dataset order) and compare the labels.
    reference, _ = two_workers_and_two_replicas["mirrored"]
    gathered, _ = two_workers_and_two_replicas["worker0"]
    distances = np.abs(gathered["predictions"][:, None] - reference["predictions"][None]).max(-1)
    example = distances.argmin(axis=1)
    assert distances.min(axis=1).max() < 1e-4
    assert sorted(example) == list(range(len(reference["labels"])))  # each example once
    np.testing.assert_array_equal(gathered["labels"], reference["labels"][example])
    # Each replica predicts its slice of every global batch: the gathered order is the dataset's.
    assert list(example) == list(range(len(reference["labels"])))


# ---- The command line on two workers: files, resume ------------------------------------------

@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """`trainer.main` on 2 workers, each given its own --model_dir, as on two hosts."""
    root = tmp_path_factory.mktemp("uninterrupted")
    os.makedirs(root / "tmp1")
    worker_args = [[os.path.join(TESTS, "mocked_main.py"), str(NUM_EXAMPLES), *MAIN_FLAGS,
                    f"--model_dir={root / f'run{index}'}", f"--cache_dir={root / f'cache{index}'}"]
                   for index in (0, 1)]
    results = local_cluster.run_workers(worker_args, str(root), [{}, {"TMPDIR": str(root / "tmp1")}])
    for returncode, log in results:
        assert returncode == 0, log[-3000:]
    return root, results


def test_only_the_chief_writes_files(uninterrupted):
    root, ((_, chief_log), (_, worker_log)) = uninterrupted
    # The export link points at a hidden version directory beside it (trainer/files.py).
    assert len(glob.glob(str(root / "run0" / ".export.*"))) == 1
    assert sorted(name for name in os.listdir(root / "run0") if not name.startswith(".")) == [
        "best", "checkpoints", "confusion_matrix.png", "curves.png", "export", "flags.txt",
        "history.json", "label.labels.txt", "metrics.csv", "results.json", "run_config.json",
        "tensorboard", "timings.json"]
    assert not os.path.exists(root / "run1")
    # The other worker's temporary checkpoints, best weights and export are gone too.
    assert not glob.glob(str(root / "tmp1" / "checkpoints-*")) + glob.glob(
        str(root / "tmp1" / "best-*")) + glob.glob(str(root / "tmp1" / "export-*"))
    assert ("MultiWorkerMirroredStrategy with 2 replica(s) over 2 worker(s); this process is "
            "worker 0 (the chief") in chief_log
    assert "global batch 32 = 2 replica(s) x 16 per replica, on 2 worker(s)" in chief_log
    assert "wrote " not in worker_log and "epoch 2/2" not in worker_log
    # The other workers print warnings and errors only (the chief's run writes and says it all).
    assert "exported" not in worker_log and "results:" not in worker_log
    assert "worker 1 of 2 prints only warnings and errors" in worker_log
    with open(root / "run0" / "results.json") as f:
        assert json.load(f)["replicas"] == 2


def test_the_votes_between_workers_leave_the_console_quiet(uninterrupted):
    # The stop votes are all-reduces run from the host loop; run eagerly, each of the first five
    # printed TensorFlow's "Using CollectiveAllReduceStrategy eagerly has significant overhead".
    _, results = uninterrupted
    for _, log in results:
        assert "eagerly has significant overhead" not in log


def test_each_worker_decodes_and_caches_only_its_own_shards(uninterrupted):
    root, _ = uninterrupted
    for index in (0, 1):  # Each worker its own --cache_dir, as on two hosts.
        entries = glob.glob(str(root / f"cache{index}" / "*" / "*" / "*" / "pipeline-*"))
        # Its shards of the training, validation (train[90%:]) and test splits.
        assert len(entries) == 3, entries
        assert {os.path.basename(entry) for entry in entries} == {f"pipeline-{index}-of-2"}


def test_a_killed_cluster_restarted_ends_equal_to_an_uninterrupted_run(uninterrupted, tmp_path):
    # Both workers share one --model_dir, as on a shared filesystem: the restarted non-chief
    # must find the checkpoint too. Training only, to save time: evaluation, ranking and export
    # change nothing that a checkpoint holds.
    model_dir = str(tmp_path / "run")
    worker_args = [[os.path.join(TESTS, "mocked_main.py"), str(NUM_EXAMPLES), *MAIN_FLAGS,
                    "--val_split=", "--test_split=", "--save_top_k=0",
                    f"--model_dir={model_dir}"]] * 2
    processes = local_cluster.start_workers(worker_args, str(tmp_path))
    killed_at = local_cluster.wait_for_a_checkpoint(model_dir, processes)
    processes[1].kill()  # SIGKILL one worker; the chief then waits in a collective, or fails.
    time.sleep(1)
    processes[0].kill()  # A cluster manager restarts the whole cluster: all tasks go down.
    for process in processes:
        process.wait()
    assert 0 < killed_at < TOTAL_STEPS
    restarted = local_cluster.run_workers(worker_args, str(tmp_path / "restarted"))
    for returncode, log in restarted:
        assert returncode == 0, log[-3000:]
    resumed_step = int(restarted[0][1].split("resumed from ")[1].split("step ")[1].split(",")[0])
    assert 0 < resumed_step < TOTAL_STEPS and resumed_step % 10, resumed_step  # mid-epoch
    clean = _checkpoint_tensors(str(uninterrupted[0] / "run0"))
    resumed = _checkpoint_tensors(model_dir)
    assert clean.keys() == resumed.keys()
    for name, value in clean.items():
        np.testing.assert_array_equal(value, resumed[name], err_msg=name)


def test_sigterm_to_one_worker_stops_every_worker_at_the_same_saved_step(tmp_path):
    model_dir = str(tmp_path / "run")
    worker_args = [[os.path.join(TESTS, "mocked_main.py"), str(NUM_EXAMPLES), *MAIN_FLAGS,
                    "--val_split=", "--test_split=", "--save_top_k=0",
                    f"--model_dir={model_dir}"]] * 2
    processes = local_cluster.start_workers(worker_args, str(tmp_path))
    local_cluster.wait_for_a_checkpoint(model_dir, processes)
    processes[1].send_signal(signal.SIGTERM)  # Only the non-chief is told to stop.
    results = local_cluster.wait(processes, str(tmp_path), "worker")
    assert [code for code, _ in results] == [128 + signal.SIGTERM] * 2, results[0][1][-3000:]
    steps = {int(log.split("interrupted by SIGTERM at step ")[1].split(";")[0])
             for _, log in results}
    assert len(steps) == 1 and 0 < min(steps) < TOTAL_STEPS, steps
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert latest.endswith(f"ckpt-{steps.pop()}")


def _checkpoint_tensors(model_dir):
    """Every tensor of the run's final checkpoint but the save counter."""
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert path.endswith(f"ckpt-{TOTAL_STEPS}"), path
    return local_cluster.checkpoint_tensors(path)


# ---- --selftest and --explain ------------------------------------------------------------------

def test_selftest_passes_on_one_device_and_on_two_logical_devices():
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run_python, [
            ["-m", "trainer.main", "--selftest", "--batch_size=32"],
            ["-m", "trainer.main", "--selftest", "--batch_size=32", "--strategy=mirrored",
             "--cpu_devices=2"]]))
    for result, replicas in zip(results, (1, 2)):
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert "self-test PASSED: 5 of 5 checks passed" in result.stdout
        assert f"over {replicas} replica(s) vs one-device mean loss" in result.stdout
        assert "FAIL" not in result.stdout


def test_selftest_passes_on_two_workers(tmp_path):
    args = ["-m", "trainer.main", "--selftest", "--batch_size=32", "--strategy=multi_worker"]
    (chief_code, chief_log), (worker_code, worker_log) = local_cluster.run_workers(
        [args, args], str(tmp_path))
    assert (chief_code, worker_code) == (0, 0), chief_log[-3000:]
    assert "self-test PASSED: 5 of 5 checks passed" in chief_log
    assert "over 2 worker(s)" in chief_log
    # The other worker's one-device reference run is not printed twice.
    assert "epoch 1/1 | step 3" in chief_log and "epoch 1/1" not in worker_log


def test_selftest_fails_when_a_replica_on_the_other_worker_is_perturbed(tmp_path):
    # Replica 1 lives on worker 1: worker 0 can only see the difference through the all-gather.
    args = ["-m", "trainer.main", "--selftest", "--batch_size=32", "--strategy=multi_worker",
            "--selftest_perturb_replica=1"]
    # An explicit --verbosity lets a worker other than the chief print its info lines.
    (chief_code, chief_log), (worker_code, worker_log) = local_cluster.run_workers(
        [args, [*args, "--verbosity=0"]], str(tmp_path))
    assert chief_code != 0 and worker_code != 0
    assert "epoch 1/1 | step 3" in worker_log and "prints only warnings" not in worker_log
    failed = [line for line in chief_log.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and "replica copies of all 10 variables identical" in failed[0]
    assert float(failed[0].split()[1]) == pytest.approx(1e-3, rel=1e-3)
    assert "self-test FAILED: 4 of 5 checks passed" in chief_log


def test_explain_prints_the_plan_without_training(tmp_path):
    result = run_main_mocked(["--explain", "--strategy=mirrored", "--cpu_devices=2",
                              "--batch_size=32", f"--model_dir={tmp_path / 'run'}"],
                             num_examples=70)
    assert result.returncode == 0, result.stderr[-3000:]
    for expected in ("MirroredStrategy: 1 worker process(es) x 2 replica(s) each = 2 replica(s)",
                     "global batch 32 = 2 replica(s) x 16 examples per replica per step",
                     "2 optimizer steps per epoch x 10 epoch(s) = 20 optimizer steps; 6 of the 70",
                     "inside optimizer.apply_gradients", "precision       --precision=32",
                     "every 1000 steps and at every epoch end"):
        assert expected in result.stdout, expected
    assert "epoch 1/" not in result.stderr and not os.path.exists(tmp_path / "run")


def test_explain_says_where_clipping_and_accumulation_happen(tmp_path):
    result = run_main_mocked(["--explain", "--strategy=mirrored", "--cpu_devices=2",
                              "--batch_size=16", "--gradient_clip_val=0.5",
                              "--accumulate_grad_batches=2", f"--model_dir={tmp_path / 'run'}"],
                             num_examples=70)
    assert result.returncode == 0, result.stderr[-3000:]
    text = " ".join(result.stdout.split())  # Undo the line wrapping.
    for expected in ("Gradients of 2 global batches add up to one optimizer step of 32 examples",
                     "2 optimizer steps per epoch",  # 4 batches of 16 / 2 micro-batches
                     "then one all-reduce SUMS the 2 replicas' sums",
                     "global L2 norm is clipped to 0.5, AFTER the all-reduce"):
        assert expected in text, expected
