"""Decoding speed: prefill and decode tokens/s, with the KV cache and with full recomputation.

    python -m benchmarks.decode [--shapes small,default,gpt2] [--new_tokens 512] [--quantize none,int8]

Randomly initialised models (speed does not depend on the weights), greedy decoding, batch 1
and 8. The prompt is half the context (512 tokens for GPT-2 small). `cached` is
`gptjax.generate`: one prefill, then the compiled decode loop; with a context shorter than
prompt + new tokens the window slides under the default policy: when the context is full,
the cache is re-filled with the last half of it (one forward pass over a full window), so
the small model re-prefills every 32 tokens; those passes are counted in its decode time.
`uncached` is `generate_uncached`: every token recomputes the whole last window (block_size
tokens), which is what sliding by one token costs without a cache. GPT-2 small runs fewer
uncached tokens (each one is a full 1024-token forward pass); the table says how many.
Times are the best of `--repeats` runs after a compile run.

`--quantize int8` times the weight-only int8 model (`gptjax.model.quantize`) as well. Each row
prints the bytes of weights a decode step reads and the bound they set at batch 1: memory
bandwidth (a jitted sum over a 256 MiB float32 array, measured at the start of the same run)
divided by those bytes, times the batch (all rows share one read of the weights), in tokens/s,
and the fraction of it the cached decoder reaches. On CPU a decode step's products run in
`gptjax.model.cpu_matmul`'s kernel (set GPTJAX_CPU_KERNELS=0 to time XLA's instead): int8
weights widened as they stream past, large float32 matrices read by all of XLA's threads; the
float32 KV cache is read as in the float model.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs.base import get_config
from gptjax.generate import decoder
from gptjax.generate import logits as logits_lib
from gptjax.generate.layout import make_layout
from gptjax.generate.reference import generate_uncached
from gptjax.generate.settings import GenerationSettings
from gptjax.model.gpt import GPT, GPTConfig
from gptjax.model.quantize import quantize, weight_bytes

CHAR_VOCAB = 96  # about the character vocabulary of the plays


def shapes() -> dict[str, tuple[GPTConfig, int]]:
    """name -> (model config, uncached tokens to time)."""
    m = get_config().model
    return {
        "small": (GPTConfig(vocab_size=CHAR_VOCAB, block_size=64, n_layer=4, n_head=4, n_embd=128), 0),
        "default": (GPTConfig(vocab_size=CHAR_VOCAB, block_size=m.block_size, n_layer=m.n_layer, n_head=m.n_head,
                              n_embd=m.n_embd, mlp_ratio=m.mlp_ratio, pos_encoding=m.pos_encoding), 0),
        "gpt2": (GPTConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768), 8),
    }


def best_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def bandwidth(repeats: int, mib: int = 256) -> float:
    """Bytes per second a jitted float32 sum reads."""
    x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    return x.nbytes / best_time(lambda: total(x), max(repeats, 3))


def cached(model: GPT, batch: int, prompt_len: int, new: int, repeats: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds) of the cached decoder."""
    graphdef, params = nnx.split(model)
    s = GenerationSettings(strategy="greedy", max_new_tokens=new).checked(model.cfg.vocab_size,
                                                                          model.cfg.block_size)
    layout = make_layout(batch, model.cfg.block_size, prompt_len, new, True, s.sliding_keep)
    plan, knobs = logits_lib.plan_and_knobs(s, model.cfg.vocab_size)
    rng = np.random.default_rng(0)
    prompts, lengths = decoder.right_align([rng.integers(0, model.cfg.vocab_size, prompt_len)] * batch,
                                           layout.prompt)
    prompts, lengths = jnp.asarray(prompts), jnp.asarray(lengths)
    stop, max_new = jnp.zeros(model.cfg.vocab_size, bool), jnp.asarray(new, jnp.int32)

    def prefill():
        return decoder.start(graphdef, params, prompts, lengths, jax.random.key(0), layout=layout)

    prefilled = prefill()

    def decode():  # the loop takes over its input state, so each run gets a copy
        return decoder.advance(graphdef, params, jax.tree.map(jnp.copy, prefilled), knobs, stop, max_new,
                               max_new, layout=layout, plan=plan)

    return best_time(prefill, repeats), best_time(decode, repeats)


def uncached(model: GPT, batch: int, prompt_len: int, new: int, repeats: int) -> float:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    prompts = np.random.default_rng(0).integers(0, model.cfg.vocab_size, (batch, prompt_len))
    return best_time(lambda: generate_uncached(graphdef, params, rest, prompts, new, model.cfg.block_size,
                                               temperature=0.0), repeats)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decode", description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="small,default,gpt2")
    p.add_argument("--new_tokens", type=int, default=512)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quantize", default="none", help="comma-separated: none (float weights), int8")
    p.add_argument("--uncached", action=argparse.BooleanOptionalAction, default=True,
                   help="also time full recomputation (slow for gpt2)")
    args = p.parse_args()
    gbps = bandwidth(args.repeats) / 1e9
    print(f"{jax.devices()[0].device_kind}, {args.new_tokens} new tokens, greedy, best of {args.repeats}; "
          f"memory bandwidth {gbps:.1f} GB/s (jitted float32 sum)")
    print(f"{'shape':8} {'weights':>7} {'batch':>5} {'prompt':>6} {'prefill tok/s':>14} {'cached tok/s':>13} "
          f"{'MB/step':>8} {'bound':>7} {'of bound':>8} {'uncached tok/s':>15} {'(tokens)':>9} {'speedup':>8}")
    for name in args.shapes.split(","):
        cfg, few = shapes()[name]
        for mode in args.quantize.split(","):
            model = quantize(GPT(cfg, rngs=nnx.Rngs(0)), mode)
            prompt_len = cfg.block_size // 2
            step_mb = weight_bytes(model) / 1e6
            for batch in map(int, args.batches.split(",")):
                prefill_s, decode_s = cached(model, batch, prompt_len, args.new_tokens, args.repeats)
                fast_rate, bound = batch * args.new_tokens / decode_s, batch * gbps * 1e3 / step_mb
                row = (f"{name:8} {mode:>7} {batch:5d} {prompt_len:6d} {batch * prompt_len / prefill_s:14,.0f} "
                       f"{fast_rate:13,.0f} {step_mb:8,.0f} {bound:7,.0f} {fast_rate / bound:8.0%}")
                if args.uncached:
                    n = few or args.new_tokens
                    if few and batch > 1:
                        n = max(1, few // batch)
                    slow_rate = batch * n / uncached(model, batch, prompt_len, n, 1 if few else args.repeats)
                    row += f" {slow_rate:15,.1f} {n:9d} {fast_rate / slow_rate:7.1f}x"
                print(row, flush=True)


if __name__ == "__main__":
    main()
