import collections
import math
import types

import numpy as np
import pytest
from nltk.lm import KneserNeyInterpolated
from nltk.util import everygrams

from gptjax.baselines.ngram import NGramLM, modified_discounts, ngram_baseline
from gptjax.errors import UserError

TEXT = ("the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat by the log. "
        "then the dog ran to the cat and the cat ran to the log.")
CHARS = sorted(set(TEXT))


def ids(text: str) -> np.ndarray:
    return np.array([CHARS.index(c) for c in text], np.int64)


def reference_prob(tokens, order, vocab_size, discounts, word, context):
    """Interpolated KN straight from its definition, with n-gram tuples and Counters."""
    seq = tuple(int(x) for x in tokens)
    raw = collections.Counter(seq[i:i + k] for k in range(1, order + 1) for i in range(len(seq) - k + 1))
    left = collections.Counter(g[1:] for g in raw if len(g) >= 2)

    def prob(w, ctx):
        if ctx is None:
            return 1.0 / vocab_size
        k = len(ctx) + 1
        count = (lambda g: raw[g]) if k == order else (lambda g: left[g])
        counts = [count(ctx + (v,)) for v in range(vocab_size)]
        total = sum(counts)
        lower = prob(w, ctx[1:] if ctx else None)
        if total == 0:
            return lower
        d = [discounts[k - 1][min(c, 3) - 1] if c else 0.0 for c in counts]
        return (counts[w] - d[w]) / total + sum(d) / total * lower

    return prob(word, tuple(context))


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("discount", ["modified", 0.6])
def test_distributions_sum_to_one_for_seen_and_unseen_contexts(order, discount):
    rng = np.random.default_rng(order)
    tokens = rng.integers(0, 6, size=400)
    lm = NGramLM.train(tokens, order, vocab_size=9, discount=discount)
    contexts = [[], [8], [7, 8, 7, 8], list(tokens[:3]), list(tokens[50:54])]
    contexts += [list(rng.integers(0, 9, size=rng.integers(1, 6))) for _ in range(20)]
    for context in contexts:
        dist = lm.prob_dist(context)
        assert dist.shape == (9,)
        assert (dist > 0).all()
        assert abs(dist.sum() - 1.0) < 1e-9


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_matches_nltk_interpolated_kneser_ney_with_a_single_discount(order):
    d = 0.7
    nltk_lm = KneserNeyInterpolated(order, discount=d)
    nltk_lm.fit([list(everygrams(list(TEXT), max_len=order))], vocabulary_text=list(TEXT))
    lm = NGramLM.train(ids(TEXT), order, len(CHARS), discount=[0.0] + [d] * (order - 1))
    scored = "the god ran by a mat. tac"      # seen and unseen contexts
    ours = np.exp(lm.log_probs(ids(scored)))
    theirs = [nltk_lm.score(scored[i], tuple(scored[max(0, i - order + 1):i])) for i in range(len(scored))]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_modified_kneser_ney_matches_its_definition(order):
    tokens = ids(TEXT)
    lm = NGramLM.train(tokens, order, len(CHARS) + 2)
    for context in ([], ids("th"), ids("the c"), ids("g ran"), ids(""), ids(" a.")):
        dist = lm.prob_dist(context)
        short = list(context[max(len(context) - order + 1, 0):]) if order > 1 else []
        for word in range(len(CHARS) + 2):
            expected = reference_prob(tokens, order, len(CHARS) + 2, lm.discounts, word, short)
            assert abs(dist[word] - expected) < 1e-12


def test_log_probs_use_the_preceding_tokens_of_the_stream():
    tokens = ids(TEXT)
    lm = NGramLM.train(tokens, 4, len(CHARS))
    stream = ids("the cat ran on the dog.")
    expected = [math.log(lm.prob_dist(stream[max(0, i - 3):i])[stream[i]]) for i in range(len(stream))]
    np.testing.assert_allclose(lm.log_probs(stream), expected, rtol=0, atol=1e-12)


def test_modified_discounts_follow_chen_goodman():
    counts = np.array([1, 1, 1, 1, 2, 2, 3, 4, 7, 0])   # n1=4, n2=2, n3=1, n4=1 -> Y=0.5
    np.testing.assert_allclose(modified_discounts(counts), [0.5, 1.25, 1.0])


def test_modified_discounts_fall_back_when_the_estimate_is_undefined():
    no_singletons = np.array([2, 2, 3, 4, 6, 6])
    np.testing.assert_allclose(modified_discounts(no_singletons), [0.5, 1.0, 1.5])


def test_longer_contexts_predict_a_repeating_pattern_better():
    tokens = np.tile(np.array([0, 1, 2, 3, 2, 1]), 200)
    losses = [NGramLM.train(tokens, n, 4).score(tokens, np.ones(4), np.ones(4))["loss"] for n in (1, 2, 4)]
    assert losses[0] > losses[1] > losses[2]
    assert losses[2] < 0.05


def test_score_reports_the_summarize_metrics_per_byte_and_char():
    tokens = ids(TEXT)
    lm = NGramLM.train(tokens, 3, len(CHARS))
    result = lm.score(tokens, np.full(len(CHARS), 2), np.full(len(CHARS), 4))
    nll = -lm.log_probs(tokens).sum()
    assert result["tokens"] == len(tokens)
    assert result["loss"] == pytest.approx(nll / len(tokens))
    assert result["bits_per_byte"] == pytest.approx(result["bits_per_token"] / 2)
    assert result["bits_per_char"] == pytest.approx(result["bits_per_token"] / 4)


def test_baseline_trains_on_train_and_scores_the_split():
    train, val = ids(TEXT), ids("the dog sat on the cat.")
    corpus = types.SimpleNamespace(tokens={"train": train, "val": val},
                                   tokenizer=types.SimpleNamespace(vocab_size=len(CHARS)),
                                   token_bytes=np.ones(len(CHARS)), token_chars=np.ones(len(CHARS)))
    expected = NGramLM.train(train, 3, len(CHARS)).score(val, np.ones(len(CHARS)), np.ones(len(CHARS)), context=1)
    assert ngram_baseline(corpus, 3) == expected
    with pytest.raises(UserError, match="split 'dev'"):
        ngram_baseline(corpus, 3, split="dev")


@pytest.mark.parametrize("kwargs, message", [
    (dict(order=9), "order=9"),
    (dict(order=0), "order=0"),
    (dict(tokens=np.array([0, 1, 12])), "id 12"),
    (dict(tokens=np.array([], np.int64)), "empty"),
    (dict(discount=1.5), "outside"),
    (dict(discount=[0.1, 0.2]), "2 values"),
    (dict(discount="plain"), "'plain'"),
])
def test_bad_settings_raise_user_errors(kwargs, message):
    args = dict(tokens=np.array([0, 1, 2, 1]), order=3, vocab_size=5) | kwargs
    with pytest.raises(UserError, match=message):
        NGramLM.train(args.pop("tokens"), **args)


def test_scoring_ids_outside_the_vocabulary_is_a_user_error():
    lm = NGramLM.train(np.array([0, 1, 2]), 2, 3)
    with pytest.raises(UserError, match="id 3"):
        lm.log_probs(np.array([0, 3]))
