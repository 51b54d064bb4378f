"""Fixed-size binary token shards of one split, written so that a kill loses at most one.

Format: `<split>-00000.bin`, ... each `shard_tokens` ids (the last one shorter) as raw
little-endian uint16 (vocabularies up to 65,536) or uint32, no header. Chosen over
array_record because training reads windows at arbitrary token offsets: a flat file is
read by offset through np.memmap with no per-record framing or decompression, and a window
that spans two documents (or two shards) is just two slices. The manifest holds the counts.

Each shard is written to a hidden temporary file, synced, and renamed into place; then the
manifest records it together with where in the split's text its batch began, so a rerun
re-encodes from there and keeps every shard already written.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.bin"


def new_split_state() -> dict:
    return {"shards": [], "resume": {"chars": 0, "tokens": 0}}


class ShardWriter:
    """Takes the ids of consecutive encoded batches of one split and writes full shards.

    `state` is the split's entry in the manifest (updated in place) and `commit` saves the
    manifest; a state from an interrupted run makes the writer drop the ids it already holds.
    """

    def __init__(self, directory: str, split: str, shard_tokens: int, dtype: str, state: dict,
                 commit: Callable[[], None]):
        self.directory, self.split, self.shard_tokens = directory, split, shard_tokens
        self.dtype, self.state, self.commit = np.dtype(dtype), state, commit
        self.written = sum(s["tokens"] for s in state["shards"])
        self.position = state["resume"]["tokens"]   # index in the split of the next id given to add()
        self.pending: list[np.ndarray] = []
        self.pending_tokens = 0

    @property
    def resume_chars(self) -> int:
        """Where in the split's text the encoding has to start again."""
        return self.state["resume"]["chars"]

    def add(self, ids: np.ndarray, batch_chars: int) -> None:
        """The ids of a batch that starts `batch_chars` characters into the split's text."""
        batch_start = {"chars": batch_chars, "tokens": self.position}
        drop = min(len(ids), max(0, self.written - self.position))  # already in written shards
        self.position += len(ids)
        if drop < len(ids):
            self.pending.append(np.asarray(ids[drop:], self.dtype))
            self.pending_tokens += len(ids) - drop
        while self.pending_tokens >= self.shard_tokens:
            self.write(self.take(self.shard_tokens))
            self.state["resume"] = batch_start
            self.commit()

    def close(self) -> None:
        """Write the last, shorter shard; the caller's final commit records it."""
        if self.pending_tokens:
            self.write(self.take(self.pending_tokens))

    def take(self, n: int) -> np.ndarray:
        ids = np.concatenate(self.pending)
        self.pending = [ids[n:]] if len(ids) > n else []
        self.pending_tokens = len(ids) - n
        return ids[:n]

    def write(self, ids: np.ndarray) -> None:
        name = shard_name(self.split, len(self.state["shards"]))
        tmp = os.path.join(self.directory, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(ids.astype(self.dtype.newbyteorder("<"), copy=False).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.directory, name))
        self.state["shards"].append({"file": name, "tokens": int(len(ids))})
        self.written += len(ids)
