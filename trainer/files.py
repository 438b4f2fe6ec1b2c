"""Reading and writing a run's files on any file system TensorFlow knows, so that a kill at any
moment leaves the old complete file or the new complete one, never half of one.

Every path goes through `tf.io.gfile`: local disk, `gs://` (Google Cloud Storage), whatever
schemes installed plugins register (`s3://`, `hdfs://`, ...), and TensorFlow's in-memory
`ram://`. What is atomic where:

    local disk      a file is written to a temporary name beside it, flushed to disk, then
                    renamed over the target (`os.replace`, atomic on POSIX file systems)
    other schemes   a file is written to a temporary name, then renamed over the target
                    (`tf.io.gfile.rename`). An object store shows an object only once it is
                    whole, and renames by copying: a reader sees the old object or the new one.

    write_bytes / write_text / write_json / write_csv
                                            results.json, best.json, metrics.csv, plots, ...
    read_text / read_json / read_csv        the same, read back; damaged JSON named
    replace_directory / resolve_directory   the SavedModel export (see replace_directory)
"""

import csv
import io
import json
import math
import os
import shutil
import tempfile
import uuid

import tensorflow as tf

LATEST = "LATEST"  # On object stores: the file naming the export's complete version.


def is_local(path: str) -> bool:
    """Whether `path` is on the local disk (no `scheme://`), where POSIX renames and links work."""
    return "://" not in path


def _umask() -> int:
    mask = os.umask(0)  # Reading the umask means setting it: set it back at once.
    os.umask(mask)
    return mask


def write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` atomically (see the module docstring), creating its directory."""
    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    if not is_local(path):
        temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with tf.io.gfile.GFile(temporary, "wb") as f:
                f.write(data)
            tf.io.gfile.rename(temporary, path, overwrite=True)
        finally:
            if tf.io.gfile.exists(temporary):
                tf.io.gfile.remove(temporary)
        return
    descriptor, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                                             dir=directory or ".")
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file for its owner only (0600); the run's files follow the
        # process umask, as checkpoints and any other file do, so a team can read them.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path: str, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


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


def write_csv(path: str, columns, rows) -> None:
    """Writes rows (dicts, or sequences in `columns` order) under a header, atomically; a dict
    row's missing columns are left empty."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(column, "") for column in columns] if isinstance(row, dict)
                        else row)
    write_text(path, text.getvalue())


def read_csv(path: str) -> tuple[list[str], list[dict]]:
    """The header and the rows (dicts of strings) of the CSV file `path`."""
    reader = csv.DictReader(io.StringIO(read_text(path)))
    return list(reader.fieldnames or []), list(reader)


def read_text(path: str) -> str:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read().decode("utf-8")


def read_json(path: str, *, what: str, fix: str):
    """The JSON value in `path`.

    Raises:
        ValueError: naming the file, what it holds and `fix`, if it is not valid JSON (a copy cut
            short, a disk that filled up while another program wrote it).
    """
    text = read_text(path)
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"{path} ({what}) is damaged: it is not valid JSON ({error}); "
                         f"to go on, {fix}") from None


def replace_directory(path: str, write) -> str:
    """Calls `write(directory)` to fill a new directory, then makes it the one `path` names in
    one step, and removes the one it named before. Returns the new directory.

    On local disk `path` is a symbolic link, switched atomically from the old complete directory
    to the new one (a hidden `.<name>.XXXXXXXX` beside it): readers open `path` itself. Object
    stores have no links and no atomic directory renames, so there `path` is a directory of
    numbered versions, TensorFlow Serving's layout (`<path>/1/`, `<path>/2/`, ...), and a small
    file `<path>/LATEST`, written last, names the complete one: `resolve_directory(path)` reads
    it. Either way a reader finds the old complete directory or the new one, never half of one.
    """
    if not is_local(path):
        return _replace_version(path, write)
    parent = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    current = os.path.realpath(path) if os.path.islink(path) else None
    for leftover in tf.io.gfile.glob(os.path.join(parent, f".{name}.????????")):  # Killed runs'.
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


def resolve_directory(path: str) -> str:
    """The complete directory that `path` (written by `replace_directory`) names now."""
    pointer = os.path.join(path, LATEST)
    if is_local(path) or not tf.io.gfile.exists(pointer):
        return path
    return os.path.join(path, read_text(pointer).strip())


def _replace_version(path, write):
    """`replace_directory` on an object store: a new numbered version, then the pointer. The
    version it replaces stays until the next export, for readers that resolved it just before;
    older ones, and any a killed export left half written, are removed."""
    tf.io.gfile.makedirs(path)
    previous = resolve_directory(path)
    versions = [entry.strip("/") for entry in tf.io.gfile.listdir(path)
                if entry.strip("/").isdigit()]
    version = str(max((int(entry) for entry in versions), default=0) + 1)
    new = os.path.join(path, version)
    write(new)
    write_text(os.path.join(path, LATEST), version + "\n")  # The export switches here.
    for entry in versions:
        if os.path.join(path, entry) != previous:
            tf.io.gfile.rmtree(os.path.join(path, entry))
    return new
