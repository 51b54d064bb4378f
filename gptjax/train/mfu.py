"""Model FLOP/s and MFU (model FLOP utilisation) for the logged throughput.

MFU compares the FLOPs the model needs per token (PaLM's count: 6 per matmul parameter per
token for forward and backward, plus 12·layers·width·context for attention scores) with
what the devices could do at their dense bf16 peak. Recomputation under remat and the
masked half of causal attention are not counted, so MFU is comparable across those
settings. On CPU there is no datasheet figure, so one matmul is timed at start.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from gptjax.train import state as state_lib

# Dense bf16 peak FLOP/s per chip, matched against `device_kind` in this order.
PEAKS = (
    ("TPU v6 lite", 918e12),  # v6e (Trillium)
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),       # v5p reports itself as "TPU v5"
    ("TPU v4", 275e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),         # SXM
    ("A100", 312e12),
)
MEASURE_SECONDS = 0.3
MEASURE_SIZE = 1024


def flops_per_token(model_config, vocab_size: int, seed: int = 0) -> float:
    """Training FLOPs per token (forward + backward) of the model `model_config` describes."""
    _, params, _ = state_lib.abstract_model(model_config, vocab_size, seed)
    matmul = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        names = [str(getattr(k, "key", k)) for k in path]
        lookup = "embedding" in names and not (names[0] == "wte" and model_config.tie_embeddings)
        matmul += 0 if lookup else leaf.size
    attention = 12 * model_config.n_layer * model_config.n_embd * model_config.block_size
    return 6.0 * matmul + (attention if model_config.kind == "gpt" else 0.0)


def table_peak(device_kind: str) -> float | None:
    for name, peak in PEAKS:
        if name.lower() in device_kind.lower():
            return peak
    return None


@functools.cache
def measured_cpu_peak(device: jax.Device) -> float:
    """FLOP/s of a float32 matmul on this host's cores, timed once per process for about MEASURE_SECONDS."""
    n = MEASURE_SIZE
    a = jax.device_put(jnp.ones((n, n), jnp.float32), device)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best, spent = float("inf"), 0.0
    while spent < MEASURE_SECONDS:
        start = time.perf_counter()
        matmul(a).block_until_ready()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return 2.0 * n**3 / best


def device_peak(configured: float = 0.0) -> float:
    """Peak FLOP/s of one device: the configured figure, the datasheet's, or measured on CPU.

    Forced host devices share the host's cores, so on CPU the host's measured peak is split
    between its local devices. 0.0 for an accelerator missing from PEAKS (MFU is then None).
    """
    if configured > 0:
        return configured
    device = jax.local_devices()[0]
    peak = table_peak(device.device_kind)
    if peak is not None:
        return peak
    if device.platform == "cpu":
        return measured_cpu_peak(device) / jax.local_device_count()
    return 0.0


def utilisation(tokens_per_sec: float, per_token: float, peak_per_device: float, n_devices: int) -> dict:
    """The fields each metrics record gets: model FLOP/s of the run and its MFU (None if unknown)."""
    achieved = tokens_per_sec * per_token
    peak = peak_per_device * n_devices
    return {"model_flops_per_sec": achieved, "mfu": achieved / peak if peak > 0 else None}
