"""fp16 loss scaling decides from the all-reduced gradients: every replica skips or applies together."""

import json

import numpy as np

from conftest import TESTS, run_python


def test_one_overflowing_replica_skips_the_step_on_every_replica():
    result = run_python([f"{TESTS}/overflow_run.py"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["compute_dtype"] == "float16"
    for initial, after in zip(report["initial"], report["after_overflow"]):
        for replica in (0, 1):  # Neither replica applied the step, not even replica 0.
            np.testing.assert_array_equal(after[replica], initial[replica])
    assert report["skipped_steps"] == 1 and report["steps"] == 4  # Skipped, but counted.
    assert report["scale_after_overflow"] == 2.0**14  # Halved from 2**15.
    assert report["scale_after_4_steps"] == 2.0**14  # 3 finite steps: no growth yet.
    moved = [np.max(np.abs(np.subtract(after[0], initial[0])))
             for initial, after in zip(report["initial"], report["after_4_steps"])]
    assert max(moved) > 1e-3  # The finite steps trained.
    for copies in report["after_4_steps"]:
        np.testing.assert_array_equal(copies[0], copies[1])  # The replicas still agree.
