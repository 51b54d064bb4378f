"""The GPT: token embedding -> N pre-norm transformer blocks -> final norm -> head.

One file, read top to bottom. Every switch the experiments ablate (norm, activation,
positional encoding, initialisation, dropout sites, bias, tied head, dtypes) is a small
function or class beside the model, chosen by a string in the config from one of the
tables NORMS, ACTIVATIONS, INITS and POS_ENCODINGS. Parameters carry logical axis names
(`vocab`, `embed`, `heads`, `mlp`) that `gptjax.train.mesh` maps onto a device mesh, so one
config decides data, FSDP and tensor-parallel layouts.

The residual stream is float32 whatever `dtype` is: with `dtype=bfloat16` only the matmuls
(and attention) run in bfloat16, as in mixed-precision training of GPT-2 and its successors.

Shapes: B batch, T query length, S key length, C n_embd, N n_head, H head size, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from gptjax.model import cpu_matmul
from gptjax.model.causal_batchnorm import CausalBatchNorm


def axes(*names: str | None) -> dict:
    """Logical axis names stored on a parameter (read by `gptjax.train.mesh`)."""
    return {"logical_axes": names}


# ----------------------------------------------------------------------------- switches


class Identity(nnx.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return x


def layer_norm(dim: int, *, bias: bool, eps: float, param_dtype, rngs: nnx.Rngs) -> nnx.Module:
    return nnx.LayerNorm(dim, epsilon=eps, use_bias=bias, param_dtype=param_dtype, scale_metadata=axes("embed"),
                         bias_metadata=axes("embed"), rngs=rngs)


def rms_norm(dim: int, *, bias: bool, eps: float, param_dtype, rngs: nnx.Rngs) -> nnx.Module:
    return nnx.RMSNorm(dim, epsilon=eps, param_dtype=param_dtype, scale_metadata=axes("embed"), rngs=rngs)


def batch_norm(dim: int, *, bias: bool, eps: float, param_dtype, rngs: nnx.Rngs) -> nnx.Module:
    """Normalises over batch *and* time in training, so a position sees statistics of later
    positions: it is here to be ablated, not recommended."""
    return nnx.BatchNorm(dim, epsilon=eps, use_bias=bias, momentum=0.9, param_dtype=param_dtype,
                         scale_metadata=axes("embed"), bias_metadata=axes("embed"), rngs=rngs)


def causal_batch_norm(dim: int, *, bias: bool, eps: float, param_dtype, rngs: nnx.Rngs) -> nnx.Module:
    """Per-position statistics over the batch (see `causal_batchnorm`): a batch norm that keeps the model causal."""
    return CausalBatchNorm(dim, epsilon=eps, use_bias=bias, momentum=0.9, param_dtype=param_dtype,
                           scale_metadata=axes("embed"), bias_metadata=axes("embed"), rngs=rngs)


def no_norm(dim: int, **_) -> nnx.Module:
    return Identity()


NORMS = {"layernorm": layer_norm, "rmsnorm": rms_norm, "batchnorm": batch_norm,
         "causal_batchnorm": causal_batch_norm, "none": no_norm}
# The norms whose training-time statistics come from the batch (called with `train`).
BATCH_NORMS = ("batchnorm", "causal_batchnorm")

# `swiglu` gates the MLP: silu(x W_gate) * (x W_fc).
ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "relu2": lambda x: jnp.square(jax.nn.relu(x)),
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.01),
    "elu": jax.nn.elu,
    "swiglu": jax.nn.silu,
    # Saturating activations, the classic vanishing-gradient case the activation claim contrasts.
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
}

# name -> (scale -> initializer): the init's standard deviation times `scale`, which is below 1 on
# residual projections under `residual_scaling`. `normal` is GPT-2's N(0, 0.02); `xavier` is Glorot
# uniform and `he` He normal (variance_scaling(1, fan_avg, uniform) and (2, fan_in, truncated normal)).
INITS = {
    "normal": lambda scale: nnx.initializers.normal(0.02 * scale),
    "xavier": lambda scale: nnx.initializers.variance_scaling(scale ** 2, "fan_avg", "uniform"),
    "he": lambda scale: nnx.initializers.variance_scaling(2.0 * scale ** 2, "fan_in", "truncated_normal"),
}


def sinusoidal_table(length: int, dim: int) -> jax.Array:
    """The fixed encoding of "Attention is all you need": sin/cos at geometric frequencies."""
    pos = jnp.arange(length, dtype=jnp.float32)[:, None]
    freq = jnp.exp(-math.log(10000.0) * jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    table = jnp.zeros((length, dim), jnp.float32)
    table = table.at[:, 0::2].set(jnp.sin(pos * freq))
    return table.at[:, 1::2].set(jnp.cos(pos * freq[: dim // 2]))


class Rotary(NamedTuple):
    """RoPE's angles for each token: attention rotates pairs (x1, x2) of every query and key
    head by them. cos, sin: (B, T, 1, H/2) float32."""

    cos: jax.Array
    sin: jax.Array

    @classmethod
    def at(cls, positions: jax.Array, head_dim: int, theta: float) -> "Rotary":
        half = head_dim // 2
        freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
        angle = positions[..., None, None].astype(jnp.float32) * freq
        return cls(jnp.cos(angle), jnp.sin(angle))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x (B, T, N, H), rotated in float32 and returned in its own dtype."""
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
        return jnp.concatenate([x1 * self.cos - x2 * self.sin, x2 * self.cos + x1 * self.sin], axis=-1).astype(x.dtype)


# Each positional encoding maps (model, token embeddings, positions (B, T)) to the embeddings
# the blocks see and the rotation attention applies (None: attention sees no positions).
POS_ENCODINGS = {
    "learned": lambda gpt, x, positions: (x + gpt.wpe(positions), None),
    "sinusoidal": lambda gpt, x, positions: (
        x + sinusoidal_table(gpt.cfg.block_size, gpt.cfg.n_embd)[positions].astype(x.dtype), None),
    "rope": lambda gpt, x, positions: (
        x, Rotary.at(positions, gpt.cfg.n_embd // gpt.cfg.n_head, gpt.cfg.rope_theta)),
    "none": lambda gpt, x, positions: (x, None),
}

SWITCHES = {"norm": NORMS, "activation": ACTIVATIONS, "init": INITS, "pos_encoding": POS_ENCODINGS}


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """The model's hyperparameters (`config.model` resolved: dtypes, dropout per site).

    The embedding (and an untied head) has `padded_vocab` rows, `vocab_size` rounded up to a
    multiple of `vocab_pad` (fast matmuls, even tensor-parallel shards); the logits keep the
    `vocab_size` real ids only, so a padded id can never be sampled or scored.
    """

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
    residual_scaling: bool = True
    pos_encoding: str = "learned"
    rope_theta: float = 10000.0
    qk_norm: bool = False
    bias: bool = True
    tie_embeddings: bool = True
    vocab_pad: int = 1
    embd_dropout: float = 0.0
    attn_dropout: float = 0.0
    resid_dropout: float = 0.0
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        for name, table in SWITCHES.items():
            if getattr(self, name) not in table:
                raise ValueError(f"model.{name}={getattr(self, name)!r}; expected one of {tuple(table)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}")

    @property
    def padded_vocab(self) -> int:
        return -(-self.vocab_size // self.vocab_pad) * self.vocab_pad

    @classmethod
    def from_config(cls, model_config, vocab_size: int) -> "GPTConfig":
        """Build from `config.model`; unset dropout sites take `model.dropout`."""
        c = model_config
        site = lambda v: c.dropout if v is None else v  # noqa: E731
        return cls(vocab_size=vocab_size, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
                   n_embd=c.n_embd, mlp_ratio=c.mlp_ratio, norm=c.norm, norm_eps=c.norm_eps,
                   activation=c.activation, init=c.init,
                   residual_scaling=c.get("residual_scaling", True), pos_encoding=c.pos_encoding,
                   rope_theta=c.rope_theta, qk_norm=c.qk_norm, bias=c.bias,
                   tie_embeddings=c.tie_embeddings, vocab_pad=c.get("vocab_pad", 1),
                   embd_dropout=site(c.embd_dropout), attn_dropout=site(c.attn_dropout),
                   resid_dropout=site(c.resid_dropout), remat=c.remat, dtype=jnp.dtype(c.dtype),
                   param_dtype=jnp.dtype(c.param_dtype))


class Norm(nnx.Module):
    """The configured norm with one call signature (BatchNorm alone depends on `train`)."""

    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.kind = cfg.norm
        self.norm = NORMS[cfg.norm](cfg.n_embd, bias=cfg.bias, eps=cfg.norm_eps, param_dtype=cfg.param_dtype,
                                    rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.kind in BATCH_NORMS:
            return self.norm(x, use_running_average=not train)
        return self.norm(x)


def residual_scale(cfg: GPTConfig) -> float:
    """The init scale of a projection into the residual stream: 1/sqrt(2 n_layer) under
    `residual_scaling` (GPT-2: the stream's variance stays flat over 2 n_layer branches), else 1."""
    return 1.0 / math.sqrt(2 * cfg.n_layer) if cfg.residual_scaling else 1.0


def rms(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Parameter-free RMS normalisation, used for QK-norm."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)


# ----------------------------------------------------------------------------- decoding inputs


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


class Decoding(NamedTuple):
    """What a cached decoding call adds to the training path: the cache, each token's
    position (B, T), and kv_mask (B, S_max), False on cache slots a row must not see."""

    cache: KVCache
    positions: jax.Array
    kv_mask: jax.Array | None = None

    def layer(self, i: int) -> "LayerCache":
        return LayerCache(self.cache.k[i], self.cache.v[i], self.cache.index, self.kv_mask)


class LayerCache(NamedTuple):
    """One layer's share of a `Decoding`."""

    k: jax.Array
    v: jax.Array
    index: jax.Array
    kv_mask: jax.Array | None

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[jax.Array, "LayerCache"]:
        """Attention of a chunk (B, T, N, H) over the cached slots and itself; the chunk's keys and
        values written to the cache. Reading before writing lets XLA update the cache in place."""
        y = cached_attention(q, k, v, self.k, self.v, self.index, self.kv_mask)
        at = (0, 0, self.index, 0)
        write = lambda cache, new: jax.lax.dynamic_update_slice(  # noqa: E731
            cache, new.transpose(0, 2, 1, 3).astype(cache.dtype), at)
        return y, self._replace(k=write(self.k, k), v=write(self.v, v))


# ----------------------------------------------------------------------------- attention


def causal_mask(t: int) -> jax.Array:
    """(1, T, T) boolean: query i sees keys 0..i."""
    return (jnp.arange(t)[None, :] <= jnp.arange(t)[:, None])[None]


def cached_attention(q, k, v, ck, cv, index, kv_mask) -> jax.Array:
    """Attention of a chunk q, k, v (B, T, N, H) at slots index.. over the cache slots before it
    (ck, cv: (B, N, S, H)) and causally over itself; kv_mask (B, S) drops padding slots."""
    T, S = q.shape[1], ck.shape[2]
    old = jnp.arange(S)[None, None, None, :] < index
    new = causal_mask(T)[None]
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


def attention_implementation(backend: str, dtype, head_dim: int, dropout_rate: float) -> str:
    """Which causal attention runs: `cudnn` (cuDNN's fused flash attention: GPU, bfloat16 or
    float16, head size a multiple of 8 up to 128), `xla` (`jax.nn.dot_product_attention`'s
    XLA path on other accelerators), or `einsum` (the two plain products below: CPU, and
    attention dropout, which the fused kernels lack). JAX itself never picks cuDNN."""
    if backend == "cpu" or dropout_rate > 0.0:
        return "einsum"
    if backend in ("gpu", "cuda") and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) \
            and head_dim % 8 == 0 and head_dim <= 128:
        return "cudnn"
    return "xla"


def attention(q, k, v, dropout: nnx.Dropout | None, rngs, mask: jax.Array | None = None) -> jax.Array:
    """Softmax attention of (B, T, N, H) query heads over (B, S, N, H) key/value heads.

    mask None is causal (S = T); otherwise a boolean (B, 1, T, S) or broadcastable array of
    the keys each query may see (packed conversations, padding, cross-attention). On CPU,
    moving heads ahead of time once makes both products plain batched matmuls, which beats
    `jax.nn.dot_product_attention` by about 4% of a train step for short contexts.
    """
    rate = 0.0 if dropout is None else dropout.rate
    implementation = attention_implementation(jax.default_backend(), q.dtype, q.shape[-1], rate)
    fused = dict(is_causal=True) if mask is None else dict(mask=mask)
    if implementation == "cudnn":
        try:
            return jax.nn.dot_product_attention(q, k, v, implementation="cudnn", **fused)
        except (NotImplementedError, RuntimeError):  # cuDNN missing or too old for this GPU
            implementation = "xla"
    if implementation == "xla":
        return jax.nn.dot_product_attention(q, k, v, implementation="xla", **fused)
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
    scores = jnp.einsum("bnth,bnsh->bnts", q, k, preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])
    if mask is None:
        mask = causal_mask(q.shape[2])[None]
    weights = jax.nn.softmax(jnp.where(mask, scores, jnp.finfo(jnp.float32).min), axis=-1)
    if rate > 0.0:
        weights = dropout(weights, deterministic=False, rngs=rngs)
    return jnp.einsum("bnts,bnsh->bnth", weights.astype(v.dtype), v).transpose(0, 2, 1, 3)


# ----------------------------------------------------------------------------- blocks


def rows_dot_general(x, kernel, dimension_numbers, **kwargs) -> jax.Array:
    """(..., in) @ (in, out) as one matmul over all leading rows: `nnx.Linear`'s dot_general.

    From a 3-D product XLA's CPU backend derives the kernel gradient through a transposed
    copy of the activations; from the 2-D one it does not (7-12% of a small GPT's step).
    A decode step's few float32 rows by a large kernel go to `cpu_matmul` on a CPU.
    """
    rows = x.reshape(-1, x.shape[-1])
    if not any(kwargs.values()) and cpu_matmul.applies_float(rows, kernel):
        return cpu_matmul.float_columns(rows, kernel).reshape(*x.shape[:-1], -1)
    return jax.lax.dot_general(rows, kernel, (((1,), (0,)), ((), ())), **kwargs).reshape(*x.shape[:-1], -1)


def linear(cfg: GPTConfig, din: int, dout: int, in_axis: str, out_axis: str, rngs: nnx.Rngs,
           scale: float = 1.0, bias: bool | None = None) -> nnx.Linear:
    """A matmul in the compute dtype: its float32 input is cast to `cfg.dtype` inside."""
    return nnx.Linear(din, dout, use_bias=cfg.bias if bias is None else bias, dtype=cfg.dtype,
                      param_dtype=cfg.param_dtype, kernel_init=INITS[cfg.init](scale),
                      kernel_metadata=axes(in_axis, out_axis), bias_metadata=axes(out_axis),
                      dot_general=rows_dot_general, rngs=rngs)


class CausalSelfAttention(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.n_head, self.head_dim, self.qk_norm = cfg.n_head, cfg.n_embd // cfg.n_head, cfg.qk_norm
        self.c_attn = linear(cfg, cfg.n_embd, 3 * cfg.n_embd, "embed", "heads", rngs)
        self.c_proj = linear(cfg, cfg.n_embd, cfg.n_embd, "heads", "embed", rngs, residual_scale(cfg))
        self.attn_dropout = nnx.Dropout(cfg.attn_dropout)
        self.resid_dropout = nnx.Dropout(cfg.resid_dropout)

    def __call__(self, x, rotary: Rotary | None, cache: LayerCache | None, rngs, *, train: bool, mask=None):
        B, T, C = x.shape
        q, k, v = (t.reshape(B, T, self.n_head, self.head_dim) for t in jnp.split(self.c_attn(x), 3, axis=-1))
        if rotary is not None:
            q, k = rotary(q), rotary(k)
        if self.qk_norm:
            q, k = rms(q), rms(k)
        if cache is None:
            y = attention(q, k, v, self.attn_dropout if train else None, rngs, mask)
        else:
            y, cache = cache.attend(q, k, v)
        y = self.c_proj(y.reshape(B, T, C))
        return self.resid_dropout(y, deterministic=not train, rngs=rngs), cache


class MLP(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.act, self.gated = ACTIVATIONS[cfg.activation], cfg.activation == "swiglu"
        hidden = cfg.mlp_ratio * cfg.n_embd
        if self.gated:  # keep the parameter count of the ungated MLP
            hidden = int(2 * hidden / 3)
            self.c_gate = linear(cfg, cfg.n_embd, hidden, "embed", "mlp", rngs)
        self.c_fc = linear(cfg, cfg.n_embd, hidden, "embed", "mlp", rngs)
        self.c_proj = linear(cfg, hidden, cfg.n_embd, "mlp", "embed", rngs, residual_scale(cfg))
        self.dropout = nnx.Dropout(cfg.resid_dropout)

    def __call__(self, x, rngs, *, train: bool):
        h = self.act(self.c_gate(x)) * self.c_fc(x) if self.gated else self.act(self.c_fc(x))
        return self.dropout(self.c_proj(h), deterministic=not train, rngs=rngs)


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.ln_1 = Norm(cfg, rngs)
        self.attn = CausalSelfAttention(cfg, rngs)
        self.ln_2 = Norm(cfg, rngs)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x, rotary=None, cache=None, rngs=None, *, train: bool = False, mask=None):
        a, cache = self.attn(self.ln_1(x, train), rotary, cache, rngs, train=train, mask=mask)
        x = x + a
        x = x + self.mlp(self.ln_2(x, train), rngs, train=train)
        return x, cache


# ----------------------------------------------------------------------------- the model


def packed_layout(segments: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mask (B, 1, T, T), positions (B, T)) of rows packed with several conversations:
    segments (B, T) numbers them; a token sees the earlier tokens of its own conversation only
    and its position restarts at each conversation's first token."""
    t = jnp.arange(segments.shape[1])
    mask = (segments[:, :, None] == segments[:, None, :]) & causal_mask(segments.shape[1])
    starts = jnp.concatenate([jnp.ones_like(segments[:, :1], bool), segments[:, 1:] != segments[:, :-1]], axis=1)
    return mask[:, None], t - jax.lax.cummax(jnp.where(starts, t, 0), axis=1)


class GPT(nnx.Module):
    """A decoder-only transformer language model.

    `model(idx)` returns next-token logits (float32) for every position; `model(idx,
    segments=s)` treats each row as packed conversations (see `packed_layout`). Cached decoding
    passes `decoding=Decoding(cache, positions, kv_mask)` and gets `(logits, cache)` back, the
    logits (B, 1, V) of the newest position only; see `gptjax.generate.decoder`.
    """

    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        V = cfg.padded_vocab
        # The lookup reads the table directly in float32 (the residual stream's dtype); the
        # tied head's matmul, `attend`, runs in the compute dtype.
        self.wte = nnx.Embed(V, cfg.n_embd, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                             embedding_init=nnx.initializers.normal(0.02),
                             embedding_metadata=axes("vocab", "embed"), rngs=rngs)
        if cfg.pos_encoding == "learned":
            self.wpe = nnx.Embed(cfg.block_size, cfg.n_embd, dtype=jnp.float32, param_dtype=cfg.param_dtype,
                                 embedding_init=nnx.initializers.normal(0.02),
                                 embedding_metadata=axes(None, "embed"), rngs=rngs)
        self.drop = nnx.Dropout(cfg.embd_dropout)
        self.h = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layer)])
        self.ln_f = Norm(cfg, rngs)
        if not cfg.tie_embeddings:
            self.lm_head = linear(cfg, cfg.n_embd, V, "embed", "vocab", rngs, bias=False)

    def __call__(self, idx: jax.Array, *, segments: jax.Array | None = None, decoding: Decoding | None = None,
                 train: bool = False, rngs: nnx.Rngs | None = None):
        """idx (B, T) int -> logits (B, T, V) float32, or ((B, 1, V) logits, cache) when decoding."""
        B, T = idx.shape
        positions = jnp.broadcast_to(jnp.arange(T), (B, T)) if decoding is None else decoding.positions
        mask = None
        if segments is not None:
            mask, positions = packed_layout(segments)
        # The table's rows as stored (not cast to the compute dtype first); a quantised table
        # (gptjax.model.quantize.Int8Embed) dequantises the rows it reads itself.
        rows = jnp.take(self.wte.embedding[...], idx, axis=0) if type(self.wte) is nnx.Embed else self.wte(idx)
        x = rows.astype(jnp.float32)
        x, rotary = POS_ENCODINGS[self.cfg.pos_encoding](self, x, positions)
        x = self.drop(x, deterministic=not train, rngs=rngs)

        def run_block(block, x, rotary, cache, rngs, mask):  # `train` is closed over: static under remat
            return block(x, rotary, cache, rngs, train=train, mask=mask)

        if self.cfg.remat and train:
            run_block = nnx.remat(run_block)
        caches = []
        for i, block in enumerate(self.h):
            x, cache = run_block(block, x, rotary, None if decoding is None else decoding.layer(i), rngs, mask)
            caches.append(cache)
        if decoding is None:
            return next_token_logits(self, self.ln_f(x, train))
        # Decoding samples from the newest position only: the head (the largest product of a
        # small model) is not run on a prefilled prompt's other positions.
        logits = next_token_logits(self, self.ln_f(x[:, -1:], train))
        return logits, KVCache(tuple(c.k for c in caches), tuple(c.v for c in caches), decoding.cache.index + T)


def next_token_logits(model: nnx.Module, x: jax.Array) -> jax.Array:
    """The head: (B, T, C) -> (B, T, V) float32 logits through the tied embedding or `lm_head`,
    the padded vocabulary's rows cut off so that no padded id is ever sampled or scored."""
    if model.cfg.tie_embeddings:
        logits = model.wte.attend(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
    else:
        logits = model.lm_head(x)
    return logits.astype(jnp.float32)[..., :model.cfg.vocab_size]
