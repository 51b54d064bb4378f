"""Text augmentations for language-model training: corrupt the inputs, keep the targets.

Each function takes a batch of windows (..., T + 1) and returns inputs (..., T) and targets
(..., T). Only the inputs change, so the model is still scored on (and learns) the real next
token, but from a context it has not seen verbatim: a memorised string no longer comes back
exactly, which is how augmentation is meant to curb overfitting. The validation and test
scores stay comparable with unaugmented runs because they never pass through here.

- `token_noise`: a fraction `rate` of input tokens replaced by uniformly random ids. The
  simplest corruption, the token-level analogue of input dropout; it trains robustness to a
  wrong character anywhere in the context.
- `span_mask`: spans of `span` consecutive input tokens replaced by `mask_id` (for the char
  tokenizer id 0, `<unk>`, which the text itself almost never contains), covering about `rate`
  of the inputs. Whole words disappear, so the model must predict from context further back
  rather than from the last few characters, the habit a small corpus teaches.
- `char_swap`: adjacent input tokens transposed at rate `rate`, a spelling perturbation (the
  commonest typing error) that keeps every character of the context but breaks exact n-gram
  matches.

Randomness comes from (seed, step) alone, through `jax.random`, so a resumed run sees the same
corruption as an uninterrupted one and the values do not depend on how the batch is sharded.
They are jax functions so they can run inside the compiled train step (step may be traced).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

AUGMENTATIONS = ("none", "token_noise", "span_mask", "char_swap")
SALT = {"token_noise": 1, "span_mask": 2, "char_swap": 3}  # independent streams per augmentation


class Augmented(NamedTuple):
    inputs: jax.Array
    targets: jax.Array


def step_key(seed: int, step, name: str) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), SALT[name]), step)


def token_noise(batch: jax.Array, seed: int, step, *, rate: float, vocab_size: int) -> Augmented:
    """Inputs with each token replaced, with probability `rate`, by a uniformly random id."""
    inputs, targets = batch[..., :-1], batch[..., 1:]
    hit_key, id_key = jax.random.split(step_key(seed, step, "token_noise"))
    hit = jax.random.bernoulli(hit_key, rate, inputs.shape)
    noise = jax.random.randint(id_key, inputs.shape, 0, vocab_size, inputs.dtype)
    return Augmented(jnp.where(hit, noise, inputs), targets)


def span_mask(batch: jax.Array, seed: int, step, *, rate: float, span: int, mask_id: int) -> Augmented:
    """Inputs with spans of `span` tokens set to `mask_id`; spans start with probability rate / span,
    so about `rate` of the inputs are masked (less where spans overlap)."""
    inputs, targets = batch[..., :-1], batch[..., 1:]
    starts = jax.random.bernoulli(step_key(seed, step, "span_mask"), rate / span, inputs.shape).astype(jnp.int32)
    # position i is masked when a span starts in (i - span, i]: a windowed sum of the starts
    total = jnp.cumsum(starts, axis=-1)
    before = jnp.pad(total, [(0, 0)] * (total.ndim - 1) + [(span, 0)])[..., :-span]
    return Augmented(jnp.where(total - before > 0, jnp.asarray(mask_id, inputs.dtype), inputs), targets)


def char_swap(batch: jax.Array, seed: int, step, *, rate: float) -> Augmented:
    """Inputs with adjacent pairs (i, i + 1) swapped, a swap starting at i with probability `rate`;
    a swap that would overlap the one before it is dropped, so swaps never chain."""
    inputs, targets = batch[..., :-1], batch[..., 1:]
    pad = [(0, 0)] * (inputs.ndim - 1)
    drawn = jax.random.bernoulli(step_key(seed, step, "char_swap"), rate, inputs[..., :-1].shape)
    previous = jnp.pad(drawn, pad + [(1, 0)])[..., :-1]
    first = jnp.pad(drawn & ~previous, pad + [(0, 1)])        # i takes i + 1
    second = jnp.pad(first, pad + [(1, 0)])[..., :-1]         # i + 1 takes i
    swapped = jnp.where(first, jnp.roll(inputs, -1, axis=-1), jnp.where(second, jnp.roll(inputs, 1, axis=-1), inputs))
    return Augmented(swapped, targets)


def augment(batch: jax.Array, seed: int, step, kind: str, *, rate: float, vocab_size: int, span: int = 3,
            mask_id: int = 0) -> Augmented:
    """The augmentation `kind` names (one of AUGMENTATIONS); "none" only splits inputs and targets."""
    if kind == "none":
        return Augmented(batch[..., :-1], batch[..., 1:])
    if kind == "token_noise":
        return token_noise(batch, seed, step, rate=rate, vocab_size=vocab_size)
    if kind == "span_mask":
        return span_mask(batch, seed, step, rate=rate, span=span, mask_id=mask_id)
    if kind == "char_swap":
        return char_swap(batch, seed, step, rate=rate)
    raise ValueError(f"data.augment={kind!r}; expected one of {AUGMENTATIONS}")
