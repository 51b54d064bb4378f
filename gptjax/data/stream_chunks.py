"""A text stream cut into pieces that encode to the ids of the whole, and a seeded sample of them.

Byte-level BPE pre-tokenises at every newline that follows a non-space character, so pieces
cut just before such newlines encode, one by one, to exactly the ids of their concatenation
(`tokenizers.chunk_at_newlines` is the in-memory version of the same rule). A sample that
holds every piece is therefore exactly the in-memory training text.
"""

from __future__ import annotations

import heapq

import numpy as np

PIECE_CHARS = 1 << 16  # as tokenizers.build_tokenizer and BPETokenizer.encode


class StreamChunker:
    """feed() text as it comes and get back the finished pieces; finish() gives the rest.

    Pieces are about min(PIECE_CHARS, max_chars) long; a line longer than `max_chars` is cut
    where it reaches that length (the only place where the ids could differ from encoding the
    whole text), so memory stays bounded."""

    def __init__(self, max_chars: int):
        self.size, self.max_chars = min(PIECE_CHARS, max_chars), max_chars
        self.buffer = ""

    def feed(self, text: str) -> list[str]:
        buf = self.buffer + text
        pieces, start = [], 0
        while True:
            end = buf.find("\n", start + self.size)
            while end > 0 and buf[end - 1].isspace():
                end = buf.find("\n", end + 1)
            if end < 0:
                if len(buf) - start <= self.max_chars:
                    break
                end = start + self.max_chars
            pieces.append(buf[start:end])
            start = end
        self.buffer = buf[start:]
        return pieces

    def finish(self) -> list[str]:
        rest, self.buffer = self.buffer, ""
        return [rest] if rest else []


class PieceSample:
    """A uniform sample of about `max_chars` characters of pieces, seeded, kept in stream order.

    Each piece draws a key from the seeded generator and the pieces with the smallest keys are
    kept (bottom-k sampling), so the sample needs one pass and memory for the sample only."""

    def __init__(self, max_chars: int, seed: int, piece_chars: int):
        self.k = max(1, max_chars // piece_chars + 1)  # every piece but the last has >= piece_chars
        self.rng = np.random.default_rng([seed, 0x5A3])
        self.heap: list[tuple[float, int, str]] = []   # (-key, index, piece): the largest key on top
        self.index = 0

    def add(self, pieces: list[str]) -> None:
        for piece in pieces:
            entry = (-float(self.rng.random()), self.index, piece)
            self.index += 1
            if len(self.heap) < self.k:
                heapq.heappush(self.heap, entry)
            elif entry[0] > self.heap[0][0]:
                heapq.heapreplace(self.heap, entry)

    def text(self) -> str:
        return "".join(piece for _, _, piece in sorted(self.heap, key=lambda e: e[1]))
