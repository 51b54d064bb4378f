"""`cleaning.clean`, one document at a time, with exact dedup by 64-bit hashes.

The in-memory cleaner remembers every line and document it has seen as text; a stream of
tens of GB cannot. Here the per-document steps are `cleaning.clean` itself (on a list of
one) and dedup remembers 8-byte BLAKE2b digests in an open-addressing numpy table: about
16 bytes per distinct document (or line, with `dedup_lines`), whatever its length. Two
different texts share a digest with probability ~n^2 / 2^65, negligible below billions.
"""

from __future__ import annotations

import hashlib
import types

import numpy as np

from gptjax.data import cleaning
from gptjax.data.sources import Document


def digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class HashSet:
    """A set of 64-bit hashes in one numpy array (linear probing; 0 marks an empty slot).

    Written here because Python's set spends ~60 bytes on each int it holds and no library
    in the stack offers a compact integer set."""

    def __init__(self, capacity: int = 1 << 16):
        self.table = np.zeros(capacity, np.uint64)
        self.count = 0

    def add(self, h: int) -> bool:
        """Insert h; True if it was not there before."""
        h = h or 1
        if 2 * (self.count + 1) > len(self.table):
            self._grow()
        mask = len(self.table) - 1
        i = h & mask
        while True:
            slot = int(self.table[i])
            if slot == h:
                return False
            if slot == 0:
                self.table[i] = h
                self.count += 1
                return True
            i = (i + 1) & mask

    def _grow(self) -> None:
        old = self.table[self.table != 0]
        self.table = np.zeros(2 * len(self.table), np.uint64)
        self.count = 0
        for h in old.tolist():
            self.add(h)


class StreamCleaner:
    """Call it on each document in source order: the cleaned document, or None if dropped.
    `stats` then holds the same counts `cleaning.clean` reports for the whole corpus."""

    def __init__(self, clean_config):
        settings = clean_config.to_dict() if hasattr(clean_config, "to_dict") else dict(clean_config)
        self.cfg = types.SimpleNamespace(**settings)
        # The per-document steps; dedup and the length filter come after them, as in `clean`.
        self.per_document = types.SimpleNamespace(**{**settings, "dedup_lines": False,
                                                     "dedup_documents": False, "min_chars": 0})
        self.lines, self.documents = HashSet(), HashSet()
        self.stats: dict = {}

    def count(self, key: str, n: int) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def __call__(self, doc: Document) -> Document | None:
        (doc,), stats = cleaning.clean([doc], self.per_document)
        for key in ("documents_in", "chars_in", "nfc_chars_removed", "control_chars_chars_removed",
                    "whitespace_chars_removed"):
            if key in stats:
                self.count(key, stats[key])
        if self.cfg.dedup_lines:
            kept = [line for line in doc.text.split("\n") if not line.strip() or self.lines.add(digest(line))]
            text = "\n".join(kept)
            self.count("dedup_lines_chars_removed", len(doc.text) - len(text))
            doc = Document(doc.name, text)
        keep = True
        if self.cfg.dedup_documents:
            keep = self.documents.add(digest(doc.text))
            self.count("dedup_documents_removed", int(not keep))
        if keep and len(doc.text.strip()) < self.cfg.min_chars:
            keep = False
            self.count("min_chars_documents_removed", 1)
        self.count("min_chars_documents_removed", 0)
        self.count("documents_out", int(keep))
        self.count("chars_out", len(doc.text) if keep else 0)
        return doc if keep else None
