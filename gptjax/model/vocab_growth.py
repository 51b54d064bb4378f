"""Grow a GPT's vocabulary: new token rows for tokens added to its tokenizer (the chat role
tokens added to GPT-2's BPE before fine-tuning on conversations).

A new row starts as the mean of the existing rows, so the new tokens' logits start near the
average logit instead of dominating or vanishing, and their embeddings lie inside the cloud of
the model's tokens (as J. Hewitt's note "Initializing new word embeddings for pretrained
language models", 2021, recommends). Since the rows of the old ids (and, in a tied head, their
output rows) are untouched, the logits of the old ids do not change; only new columns appear.
Rows past the new vocab_size up to the `vocab_pad` multiple stay zeros that the logits drop, so
a padded id is never sampled or scored. The new rows start equal to each other; full fine-tuning
separates them, since each role token occurs in its own places.
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


# Token tables of a GPT's parameters by path, and the axis that runs over the vocabulary.
TABLES = {("wte", "embedding"): 0, ("lm_head", "kernel"): 1}


def grow_params(params: nnx.State, old: int, new: int, vocab_pad: int = 1) -> nnx.State:
    """A GPT's `nnx.Param` state (e.g. a checkpoint's, before any model is built) with its token
    tables grown from `old` to `new` ids as `grow_vocab` grows them, padded to a multiple of
    `vocab_pad` rows."""
    if new < old:
        raise UserError(f"cannot shrink the vocabulary from {old} to {new} tokens")
    padded = -(-new // vocab_pad) * vocab_pad
    leaves, found = [], 0
    for path, var in nnx.to_flat_state(params):
        axis = TABLES.get(tuple(path))
        if axis is not None:
            var, found = var.replace(grown(var.get_value(), old, new, padded, axis)), found + 1
        leaves.append((path, var))
    if not found:
        raise UserError("growing the vocabulary needs a GPT's token embedding (wte.embedding); "
                        "this model has none")
    return nnx.from_flat_state(leaves)


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
