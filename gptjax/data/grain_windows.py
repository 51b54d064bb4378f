"""Training windows read through grain: random access over the shards, prefetched on threads.

The batches are the ones `batches.train_batch` builds (the same offsets from (seed, step),
the same rows per process); grain only reads them ahead. The dataset is a `MapDataset` of
step numbers, each mapped to that step's windows of this process's rows, so an iterator
started at any step gives exactly what an uninterrupted one gives there: resuming needs no
loader state in the checkpoint. Threads rather than processes: reading a window is a memory
copy out of the page cache (numpy releases the GIL), and threads share the memory maps.
"""

from __future__ import annotations

from typing import Callable, Iterator

import grain
import jax
import numpy as np

from gptjax.data import batches
from gptjax.errors import UserError


class WindowSource(grain.sources.RandomAccessDataSource):
    """Window `i` is tokens[i : i + block_size + 1] as int32; one per possible start offset."""

    def __init__(self, tokens, block_size: int):
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return max(len(self.tokens) - self.block_size, 0)

    def __getitem__(self, offset: int) -> np.ndarray:
        return np.asarray(self.tokens[offset:offset + self.block_size + 1], np.int32)


def step_dataset(tokens, seed: int, first_step: int, last_step: int, accum: int,
                 batch_size_of: Callable[[int], int], block_size: int, rows_of: Callable[[int], slice]
                 ) -> grain.MapDataset:
    """Element k: the (accum, rows, block_size + 1) windows of step first_step + k."""
    source = WindowSource(tokens, block_size)

    def read(step: int) -> np.ndarray:
        size = batch_size_of(step)
        offsets = batches.step_offsets(seed, step, len(tokens), block_size, accum, size, rows_of(size // accum))
        return np.stack([np.stack([source[int(o)] for o in row]) for row in offsets])

    return grain.MapDataset.range(first_step, last_step).map(read)


def batch_iterator(tokens, seed: int, first_step: int, last_step: int, accum: int,
                   batch_size_of: Callable[[int], int], block_size: int, threads: int = 4, prefetch: int = 8,
                   rows_of: Callable[[int], slice] = batches.process_rows) -> Iterator[np.ndarray]:
    """This process's rows of steps first_step .. last_step - 1, read ahead by `threads` threads."""
    dataset = step_dataset(tokens, seed, first_step, last_step, accum, batch_size_of, block_size, rows_of)
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)))


class GrainBatches:
    """`train_batch(step, n, sharding)` as `batches.train_batch` gives it, from a prefetching
    iterator that keeps its place between calls (and restarts where a call asks elsewhere)."""

    def __init__(self, tokens, seed: int, last_step: int, accum: int, batch_size_of: Callable[[int], int],
                 block_size: int, threads: int = 4, prefetch: int = 8):
        self.tokens, self.seed, self.last_step, self.accum = tokens, seed, last_step, accum
        self.batch_size_of, self.block_size = batch_size_of, block_size
        self.threads, self.prefetch = threads, prefetch
        self.iterator: Iterator[np.ndarray] | None = None
        self.next_step = -1

    def train_batch(self, step: int, n: int, sharding: jax.sharding.Sharding) -> jax.Array:
        if self.iterator is None or step != self.next_step:
            self.iterator = batch_iterator(self.tokens, self.seed, step, max(self.last_step, step + n), self.accum,
                                           self.batch_size_of, self.block_size, self.threads, self.prefetch)
        local = np.stack([next(self.iterator) for _ in range(n)])
        self.next_step = step + n
        micro = self.batch_size_of(step) // self.accum
        return jax.make_array_from_process_local_data(sharding, local, (n, self.accum, micro, self.block_size + 1))


def configured_batches(config, tokens, batch_size_of: Callable[[int], int]) -> GrainBatches | None:
    """The grain reader `data.loader=grain` asks for; None means `batches.train_batch` directly."""
    if config.data.get("loader", "direct") == "direct":
        return None
    if config.data.loader != "grain":
        raise UserError(f"data.loader={config.data.loader!r} is unknown; use direct or grain")
    return GrainBatches(tokens, config.seed, config.train.steps, config.train.grad_accum, batch_size_of,
                        config.model.block_size, config.data.loader_threads, config.data.loader_prefetch)
