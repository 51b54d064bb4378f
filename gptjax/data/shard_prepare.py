"""Prepare once: stream the source -> clean + dedup -> split -> BPE on a sample -> token shards.

`prepare_shards(data_config, seed, out_dir)` reads the configured source one document at a
time and never holds more than `data.max_buffer_chars` characters of text per split, so
memory does not grow with the corpus (the dedup table grows by ~16 bytes a document). Passes
over the source: one to count the corpus when `data.split=tail`, one for the tokenizer's
sample, one to encode; a rerun skips the passes the manifest shows as done, and in the last
one re-encodes only text past the last whole shard.

Encoding uses HF `tokenizers`' `encode_batch` on ~64K-character pieces: it runs the batch on
Rust threads (rayon) over every core with the GIL released, so no text is pickled to worker
processes and one tokenizer serves all cores; the Python side (reading, cleaning, hashing)
runs meanwhile on one core. RAYON_NUM_THREADS caps the threads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterator

from tqdm import tqdm

from gptjax.data import shard_manifest, tokenizers
from gptjax.data.shard_writer import ShardWriter, new_split_state
from gptjax.data.splits import SPLITS
from gptjax.data.stream_chunks import PieceSample, StreamChunker
from gptjax.data.stream_cleaning import StreamCleaner
from gptjax.data.stream_splits import TailRouter, check_fractions, document_split
from gptjax.data.streaming_sources import source_fingerprint, stream_documents
from gptjax.errors import UserError

# Everything in data.* that changes the prepared tokens (not where caches or outputs go, nor how
# training reads them).
SETTING_KEYS = ("source", "plays_markdown", "path", "text_field", "tfds_name", "tfds_split", "tfds_data_dir",
                "clean", "split", "val_fraction", "test_fraction", "tokenizer", "vocab_size", "unknown",
                "tokenizer_sample_chars", "max_buffer_chars", "shard_tokens")


def settings_of(data_config, seed: int) -> dict:
    settings = {k: data_config[k].to_dict() if hasattr(data_config[k], "to_dict") else data_config[k]
                for k in SETTING_KEYS}
    settings["seed"] = seed
    return settings


def prepare_shards(data_config, seed: int, out_dir: str, progress: bool = False) -> dict:
    """Prepare (or finish preparing) `out_dir`; returns its manifest."""
    check_fractions(data_config.val_fraction, data_config.test_fraction)
    if data_config.split not in ("tail", "documents"):
        raise UserError(f"data.split={data_config.split!r} is unknown; use tail or documents")
    if data_config.shard_tokens < 1 or data_config.max_buffer_chars < 1:
        raise UserError("data.shard_tokens and data.max_buffer_chars must be positive")
    out = os.path.expanduser(out_dir)
    manifest = shard_manifest.open_manifest(out, settings_of(data_config, seed), source_fingerprint(data_config))
    if manifest["complete"]:
        return manifest
    for name in os.listdir(out):  # a torn shard, manifest or tokenizer of a killed run
        if name.startswith(".") and (name.endswith(".tmp") or name.startswith(".tmp-")):
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

    def save() -> None:
        shard_manifest.write_manifest(out, manifest)

    if data_config.split == "tail" and manifest.get("total_chars") is None:
        cleaner = StreamCleaner(data_config.clean)
        manifest["total_chars"] = sum(len(d.text) for d in map(cleaner, stream_documents(data_config)) if d)
        if not manifest["total_chars"]:
            raise empty_corpus(data_config)
        save()
    if "tokenizer" not in manifest:
        tok = train_tokenizer(data_config, seed, manifest.get("total_chars"), out)
        manifest["tokenizer"] = {"kind": tok.kind, "vocab_size": tok.vocab_size,
                                 "sha256": tokenizers.tokenizer_digest(os.path.join(out, "tokenizer"))}
        manifest["dtype"] = "uint16" if tok.vocab_size <= 1 << 16 else "uint32"
        save()
    tok = load_checked_tokenizer(out, manifest)

    writers = {s: ShardWriter(out, s, data_config.shard_tokens, manifest["dtype"],
                              manifest["splits"].setdefault(s, new_split_state()), save) for s in SPLITS}
    encoders = {s: SplitEncoder(tok, writers[s], data_config.max_buffer_chars) for s in SPLITS}
    cleaner = StreamCleaner(data_config.clean)
    with tqdm(desc="encode", unit="char", unit_scale=True, disable=not progress) as bar:
        for split, text in split_stream(data_config, seed, cleaner, manifest.get("total_chars")):
            encoders[split].add(text)
            bar.update(len(text))
    for s in SPLITS:
        encoders[s].finish()
        manifest["splits"][s].update(tokens=writers[s].position, chars=encoders[s].chars, bytes=encoders[s].bytes)
    manifest["cleaning"] = cleaner.stats
    manifest["complete"] = True
    save()
    return manifest


def empty_corpus(data_config) -> UserError:
    from gptjax.data.sources import describe

    return UserError(f"nothing is left of the corpus after cleaning ({describe(data_config)}); "
                     "point data.* at text or lower data.clean.min_chars")


def split_stream(data_config, seed: int, cleaner: StreamCleaner, total_chars: int | None
                 ) -> Iterator[tuple[str, str]]:
    """(split, text) in source order: whole documents (documents) or cuts of the stream (tail)."""
    route = TailRouter(total_chars, data_config.val_fraction, data_config.test_fraction) \
        if data_config.split == "tail" else None
    for doc in stream_documents(data_config):
        doc = cleaner(doc)
        if doc is None:
            continue
        if route:
            yield from route(doc.text)
        else:
            yield document_split(doc.text, seed, data_config.val_fraction, data_config.test_fraction), doc.text


def train_tokenizer(data_config, seed: int, total_chars: int | None, out: str) -> tokenizers.Tokenizer:
    """The char vocabulary of the whole training split, or BPE trained on a seeded sample of
    `data.tokenizer_sample_chars` characters of it (all of it when it is smaller)."""
    chars: set[str] = set()
    chunker = StreamChunker(data_config.max_buffer_chars)
    sample = PieceSample(data_config.tokenizer_sample_chars, seed, chunker.size)
    sizes = dict.fromkeys(SPLITS, 0)
    for split, text in split_stream(data_config, seed, StreamCleaner(data_config.clean), total_chars):
        sizes[split] += len(text)
        if split != "train":
            continue
        if data_config.tokenizer == "char":
            chars.update(text)
        else:
            sample.add(chunker.feed(text))
    sample.add(chunker.finish())
    if not sizes["train"] or not sizes["val"]:
        if not any(sizes.values()):
            raise empty_corpus(data_config)
        raise UserError(f"the corpus ({sum(sizes.values())} characters) is too small to give non-empty train "
                        "and val splits; add text")
    tok = tokenizers.build_tokenizer(data_config, "".join(sorted(chars)) if data_config.tokenizer == "char"
                                     else sample.text())
    tmp = tempfile.mkdtemp(dir=out, prefix=".tmp-")
    tok.save(tmp)
    target = os.path.join(out, "tokenizer")
    shutil.rmtree(target, ignore_errors=True)  # a tokenizer the manifest does not name is stale
    os.rename(tmp, target)
    return tok


def load_checked_tokenizer(directory: str, manifest: dict) -> tokenizers.Tokenizer:
    path = os.path.join(directory, "tokenizer")
    if not os.path.isdir(path) or tokenizers.tokenizer_digest(path) != manifest["tokenizer"]["sha256"]:
        raise UserError(f"{path} is missing or differs from the one {directory}/{shard_manifest.MANIFEST} "
                        "records; prepare into a new directory")
    return tokenizers.load_tokenizer(path)


class SplitEncoder:
    """One split's text stream -> pieces -> batches of about max_chars -> ids -> its writer."""

    def __init__(self, tok: tokenizers.Tokenizer, writer: ShardWriter, max_chars: int):
        self.tok, self.writer, self.max_chars = tok, writer, max_chars
        self.skip = writer.resume_chars        # text before this is in shards already
        self.chars = self.bytes = 0            # of the whole split, counted again on a rerun
        self.chunker = StreamChunker(max_chars)
        self.pending: list[str] = []
        self.pending_chars = 0
        self.batch_start = self.skip

    def add(self, text: str) -> None:
        begin = self.chars
        self.chars += len(text)
        self.bytes += len(text.encode("utf-8"))
        if self.chars <= self.skip:
            return
        self.queue(self.chunker.feed(text[max(0, self.skip - begin):]))

    def queue(self, pieces: list[str]) -> None:
        for piece in pieces:
            self.pending.append(piece)
            self.pending_chars += len(piece)
            if self.pending_chars >= self.max_chars:
                self.flush()

    def flush(self) -> None:
        if self.pending:
            self.writer.add(self.tok.encode("".join(self.pending)), self.batch_start)
            self.batch_start += self.pending_chars
            self.pending, self.pending_chars = [], 0

    def finish(self) -> None:
        self.queue(self.chunker.finish())
        self.flush()
        self.writer.close()
