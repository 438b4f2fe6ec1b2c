"""Does TensorFlow see this machine's NVIDIA GPUs? If not, a run says so before it uses the CPU.

The usual first-hour problem on a GPU host: `pip install tensorflow` works, training starts, and
only the speed shows that it runs on the CPU. The NVIDIA driver lists the machine's GPUs in
/proc/driver/nvidia/gpus (Linux) and through `nvidia-smi -L`; when it lists some and TensorFlow
sees none, `create_strategy` (trainer/distribute.py) logs `unseen_gpus_warning()`.
"""

import os
import shutil
import subprocess

from absl import logging
import tensorflow as tf

NVIDIA_PROC_DIR = "/proc/driver/nvidia/gpus"  # One entry per GPU, named by its PCI address.


def nvidia_gpus(proc_dir: str = NVIDIA_PROC_DIR) -> list[str]:
    """The NVIDIA GPUs the driver reports: the entries of `proc_dir`, else the GPU lines of
    `nvidia-smi -L`; [] when neither is there (no NVIDIA driver)."""
    try:
        entries = sorted(os.listdir(proc_dir))
    except OSError:
        entries = []
    if entries:
        return entries
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20,
                                 check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.splitlines() if line.startswith("GPU ")]


def unseen_gpus_warning(proc_dir: str = NVIDIA_PROC_DIR) -> str | None:
    """A warning, with the likely cause and the fix, when the machine has NVIDIA GPUs that
    TensorFlow does not see; None when TensorFlow sees a GPU or the machine has none."""
    if tf.config.list_physical_devices("GPU"):
        return None
    machine = nvidia_gpus(proc_dir)
    if not machine:
        return None
    if tf.test.is_built_with_cuda():
        cause = ("this TensorFlow supports CUDA but could not load the CUDA libraries or the "
                 "driver (TF_CPP_MIN_LOG_LEVEL=0 shows TensorFlow's own lines about it)")
    else:
        cause = "this TensorFlow was built without CUDA (a CPU-only package)"
    return (f"this machine has {len(machine)} NVIDIA GPU(s) but TensorFlow sees none, so this "
            f"run uses the CPU. Likely cause: {cause}. Fix: install "
            "TensorFlow with its CUDA libraries, pip install \"tensorflow[and-cuda]\" (in this "
            "project: pip install \".[gpu]\"), then check that python -m trainer.main --explain "
            "lists the GPUs")


def warn_if_gpus_unseen() -> None:
    """Logs `unseen_gpus_warning()`, if there is one."""
    warning = unseen_gpus_warning()
    if warning:
        logging.warning("%s", warning)
