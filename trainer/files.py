"""Writing a run's files so that a kill at any moment leaves the old complete file or the new
complete one, never half of one: everything goes to a temporary name first, then `os.replace`
(an atomic rename on POSIX file systems) puts it in place.

    write_text / write_json   results.json, history.json, best.json, run_config.json, ...
    atomic_path               for writers that take a path (matplotlib's savefig)
    replace_directory         the SavedModel export: `path` is a symbolic link that is switched
                              in one step from the old complete directory to the new one (a
                              hidden `.export.XXXXXXXX` beside it)
"""

import contextlib
import glob
import json
import math
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path beside `path`; when the block ends without error, the file
    written there replaces `path`. On an error the temporary file is removed."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                                             dir=directory)
    os.close(descriptor)
    try:
        yield temporary
        # mkstemp creates the file for its owner only (0600); the run's files follow the
        # process umask, as checkpoints and any other file do, so a team can read them.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _umask() -> int:
    mask = os.umask(0)  # Reading the umask means setting it: set it back at once.
    os.umask(mask)
    return mask


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def finite_json(value):
    """`value` with every NaN or Inf float replaced by None: strict JSON parsers reject NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def write_json(path: str, value) -> None:
    """Writes `value` as strict JSON (non-finite floats as null), atomically."""
    write_text(path, json.dumps(finite_json(value), indent=2, allow_nan=False) + "\n")


def read_json(path: str, *, what: str, fix: str):
    """The JSON value in `path`.

    Raises:
        ValueError: naming the file, what it holds and `fix`, if it is not valid JSON (a copy cut
            short, a disk that filled up while another program wrote it).
    """
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"{path} ({what}) is damaged: it is not valid JSON ({error}); "
                         f"to go on, {fix}") from None


def replace_directory(path: str, write) -> str:
    """Calls `write(directory)` to fill a new directory beside `path`, then makes `path` a symbolic
    link to it in one atomic step and removes the directory `path` pointed to before. A reader of
    `path` sees the old complete directory or the new one. Returns the new directory."""
    parent = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    current = os.path.realpath(path) if os.path.islink(path) else None
    for leftover in glob.glob(os.path.join(parent, f".{name}.????????")):  # From killed runs.
        if os.path.isdir(leftover) and leftover != current:
            shutil.rmtree(leftover, ignore_errors=True)
    new = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)  # Hidden: `ls` shows `path` only.
    write(new)
    old = current
    if os.path.isdir(path) and not os.path.islink(path):  # A plain directory: move it aside.
        old = f"{path}.previous-{os.getpid()}"
        os.rename(path, old)
    link = os.path.join(parent, f".{name}.link-{os.getpid()}")
    os.symlink(os.path.basename(new), link)
    os.replace(link, path)
    if old and old != new:
        shutil.rmtree(old, ignore_errors=True)
    return new
