"""(source, target) pairs for the encoder-decoder, as padded arrays, a pure function of (seed, step).

Two sources of pairs:
- records given as (source_text, target_text), e.g. a speech and the reply to it from a
  dialogue builder: `encode_pairs` tokenizes them, `pair_batch` draws rows and pads them;
- a plain token stream: `lm_split_batch` cuts random windows into a prefix (the source) and its
  continuation (the target), the same windows `gptjax.data.batches` draws for the GPT, so both
  models see the same training tokens and are scored on the same target tokens.

The plays' pairs (`reply_pairs`, data.pairs=dialogues) end each reply with a blank line, the
way a speech ends in the plays' markdown (a speech never holds one), so a model learns where a
reply stops and the end is scored as the two characters it is; the decoder starts from the
newline token (`start_id`), as a speech starts on the line after its speaker's name.

As in `gptjax.data.batches`, a batch depends on (seed, step) only, so a resumed run sees the
batches an uninterrupted one would. Arrays are host-side numpy; the caller places them on the mesh.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from gptjax.data.batches import window_offsets, windows
from gptjax.errors import UserError

TokenPair = tuple[np.ndarray, np.ndarray]


class PairBatch(NamedTuple):
    """src, src_mask (B, S); tgt_in, tgt_out, tgt_weights (B, T). Masks are True / 1 on real tokens.

    The decoder reads tgt_in and predicts tgt_out; tgt_in is tgt_out shifted right by one, after a
    start token. Padding is on the right of both sides, with weight 0.
    """

    src: np.ndarray
    src_mask: np.ndarray
    tgt_in: np.ndarray
    tgt_out: np.ndarray
    tgt_weights: np.ndarray


def encode_pairs(records: Iterable[tuple[str, str]], encode: Callable[[str], Sequence[int]]) -> list[TokenPair]:
    """Token ids of (source_text, target_text) records, e.g. a dialogue builder's speech -> reply pairs."""
    return [(np.asarray(encode(s), np.int32), np.asarray(encode(t), np.int32)) for s, t in records]


REPLY_END = "\n\n"


def reply_pairs(records: Iterable[tuple[str, str]], tokenizer) -> list[TokenPair]:
    """Token ids of (speech, reply) records, each reply followed by `REPLY_END`."""
    return encode_pairs(((s, t + REPLY_END) for s, t in records), tokenizer.encode)


def start_id(tokenizer) -> int:
    """The decoder's start token for `reply_pairs`: the tokenizer's one token for a newline."""
    ids = tokenizer.encode("\n")
    if len(ids) != 1 or tokenizer.decode(ids) != "\n":
        raise UserError("data.pairs=dialogues starts each reply from the newline token, which this tokenizer "
                        "lacks; train it on text with line breaks (data.source=plays)")
    return int(ids[0])


def pad_pairs(pairs: Sequence[TokenPair], src_len: int, tgt_len: int, *, bos_id: int, eos_id: int | None = None,
              pad_id: int = 0) -> PairBatch:
    """Pad (or cut) pairs to fixed lengths.

    A long source keeps its last `src_len` tokens (the end of a speech is what a reply answers);
    a long target keeps its first `tgt_len`. With `eos_id`, targets end with it, so a model learns
    where a reply stops.
    """
    B = len(pairs)
    src = np.full((B, src_len), pad_id, np.int32)
    src_mask = np.zeros((B, src_len), bool)
    tgt_in = np.full((B, tgt_len), pad_id, np.int32)
    tgt_out = np.full((B, tgt_len), pad_id, np.int32)
    weights = np.zeros((B, tgt_len), np.float32)
    for r, (s, t) in enumerate(pairs):
        if not len(s) or not len(t):
            raise UserError(f"pair {r} has an empty {'source' if not len(s) else 'target'}; "
                            "drop empty texts before making pairs")
        s = np.asarray(s, np.int32)[-src_len:]
        t = np.asarray(t, np.int32) if eos_id is None else np.append(np.asarray(t, np.int32), eos_id)
        t = t[:tgt_len]
        src[r, :len(s)], src_mask[r, :len(s)] = s, True
        tgt_out[r, :len(t)], weights[r, :len(t)] = t, 1.0
        tgt_in[r, 0], tgt_in[r, 1:len(t)] = bos_id, t[:-1]
    return PairBatch(src, src_mask, tgt_in, tgt_out, weights)


def pair_batch(pairs: Sequence[TokenPair], seed: int, step: int, batch_size: int, src_len: int, tgt_len: int, *,
               bos_id: int, eos_id: int | None = None, pad_id: int = 0) -> PairBatch:
    """`batch_size` pairs drawn with replacement for one train step, a pure function of (seed, step)."""
    if not pairs:
        raise UserError("there are no (source, target) pairs to train on; check the dialogue records")
    rows = np.random.default_rng([seed, step]).integers(0, len(pairs), size=batch_size)
    return pad_pairs([pairs[i] for i in rows], src_len, tgt_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)


def sequential_pair_batches(pairs: Sequence[TokenPair], batch_size: int, src_len: int, tgt_len: int, *,
                            bos_id: int, eos_id: int | None = None, pad_id: int = 0) -> Iterator[PairBatch]:
    """Every pair exactly once, in order, for final evaluations; the last batch is filled with
    rows of weight 0 so that every batch has one shape (one compiled step)."""
    for i in range(0, len(pairs), batch_size):
        chunk = list(pairs[i:i + batch_size])
        real = len(chunk)
        chunk += [chunk[0]] * (batch_size - real)
        batch = pad_pairs(chunk, src_len, tgt_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
        batch.tgt_weights[real:] = 0.0
        yield batch


def lm_split(window: np.ndarray, src_len: int) -> PairBatch:
    """Windows (B, src_len + T) -> prefix as source, continuation as target.

    The decoder's start token is the prefix's last token, so the decoder reads exactly the
    inputs a GPT reads for these targets: the two models predict the same tokens from the same
    context, one through cross-attention, the other through self-attention.
    """
    window = np.asarray(window, np.int32)
    if not 0 < src_len < window.shape[1]:
        raise UserError(f"a prefix of {src_len} tokens does not split windows of {window.shape[1]} tokens")
    src = window[:, :src_len]
    tgt_out = window[:, src_len:]
    return PairBatch(src, np.ones(src.shape, bool), window[:, src_len - 1:-1], tgt_out,
                     np.ones(tgt_out.shape, np.float32))


def lm_split_batch(tokens: np.ndarray, seed: int, step: int, batch_size: int, src_len: int,
                   tgt_len: int) -> PairBatch:
    """The windows of src_len + tgt_len tokens that `gptjax.data.batches` would draw for a GPT
    with block_size = src_len + tgt_len - 1 at this (seed, step), split into prefix and continuation."""
    block = src_len + tgt_len - 1
    offsets = window_offsets(seed, step, len(tokens), block, batch_size)
    return lm_split(windows(tokens, offsets, block), src_len)
