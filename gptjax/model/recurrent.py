"""LSTM and GRU language models: the recurrent baselines the GPT is measured against.

embedding -> N recurrent layers (dropout on their inputs and output when training) -> head,
with the GPT's call signature, so the same loop, evaluation and decoders run them. Every
window starts from a zero state, as the GPT starts every window without memory.

The input projections of all time steps are one matrix product before the time scan; only
h @ W_h runs step by step, which is most of what makes these models trainable on a CPU.
Hidden size is `model.n_embd`; depth is `model.n_layer`; `model.dropout` is the dropout rate.

Shapes: B batch, T time, C hidden size, G gates x C, V vocab.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gptjax.model.gpt import axes

CELLS = ("lstm", "gru")


@dataclasses.dataclass(frozen=True)
class RecurrentConfig:
    vocab_size: int
    cell: str = "lstm"
    n_layer: int = 2
    hidden: int = 256
    dropout: float = 0.0
    tie_embeddings: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @classmethod
    def from_config(cls, model_config, vocab_size: int) -> "RecurrentConfig":
        c = model_config
        return cls(vocab_size=vocab_size, cell=c.kind, n_layer=c.n_layer, hidden=c.n_embd, dropout=c.dropout,
                   tie_embeddings=c.tie_embeddings, dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))


def lstm_bias(key, shape, dtype=jnp.float32) -> jax.Array:
    """Forget-gate bias 1, the rest 0: the cell starts by remembering (Jozefowicz et al., 2015)."""
    hidden = shape[0] // 4
    return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(1.0)


class RecurrentLayer(nnx.Module):
    """One LSTM or GRU layer over a whole window: (B, T, C) -> (B, T, C)."""

    def __init__(self, cfg: RecurrentConfig, rngs: nnx.Rngs):
        self.cell, self.dtype = cfg.cell, cfg.dtype
        gates = 4 if cfg.cell == "lstm" else 3
        common = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs, bias_metadata=axes("mlp"))
        self.wi = nnx.Linear(cfg.hidden, gates * cfg.hidden, kernel_init=nnx.initializers.xavier_uniform(),
                             bias_init=lstm_bias if cfg.cell == "lstm" else nnx.initializers.zeros,
                             kernel_metadata=axes("embed", "mlp"), **common)
        # The GRU's candidate gate needs the hidden bias inside r * (h W_hn + b_hn).
        self.wh = nnx.Linear(cfg.hidden, gates * cfg.hidden, use_bias=cfg.cell == "gru",
                             kernel_init=nnx.initializers.orthogonal(), kernel_metadata=axes("embed", "mlp"),
                             **common)

    def __call__(self, x: jax.Array) -> jax.Array:
        B, _, C = x.shape
        inputs = jnp.swapaxes(self.wi(x), 0, 1)  # (T, B, G): every input projection at once
        step = self.lstm_step if self.cell == "lstm" else self.gru_step
        carry = (jnp.zeros((B, C), jnp.float32),) * (2 if self.cell == "lstm" else 1)
        _, hs = jax.lax.scan(step, carry, inputs)
        return jnp.swapaxes(hs, 0, 1).astype(x.dtype)

    def lstm_step(self, carry, gx):
        h, c = carry
        g = gx.astype(jnp.float32) + self.wh(h.astype(self.dtype)).astype(jnp.float32)
        i, f, u, o = jnp.split(g, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(u)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def gru_step(self, carry, gx):
        (h,) = carry
        xr, xz, xn = jnp.split(gx.astype(jnp.float32), 3, axis=-1)
        hr, hz, hn = jnp.split(self.wh(h.astype(self.dtype)).astype(jnp.float32), 3, axis=-1)
        r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h = (1.0 - z) * n + z * h
        return (h,), h


class RecurrentLM(nnx.Module):
    """A stacked LSTM or GRU language model with next-token logits at every position."""

    def __init__(self, cfg: RecurrentConfig, *, rngs: nnx.Rngs):
        if cfg.cell not in CELLS:
            raise ValueError(f"recurrent cell {cfg.cell!r}; expected one of {CELLS}")
        self.cfg = cfg
        # Unit-variance embeddings: at the GPT's 0.02 the gates barely see their input and learning stalls.
        self.wte = nnx.Embed(cfg.vocab_size, cfg.hidden, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                             embedding_init=nnx.initializers.normal(1.0),
                             embedding_metadata=axes("vocab", "embed"), rngs=rngs)
        self.layers = nnx.List([RecurrentLayer(cfg, rngs) for _ in range(cfg.n_layer)])
        self.drop = nnx.Dropout(cfg.dropout)
        if not cfg.tie_embeddings:
            self.lm_head = nnx.Linear(cfg.hidden, cfg.vocab_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                      kernel_init=nnx.initializers.xavier_uniform(),
                                      kernel_metadata=axes("embed", "vocab"), bias_metadata=axes("vocab"),
                                      rngs=rngs)

    def __call__(self, idx: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None) -> jax.Array:
        """idx (B, T) int -> logits (B, T, V) float32; position t sees tokens 0..t only."""
        x = self.wte(idx)
        for layer in self.layers:
            x = layer(self.drop(x, deterministic=not train, rngs=rngs))
        x = self.drop(x, deterministic=not train, rngs=rngs)
        logits = self.wte.attend(x) if self.cfg.tie_embeddings else self.lm_head(x)
        return logits.astype(jnp.float32)
