"""A decoded-example cache on disk that survives across runs (`--cache_dir`).

TFDS stores CIFAR-10 as PNG-encoded records: every run decodes each split again, and on a small
machine epoch 1 waits for the decoder (later epochs read the pipeline's in-memory cache). This
cache keeps the decoded uint8 (image, label) examples of one split, as one input pipeline reads
them, in `tf.data.Dataset.save` format; later runs `load` them instead of decoding.

    <cache_dir>/<dataset>/<version>/<split>-<hash>/pipeline-<i>-of-<n>/
        key.json     everything the examples depend on: dataset, version, split, pipeline,
                     pipelines and the prepared source files (names and sizes)
        data/        tf.data.Dataset.save output: ONE shard, so `load` yields the examples in
                     the order they were read (the shuffle downstream is then the same)

An entry is used only if its key.json equals the current key; any change (another version, split,
number of input pipelines, or re-prepared source files) builds a new entry. An entry is written
under a temporary name and renamed into place when complete, so a run killed while writing, or
several workers writing at once, never leave a partial entry that another run would read.
"""

import hashlib
import json
import os
import re
import shutil
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
    if _stored_key(directory) != key:
        _write(make_examples(), directory, key)
    return tf.data.Dataset.load(os.path.join(directory, "data"))


def _stored_key(directory):
    try:
        with open(os.path.join(directory, KEY_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write(examples, directory, key):
    """Saves `examples` under a temporary name, then renames it to `directory`."""
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    temporary = os.path.join(parent, f".{os.path.basename(directory)}.{uuid.uuid4().hex[:8]}")
    try:
        # One shard: `load` then reads the examples back in order.
        examples.save(os.path.join(temporary, "data"), shard_func=lambda *_: tf.constant(0, tf.int64))
        with open(os.path.join(temporary, KEY_FILE), "w") as f:
            json.dump(key, f, indent=1, sort_keys=True)
        if os.path.isdir(directory):  # A stale entry (another key): replace it.
            shutil.rmtree(directory, ignore_errors=True)
        try:
            os.rename(temporary, directory)
        except OSError:  # Another process renamed its (identical) entry into place first.
            if _stored_key(directory) != key:
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
