"""Metrics of generated continuations: overlap with references and diversity.

BLEU and chrF come from sacrebleu (corpus level, its default settings) so the numbers are
comparable with published ones. `distinct_n` and `repetition_rate` need no reference:
a model stuck in a loop shows a low distinct-n and a high repetition rate.

An empty or whitespace-only output is the most degenerate output of all, yet it has no
n-grams; left out, a set of blank beams with one stray word would score distinct 1.0 and
repetition 0.0. So each blank output counts as one n-gram that is never distinct and
always a repeat: a set of only blank outputs has distinct-n 0 and repetition 1. An output
with words but fewer than n of them is too short to judge and counts for nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence, Union

import sacrebleu

from gptjax.errors import UserError

References = Sequence[Union[str, Sequence[str]]]
UNITS = ("word", "char")


def reference_streams(hypotheses: Sequence[str], references: References) -> list[list[str]]:
    """sacrebleu's layout (one list per reference set) from one reference or list per hypothesis."""
    if len(hypotheses) != len(references):
        raise UserError(f"{len(hypotheses)} hypotheses but {len(references)} references; "
                        "give one reference (or one list of references) per hypothesis")
    if not hypotheses:
        raise UserError("no hypotheses to score; give at least one generated text")
    per_item = [[r] if isinstance(r, str) else list(r) for r in references]
    sizes = {len(r) for r in per_item}
    if len(sizes) != 1 or 0 in sizes:
        raise UserError(f"hypotheses have {sorted(sizes)} references each; give every hypothesis "
                        "the same number of references, at least one")
    return [list(stream) for stream in zip(*per_item)]


def bleu(hypotheses: Sequence[str], references: References) -> float:
    """Corpus BLEU (0-100, sacrebleu defaults: 13a tokenisation, exp smoothing)."""
    return float(sacrebleu.corpus_bleu(list(hypotheses), reference_streams(hypotheses, references)).score)


def chrf(hypotheses: Sequence[str], references: References, word_order: int = 0) -> float:
    """Corpus chrF (0-100); `word_order=2` gives chrF++. Robust for short continuations."""
    streams = reference_streams(hypotheses, references)
    return float(sacrebleu.corpus_chrf(list(hypotheses), streams, word_order=word_order).score)


def units(text: str, unit: str) -> list[str]:
    if unit not in UNITS:
        raise UserError(f"unit={unit!r} is unknown; use word (whitespace tokens) or char")
    return text.split() if unit == "word" else list(text)


def ngrams(items: list[str], n: int) -> list[tuple[str, ...]]:
    if n < 1:
        raise UserError(f"n={n} must be at least 1")
    return [tuple(items[i:i + n]) for i in range(len(items) - n + 1)]


def blank(text: str) -> bool:
    """Empty or whitespace only: a degenerate output (see the module docstring)."""
    return not text.strip()


def distinct_n(texts: Sequence[str], n: int, unit: str = "word") -> float:
    """Distinct n-grams / all n-grams over the texts (n-grams never span two texts), each blank
    text counting as one n-gram that is not distinct; 0 if none."""
    grams = [g for text in texts if not blank(text) for g in ngrams(units(text, unit), n)]
    total = len(grams) + sum(blank(t) for t in texts)
    return len(set(grams)) / total if total else 0.0


def repetition_rate(texts: Sequence[str], n: int = 4, unit: str = "word") -> float:
    """Share of n-grams that repeat an n-gram earlier in the same text; catches degenerate loops.

    Repeats across texts do not count (different samples may share phrases); a blank text
    counts as one repeated n-gram; 0 if no n-grams.
    """
    repeated = total = 0
    for text in texts:
        if blank(text):
            repeated, total = repeated + 1, total + 1
            continue
        grams = ngrams(units(text, unit), n)
        repeated += len(grams) - len(Counter(grams))
        total += len(grams)
    return repeated / total if total else 0.0
