"""LoRA against full fine-tuning on the GPT-2-small shape: trainable parameters, step time, memory.

    python -m benchmarks.lora [--block 256] [--batch 1] [--steps 3] [--rank 8] [--targets attn,mlp]

Random weights and tokens (the figures do not depend on what the weights are): configs/gpt2_124m.py's
model (12 layers, 768 wide, 50,304 tokens) at batch 1 and a 256-token context, float32 compute
on a CPU (bfloat16 where an accelerator runs it). Each variant builds the train state the job
builds (`abstract_model(..., lora)`: with LoRA the adapters are the only parameters and the base
is frozen in `rest`), compiles the project's train step once, then times `--steps` calls of one
step; the table shows the best and the median call (other work on a shared host only slows a
call down). Memory is what the compiled step holds (arguments + temporaries + outputs, from XLA's
memory analysis, the same on every run), and the device's peak where the backend reports one.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np
from absl import app, flags

from configs.gpt2_124m import get_config
from gptjax.cli import quiet_logs
from gptjax.model.lora import LoRASettings
from gptjax.train import (abstract_model, batch_sharding, build_mesh, build_optimizer, count_params, init_state,
                          make_train_step, replicated, state_shardings)

FLAGS = flags.FLAGS
flags.DEFINE_integer("block", 256, "Context length.")
flags.DEFINE_integer("batch", 1, "Rows per step.")
flags.DEFINE_integer("steps", 3, "Timed calls of one step, after one compiling call.")
flags.DEFINE_integer("rank", 8, "LoRA rank.")
flags.DEFINE_float("alpha", 16.0, "LoRA alpha.")
flags.DEFINE_string("targets", "attn,mlp", "LoRA targets.")
MIB = 2**20


def variant(config, lora: LoRASettings | None, steps: int) -> dict:
    """Build, compile and time one variant's train step."""
    mc, tc, vocab = config.model, config.train, config.data.vocab_size
    mesh = build_mesh(config.mesh)
    graphdef, params, rest = abstract_model(mc, vocab, config.seed, lora)
    tx = build_optimizer(tc, params)
    shardings = state_shardings(graphdef, params, rest, tx, mesh)
    state = init_state(mc, vocab, config.seed, tx, shardings, lora)
    batches = batch_sharding(mesh, leading=2)
    step = jax.jit(make_train_step(graphdef, tx, tc, config.seed), in_shardings=(shardings, batches),
                   out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
    tokens = np.random.default_rng(0).integers(0, vocab, (1, 1, FLAGS.batch, mc.block_size + 1), dtype=np.int32)
    tokens = jax.device_put(tokens, batches)
    compiled = step.lower(state, tokens).compile()
    analysis = compiled.memory_analysis()
    held = (analysis.argument_size_in_bytes + analysis.temp_size_in_bytes + analysis.output_size_in_bytes
            if analysis is not None else float("nan"))
    state, metrics = compiled(state, tokens)  # warm up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        state, metrics = compiled(state, tokens)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - started)
    stats = jax.devices()[0].memory_stats() or {}
    opt_elems = sum(x.size for x in jax.tree.leaves(state.opt_state))
    return {"trainable": count_params(params), "frozen": sum(x.size for x in jax.tree.leaves(rest)),
            "optimizer": opt_elems, "best_s": min(times), "median_s": statistics.median(times),
            "compiled_mib": held / MIB, "temp_mib": (analysis.temp_size_in_bytes / MIB) if analysis else float("nan"),
            "peak_mib": stats.get("peak_bytes_in_use", float("nan")) / MIB,
            "loss": float(np.asarray(metrics["loss"])[-1])}


def main(argv) -> None:
    del argv
    quiet_logs()
    config = get_config()
    config.model.block_size = FLAGS.block
    config.train.update(batch_size=FLAGS.batch, steps_per_call=1, warmup_steps=0)
    if jax.default_backend() == "cpu":
        config.model.dtype = "float32"
    lora = LoRASettings.create(FLAGS.rank, FLAGS.alpha, FLAGS.targets)
    print(f"GPT-2-small shape: {config.model.n_layer} layers, {config.model.n_embd} wide, vocab "
          f"{config.data.vocab_size}, batch {FLAGS.batch} x {FLAGS.block} tokens, {config.model.dtype} compute on "
          f"{jax.default_backend()}; LoRA rank {lora.rank}, alpha {lora.alpha}, targets {', '.join(lora.targets)}")
    rows = {"full": variant(config, None, FLAGS.steps), "lora": variant(config, lora, FLAGS.steps)}
    print(f"{'':6} {'trainable':>12} {'frozen':>12} {'opt. state':>12} {'best s/step':>12} {'median':>8} "
          f"{'compiled MiB':>13} {'temp MiB':>9} {'peak MiB':>9}")
    for name, r in rows.items():
        print(f"{name:6} {r['trainable']:>12,} {r['frozen']:>12,} {r['optimizer']:>12,} {r['best_s']:>12.3f} "
              f"{r['median_s']:>8.3f} {r['compiled_mib']:>13.1f} {r['temp_mib']:>9.1f} {r['peak_mib']:>9.1f}")
    full, low = rows["full"], rows["lora"]
    print(f"LoRA / full: trainable {low['trainable'] / full['trainable']:.4%}, step time "
          f"{low['best_s'] / full['best_s']:.2f}x, compiled memory {low['compiled_mib'] / full['compiled_mib']:.2f}x")


if __name__ == "__main__":
    app.run(main)
