"""The GPT: token embedding -> N pre-norm transformer blocks -> final norm -> head.

One file, read top to bottom. Every switch the experiments ablate (norm, activation,
positional encoding, initialisation, dropout sites, bias, tied head, dtypes) is a small
function or class beside the model, chosen by a string in the config. Parameters carry
logical axis names (`vocab`, `embed`, `heads`, `mlp`) that `gptjax.train.mesh` maps onto
a device mesh, so one config decides data, FSDP and tensor-parallel layouts.

Shapes: B batch, T query length, S key length, C n_embd, N n_head, H head size, V vocab.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

NORMS = ("layernorm", "rmsnorm", "batchnorm", "none")
ACTIVATIONS = ("gelu", "relu", "relu2", "leaky_relu", "elu", "swiglu")
INITS = ("normal", "xavier", "he")
POS_ENCODINGS = ("learned", "sinusoidal", "rope", "none")


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """The model's hyperparameters (`config.model` resolved: dtypes, dropout per site)."""

    vocab_size: int
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    mlp_ratio: int = 4
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    activation: str = "gelu"
    init: str = "normal"
    pos_encoding: str = "learned"
    rope_theta: float = 10000.0
    qk_norm: bool = False
    bias: bool = True
    tie_embeddings: bool = True
    embd_dropout: float = 0.0
    attn_dropout: float = 0.0
    resid_dropout: float = 0.0
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @classmethod
    def from_config(cls, model_config, vocab_size: int) -> "GPTConfig":
        """Build from `config.model`; unset dropout sites take `model.dropout`."""
        c = model_config
        site = lambda v: c.dropout if v is None else v  # noqa: E731
        return cls(vocab_size=vocab_size, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
                   n_embd=c.n_embd, mlp_ratio=c.mlp_ratio, norm=c.norm, norm_eps=c.norm_eps,
                   activation=c.activation, init=c.init, pos_encoding=c.pos_encoding,
                   rope_theta=c.rope_theta, qk_norm=c.qk_norm, bias=c.bias,
                   tie_embeddings=c.tie_embeddings, embd_dropout=site(c.embd_dropout),
                   attn_dropout=site(c.attn_dropout), resid_dropout=site(c.resid_dropout),
                   remat=c.remat, dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))


def axes(*names: str | None) -> dict:
    """Logical axis names stored on a parameter (read by `gptjax.train.mesh`)."""
    return {"logical_axes": names}


# ----------------------------------------------------------------------------- switches


def kernel_init(init: str, scale: float = 1.0) -> nnx.Initializer:
    """`normal` is GPT-2's N(0, 0.02), scaled down on residual projections."""
    if init == "normal":
        return nnx.initializers.normal(0.02 * scale)
    if init == "xavier":
        return nnx.initializers.xavier_uniform()
    if init == "he":
        return nnx.initializers.he_normal()
    raise ValueError(f"model.init={init!r}; expected one of {INITS}")


class Identity(nnx.Module):
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return x


class Norm(nnx.Module):
    """LayerNorm, RMSNorm, BatchNorm or nothing, with one call signature.

    BatchNorm normalises over batch *and* time during training, so a position sees
    statistics of later positions: it is here to be ablated, not recommended.
    """

    def __init__(self, kind: str, dim: int, *, bias: bool, eps: float, param_dtype, rngs: nnx.Rngs):
        self.kind = kind
        meta = dict(scale_metadata=axes("embed"))
        if kind == "layernorm":
            self.norm = nnx.LayerNorm(dim, epsilon=eps, use_bias=bias, param_dtype=param_dtype,
                                      bias_metadata=axes("embed"), rngs=rngs, **meta)
        elif kind == "rmsnorm":
            self.norm = nnx.RMSNorm(dim, epsilon=eps, param_dtype=param_dtype, rngs=rngs, **meta)
        elif kind == "batchnorm":
            self.norm = nnx.BatchNorm(dim, epsilon=eps, use_bias=bias, momentum=0.9,
                                      param_dtype=param_dtype, bias_metadata=axes("embed"),
                                      rngs=rngs, **meta)
        elif kind == "none":
            self.norm = Identity()
        else:
            raise ValueError(f"model.norm={kind!r}; expected one of {NORMS}")

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.kind == "batchnorm":
            return self.norm(x, use_running_average=not train)
        return self.norm(x)


def activation(name: str, x: jax.Array) -> jax.Array:
    if name == "gelu":
        return jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu(x)
    if name == "relu2":
        return jnp.square(jax.nn.relu(x))
    if name == "leaky_relu":
        return jax.nn.leaky_relu(x, 0.01)
    if name == "elu":
        return jax.nn.elu(x)
    raise ValueError(f"model.activation={name!r}; expected one of {ACTIVATIONS}")


def sinusoidal_table(length: int, dim: int) -> jax.Array:
    """The fixed encoding of "Attention is all you need": sin/cos at geometric frequencies."""
    pos = jnp.arange(length, dtype=jnp.float32)[:, None]
    freq = jnp.exp(-math.log(10000.0) * jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    table = jnp.zeros((length, dim), jnp.float32)
    table = table.at[:, 0::2].set(jnp.sin(pos * freq))
    return table.at[:, 1::2].set(jnp.cos(pos * freq[: dim // 2]))


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding: rotate pairs (x1, x2) of each head by position-dependent angles.

    x: (B, T, N, H); positions: (B, T). Computed in float32, returned in x's dtype.
    """
    half = x.shape[-1] // 2
    freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions[..., None, None].astype(jnp.float32) * freq  # (B, T, 1, H/2)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def rms(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Parameter-free RMS normalisation, used for QK-norm."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)


# ----------------------------------------------------------------------------- blocks


class KVCache(NamedTuple):
    """Keys and values for decoding: one (B, N, S_max, H) array per layer in each tuple.

    `index` is the next slot to write (one for the whole batch: prompts are left-padded).
    Separate, head-major arrays let XLA update each in place and read it without a copy.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    index: jax.Array

    @classmethod
    def zeros(cls, cfg, batch: int, length: int, dtype=jnp.float32) -> "KVCache":
        shape = (batch, cfg.n_head, length, cfg.n_embd // cfg.n_head)
        layers = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layer))  # noqa: E731
        return cls(layers(), layers(), jnp.zeros((), jnp.int32))


def rows_dot_general(x, kernel, dimension_numbers, **kwargs) -> jax.Array:
    """(..., in) @ (in, out) as one matmul over all leading rows: `nnx.Linear`'s dot_general.

    From a 3-D product XLA's CPU backend derives the kernel gradient through a transposed
    copy of the activations; from the 2-D one it does not (7-12% of a small GPT's step).
    """
    rows = x.reshape(-1, x.shape[-1])
    return jax.lax.dot_general(rows, kernel, (((1,), (0,)), ((), ())), **kwargs).reshape(*x.shape[:-1], -1)


def linear(cfg, din: int, dout: int, in_axis: str, out_axis: str, rngs: nnx.Rngs,
           scale: float = 1.0) -> nnx.Linear:
    return nnx.Linear(din, dout, use_bias=cfg.bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                      kernel_init=kernel_init(cfg.init, scale), kernel_metadata=axes(in_axis, out_axis),
                      bias_metadata=axes(out_axis), dot_general=rows_dot_general, rngs=rngs)


class CausalSelfAttention(nnx.Module):
    def __init__(self, cfg, rngs: nnx.Rngs):
        self.cfg = cfg
        self.n_head, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        resid_scale = 1.0 / math.sqrt(2 * cfg.n_layer)
        self.c_attn = linear(cfg, cfg.n_embd, 3 * cfg.n_embd, "embed", "heads", rngs)
        self.c_proj = linear(cfg, cfg.n_embd, cfg.n_embd, "heads", "embed", rngs, resid_scale)
        self.attn_dropout = nnx.Dropout(cfg.attn_dropout)
        self.resid_dropout = nnx.Dropout(cfg.resid_dropout)

    def __call__(self, x, positions, kv_mask, cache_kv, cache_index, train, rngs):
        B, T, C = x.shape
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)
        q, k, v = (t.reshape(B, T, self.n_head, self.head_dim) for t in (q, k, v))
        if self.cfg.pos_encoding == "rope":
            q = apply_rope(q, positions, self.cfg.rope_theta)
            k = apply_rope(k, positions, self.cfg.rope_theta)
        if self.cfg.qk_norm:
            q, k = rms(q), rms(k)

        if cache_kv is None:  # training / full recomputation: plain causal attention
            mask = None if kv_mask is None else causal_mask(T, T, 0)[None] & kv_mask[:, None, None, :]
        else:  # decoding: attend over the cached slots and this chunk, then cache the chunk
            ck, cv = cache_kv
            y = cached_attention(q, k, v, ck, cv, cache_index, kv_mask)
            at = (0, 0, cache_index, 0)
            cache_kv = (jax.lax.dynamic_update_slice(ck, k.transpose(0, 2, 1, 3).astype(ck.dtype), at),
                        jax.lax.dynamic_update_slice(cv, v.transpose(0, 2, 1, 3).astype(cv.dtype), at))
            y = self.c_proj(y.reshape(B, T, C))
            return self.resid_dropout(y, deterministic=not train, rngs=rngs), cache_kv
        y = attention(q, k.astype(q.dtype), v.astype(q.dtype), mask,
                      self.attn_dropout if train else None, rngs)
        y = self.c_proj(y.reshape(B, T, C))
        return self.resid_dropout(y, deterministic=not train, rngs=rngs), cache_kv


def causal_mask(t: int, s: int, offset) -> jax.Array:
    """(1, T, S) boolean: query i (at slot offset+i) sees key slots <= offset+i."""
    return (jnp.arange(s)[None, :] <= (offset + jnp.arange(t))[:, None])[None]


def cached_attention(q, k, v, ck, cv, index, kv_mask) -> jax.Array:
    """Attention of a chunk q, k, v (B, T, N, H) at slots index.. over the cache slots before it
    (ck, cv: (B, N, S, H)) and causally over itself; kv_mask (B, S) drops padding slots.

    The cache is read before the chunk is written to it, so XLA can update it in place.
    """
    T, S = q.shape[1], ck.shape[2]
    old = jnp.arange(S)[None, None, None, :] < index
    new = causal_mask(T, T, 0)[None]
    if kv_mask is not None:
        old = old & kv_mask[:, None, None, :]
        new = new & jax.lax.dynamic_slice_in_dim(kv_mask, index, T, axis=1)[:, None, None, :]
    lowest, scale = jnp.finfo(jnp.float32).min, 1.0 / math.sqrt(q.shape[-1])
    qh = q.transpose(0, 2, 1, 3)
    s_old = jnp.einsum("bnth,bnsh->bnts", qh, ck.astype(q.dtype)).astype(jnp.float32) * scale
    s_new = jnp.einsum("bnth,bsnh->bnts", qh, k).astype(jnp.float32) * scale
    s_old, s_new = jnp.where(old, s_old, lowest), jnp.where(new, s_new, lowest)
    top = jnp.maximum(s_old.max(-1, keepdims=True), s_new.max(-1, keepdims=True))
    e_old, e_new = jnp.exp(s_old - top), jnp.exp(s_new - top)
    total = e_old.sum(-1, keepdims=True) + e_new.sum(-1, keepdims=True)
    y = jnp.einsum("bnts,bnsh->btnh", (e_old / total).astype(q.dtype), cv.astype(q.dtype))
    return y + jnp.einsum("bnts,bsnh->btnh", (e_new / total).astype(q.dtype), v)


def attention(q, k, v, mask, dropout: nnx.Dropout | None, rngs) -> jax.Array:
    """Softmax attention of (B, T, N, H) heads; mask None means causal.

    On accelerators `jax.nn.dot_product_attention` picks fused kernels (cuDNN flash attention
    on GPU). On CPU, moving heads ahead of time once makes both products plain batched
    matmuls, which beats it by about 4% of a train step for short contexts.
    """
    if jax.default_backend() != "cpu" and (dropout is None or dropout.rate == 0.0):
        return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=mask is None)
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
    scores = jnp.einsum("bnth,bnsh->bnts", q, k, preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])
    if mask is None:
        mask = causal_mask(q.shape[2], k.shape[2], 0)[None]
    weights = jax.nn.softmax(jnp.where(mask, scores, jnp.finfo(jnp.float32).min), axis=-1)
    if dropout is not None and dropout.rate > 0.0:
        weights = dropout(weights, deterministic=False, rngs=rngs)
    return jnp.einsum("bnts,bnsh->bnth", weights.astype(v.dtype), v).transpose(0, 2, 1, 3)


class MLP(nnx.Module):
    def __init__(self, cfg, rngs: nnx.Rngs):
        self.activation = cfg.activation
        hidden = cfg.mlp_ratio * cfg.n_embd
        if cfg.activation == "swiglu":  # keep the parameter count of the 4x MLP
            hidden = int(2 * hidden / 3)
            self.c_gate = linear(cfg, cfg.n_embd, hidden, "embed", "mlp", rngs)
        self.c_fc = linear(cfg, cfg.n_embd, hidden, "embed", "mlp", rngs)
        self.c_proj = linear(cfg, hidden, cfg.n_embd, "mlp", "embed", rngs, 1.0 / math.sqrt(2 * cfg.n_layer))
        self.dropout = nnx.Dropout(cfg.resid_dropout)

    def __call__(self, x, train, rngs):
        if self.activation == "swiglu":
            h = jax.nn.silu(self.c_gate(x)) * self.c_fc(x)
        else:
            h = activation(self.activation, self.c_fc(x))
        return self.dropout(self.c_proj(h), deterministic=not train, rngs=rngs)


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        norm = dict(bias=cfg.bias, eps=cfg.norm_eps, param_dtype=cfg.param_dtype, rngs=rngs)
        self.ln_1 = Norm(cfg.norm, cfg.n_embd, **norm)
        self.attn = CausalSelfAttention(cfg, rngs)
        self.ln_2 = Norm(cfg.norm, cfg.n_embd, **norm)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x, positions, kv_mask, cache_kv, cache_index, train, rngs):
        a, cache_kv = self.attn(self.ln_1(x, train), positions, kv_mask, cache_kv, cache_index, train, rngs)
        x = x + a
        x = x + self.mlp(self.ln_2(x, train), train, rngs)
        return x, cache_kv


# ----------------------------------------------------------------------------- the model


class GPT(nnx.Module):
    """A decoder-only transformer language model.

    `__call__(idx)` returns next-token logits (float32) for every position. Decoding passes
    a `KVCache` and gets the updated cache back; see `gptjax.generate`.
    """

    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"model.n_embd={cfg.n_embd} is not divisible by model.n_head={cfg.n_head}")
        for name, value, allowed in (("norm", cfg.norm, NORMS), ("activation", cfg.activation, ACTIVATIONS),
                                     ("init", cfg.init, INITS), ("pos_encoding", cfg.pos_encoding, POS_ENCODINGS)):
            if value not in allowed:
                raise ValueError(f"model.{name}={value!r}; expected one of {allowed}")
        self.cfg = cfg
        self.wte = nnx.Embed(cfg.vocab_size, cfg.n_embd, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                             embedding_init=nnx.initializers.normal(0.02),
                             embedding_metadata=axes("vocab", "embed"), rngs=rngs)
        if cfg.pos_encoding == "learned":
            self.wpe = nnx.Embed(cfg.block_size, cfg.n_embd, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                 embedding_init=nnx.initializers.normal(0.02),
                                 embedding_metadata=axes(None, "embed"), rngs=rngs)
        self.drop = nnx.Dropout(cfg.embd_dropout)
        self.h = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layer)])
        self.ln_f = Norm(cfg.norm, cfg.n_embd, bias=cfg.bias, eps=cfg.norm_eps,
                         param_dtype=cfg.param_dtype, rngs=rngs)
        if not cfg.tie_embeddings:
            self.lm_head = nnx.Linear(cfg.n_embd, cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                                      param_dtype=cfg.param_dtype, kernel_init=kernel_init(cfg.init),
                                      kernel_metadata=axes("embed", "vocab"), dot_general=rows_dot_general,
                                      rngs=rngs)

    def __call__(self, idx: jax.Array, *, positions: jax.Array | None = None,
                 kv_mask: jax.Array | None = None, cache: KVCache | None = None,
                 train: bool = False, rngs: nnx.Rngs | None = None):
        """idx (B, T) int -> logits (B, T, V) float32, or (logits, cache) when a cache is given.

        positions (B, T): token positions (default 0..T-1, or from the cache index);
        kv_mask (B, S): False on key slots to ignore (padding); S is T, or the cache length.
        """
        B, T = idx.shape
        if positions is None:
            start = 0 if cache is None else cache.index
            positions = jnp.broadcast_to(start + jnp.arange(T), (B, T))
        x = self.wte(idx)
        if self.cfg.pos_encoding == "learned":
            x = x + self.wpe(positions)
        elif self.cfg.pos_encoding == "sinusoidal":
            x = x + sinusoidal_table(self.cfg.block_size, self.cfg.n_embd)[positions].astype(x.dtype)
        x = self.drop(x, deterministic=not train, rngs=rngs)

        new_k, new_v = [], []
        for i, block in enumerate(self.h):
            layer_cache = None if cache is None else (cache.k[i], cache.v[i])
            index = None if cache is None else cache.index
            if self.cfg.remat and train:
                x, layer_cache = nnx.remat(Block.__call__, static_argnums=(6,))(
                    block, x, positions, kv_mask, layer_cache, index, train, rngs)
            else:
                x, layer_cache = block(x, positions, kv_mask, layer_cache, index, train, rngs)
            if cache is not None:
                new_k.append(layer_cache[0])
                new_v.append(layer_cache[1])
        x = self.ln_f(x, train)

        if self.cfg.tie_embeddings:
            logits = self.wte.attend(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
        else:
            logits = self.lm_head(x)
        logits = logits.astype(jnp.float32)
        if cache is None:
            return logits
        return logits, KVCache(tuple(new_k), tuple(new_v), cache.index + T)
