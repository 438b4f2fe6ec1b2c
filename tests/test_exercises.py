"""The "break it" exercises of docs/the_training_loop.md stay true.

Each exercise's change is applied here as the reader would make it (a method replaced, or lines
of examples/break_it.py moved), and what the code then prints is compared with the output the
page documents, before and after the change. The page's expected outputs are read from it: a
fenced block after `<!-- expected: NAME -->`. A documented line must appear in the output, in
order, with the same words; its numbers may differ by 5% (float noise across machines), and
`0x...` stands for any address. A line `...` in the page skips output lines.

The 2-replica exercises run in one subprocess (tests/exercises_run.py: one MirroredStrategy per
process), started with the first test; the 1-device ones run here meanwhile, first.
"""

import contextlib
import io
import json
import math
import os
import re
import shlex
import subprocess
import sys

import pytest
import tensorflow as tf

import documented
import exercises_run
from conftest import ROOT, TESTS, subprocess_env
from examples import break_it
from trainer import steps
from trainer.vision import classifier


def _normalized(line):
    return " ".join(re.sub(r"0x[0-9a-f]+", "0x...", line).split())


def _same_line(expected, actual):
    expected, actual = _normalized(expected), _normalized(actual)
    if documented.masked(expected) != documented.masked(actual):
        return False
    return all(math.isclose(float(a), float(b), rel_tol=0.05, abs_tol=1e-9)
               for a, b in zip(documented.NUMBER.findall(expected),
                               documented.NUMBER.findall(actual)))


def assert_prints(name, output):
    """Every documented line of `name` appears in `output`, in order (`...` skips lines)."""
    lines = output.splitlines()
    position = 0
    for expected in documented.output(name):
        if expected.strip() == "...":
            continue
        while position < len(lines) and not _same_line(expected, lines[position]):
            position += 1
        assert position < len(lines), (f"expected output {name!r}: no line like\n  {expected}\n"
                                       f"in what was printed:\n{output}")
        position += 1


# Every command the exercises give, and what the tests here run for it: (measurement, replicas).
TESTED = {"python examples/break_it.py scope": (break_it.scope, 2),
          "python examples/break_it.py scope_trainer": (break_it.scope_trainer, 2),
          "python examples/break_it.py clip": (break_it.clip, 2),
          "python examples/break_it.py clip --replicas=1": (break_it.clip, 1),
          "python examples/break_it.py batchnorm": (break_it.batchnorm, 1),
          "python examples/break_it.py print": (break_it.print_, 1)}


def test_every_command_of_the_exercises_runs_what_is_tested_here():
    given = documented.commands("examples/break_it.py")
    assert sorted(set(given)) == sorted(TESTED)
    for line in given:
        assert break_it.parse(shlex.split(line)[1:]) == TESTED[line], line


def test_the_comparison_tells_lines_apart():
    # Guards assert_prints: other words, or a number off by more than 5%, do not match.
    assert _same_line("optimizer.iterations: 8", "optimizer.iterations:   8")
    assert not _same_line("optimizer.iterations: 8", "optimizer.iterations: 4")
    assert not _same_line("norm of the update: 1.000", "norm of the update: 1.171")
    assert not _same_line("self-test FAILED", "self-test PASSED")
    assert _same_line("<Strategy object at 0x...>", "<Strategy object at 0x7fd3b5d1f710>")


# ---- 4. Evaluation with training=True ---------------------------------------------------------------

def _evaluate_in_training_mode(self, batch):
    """ImageClassifier._evaluate with the exercise's change: training=True."""
    images, labels = batch
    logits = self(images, training=True)
    self.log("loss", self._per_example_loss(labels, logits))
    self.log("accuracy", classifier._correct(labels, logits))  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def batchnorm_kept():
    """(what break_it.batchnorm prints as the code is, its measurements)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        measured = break_it.batchnorm(tf.distribute.get_strategy())
    return out.getvalue(), measured


def test_evaluation_leaves_batchnorm_statistics_alone(batchnorm_kept):
    output, measured = batchnorm_kept
    assert_prints("batchnorm-kept", output)
    assert measured["moved"] == 0 and measured["first"] == measured["second"]


def test_evaluating_in_training_mode_moves_batchnorm_statistics(batchnorm_kept, capsys,
                                                                 monkeypatch):
    kept = batchnorm_kept[1]
    monkeypatch.setattr(classifier.ImageClassifier, "_evaluate", _evaluate_in_training_mode)
    measured = break_it.batchnorm(tf.distribute.get_strategy())
    assert_prints("batchnorm-broken", capsys.readouterr().out)
    assert measured["moved"] > 1e-4
    # Batch statistics, not the learned ones: the same weights score differently.
    assert abs(measured["first"] - kept["first"]) > 0.05


# ---- 3, on one device: clipping before the all-reduce changes nothing ---------------------------

def test_on_one_device_clipping_before_the_sum_still_bounds_the_update(capsys, monkeypatch):
    # The exercise's edit in place, run as `break_it.py clip --replicas=1`: one device has
    # nothing to sum, so its update is still clipped to exactly 1.
    monkeypatch.setattr(steps.StepFunctions, "reduce_gradients", exercises_run.clip_then_reduce)
    measured = break_it.clip(tf.distribute.get_strategy())
    assert_prints("clip-one-device", capsys.readouterr().out)
    assert measured["update_norm"] == pytest.approx(break_it.CLIP_NORM, rel=1e-5)


# ---- 5. print inside the step ---------------------------------------------------------------------

def test_without_prints_the_step_prints_nothing(capfd):
    measured = break_it.print_(tf.distribute.get_strategy())
    captured = capfd.readouterr()
    assert measured["steps"] == 4
    assert "training_step" not in captured.out + captured.err
    assert_prints("print-kept", captured.out)


def test_python_print_runs_when_traced_and_tf_print_at_every_step(capfd, monkeypatch):
    original = classifier.ImageClassifier.training_step

    def training_step(self, batch):  # The exercise's two added lines, then the step.
        print("python print: training_step")
        tf.print("tf.print: training_step")
        return original(self, batch)

    monkeypatch.setattr(classifier.ImageClassifier, "training_step", training_step)
    measured = break_it.print_(tf.distribute.get_strategy())
    captured = capfd.readouterr()
    output = captured.out + captured.err
    assert measured["steps"] == 4
    assert output.count("python print: training_step") == 2  # Two traces, not four steps.
    assert output.count("tf.print: training_step") == 4      # One per step.
    # The page shows the lines as a terminal interleaves them; stdout and stderr are captured
    # apart here, so each line's count is compared.
    expected = documented.output("print-broken")
    for line in set(expected):
        assert output.count(line) == expected.count(line), line


@pytest.fixture(scope="module", autouse=True)
def _two_replica_process():
    """Starts tests/exercises_run.py when the module's first test starts, so that it runs while
    the 1-device exercises run here (those come first in this file)."""
    process = subprocess.Popen([sys.executable, os.path.join(TESTS, "exercises_run.py")],
                               cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def two_replicas(_two_replica_process):
    stdout, stderr = _two_replica_process.communicate(timeout=300)
    assert _two_replica_process.returncode == 0, stderr[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])


# ---- 1. The loss divided by the replica's batch: --selftest fails ---------------------------------

def test_the_selftest_passes_as_the_code_is(two_replicas):
    assert_prints("selftest-kept", two_replicas["selftest_kept"])


def test_dividing_by_the_replica_batch_fails_the_selftest_denominator_row(two_replicas):
    assert_prints("selftest-broken", two_replicas["selftest_broken"])
    # The denominator row, and the loss and weights compared with one device, fail.
    assert two_replicas["selftest_broken_passed"] == [False, False, False, True, True]


# ---- 2. The optimizer created outside the scope ---------------------------------------------------

def test_in_scope_the_optimizer_counts_each_step_once(two_replicas):
    output, measured = two_replicas["scope_kept"]
    assert_prints("scope-kept", output)
    assert measured == {"iterations": 4, "spread": 0.0}


def test_outside_the_scope_steps_count_twice_and_the_replicas_drift_apart(two_replicas):
    output, measured = two_replicas["scope_broken"]
    assert_prints("scope-broken", output)
    assert measured["iterations"] == 8 and measured["spread"] > 1e-4


def test_the_trainer_refuses_an_optimizer_created_outside_the_scope(two_replicas):
    output, measured = two_replicas["scope_trainer"]
    assert measured["error"] is not None, "fit trained with an optimizer created outside the scope"
    assert_prints("scope-trainer", output)


# ---- 3. Clipping before the all-reduce --------------------------------------------------------------

def test_clipping_the_sum_bounds_the_update_by_the_clip(two_replicas):
    output, measured = two_replicas["clip_kept"]
    assert_prints("clip-kept", output)
    assert measured["update_norm"] == pytest.approx(break_it.CLIP_NORM, rel=1e-5)


def test_clipping_each_replica_before_the_sum_lets_a_larger_update_through(two_replicas):
    output, measured = two_replicas["clip_broken"]
    assert_prints("clip-broken", output)
    assert measured["update_norm"] > 1.1 * break_it.CLIP_NORM


# ---- docs/pitfalls.md#15: one MirroredStrategy per process -----------------------------------

def test_the_selftest_and_the_trainer_create_no_second_mirrored_strategy(two_replicas):
    # The 2-replica process ran the self-test twice (each compares the replicas with one
    # device), the minimal loop twice and the Trainer's fit three times: all under the one
    # MirroredStrategy it created first.
    assert two_replicas["mirrored_strategies_created"] == 1
