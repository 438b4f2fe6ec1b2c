"""--eval_batch_size: larger evaluation batches, every example still evaluated exactly once."""

import dataclasses

import pytest
import tensorflow as tf

import data
import trainer
from conftest import input_context, labelled_by_id, quadrant_data, run_main_mocked, tiny_network
from test_data_order import _plan
from trainer import datasets
from trainer.cli import explain


def _batches(dataset):
    """[(batch size, [example ids])] of a dataset of float batches."""
    return [(int(images.shape[0]), [int(round(float(i) * 255)) for i in images[:, 0, 0, 0]])
            for images, _ in dataset]


@pytest.mark.parametrize("data_order", ["shard", "global"])
@pytest.mark.parametrize("pipelines, replicas", [(1, 1), (1, 2), (2, 2)])
def test_evaluation_runs_in_eval_batches_each_example_once(data_order, pipelines, replicas):
    examples = labelled_by_id(101)
    module = data.ArrayImageData(train=examples, val=examples, batch_size=8, eval_batch_size=32,
                                 data_order=data_order)
    sizes, seen = [], []
    for pipeline in range(pipelines):
        batches = _batches(module.val_dataset(input_context(pipelines, pipeline, replicas)))
        sizes.append([size for size, _ in batches])
        seen += [i for _, ids in batches for i in ids]
    assert sorted(seen) == list(range(101))  # every example once, the partial batch kept
    assert max(max(s) for s in sizes) == 32 // replicas  # per-replica slice of 32, not of 8
    if data_order == "global":  # every pipeline yields the same number of batches
        assert len({len(s) for s in sizes}) == 1


def test_eval_batch_size_defaults_to_batch_size_and_leaves_training_alone():
    examples = labelled_by_id(64)
    assert data.ArrayImageData(train=examples, batch_size=8).eval_batch_size == 8
    module = data.ArrayImageData(train=examples, val=examples, batch_size=8, eval_batch_size=64)
    train = next(iter(module.train_dataset(input_context())))
    assert train[0].shape[0] == 8
    assert [size for size, _ in _batches(module.val_dataset(input_context()))] == [64]


def test_overfitting_validates_on_the_training_batches_whatever_the_eval_batch():
    examples = labelled_by_id(64)
    module = data.ArrayImageData(train=examples, batch_size=8, eval_batch_size=32)
    module.overfit(2)
    assert [size for size, _ in _batches(module.val_dataset(input_context()))] == [8, 8]


def test_eval_batch_size_must_be_positive():
    with pytest.raises(ValueError, match=r"eval_batch_size \(0\) must be a positive number"):
        data.ArrayImageData(train=labelled_by_id(8), eval_batch_size=0)


def test_eval_batch_size_must_divide_among_the_replicas():
    module = data.ArrayImageData(train=labelled_by_id(8), batch_size=4, eval_batch_size=6)
    datasets.check_batch_sizes(module, 2)  # 6 = 2 x 3
    with pytest.raises(ValueError, match=r"eval_batch_size \(6\) must be divisible by the number "
                                         r"of replicas \(4\)"):
        datasets.check_batch_sizes(module, 4)
    with pytest.raises(ValueError, match=r"eval_batch_size \(33\) must be divisible by the number "
                                         r"of replicas \(2\)"):
        explain.explain(_plan(eval_batch=33))


def test_explain_states_the_evaluation_batch():
    text = " ".join(explain.explain(_plan(eval_batch=256)).split())
    assert "Validation, test and prediction run in global batches of 256 = 2 x 128" in text
    assert "--eval_batch_size" in text


def test_validation_results_do_not_depend_on_the_eval_batch():
    """The mean over examples, partial last batch included, is the same for any eval batch."""
    logs = []
    for eval_batch_size in (16, 64):  # 72 examples: 4 x 16 + 8, or 64 + 8
        tf.keras.utils.set_random_seed(0)
        module = data.ArrayImageData(train=quadrant_data(64, 0), val=quadrant_data(72, 1),
                                     num_classes=4, batch_size=16, seed=0,
                                     eval_batch_size=eval_batch_size)
        classifier = trainer.ImageClassifier(tiny_network(), learning_rate=1e-2)
        fitter = trainer.Trainer(epochs=1, enable_progress_bar=False, enable_model_summary=False,
                                 num_sanity_val_steps=0)
        fitter.fit(classifier, module)
        logs.append(fitter.validate(classifier, module))
    assert logs[0]["val_loss"] == pytest.approx(logs[1]["val_loss"], rel=1e-5)
    assert logs[0]["val_accuracy"] == logs[1]["val_accuracy"]


def test_the_flag_reaches_explain_and_is_checked(tmp_path):
    result = run_main_mocked(["--explain", "--batch_size=16", "--eval_batch_size=48",
                              f"--model_dir={tmp_path / 'run'}"], num_examples=70)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "global batches of 48 = 1 x 48" in " ".join(result.stdout.split())
    result = run_main_mocked(["--explain", "--batch_size=16", f"--model_dir={tmp_path / 'run'}"],
                             num_examples=70)
    assert "global batches of 64 = 1 x 64" in " ".join(result.stdout.split())  # 4 x 16
    result = run_main_mocked(["--explain", "--strategy=mirrored", "--cpu_devices=2",
                              "--batch_size=16", "--eval_batch_size=33",
                              f"--model_dir={tmp_path / 'run2'}"], num_examples=70)
    assert result.returncode != 0
    assert "eval_batch_size (33) must be divisible by the number of replicas (2)" in (
        result.stdout + result.stderr)


def test_a_plan_without_an_eval_batch_uses_the_training_batch():
    text = " ".join(explain.explain(dataclasses.replace(_plan(), eval_batch=None)).split())
    assert "global batches of 64 = 2 x 32" in text
