"""The learning-rate finder (trainer/tuning.py): in process on one device, it leaves no trace, a
run that searches first trains as if it had started on the suggestion, and a resumed run does not
search again; from the command line, it searches on 2 replicas and writes its files."""

import csv
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

import data
import trainer
from conftest import quadrant_datamodule, random_images, run_main_mocked, tiny_network
from trainer import checkpointing
from trainer import tuning


def _trainer(**options):
    return trainer.Trainer(enable_progress_bar=False, enable_model_summary=False,
                           num_sanity_val_steps=0, **options)


def _module(lr_schedule="constant", learning_rate=1e-2, warmup_steps=4):
    tf.keras.utils.set_random_seed(0)
    return trainer.ImageClassifier(tiny_network(), learning_rate=learning_rate,
                                   lr_schedule=lr_schedule, warmup_steps=warmup_steps)


def _state(fitter):
    """Every module and optimizer variable, and the train metrics' running sums, as arrays."""
    variables = [*fitter.module.variables, *fitter.optimizer.variables,
                 *[v for m in fitter.module.logbook.metrics["train"].values() for v in m.variables]]
    return [np.array(v) for v in variables]


@pytest.mark.parametrize("lr_schedule", ["constant", "cosine"])
def test_the_search_leaves_every_variable_bit_identical(lr_schedule):
    # A module mid-run (slots, step count and metrics are not zero), with a learning rate that is
    # a variable (constant) or a schedule object (cosine with warmup).
    fitter, module, datamodule = _trainer(epochs=2, max_steps=5), _module(lr_schedule), \
        quadrant_datamodule()
    fitter.fit(module, datamodule)
    learning_rate = fitter.optimizer._learning_rate  # pylint: disable=protected-access
    traced = dict(fitter.step_functions.compiled)
    before = _state(fitter)
    search = tuning.find_learning_rate(fitter, module, datamodule, num_steps=30)
    assert len(search.losses) > 10 and search.suggestion is not None
    after = _state(fitter)
    assert len(before) == len(after) and int(fitter.optimizer.iterations) == 5
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)
    assert fitter.optimizer._learning_rate is learning_rate  # pylint: disable=protected-access
    assert fitter.step_functions.compiled == traced  # The search's own traces are gone.


def test_the_rate_ramps_exponentially_and_the_search_stops_when_the_loss_diverges():
    # Random labels: no rate brings the loss to 0, and large ones blow the logits up.
    images, labels = random_images(256, shape=(8, 8, 1), num_classes=4)
    datamodule = data.ArrayImageData(train=(images, labels), num_classes=4, batch_size=16)
    fitter, module = _trainer(epochs=1), _module()
    search = tuning.find_learning_rate(fitter, module, datamodule, min_rate=1e-4, max_rate=1e4,
                                       num_steps=60)
    assert search.stop_reason == "diverged" and len(search.losses) < 60
    ratios = np.diff(np.log(search.learning_rates))
    np.testing.assert_allclose(ratios, np.log(1e8) / 59, rtol=1e-6)
    assert max(search.losses) > tuning.DIVERGENCE * min(search.smoothed_losses)
    assert 1e-4 < search.suggestion < search.learning_rates[-1]
    with pytest.raises(ValueError, match=r"lr_find_min \(0.1\) and lr_find_max \(0.01\) must"):
        tuning.find_learning_rate(fitter, module, datamodule, min_rate=0.1, max_rate=0.01)


@pytest.mark.parametrize("lr_schedule", ["constant", "cosine"])
def test_a_run_that_searches_first_trains_as_if_it_started_on_the_suggestion(
        lr_schedule, tmp_path):
    finder = tuning.LearningRateFinder(csv_path=str(tmp_path / "lr_find.csv"),
                                       png_path=str(tmp_path / "lr_find.png"),
                                       update_learning_rate=True, num_steps=30)
    searched = _module(lr_schedule, learning_rate=1.0)  # Replaced by the suggestion.
    _trainer(epochs=2, callbacks=[finder]).fit(searched, quadrant_datamodule())
    suggestion = finder.learning_rate
    assert searched.learning_rate == suggestion
    direct = _module(lr_schedule, learning_rate=suggestion)
    _trainer(epochs=2).fit(direct, quadrant_datamodule())
    for a, b in zip(searched.variables, direct.variables):
        np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=a.path)
    with open(tmp_path / "lr_find.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 10 and list(rows[0]) == ["step", "learning_rate", "loss", "smoothed_loss"]
    assert os.path.getsize(tmp_path / "lr_find.png") > 10_000


# A constant rate without warmup is a variable that the checkpoint holds; a schedule is code.
@pytest.mark.parametrize("lr_schedule,warmup_steps", [("constant", 0), ("cosine", 4)])
def test_a_resumed_run_trains_on_the_rate_its_start_found_without_searching_again(
        lr_schedule, warmup_steps, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="absl")

    def run(max_steps):
        finder = tuning.LearningRateFinder(update_learning_rate=True, num_steps=30)
        fitter = _trainer(epochs=2, max_steps=max_steps, callbacks=[finder],
                          checkpointer=checkpointing.Checkpointer(str(tmp_path / "ckpt")))
        module = _module(lr_schedule, learning_rate=1.0, warmup_steps=warmup_steps)
        fitter.fit(module, quadrant_datamodule())
        return finder, module

    first, _ = run(max_steps=10)
    calls = []
    original = tuning.find_learning_rate
    tuning.find_learning_rate = lambda *args, **kwargs: calls.append(args) or original(
        *args, **kwargs)
    try:
        resumed, module = run(max_steps=32)
    finally:
        tuning.find_learning_rate = original
    assert not calls and resumed.learning_rate == first.learning_rate
    assert module.learning_rate == first.learning_rate
    # The rate is the finder's, and no line claims that the configured one (1.0) wins.
    assert "as configured" not in caplog.text


def test_auto_learning_rate_without_lr_find_is_a_flag_error(tmp_path):
    result = run_main_mocked(["--learning_rate=auto", f"--model_dir={tmp_path / 'run'}"],
                             num_examples=32)
    assert result.returncode == 1
    assert "learning_rate ('auto') needs --lr_find" in result.stderr
    assert not os.path.exists(tmp_path / "run")


def test_lr_find_on_two_replicas_writes_its_files_and_trains_on_the_suggestion(tmp_path):
    model_dir = tmp_path / "run"
    result = run_main_mocked(["--lr_find", "--learning_rate=auto", "--lr_find_steps=20",
                              "--strategy=mirrored", "--cpu_devices=2", "--model=sequential",
                              "--batch_size=32", "--epochs=1", "--save_top_k=0",
                              "--tensorboard=false", f"--model_dir={model_dir}"],
                             num_examples=96)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = [line for line in result.stderr.splitlines() if "lr_find: " in line]
    assert len(summary) == 1 and "suggested learning rate" in summary[0], summary
    suggestion = float(summary[0].split("suggested learning rate ")[1].split()[0])
    assert f"training on learning rate {suggestion:.3g}" in result.stderr
    with open(model_dir / "lr_find.csv") as f:
        rows = list(csv.DictReader(f))
    assert 2 <= len(rows) <= 20 and float(rows[0]["learning_rate"]) == pytest.approx(1e-7)
    assert os.path.getsize(model_dir / "lr_find.png") > 10_000
    with open(model_dir / "metrics.csv") as f:
        logged = [float(row["learning_rate"]) for row in csv.DictReader(f) if row["learning_rate"]]
    assert logged and all(rate == pytest.approx(suggestion, rel=1e-2) for rate in logged)
