"""The compiled decode loop for serving: every row of a batch has its own request's knobs.

`gptjax.generate.decoder` samples a whole batch with one key and one set of knobs, which
suits one caller. A server mixes requests in a batch, and a request must come out the same
whether it ran alone or beside others, so here each row carries its own key (split every
step), temperature, top-p, penalties, token budget and stop tokens. Prefill, the KV cache and
the sliding window are the decoder's own (`decoder.start`, `decoder.extend`). A request that
arrives while a batch runs is prefilled alone and put into a free row (`insert`): the rows
already decoding are not computed again.
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


@functools.partial(jax.jit, static_argnames=("graphdef", "layout", "plan"), donate_argnames=("st",),
                   compiler_options=decoder.COMPILER_OPTIONS)
def advance(graphdef, params, st: decoder.DecodeState, leaving: jax.Array, knobs: RowKnobs, steps: jax.Array, *,
            layout: Layout, plan: RowPlan) -> decoder.DecodeState:
    """Decode up to `steps` tokens per row (or until every row is done) in one compiled loop;
    rows marked in `leaving` (B,) are done first."""
    st = st._replace(done=st.done | leaving)
    def body(carry):
        i, s = carry
        return i + 1, step(nnx.merge(graphdef, params), s, layout, plan, knobs)

    def more(carry):
        i, s = carry
        return (i < steps) & ~jnp.all(s.done)

    return jax.lax.while_loop(more, body, (jnp.zeros((), jnp.int32), st))[1]


@functools.partial(jax.jit, static_argnames=("graphdef", "layout"), donate_argnames=("st",),
                   compiler_options=decoder.COMPILER_OPTIONS)
def insert(graphdef, params, st: decoder.DecodeState, prompt: jax.Array, length: jax.Array, slot: jax.Array,
           key: jax.Array, *, layout: Layout) -> decoder.DecodeState:
    """Put a new request into row `slot` of a running batch without computing any other row again:
    its context (1, W), right-aligned with length (1,) real tokens, is prefilled alone, and its keys
    and values fill the W cache slots before the batch's write index (the caller checks that
    there are W of them, and room for the row's tokens after it)."""
    width = prompt.shape[1]
    alone = decoder.prefill(nnx.merge(graphdef, params), prompt, length, key,
                            Layout(1, layout.window, width, 0, width, layout.keep, False))
    at = st.cache.index - width
    put = lambda big, small: jax.lax.dynamic_update_slice(big, small.astype(big.dtype), (slot, 0, at, 0))  # noqa: E731
    cache = st.cache._replace(k=tuple(map(put, st.cache.k, alone.cache.k)), v=tuple(map(put, st.cache.v, alone.cache.v)))
    row = lambda whole, value: whole.at[slot].set(value)  # noqa: E731
    return st._replace(
        cache=cache, logits=row(st.logits, alone.logits[0]), seen=row(st.seen, alone.seen[0]),
        tokens=jax.lax.dynamic_update_slice(st.tokens, prompt, (slot, st.length - width)),
        window_start=row(st.window_start, st.length - length[0]), first_slot=row(st.first_slot, at + width - length[0]),
        counts=row(st.counts, 0), done=row(st.done, False), end=row(st.end, st.tokens.shape[1]),
        key=row(st.key, key[0]))
