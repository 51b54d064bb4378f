"""Token ids to text as they arrive: whole characters only, and nothing past a stop string.

A byte-level BPE token can hold half of a character (a Chinese character or an emoji is
3-4 bytes, often split over tokens), so the bytes go through an incremental UTF-8 decoder
that holds an unfinished character back. Text that could still grow into a stop string is
held back too, so a stream never shows the start of a stop string it later cuts.
"""

from __future__ import annotations

import codecs

from gptjax.data.tokenizers import Tokenizer


class IncrementalText:
    """Feed ids with `push`; each call returns the text that is now certain."""

    def __init__(self, tokenizer: Tokenizer, stop_strings: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop_strings = stop_strings
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""
        self.text = ""
        self.stopped = False

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self.pending += self.decoder.decode(self.tokenizer.token_bytes(int(token_id)))
        return self.release()

    def finish(self) -> str:
        """The rest of the text at the end of generation (a dangling partial character as U+FFFD)."""
        if self.stopped:
            return ""
        self.pending += self.decoder.decode(b"", final=True)
        out = self.release()
        rest, self.pending = self.pending, ""
        self.text += rest
        return out + rest

    def release(self) -> str:
        cut = min((i for i in (self.pending.find(s) for s in self.stop_strings) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending, self.stopped = self.pending[:cut], "", True
        else:
            held = self.held_back()
            out, self.pending = self.pending[:len(self.pending) - held], self.pending[len(self.pending) - held:]
        self.text += out
        return out

    def held_back(self) -> int:
        """Length of the longest end of `pending` that begins some stop string."""
        for n in range(min(len(self.pending), max((len(s) for s in self.stop_strings), default=1) - 1), 0, -1):
            tail = self.pending[-n:]
            if any(s.startswith(tail) for s in self.stop_strings):
                return n
        return 0
