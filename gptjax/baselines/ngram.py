"""Interpolated Kneser-Ney n-gram model over token ids: the baseline a GPT has to beat.

Chen & Goodman's interpolated *modified* Kneser-Ney by default: three discounts per order
(D1, D2, D3+) from the count-of-counts of that order (fixed ones where that estimate is
undefined), raw counts at the highest order, continuation counts N1+(. w) at lower orders,
and the unigram level interpolated with the uniform distribution over the vocabulary.
`discount=d` (one number) or one number per order gives plain interpolated Kneser-Ney. A context never seen at some order passes all of
its mass to the next lower order.

Counting is vectorised: the n-grams of length k get dense ids order by order, each being
the pair (id of its (k-1)-token prefix, last token) encoded as `prefix_id * V + token`,
which fits in int64 because there are never more distinct prefixes than tokens. Sorted
unique keys, `np.unique` inverses and `np.searchsorted` do all the counting and look-ups.

A stream is one unpadded sequence: the first tokens are scored with the shorter contexts
they have, through the lower (continuation-count) orders.

Comparison with `nltk.lm.KneserNeyInterpolated` (fitted on the unpadded everygrams of one
stream). With `discount=(0, d, d, ...)` both give the same probabilities for orders >= 2,
except where nltk differs by definition:

* Unigram level: nltk uses N1+(. w) / N1+(. .) with no discount and no uniform floor, so a
  word never seen after another token gets probability 0. Here the unigram level is
  discounted and interpolated with 1/V; a unigram discount of 0 reproduces nltk's.
* Order 1: nltk's unigram stays a continuation distribution even when it is the highest
  order; here order 1 uses raw counts, so order-1 models are not comparable.
* Lower-order weights: nltk's gamma counts the distinct followers of a context in the raw
  counts but divides by the continuation total; here both come from continuation counts.
  They differ only for an n-gram that occurs solely at the very start of the stream (no
  token to its left), where nltk may even divide by zero; "context seen" has the same
  caveat (nltk tests raw counts).
* Padding: nltk's usual pipeline pads each sentence with <s> and </s> symbols; this model
  has no padding symbols.
* `nltk.lm` `logscore` is log base 2; `log_probs` here is natural log.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from gptjax.errors import UserError
from gptjax.eval.scoring import summarize

MAX_ORDER = 8
FALLBACK_DISCOUNTS = np.array([0.5, 1.0, 1.5])
Discount = Union[str, float, Sequence[float]]


def modified_discounts(counts: np.ndarray) -> np.ndarray:
    """(D1, D2, D3+) from the count-of-counts n1..n4 (Chen & Goodman, eq. 26).

    Small or unusual counts can leave the estimate undefined (some n_k is 0) or outside
    (0, k); a discount of 0 would starve the lower orders and give unseen tokens probability
    0, so such an order falls back to (0.5, 1, 1.5), as KenLM's discount fallback does.
    """
    n = np.array([np.count_nonzero(counts == k) for k in range(1, 5)], np.float64)
    if not n.all():
        return FALLBACK_DISCOUNTS.copy()
    y = n[0] / (n[0] + 2 * n[1])
    d = np.array([1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]])
    return d if ((d > 0) & (d < [1, 2, 3])).all() else FALLBACK_DISCOUNTS.copy()


def discount_table(discount: Discount, order: int) -> np.ndarray | None:
    """Per-order (D1, D2, D3+), or None for "modified" (estimated from the counts)."""
    if isinstance(discount, str):
        if discount != "modified":
            raise UserError(f"ngram discount={discount!r} is unknown; use 'modified', a number "
                            "in [0, 1] or one number per order")
        return None
    values = np.atleast_1d(np.asarray(discount, np.float64))
    if values.ndim != 1 or len(values) not in (1, order):
        raise UserError(f"ngram discount has {values.size} values for order {order}; "
                        f"give one number or {order}")
    if ((values < 0) | (values > 1)).any():
        raise UserError(f"ngram discount {values.tolist()} is outside [0, 1]; "
                        "fixed discounts above 1 would not give a distribution")
    return np.repeat(np.broadcast_to(values, (order,))[:, None], 3, axis=1)


class NGramLM:
    """A trained model: per order k, sorted k-gram keys and the interpolation weights."""

    def __init__(self, order: int, vocab_size: int, keys: list[np.ndarray],
                 kept: list[np.ndarray], inv_total: list[np.ndarray], gamma: list[np.ndarray],
                 discounts: np.ndarray):
        self.order = order
        self.vocab_size = vocab_size
        self.discounts = discounts          # (order, 3): D1, D2, D3+ of orders 1..order
        self._keys = keys                   # k >= 2: sorted prefix_id * V + token
        self._kept = kept                   # per k-gram id: count minus its discount
        self._inv_total = inv_total         # per context id: 1 / total count (0 if unseen)
        self._gamma = gamma                 # per context id: mass left to the lower order

    @classmethod
    def train(cls, tokens: np.ndarray, order: int, vocab_size: int,
              discount: Discount = "modified") -> "NGramLM":
        check_order(order)
        t = check_tokens(tokens, vocab_size, "training tokens")
        if not len(t):
            raise UserError("the n-gram training stream is empty; give at least one token")
        fixed = discount_table(discount, order)
        keys, counts, contexts = count_ngrams(t, order, vocab_size)
        discounts = np.zeros((order, 3))
        kept, inv_total, gamma = [], [], []
        for k in range(order):
            c = counts[k]
            discounts[k] = modified_discounts(c) if fixed is None else fixed[k]
            d = np.where(c > 0, discounts[k][np.clip(c, 1, 3) - 1], 0.0)
            n_contexts = 1 if k == 0 else len(counts[k - 1])
            total = np.bincount(contexts[k], weights=c, minlength=n_contexts)
            left = np.bincount(contexts[k], weights=d, minlength=n_contexts)
            seen = total > 0
            inv = np.divide(1.0, total, out=np.zeros_like(total), where=seen)
            kept.append(c - d)
            inv_total.append(inv)
            gamma.append(np.where(seen, left * inv, 1.0))
        return cls(order, vocab_size, keys, kept, inv_total, gamma, discounts)

    def log_probs(self, tokens: np.ndarray) -> np.ndarray:
        """ln P(token_i | up to order-1 preceding tokens of the same stream), per token."""
        s = check_tokens(tokens, self.vocab_size, "scored tokens")
        ids = self._ngram_ids(s)
        contexts = [np.zeros(len(s), np.int64)] + [shift_right(h) for h in ids[:-1]]
        with np.errstate(divide="ignore"):
            return np.log(self._mix(contexts, ids))

    def prob_dist(self, context: Sequence[int]) -> np.ndarray:
        """P(w | context) for every w of the vocabulary (uses the last order-1 tokens)."""
        history = check_tokens(np.asarray(context, np.int64), self.vocab_size, "context")
        history = history[max(len(history) - self.order + 1, 0):] if self.order > 1 else history[:0]
        ends = [h[-1] if len(h) else -1 for h in self._ngram_ids(history)]
        words = np.arange(self.vocab_size, dtype=np.int64)
        contexts = [np.zeros_like(words)] + [np.full_like(words, e) for e in ends[:self.order - 1]]
        ids = [words] + [self._lookup(k, contexts[k], words) for k in range(1, self.order)]
        return self._mix(contexts, ids)

    def score(self, tokens: np.ndarray, token_bytes: np.ndarray, token_chars: np.ndarray, context: int = 0) -> dict:
        """Loss / perplexity / bits per token, byte and char of a stream, as for the GPT; the first
        `context` tokens only condition the rest and are not scored."""
        s = check_tokens(tokens, self.vocab_size, "scored tokens")
        targets = s[context:]
        nll = -float(self.log_probs(s)[context:].sum())
        return summarize((nll, len(targets), np.asarray(token_bytes)[targets].sum(),
                          np.asarray(token_chars)[targets].sum()))

    def _ngram_ids(self, s: np.ndarray) -> list[np.ndarray]:
        """Per order k, the id of the k-gram ending at each position (-1: never seen)."""
        ids = [s.astype(np.int64)]
        for k in range(1, self.order):
            ids.append(self._lookup(k, shift_right(ids[-1]), s))
        return ids

    def _lookup(self, k: int, context: np.ndarray, words: np.ndarray) -> np.ndarray:
        """Ids of the (k+1)-grams (context id, word) in the table of order k+1, or -1."""
        keys = self._keys[k]
        query = np.maximum(context, 0) * self.vocab_size + words
        pos = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
        found = (context >= 0) & (keys[pos] == query) if len(keys) else np.zeros(len(query), bool)
        return np.where(found, pos, -1)

    def _mix(self, contexts: list[np.ndarray], ids: list[np.ndarray]) -> np.ndarray:
        """Interpolate from the uniform distribution up through every order."""
        p = np.full(len(ids[0]), 1.0 / self.vocab_size)
        for k in range(self.order):
            ctx, gram = contexts[k], ids[k]
            active = ctx >= 0
            c = np.maximum(ctx, 0)
            kept = np.where(gram >= 0, self._kept[k][np.maximum(gram, 0)], 0.0)
            p = np.where(active, kept * self._inv_total[k][c] + self._gamma[k][c] * p, p)
        return p


def count_ngrams(t: np.ndarray, order: int, vocab_size: int):
    """Per order k (index k-1): sorted k-gram keys, the count KN uses, each k-gram's context.

    Order 1 ids are the tokens themselves (one shared empty context, id 0); order k ids are
    ranks of `prefix_id * V + token`. The highest order keeps raw counts; each lower order
    counts the distinct tokens seen to the left of it (continuation counts).
    """
    keys = [np.zeros(0, np.int64)]
    contexts = [np.zeros(vocab_size, np.int64)]
    continuation = []
    prev, n_prev = t, vocab_size
    for k in range(2, order + 1):
        if len(prev) > 1:
            uniq, ids = np.unique(prev[:-1] * vocab_size + t[k - 1:], return_inverse=True)
        else:
            uniq, ids = np.zeros(0, np.int64), np.zeros(0, np.int64)
        suffix = np.zeros(len(uniq), np.int64)
        suffix[ids] = prev[1:]
        continuation.append(np.bincount(suffix, minlength=n_prev))
        keys.append(uniq)
        contexts.append(uniq // vocab_size)
        prev, n_prev = ids, len(uniq)
    return keys, continuation + [np.bincount(prev, minlength=n_prev)], contexts


def shift_right(ids: np.ndarray) -> np.ndarray:
    """ids[i-1] at position i, -1 at position 0: the context ending just before each token."""
    out = np.empty_like(ids)
    out[:1] = -1
    out[1:] = ids[:-1]
    return out


def check_order(order: int) -> None:
    if not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
        raise UserError(f"ngram order={order!r} is out of range; use an integer from 1 to {MAX_ORDER}")


def check_tokens(tokens, vocab_size: int, what: str) -> np.ndarray:
    t = np.asarray(tokens)
    if t.ndim != 1 or (t.size and not np.issubdtype(t.dtype, np.integer)):
        raise UserError(f"{what} must be a 1-D array of integer token ids, got shape {t.shape} "
                        f"dtype {t.dtype}")
    t = t.astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= vocab_size):
        bad = int(t[(t < 0) | (t >= vocab_size)][0])
        raise UserError(f"{what} contain id {bad}, outside the vocabulary 0..{vocab_size - 1}; "
                        "train and score with the same tokenizer")
    return t


def ngram_baseline(corpus, order: int, split: str = "val", max_tokens: int = 0,
                   discount: Discount = "modified") -> dict:
    """Train on the corpus's train split and score the targets a neural model scores on another:
    every token of the split (or of its first max_tokens) but the first."""
    if split not in corpus.tokens:
        raise UserError(f"split {split!r} is not in the corpus; use one of {sorted(corpus.tokens)}")
    lm = NGramLM.train(np.asarray(corpus.tokens["train"]), order, corpus.tokenizer.vocab_size, discount)
    return lm.score(np.asarray(corpus.tokens[split][:max_tokens or None]), corpus.token_bytes, corpus.token_chars,
                    context=1)
