"""`Calls`: calls made on one background thread, so that the training loop does not wait for them.

A logger that talks to a server or a database (trainer/callbacks/mlflow_logger.py) hands each call
over between traced loop calls and goes on at once; the thread makes the calls in order. Only
the thread makes calls through the client it is given until `wait` returns, so the client needs
no locks.
"""

import queue
import threading


class Calls:
    """Makes calls on one background thread, in the order they were handed over.

    After a call fails, `on_failure(error)` is called once (on that thread) and the calls still
    queued, or handed over later, are dropped: the server or the disk is gone, and nothing should
    wait for its retries again.

    Args:
        on_failure: called with the first exception a call raised.
    """

    def __init__(self, *, on_failure):
        self._calls = queue.Queue()
        self._on_failure = on_failure
        self.failed = False
        threading.Thread(target=self._work, name="background-calls", daemon=True).start()

    def send(self, call, *args) -> None:
        """Queues `call(*args)` and returns at once."""
        self._calls.put((call, args))

    def wait(self) -> None:
        """Returns once every call handed over so far has been made (or dropped)."""
        self._calls.join()

    def _work(self):
        while True:
            call, args = self._calls.get()
            try:
                if not self.failed:
                    call(*args)
            except Exception as error:  # pylint: disable=broad-except  # Reported, once.
                self.failed = True
                self._on_failure(error)
            finally:
                self._calls.task_done()
