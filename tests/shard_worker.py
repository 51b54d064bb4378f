"""One process of a multi-process read of a prepared directory (run by tests/test_shards.py):

    python -m gptjax.launch --processes 2 --devices_per_process 4 -- python tests/shard_worker.py DIR

Builds two train steps over a mesh of every device of every process, directly and through
grain, gathers the global arrays and prints one JSON line: the window offsets this process
read and whether the gathered batches equal the batch one process builds alone.
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from configs.base import get_config
from gptjax.data import batches
from gptjax.data.grain_windows import GrainBatches
from gptjax.data.shard_reader import load_prepared
from gptjax.train import distributed
from gptjax.train import mesh as mesh_lib

SEED, STEPS, ACCUM, BATCH, BLOCK = 3, 2, 2, 16, 16


def main(directory: str) -> dict:
    distributed.initialize(get_config())
    tokens = load_prepared(directory).tokens["train"]
    mesh = mesh_lib.build_mesh(dict(data=-1, fsdp=1, tensor=1, preset=""), jax.devices())
    sharding = mesh_lib.batch_sharding(mesh, leading=2)
    direct = batches.train_batch(tokens, SEED, 0, STEPS, ACCUM, BATCH, BLOCK, sharding)
    grain = GrainBatches(tokens, SEED, STEPS, ACCUM, lambda step: BATCH, BLOCK, threads=2)
    grain = grain.train_batch(0, STEPS, sharding)
    everything = slice(None)
    reference = np.stack([np.stack([batches.windows(tokens, o, BLOCK) for o in
                                    batches.step_offsets(SEED, step, len(tokens), BLOCK, ACCUM, BATCH, everything)])
                          for step in range(STEPS)])
    mine = batches.process_rows(BATCH // ACCUM)
    return {"process": jax.process_index(), "devices": jax.device_count(),
            "offsets": [batches.step_offsets(SEED, step, len(tokens), BLOCK, ACCUM, BATCH, mine).tolist()
                        for step in range(STEPS)],
            "direct": bool((multihost_utils.process_allgather(direct, tiled=True) == reference).all()),
            "grain": bool((multihost_utils.process_allgather(grain, tiled=True) == reference).all())}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
