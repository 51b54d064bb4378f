"""Train / validation / test splits, deterministic from the seed.

`tail`: the documents are concatenated and cut into contiguous pieces: train first, then
test, then validation, so that validation is always the last `val_fraction` of the text
(nanoGPT's Shakespeare split when test_fraction is 0).
`documents`: whole documents (whole plays) are shuffled with the seed and dealt to the
splits until each holds its share of characters.
"""

from __future__ import annotations

import numpy as np

from gptjax.data.sources import Document
from gptjax.errors import UserError

SPLITS = ("train", "val", "test")


def split_text(docs: list[Document], mode: str, val_fraction: float, test_fraction: float,
               seed: int) -> dict[str, str]:
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} "
                        "must be in [0, 1) with val > 0 and their sum < 1")
    if mode == "tail":
        text = "".join(d.text for d in docs)
        n = len(text)
        n_val, n_test = int(n * val_fraction), int(n * test_fraction)
        n_train = n - n_val - n_test
        return {"train": text[:n_train], "test": text[n_train:n_train + n_test], "val": text[n_train + n_test:]}
    if mode == "documents":
        if len(docs) < 2 + (test_fraction > 0):
            raise UserError(f"data.split=documents needs at least {2 + (test_fraction > 0)} documents, "
                            f"got {len(docs)}; use data.split=tail")
        dealt = document_splits([len(d.text) for d in docs], val_fraction, test_fraction, seed)
        return {s: "".join(docs[i].text for i, name in dealt if name == s) for s in SPLITS}
    raise UserError(f"data.split={mode!r} is unknown; use tail or documents")


def document_splits(sizes: list[int], val_fraction: float, test_fraction: float,
                    seed: int) -> list[tuple[int, str]]:
    """(document index, split) in dealing order under data.split=documents: the documents (of
    `sizes` characters) shuffled with the seed and dealt to val, then test, until each holds its
    share; train is never empty. Each split's text is its documents in this order."""
    order = np.random.default_rng(seed).permutation(len(sizes))
    targets = {"val": val_fraction * sum(sizes), "test": test_fraction * sum(sizes)}
    filled = dict.fromkeys(SPLITS, 0)
    dealt, n_train = [], 0
    for i in order:
        name = next((s for s in ("val", "test") if filled[s] < targets[s]), "train")
        if name != "train" and not n_train and i == order[-1]:
            name = "train"  # never leave train empty
        dealt.append((int(i), name))
        filled[name] += sizes[i]
        n_train += name == "train"
    return dealt
