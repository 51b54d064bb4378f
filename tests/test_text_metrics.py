import pytest
import sacrebleu

from gptjax.errors import UserError
from gptjax.eval.text_metrics import bleu, chrf, distinct_n, repetition_rate


def test_distinct_n_counts_unique_ngrams_over_all_texts():
    assert distinct_n(["a a a a"], 1) == 0.25
    assert distinct_n(["a b", "a b"], 1) == 0.5
    assert distinct_n(["a b", "a b"], 2) == 0.5
    assert distinct_n(["a b", "c d"], 2) == 1.0          # "b c" spans two texts: not an n-gram
    assert distinct_n(["a  b\nc"], 3) == 1.0             # any whitespace separates words
    assert distinct_n(["a"], 2) == 0.0


def test_distinct_n_at_character_level():
    assert distinct_n(["aaa"], 1, unit="char") == pytest.approx(1 / 3)
    assert distinct_n(["abab"], 2, unit="char") == pytest.approx(2 / 3)


def test_repetition_rate_counts_repeats_inside_each_text():
    assert repetition_rate(["a a a a"], n=1) == 0.75
    assert repetition_rate(["a b a b a b"], n=2) == pytest.approx(3 / 5)
    assert repetition_rate(["a b", "a b"], n=2) == 0.0
    loop = " ".join(["to be or not"] * 5)               # 17 4-grams, 4 distinct
    assert repetition_rate([loop, "a fresh sentence with no loops"]) == pytest.approx(13 / 20)


def test_bleu_and_chrf_are_sacrebleus_corpus_scores():
    hyps = ["the cat sat on the mat", "a dog ran in the park today"]
    refs = ["the cat is on the mat", "the dog ran in the park"]
    assert bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert chrf(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert chrf(hyps, refs, word_order=2) == pytest.approx(
        sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)
    assert 0 < bleu(hyps, refs) < 100


def test_identical_texts_score_100_and_disjoint_texts_0():
    assert bleu(["to be or not to be"], ["to be or not to be"]) == pytest.approx(100)
    assert chrf(["to be or not to be"], ["to be or not to be"]) == pytest.approx(100)
    assert chrf(["abc"], ["xyz"]) == 0.0


def test_several_references_per_hypothesis():
    hyps = ["the cat is on the mat"]
    one = bleu(hyps, ["there is a cat on the mat"])
    both = bleu(hyps, [["there is a cat on the mat", "the cat is on the mat"]])
    assert both == pytest.approx(100) and one < both


@pytest.mark.parametrize("call, message", [
    (lambda: bleu(["a", "b"], ["a"]), "2 hypotheses but 1 references"),
    (lambda: chrf([], []), "no hypotheses"),
    (lambda: bleu(["a", "b"], [["a"], ["b", "c"]]), "same number of references"),
    (lambda: distinct_n(["a"], 0), "n=0"),
    (lambda: repetition_rate(["a"], unit="byte"), "unit='byte'"),
])
def test_bad_input_raises_user_errors(call, message):
    with pytest.raises(UserError, match=message):
        call()


def test_blank_outputs_are_degenerate_not_diverse():
    beams = ["   ", "", "\n\t "] * 16 + ["e", "the"]   # blank beams and two stray words
    assert distinct_n(beams, 1) == pytest.approx(2 / 50)
    assert distinct_n(["  ", ""], 1) == 0.0
    assert distinct_n(["  ", ""], 2, unit="char") == 0.0
    assert repetition_rate(["  ", ""]) == 1.0
    assert repetition_rate(beams) == pytest.approx(48 / 48)   # the words are too short for 4-grams
    assert repetition_rate(["a b c d", "   "]) == pytest.approx(1 / 2)
    assert distinct_n(["a b", " "], 1) == pytest.approx(2 / 3)
    assert distinct_n([], 1) == 0.0 and repetition_rate([]) == 0.0
