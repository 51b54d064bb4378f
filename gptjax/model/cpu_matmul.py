"""Matrix products of a decode step on XLA:CPU, through a small C++ kernel (`cpu_matmul.cc`) built at first use.

A decode step multiplies a few rows (one per sequence) by every weight matrix, so it streams
the weights from memory once; two ways XLA's CPU dot does that badly are covered here:

- float32: XLA reads a large matrix below the memory's speed (GPT-2's 768 x 3,072 on a 2-core
  machine: 22-24 GB/s against the kernel's 27 at one row, 12 against 18 at eight); the kernel
  streams its rows front to back, shared among XLA's intra-op threads.
  `float_columns(x, w)` is x @ w, with XLA's products as its gradient; it takes matrices of
  at least `MIN_FLOAT_WEIGHTS` weights (smaller ones sit in cache, where XLA is as fast).
- int8: XLA's CPU dot does not read int8, so it widens int8 weights to float32 first, and in
  a compiled decode loop it hoists that widening out of the loop: the loop then reads float32
  (no faster than the float model) from temporaries as large as the float weights. The kernel
  widens each weight in registers as it streams past, so a decode step reads the int8 bytes.
  `int8_columns(x, q, scale)` is (x @ q) * scale for an int8 kernel q (in, out);
  `int8_rows(x, q, scale)` is (x @ q.T) * scale for an int8 embedding table q (vocab,
  features), the tied head.

`applies(x)` says whether a product of these rows goes to the kernel: on the CPU backend,
float32 inputs, and at most `MAX_ROWS` rows (decoding; a prefill or an evaluation of many
rows is a matmul XLA does well).

The library is compiled with the machine's own instruction set into the cache directory (a
file named after a hash of the source, the flags, jaxlib's version and the CPU's features, so
each machine builds it once and rebuilds it when any of them changes). Without a C++ compiler,
or with GPTJAX_CPU_KERNELS=0, the products run in XLA as before: the same results (to float32
rounding: the sums are taken in another order), slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

SOURCE = Path(__file__).with_name("cpu_matmul.cc")
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC")
SWITCH = "GPTJAX_CPU_KERNELS"
MAX_ROWS = 64
MIN_FLOAT_WEIGHTS = 1 << 19
TARGETS = {"gptjax_int8_columns": "GptjaxInt8Columns", "gptjax_int8_rows": "GptjaxInt8Rows",
           "gptjax_f32_columns": "GptjaxF32Columns"}


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))) / "gptjax" / "kernels"


def cpu_features() -> str:
    """The CPU's instruction-set flags (Linux), or its architecture: a library built for one
    machine's instruction set must not be loaded on another sharing the same home directory."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line for line in f if line.startswith("flags")), platform.machine())
    except OSError:
        return platform.machine()


def build(compiler: str) -> Path:
    """The compiled library, built now if this source, these flags, this jaxlib and this CPU have
    none yet."""
    include = jax.ffi.include_dir()
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(
        (compiler, *FLAGS, include, jax.__version__, cpu_features())).encode())
    target = cache_dir() / f"cpu_matmul-{key.hexdigest()[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # then renamed: builds may race
            built = Path(tmp) / target.name
            subprocess.run([compiler, *FLAGS, f"-I{include}", str(SOURCE), "-o", str(built)], check=True,
                           capture_output=True, text=True)
            os.replace(built, target)
    return target


@functools.cache
def unavailable() -> str:
    """'' once the kernel is built and registered with XLA; otherwise why it is not (one line)."""
    if os.environ.get(SWITCH, "1").strip().lower() in ("0", "off", "false", "no"):
        return f"turned off by {SWITCH}=0"
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        return "no C++ compiler (g++, or $CXX) was found"
    try:
        library = ctypes.cdll.LoadLibrary(str(build(compiler)))
    except subprocess.CalledProcessError as e:
        last = (e.stderr or "").strip().splitlines()[-1:] or [f"{e.cmd[0]} exited with {e.returncode}"]
        return f"building {SOURCE.name} failed: {last[0]}"
    except OSError as e:
        return f"loading the built {SOURCE.name} failed: {e}"
    for name, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return ""


def applies(x: jax.Array) -> bool:
    """Whether the product of these inputs (..., in) goes to the kernel (decided at trace time)."""
    rows = x.size // x.shape[-1] if x.shape[-1] else 0
    if x.dtype != jnp.float32 or jax.default_backend() != "cpu" or not 0 < rows <= MAX_ROWS:
        return False
    reason = unavailable()
    if reason:
        warn_once(reason)
    return not reason


@functools.cache
def warn_once(reason: str) -> None:
    print(f"note: decoding runs XLA's own matrix products, slower on a CPU ({reason})", file=sys.stderr)


def call(target: str, x: jax.Array, *weights: jax.Array, out: int) -> jax.Array:
    flat = x.reshape(-1, x.shape[-1])
    y = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((flat.shape[0], out), jnp.float32))(flat, *weights)
    return y.reshape(*x.shape[:-1], out)


def applies_float(x: jax.Array, w: jax.Array) -> bool:
    """Whether x @ w (w float32 (in, out)) goes to the kernel (decided at trace time)."""
    return w.dtype == jnp.float32 and w.ndim == 2 and w.size >= MIN_FLOAT_WEIGHTS and applies(x)


@jax.custom_vjp
def float_columns(x: jax.Array, w: jax.Array) -> jax.Array:
    """x @ w: x (..., in) float32, w (in, out) float32."""
    return call("gptjax_f32_columns", x, w, out=w.shape[1])


def float_columns_forward(x: jax.Array, w: jax.Array):
    return float_columns(x, w), (x, w)


def float_columns_backward(saved, g: jax.Array):
    x, w = saved
    return g @ w.T, x.reshape(-1, x.shape[-1]).T @ g.reshape(-1, g.shape[-1])


float_columns.defvjp(float_columns_forward, float_columns_backward)


def int8_columns(x: jax.Array, q: jax.Array, scale: jax.Array) -> jax.Array:
    """(x @ q) * scale: x (..., in) float32, q (in, out) int8, scale (out,)."""
    return call("gptjax_int8_columns", x, q, scale.astype(jnp.float32), out=q.shape[1])


def int8_rows(x: jax.Array, q: jax.Array, scale: jax.Array) -> jax.Array:
    """(x @ q.T) * scale: x (..., features) float32, q (vocab, features) int8, scale (vocab,)."""
    return call("gptjax_int8_rows", x, q, scale.astype(jnp.float32), out=q.shape[0])
