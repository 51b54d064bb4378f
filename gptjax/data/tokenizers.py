"""Tokenizers: `char` (vocabulary from the training split) and byte-level `bpe` (HF tokenizers).

Both are saved in `<workdir>/tokenizer/` and reloaded with the checkpoint. Both know the
UTF-8 bytes each id stands for, which gives exact bits per byte / per character for any
tokenizer and lets decoders stream text without cutting a character in half.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterable, Protocol

import numpy as np

from gptjax.errors import UserError

# Reserved ids of a BPE vocabulary: end of text and the chat roles.
SPECIAL_TOKENS = ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
UNK = "<unk>"


class Tokenizer(Protocol):
    kind: str
    vocab_size: int
    special_ids: dict[str, int]

    def encode(self, text: str) -> np.ndarray: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def token_bytes(self, token_id: int) -> bytes: ...
    def save(self, directory: str) -> None: ...


def chars_in(data: bytes) -> int:
    """Characters in UTF-8 bytes: every byte that is not a continuation byte starts one."""
    return sum(1 for b in data if b & 0xC0 != 0x80)


def token_lengths(tok: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, chars) per token id; summed over a stream they give its exact size."""
    raw = [tok.token_bytes(i) for i in range(tok.vocab_size)]
    return (np.array([len(b) for b in raw], np.int32), np.array([chars_in(b) for b in raw], np.int32))


class CharTokenizer:
    """One id per Unicode character of the training split; id 0 is `<unk>`.

    `unknown="replace"` maps characters never seen in training to `<unk>` (decoded as U+FFFD),
    `unknown="error"` refuses them, naming the character.
    """

    kind = "char"

    def __init__(self, chars: str, unknown: str = "replace"):
        if unknown not in ("replace", "error"):
            raise UserError(f"data.unknown={unknown!r} is unknown; use replace or error")
        self.chars = "".join(sorted(set(chars)))
        self.unknown = unknown
        self.vocab_size = len(self.chars) + 1
        self.special_ids: dict[str, int] = {}
        self._codes = np.array([ord(c) for c in self.chars], np.int64)

    @classmethod
    def train(cls, text: str, unknown: str = "replace") -> "CharTokenizer":
        return cls(text, unknown)

    def encode(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int64)
        pos = np.clip(np.searchsorted(self._codes, codes), 0, max(len(self._codes) - 1, 0))
        known = self._codes[pos] == codes if len(self._codes) else np.zeros(len(codes), bool)
        if not known.all():
            if self.unknown == "error":
                bad = chr(int(codes[~known][0]))
                raise UserError(f"character {bad!r} (U+{ord(bad):04X}) is not in the char vocabulary; "
                                "use data.unknown=replace or add it to the training text")
        return np.where(known, pos + 1, 0).astype(np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i - 1] if 0 < i <= len(self.chars) else "\ufffd" for i in map(int, ids))

    def token_bytes(self, token_id: int) -> bytes:
        """UTF-8 of the token; `<unk>` is the U+FFFD it decodes to, so that bits per char count it as the one
        character it replaced (its own bytes are not kept: an unseen character takes 2-4, U+FFFD 3)."""
        return self.decode([token_id]).encode("utf-8")

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "char_vocab.json"), "w", encoding="utf-8") as f:
            json.dump({"chars": self.chars, "unknown": self.unknown}, f, ensure_ascii=False)


def byte_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2's convention):
    printable Latin-1 bytes stand for themselves, the rest are shifted past 255."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {b: chr(b) for b in keep}
    shifted = (b for b in range(256) if b not in table)
    table.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return table


class BPETokenizer:
    """Byte-level BPE trained with HF `tokenizers`; lossless for any UTF-8 text."""

    kind = "bpe"

    def __init__(self, tokenizer):
        # Text that merely spells "<|user|>" stays text; special ids are inserted by id only.
        tokenizer.encode_special_tokens = True
        self.tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.special_ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS
                            if tokenizer.token_to_id(t) is not None}
        unicode_to_byte = {c: b for b, c in byte_to_unicode().items()}
        self._bytes = []
        for i in range(self.vocab_size):
            piece = tokenizer.id_to_token(i)
            special = piece in self.special_ids
            self._bytes.append(b"" if special else bytes(unicode_to_byte[c] for c in piece))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> np.ndarray:
        # Pieces encode in parallel (Rust threads) and give the ids of the whole text.
        chunks = chunk_at_newlines(text, 1 << 16)
        encoded = self.tok.encode_batch(chunks, add_special_tokens=False)
        return np.concatenate([np.asarray(e.ids, np.int32) for e in encoded] or [np.zeros(0, np.int32)])

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self._bytes[int(i)] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.tok.save(os.path.join(directory, "tokenizer.json"))


class HFBPETokenizer(BPETokenizer):
    """A byte-level BPE from a Hugging Face directory, such as GPT-2's: `tokenizer.json`, or
    `vocab.json` + `merges.txt`. It keeps gptjax's policy that text spelling a special token
    stays text. Saved like any BPE (`tokenizer.json`), it reloads as a `BPETokenizer` with the
    same ids."""

    @classmethod
    def from_directory(cls, directory: str) -> "HFBPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

        json_path = os.path.join(directory, "tokenizer.json")
        vocab, merges = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
        if os.path.exists(json_path):
            tok = HFTokenizer.from_file(json_path)
        elif os.path.exists(vocab) and os.path.exists(merges):
            tok = HFTokenizer(models.BPE.from_file(vocab, merges))
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
            tok.decoder = decoders.ByteLevel()
            present = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is not None]
            tok.add_special_tokens(present)
        else:
            raise UserError(f"no tokenizer in {directory}: expected tokenizer.json, or vocab.json and merges.txt")
        if not isinstance(tok.model, models.BPE):
            raise UserError(f"the tokenizer in {directory} is not a BPE; gptjax reads byte-level BPE only")
        try:
            return cls(tok)
        except KeyError as e:
            raise UserError(f"the tokenizer in {directory} is not byte-level: token piece with {e} "
                            "is not in the byte alphabet") from None


def chunk_at_newlines(text: str, size: int) -> list[str]:
    """Pieces of about `size` characters, each cut just before a newline that follows a
    non-space character. The byte-level pre-tokenizer splits at exactly such places, so
    encoding the pieces gives the same ids as encoding the whole text."""
    chunks, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        while end > 0 and text[end - 1].isspace():
            end = text.find("\n", end + 1)
        if end < 0:
            chunks.append(text[start:])
            break
        chunks.append(text[start:end])
        start = end
    return chunks


def build_tokenizer(data_config, train_text: str) -> Tokenizer:
    if data_config.tokenizer == "char":
        return CharTokenizer.train(train_text, data_config.unknown)
    if data_config.tokenizer == "bpe":
        if data_config.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise UserError(f"data.vocab_size={data_config.vocab_size} is too small for byte-level BPE; "
                            f"use at least {256 + len(SPECIAL_TOKENS)}")
        return BPETokenizer.train(chunk_at_newlines(train_text, 1 << 16), data_config.vocab_size)
    raise UserError(f"data.tokenizer={data_config.tokenizer!r} is unknown; use char or bpe")


def load_tokenizer(directory: str) -> Tokenizer:
    char_path = os.path.join(directory, "char_vocab.json")
    bpe_path = os.path.join(directory, "tokenizer.json")
    if os.path.exists(char_path):
        with open(char_path, encoding="utf-8") as f:
            saved = json.load(f)
        return CharTokenizer(saved["chars"], saved["unknown"])
    if os.path.exists(bpe_path):
        from tokenizers import Tokenizer as HFTokenizer

        return BPETokenizer(HFTokenizer.from_file(bpe_path))
    raise UserError(f"no tokenizer in {directory}; train a model there first (python -m gptjax.main)")


def tokenizer_digest(directory: str) -> str:
    """sha256 over a saved tokenizer's files: equal digests cut text into the same tokens."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        h.update(name.encode())
        with open(os.path.join(directory, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def tokenizer_id(directory: str) -> str:
    """A short fingerprint of a saved tokenizer, for file names and tables."""
    return tokenizer_digest(directory)[:16]
