"""The float32 matmul rate this host reaches: the denominator for model FLOP utilisation on CPU.

    python -m benchmarks.matmul_peak [--sizes 1024 2048 4096] [--repeats 10]

There is no datasheet peak for a shared CPU, so the best of several large square `jnp.dot`s
stands in for it. The best (not the mean) is kept because other work on the host only ever
slows a run down.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

SIZES = (1024, 2048)


def matmul_rate(n: int, repeats: int = 10) -> float:
    """Best FLOP/s of an n x n by n x n float32 product over `repeats` timed calls."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(lambda x, y: jnp.dot(x, y, precision=jax.lax.Precision.HIGHEST))
    dot(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def matmul_peak(sizes: tuple[int, ...] = SIZES, repeats: int = 10) -> float:
    """The highest float32 matmul FLOP/s over `sizes`."""
    return max(matmul_rate(n, repeats) for n in sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    for n in args.sizes:
        print(f"{n:5d} x {n:<5d} float32 dot: {matmul_rate(n, args.repeats) / 1e9:7.1f} GFLOP/s")


if __name__ == "__main__":
    main()
