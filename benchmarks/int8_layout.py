"""Where int8 weights speed up a batch-1 decode step on CPU, and where they do not.

    python -m benchmarks.int8_layout [--steps 10] [--repeats 3]

Two stacks of kernels about GPT-2-small's size are applied to one row, layer after layer, in
a compiled loop of decode-like steps:
- `c_fc x 48`: 48 kernels of 768 x 3,072 (113M weights), one kernel a layer;
- `GPT-2 blocks`: GPT-2-small's 12 layers of four kernels each (attention c_attn 768 x 2,304
  and c_proj 768 x 768, MLP c_fc 768 x 3,072 and c_proj 3,072 x 768; 85M weights).
Each stack runs three ways: float32 kernels, one array per kernel (as `gptjax.model.gpt` holds
them); int8 kernels, one array per kernel, widened by XLA inside the product; the same int8
kernels stacked per position in the layer and applied by `jax.lax.scan` over layers. (What
`--quantize int8` decodes with on a CPU, the kernel of `gptjax.model.cpu_matmul`, is timed in
a whole GPT by `python -m benchmarks.decode --quantize none,int8`.) It prints milliseconds per step, the bound the float32 read sets (memory bandwidth
measured in the same run by `benchmarks.decode.bandwidth`) and each int8 layout's speed-up.

What it shows on XLA:CPU, whose dot does not read int8: with one array per kernel, the widened
float32 copies are written out whole, every step (slower than float32), or once, hoisted out of
the decode loop (then float32 is read: as fast as float32, no faster). Inside a scan each
iteration widens its kernel into a buffer the next iteration reuses, which stays in cache, so
with one kernel a layer mostly int8 bytes come from memory (about 2x float32). With a real
block's four kernels a layer the four widened buffers (28 MB in float32) no longer stay in the
32 MiB cache beside the weights streaming past, and the gain is gone: why gptjax's int8
decoding needs a kernel of its own on XLA:CPU.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.decode import bandwidth, best_time

C = 768
STACKS = {  # name -> (layers, the (in, out) shape of each kernel of a layer, in order)
    "c_fc x 48": (48, ((C, 4 * C),)),
    "GPT-2 blocks": (12, ((C, 3 * C), (C, C), (C, 4 * C), (4 * C, C))),
}


def apply_layer(x: jax.Array, kernels) -> jax.Array:
    """x through one layer's kernels, each output cut to the next kernel's input width."""
    widths = [w.shape[-2] for w in kernels[1:]] + [x.shape[1]]
    for w, width in zip(kernels, widths):
        x = jnp.tanh((x @ w.astype(jnp.float32))[:, :width])
    return x


def per_kernel(x: jax.Array, layers: list[list[jax.Array]], steps: int) -> jax.Array:
    """`steps` passes of x through every layer, each kernel its own array."""
    def step(_, x):
        for kernels in layers:
            x = apply_layer(x, kernels)
        return x
    return jax.lax.fori_loop(0, steps, step, x)


def scanned(x: jax.Array, stacked: list[jax.Array], steps: int) -> jax.Array:
    """The same passes with each position's kernels stacked (L, in, out) and a scan over layers."""
    def layer(x, kernels):
        return apply_layer(x, kernels), None

    return jax.lax.fori_loop(0, steps, lambda _, x: jax.lax.scan(layer, x, stacked)[0], x)


def run_stack(layers: int, shapes, steps: int, repeats: int, gbps: float) -> None:
    rng = np.random.default_rng(0)
    x = jnp.ones((1, C), jnp.float32)
    run_per_kernel = jax.jit(per_kernel, static_argnums=2)
    floats = [[jnp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in shapes] for _ in range(layers)]
    float_bytes = sum(w.nbytes for layer in floats for w in layer)
    f32 = best_time(lambda: run_per_kernel(x, floats, steps), repeats) / steps
    del floats
    ints = [[jnp.asarray(rng.integers(-127, 128, s, dtype=np.int8)) for s in shapes] for _ in range(layers)]
    int8 = best_time(lambda: run_per_kernel(x, ints, steps), repeats) / steps
    stacked = [jnp.stack([layer[i] for layer in ints]) for i in range(len(shapes))]
    del ints
    run_scanned = jax.jit(scanned, static_argnums=2)
    scan = best_time(lambda: run_scanned(x, stacked, steps), repeats) / steps
    print(f"  float32, one array per kernel:  {f32 * 1e3:6.1f} ms/step "
          f"({float_bytes / 1e6:.0f} MB; the float32 read alone: {float_bytes / (gbps * 1e9) * 1e3:.1f} ms)")
    print(f"  int8, one array per kernel:     {int8 * 1e3:6.1f} ms/step, {f32 / int8:.2f}x float32")
    print(f"  int8, stacked, scan of layers:  {scan * 1e3:6.1f} ms/step, {f32 / scan:.2f}x float32 (target >= 2x)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.int8_layout", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    gbps = bandwidth(args.repeats) / 1e9
    print(f"batch 1; memory bandwidth {gbps:.1f} GB/s (jitted float32 sum)")
    for name, (layers, shapes) in STACKS.items():
        kernels = ", ".join(f"{a} x {b}" for a, b in shapes)
        print(f"{name}: {layers} layers of {kernels}", flush=True)
        run_stack(layers, shapes, args.steps, args.repeats, gbps)


if __name__ == "__main__":
    main()
