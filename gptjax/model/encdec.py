"""The encoder-decoder transformer of "Attention is all you need", built from the GPT's switches.

A bidirectional encoder reads the source into one vector per source token (the memory); a
causal decoder reads the target so far, attends to its own past (self-attention) and to the
memory (cross-attention), and predicts the next target token. Norms, activation, initialisation,
positional encoding, QK-norm, bias, dropout sites and the tied head are the ones `gpt.py`
defines, chosen by the same config strings, so an ablation against the decoder-only GPT changes
the structure and nothing else. The token embedding is shared by encoder, decoder and head.

Decoding runs the encoder once, projects the memory into per-layer cross-attention keys and
values once (`cross_kv`), and keeps a `KVCache` for the decoder's self-attention, so each new
token costs one decoder pass over one position (`decode_step`, `generate_encdec`).

Shapes: B batch, S source length, T target length, C n_embd, N n_head, H head size, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gptjax.data.pairs import PairBatch
from gptjax.model.gpt import (MLP, POS_ENCODINGS, GPTConfig, KVCache, LayerCache, Norm, Rotary, attention, axes,
                              causal_mask, linear, next_token_logits, residual_scale, rms)


@dataclasses.dataclass(frozen=True)
class EncDecConfig(GPTConfig):
    """The GPT's hyperparameters plus the encoder's depth; `n_layer` is the decoder's depth."""

    n_encoder_layer: int = 2

    @classmethod
    def from_config(cls, model_config, vocab_size: int) -> "EncDecConfig":
        base = GPTConfig.from_config(model_config, vocab_size)
        return cls(**dataclasses.asdict(base), n_encoder_layer=model_config.n_encoder_layer)


class CrossKV(NamedTuple):
    """The memory projected to keys and values, one (B, S, N, H) array per decoder layer."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]


def key_mask(mask: jax.Array | None, t: int, s: int) -> jax.Array:
    """(B, S) keep-mask of key slots as a (B or 1, 1, T or 1, S) attention mask; None keeps all."""
    if mask is None:
        return jnp.ones((1, 1, t, s), bool)
    return mask.astype(bool)[:, None, None, :]


class Attention(nnx.Module):
    """Multi-head attention whose queries and keys/values may come from different sequences.

    Self-attention passes token positions (RoPE applies); cross-attention passes none, since
    source and target positions do not share one axis.
    """

    def __init__(self, cfg, rngs: nnx.Rngs):
        self.cfg = cfg
        self.n_head, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.c_q = linear(cfg, cfg.n_embd, cfg.n_embd, "embed", "heads", rngs)
        self.c_kv = linear(cfg, cfg.n_embd, 2 * cfg.n_embd, "embed", "heads", rngs)
        self.c_proj = linear(cfg, cfg.n_embd, cfg.n_embd, "heads", "embed", rngs, residual_scale(cfg))
        self.attn_dropout = nnx.Dropout(cfg.attn_dropout)
        self.resid_dropout = nnx.Dropout(cfg.resid_dropout)

    def heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:2], self.n_head, self.head_dim)

    def query(self, x: jax.Array, positions: jax.Array | None) -> jax.Array:
        q = self.heads(self.c_q(x))
        if positions is not None and self.cfg.pos_encoding == "rope":
            q = Rotary.at(positions, self.head_dim, self.cfg.rope_theta)(q)
        return rms(q) if self.cfg.qk_norm else q

    def key_value(self, x: jax.Array, positions: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        k, v = (self.heads(t) for t in jnp.split(self.c_kv(x), 2, axis=-1))
        if positions is not None and self.cfg.pos_encoding == "rope":
            k = Rotary.at(positions, self.head_dim, self.cfg.rope_theta)(k)
        return (rms(k) if self.cfg.qk_norm else k), v

    def project(self, y: jax.Array, train: bool, rngs) -> jax.Array:
        y = self.c_proj(y.reshape(*y.shape[:2], -1))
        return self.resid_dropout(y, deterministic=not train, rngs=rngs)

    def __call__(self, q, k, v, mask, train: bool, rngs) -> jax.Array:
        y = attention(q, k.astype(q.dtype), v.astype(q.dtype), self.attn_dropout if train else None, rngs, mask)
        return self.project(y, train, rngs)


class EncoderBlock(nnx.Module):
    """Pre-norm block over the source: every token attends to every real source token."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        self.ln_1, self.attn = Norm(cfg, rngs), Attention(cfg, rngs)
        self.ln_2, self.mlp = Norm(cfg, rngs), MLP(cfg, rngs)

    def __call__(self, x, positions, mask, train, rngs):
        h = self.ln_1(x, train)
        k, v = self.attn.key_value(h, positions)
        x = x + self.attn(self.attn.query(h, positions), k, v, mask, train, rngs)
        return x + self.mlp(self.ln_2(x, train), rngs, train=train)


class DecoderBlock(nnx.Module):
    """Pre-norm block over the target: causal self-attention, cross-attention to the memory, MLP."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        self.ln_1, self.self_attn = Norm(cfg, rngs), Attention(cfg, rngs)
        self.ln_2, self.cross_attn = Norm(cfg, rngs), Attention(cfg, rngs)
        self.ln_3, self.mlp = Norm(cfg, rngs), MLP(cfg, rngs)

    def __call__(self, x, positions, self_mask, cross_k, cross_v, cross_mask, cache: LayerCache | None, train, rngs):
        h = self.ln_1(x, train)
        q = self.self_attn.query(h, positions)
        k, v = self.self_attn.key_value(h, positions)
        if cache is None:
            a = self.self_attn(q, k, v, self_mask, train, rngs)
        else:  # decoding: attend over the cached slots and this chunk, then cache the chunk
            y, cache = cache.attend(q, k, v)
            a = self.self_attn.project(y, train, rngs)
        x = x + a
        x = x + self.cross_attn(self.cross_attn.query(self.ln_2(x, train), None), cross_k, cross_v, cross_mask,
                                train, rngs)
        return x + self.mlp(self.ln_3(x, train), rngs, train=train), cache


class EncoderDecoder(nnx.Module):
    """`__call__(src, tgt_in)` returns next-target-token logits (float32) at every target position.

    Masks are (B, S) / (B, T) booleans, False on padding. Sources and targets are right-padded, so
    the positions of real tokens do not depend on how much padding follows them.
    """

    def __init__(self, cfg: EncDecConfig, *, rngs: nnx.Rngs):
        if cfg.n_encoder_layer < 1:
            raise ValueError(f"model.n_encoder_layer={cfg.n_encoder_layer} must be at least 1")
        self.cfg = cfg
        embed = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, embedding_init=nnx.initializers.normal(0.02),
                     rngs=rngs)
        self.wte = nnx.Embed(cfg.vocab_size, cfg.n_embd, embedding_metadata=axes("vocab", "embed"), **embed)
        if cfg.pos_encoding == "learned":
            self.wpe = nnx.Embed(cfg.block_size, cfg.n_embd, embedding_metadata=axes(None, "embed"), **embed)
        self.drop = nnx.Dropout(cfg.embd_dropout)
        encoder_cfg = dataclasses.replace(cfg, n_layer=cfg.n_encoder_layer)  # residual scaling by its own depth
        self.encoder = nnx.List([EncoderBlock(encoder_cfg, rngs) for _ in range(cfg.n_encoder_layer)])
        self.ln_enc = Norm(cfg, rngs)
        self.decoder = nnx.List([DecoderBlock(cfg, rngs) for _ in range(cfg.n_layer)])
        self.ln_f = Norm(cfg, rngs)
        if not cfg.tie_embeddings:
            self.lm_head = linear(cfg, cfg.n_embd, cfg.vocab_size, "embed", "vocab", rngs, bias=False)

    def embed(self, idx: jax.Array, positions: jax.Array, train: bool, rngs) -> jax.Array:
        """Token embeddings plus the GPT's additive positional encoding (RoPE applies in attention)."""
        x = jnp.take(self.wte.embedding[...], idx, axis=0).astype(jnp.float32)
        x, _ = POS_ENCODINGS[self.cfg.pos_encoding](self, x, positions)
        return self.drop(x, deterministic=not train, rngs=rngs)

    def encode(self, src: jax.Array, src_mask: jax.Array | None = None, *, train: bool = False,
               rngs: nnx.Rngs | None = None) -> jax.Array:
        """src (B, S) int -> memory (B, S, C): bidirectional over the real source tokens."""
        B, S = src.shape
        positions = jnp.broadcast_to(jnp.arange(S), (B, S))
        x = self.embed(src, positions, train, rngs)
        mask = key_mask(src_mask, S, S)
        for block in self.encoder:
            x = block(x, positions, mask, train, rngs)
        return self.ln_enc(x, train)

    def cross_kv(self, memory: jax.Array) -> CrossKV:
        """Each decoder layer's cross-attention keys and values of the memory, computed once."""
        kv = [block.cross_attn.key_value(memory, None) for block in self.decoder]
        return CrossKV(tuple(k for k, _ in kv), tuple(v for _, v in kv))

    def decode(self, tgt_in: jax.Array, cross: CrossKV, src_mask: jax.Array | None = None, *,
               tgt_mask: jax.Array | None = None, cache: KVCache | None = None, train: bool = False,
               rngs: nnx.Rngs | None = None):
        """tgt_in (B, T) int -> logits (B, T, V), or (logits, cache) when a cache is given."""
        B, T = tgt_in.shape
        start = 0 if cache is None else cache.index
        positions = jnp.broadcast_to(start + jnp.arange(T), (B, T))
        x = self.embed(tgt_in, positions, train, rngs)
        self_mask = causal_mask(T)[None] & key_mask(tgt_mask, T, T)
        cross_mask = key_mask(src_mask, T, cross.k[0].shape[1])
        caches = []
        for i, block in enumerate(self.decoder):
            layer = None if cache is None else LayerCache(cache.k[i], cache.v[i], cache.index, None)
            x, layer = block(x, positions, self_mask, cross.k[i], cross.v[i], cross_mask, layer, train, rngs)
            caches.append(layer)
        logits = next_token_logits(self, self.ln_f(x, train))
        if cache is None:
            return logits
        return logits, KVCache(tuple(c.k for c in caches), tuple(c.v for c in caches), cache.index + T)

    def __call__(self, src: jax.Array, tgt_in: jax.Array, *, src_mask: jax.Array | None = None,
                 tgt_mask: jax.Array | None = None, train: bool = False, rngs: nnx.Rngs | None = None) -> jax.Array:
        memory = self.encode(src, src_mask, train=train, rngs=rngs)
        return self.decode(tgt_in, self.cross_kv(memory), src_mask, tgt_mask=tgt_mask, train=train, rngs=rngs)


# ----------------------------------------------------------------------------- loss and scores


def target_nll(model: EncoderDecoder, batch: PairBatch, *, train: bool = False,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """(B, T) nats of each target token, 0 on padding."""
    weights = batch.tgt_weights.astype(jnp.float32)
    logits = model(batch.src, batch.tgt_in, src_mask=batch.src_mask, tgt_mask=weights > 0, train=train, rngs=rngs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch.tgt_out) * weights


def encdec_loss(model: EncoderDecoder, batch: PairBatch, *, train: bool = False,
                rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array]:
    """(mean nats per real target token, number of real target tokens): the training loss."""
    count = batch.tgt_weights.astype(jnp.float32).sum()
    return target_nll(model, batch, train=train, rngs=rngs).sum() / jnp.maximum(count, 1.0), count


def encdec_eval_sums(model: EncoderDecoder, batch: PairBatch, token_bytes, token_chars) -> jax.Array:
    """Sums of (nll, tokens, bytes, chars) over the real target tokens, the totals that the
    GPT's eval step returns, so `summarize` gives target-token bits per char comparable with it."""
    nll = target_nll(model, batch)
    weights = batch.tgt_weights.astype(jnp.float32)
    token_bytes, token_chars = jnp.asarray(token_bytes, jnp.float32), jnp.asarray(token_chars, jnp.float32)
    return jnp.stack([nll.sum(), weights.sum(), (token_bytes[batch.tgt_out] * weights).sum(),
                      (token_chars[batch.tgt_out] * weights).sum()])


# ----------------------------------------------------------------------------- generation


def decode_step(model: EncoderDecoder, tokens: jax.Array, cross: CrossKV, src_mask: jax.Array | None,
                cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Logits (B, T, V) of the next target chunk `tokens` (B, T), and the cache with it added."""
    return model.decode(tokens, cross, src_mask, cache=cache)


def generate_encdec(model: EncoderDecoder, src: jax.Array, src_mask: jax.Array | None, *, bos_id: int,
                    max_new_tokens: int, temperature: float = 0.0, seed: int = 0) -> jax.Array:
    """(B, max_new_tokens) int32 target tokens after `bos_id`: greedy at temperature 0, else sampled.

    The encoder and the cross-attention projections run once; each step is one cached decoder pass.
    """
    if max_new_tokens > model.cfg.block_size and model.cfg.pos_encoding in ("learned", "sinusoidal"):
        raise ValueError(f"max_new_tokens={max_new_tokens} exceeds model.block_size={model.cfg.block_size}")
    graphdef, state = nnx.split(model)
    mask = jnp.ones(src.shape, bool) if src_mask is None else jnp.asarray(src_mask, bool)
    return _generate(graphdef, state, jnp.asarray(src, jnp.int32), mask, bos_id, max_new_tokens, temperature, seed)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature"))
def _generate(graphdef, state, src, src_mask, bos_id, max_new_tokens: int, temperature: float, seed):
    model = nnx.merge(graphdef, state)
    cross = model.cross_kv(model.encode(src, src_mask))
    B = src.shape[0]
    cache = KVCache.zeros(model.cfg, B, max_new_tokens, model.cfg.dtype)
    key = jax.random.key(seed)

    def step(carry, i):
        token, cache = carry
        logits, cache = decode_step(nnx.merge(graphdef, state), token[:, None], cross, src_mask, cache)
        logits = logits[:, -1]
        if temperature == 0.0:
            nxt = jnp.argmax(logits, axis=-1)
        else:
            nxt = jax.random.categorical(jax.random.fold_in(key, i), logits / temperature)
        nxt = nxt.astype(jnp.int32)
        return (nxt, cache), nxt

    first = jnp.full((B,), bos_id, jnp.int32)
    _, tokens = jax.lax.scan(step, (first, cache), jnp.arange(max_new_tokens))
    return tokens.T
