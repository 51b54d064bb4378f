"""The reference decoders: recompute the last block_size tokens for every new token, no cache.

They work for any model with the `model(idx) -> logits` interface (GPT, LSTM, GRU), slide
the context window past block_size, so they write continuations of any length, and are
what cached decoding must agree with. Sampling draws from `sample_token`; beam search is
`gptjax.generate.beam_search` fed with the same recomputed next-token logits.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gptjax.errors import UserError
from gptjax.generate import beam_search
from gptjax.generate import logits as logits_lib


def sample_token(logits: jax.Array, key: jax.Array, temperature: float, top_k: int) -> jax.Array:
    """One id per row of logits (B, V): greedy at temperature 0, else softmax sampling over the top k."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return logits_lib.draw(key, logits)


def next_logits(model, buffer: jax.Array, length, block_size: int) -> jax.Array:
    """(B, V) logits of the token after the first `length` of each row of `buffer` (B, >= block_size),
    from the last block_size of them."""
    start = jnp.maximum(length - block_size, 0)
    window = jax.lax.dynamic_slice(buffer, (0, start), (buffer.shape[0], block_size))
    return model(window)[:, jnp.minimum(length, block_size) - 1]


def start_buffer(prompts: np.ndarray, new_tokens: int, block_size: int) -> np.ndarray:
    """Rows of equal-length prompts, with room for new_tokens (and at least one window)."""
    buffer = np.zeros((len(prompts), max(prompts.shape[1] + new_tokens, block_size)), np.int32)
    buffer[:, :prompts.shape[1]] = prompts
    return buffer


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7, 8))
def _decode(graphdef, params, rest, buffer, length: int, total: int, block_size: int, temperature: float,
            top_k: int, key):
    def body(pos, carry):
        buffer, key = carry
        logits = next_logits(nnx.merge(graphdef, params, rest), buffer, pos, block_size)
        key, sub = jax.random.split(key)
        token = sample_token(logits, sub, temperature, top_k)
        return buffer.at[:, pos].set(token.astype(buffer.dtype)), key

    buffer, _ = jax.lax.fori_loop(length, total, body, (buffer, key))
    return buffer


def generate_uncached(graphdef, params, rest, prompt: np.ndarray, max_new_tokens: int, block_size: int,
                      temperature: float = 1.0, top_k: int = 0, seed: int = 0) -> np.ndarray:
    """Continue a prompt (1-D ids, or 2-D rows of equal length) by max_new_tokens, recomputing
    the last block_size tokens each step."""
    rows = np.atleast_2d(np.asarray(prompt))
    if rows.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token")
    length = rows.shape[1]
    total = length + max_new_tokens
    out = _decode(graphdef, params, rest, jnp.asarray(start_buffer(rows, max_new_tokens, block_size)), length,
                  total, block_size, float(temperature), int(top_k), jax.random.key(seed))
    out = np.asarray(out[:, length:total])
    return out[0] if np.ndim(prompt) == 1 else out


class Window(NamedTuple):
    """The beam search's decoder state here: every row's tokens so far and its next logits."""

    buffer: jax.Array   # (rows, >= block_size)
    length: jax.Array   # () filled columns
    logits: jax.Array   # (rows, V)


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7))
def _beam_decode(graphdef, params, rest, buffer, length: int, new_tokens: int, beams: int, block_size: int):
    model = nnx.merge(graphdef, params, rest)

    def advance(w: Window, tokens: jax.Array, done: jax.Array) -> Window:
        del done  # every row decodes the same number of tokens
        buffer = jax.lax.dynamic_update_slice(w.buffer, tokens[:, None], (0, w.length))
        return Window(buffer, w.length + 1, next_logits(model, buffer, w.length + 1, block_size))

    def reorder(w: Window, rows: jax.Array) -> Window:
        return w._replace(buffer=w.buffer[rows], logits=w.logits[rows])

    start = Window(buffer, jnp.asarray(length, jnp.int32), next_logits(model, buffer, length, block_size))
    no_stops = jnp.zeros(start.logits.shape[-1], bool)
    found = beam_search.run(beam_search.NextLogits(lambda w: w.logits, reorder, advance), start, new_tokens, beams,
                            True, no_stops, jnp.asarray(new_tokens, jnp.int32), jnp.asarray(0.0, jnp.float32))
    return found.pool_tokens[:, 0]


def beam_decode(graphdef, params, rest, prompts: np.ndarray, new_tokens: int, block_size: int,
                beams: int = 1) -> np.ndarray:
    """(P, new_tokens) ids: the most likely continuation of each of the equal-length prompts (P, L)
    that the beams find (raw log-probability, no stop tokens; one beam is greedy decoding)."""
    if beams < 1:
        raise UserError(f"beams={beams} must be at least 1")
    prompts = np.asarray(prompts, np.int32)
    rows = np.repeat(prompts, beams, axis=0)
    return np.asarray(_beam_decode(graphdef, params, rest, jnp.asarray(start_buffer(rows, new_tokens, block_size)),
                                   prompts.shape[1], int(new_tokens), int(beams), int(block_size)))
