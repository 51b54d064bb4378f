"""Training: mesh and shardings -> optax chain -> jitted step -> loop -> checkpoints.

What other stages, commands and benchmarks may use; everything else in this package is
its own business. The names load on first use (PEP 562), so that a command which only
restores a model (generate, chat, serve) does not import the training loop and its
dependencies: about a second of every start-up on a 2-core CPU.
"""

import importlib

_HOME = {
    "Checkpoints": "checkpoints", "run": "job", "launch": "launcher", "Trainer": "loop",
    "batch_sharding": "mesh", "build_mesh": "mesh", "replicated": "mesh",
    "flops_per_token": "mfu", "measured_cpu_peak": "mfu", "utilisation": "mfu",
    "build_optimizer": "optimizer", "abstract_model": "state", "count_params": "state",
    "init_state": "state", "state_shardings": "state", "TrainState": "step", "make_train_step": "step",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
