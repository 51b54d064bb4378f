"""Saves one step to both checkpoint series of a two-process run and prints the barrier keys
this process waited at.

Run by tests/test_multihost.py under `python -m gptjax.launch --processes 2`: orbax refuses a
barrier key that is already being waited at, so two commits of one process at the same key
make a run that fails whenever the two overlap.
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
from orbax.checkpoint._src.multihost import multihost

from gptjax.train import distributed
from gptjax.train.checkpoints import Checkpoints
from gptjax.train.loop_state import LoopState


class RecordingClient:
    """The JAX distributed client, noting each barrier key before waiting at it."""

    def __init__(self, client):
        self.client = client
        self.keys: list[str] = []

    def wait_at_barrier(self, key, *args, **kwargs):
        self.keys.append(key)
        return self.client.wait_at_barrier(key, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def main(workdir: str) -> None:
    distributed.initialize({})
    # orbax asks this module function for the client at every barrier: the one place to listen.
    recorder = RecordingClient(multihost.get_jax_distributed_client())
    multihost.get_jax_distributed_client = lambda: recorder
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    sharding = jax.NamedSharding(mesh, jax.P("data"))
    weights = jax.make_array_from_callback((8, 4), sharding, lambda index: np.ones((8, 4), np.float32)[index])
    checkpoints = Checkpoints(workdir, keep=1)
    checkpoints.save({"w": weights}, LoopState(step=3), best=True)
    checkpoints.wait()
    checkpoints.close()
    print(json.dumps(recorder.keys))


if __name__ == "__main__":
    main(sys.argv[1])
