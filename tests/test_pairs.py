import numpy as np
import pytest

from gptjax.data.batches import window_offsets, windows
from gptjax.data.pairs import encode_pairs, lm_split, lm_split_batch, pad_pairs, pair_batch, sequential_pair_batches
from gptjax.errors import UserError


def test_encode_pairs_takes_records_from_any_builder():
    records = [("Speak.", "Speak, speak."), ("Hear me.", "We hear.")]
    pairs = encode_pairs(records, lambda text: [ord(c) for c in text])
    assert [(bytes(s.astype(np.uint8)).decode(), bytes(t.astype(np.uint8)).decode()) for s, t in pairs] == records


def test_pad_pairs_layout():
    b = pad_pairs([(np.array([5, 6, 7, 8]), np.array([9, 10])), (np.array([3]), np.array([4, 5, 6, 7]))],
                  src_len=3, tgt_len=4, bos_id=1, eos_id=2)
    np.testing.assert_array_equal(b.src, [[6, 7, 8], [3, 0, 0]])  # a long source keeps its end
    np.testing.assert_array_equal(b.src_mask, [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(b.tgt_out, [[9, 10, 2, 0], [4, 5, 6, 7]])  # eos, then cut to tgt_len
    np.testing.assert_array_equal(b.tgt_in, [[1, 9, 10, 0], [1, 4, 5, 6]])  # shifted right after bos
    np.testing.assert_array_equal(b.tgt_weights, [[1, 1, 1, 0], [1, 1, 1, 1]])
    assert b.src.dtype == np.int32 and b.tgt_weights.dtype == np.float32


def test_empty_text_is_one_clear_error():
    with pytest.raises(UserError, match="pair 1 has an empty target"):
        pad_pairs([(np.array([1]), np.array([2])), (np.array([1]), np.array([], np.int32))], 2, 2, bos_id=1)


def test_pair_batch_is_a_pure_function_of_seed_and_step():
    pairs = [(np.array([i + 1]), np.array([i + 2, i + 3])) for i in range(20)]
    a, b = pair_batch(pairs, 3, 7, 8, 4, 4, bos_id=1), pair_batch(pairs, 3, 7, 8, 4, 4, bos_id=1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(pair_batch(pairs, 3, 8, 8, 4, 4, bos_id=1).src, a.src)


def test_sequential_batches_score_every_pair_once():
    pairs = [(np.array([i + 1]), np.array([i + 2] * (i % 3 + 1))) for i in range(5)]
    batches = list(sequential_pair_batches(pairs, 2, 2, 4, bos_id=1))
    assert len(batches) == 3 and all(b.src.shape == (2, 2) for b in batches)
    assert sum(b.tgt_weights.sum() for b in batches) == sum(len(t) for _, t in pairs)


def test_lm_split_matches_the_gpt_windows_and_targets():
    tokens = np.arange(1000, dtype=np.int32) % 97
    b = lm_split_batch(tokens, 5, 2, 4, src_len=6, tgt_len=10)
    window = windows(tokens, window_offsets(5, 2, len(tokens), 15, 4), 15)  # a GPT with block_size 15
    np.testing.assert_array_equal(b.src, window[:, :6])
    np.testing.assert_array_equal(b.tgt_out, window[:, 6:])  # the GPT's targets at positions >= 6 ...
    np.testing.assert_array_equal(b.tgt_in, window[:, 5:-1])  # ... from the same inputs
    assert b.src_mask.all() and b.tgt_weights.sum() == 40
    with pytest.raises(UserError):
        lm_split(window, 16)
