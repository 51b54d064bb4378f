"""Where the training loop's batches come from: windows of a text corpus, packed
conversation rows (with loss weights and segment ids) for supervised fine-tuning, or the plays'
(speech, reply) pairs for the encoder-decoder (data.pairs=dialogues).

All give the same three things, so the loop, sharding, accumulation and checkpoints do not
know which they train on: the train batches of a run of steps, the fixed validation batches,
and batches that score a whole split once. Conversation batches score assistant tokens only,
pair batches reply tokens only.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import jax
import numpy as np

from gptjax.data import batches
from gptjax.data import conversations as conv
from gptjax.data import dialogues
from gptjax.data import pairs as pairs_lib
from gptjax.data.pairs import PairBatch
from gptjax.errors import UserError
from gptjax.train.step import PackedBatch


def global_array(sharding, local: np.ndarray, shape: tuple[int, ...]) -> jax.Array:
    return jax.make_array_from_process_local_data(sharding, local, shape)


class TextBatches:
    """Random windows of the token streams (data/batches.py); validation weighs every target."""

    eval_arrays = 2  # (batch, weights)

    def __init__(self, config, corpus, batch_sharding, row_sharding):
        self.c, self.corpus = config, corpus
        self.batch_sharding, self.row_sharding = batch_sharding, row_sharding

    def has_split(self, split: str) -> bool:
        return bool(self.corpus.tokens[split].size)

    def train(self, step: int, n: int, batch_size: int) -> jax.Array:
        tc = self.c.train
        return batches.train_batch(self.corpus.tokens["train"], self.c.seed, step, n, tc.grad_accum,
                                   batch_size, self.c.model.block_size, self.batch_sharding)

    def validation(self) -> list[tuple[jax.Array, ...]]:
        rows, block = self.c.eval.batch_size, self.c.model.block_size
        weights = np.ones((rows, block), np.float32)
        weights[:, :self.c.eval.score_from] = 0.0
        w = global_array(self.row_sharding, weights[batches.process_rows(rows)], weights.shape)
        return [(b, w) for b in batches.eval_batches(self.corpus.tokens["val"], self.c.seed, self.c.train.eval_batches,
                                                     rows, block, self.row_sharding)]

    def whole_split(self, split: str) -> Iterator[tuple[jax.Array, ...]]:
        return batches.sequential_batches(self.corpus.tokens[split], self.c.model.block_size, self.c.eval.batch_size,
                                          self.c.eval.max_tokens, self.row_sharding, self.c.eval.score_from)


class ConversationBatches:
    """Packed conversation rows (data/conversations.py) as `PackedBatch`es; evaluation scores
    the assistant tokens of every held-out row (validation: its first train.eval_batches batches)."""

    eval_arrays = 3  # (batch, weights, segments)

    def __init__(self, config, corpus: conv.ConversationCorpus, batch_sharding, row_sharding):
        self.c, self.corpus = config, corpus
        self.batch_sharding, self.row_sharding = batch_sharding, row_sharding

    def has_split(self, split: str) -> bool:
        return bool(self.corpus.packed[split].conversations)

    def train(self, step: int, n: int, batch_size: int) -> PackedBatch:
        accum, seed = self.c.train.grad_accum, self.c.seed
        micro = batch_size // accum
        rows = batches.process_rows(micro)
        packed = self.corpus.packed["train"]
        steps = [conv.epoch_rows(seed, s, batch_size, len(packed.tokens)).reshape(accum, micro)[:, rows]
                 for s in range(step, step + n)]
        picked = np.stack(steps)  # (n, accum, local rows)
        local = [a.reshape(*picked.shape, -1) for a in packed_rows(packed, picked.reshape(-1))]
        width = packed.tokens.shape[1]
        shapes = PackedBatch((n, accum, micro, width), *[(n, accum, micro, width - 1)] * 2)
        return PackedBatch(*(global_array(self.batch_sharding, a, s) for a, s in zip(local, shapes)))

    def validation(self) -> list[tuple[jax.Array, ...]]:
        return list(self.split_batches("val", self.c.train.eval_batches))

    def whole_split(self, split: str) -> Iterator[tuple[jax.Array, ...]]:
        return self.split_batches(split, 0)

    def split_batches(self, split: str, limit: int) -> Iterator[tuple[jax.Array, ...]]:
        """(tokens, weights, segments) of the split's rows in order; `limit` batches at most (0: all)."""
        rows = self.c.eval.batch_size
        mine = batches.process_rows(rows)
        for i, (inputs, targets, weights, segments) in enumerate(
                conv.sequential_conversation_batches(self.corpus.packed[split], rows)):
            if limit and i >= limit:
                return
            tokens = np.concatenate([inputs, targets[:, -1:]], axis=1)
            yield tuple(global_array(self.row_sharding, a[mine], a.shape) for a in (tokens, weights, segments))


class PairBatches:
    """The plays' (speech, reply) pairs (`gptjax.data.dialogues.split_exchanges`, whole plays per
    split) as `PairBatch`es for model.kind=encdec: data.src_len source tokens (a speech's last
    ones) and model.block_size - data.src_len target tokens (a reply's first ones), so a row holds
    block_size token slots as a GPT's does. Train rows are drawn by `pair_batch`, a function of
    (seed, step); evaluation scores the reply tokens of every held-out pair once, in an order
    shuffled once by the seed, so validation (the first train.eval_batches batches) samples every
    held-out play."""

    eval_arrays = 2  # (pairs, target weights): the encoder-decoder's eval step reads (batch, weights)

    def __init__(self, config, corpus, batch_sharding, row_sharding):
        self.c = config
        self.batch_sharding, self.row_sharding = batch_sharding, row_sharding
        src_len = config.data.src_len
        self.lengths = (src_len, config.model.block_size - src_len)
        self.start = {"bos_id": pairs_lib.start_id(corpus.tokenizer)}
        exchanges = dialogues.split_exchanges(config.data, config.seed)
        self.pairs = {split: pairs_lib.reply_pairs([(e.speech, e.reply) for e in es], corpus.tokenizer)
                      for split, es in exchanges.items()}
        for split in ("train", "val"):
            if not self.pairs[split]:
                raise UserError(f"the plays' {split} split holds no (speech, reply) pairs; "
                                "change data.val_fraction or data.test_fraction")
        for split in ("val", "test"):
            order = np.random.default_rng(config.seed).permutation(len(self.pairs[split]))
            self.pairs[split] = [self.pairs[split][i] for i in order]

    def has_split(self, split: str) -> bool:
        return bool(self.pairs[split])

    def train(self, step: int, n: int, batch_size: int) -> PairBatch:
        accum = self.c.train.grad_accum
        micro = batch_size // accum
        rows = batches.process_rows(micro)
        drawn = [pairs_lib.pair_batch(self.pairs["train"], self.c.seed, s, batch_size, *self.lengths, **self.start)
                 for s in range(step, step + n)]
        local = [np.stack([a.reshape(accum, micro, -1)[:, rows] for a in field]) for field in zip(*drawn)]
        return PairBatch(*(global_array(self.batch_sharding, a, (n, accum, micro, a.shape[-1])) for a in local))

    def validation(self) -> list[tuple[jax.Array, ...]]:
        return list(itertools.islice(self.whole_split("val"), self.c.train.eval_batches or None))

    def whole_split(self, split: str) -> Iterator[tuple[jax.Array, ...]]:
        rows = self.c.eval.batch_size
        mine = batches.process_rows(rows)
        for batch in pairs_lib.sequential_pair_batches(self.pairs[split], rows, *self.lengths, **self.start):
            placed = PairBatch(*(global_array(self.row_sharding, a[mine], a.shape) for a in batch))
            yield placed, placed.tgt_weights


def packed_rows(packed: conv.PackedSplit, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """(tokens (R, T+1), weights (R, T), segments (R, T)) of some rows, as `PackedBatch` holds them."""
    inputs, targets, weights, segments = conv.rows_to_batch(packed, rows)
    return np.concatenate([inputs, targets[:, -1:]], axis=1), weights, segments


def batch_source(config, corpus, batch_sharding,
                 row_sharding) -> TextBatches | ConversationBatches | PairBatches:
    """The batches of `corpus`: conversation rows for a ConversationCorpus, the plays' pairs under
    data.pairs=dialogues (tokenized by the corpus's tokenizer), else text windows."""
    if config.data.get("pairs", "") == "dialogues":
        return PairBatches(config, corpus, batch_sharding, row_sharding)
    kind = ConversationBatches if isinstance(corpus, conv.ConversationCorpus) else TextBatches
    return kind(config, corpus, batch_sharding, row_sharding)


def describe(corpus) -> str:
    """How much training data a corpus holds, for the line a run starts with."""
    if isinstance(corpus, conv.ConversationCorpus):
        train = corpus.packed["train"]
        return (f"{train.conversations:,} train conversations in {len(train.tokens):,} windows "
                f"({train.fill:.0%} filled, {train.truncated} truncated, {train.dropped} dropped)")
    return f"{corpus.tokens['train'].size:,} train tokens"
