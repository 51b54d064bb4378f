"""Batches of random windows, a pure function of (seed, step).

Written here rather than with a loader library because the whole input state is the step
number: a resumed run sees exactly the batches an uninterrupted run would, with nothing to
checkpoint, and no worker processes compete with training for a small machine's cores.
Each process builds only its rows and `jax.make_array_from_process_local_data` assembles
the global array on the mesh.
"""

from __future__ import annotations

import jax
import numpy as np

from gptjax.errors import UserError


def window_offsets(seed: int, step: int, n_tokens: int, block_size: int, count: int) -> np.ndarray:
    """Start offsets of `count` windows of block_size + 1 tokens for one train step."""
    if n_tokens < block_size + 1:
        raise UserError(f"model.block_size={block_size} needs at least {block_size + 1} tokens per split, "
                        f"but a split has only {n_tokens}; lower model.block_size or add text")
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, n_tokens - block_size, size=count)


def windows(tokens: np.ndarray, offsets: np.ndarray, block_size: int) -> np.ndarray:
    return np.stack([np.asarray(tokens[o:o + block_size + 1], np.int32) for o in offsets])


def process_rows(global_rows: int, index: int | None = None, count: int | None = None) -> slice:
    """The rows of a global batch that process `index` of `count` (default: this one) loads."""
    n = jax.process_count() if count is None else count
    i = jax.process_index() if index is None else index
    if global_rows % n:
        raise UserError(f"batch of {global_rows} rows does not split over {n} processes")
    per = global_rows // n
    return slice(i * per, (i + 1) * per)


def step_offsets(seed: int, step: int, n_tokens: int, block_size: int, accum: int, batch_size: int,
                 rows: slice) -> np.ndarray:
    """(accum, rows) window offsets of one train step: the micro-batches' rows `rows` (a process's)."""
    micro = batch_size // accum
    return window_offsets(seed, step, n_tokens, block_size, batch_size).reshape(accum, micro)[:, rows]


def train_batch(tokens: np.ndarray, seed: int, first_step: int, steps: int, accum: int, batch_size: int,
                block_size: int, sharding: jax.sharding.Sharding) -> jax.Array:
    """(steps, accum, batch_size // accum, block_size + 1) int32 for `steps` consecutive steps."""
    micro = batch_size // accum
    rows = process_rows(micro)
    local = [np.stack([windows(tokens, o, block_size)
                       for o in step_offsets(seed, step, len(tokens), block_size, accum, batch_size, rows)])
             for step in range(first_step, first_step + steps)]
    global_shape = (steps, accum, micro, block_size + 1)
    return jax.make_array_from_process_local_data(sharding, np.stack(local), global_shape)


def eval_batches(tokens: np.ndarray, seed: int, count: int, batch_size: int, block_size: int,
                 sharding: jax.sharding.Sharding) -> list[jax.Array]:
    """A fixed set of random validation windows, the same at every evaluation."""
    rows = process_rows(batch_size)
    out = []
    for i in range(count):
        offsets = window_offsets(seed + 1_000_003, i, len(tokens), block_size, batch_size)
        out.append(jax.make_array_from_process_local_data(
            sharding, windows(tokens, offsets[rows], block_size), (batch_size, block_size + 1)))
    return out


def sequential_batches(tokens: np.ndarray, block_size: int, batch_size: int, max_tokens: int,
                       sharding: jax.sharding.Sharding, score_from: int = 0):
    """Windows that score every target token of the split (or of its first `max_tokens`)
    exactly once, for final evaluations; with `score_from`, only the targets at window
    positions >= score_from (the targets an encoder-decoder with that source length predicts).

    Yields (batch, weights) with weights (B, T) in {0, 1}: rows past the end of the split and
    targets already scored by an earlier window weigh 0.
    """
    n = len(tokens) if not max_tokens else min(len(tokens), max_tokens)
    if n < block_size + 1:
        raise UserError(f"model.block_size={block_size} needs at least {block_size + 1} tokens per split, "
                        f"but a split has only {n}; lower model.block_size or add text")
    starts = list(range(0, n - block_size, block_size))
    first_weighted = [0] * len(starts)
    scored = starts[-1] + block_size  # targets 1..scored are covered
    if scored < n - 1:  # one last window, ending at the split's end, scores the remainder
        starts.append(n - 1 - block_size)
        first_weighted.append(scored - (n - 1 - block_size))
    rows = process_rows(batch_size)
    for i in range(0, len(starts), batch_size):
        chunk = np.zeros(batch_size, np.int64)
        weights = np.zeros((batch_size, block_size), np.float32)
        for r, (start, first) in enumerate(zip(starts[i:i + batch_size], first_weighted[i:i + batch_size])):
            chunk[r] = start
            weights[r, max(first, score_from):] = 1.0
        yield (jax.make_array_from_process_local_data(sharding, windows(tokens, chunk[rows], block_size),
                                                      (batch_size, block_size + 1)),
               jax.make_array_from_process_local_data(sharding, weights[rows], (batch_size, block_size)))
