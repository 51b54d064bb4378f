"""Train-step throughput: ms/step, tokens/s and model FLOP/s against this host's matmul peak.

    python -m benchmarks.train_throughput [--cases nanogpt,default] [--shapes 6x192x128x32 ...]
        [--mesh data=1,fsdp=1,tensor=1] [--calls 7] [--config.train.steps_per_call=10 ...]

Cases: `nanogpt` is nanoGPT's CPU shape (4 layers, 4 heads, 128 wide, block 64, batch 12,
characters, no dropout); `default` is configs/base.py's model and batch after overrides;
each `--shapes LAYERSxWIDTHxBLOCKxBATCH` is the default config reshaped. Each call runs
`train.steps_per_call` optimizer steps on random tokens; the table shows the best and the
median call, since on a shared host other work only ever slows a call down.

Model FLOPs per token follow PaLM (appendix B) and nanoGPT's estimate_mfu:
6·N + 12·L·C·T, N the parameters used in matmuls (the tied embedding counts once, as the
head; position embeddings are lookups), L layers, C width, T block size.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import ConfigDict, config_flags

from benchmarks.matmul_peak import matmul_peak
from gptjax.cli import quiet_logs
from gptjax.train import (abstract_model, batch_sharding, build_mesh, build_optimizer, count_params, flops_per_token,
                          init_state, make_train_step, replicated, state_shardings)

VOCAB = 65  # tiny Shakespeare's characters, as in nanoGPT
FLOPS_FORMULA = "model FLOPs/token = 6*N + 12*L*C*T (PaLM; N = matmul parameters)"

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/base.py", "Config file whose model and batch are benchmarked.")
flags.DEFINE_list("cases", ["nanogpt", "default"], "Which of nanogpt, default to run.")
flags.DEFINE_list("shapes", [], "Extra LAYERSxWIDTHxBLOCKxBATCH shapes of the default config.")
flags.DEFINE_string("mesh", "", "Mesh sizes, e.g. data=1,fsdp=1,tensor=1 (default: the config's).")
flags.DEFINE_integer("calls", 7, "Timed calls per case, after one compiling call.")


def nanogpt_cpu(config: ConfigDict) -> ConfigDict:
    """nanoGPT's shakespeare_char CPU example (README): the parity target for this benchmark."""
    c = ConfigDict(config.to_dict())
    c.model.update(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0,
                   embd_dropout=0.0, attn_dropout=0.0, resid_dropout=0.0)
    c.train.update(batch_size=12, grad_accum=1)
    return c


def reshaped(config: ConfigDict, shape: str) -> ConfigDict:
    """The config with 'LAYERSxWIDTHxBLOCKxBATCH' applied; heads keep their count."""
    layers, width, block, batch = (int(x) for x in shape.lower().split("x"))
    c = ConfigDict(config.to_dict())
    c.model.update(n_layer=layers, n_embd=width, block_size=block)
    c.train.batch_size = batch
    return c


def parse_mesh(text: str) -> dict:
    """'data=1,fsdp=2' -> {'data': 1, 'fsdp': 2, 'tensor': 1}."""
    sizes = dict(data=1, fsdp=1, tensor=1)
    for part in filter(None, text.split(",")):
        axis, size = part.split("=")
        if axis not in sizes:
            raise ValueError(f"--mesh axis {axis!r} is unknown; use data, fsdp, tensor")
        sizes[axis] = int(size)
    return sizes


def benchmark(config: ConfigDict, calls: int = 7) -> dict:
    """Time `calls` compiled calls of `train.steps_per_call` steps of `config` on random tokens."""
    tc, mc = config.train, config.model
    k, tokens_per_step = tc.steps_per_call, tc.batch_size * mc.block_size
    mesh = build_mesh(config.mesh)
    graphdef, params, rest = abstract_model(mc, VOCAB, config.seed)
    tx = build_optimizer(tc, params)
    shardings = state_shardings(graphdef, params, rest, tx, mesh)
    state = init_state(mc, VOCAB, config.seed, tx, shardings)
    rows = batch_sharding(mesh, leading=2)
    step = jax.jit(make_train_step(graphdef, tx, tc, config.seed), in_shardings=(shardings, rows),
                   out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
    micro = tc.batch_size // tc.grad_accum
    tokens = np.random.default_rng(0).integers(0, VOCAB, (k, tc.grad_accum, micro, mc.block_size + 1), np.int32)
    batches = jax.device_put(tokens, rows)
    start = time.perf_counter()
    state, metrics = step(state, batches)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    per_step, cpu_per_step = [], []
    for _ in range(calls):
        start, cpu_start = time.perf_counter(), time.process_time()
        state, metrics = step(state, batches)
        jax.block_until_ready(metrics)
        per_step.append((time.perf_counter() - start) / k)
        cpu_per_step.append((time.process_time() - cpu_start) / k)
    best = min(per_step)
    return dict(params=count_params(params), tokens_per_step=tokens_per_step,
                ms_best=1e3 * best, ms_median=1e3 * statistics.median(per_step), cpu_ms=1e3 * min(cpu_per_step),
                tokens_per_s=tokens_per_step / best, compile_s=compile_s,
                flops_per_s=tokens_per_step / best * flops_per_token(mc, VOCAB, config.seed))


def describe(config: ConfigDict) -> str:
    m, t = config.model, config.train
    return f"{m.n_layer}L {m.n_head}H {m.n_embd}C T{m.block_size} B{t.batch_size} K{t.steps_per_call}"


def table(rows: list[tuple[str, ConfigDict, dict]], peak: float) -> str:
    head = (f"{'case':<9} {'shape':<27} {'params':>9} {'tok/step':>8} {'ms/step':>8} {'median':>8} {'cpu ms':>7} "
            f"{'tokens/s':>9} {'GFLOP/s':>8} {'of peak':>7} {'compile':>8}")
    lines = [head, "-" * len(head)]
    for name, config, r in rows:
        lines.append(f"{name:<9} {describe(config):<27} {r['params']:>9,} {r['tokens_per_step']:>8,} "
                     f"{r['ms_best']:>8.1f} {r['ms_median']:>8.1f} {r['cpu_ms']:>7.1f} {r['tokens_per_s']:>9,.0f} "
                     f"{r['flops_per_s'] / 1e9:>8.1f} {r['flops_per_s'] / peak:>7.1%} {r['compile_s']:>7.1f}s")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    quiet_logs()
    base = ConfigDict(FLAGS.config.to_dict())
    if FLAGS.mesh:
        base.mesh = ConfigDict(parse_mesh(FLAGS.mesh))
    cases = {"nanogpt": nanogpt_cpu(base), "default": base}
    unknown = set(FLAGS.cases) - set(cases)
    if unknown:
        sys.exit(f"error: --cases {sorted(unknown)} unknown; use nanogpt, default")
    todo = [(name, cases[name]) for name in FLAGS.cases] + [(s, reshaped(base, s)) for s in FLAGS.shapes]
    print(f"{jax.device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    rows = []
    for name, config in todo:
        rows.append((name, config, benchmark(config, FLAGS.calls)))
        print(f"  {name}: {rows[-1][2]['ms_best']:.1f} ms/step", flush=True)
    peak = matmul_peak()
    print(f"\nfloat32 matmul peak (best 1024/2048 square jnp.dot): {peak / 1e9:.1f} GFLOP/s; "
          f"load average now {os.getloadavg()[0]:.1f}")
    print(FLOPS_FORMULA)
    print("ms/step: best call; median: median call; cpu ms: lowest process CPU time per step.\n"
          "XLA workers spin while idle, so on an idle host cpu ms is about cores x ms/step; it barely moves\n"
          "when other jobs share the cores, while ms/step, median and the peak all suffer.\n")
    print(table(rows, peak))


if __name__ == "__main__":
    app.run(main)
