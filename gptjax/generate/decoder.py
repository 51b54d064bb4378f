"""Cached decoding: prefill the prompts once, then decode inside one compiled while-loop.

Rows of a batch are left-padded: `tokens` (B, window + new) holds each prompt right-aligned
to column `window`, then the generated tokens. All rows advance together, so the KV cache
has one write index; each row remembers the first column still in its context
(`window_start`) and the first cache slot holding one of its tokens (`first_slot`), and
every earlier slot is masked out. Positions count from a row's own first token, so a
padded row computes what it would compute alone.

When a row's context is full (or the cache has no free slot) and sliding is on, the
cache is emptied and re-filled from the last tokens of every row: rows that overflowed
keep `layout.keep` tokens, the others keep all of theirs.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gptjax.generate import logits as logits_lib
from gptjax.generate.layout import Layout
from gptjax.model.gpt import Decoding, KVCache


# Without region analysis XLA's CPU compiler copies every cache layer that is both read and
# updated inside a loop step, which makes each token cost a pass over the whole cache.
COMPILER_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


class DecodeState(NamedTuple):
    cache: KVCache
    logits: jax.Array        # (B, V) next-token logits
    tokens: jax.Array        # (B, window + new) prompts right-aligned to column `window`, then output
    length: jax.Array        # () filled columns of `tokens`
    window_start: jax.Array  # (B,) first column of `tokens` still in the row's context
    first_slot: jax.Array    # (B,) first cache slot holding one of the row's tokens
    seen: jax.Array          # (B, V) tokens of prompt or output (repetition penalty)
    counts: jax.Array        # (B, V) times each token was generated (frequency penalty)
    done: jax.Array          # (B,) row finished
    end: jax.Array           # (B,) `length` when the row finished
    key: jax.Array


def fill(model, st: DecodeState, layout: Layout, width: int, keep: jax.Array, end: jax.Array) -> DecodeState:
    """Empty the cache and prefill it with the keep[b] (<= width) tokens of each row before column end."""
    window = jax.lax.dynamic_slice(st.tokens, (0, end - width), (layout.batch, width))
    first = (width - keep).astype(jnp.int32)
    positions = jnp.maximum(jnp.arange(width)[None, :] - first[:, None], 0)
    kv_mask = jnp.arange(layout.cache)[None, :] >= first[:, None]
    # An opaque zero: with a constant index XLA would spend minutes constant-folding the
    # (all masked) attention over the empty cache.
    empty = st.cache._replace(index=jax.lax.optimization_barrier(jnp.zeros((), jnp.int32)))
    logits, cache = model(window, decoding=Decoding(empty, positions, kv_mask))
    return st._replace(cache=cache, logits=logits[:, -1], window_start=end - keep, first_slot=first)


def feed(model, st: DecodeState, layout: Layout) -> DecodeState:
    """Run the newest token through the model, writing its keys and values to the cache."""
    newest = jax.lax.dynamic_slice_in_dim(st.tokens, st.length - 1, 1, axis=1)
    positions = jnp.minimum(st.length - 1 - st.window_start, layout.window - 1)[:, None]
    kv_mask = jnp.arange(layout.cache)[None, :] >= st.first_slot[:, None]
    logits, cache = model(newest, decoding=Decoding(st.cache, positions, kv_mask))
    return st._replace(cache=cache, logits=logits[:, -1])


def slide(model, st: DecodeState, layout: Layout) -> DecodeState:
    """Re-fill the cache with each row's context but its newest token, which `feed` adds next:
    rows that outgrew the window keep layout.keep tokens in all, the others keep everything."""
    count = st.length - st.window_start
    keep = jnp.minimum(jnp.where(count > layout.window, layout.keep, count), layout.window)
    return fill(model, st, layout, layout.window, keep - 1, st.length - 1)


def must_slide(st: DecodeState, layout: Layout) -> jax.Array:
    overflowing = (st.length - st.window_start > layout.window) & ~st.done
    return (st.cache.index >= layout.cache) | jnp.any(overflowing)


def extend(model, st: DecodeState, layout: Layout) -> DecodeState:
    """Take the newest token into the context, sliding the window first if it does not fit.

    The feed stays outside any conditional, so XLA can hoist its loop-invariant work (such
    as transposing a tied embedding for the head) out of the decode loop.
    """
    if layout.sliding:
        st = jax.lax.cond(must_slide(st, layout), lambda s: slide(model, s, layout), lambda s: s, st)
    return feed(model, st, layout)


@functools.partial(jax.jit, static_argnames=("graphdef", "layout"), compiler_options=COMPILER_OPTIONS)
def start(graphdef, params, prompts: jax.Array, lengths: jax.Array, key: jax.Array, *,
          layout: Layout) -> DecodeState:
    """Compiled `prefill`."""
    return prefill(nnx.merge(graphdef, params), prompts, lengths, key, layout)


def prefill(model, prompts: jax.Array, lengths: jax.Array, key: jax.Array, layout: Layout) -> DecodeState:
    """The state after right-aligned prompts (B, layout.prompt) of `lengths` real tokens."""
    B, W, V = layout.batch, layout.window, model.cfg.vocab_size
    tokens = jnp.zeros((B, W + layout.new), jnp.int32).at[:, W - layout.prompt:W].set(prompts)
    real = jnp.arange(layout.prompt)[None, :] >= (layout.prompt - lengths)[:, None]
    seen = jnp.zeros((B, V), bool).at[jnp.arange(B)[:, None], prompts].max(real)
    cache = KVCache.zeros(model.cfg, B, layout.cache, model.cfg.dtype)
    st = DecodeState(cache, jnp.zeros((B, V), jnp.float32), tokens, jnp.asarray(W, jnp.int32),
                     jnp.full((B,), W, jnp.int32), jnp.zeros((B,), jnp.int32), seen,
                     jnp.zeros((B, V), jnp.int32), jnp.zeros((B,), bool), jnp.full((B,), W + layout.new, jnp.int32),
                     key)
    return fill(model, st, layout, layout.prompt, lengths, st.length)


def step(model, st: DecodeState, layout: Layout, plan: logits_lib.Plan, knobs: logits_lib.Knobs,
         stop_mask: jax.Array, max_new: jax.Array) -> DecodeState:
    """Choose one token per live row, record it, and take it into the context."""
    key, sub = (st.key, st.key) if plan.greedy else jax.random.split(st.key)
    scores = logits_lib.penalize(st.logits, st.seen, st.counts, plan, knobs)
    live = ~st.done
    token = jnp.where(live, logits_lib.choose(scores, sub, plan, knobs), 0)
    tokens = jax.lax.dynamic_update_slice(st.tokens, token[:, None], (0, st.length))
    length = st.length + 1
    finished = live & (stop_mask[token] | (length - layout.window >= max_new))
    rows = jnp.arange(layout.batch)
    seen = st.seen.at[rows, token].max(live) if plan.repetition else st.seen
    counts = st.counts.at[rows, token].add(live.astype(jnp.int32)) if plan.frequency else st.counts
    st = st._replace(key=key, tokens=tokens, length=length, seen=seen, counts=counts,
                     done=st.done | finished, end=jnp.where(finished, length, st.end))
    return extend(model, st, layout)


@functools.partial(jax.jit, static_argnames=("graphdef", "layout", "plan"), donate_argnames=("st",),
                   compiler_options=COMPILER_OPTIONS)
def advance(graphdef, params, st: DecodeState, knobs: logits_lib.Knobs, stop_mask: jax.Array,
            max_new: jax.Array, steps: jax.Array, *, layout: Layout, plan: logits_lib.Plan) -> DecodeState:
    """Decode up to `steps` tokens per row (or until every row is done) in one compiled loop."""
    def body(carry):
        i, s = carry
        return i + 1, step(nnx.merge(graphdef, params), s, layout, plan, knobs, stop_mask, max_new)

    def more(carry):
        i, s = carry
        return (i < steps) & ~jnp.all(s.done)

    return jax.lax.while_loop(more, body, (jnp.zeros((), jnp.int32), st))[1]


def right_align(prompts: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, width) prompts left-padded with zeros, and their lengths."""
    out = np.zeros((len(prompts), width), np.int32)
    for row, ids in enumerate(prompts):
        if len(ids):
            out[row, width - len(ids):] = ids
    return out, np.array([len(p) for p in prompts], np.int32)
