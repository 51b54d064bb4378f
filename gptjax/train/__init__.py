"""Training: mesh and shardings -> optax chain -> jitted step -> loop -> checkpoints.

What other stages, commands and benchmarks may use; everything else in this package is
its own business.
"""

from gptjax.train.checkpoints import Checkpoints
from gptjax.train.job import run
from gptjax.train.launcher import launch
from gptjax.train.loop import Trainer
from gptjax.train.mesh import batch_sharding, build_mesh, replicated
from gptjax.train.mfu import flops_per_token, measured_cpu_peak, utilisation
from gptjax.train.optimizer import build_optimizer
from gptjax.train.state import abstract_model, count_params, init_state, state_shardings
from gptjax.train.step import TrainState, make_train_step

__all__ = ["Checkpoints", "TrainState", "Trainer", "abstract_model", "batch_sharding", "build_mesh",
           "build_optimizer", "count_params", "flops_per_token", "init_state", "launch", "make_train_step",
           "measured_cpu_peak", "replicated", "run", "state_shardings", "utilisation"]
