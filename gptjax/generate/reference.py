"""Sampling next tokens from logits, and a plain decoder that recomputes the window each token.

The recomputing decoder is the reference that cached decoding must agree with; it also
slides the context window past block_size, so it can write samples of any length.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def sample_token(logits: jax.Array, key: jax.Array, temperature: float, top_k: int) -> jax.Array:
    """One id per row of logits (B, V): greedy at temperature 0, else softmax sampling over the top k."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7, 8))
def _decode(graphdef, params, rest, buffer, length: int, total: int, block_size: int, temperature: float,
            top_k: int, key):
    def body(pos, carry):
        buffer, key = carry
        start = jnp.maximum(pos - block_size, 0)
        window = jax.lax.dynamic_slice(buffer, (0, start), (buffer.shape[0], block_size))
        logits = nnx.merge(graphdef, params, rest)(window)
        last = jnp.minimum(pos, block_size) - 1
        key, sub = jax.random.split(key)
        token = sample_token(logits[:, last], sub, temperature, top_k)
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
    buffer = np.zeros((len(rows), max(total, block_size)), np.int32)
    buffer[:, :length] = rows
    out = _decode(graphdef, params, rest, jnp.asarray(buffer), length, total, block_size,
                  float(temperature), int(top_k), jax.random.key(seed))
    out = np.asarray(out[:, length:total])
    return out[0] if np.ndim(prompt) == 1 else out
