"""The n-gram orders 3, 5 and 7 on a run's own validation text, for report.md: a model is only
worth its compute once it beats counting. Counted once per workdir (ngram.json), so a rerun
or a resumed run reads them back."""

from __future__ import annotations

import json
import os

from gptjax.baselines.ngram import ngram_baseline
from gptjax.workdir import write_json

ORDERS = (3, 5, 7)
FILE = "ngram.json"
# Counting is linear in the train split: past this many tokens (sharded corpora) it is left to
# `python -m gptjax.evaluate --ngram N`, so that a report never waits minutes for its baselines.
MAX_TRAIN_TOKENS = 20_000_000


def figures(corpus, config, workdir: str) -> dict[int, float]:
    """order -> validation bits per char over the tokens the model is scored on (eval.max_tokens,
    else the whole split); empty for corpora without plain token streams (conversations) and
    for train splits above MAX_TRAIN_TOKENS."""
    tokens = getattr(corpus, "tokens", None)
    if not isinstance(tokens, dict) or tokens.get("val") is None or tokens["val"].size < 2:
        return {}
    if tokens["train"].size > MAX_TRAIN_TOKENS:
        return {}
    key = {"corpus": os.path.basename(os.path.normpath(corpus.cache_dir)), "split": "val",
           "max_tokens": int(config.eval.max_tokens)}
    path = os.path.join(workdir, FILE)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("key") == key:
            return {int(k): v for k, v in saved["bits_per_char"].items()}
    bpc = {order: ngram_baseline(corpus, order, "val", config.eval.max_tokens)["bits_per_char"] for order in ORDERS}
    write_json(path, {"key": key, "bits_per_char": bpc})
    return bpc
