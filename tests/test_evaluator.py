"""The evaluator task: beside a worker on 127.0.0.1 it validates every checkpoint, and its
metrics are `Trainer.validate`'s on that checkpoint; started after training, it evaluates what is
there and exits."""

import json
import os
import shutil

import pytest
import tensorflow_datasets as tfds

import data
import layers
import trainer
from conftest import TESTS
import local_cluster
from trainer import checkpointing

NUM_EXAMPLES = 64  # mocked TFDS: 2 steps of 32 per epoch, 4 in the run, a checkpoint after each
STEPS = [1, 2, 3, 4]
# The worker validates only at its last step: the evaluator does the rest.
FLAGS = ["--model=sequential", "--epochs=2", "--batch_size=32", "--checkpoint_every_steps=1",
         "--keep_checkpoints=10", "--check_val_every_n_epoch=100", "--test_split=",
         "--evaluator_timeout_s=120", "--strategy=multi_worker"]


def _main_args(model_dir, *flags):
    return [os.path.join(TESTS, "mocked_main.py"), str(NUM_EXAMPLES), *FLAGS, *flags,
            f"--model_dir={model_dir}"]


@pytest.fixture(scope="module")
def worker_and_evaluator(tmp_path_factory):
    """One worker and one evaluator, started together with one TF_CONFIG cluster (both given
    --strategy=multi_worker, as one command for every task would); returns the model_dir and
    the evaluator's record."""
    root = tmp_path_factory.mktemp("evaluator")
    addresses = [f"127.0.0.1:{port}" for port in local_cluster.free_ports(2)]
    cluster = {"worker": addresses[:1], "evaluator": addresses[1:]}
    envs = [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task, "index": 0}})}
            for task in ("worker", "evaluator")]
    args = _main_args(root / "run")
    results = local_cluster.wait(local_cluster.start([args, args], envs, str(root)), str(root))
    for code, log in results:
        assert code == 0, log[-3000:]
    with open(root / "run" / "evaluator.json") as f:
        return root / "run", json.load(f), results[1][1]


def test_the_evaluator_validates_every_checkpoint_and_exits_after_the_last(worker_and_evaluator):
    model_dir, record, log = worker_and_evaluator
    assert [entry["step"] for entry in record["evaluations"]] == STEPS
    assert record["final_step"] == STEPS[-1]
    assert "the evaluator joins none of the workers' collectives" in log
    best = max(record["evaluations"], key=lambda entry: entry["val_accuracy"])
    assert record["best"]["step"] == best["step"] and record["best"]["val_accuracy"] == \
        best["val_accuracy"]
    assert sorted(os.listdir(model_dir / "evaluator" / "best")) == [
        f"step-{best['step']}.data-00000-of-00001", f"step-{best['step']}.index"]
    with open(model_dir / "evaluator" / "metrics.csv") as f:
        rows = f.read().splitlines()
    assert rows[0] == "step,val_loss,val_accuracy" and len(rows) == 1 + len(STEPS)
    assert os.listdir(model_dir / "tensorboard" / "evaluator")


def test_the_evaluators_metrics_equal_trainer_validate_on_each_checkpoint(worker_and_evaluator):
    model_dir, record, _ = worker_and_evaluator
    for entry in record["evaluations"]:
        logs = _validate(str(model_dir / "checkpoints" / f"ckpt-{entry['step']}"))
        for name in ("val_loss", "val_accuracy"):
            assert entry[name] == pytest.approx(logs[name], rel=1e-6, abs=1e-7), (entry, name)


def test_an_evaluator_started_after_training_evaluates_what_is_there_and_exits(
        worker_and_evaluator, tmp_path):
    model_dir, record, _ = worker_and_evaluator
    shutil.copytree(model_dir / "checkpoints", tmp_path / "run" / "checkpoints")
    os.remove(tmp_path / "run" / "checkpoints" / "ckpt-1.index")  # Deleted by the chief since.
    result = local_cluster.start([_main_args(tmp_path / "run", "--evaluate_checkpoints")], [{}],
                                 str(tmp_path))
    ((code, log),) = local_cluster.wait(result, str(tmp_path))
    assert code == 0, log[-3000:]
    assert "ckpt-1 was deleted before it could be evaluated" in log
    with open(tmp_path / "run" / "evaluator.json") as f:
        after = json.load(f)
    # The record's paths are relative to the run directory: the copy's are the original's.
    assert after["evaluations"] == record["evaluations"][1:]


def _validate(checkpoint):
    """`Trainer.validate` on `checkpoint`, restored whole by the Trainer, in this process."""
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        datamodule = data.TFDSImageData(name="cifar10", batch_size=32, test_split="")
        datamodule.prepare_data()
        datamodule.setup()
        module = trainer.ImageClassifier(layers.build_cnn(
            "sequential", input_shape=datamodule.input_shape, num_classes=datamodule.num_classes))
        fitter = trainer.Trainer(checkpointer=checkpointing.Checkpointer(
            os.path.dirname(checkpoint)), resume_from=checkpoint, enable_progress_bar=False,
            enable_model_summary=False)
        return fitter.validate(module, datamodule)
