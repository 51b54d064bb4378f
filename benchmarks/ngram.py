"""Speed and quality of the Kneser-Ney baseline on the plays (character level).

    python -m benchmarks.ngram

Times order-5 training on the train split plus scoring the whole validation split (target:
20 s on 2 cores), prints validation bits per character for orders 3, 5 and 7, and compares
speed with `nltk.lm.KneserNeyInterpolated` on a 200k-character slice. nltk takes about
10 ms per scored token, so it scores only the first 2k tokens of the scored slice and its
time for the rest is extrapolated per token.
"""

from __future__ import annotations

import time

import numpy as np

from configs.base import get_config
from gptjax.baselines.ngram import NGramLM
from gptjax.data.prepare import prepare

ORDERS = (3, 5, 7)
TIMED_ORDER = 5
TARGET_SECONDS = 20.0
NLTK_TRAIN, NLTK_SCORE, NLTK_SCORED_BY_NLTK = 200_000, 20_000, 2_000
NLTK_DISCOUNT = 0.75


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def bits_per_char(corpus, order: int) -> tuple[float, float]:
    """Validation bits per char of an order-`order` model and the seconds to train + score."""
    train, val = np.asarray(corpus.tokens["train"]), np.asarray(corpus.tokens["val"])

    def run():
        lm = NGramLM.train(train, order, corpus.tokenizer.vocab_size)
        return lm.score(val, corpus.token_bytes, corpus.token_chars)

    result, seconds = timed(run)
    return result["bits_per_char"], seconds


def ours_on_slice(train: np.ndarray, scored: np.ndarray, vocab_size: int) -> tuple[np.ndarray, float]:
    """Probabilities of our model with nltk's discount scheme, and seconds to train + score."""
    def run():
        lm = NGramLM.train(train, TIMED_ORDER, vocab_size, [0.0] + [NLTK_DISCOUNT] * (TIMED_ORDER - 1))
        return np.exp(lm.log_probs(scored))

    return timed(run)


def nltk_on_slice(train: np.ndarray, scored: np.ndarray) -> tuple[np.ndarray, float, float]:
    """nltk's probabilities of the first scored tokens, its fit seconds and seconds per token."""
    from nltk.lm import KneserNeyInterpolated
    from nltk.util import everygrams

    words = [str(t) for t in train]
    lm = KneserNeyInterpolated(TIMED_ORDER, discount=NLTK_DISCOUNT)
    _, fit_seconds = timed(lm.fit, [list(everygrams(words, max_len=TIMED_ORDER))], words)
    stream = [str(t) for t in scored[:NLTK_SCORED_BY_NLTK]]

    def run():
        return np.array([lm.score(stream[i], tuple(stream[max(0, i - TIMED_ORDER + 1):i]))
                         for i in range(len(stream))])

    probs, score_seconds = timed(run)
    return probs, fit_seconds, score_seconds / len(stream)


def compare_with_nltk(corpus) -> None:
    train = np.asarray(corpus.tokens["train"][:NLTK_TRAIN]).astype(np.int64)
    scored = np.asarray(corpus.tokens["val"][:NLTK_SCORE]).astype(np.int64)
    ours, ours_seconds = ours_on_slice(train, scored, corpus.tokenizer.vocab_size)
    theirs, fit_seconds, per_token = nltk_on_slice(train, scored)
    nltk_seconds = fit_seconds + per_token * len(scored)
    gap = float(np.abs(ours[:len(theirs)] - theirs).max())
    print(f"nltk comparison, order {TIMED_ORDER}, discount {NLTK_DISCOUNT}: train {len(train)} chars, "
          f"score {len(scored)} val chars")
    print(f"  ours: {ours_seconds:.3f} s train + score")
    print(f"  nltk: {fit_seconds:.1f} s fit + {per_token * 1e3:.2f} ms/token x {len(scored)} tokens "
          f"= {nltk_seconds:.1f} s (scoring measured on the first {len(theirs)} tokens, "
          "extrapolated per token)")
    print(f"  speed ratio nltk / ours: {nltk_seconds / ours_seconds:.0f}x; "
          f"max |p_ours - p_nltk| on the nltk-scored tokens: {gap:.1e}")


def main() -> None:
    corpus = prepare(get_config().data, 0)
    print(f"plays, char level: train {len(corpus.tokens['train'])} tokens, "
          f"val {len(corpus.tokens['val'])} tokens, vocabulary {corpus.tokenizer.vocab_size}")
    for order in ORDERS:
        bpc, seconds = bits_per_char(corpus, order)
        target = f" (target <= {TARGET_SECONDS:.0f} s)" if order == TIMED_ORDER else ""
        print(f"order {order}: val {bpc:.4f} bits/char, train + score {seconds:.2f} s{target}")
    compare_with_nltk(corpus)


if __name__ == "__main__":
    main()
