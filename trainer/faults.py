"""Deterministic kills, for the tests of exact resume: a kill at a named point, not a guessed time.

With the environment variable `TRAINER_KILL_AT=<point>:<n>`, the process SIGKILLs itself the n-th
time it reaches `<point>`; `<point>:<n>:<SIGNAL>` sends that signal instead (e.g. SIGINT, a
Ctrl-C), and several comma-separated entries each apply. The points (`reached` calls) are where a
real kill or signal is the hardest to recover from:

    train_call   after a traced training call, before any checkpoint of it
    saving       a checkpoint is about to be written (signals are held back until it is whole)
    saved        just after a checkpoint is saved
    validation   at the start of a validation pass
    test         at the start of the test pass
    export       with the export written to its temporary directory, before it replaces the old
    results      before results.json is written

Without the variable `reached` does nothing.
"""

import collections
import os
import signal

VARIABLE = "TRAINER_KILL_AT"
_counts = collections.Counter()


def reached(point: str) -> None:
    """Counts `point`; signals this process if `TRAINER_KILL_AT` names it and this count."""
    setting = os.environ.get(VARIABLE)
    if not setting:
        return
    _counts[point] += 1
    for entry in setting.split(","):
        name, _, rest = entry.partition(":")
        count, _, signal_name = rest.partition(":")
        if point == name and _counts[point] == int(count or 1):
            os.kill(os.getpid(), getattr(signal, signal_name or "SIGKILL"))
