"""Grow a GPT's vocabulary: new token rows for tokens added to its tokenizer (the chat role
tokens added to GPT-2's BPE before fine-tuning on conversations).

A new row starts as the mean of the existing rows, so the new tokens' logits start near the
average logit instead of dominating or vanishing, and their embeddings lie inside the cloud of
the model's tokens (as J. Hewitt's note "Initializing new word embeddings for pretrained
language models", 2021, recommends).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from gptjax.errors import UserError
from gptjax.model.gpt import GPT


def grown(table: jnp.ndarray, old: int, new: int, padded: int, axis: int) -> jnp.ndarray:
    """`table` with its first `old` entries along `axis` kept, `new - old` mean entries added,
    and zeros up to `padded` (the padding ids the logits never show)."""
    kept = jnp.take(table, jnp.arange(old), axis=axis)
    mean = kept.mean(axis=axis, keepdims=True)
    added = jnp.repeat(mean, new - old, axis=axis)
    pad_shape = list(table.shape)
    pad_shape[axis] = padded - new
    return jnp.concatenate([kept, added, jnp.zeros(pad_shape, table.dtype)], axis=axis).astype(table.dtype)


def grow_vocab(model: GPT, new_size: int) -> GPT:
    """The model with `new_size` token ids, ids from its old vocab_size on initialised as the mean
    of the existing rows (embedding and an untied head). Changes `model` in place and returns it."""
    if not isinstance(model, GPT):
        raise UserError(f"growing the vocabulary needs a GPT, got {type(model).__name__}")
    cfg = model.cfg
    if new_size < cfg.vocab_size:
        raise UserError(f"cannot shrink the vocabulary from {cfg.vocab_size} to {new_size} tokens")
    if new_size == cfg.vocab_size:
        return model
    new_cfg = dataclasses.replace(cfg, vocab_size=new_size)
    old, padded = cfg.vocab_size, new_cfg.padded_vocab
    model.wte.embedding.set_value(grown(model.wte.embedding[...], old, new_size, padded, axis=0))
    model.wte.num_embeddings = padded
    if not cfg.tie_embeddings:
        model.lm_head.kernel.set_value(grown(model.lm_head.kernel[...], old, new_size, padded, axis=1))
        model.lm_head.out_features = padded
    model.cfg = new_cfg
    return model
