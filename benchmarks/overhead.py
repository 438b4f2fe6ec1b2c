"""Where the wall time of a real run goes after its first epoch.

    python benchmarks/overhead.py --model=sequential --data_dir=~/tensorflow_datasets

Runs `python -m trainer.main` with the given flags, then splits the time from the end of epoch 1
to the end of the process into time inside training epochs, validation and test passes (from
`history.json` and `timings.json`), and everything else: host syncs, logging, iterator set-up,
writing results, shutting down.
"""

import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_EPOCH_LINE = re.compile(r"^I\d{4} (\d\d:\d\d:\d\d\.\d+) .*\] epoch 1/\d+ \| step \d+ \|.* img/s$")


def main():
    model_dir = tempfile.mkdtemp(prefix="overhead-")
    command = [sys.executable, "-m", "trainer.main", f"--model_dir={model_dir}", *sys.argv[1:]]
    start = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    end = time.time()
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    epoch_1_clock = next(m.group(1) for line in result.stderr.splitlines()
                         if (m := _EPOCH_LINE.match(line)))
    day = datetime.datetime.fromtimestamp(end, datetime.timezone.utc).date()
    epoch_1_end = datetime.datetime.combine(
        day, datetime.time.fromisoformat(epoch_1_clock), datetime.timezone.utc).timestamp()
    with open(os.path.join(model_dir, "history.json")) as f:
        history = json.load(f)
    with open(os.path.join(model_dir, "timings.json")) as f:
        results = json.load(f)
    after_epoch_1 = end - epoch_1_end
    training = sum(epoch["train_seconds"] for epoch in history[1:])
    evaluation = sum(epoch.get("val_seconds", 0.0) for epoch in history[1:])
    evaluation += results.get("test_seconds", 0.0)
    other = after_epoch_1 - training - evaluation
    print(f"process wall time {end - start:.1f} s; after epoch 1: {after_epoch_1:.1f} s")
    print(f"  training epochs 2-{len(history)}: {training:.1f} s")
    print(f"  validation and test passes:    {evaluation:.1f} s")
    print(f"  everything else:               {other:.1f} s = {other / after_epoch_1:.1%}")


if __name__ == "__main__":
    main()
