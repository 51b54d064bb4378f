"""A prepared directory as the Corpus training reads: every split memory-mapped, nothing loaded.

`ShardedTokens` makes a split's shards look like one 1-D array to `gptjax.data.batches`:
`len()`, `.size` and `[a:b]` slices that may cross shard boundaries. A slice reads only the
pages it covers, so a host touches just the windows of its own rows.
"""

from __future__ import annotations

import os

import numpy as np

from gptjax.data import shard_manifest, tokenizers
from gptjax.data.prepare import Corpus
from gptjax.errors import UserError


class ShardedTokens:
    """Consecutive token shards read as one array, by slices (a window or a whole range)."""

    def __init__(self, paths: list[str], counts: list[int], dtype: str):
        self.dtype = np.dtype(dtype)
        # Opened at once (mapping costs no reads), so that reader threads share them safely.
        self.maps = [np.memmap(p, dtype=self.dtype, mode="r", shape=(n,)) for p, n in zip(paths, counts) if n]
        self.starts = np.cumsum([0, *[n for n in counts if n]])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def size(self) -> int:
        return len(self)

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice):
            index = int(key) + (len(self) if int(key) < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"token {key} is outside a split of {len(self)}")
            shard = int(np.searchsorted(self.starts, index, side="right")) - 1
            return self.maps[shard][index - self.starts[shard]]
        start, stop, step = key.indices(len(self))
        if step != 1:
            return self[start:stop][::step]
        if stop <= start:
            return np.zeros(0, self.dtype)
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        last = int(np.searchsorted(self.starts, stop, side="left")) - 1
        parts = [self.maps[i][max(start - self.starts[i], 0):min(stop, self.starts[i + 1]) - self.starts[i]]
                 for i in range(first, last + 1)]
        return np.array(parts[0]) if len(parts) == 1 else np.concatenate(parts)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole split in memory: for small corpora and tools that need all of it (n-grams)."""
        return self[:].astype(dtype) if dtype is not None else self[:]


def load_prepared(directory: str) -> Corpus:
    """The Corpus of a directory `python -m gptjax.prepare` has finished."""
    directory = os.path.expanduser(directory)
    manifest = shard_manifest.read_manifest(directory)
    if manifest is None:
        raise UserError(f"data.path={directory!r} holds no {shard_manifest.MANIFEST}; prepare it first "
                        "(python -m gptjax.prepare --config ... --out DIR)")
    if not manifest.get("complete"):
        raise UserError(f"{directory} is only partly prepared; run python -m gptjax.prepare again with "
                        "the same config to finish it")
    tokens = {}
    for name, split in manifest["splits"].items():
        paths = [os.path.join(directory, s["file"]) for s in split["shards"]]
        for path, shard in zip(paths, split["shards"]):
            expected = shard["tokens"] * np.dtype(manifest["dtype"]).itemsize
            if not os.path.exists(path) or os.path.getsize(path) != expected:
                raise UserError(f"{path} is missing or not {expected} bytes as {shard_manifest.MANIFEST} says; "
                                "prepare the directory again")
        tokens[name] = ShardedTokens(paths, [s["tokens"] for s in split["shards"]], manifest["dtype"])
    tok = tokenizers.load_tokenizer(os.path.join(directory, "tokenizer"))
    token_bytes, token_chars = tokenizers.token_lengths(tok)
    chars = {name: split["chars"] for name, split in manifest["splits"].items()}
    return Corpus(tok, tokens, chars, token_bytes, token_chars, manifest["cleaning"], directory)
