"""Batch normalisation that keeps a language model causal in training.

`nnx.BatchNorm` reduces over every axis but the features: on (B, T, C) activations its training
statistics mix all T positions, so the normalised value at position t depends on the tokens
after t, and a model trained that way reads the future it is asked to predict. Here the
statistics of position t are taken over the batch axis only, at that position:

    y[b, t] = (x[b, t] - mean_b x[:, t]) / sqrt(var_b x[:, t] + eps) * scale + bias

Position t's statistics come from the rows' positions t, which depend (through the causal
layers below) on tokens at positions <= t only; no later position enters, so the layer is
causal in training as well as at evaluation. (Rows of a batch do see each other's statistics,
as in any batch norm; they are different windows, not each other's future.)

Evaluation uses running averages of the per-channel statistics, pooled over positions, so
it needs no position index and works unchanged for cached decoding one token at a time. The
price is a train/eval mismatch at positions whose statistics differ from the pooled ones,
one of the things the batch-norm claim measures. Training needs at least 2 rows per micro-batch.

Written here because flax's BatchNorm has no way to keep an axis out of the reduction while
keeping running statistics per feature only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class CausalBatchNorm(nnx.Module):
    """Per-position batch statistics in training, running averages at evaluation.

    Called as `norm(x, use_running_average=...)` like `nnx.BatchNorm`, so `gpt.Norm` can hold
    either; x is (B, T, C) (or (B, C)).
    """

    def __init__(self, num_features: int, *, epsilon: float = 1e-5, momentum: float = 0.9, use_bias: bool = True,
                 param_dtype=jnp.float32, scale_metadata: dict | None = None, bias_metadata: dict | None = None,
                 rngs: nnx.Rngs | None = None):
        self.epsilon, self.momentum, self.use_bias = epsilon, momentum, use_bias
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype), **(scale_metadata or {}))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype), **(bias_metadata or {})) if use_bias else None
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

    def __call__(self, x: jax.Array, use_running_average: bool = True) -> jax.Array:
        x32 = x.astype(jnp.float32)
        if use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            mean = x32.mean(axis=0, keepdims=True)  # (1, T, C): over the batch, at each position
            var = jnp.square(x32 - mean).mean(axis=0, keepdims=True)
            pooled = tuple(range(x.ndim - 1))
            m = self.momentum
            self.mean[...] = m * self.mean[...] + (1 - m) * mean.mean(axis=pooled)
            self.var[...] = m * self.var[...] + (1 - m) * var.mean(axis=pooled)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * self.scale[...].astype(jnp.float32)
        if self.use_bias:
            y = y + self.bias[...].astype(jnp.float32)
        return y.astype(x.dtype)
