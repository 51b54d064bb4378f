"""Beam search: keep the `beams` most likely continuations of each prompt.

Each prompt owns `beams` rows of a decoder (row = prompt * beams + beam). Per step every
live beam proposes every token; the best 2 x beams proposals are split into finished ones
(ending in a stop token), which enter a pool of at most `beams` hypotheses scored by
log-probability / length ** length_penalty (only if among the best `beams` proposals, so
one beam is greedy decoding), and live ones, of which the best `beams` go on; their decoder
rows are gathered from their parents. A prompt is done when its pool is full
(`early_stopping`), or when no live beam could still beat the pool's worst, or at
max_new_tokens, when the live beams join the pool.

The search needs only the next-token logits of each row, however a decoder computes them
(`NextLogits`): `search` runs it on the KV cache, `gptjax.generate.reference.beam_decode`
on a window recomputed every token (any model, no cache).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from gptjax.generate.decoder import COMPILER_OPTIONS, DecodeState, extend
from gptjax.generate.layout import Layout
from gptjax.model.gpt import KVCache


class NextLogits(NamedTuple):
    """How a decoder gives the search its next-token logits, one row per beam."""

    logits: Callable[[Any], jax.Array]                        # state -> (rows, V)
    reorder: Callable[[Any, jax.Array], Any]                  # row i becomes row rows[i]
    advance: Callable[[Any, jax.Array, jax.Array], Any]       # take tokens (rows,) in; done (rows,)


class BeamState(NamedTuple):
    dec: Any                  # the decoder's state, batch * beams rows
    scores: jax.Array         # (B, K) log-probability of each live beam
    tokens: jax.Array         # (B, K, new) tokens each live beam generated so far
    generated: jax.Array      # () tokens generated so far
    pool_tokens: jax.Array    # (B, K, new) generated tokens of finished hypotheses
    pool_lengths: jax.Array   # (B, K) their lengths (stop token included)
    pool_scores: jax.Array    # (B, K) their length-penalised scores, best first; -inf when empty
    done: jax.Array           # (B,) prompt finished


def normalise(score: jax.Array, length, length_penalty: jax.Array) -> jax.Array:
    return score / jnp.asarray(length, jnp.float32) ** length_penalty


def best_possible(scores: jax.Array, generated: jax.Array, max_new: jax.Array,
                  length_penalty: jax.Array) -> jax.Array:
    """An upper bound on the final score of any continuation of the live beams.

    Log-probabilities only fall as tokens are added; dividing by length**penalty raises a
    negative score most at the longest length when the penalty is positive, else at the
    shortest length still to come.
    """
    best = jnp.max(scores, axis=-1)
    length = jnp.where(length_penalty > 0, max_new, generated + 1)
    return normalise(best, length, length_penalty)


def merge_pool(st: BeamState, tokens: jax.Array, lengths: jax.Array, scores: jax.Array,
               beams: int) -> BeamState:
    """Keep the best `beams` of the pool and new finished hypotheses (B, M, ...), prompts not done."""
    scores = jnp.where(st.done[:, None], -jnp.inf, scores)
    all_scores = jnp.concatenate([st.pool_scores, scores], axis=1)
    best, pick = jax.lax.top_k(all_scores, beams)
    all_tokens = jnp.concatenate([st.pool_tokens, tokens], axis=1)
    all_lengths = jnp.concatenate([st.pool_lengths, lengths], axis=1)
    return st._replace(pool_scores=best, pool_tokens=jnp.take_along_axis(all_tokens, pick[..., None], axis=1),
                       pool_lengths=jnp.take_along_axis(all_lengths, pick, axis=1))


def step(d: NextLogits, st: BeamState, beams: int, early_stopping: bool, stop_mask: jax.Array,
         max_new: jax.Array, length_penalty: jax.Array) -> BeamState:
    logits = d.logits(st.dec)
    B, K, V = logits.shape[0] // beams, beams, logits.shape[-1]
    logp = jax.nn.log_softmax(logits, axis=-1).reshape(B, K, V)
    proposals = (st.scores[:, :, None] + logp).reshape(B, K * V)
    top_scores, top_index = jax.lax.top_k(proposals, 2 * K)
    parent, token = top_index // V, (top_index % V).astype(jnp.int32)
    generated = st.generated + 1
    stops = stop_mask[token]

    proposed = jnp.take_along_axis(st.tokens, parent[..., None], axis=1)
    proposed = jax.lax.dynamic_update_slice(proposed, token[..., None], (0, 0, generated - 1))
    ranked = jnp.arange(2 * K)[None, :] < K  # a stop counts only among the best K proposals
    finished = jnp.where(stops & ranked, normalise(top_scores, generated, length_penalty), -jnp.inf)
    st = merge_pool(st, proposed, jnp.full_like(token, generated), finished, beams)

    live_scores, pick = jax.lax.top_k(jnp.where(stops, -jnp.inf, top_scores), K)
    live_parent = jnp.take_along_axis(parent, pick, axis=1)
    live_token = jnp.take_along_axis(token, pick, axis=1)
    live_tokens = jnp.take_along_axis(proposed, pick[..., None], axis=1)
    dec = d.reorder(st.dec, (jnp.arange(B)[:, None] * K + live_parent).reshape(-1))

    at_limit = generated >= max_new
    if early_stopping:
        settled = st.pool_scores[:, -1] > -jnp.inf
    else:
        bound = best_possible(live_scores, generated, max_new, length_penalty)
        settled = (st.pool_scores[:, -1] > -jnp.inf) & (st.pool_scores[:, -1] >= bound)
    ending = jnp.where(at_limit & ~st.done[:, None], normalise(live_scores, generated, length_penalty), -jnp.inf)
    st = st._replace(scores=live_scores, tokens=live_tokens, generated=generated)
    st = merge_pool(st, live_tokens, jnp.full_like(live_token, generated), ending, beams)
    done = st.done | settled | at_limit
    return st._replace(dec=d.advance(dec, live_token.reshape(-1), jnp.repeat(done, K)), done=done)


def run(d: NextLogits, dec, new: int, beams: int, early_stopping: bool, stop_mask: jax.Array, max_new: jax.Array,
        length_penalty: jax.Array) -> BeamState:
    """Search from a decoder state whose rows repeat each prompt `beams` times, until every
    prompt is done; hypotheses hold up to `new` tokens."""
    B, K = d.logits(dec).shape[0] // beams, beams
    scores = jnp.where(jnp.arange(K) == 0, 0.0, -jnp.inf)[None].repeat(B, axis=0)
    st = BeamState(dec, scores, jnp.zeros((B, K, new), jnp.int32), jnp.zeros((), jnp.int32),
                   jnp.zeros((B, K, new), jnp.int32), jnp.zeros((B, K), jnp.int32), jnp.full((B, K), -jnp.inf),
                   jnp.zeros((B,), bool))
    body = functools.partial(step, d, beams=beams, early_stopping=early_stopping, stop_mask=stop_mask,
                             max_new=max_new, length_penalty=length_penalty)
    return jax.lax.while_loop(lambda s: ~jnp.all(s.done), body, st)


def reorder(dec: DecodeState, rows: jax.Array) -> DecodeState:
    """The decoder state with row i replaced by row rows[i] (beams following their parents)."""
    cache = KVCache(tuple(k[rows] for k in dec.cache.k), tuple(v[rows] for v in dec.cache.v), dec.cache.index)
    take = lambda a: a[rows]  # noqa: E731
    return dec._replace(cache=cache, logits=take(dec.logits), tokens=take(dec.tokens),
                        window_start=take(dec.window_start), first_slot=take(dec.first_slot),
                        seen=take(dec.seen), counts=take(dec.counts), done=take(dec.done), end=take(dec.end))


@functools.partial(jax.jit, static_argnames=("graphdef", "layout", "beams", "early_stopping"),
                   compiler_options=COMPILER_OPTIONS)
def search(graphdef, params, dec: DecodeState, stop_mask: jax.Array, max_new: jax.Array,
           length_penalty: jax.Array, *, layout: Layout, beams: int, early_stopping: bool) -> BeamState:
    """Beam search on the KV cache from a prefilled decoder state whose rows repeat each prompt `beams` times."""
    model = nnx.merge(graphdef, params)

    def advance(dec: DecodeState, tokens: jax.Array, done: jax.Array) -> DecodeState:
        dec = dec._replace(tokens=jax.lax.dynamic_update_slice(dec.tokens, tokens[:, None], (0, dec.length)),
                           length=dec.length + 1, done=done)
        return extend(model, dec, layout)

    return run(NextLogits(lambda dec: dec.logits, reorder, advance), dec, layout.new, beams, early_stopping,
               stop_mask, max_new, length_penalty)
