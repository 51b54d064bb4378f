"""GPT-2-small in, fine-tuned on this CPU: import time, tokens/s and peak memory.

    python -m benchmarks.gpt2_import [--batches 1,4] [--block 256] [--calls 2]

Builds a 124M-parameter GPT-2 directory with random weights (config.json, model.safetensors,
a byte-level vocabulary) in a temporary directory, imports it as `train.init_from=hf:` does
(`gptjax.train.init_from.load_hf`), then times fine-tuning steps (AdamW, float32) at GPT-2-small
shape for each batch size at `--block` tokens of context. Each figure is printed beside a limit
measured in the same run: import time beside the time to read the file's bytes, tokens/s beside
the tokens/s this host's float32 matmul peak would allow, peak memory beside the 16 bytes per
parameter (weights, gradients, two AdamW moments) that training must hold.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import ConfigDict
from safetensors.numpy import save_file

from benchmarks.matmul_peak import matmul_peak
from configs.base import get_config
from gptjax.cli import quiet_logs
from gptjax.data.tokenizers import byte_to_unicode
from gptjax.train import batch_sharding, build_mesh, build_optimizer, flops_per_token, make_train_step, replicated
from gptjax.train import init_from, state_shardings
from gptjax.train import abstract_model

FLAGS = flags.FLAGS
flags.DEFINE_list("batches", ["1", "4"], "Batch sizes (rows of --block tokens) to time.")
flags.DEFINE_integer("block", 256, "Context of the fine-tuning steps.")
flags.DEFINE_integer("calls", 2, "Timed steps per batch size, after one compiling step.")

LAYERS, WIDTH, POSITIONS, VOCAB = 12, 768, 1024, 50257


def write_gpt2_small(directory: str) -> None:
    """GPT-2-small's shapes with random weights; a vocabulary of the 256 bytes padded with
    placeholder pieces to GPT-2's 50,257 ids (no merges: the benchmark never tokenizes text)."""
    rng = np.random.default_rng(0)
    normal = lambda *shape: rng.standard_normal(shape, np.float32) * 0.02  # noqa: E731
    w = {"wte.weight": normal(VOCAB, WIDTH), "wpe.weight": normal(POSITIONS, WIDTH),
         "ln_f.weight": np.ones(WIDTH, np.float32), "ln_f.bias": np.zeros(WIDTH, np.float32)}
    for i in range(LAYERS):
        for norm in ("ln_1", "ln_2"):
            w[f"h.{i}.{norm}.weight"], w[f"h.{i}.{norm}.bias"] = np.ones(WIDTH, np.float32), np.zeros(WIDTH, np.float32)
        for name, (fan_in, fan_out) in {"attn.c_attn": (WIDTH, 3 * WIDTH), "attn.c_proj": (WIDTH, WIDTH),
                                        "mlp.c_fc": (WIDTH, 4 * WIDTH), "mlp.c_proj": (4 * WIDTH, WIDTH)}.items():
            w[f"h.{i}.{name}.weight"], w[f"h.{i}.{name}.bias"] = normal(fan_in, fan_out), np.zeros(fan_out, np.float32)
    save_file(w, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    pieces = [byte_to_unicode()[b] for b in range(256)]
    pieces += [f"{pieces[i % 256]}{pieces[i // 256 % 256]}{i}" for i in range(256, VOCAB - 1)] + ["<|endoftext|>"]
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({p: i for i, p in enumerate(pieces)}, f)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    config = {"model_type": "gpt2", "vocab_size": VOCAB, "n_positions": POSITIONS, "n_embd": WIDTH,
              "n_layer": LAYERS, "n_head": 12, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)


def read_seconds(path: str) -> float:
    start = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass
    return time.perf_counter() - start


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def fine_tune_rate(source: init_from.Source, batch: int, block: int, calls: int) -> tuple[float, float]:
    """(tokens/s of the best timed step, model FLOPs per token) of full fine-tuning from `source`."""
    config = get_config()
    with config.unlocked():
        config.model.update(source.model)
    config.model.block_size = block
    config.train.update(batch_size=batch, steps_per_call=1, init_from="hf:benchmark")
    mesh = build_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)))
    graphdef, params, rest = abstract_model(config.model, VOCAB, config.seed)
    tx = build_optimizer(config.train, params)
    shardings = state_shardings(graphdef, params, rest, tx, mesh)
    state = init_from.initial_state(source, config, VOCAB, tx, shardings)
    rows = batch_sharding(mesh, leading=2)
    step = jax.jit(make_train_step(graphdef, tx, config.train, config.seed), in_shardings=(shardings, rows),
                   out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
    tokens = jax.device_put(np.random.default_rng(0).integers(0, VOCAB, (1, 1, batch, block + 1), np.int32), rows)
    times = []
    for _ in range(calls + 1):  # the first call compiles
        start = time.perf_counter()
        state, metrics = step(state, tokens)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return batch * block / min(times[1:]), flops_per_token(config.model, VOCAB, config.seed)


def main(argv: list[str]) -> None:
    del argv
    quiet_logs()
    print(f"{jax.device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        write_gpt2_small(d)
        weights = os.path.join(d, "model.safetensors")
        raw = read_seconds(weights)
        start = time.perf_counter()
        source = init_from.load_hf(d)
        imported = time.perf_counter() - start
        size = os.path.getsize(weights)
    n = sum(int(np.prod(v.shape)) for _, v in jax.tree_util.tree_flatten_with_path(source.params)[0])
    print(f"import of a {n / 1e6:.0f}M-parameter GPT-2 directory ({size / 2 ** 20:.0f} MiB): {imported:.1f} s "
          f"(reading its bytes alone: {raw:.1f} s); peak memory so far {peak_gib():.2f} GiB", flush=True)
    peak = matmul_peak()
    print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)
    for batch in map(int, FLAGS.batches):
        rate, flops = fine_tune_rate(source, batch, FLAGS.block, FLAGS.calls)
        print(f"fine-tuning, batch {batch} x {FLAGS.block}: {rate:,.0f} tokens/s (the matmul peak allows "
              f"{peak / flops:,.0f}: {rate * flops / peak:.0%} of it); peak memory {peak_gib():.2f} GiB "
              f"(weights + gradients + AdamW moments: {16 * n / 2 ** 30:.2f} GiB)", flush=True)


if __name__ == "__main__":
    app.run(main)
