"""Create the train state directly sharded on the mesh: nothing is built whole on one host."""

from __future__ import annotations

import jax
import optax
from flax import nnx
from jax.sharding import Mesh

from gptjax.model import build_model
from gptjax.train import mesh as mesh_lib
from gptjax.train.step import TrainState


class Keys:
    """The keys `nnx.Rngs(seed)` draws (its one default stream: fold_in(key(seed), n) for the
    n-th draw of any name), counted in Python instead of in a Variable.

    Under tracing, each draw from an `nnx.Rngs` updates its count Variable, and flax (0.12) then
    reads the traced count's `.sharding`, for which JAX builds an error message by searching
    the whole trace so far: building a 24-layer model's shapes took 1.5 s, growing with the
    square of its depth, in every command that loads or trains a model. No model here keeps a
    stream, so nothing else changes (tests/test_model.py checks every kind, bit for bit).
    """

    def __init__(self, seed: int):
        self.key, self.count = jax.random.key(seed), 0

    def __call__(self) -> jax.Array:
        self.count += 1
        return jax.random.fold_in(self.key, self.count - 1)

    def __getattr__(self, stream: str):
        if stream.startswith("__"):
            raise AttributeError(stream)
        return self


def abstract_model(model_config, vocab_size: int, seed: int, lora=None):
    """(graphdef, abstract params, abstract rest) without allocating any array; with `lora`
    (LoRASettings), params are the adapters alone and the frozen base is in rest."""
    abstract = nnx.eval_shape(lambda: build_model(model_config, vocab_size, Keys(seed), lora))
    return nnx.split(abstract, nnx.Param, ...)


def count_params(abstract_params) -> int:
    return sum(x.size for x in jax.tree.leaves(abstract_params))


def state_shardings(graphdef, abstract_params, abstract_rest, tx: optax.GradientTransformation,
                    mesh: Mesh) -> TrainState:
    """Shardings of every array of the train state; optimizer moments follow their parameter."""
    params = mesh_lib.state_shardings(abstract_params, mesh)
    rest = mesh_lib.state_shardings(abstract_rest, mesh)
    opt = moment_shardings(jax.eval_shape(tx.init, abstract_params), abstract_params, params, mesh)
    return TrainState(mesh_lib.replicated(mesh), params, rest, opt)


def moment_shardings(opt_shapes, abstract_params, param_shardings, mesh: Mesh):
    """A leaf of the optimizer state whose path ends with a parameter's path, and whose shape is
    that parameter's, is that parameter's moment and takes its sharding; the rest (counts, scalars)
    are replicated. Matching paths rather than calling optax.tree_map_params works for partitioned
    optimizers such as Muon, whose labels cannot be computed from optax's placeholder parameters."""
    shapes = dict(jax.tree_util.tree_flatten_with_path(abstract_params)[0])
    by_path = {path: (shapes[path].shape, sharding)
               for path, sharding in jax.tree_util.tree_flatten_with_path(param_shardings)[0]}

    def one(path, leaf):
        for start in range(len(path)):
            shape, sharding = by_path.get(tuple(path[start:]), (None, None))
            if shape == leaf.shape:
                return sharding
        return mesh_lib.replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, opt_shapes)


def fresh_state(model_config, vocab_size: int, seed: int, tx: optax.GradientTransformation,
                lora=None) -> TrainState:
    model = build_model(model_config, vocab_size, Keys(seed), lora)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return TrainState(jax.numpy.zeros((), jax.numpy.int32), params, rest, tx.init(params))


def init_state(model_config, vocab_size: int, seed: int, tx: optax.GradientTransformation,
               shardings: TrainState, lora=None) -> TrainState:
    """Initialise parameters and optimizer state inside one jit whose outputs are sharded."""
    return jax.jit(lambda: fresh_state(model_config, vocab_size, seed, tx, lora), out_shardings=shardings)()


def restore_target(model_config, vocab_size: int, seed: int, tx: optax.GradientTransformation,
                   shardings: TrainState, lora=None) -> TrainState:
    """Shapes, dtypes and shardings of the train state, for restoring a checkpoint onto them."""
    shapes = jax.eval_shape(lambda: fresh_state(model_config, vocab_size, seed, tx, lora))
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
