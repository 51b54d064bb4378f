"""Train / validation / test splits decided while the documents stream past.

`tail` is the in-memory split exactly (train, then test, then the last `val_fraction` of the
text for validation); it needs the corpus's length first, so preparation reads the source
once more to count it. `documents` cannot be reproduced as a stream: the in-memory split
deals a seeded permutation of all documents until each split holds its share of
characters, which needs every length before the first document is placed and writes each
split in permuted order. A stream instead places each whole document by a hash of its text
and the seed: the same document always lands in the same split, whatever else the corpus
holds, and each split receives its fraction of documents in expectation.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

from gptjax.errors import UserError


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} "
                        "must be in [0, 1) with val > 0 and their sum < 1")


def document_split(text: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """The split of a whole document: a uniform number in [0, 1) from its text and the seed."""
    h = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=str(seed).encode()).digest()
    u = int.from_bytes(h, "little") / 2**64
    return "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


class TailRouter:
    """Cuts a stream of `total` characters into train [0, a), test [a, b), val [b, total)."""

    def __init__(self, total: int, val_fraction: float, test_fraction: float):
        n_val, n_test = int(total * val_fraction), int(total * test_fraction)
        self.bounds = (("train", total - n_val - n_test), ("test", total - n_val), ("val", total))
        self.position = 0

    def __call__(self, text: str) -> Iterator[tuple[str, str]]:
        """The (split, part of text) pieces of the next `text` of the stream."""
        begin = self.position
        self.position += len(text)
        low = 0
        for name, end in self.bounds:
            a, b = max(begin, low), min(self.position, end)
            if a < b:
                yield name, text[a - begin:b - begin]
            low = end
