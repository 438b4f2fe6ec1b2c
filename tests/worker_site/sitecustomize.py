"""Test set-up for the processes that a test does not start itself: the launcher's workers and
Ray's. Python imports this module at start-up in every process that has tests/worker_site on
PYTHONPATH; it changes nothing unless a test asks for it in the environment:

    TRAINER_TEST_MOCK_TFDS=N          tensorflow-datasets is mocked (every split of every dataset
                                      yields N random examples, nothing is downloaded) from the
                                      moment the process imports trainer.main: what
                                      tests/mocked_main.py does for one process.
    TRAINER_TEST_NO_PROJECT=<tasks>   the processes whose TF_CONFIG task is one of <tasks>
                                      ("worker:1", or "worker:0,worker:1") cannot import the
                                      project, as on a host where it is not installed.

Ray's own processes have it on their path too: it costs them a look at the environment.
"""

import importlib.abc
import json
import os
import sys

MOCK_TFDS = "TRAINER_TEST_MOCK_TFDS"
NO_PROJECT = "TRAINER_TEST_NO_PROJECT"


class _TestSetUp(importlib.abc.MetaPathFinder):
    """Consulted before Python's own finders for every import; finds nothing itself."""

    def find_spec(self, name, path=None, target=None):
        del path, target
        if name == "trainer" and _this_task() in os.environ.get(NO_PROJECT, "").split(","):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        if name == "trainer.main" and os.environ.get(MOCK_TFDS):
            sys.meta_path.remove(self)
            import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
            self.mock = tfds.testing.mock_data(num_examples=int(os.environ[MOCK_TFDS]))
            self.mock.__enter__()  # For the rest of the process (kept: a dropped one would exit).
        return None


def _this_task():
    try:
        task = json.loads(os.environ.get("TF_CONFIG", ""))["task"]
    except (ValueError, KeyError, TypeError):
        return "no TF_CONFIG task"
    return f"{task['type']}:{task['index']}"


if os.environ.get(MOCK_TFDS) or os.environ.get(NO_PROJECT):
    _SET_UP = _TestSetUp()
    sys.meta_path.insert(0, _SET_UP)
