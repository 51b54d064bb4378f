"""The char-level n-gram orders 3, 5 and 7 on a run's own validation text, for report.md: a
model is only worth its compute once it beats counting. Character-level Kneser-Ney models on
the same cleaned text and split, so a run with any tokenizer compares on bits per char; counted
once per workdir (ngram.json), so a rerun or a resumed run reads them back."""

from __future__ import annotations

import json
import os

import numpy as np

from gptjax.baselines.ngram import ngram_baseline
from gptjax.data.prepare import prepare
from gptjax.workdir import write_json

ORDERS = (3, 5, 7)
FILE = "ngram.json"
# Counting is linear in the train split: past this many tokens (sharded corpora) it is left to
# `python -m gptjax.evaluate --ngram N`, so that a report never waits minutes for its baselines.
MAX_TRAIN_TOKENS = 20_000_000


def char_ngram_bpc(data_config, seed: int, orders, max_chars: int = 0) -> dict[int, float]:
    """order -> validation bits per char of a char-level n-gram on the text `data_config` and
    `seed` split, over the first `max_chars` characters of the split (0: all of it)."""
    char_data = data_config.copy_and_resolve_references()
    char_data.tokenizer = "char"
    corpus = prepare(char_data, seed)
    return {order: ngram_baseline(corpus, order, "val", max_chars)["bits_per_char"] for order in orders}


def is_char_level(corpus) -> bool:
    """Whether every token of the corpus's tokenizer stands for one character."""
    return bool(np.all(np.asarray(corpus.token_chars) <= 1))


def figures(corpus, config, workdir: str) -> dict[int, float]:
    """order -> validation bits per char over the characters the model is scored on (those of
    the first eval.max_tokens tokens, else the whole split); empty for corpora without plain
    token streams (conversations), for prepared shards of another tokenizer (their text is not
    kept) and for train splits above MAX_TRAIN_TOKENS."""
    tokens = getattr(corpus, "tokens", None)
    if not isinstance(tokens, dict) or tokens.get("val") is None or tokens["val"].size < 2:
        return {}
    if tokens["train"].size > MAX_TRAIN_TOKENS:
        return {}
    scored = np.asarray(tokens["val"][:config.eval.max_tokens or None])
    max_chars = int(np.asarray(corpus.token_chars)[scored].sum()) if config.eval.max_tokens else 0
    key = {"corpus": os.path.basename(os.path.normpath(corpus.cache_dir)), "split": "val",
           "level": "char", "max_chars": max_chars}
    path = os.path.join(workdir, FILE)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("key") == key:
            return {int(k): v for k, v in saved["bits_per_char"].items()}
    if not is_char_level(corpus):
        if config.data.source == "prepared":
            return {}
        bpc = char_ngram_bpc(config.data, config.seed, ORDERS, max_chars)
    else:  # the run's own tokens are characters already
        bpc = {order: ngram_baseline(corpus, order, "val", max_chars)["bits_per_char"] for order in ORDERS}
    write_json(path, {"key": key, "bits_per_char": bpc})
    return bpc
