"""Run control and callbacks, in process on one device: when training stops, what each stage sees."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import data
import trainer
from conftest import (main_runs_mocked, quadrant_data, quadrant_datamodule, run_main_mocked,
                      tiny_network)
from trainer import callbacks
from trainer import checkpointing


class Recorder(callbacks.Callback):
    """Records every hook call as (hook, step or epoch, logs)."""

    def __init__(self):
        self.calls = []

    def on_train_batch_end(self, step, logs):
        self.calls.append(("batch", step, dict(logs)))

    def on_validation_end(self, logs):
        self.calls.append(("validation", self.trainer.global_step, dict(logs)))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch", epoch, dict(logs)))

    def steps_of(self, hook):
        return [step for name, step, _ in self.calls if name == hook]


class CountingClassifier(trainer.ImageClassifier):
    """Counts the examples each evaluation stage sees (one device: a plain variable is enough)."""

    def __init__(self, network, **kwargs):
        super().__init__(network, **kwargs)
        self.examples_seen = tf.Variable(0, trainable=False, dtype=tf.int64)

    def validation_step(self, batch):
        super().validation_step(batch)
        self.examples_seen.assign_add(tf.shape(batch[1], out_type=tf.int64)[0])


def _run(datamodule=None, module=None, **trainer_kwargs):
    tf.keras.utils.set_random_seed(0)
    recorder = Recorder()
    trainer_kwargs.setdefault("epochs", 2)
    fitter = trainer.Trainer(callbacks=[*trainer_kwargs.pop("callbacks", []), recorder],
                             enable_progress_bar=False, enable_model_summary=False,
                             **trainer_kwargs)
    module = module or CountingClassifier(tiny_network(), learning_rate=1e-2)
    datamodule = datamodule or quadrant_datamodule()  # 16 steps per epoch, 72 val examples
    logs = fitter.fit(module, datamodule)
    return fitter, recorder, logs, module


def test_max_steps_stops_mid_epoch_exactly():
    fitter, _, logs, _ = _run(epochs=5, max_steps=21, steps_per_loop=8)
    assert logs["steps"] == 21 and fitter.global_step == 21
    assert logs["stop_reason"] == "max_steps"
    assert len(fitter.history) == 2  # epoch 1 complete, epoch 2 cut at step 21
    assert "val_loss" in fitter.history[1]  # training is over: the last model is validated


def test_limit_train_and_val_batches():
    fitter, recorder, logs, module = _run(epochs=2, limit_train_batches=5, limit_val_batches=2,
                                          num_sanity_val_steps=0)
    assert logs["steps"] == 10 and fitter.steps_per_epoch == 5
    assert int(module.examples_seen.numpy()) == 2 * 2 * 16  # 2 validations x 2 batches of 16
    assert recorder.steps_of("validation") == [5, 10]


class CountingReads(data.ArrayImageData):
    """Counts the examples read from its source: what its caches did not keep is read again."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.reads = {stage: tf.Variable(0, dtype=tf.int64) for stage in data.STAGES}

    def _read(self, stage, ctx):
        def count(image, label):
            self.reads[stage].assign_add(1)
            return image, label
        return super()._read(stage, ctx).map(count)


def test_limited_passes_fill_their_caches_and_read_each_example_once():
    # Blocks of 32 examples are shuffled; 2 batches of 16 per epoch need the first block only.
    datamodule = CountingReads(train=quadrant_data(256, 0), val=quadrant_data(72, 1),
                               num_classes=4, batch_size=16, seed=0, shuffle_buffer_size=32)
    _run(datamodule, epochs=3, limit_train_batches=2, limit_val_batches=1,
         num_sanity_val_steps=1)
    # A cache read only partly is thrown away: each epoch and each pass would read again.
    assert int(datamodule.reads["train"].numpy()) == 32
    assert int(datamodule.reads["val"].numpy()) == 16  # 4 passes of 1 batch: cached once


def test_val_check_interval_counts_steps_across_epochs():
    _, recorder, _, _ = _run(epochs=2, val_check_interval=10, num_sanity_val_steps=0)
    # Not at the epoch end 16; at 32, where training ends, as the last model must be validated.
    assert recorder.steps_of("validation") == [10, 20, 30, 32]


def test_check_val_every_n_epoch():
    _, recorder, _, _ = _run(epochs=5, check_val_every_n_epoch=2, num_sanity_val_steps=0)
    assert recorder.steps_of("validation") == [32, 64, 80]  # and after the last epoch


def test_log_every_n_steps_ends_loop_calls_on_its_multiples():
    _, recorder, _, _ = _run(epochs=1, log_every_n_steps=5, steps_per_loop=100)
    assert recorder.steps_of("batch") == [5, 10, 15, 16]
    _, _, logs = recorder.calls[0]
    assert {"loss", "train_loss", "train_accuracy", "images_per_s"} <= logs.keys()


def test_sanity_check_catches_a_broken_validation_step_before_training():
    class BrokenValidation(trainer.ImageClassifier):
        def validation_step(self, batch):
            images, labels = batch
            self.log("oops", tf.reshape(images, [-1, 7]))  # 8x8 images do not split into 7s

    module = BrokenValidation(tiny_network(), learning_rate=1e-2)
    fitter = trainer.Trainer(epochs=1, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        fitter.fit(module, quadrant_datamodule())
    assert fitter.global_step == 0  # Failed before the first training step.


def test_sanity_check_runs_the_given_number_of_batches_and_resets():
    fitter, _, _, module = _run(epochs=1, num_sanity_val_steps=2, limit_train_batches=1)
    # 2 sanity batches of 16, then one full validation of 72 examples.
    assert int(module.examples_seen.numpy()) == 2 * 16 + 72
    assert fitter.history[-1]["val_loss"] > 0


def test_overfit_batches_memorizes_random_labels():
    rng = np.random.default_rng(0)
    images, _ = quadrant_data(256, 0)
    random_labels = rng.integers(0, 4, 256)
    datamodule = data.ArrayImageData(train=(images, random_labels), val=quadrant_data(72, 1),
                                     num_classes=4, batch_size=16, seed=0)
    network = tf.keras.Sequential([tf.keras.layers.Flatten(),
                                   tf.keras.layers.Dense(64, activation="relu"),
                                   tf.keras.layers.Dense(4)])
    module = CountingClassifier(network, learning_rate=1e-2)
    fitter, _, logs, _ = _run(datamodule, module, epochs=60, overfit_batches=2,
                              num_sanity_val_steps=0, check_val_every_n_epoch=60)
    assert fitter.steps_per_epoch == 2
    assert int(module.examples_seen.numpy()) == 2 * 16  # validated on the same 32 examples
    assert logs["val_accuracy"] == 1.0  # 32 random labels memorized


def test_early_stopping_stops_at_the_expected_epoch():
    scripted = iter([1.0, 0.8, 0.85, 0.81, 0.9, 0.7, 0.6])

    class ScriptedValLoss(callbacks.Callback):
        def on_validation_end(self, logs):
            logs["val_loss"] = next(scripted)

    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=2)
    fitter, _, logs, _ = _run(epochs=7, num_sanity_val_steps=0,
                              callbacks=[ScriptedValLoss(), stopper])
    # Best 0.8 after epoch 2; epochs 3 and 4 do not improve on it: stop after epoch 4.
    assert len(fitter.history) == 4 and logs["steps"] == 4 * 16
    assert logs["stop_reason"] == "early_stopping"
    assert stopper.state_dict() == {"best": 0.8, "wait": 2, "stopped_at_step": 64}


def test_early_stopping_restores_the_best_weights():
    scripted = iter([1.0, 0.5, 0.9, 0.9])
    snapshots = []

    class ScriptedValLoss(callbacks.Callback):
        def on_validation_end(self, logs):
            logs["val_loss"] = next(scripted)
            snapshots.append(self.trainer.module.get_weights())

    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    fitter, _, _, module = _run(epochs=4, num_sanity_val_steps=0,
                                callbacks=[ScriptedValLoss(), stopper])
    assert len(fitter.history) == 4
    for restored, best in zip(module.get_weights(), snapshots[1]):
        np.testing.assert_array_equal(restored, best)


def test_callback_state_is_checkpointed_and_restored(tmp_path):
    stopper = callbacks.EarlyStopping(monitor="val_loss", patience=5)
    timer = callbacks.Timer(3600)
    checkpointer = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
    _run(epochs=2, num_sanity_val_steps=0, callbacks=[stopper, timer], checkpointer=checkpointer)
    saved = stopper.state_dict()
    assert saved["best"] is not None

    stopper_again = callbacks.EarlyStopping(monitor="val_loss", patience=5)
    timer_again = callbacks.Timer(3600)
    fitter = trainer.Trainer(epochs=2, callbacks=[stopper_again, timer_again],
                             checkpointer=checkpointing.Checkpointer(str(tmp_path / "ckpt")),
                             enable_progress_bar=False, enable_model_summary=False)
    fitter.validate(CountingClassifier(tiny_network()), quadrant_datamodule())  # restores
    assert stopper_again.state_dict() == saved
    assert timer_again.used_before == pytest.approx(timer.elapsed, abs=1.0)
    assert timer_again.used_before > 0


def test_max_time_stops_after_the_current_loop_call():
    timer = callbacks.Timer(1e-3)
    fitter, _, logs, _ = _run(epochs=3, steps_per_loop=4, callbacks=[timer])
    assert logs["steps"] == 4 and logs["stop_reason"] == "max_time"


def test_parse_duration():
    assert callbacks.parse_duration("00:01:00:05") == 3605
    assert callbacks.parse_duration("1:30") == 90
    with pytest.raises(ValueError, match=r"max_time \('90s'\) must be DD:HH:MM:SS"):
        callbacks.parse_duration("90s")


def test_cosine_schedule_with_warmup_steps_on_optimizer_steps():
    monitor = callbacks.LearningRateMonitor()
    module = CountingClassifier(tiny_network(), learning_rate=1e-2, lr_schedule="cosine",
                                warmup_steps=8)
    _, recorder, _, _ = _run(module=module, epochs=2, log_every_n_steps=4, callbacks=[monitor],
                             accumulate_grad_batches=2)  # 8 optimizer steps per epoch
    rates = {step: logs["learning_rate"] for hook, step, logs in recorder.calls
             if hook == "batch"}
    assert rates[4] == pytest.approx(5 / 8 * 1e-2)  # step 4 of 0..7 runs at 5/8 of the peak
    assert rates[8] == pytest.approx(1e-2)     # the peak
    assert rates[12] == pytest.approx(0.5e-2)  # half-way down the cosine (8 decay steps)
    assert rates[16] == pytest.approx(0.0, abs=1e-9)


def test_detect_anomaly_names_the_step_and_keeps_the_last_good_state(tmp_path):
    class ExplodesAtStep6(trainer.ImageClassifier):
        def __init__(self, network, **kwargs):
            super().__init__(network, **kwargs)
            self.calls = tf.Variable(0, trainable=False)

        def training_step(self, batch):
            loss = super().training_step(batch)
            self.calls.assign_add(1)
            factor = tf.where(self.calls >= 6, np.nan, 1.0)  # Steps 1-5 are fine.
            return loss * tf.stop_gradient(factor)  # NaN loss and gradients from step 6 on

    module = ExplodesAtStep6(tiny_network(), learning_rate=1e-2)
    checkpointer = checkpointing.Checkpointer(str(tmp_path / "ckpt"), every_n_steps=4)
    fitter = trainer.Trainer(epochs=1, detect_anomaly=True, checkpointer=checkpointer,
                             enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(trainer.AnomalyDetected, match=r"of step 6 are NaN or Inf.*ckpt-4"):
        fitter.fit(module, quadrant_datamodule())
    assert all(np.all(np.isfinite(w)) for w in module.get_weights())  # Step 6 was not applied.
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-4")


@tf.custom_gradient
def _gradient_times(x, factor):
    """`x` unchanged; its gradient multiplied by `factor`."""
    return tf.identity(x), lambda upstream: (upstream * factor, tf.zeros_like(factor))


class DivergesAtStep8(trainer.ImageClassifier):
    """Step 8's gradients are NaN; from step 8 on the loss is NaN too, unless `finite_loss`."""

    def __init__(self, network, *, finite_loss, **kwargs):
        super().__init__(network, **kwargs)
        self.finite_loss = finite_loss
        self.calls = tf.Variable(0, trainable=False)

    def training_step(self, batch):
        loss = super().training_step(batch)
        self.calls.assign_add(1)
        if self.finite_loss:
            return _gradient_times(loss, tf.where(self.calls == 8, np.nan, 1.0))
        return loss * tf.stop_gradient(tf.where(self.calls >= 8, np.nan, 1.0))


@pytest.mark.parametrize("finite_loss, message", [
    (False, r"the training loss is nan after step 8 \(it turned NaN or Inf in steps 5-8"),
    (True, r"a weight is NaN or Inf after step 8"),  # The update overflowed, not yet the loss.
])
def test_a_diverged_run_stops_before_it_saves_over_the_last_good_checkpoint(tmp_path, finite_loss,
                                                                           message):
    module = DivergesAtStep8(tiny_network(), finite_loss=finite_loss, learning_rate=1e-2)
    checkpointer = checkpointing.Checkpointer(str(tmp_path / "ckpt"), every_n_steps=4)
    fitter = trainer.Trainer(epochs=2, checkpointer=checkpointer, enable_progress_bar=False,
                             enable_model_summary=False)  # Loop calls end at steps 4, 8, 12, 16.
    with pytest.raises(trainer.TrainingDiverged, match=message + r".*ckpt-4.*learning rate"):
        fitter.fit(module, quadrant_datamodule())
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-4")
    saved = tf.train.load_checkpoint(str(tmp_path / "ckpt" / "ckpt-4"))
    assert all(np.all(np.isfinite(saved.get_tensor(name)))
               for name, dtype in saved.get_variable_to_dtype_map().items() if dtype.is_floating)


def test_profile_steps_writes_a_trace(tmp_path):
    _run(epochs=1, callbacks=[callbacks.Profiler(2, 4, str(tmp_path / "tb"))])
    traces = [name for _, _, files in os.walk(tmp_path / "tb") for name in files
              if name.endswith(".xplane.pb")]
    assert traces


def test_bad_run_control_arguments_are_named():
    with pytest.raises(ValueError, match=r"max_steps \(0\) must be at least 1"):
        trainer.Trainer(max_steps=0)
    with pytest.raises(ValueError, match=r"limit_val_batches \(-1\) must be >= 0"):
        trainer.Trainer(limit_val_batches=-1)
    with pytest.raises(ValueError, match=r"gradient_clip_algorithm \('l1'\) must be one of"):
        trainer.Trainer(gradient_clip_val=1.0, gradient_clip_algorithm="l1")
    with pytest.raises(ValueError, match=r"profile_steps \(5,2\) must be two optimizer steps"):
        callbacks.Profiler(5, 2, "x")
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['epoch'\]"):
        trainer.Trainer(epoch=3)
    with pytest.raises(ValueError, match=r"accumulate_grad_batches \(40\) is more than the 16"):
        _run(accumulate_grad_batches=40)


def test_fast_dev_run_writes_nothing(tmp_path):
    model_dir = tmp_path / "run"
    result = run_main_mocked(["--model=sequential", "--fast_dev_run", "--batch_size=16",
                              f"--model_dir={model_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert not model_dir.exists()
    assert "epoch 1/1 | step 1 |" in result.stderr and "test | test_loss" in result.stderr
    epoch_line = next(line for line in result.stderr.splitlines() if "epoch 1/1 | step 1 |" in line)
    assert "val_loss" in epoch_line  # one validation batch ran too


def test_a_deterministic_run_replayed_from_its_flagfile_writes_identical_results(tmp_path):
    first, replay = tmp_path / "first", tmp_path / "replay"
    # Flags away from their defaults, each of which changes the results if it is not replayed.
    # Both runs in one process (trainer.main.run puts every flag back to its default first).
    outcomes = main_runs_mocked([
        ["--model=sequential", "--epochs=1", "--batch_size=16", "--deterministic", "--augment",
         "--dropout=0.2", "--seed=3", f"--model_dir={first}"],
        [f"--flagfile={first / 'flags.txt'}", f"--model_dir={replay}"]])
    assert all("results" in outcome for outcome in outcomes), outcomes
    flags = [line for line in (first / "flags.txt").read_text().splitlines()
             if not line.startswith("#")]
    assert "--dropout=0.2" in flags and not any(f.startswith("--model_dir") for f in flags)
    results = (first / "results.json").read_text()
    assert (replay / "results.json").read_text() == results
    assert json.loads(results)["test_loss"] > 0


class _Stream:
    """A text stream that says whether it is a terminal."""

    def __init__(self, tty):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_progress_bar_redraws_in_place_on_a_terminal():
    stream = _Stream(tty=True)
    bar = callbacks.ProgressBar(stream=stream)
    _run(epochs=2, log_every_n_steps=4, callbacks=[bar])
    lines = stream.text.split("\n")
    assert len(lines) == 3 and lines[2] == ""  # one finished bar per epoch
    redraws = lines[0].split("\r")[1:]
    assert len(redraws) == 4  # steps 4, 8, 12, 16 of epoch 1
    assert redraws[-1].startswith("epoch 1/2 [========================] 16/16 | ")
    assert "img/s | ETA 0:00 | train_loss " in redraws[-1]


def test_progress_bar_prints_lines_when_not_a_terminal():
    stream = _Stream(tty=False)
    bar = callbacks.ProgressBar(stream=stream, every_s=0)
    _run(epochs=1, log_every_n_steps=8, callbacks=[bar])
    assert "\r" not in stream.text
    assert stream.text.splitlines()[0].startswith("epoch 1/1 [============>           ] 8/16 | ")

    quiet = _Stream(tty=False)
    _run(epochs=1, log_every_n_steps=8,
         callbacks=[callbacks.ProgressBar(stream=quiet, every_s=3600)])
    assert quiet.text == ""  # nothing before the interval has passed
