"""A machine with NVIDIA GPUs that TensorFlow does not see: detected, explained, not silent.

This machine has no GPU, so the detection is faked: a /proc directory with GPU entries, or an
`nvidia-smi` script on PATH. TensorFlow's GPU list is the real one: empty.
"""

import os
import stat

import pytest
import tensorflow as tf

from conftest import run_main_mocked
from trainer import gpu_check

pytestmark = pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")),
                                reason="TensorFlow sees a GPU here: nothing is unseen")


def _fake_nvidia_smi(directory, num_gpus):
    """An `nvidia-smi` that lists `num_gpus` GPUs, as `nvidia-smi -L` does."""
    script = directory / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + "".join(
        f'echo "GPU {i}: NVIDIA A100-SXM4-40GB (UUID: GPU-{i:08d})"\n' for i in range(num_gpus)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(directory)


def test_gpus_in_proc_that_tensorflow_does_not_see_get_a_cause_and_a_fix(tmp_path):
    for address in ("0000:3b:00.0", "0000:5e:00.0"):
        (tmp_path / address).mkdir()
    warning = gpu_check.unseen_gpus_warning(str(tmp_path))
    assert "this machine has 2 NVIDIA GPU(s) but TensorFlow sees none" in warning
    assert "Likely cause: this TensorFlow" in warning
    assert 'pip install "tensorflow[and-cuda]"' in warning and 'pip install ".[gpu]"' in warning


def test_nvidia_smi_counts_the_gpus_when_proc_has_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path, 4))
    assert len(gpu_check.nvidia_gpus(str(tmp_path / "no_such_dir"))) == 4
    assert "has 4 NVIDIA GPU(s)" in gpu_check.unseen_gpus_warning(str(tmp_path / "no_such_dir"))


def test_no_warning_on_a_machine_without_nvidia_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # No nvidia-smi there.
    assert gpu_check.unseen_gpus_warning(str(tmp_path / "no_such_dir")) is None


def test_a_run_says_so_before_it_uses_the_cpu(tmp_path):
    path = f"{_fake_nvidia_smi(tmp_path, 2)}{os.pathsep}{os.environ.get('PATH', '')}"
    result = run_main_mocked(["--explain", f"--model_dir={tmp_path / 'run'}"], num_examples=70,
                             env={"PATH": path})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "this machine has 2 NVIDIA GPU(s) but TensorFlow sees none" in result.stderr
    assert "the default device" in result.stdout  # The plan: the CPU.
