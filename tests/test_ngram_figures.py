"""The report's n-gram rows are char-level models on the run's own split, whatever its tokenizer."""

from gptjax.baselines.ngram import ngram_baseline
from gptjax.data.prepare import prepare
from gptjax.train import ngram_figures


def test_a_bpe_run_is_compared_with_char_level_ngrams_on_the_same_text(tiny_config, tmp_path):
    c = tiny_config
    c.data.tokenizer, c.data.vocab_size = "bpe", 300
    bpe = prepare(c.data, c.seed)
    got = ngram_figures.figures(bpe, c, str(tmp_path))
    c.data.tokenizer = "char"
    chars = prepare(c.data, c.seed)
    want = {n: ngram_baseline(chars, n, "val")["bits_per_char"] for n in ngram_figures.ORDERS}
    assert got == want
    assert got[3] != ngram_baseline(bpe, 3, "val")["bits_per_char"]  # not the BPE tokens' n-gram
    assert ngram_figures.figures(bpe, c, str(tmp_path)) == got  # read back from ngram.json


def test_a_char_run_scores_the_characters_the_model_is_scored_on(tiny_config, tmp_path):
    c = tiny_config
    c.eval.max_tokens = 500
    corpus = prepare(c.data, c.seed)
    got = ngram_figures.figures(corpus, c, str(tmp_path))
    assert got[5] == ngram_baseline(corpus, 5, "val", 500)["bits_per_char"]
    assert got[5] != ngram_baseline(corpus, 5, "val")["bits_per_char"]
