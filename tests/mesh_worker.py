"""Trains one tiny GPT from the same start on several meshes of 8 forced CPU devices.

Run by tests/test_sharding.py in a subprocess, because the device count is fixed when JAX
starts and the rest of the suite keeps its own:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/mesh_worker.py OUT_DIR

Prints one JSON object: per-step losses of each layout, how far its parameters end from
the one-device run's, and the shardings of its parameters and optimizer state.
"""

from __future__ import annotations

import json
import random
import string
import sys

import jax
import numpy as np

from configs.base import get_config
from gptjax.data.prepare import prepare
from gptjax.train import mesh as mesh_lib
from gptjax.train import state as state_lib
from gptjax.train.checkpoints import Checkpoints
from gptjax.train.loop import Trainer
from gptjax.train.loop_state import LoopState
from gptjax.train.optimizer import build_optimizer

LAYOUTS = {
    "1 device": dict(data=1, fsdp=1, tensor=1),
    "dp=8": dict(preset="dp"),
    "fsdp=8": dict(preset="fsdp"),
    "dp=2 fsdp=2 tp=2": dict(data=2, fsdp=2, tensor=2),
    "fsdp+tp": dict(preset="fsdp+tp"),
    "dp=2 tp=4": dict(data=2, fsdp=1, tensor=4),
}
STEPS = 5
# The smoke model in float32: 16 rows split over up to 8 replicas. MFU is not under test, so
# a fixed peak skips measuring the CPU.
OVERRIDES = {"data.source": "files", "train.steps": 2 * STEPS, "train.batch_size": 16,
             "train.steps_per_call": STEPS, "train.eval_batches": 2, "eval.batch_size": 16,
             "train.peak_flops": 1e12, "model.pos_encoding": "learned"}  # learned: a position table to shard


def write_corpus(path: str) -> None:
    """Lines of made-up words with 47 distinct characters, all in the training split: a char
    vocabulary of 48 ids, which tensor axes of 2, 4 and 8 divide."""
    rng = random.Random(0)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 7))) for _ in range(300)]
    lines = [rng.choice("ABCDEFGHIJKLMNOP") + " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
             + rng.choice(".,!") for _ in range(1200)]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def set_key(config, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        config = config[part]
    config[last] = value


def tiny_config(corpus_path: str, cache_dir: str, overrides: dict | None = None):
    """configs/base.py:smoke on the corpus, with OVERRIDES and then `overrides` (dotted keys)."""
    c = get_config("smoke")
    c.data.path, c.data.cache_dir = corpus_path, cache_dir
    for key, value in {**OVERRIDES, **(overrides or {})}.items():
        set_key(c, key, value)
    return c


class Layout:
    """A mesh with the train state created directly sharded on it, and its compiled steps."""

    def __init__(self, config, corpus, mesh_config: dict, devices):
        vocab = corpus.tokenizer.vocab_size
        self.config, self.vocab = config, vocab
        self.mesh = mesh_lib.build_mesh(mesh_config, devices)
        graphdef, abstract_params, abstract_rest = state_lib.abstract_model(config.model, vocab, config.seed)
        self.tx = build_optimizer(config.train, abstract_params)
        self.shardings = state_lib.state_shardings(graphdef, abstract_params, abstract_rest, self.tx, self.mesh)
        self.trainer = Trainer(config, corpus, self.mesh, graphdef, self.tx, self.shardings)

    def fresh(self):
        return state_lib.init_state(self.config.model, self.vocab, self.config.seed, self.tx, self.shardings)

    def restore_target(self):
        return state_lib.restore_target(self.config.model, self.vocab, self.config.seed, self.tx, self.shardings)

    def train(self, state, first: int):
        """STEPS steps from step `first`: the state after them and their losses."""
        state, metrics = self.trainer.train_step(state, self.trainer.batch(first, STEPS))
        return state, [float(x) for x in metrics["loss"]]


def placements(state) -> dict:
    """path -> [PartitionSpec, shape of one shard] for every array of the state."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        key = "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
        out[key] = [str(leaf.sharding.spec), list(leaf.sharding.shard_shape(leaf.shape))]
    return out


def largest_difference(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a),
                                                                                     jax.tree.leaves(b)))


def main(out_dir: str) -> dict:
    corpus_path = f"{out_dir}/corpus.txt"
    write_corpus(corpus_path)
    config = tiny_config(corpus_path, f"{out_dir}/cache")
    corpus = prepare(config.data, config.seed)
    devices = jax.devices()
    result: dict = {"devices": len(devices), "vocab": corpus.tokenizer.vocab_size, "losses": {},
                    "param_difference": {}, "placements": {}}
    layouts = {name: Layout(config, corpus, mesh_config, devices[:1] if name == "1 device" else devices)
               for name, mesh_config in LAYOUTS.items()}

    # Every layout starts from the same numbers; one more initialises directly sharded.
    start = jax.device_get(layouts["1 device"].fresh())
    direct = layouts["fsdp+tp"].fresh()
    result["placements"]["fsdp+tp"] = placements(direct)
    result["param_difference"]["fsdp+tp initialised"] = largest_difference(direct.params, start.params)
    after = {}
    for name in ("1 device", "dp=8", "fsdp=8", "dp=2 fsdp=2 tp=2"):
        state = jax.device_put(start, layouts[name].shardings)
        result["placements"][name] = placements(state)
        state, result["losses"][name] = layouts[name].train(state, 0)
        after[name] = state
    for name, state in after.items():
        result["param_difference"][name] = largest_difference(state.params, after["1 device"].params)

    checkpoints = Checkpoints(f"{out_dir}/run", keep=1)
    checkpoints.save(after["fsdp=8"], LoopState(step=STEPS))
    checkpoints.wait()
    _, result["losses"]["fsdp=8 continued"] = layouts["fsdp=8"].train(after["fsdp=8"], STEPS)
    restored, loop = checkpoints.restore(layouts["dp=2 tp=4"].restore_target())
    checkpoints.close()
    result["restored_step"] = loop.step
    result["placements"]["restored on dp=2 tp=4"] = placements(restored)
    _, result["losses"]["restored on dp=2 tp=4"] = layouts["dp=2 tp=4"].train(restored, STEPS)

    config.train.grad_accum = 2
    accum = Layout(config, corpus, LAYOUTS["fsdp=8"], devices)
    _, result["losses"]["fsdp=8 accum=2"] = accum.train(jax.device_put(start, accum.shardings), 0)
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
