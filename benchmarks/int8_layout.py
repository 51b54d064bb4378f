"""Where int8 weights speed up a batch-1 decode step on CPU, and where they do not.

    python -m benchmarks.int8_layout [--layers 48] [--steps 10] [--repeats 3]

A stack of GPT-2-small's MLP kernels (768 x 3072; 48 of them are 113M weights, 453 MB in
float32, about GPT-2-small's size) is applied to one row, layer after layer, in a compiled loop
of decode-like steps, three ways:
- float32 kernels, one array per layer (as `gptjax.model.gpt` holds them);
- int8 kernels, one array per layer, widened inside the product (`--quantize int8` today);
- the same int8 kernels stacked in one array and applied by `jax.lax.scan` over layers.
It prints milliseconds per step, the bound the float32 read sets (memory bandwidth measured in
the same run by `benchmarks.decode.bandwidth`), and each int8 layout's speed-up over float32.

What it shows on XLA:CPU: with one array per layer, the widened float32 copies are written out
whole, every step (here: slower than float32) or once, hoisted out of the loop (the decode
loop: then float32 copies are read, as fast as float32 and no faster); inside a scan over layers
each iteration widens one layer's kernel into a buffer the next iteration reuses, which stays in
cache, so mostly the int8 bytes come from memory. A decoder that scans its blocks (stacked
weights and a stacked KV cache) is what an int8 speed-up needs on this backend.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.decode import bandwidth, best_time

K, N = 768, 3072


def per_layer(x: jax.Array, kernels: list[jax.Array], steps: int) -> jax.Array:
    """`steps` passes of x through every kernel, each layer's kernel its own array."""
    def step(_, x):
        for w in kernels:
            x = jnp.tanh((x @ w.astype(jnp.float32))[:, :K])
        return x
    return jax.lax.fori_loop(0, steps, step, x)


def scanned(x: jax.Array, stacked: jax.Array, steps: int) -> jax.Array:
    """The same passes with the kernels stacked (L, K, N) and applied by a scan over layers."""
    def layer(x, w):
        return jnp.tanh((x @ w.astype(jnp.float32))[:, :K]), None

    return jax.lax.fori_loop(0, steps, lambda _, x: jax.lax.scan(layer, x, stacked)[0], x)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.int8_layout", description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=48)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    x = jnp.ones((1, K), jnp.float32)
    run_per_layer = jax.jit(per_layer, static_argnums=2)
    floats = [jnp.asarray(rng.standard_normal((K, N), dtype=np.float32)) for _ in range(args.layers)]
    weight_bytes = sum(w.nbytes for w in floats)
    gbps = bandwidth(args.repeats) / 1e9
    f32 = best_time(lambda: run_per_layer(x, floats, args.steps), args.repeats) / args.steps
    del floats
    ints = [jnp.asarray(rng.integers(-127, 128, (K, N), dtype=np.int8)) for _ in range(args.layers)]
    int8 = best_time(lambda: run_per_layer(x, ints, args.steps), args.repeats) / args.steps
    stacked = jnp.stack(ints)
    del ints
    run_scanned = jax.jit(scanned, static_argnums=2)
    scan = best_time(lambda: run_scanned(x, stacked, args.steps), args.repeats) / args.steps

    print(f"{args.layers} kernels of {K} x {N}, batch 1: float32 {weight_bytes / 1e6:.0f} MB, "
          f"int8 {stacked.nbytes / 1e6:.0f} MB; memory bandwidth {gbps:.1f} GB/s (jitted float32 sum)")
    print(f"  float32, one array per layer:  {f32 * 1e3:6.1f} ms/step "
          f"(the float32 read alone: {weight_bytes / (gbps * 1e9) * 1e3:.1f} ms)")
    print(f"  int8, one array per layer:     {int8 * 1e3:6.1f} ms/step, {f32 / int8:.2f}x float32")
    print(f"  int8, stacked, scan of layers: {scan * 1e3:6.1f} ms/step, {f32 / scan:.2f}x float32 (target >= 2x)")


if __name__ == "__main__":
    main()
