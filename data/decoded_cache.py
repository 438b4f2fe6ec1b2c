"""A decoded-example cache that survives across runs (`--cache_dir`), on any file system
TensorFlow knows (local disk, `gs://`, ...).

TFDS stores CIFAR-10 as PNG-encoded records: every run decodes each split again, and on a small
machine epoch 1 waits for the decoder (later epochs read the pipeline's in-memory cache). This
cache keeps the decoded uint8 (image, label) examples of one split, as one input pipeline reads
them, in `tf.data.Dataset.save` format; later runs `load` them instead of decoding.

    <cache_dir>/<dataset>/<version>/<split>-<hash>/pipeline-<i>-of-<n>/
        data-<id>/   tf.data.Dataset.save output: ONE shard, so `load` yields the examples in
                     the order they were read (the shuffle downstream is then the same)
        key.json     written last: everything the examples depend on (dataset, version, split,
                     pipeline, pipelines, the prepared source files) and which data-<id> holds them

An entry is used only if its key.json holds the current key; any change (another version, split,
number of input pipelines, or re-prepared source files) builds a new one. key.json is written
after the data, in one step (`write_atomically`), and object stores have no directory renames,
so it is the entry's commit: a run killed while writing, or several workers writing at once, never
leave an entry that another run would read half of. When two processes write the same entry at
once, the first key.json stays and the second process reads that data.
"""

import hashlib
import json
import os
import re
import uuid

import tensorflow as tf

KEY_FILE = "key.json"


def entry_directory(cache_dir: str, key: dict) -> str:
    """Where the examples of `key` live under `cache_dir` (readable, and unique per key)."""
    split = key["split"]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", split).strip("_") or "split"
    digest = hashlib.sha1(split.encode()).hexdigest()[:8]
    return os.path.join(cache_dir, key["dataset"], key["version"], f"{readable}-{digest}",
                        f"pipeline-{key['pipeline']}-of-{key['pipelines']}")


def cached(make_examples, cache_dir: str, key: dict) -> tf.data.Dataset:
    """The examples `make_examples()` yields, from the cache entry of `key` if it is complete;
    otherwise decoded once now (a full pass), saved, and then loaded.

    Needs eager execution (the saving pass runs now); called inside a graph it returns
    `make_examples()` uncached.
    """
    if not tf.executing_eagerly():
        return make_examples()
    directory = entry_directory(cache_dir, key)
    data = _complete_data(directory, key) or _write(make_examples(), directory, key)
    return tf.data.Dataset.load(data)


def write_atomically(path: str, content: bytes) -> None:
    """Writes `content` to `path` (any tf.io.gfile file system) under a temporary name, then
    renames it into place: a reader finds the whole file or none."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with tf.io.gfile.GFile(temporary, "wb") as f:
        f.write(content)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def _stored(directory) -> dict | None:
    try:
        with tf.io.gfile.GFile(os.path.join(directory, KEY_FILE), "rb") as f:
            return json.loads(f.read())
    except (tf.errors.OpError, ValueError):
        return None


def _complete_data(directory, key) -> str | None:
    """The data directory of the entry for `key`, if one was written to its end."""
    stored = _stored(directory)
    if not stored or stored.get("key") != key:
        return None
    data = os.path.join(directory, stored["data"])
    return data if tf.io.gfile.exists(data) else None


def _write(examples, directory, key) -> str:
    """Saves `examples` into a new data directory of the entry, then commits it in key.json
    unless another process committed the same key first; returns the data directory to read."""
    stale = _stored(directory)
    name = f"data-{uuid.uuid4().hex[:8]}"
    # One shard: `load` then reads the examples back in order.
    examples.save(os.path.join(directory, name), shard_func=lambda *_: tf.constant(0, tf.int64))
    first = _complete_data(directory, key)
    if first:  # Another worker wrote the same examples meanwhile: keep one copy.
        tf.io.gfile.rmtree(os.path.join(directory, name))
        return first
    write_atomically(os.path.join(directory, KEY_FILE),
                     json.dumps({"key": key, "data": name}, indent=1, sort_keys=True).encode())
    if stale and stale.get("data") and tf.io.gfile.exists(os.path.join(directory, stale["data"])):
        tf.io.gfile.rmtree(os.path.join(directory, stale["data"]))  # An older key's examples.
    return os.path.join(directory, name)
