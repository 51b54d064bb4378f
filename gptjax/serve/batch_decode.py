"""The compiled decode loop for serving: every row of a batch has its own request's knobs.

`gptjax.generate.decoder` samples a whole batch with one key and one set of knobs, which
suits one caller. A server mixes requests in a batch, and a request must come out the same
whether it ran alone or beside others, so here each row carries its own key (split every
step), temperature, top-p, penalties, token budget and stop tokens. Prefill, the KV cache and
the sliding window are the decoder's own (`decoder.start`, `decoder.extend`). A request that
arrives while a batch runs is prefilled (with any others arriving with it) into a free row
(`insert`): the rows already decoding are not computed again, and when the batch needs room
for it, the cache slots that no live row sees any more are dropped (`drop`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from gptjax.generate import decoder
from gptjax.generate import logits as logits_lib
from gptjax.generate.layout import Layout


class RowPlan(NamedTuple):
    """Static: which optional steps the batch's compiled loop runs."""

    top_p: bool
    penalties: bool


class RowKnobs(NamedTuple):
    """Per-row values, traced (changing them never recompiles)."""

    temperature: jax.Array  # (B, 1); 0 picks the most likely token
    top_p: jax.Array        # (B, 1)
    frequency: jax.Array    # (B, 1) subtracted once per time a token was generated
    presence: jax.Array     # (B, 1) subtracted once from every token generated at all
    max_new: jax.Array      # (B,) tokens the row may still generate
    stop: jax.Array         # (B, V) tokens that end the row


def step(model, st: decoder.DecodeState, layout: Layout, plan: RowPlan, knobs: RowKnobs) -> decoder.DecodeState:
    """One token per live row from the row's own key and knobs; st.key is (B, 2) raw keys."""
    logits = st.logits
    if plan.penalties:
        counts = st.counts.astype(logits.dtype)
        logits = logits - knobs.frequency * counts - knobs.presence * (counts > 0)
    keys = jax.vmap(jax.random.split)(st.key)
    truncate_plan = logits_lib.Plan(greedy=False, top_k=0, top_p=plan.top_p, min_p=False, repetition=False,
                                    frequency=False)
    one = jnp.ones_like(knobs.top_p)
    truncate_knobs = logits_lib.Knobs(jnp.maximum(knobs.temperature, 1e-6), knobs.top_p, 0 * one, one, 0 * one)
    truncated = logits_lib.truncate(logits, truncate_plan, truncate_knobs)
    drawn = jax.vmap(logits_lib.draw)(keys[:, 1], truncated)
    live = ~st.done
    token = jnp.where(knobs.temperature[:, 0] == 0, logits_lib.first_max(logits), drawn).astype(jnp.int32)
    token = jnp.where(live, token, 0)
    tokens = jax.lax.dynamic_update_slice(st.tokens, token[:, None], (0, st.length))
    length = st.length + 1
    rows = jnp.arange(layout.batch)
    finished = live & (knobs.stop[rows, token] | (length - layout.window >= knobs.max_new))
    counts = st.counts.at[rows, token].add(live.astype(jnp.int32)) if plan.penalties else st.counts
    st = st._replace(key=keys[:, 0], tokens=tokens, length=length, counts=counts, done=st.done | finished,
                     end=jnp.where(finished, length, st.end))
    return decoder.extend(model, st, layout)


class View(NamedTuple):
    """What the host reads of a batch after a call of the loop, in arrays of their own: the
    state itself may already be in the next call (donated) while these are read."""

    tokens: jax.Array
    done: jax.Array
    end: jax.Array
    key: jax.Array
    length: jax.Array
    index: jax.Array  # the cache's write index
    first_slot: jax.Array


@functools.partial(jax.jit, static_argnames=("graphdef", "layout", "plan"), donate_argnames=("st",),
                   compiler_options=decoder.COMPILER_OPTIONS)
def advance(graphdef, params, st: decoder.DecodeState, leaving: jax.Array, knobs: RowKnobs, steps: jax.Array, *,
            layout: Layout, plan: RowPlan) -> tuple[decoder.DecodeState, View]:
    """Decode up to `steps` tokens per row (or until every row is done) in one compiled loop;
    rows marked in `leaving` (B,) are done first."""
    st = st._replace(done=st.done | leaving)
    def body(carry):
        i, s = carry
        return i + 1, step(nnx.merge(graphdef, params), s, layout, plan, knobs)

    def more(carry):
        i, s = carry
        return (i < steps) & ~jnp.all(s.done)

    st = jax.lax.while_loop(more, body, (jnp.zeros((), jnp.int32), st))[1]
    return st, View(st.tokens, st.done, st.end, st.key, st.length, st.cache.index, st.first_slot)


@functools.partial(jax.jit, static_argnames=("graphdef", "layout"), donate_argnames=("st",),
                   compiler_options=decoder.COMPILER_OPTIONS)
def insert(graphdef, params, st: decoder.DecodeState, prompts: jax.Array, lengths: jax.Array, slots: jax.Array,
           keys: jax.Array, *, layout: Layout) -> decoder.DecodeState:
    """Put new requests into rows `slots` (J,) of a running batch without computing any other row
    again: their contexts (J, W), right-aligned with lengths (J,) real tokens, are prefilled
    together, and each one's keys and values fill the W cache slots before the batch's write
    index (the caller checks that there are W of them, and room for the rows' tokens after it).
    A slot given twice must come with the same request both times."""
    joining, width = prompts.shape
    new = decoder.prefill(nnx.merge(graphdef, params), prompts, lengths, keys,
                          Layout(joining, layout.window, width, 0, width, layout.keep, False))
    at = st.cache.index - width
    k, v, tokens = list(st.cache.k), list(st.cache.v), st.tokens
    for j in range(joining):
        put = lambda big, small: jax.lax.dynamic_update_slice(  # noqa: E731
            big, small[j:j + 1].astype(big.dtype), (slots[j], 0, at, 0))
        k, v = list(map(put, k, new.cache.k)), list(map(put, v, new.cache.v))
        tokens = jax.lax.dynamic_update_slice(tokens, prompts[j:j + 1], (slots[j], st.length - width))
    rows = lambda whole, values: whole.at[slots].set(values)  # noqa: E731
    return st._replace(
        cache=st.cache._replace(k=tuple(k), v=tuple(v)), tokens=tokens, logits=rows(st.logits, new.logits),
        seen=rows(st.seen, new.seen), window_start=rows(st.window_start, st.length - lengths),
        first_slot=rows(st.first_slot, at + width - lengths), counts=rows(st.counts, 0), done=rows(st.done, False),
        end=rows(st.end, st.tokens.shape[1]), key=rows(st.key, keys))


@functools.partial(jax.jit, donate_argnames=("st",), compiler_options=decoder.COMPILER_OPTIONS)
def drop(st: decoder.DecodeState, slots: jax.Array) -> decoder.DecodeState:
    """The batch without its first `slots` cache slots and token columns, which no live row needs
    (the caller checks: no more than the tokens decoded since the batch began, and no more than
    any live row's first slot), so that it has room for rows that join it. Every row's slots and
    columns move left together; only data moves, nothing is computed again."""
    left = lambda a, axis: jnp.roll(a, -slots, axis)  # noqa: E731 - what wraps round lies past the index, unread
    cache = st.cache._replace(k=tuple(left(k, 2) for k in st.cache.k), v=tuple(left(v, 2) for v in st.cache.v),
                              index=st.cache.index - slots)
    return st._replace(cache=cache, tokens=left(st.tokens, 1), length=st.length - slots,
                       window_start=st.window_start - slots, first_slot=jnp.maximum(st.first_slot - slots, 0),
                       end=jnp.where(st.done, st.end - slots, st.end))
