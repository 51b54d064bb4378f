import numpy as np
import pytest

from gptjax.data import tokenizers
from gptjax.data.tokenizers import BPETokenizer, CharTokenizer, chunk_at_newlines, load_tokenizer
from gptjax.errors import UserError

MIXED = "To be, or not to be:\n  that is the question.\n\n\n你好，世界！ 🙂🎭 café naïve\ttab  \n"


def test_char_round_trip_with_chinese_and_emoji():
    tok = CharTokenizer.train(MIXED)
    ids = tok.encode(MIXED)
    assert ids.min() >= 1 and len(ids) == len(MIXED)
    assert tok.decode(ids) == MIXED


def test_char_unknown_policy():
    tok = CharTokenizer.train("abc")
    assert list(tok.encode("abz")) == [1, 2, 0]
    strict = CharTokenizer.train("abc", unknown="error")
    with pytest.raises(UserError, match="'z'"):
        strict.encode("abz")


def test_bpe_round_trip_is_lossless_for_unseen_text():
    tok = BPETokenizer.train([MIXED * 20], vocab_size=300)
    for text in (MIXED, "日本語のテキスト 👩‍👩‍👧 \n\n  x", "\x00 odd \u200b bytes", ""):
        assert tok.decode(tok.encode(text)) == text


def test_bpe_reserves_special_tokens():
    tok = BPETokenizer.train([MIXED * 20], vocab_size=300)
    assert set(tok.special_ids) == set(tokenizers.SPECIAL_TOKENS)
    assert all(tok.token_bytes(i) == b"" for i in tok.special_ids.values())
    spelled = tok.encode("<|user|> hi")
    assert tok.special_ids["<|user|>"] not in spelled
    assert tok.decode(spelled) == "<|user|> hi"


def test_token_lengths_count_exact_bytes_and_chars():
    for tok in (CharTokenizer.train(MIXED), BPETokenizer.train([MIXED * 20], vocab_size=300)):
        n_bytes, n_chars = tokenizers.token_lengths(tok)
        ids = tok.encode(MIXED)
        assert n_bytes[ids].sum() == len(MIXED.encode("utf-8"))
        assert n_chars[ids].sum() == len(MIXED)


def test_an_unknown_character_counts_as_one_character():
    tok = CharTokenizer.train("abc")
    n_bytes, n_chars = tokenizers.token_lengths(tok)
    ids = tok.encode("abzc")  # z was never seen: <unk>
    assert n_chars[ids].sum() == 4 and n_bytes[ids].sum() == 3 + len("\ufffd".encode("utf-8"))


def test_chunked_bpe_encoding_equals_whole_text_encoding():
    text = ("word  \n  indented\n\n\nnext line\n \n" * 200) + "end"
    tok = BPETokenizer.train([text], vocab_size=300)
    chunks = chunk_at_newlines(text, 50)
    assert len(chunks) > 10 and "".join(chunks) == text
    assert np.array_equal(tok.encode(text), np.asarray(tok.tok.encode(text).ids))


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_and_load(tmp_path, kind):
    tok = CharTokenizer.train(MIXED) if kind == "char" else BPETokenizer.train([MIXED * 20], vocab_size=300)
    tok.save(str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    assert again.kind == kind and np.array_equal(again.encode(MIXED), tok.encode(MIXED))


def test_load_from_empty_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no tokenizer"):
        load_tokenizer(str(tmp_path))
