"""Weight-only int8 quantisation of a GPT for generation and serving.

What is quantised: the kernel of every `nnx.Linear` (attention c_attn / c_proj, MLP c_fc /
c_gate / c_proj, and an untied lm_head), and with `head=True` the output head: for a tied head
that is the token embedding table, which then serves both the input lookup and `attend`. Each
output channel (a kernel's column, an embedding's row) gets one symmetric float32 scale,
max |w| / 127, and its weights become round(w / scale) in [-127, 127].

What is not: biases, norms, position embeddings and an untied input embedding (one row read per
token), and activations: a matmul computes (x @ q.astype(dtype)) * scale, so the weights stay
int8 in memory and are widened inside the product, and the scale is applied once per output.

What it buys on a CPU, measured: files and resident weights at ~1/4, the logit error of int8
(about 1% relative RMS), and decoding speed: a product of a few rows (decoding) runs in a small
C++ kernel (`gptjax.model.cpu_matmul`) that widens each int8 weight as it streams past, so a
step reads int8 bytes. XLA's own CPU dot does not read int8: it widens the kernel first, and in
a compiled decode loop it hoists that widening out of the loop, which then reads float32 copies
(as fast as the float model, no faster) held beside the int8 weights. That is still the path
elsewhere (a GPU, many rows, no C++ compiler). Applying the blocks by a scan over stacked
kernels is no way round it (`python -m benchmarks.int8_layout`): a scan widens one kernel at a
time into a reused buffer, which pays when a layer has one kernel, but a GPT-2 block's four
widen to 28 MB, which does not stay in cache, and scanned int8 blocks ran at 0.5-0.65x float32.

Quantised weights are `Int8Weight` variables, not `nnx.Param`s: a quantised model is served,
not trained. Its graph and state pass through `nnx.split` / `nnx.merge` like the float model's,
so `gptjax.generate.Generator(quantize_int8(model), tokenizer)` decodes it unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gptjax.errors import UserError
from gptjax.model import cpu_matmul, submodules
from gptjax.model.gpt import GPT, axes, rows_dot_general

MODES = ("none", "int8")


class Int8Weight(nnx.Variable):
    """int8 weights and their per-channel scales."""


def quantize_channels(w: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """(int8 values, float32 scales) with w ~= values * scales, one scale per slice along `axis`
    (the reduced axis is every other one). An all-zero channel gets scale 1."""
    w32 = w.astype(jnp.float32)
    reduce = tuple(d for d in range(w.ndim) if d != axis % w.ndim)
    amax = jnp.max(jnp.abs(w32), axis=reduce, keepdims=True)
    scale = jnp.where(amax > 0, amax / 127.0, 1.0)
    q = jnp.clip(jnp.round(w32 / scale), -127, 127).astype(jnp.int8)
    return q, jnp.squeeze(scale, reduce)


class Int8Linear(nnx.Module):
    """An `nnx.Linear` whose kernel is int8 with a scale per output feature."""

    def __init__(self, linear: nnx.Linear):
        if type(linear) is not nnx.Linear:
            raise UserError(f"int8 quantisation takes plain linear layers, not {type(linear).__name__}; "
                            "merge LoRA adapters into the base first (gptjax.model.lora.merge_adapters)")
        kernel = linear.kernel.get_value()
        logical = linear.kernel.get_metadata().get("logical_axes") or (None, None)
        q, scale = quantize_channels(kernel, axis=1)
        self.in_features, self.out_features = kernel.shape
        self.dtype = linear.dtype or kernel.dtype
        self.kernel = Int8Weight(q, **axes(*logical))
        self.scale = Int8Weight(scale, **axes(logical[1]))
        self.bias = linear.bias if linear.use_bias else nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x, q, scale = x.astype(self.dtype), self.kernel.get_value(), self.scale.get_value()
        if cpu_matmul.applies(x):
            y = cpu_matmul.int8_columns(x, q, scale)
        else:
            y = rows_dot_general(x, q.astype(self.dtype), None) * scale.astype(self.dtype)
        if self.bias is not None:
            y = y + self.bias.get_value().astype(self.dtype)
        return y


class Int8Embed(nnx.Module):
    """An `nnx.Embed` whose table is int8 with a scale per row: the lookup dequantises the rows it
    reads, `attend` (the tied head) is (x @ q.T) * scale."""

    def __init__(self, embed: nnx.Embed):
        table = embed.embedding.get_value()
        logical = embed.embedding.get_metadata().get("logical_axes") or (None, None)
        q, scale = quantize_channels(table, axis=0)
        self.num_embeddings, self.features = table.shape
        self.dtype = embed.dtype or table.dtype
        self.embedding = Int8Weight(q, **axes(*logical))
        self.scale = Int8Weight(scale, **axes(logical[0]))

    def __call__(self, idx: jax.Array) -> jax.Array:
        rows = jnp.take(self.embedding.get_value(), idx, axis=0).astype(self.dtype)
        return rows * jnp.take(self.scale.get_value(), idx, axis=0)[..., None].astype(self.dtype)

    def attend(self, query: jax.Array) -> jax.Array:
        x, q, scale = query.astype(self.dtype), self.embedding.get_value(), self.scale.get_value()
        if cpu_matmul.applies(x):
            return cpu_matmul.int8_rows(x, q, scale)
        y = jax.lax.dot_general(x, q.astype(self.dtype), (((x.ndim - 1,), (1,)), ((), ())))
        return y * scale.astype(self.dtype)


def quantize_int8(model: GPT, head: bool = True) -> GPT:
    """An int8 copy of a GPT (see the module docstring for what is quantised); `model` is left as
    it was, and the copy shares its unquantised arrays (drop `model` to free the float kernels)."""
    if not isinstance(model, GPT):
        raise UserError(f"int8 quantisation serves a GPT; this model is a {type(model).__name__}")
    out = nnx.clone(model)
    for path, linear in submodules.find(out, lambda p, m: isinstance(m, nnx.Linear)):
        if head or path != ("lm_head",):
            submodules.replace(out, path, Int8Linear(linear))
    if head and model.cfg.tie_embeddings:
        out.wte = Int8Embed(out.wte)
    return out


def quantize(model: GPT, mode: str) -> GPT:
    """`model` as `--quantize MODE` asks: unchanged for 'none', `quantize_int8` for 'int8'."""
    if mode == "none":
        return model
    if mode == "int8":
        return quantize_int8(model)
    raise UserError(f"--quantize {mode!r} is unknown; use one of {MODES}")


def weight_bytes(model: nnx.Module) -> int:
    """Bytes of every parameter and quantised weight (what a decode step reads, about)."""
    state = nnx.state(model, nnx.Any(nnx.Param, Int8Weight))
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
