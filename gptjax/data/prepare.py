"""Corpus -> clean -> split -> tokenizer -> token cache: everything training reads.

The token streams are encoded once and cached as memory-mapped arrays under
`data.cache_dir/<key>/`, keyed by the cleaned text, the split and the tokenizer settings,
so a second run (or a resumed one) starts in seconds.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time

import numpy as np

from gptjax.data import cleaning, conversations, sources, splits, tokenizers
from gptjax.errors import UserError

CACHE_VERSION = 1
TMP_PREFIX = ".tmp-"
BUILDING = ".building"  # flocked inside a temporary cache directory while a process fills it
ORPHAN_AGE_SECONDS = 60  # a temporary directory without a lock file is an orphan after this
LOCK_GRACE_SECONDS = 2  # between creating the lock file and taking the lock


@dataclasses.dataclass
class Corpus:
    """Token streams of each split, their tokenizer and how much text they hold."""

    tokenizer: tokenizers.Tokenizer
    tokens: dict[str, np.ndarray]      # split -> 1-D ids (memory-mapped)
    chars: dict[str, int]              # split -> characters of text
    token_bytes: np.ndarray            # id -> UTF-8 bytes it stands for
    token_chars: np.ndarray            # id -> characters it completes
    cleaning: dict
    cache_dir: str


def prepare(data_config, seed: int, block_size: int = 0,
            tokenizer: tokenizers.Tokenizer | None = None) -> Corpus | conversations.ConversationCorpus:
    """The token streams of each split; for data.source=conversations, the packed windows of
    block_size + 1 tokens (see data/conversations.py), which need the model's block_size;
    data.source=dialogues makes those conversations from the plays (data/dialogues.py). Conversations
    are rendered with `tokenizer` when given (a base model's, with the role tokens: see
    data/role_tokens.py), else with one built from the training conversations. For text, `tokenizer` encodes
    instead of one trained on the train split (a model's own, when fine-tuning), and the
    cache is then keyed by its fingerprint."""
    if data_config.source == "conversations":
        return conversations.prepare_conversations(data_config, seed, block_size, tokenizer)
    if data_config.source == "dialogues":  # the plays' persona conversations (data/dialogues.py)
        from gptjax.data.dialogues import prepare_dialogues

        return prepare_dialogues(data_config, seed, block_size, tokenizer)
    if data_config.source == "prepared":  # sharded by `python -m gptjax.prepare`, memory-mapped
        from gptjax.data.shard_reader import load_prepared

        return load_prepared(data_config.path)
    docs = sources.load_documents(data_config)
    docs, clean_stats = cleaning.clean(docs, data_config.clean)
    if not docs:
        raise UserError(f"nothing is left of the corpus after cleaning ({sources.describe(data_config)}); "
                        "lower data.clean.min_chars")
    key = cache_key(docs, data_config, seed, tokenizer)
    directory = os.path.join(os.path.expanduser(data_config.cache_dir), key)
    remove_orphans(os.path.dirname(directory))
    if not os.path.exists(os.path.join(directory, "meta.json")):
        build_cache(docs, data_config, seed, clean_stats, directory, tokenizer)
    return load_cache(directory)


def fingerprint(tok: tokenizers.Tokenizer) -> str:
    """The fingerprint of a tokenizer as saved: equal fingerprints cut text the same way."""
    with tempfile.TemporaryDirectory() as d:
        tok.save(d)
        return tokenizers.tokenizer_id(d)


def cache_key(docs: list[sources.Document], data_config, seed: int,
              tokenizer: tokenizers.Tokenizer | None = None) -> str:
    h = hashlib.sha256()
    settings = {k: data_config[k] for k in ("split", "val_fraction", "test_fraction", "tokenizer",
                                            "vocab_size", "unknown")}
    if tokenizer is not None:
        settings.update(tokenizer=f"given:{fingerprint(tokenizer)}", vocab_size=None, unknown=None)
    settings.update(version=CACHE_VERSION, seed=seed if data_config.split == "documents" else None)
    if data_config.get("train_chars", 0):  # only when set, so the caches of full splits keep their keys
        settings["train_chars"] = data_config.train_chars
    h.update(json.dumps(settings, sort_keys=True).encode())
    for d in docs:
        h.update(len(d.text).to_bytes(8, "little"))
        h.update(d.text.encode("utf-8"))
    return h.hexdigest()[:20]


def build_cache(docs, data_config, seed: int, clean_stats: dict, directory: str,
                tokenizer: tokenizers.Tokenizer | None = None) -> None:
    texts = splits.split_text(docs, data_config.split, data_config.val_fraction,
                              data_config.test_fraction, seed)
    if not texts["train"] or not texts["val"]:
        raise UserError(f"the corpus ({len(''.join(texts.values()))} characters) is too small to give "
                        "non-empty train and val splits; add text")
    texts["train"] = cut_train(texts["train"], data_config.get("train_chars", 0))
    tok = tokenizer or tokenizers.build_tokenizer(data_config, texts["train"])
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=TMP_PREFIX)
    building = open(os.path.join(tmp, BUILDING), "w")
    fcntl.flock(building, fcntl.LOCK_EX)  # released when this process finishes or dies
    dtype = np.uint16 if tok.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    meta = {"dtype": np.dtype(dtype).name, "chars": {}, "tokens": {}, "cleaning": clean_stats}
    for name, text in texts.items():
        ids = tok.encode(text).astype(dtype)
        ids.tofile(os.path.join(tmp, f"{name}.bin"))
        meta["chars"][name], meta["tokens"][name] = len(text), int(len(ids))
    tok.save(os.path.join(tmp, "tokenizer"))
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    os.remove(os.path.join(tmp, BUILDING))
    try:
        os.rename(tmp, directory)
    except OSError:  # another process built the same cache first: same content, keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    building.close()


def remove_orphans(parent: str) -> None:
    """Delete the temporary directories of preparations that were killed; one being built now is
    left alone."""
    if not os.path.isdir(parent):
        return
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if name.startswith(TMP_PREFIX) and os.path.isdir(path) and not being_built(path):
            shutil.rmtree(path, ignore_errors=True)


def being_built(path: str) -> bool:
    """Whether a process may still be filling a temporary directory: its lock is held, or was made a
    moment ago and is about to be taken, or (with no lock file) the directory changed in the last
    minute (a builder between making the directory and its lock)."""
    lock = os.path.join(path, BUILDING)
    try:
        with open(lock) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return time.time() - os.path.getmtime(lock) < LOCK_GRACE_SECONDS
    except BlockingIOError:
        return True
    except FileNotFoundError:
        try:
            return time.time() - os.path.getmtime(path) < ORPHAN_AGE_SECONDS
        except FileNotFoundError:  # renamed into place just now
            return True


def cut_train(text: str, train_chars: int) -> str:
    """The first `train_chars` characters of the train split (0: all of it), for studies of how
    much text a model needs; the tokenizer is then fitted on the cut text alone, as a run that
    only had that much text would be. Validation and test are never cut."""
    return text[:train_chars] if train_chars else text


def load_cache(directory: str) -> Corpus:
    with open(os.path.join(directory, "meta.json")) as f:
        meta = json.load(f)
    tok = tokenizers.load_tokenizer(os.path.join(directory, "tokenizer"))
    tokens = {}
    for name, n in meta["tokens"].items():
        path = os.path.join(directory, f"{name}.bin")
        tokens[name] = np.memmap(path, dtype=meta["dtype"], mode="r", shape=(n,)) if n else np.zeros(0, meta["dtype"])
    token_bytes, token_chars = tokenizers.token_lengths(tok)
    return Corpus(tok, tokens, meta["chars"], token_bytes, token_chars, meta["cleaning"], directory)
