"""Train throughput and MFU of one small GPT across mesh layouts on 8 forced CPU devices.

    python -m benchmarks.scaling [--steps 20] [--layouts "dp=8" "fsdp=4,tensor=2"]

The 8 devices are one host's cores shared 8 ways, so this measures what each layout costs
in collectives and partitioning overhead, not speed-up: tokens/s per device falls by about
8x against the one-device row even with no overhead at all. MFU is against the host's
measured float32 matmul peak. GPU and TPU figures were not measured (no accelerator was
available); run the same script there with the device count flag left out.
"""

from __future__ import annotations

import argparse
import os
import re
import time

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()

import jax  # noqa: E402  (the flag above must be set before JAX starts)

from configs.base import get_config  # noqa: E402
from gptjax.data.prepare import prepare  # noqa: E402
from gptjax.train import (Trainer, abstract_model, build_mesh, build_optimizer, init_state,  # noqa: E402
                          measured_cpu_peak, state_shardings, utilisation)

LAYOUTS = ("1 device", "data=8", "fsdp=8", "fsdp=4,tensor=2", "data=2,fsdp=2,tensor=2", "data=2,tensor=4")


def mesh_config(layout: str) -> dict:
    """'fsdp=4,tensor=2' -> {data: 1, fsdp: 4, tensor: 2}; '1 device' is all ones."""
    sizes = dict(data=1, fsdp=1, tensor=1)
    for part in filter(None, re.split(r"[,\s]+", "" if layout == "1 device" else layout)):
        axis, size = part.split("=")
        sizes[axis] = int(size)
    return sizes


def benchmark_config():
    """A small GPT on the plays, with a 512-token BPE: the 85 characters of the char
    vocabulary do not split over a tensor axis."""
    c = get_config()
    c.data.update(tokenizer="bpe", vocab_size=512)
    c.model.update(n_layer=4, n_head=4, n_embd=128, block_size=128)
    c.train.update(batch_size=32, steps_per_call=5, eval_batches=1)
    c.eval.batch_size = 32
    return c


def measure(config, corpus, layout: str, steps: int, host_peak: float) -> dict:
    devices = jax.devices()[:1] if layout == "1 device" else jax.devices()
    mesh = build_mesh(mesh_config(layout), devices)
    vocab = corpus.tokenizer.vocab_size
    graphdef, abstract_params, abstract_rest = abstract_model(config.model, vocab, config.seed)
    tx = build_optimizer(config.train, abstract_params)
    shardings = state_shardings(graphdef, abstract_params, abstract_rest, tx, mesh)
    state = init_state(config.model, vocab, config.seed, tx, shardings)
    trainer = Trainer(config, corpus, mesh, graphdef, tx, shardings)
    per_call = config.train.steps_per_call
    started = time.perf_counter()
    state, metrics = trainer.train_step(state, trainer.batch(0, per_call))  # compiles
    jax.block_until_ready(metrics)
    compiled = time.perf_counter() - started
    calls = max(steps // per_call, 1)
    started = time.perf_counter()
    for i in range(calls):
        state, metrics = trainer.train_step(state, trainer.batch((i + 1) * per_call, per_call))
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - started
    tokens_per_sec = calls * per_call * config.train.batch_size * config.model.block_size / seconds
    # Every layout shares the same cores, so MFU is against the whole host whatever the mesh.
    fields = utilisation(tokens_per_sec, trainer.flops_per_token, host_peak, 1)
    return {"layout": layout, "devices": mesh.size, "compile_s": compiled, "tokens_per_sec": tokens_per_sec,
            "per_device": tokens_per_sec / mesh.size, **fields}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per layout (after compiling)")
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS))
    args = parser.parse_args()
    config = benchmark_config()
    corpus = prepare(config.data, config.seed)
    host_peak = measured_cpu_peak(jax.local_devices()[0])
    print(f"{jax.device_count()} {jax.devices()[0].platform} devices; host matmul peak {host_peak / 1e9:.1f} "
          f"GFLOP/s; model {config.model.n_layer}x{config.model.n_embd}, batch {config.train.batch_size}x"
          f"{config.model.block_size}")
    print(f"{'layout':<24}{'compile s':>10}{'tokens/s':>11}{'per device':>12}{'GFLOP/s':>9}{'MFU':>7}")
    for layout in args.layouts:
        r = measure(config, corpus, layout, args.steps, host_peak)
        print(f"{r['layout']:<24}{r['compile_s']:>10.1f}{r['tokens_per_sec']:>11,.0f}{r['per_device']:>12,.0f}"
              f"{r['model_flops_per_sec'] / 1e9:>9.2f}{r['mfu']:>7.1%}")


if __name__ == "__main__":
    main()
