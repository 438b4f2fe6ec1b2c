"""`python -m trainer.main` end to end on mocked TFDS data, and its errors on bad input."""

import json
import os

from conftest import main_runs_mocked, run_main_mocked, run_python
from flags import model as model_flags


def test_main_trains_tests_and_writes_results(tmp_model_dir):
    result = run_main_mocked(["--model=sequential", "--epochs=2", "--batch_size=16",
                              f"--model_dir={tmp_model_dir}", "--data_dir=/nonexistent"])
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Total params: 225,034" in output
    assert "epoch 1/2 | step 6 | train_loss" in output
    assert "epoch 2/2 | step 12 | train_loss" in output and "img/s" in output
    assert "test | test_loss" in output
    with open(os.path.join(tmp_model_dir, "results.json")) as f:
        results = json.load(f)
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                "test_accuracy"):
        assert isinstance(results[key], float), key
    with open(os.path.join(tmp_model_dir, "timings.json")) as f:
        timings = json.load(f)
    assert timings["wall_time_s"] > 0 and timings["train_images_per_s"] > 0
    assert "wall_time_s" not in results
    assert results["steps"] == 12 and results["epochs"] == 2
    assert 0.0 <= results["test_accuracy"] <= 1.0
    with open(os.path.join(tmp_model_dir, "history.json")) as f:
        history = json.load(f)
    assert [epoch["train_loss"] for epoch in history][-1] == results["train_loss"]
    # No decision on test data by default: the epochs are ranked by their validation, and the
    # validation split is the slice of the training split that training leaves out. (Mocked
    # TFDS serves the same examples for every split name, so the flags are what tells here.)
    with open(os.path.join(tmp_model_dir, "best", "best.json")) as f:
        best = json.load(f)["ranking"][0]
    validation = next(epoch for epoch in history if epoch["step"] == best["step"])
    assert best["score"] == validation["val_accuracy"]
    with open(os.path.join(tmp_model_dir, "flags.txt")) as f:
        flagfile = f.read().splitlines()
    assert {"--train_split=train[:90%]", "--val_split=train[90%:]", "--test_split=test"} <= set(
        flagfile)
    for picture in ("curves.png", "confusion_matrix.png"):
        with open(os.path.join(tmp_model_dir, picture), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", picture


def test_main_under_mirrored_strategy_reports_replicas(tmp_model_dir):
    # Dropout and augmentation draw random numbers on every replica: they must work there too.
    result = run_main_mocked(["--model=functional", "--epochs=1", "--batch_size=32",
                              "--strategy=mirrored", "--cpu_devices=2", "--test_split=",
                              "--dropout=0.3", "--augment", "--precision=bf16-mixed",
                              f"--model_dir={tmp_model_dir}"], num_examples=70)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy with 2 replica(s)" in result.stderr
    assert "global batch 32 = 2 replica(s) x 16 per replica" in result.stderr
    with open(os.path.join(tmp_model_dir, "results.json")) as f:
        results = json.load(f)
    assert results["replicas"] == 2 and "test_loss" not in results


BAD_INPUT = {
    "unknown model": (["--model=resnet"], "--model=resnet"),
    "unknown dataset": (["--dataset=no_such_dataset"], "'no_such_dataset') is not a TFDS dataset"),
    "indivisible batch": (["--batch_size=15", "--strategy=mirrored", "--cpu_devices=2"],
                          "batch_size (15) must be divisible by the number of replicas (2)"),
    "zero epochs": (["--epochs=0"], "--epochs=0"),
    # absl's lower_bound=0 alone lets nan through: every comparison with nan is false.
    "inf learning rate": (["--learning_rate=inf"],
                          "--learning_rate=inf: must be a finite number > 0, or 'auto'"),
    "extra argument": (["surprise"], "unexpected positional arguments: surprise"),
    "model_dir is a file": (["--model_dir={tmp}/a_file"],
                            "model_dir ({tmp}/a_file) is a file, not a directory"),
    "cache_dir is a file": (["--cache_dir={tmp}/a_file"],
                            "cache_dir ({tmp}/a_file) is a file, not a directory"),
    "ckpt_path is a directory": (["--ckpt_path={tmp}", "--batch_size=16", "--model=sequential"],
                                 "ckpt_path ({tmp}) is a directory; pass one checkpoint"),
}


def test_bad_input_gets_a_clear_error(tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    # The cases on one device share one process; the 2-replica case sets up devices of its own.
    runs = {case: [f"--model_dir={tmp_path / case}",
                   *(flag.format(tmp=tmp_path) for flag in BAD_INPUT[case][0])]
            for case in BAD_INPUT}
    one_device = [case for case in BAD_INPUT if "--strategy=mirrored" not in runs[case]]
    outcomes = dict(zip(one_device, main_runs_mocked([runs[case] for case in one_device],
                                                     num_examples=40)))
    for case in set(BAD_INPUT) - set(one_device):
        result = run_main_mocked(runs[case], num_examples=40)
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        outcomes[case] = {"status": result.returncode, "line": result.stderr}
    for case, outcome in outcomes.items():
        message = BAD_INPUT[case][1].format(tmp=tmp_path)
        assert outcome.get("status") == 1, f"{case}: {outcome}"
        assert message in outcome["line"], f"{case}: {outcome}"


def test_missing_dataset_offline_says_to_pass_data_dir(tmp_path):
    # No mock here: a real TFDS lookup in an empty directory, with downloading off as offline.
    result = run_python(["-m", "trainer.main", f"--data_dir={tmp_path}", "--download=false",
                         f"--model_dir={tmp_path / 'run'}"])
    assert result.returncode != 0
    assert "is not prepared in" in result.stderr and "--data_dir" in result.stderr


def test_help_lists_every_flag_of_the_flags_package():
    from absl import flags as absl_flags
    import flags as run_flags  # Registers the project's flags in this process too.
    names = [flag.name for module, module_flags in absl_flags.FLAGS.flags_by_module_dict().items()
             if module.startswith(run_flags.__name__ + ".") for flag in module_flags]
    assert len(names) > 50
    result = run_python(["-m", "trainer.main", "--help"])  # absl exits with 1 after help
    listed = result.stdout + result.stderr
    assert "Command line entry point" in listed, listed[-2000:]
    missing = [name for name in names
               if f"--{name}:" not in listed and f"--[no]{name}:" not in listed]
    assert not missing


def test_a_diverged_run_exits_non_zero_with_strict_results_and_no_export(tmp_path):
    model_dir = tmp_path / "run"
    result = run_main_mocked(["--model=sequential", "--epochs=2", "--batch_size=16",
                              "--learning_rate=1e6", "--checkpoint_every_steps=2",
                              f"--model_dir={model_dir}"])
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.count("training diverged") == 1  # One message, no traceback.
    assert "Traceback" not in result.stderr
    # Strict JSON: Python's parser accepts NaN unless told not to.
    results = json.loads((model_dir / "results.json").read_text(), parse_constant=_reject)
    assert results["stop_reason"] == "diverged" and results["error"].startswith(
        "training diverged")
    assert not os.path.exists(model_dir / "export")


def _reject(constant):
    raise ValueError(f"not strict JSON: {constant}")


def test_the_learning_rate_flag_takes_a_finite_positive_number_or_auto():
    for text in ("3e-4", "1", "auto"):
        assert model_flags._is_learning_rate(text), text
    for text in ("nan", "inf", "-inf", "0", "-1e-3", "fast", ""):
        assert not model_flags._is_learning_rate(text), text
