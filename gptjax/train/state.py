"""Create the train state directly sharded on the mesh: nothing is built whole on one host."""

from __future__ import annotations

import jax
import optax
from flax import nnx
from jax.sharding import Mesh

from gptjax.model import build_model
from gptjax.train import mesh as mesh_lib
from gptjax.train.step import TrainState


def abstract_model(model_config, vocab_size: int, seed: int):
    """(graphdef, abstract params, abstract rest) without allocating any array."""
    abstract = nnx.eval_shape(lambda: build_model(model_config, vocab_size, nnx.Rngs(seed)))
    return nnx.split(abstract, nnx.Param, ...)


def count_params(abstract_params) -> int:
    return sum(x.size for x in jax.tree.leaves(abstract_params))


def state_shardings(graphdef, abstract_params, abstract_rest, tx: optax.GradientTransformation,
                    mesh: Mesh) -> TrainState:
    """Shardings of every array of the train state; optimizer moments follow their parameter."""
    params = mesh_lib.state_shardings(abstract_params, mesh)
    rest = mesh_lib.state_shardings(abstract_rest, mesh)
    opt_shapes = jax.eval_shape(tx.init, abstract_params)
    opt = optax.tree_map_params(tx, lambda _, s: s, opt_shapes, params,
                                transform_non_params=lambda _: mesh_lib.replicated(mesh),
                                is_leaf=lambda x: isinstance(x, nnx.Variable))
    return TrainState(mesh_lib.replicated(mesh), params, rest, opt)


def fresh_state(model_config, vocab_size: int, seed: int, tx: optax.GradientTransformation) -> TrainState:
    model = build_model(model_config, vocab_size, nnx.Rngs(seed))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return TrainState(jax.numpy.zeros((), jax.numpy.int32), params, rest, tx.init(params))


def init_state(model_config, vocab_size: int, seed: int, tx: optax.GradientTransformation,
               shardings: TrainState) -> TrainState:
    """Initialise parameters and optimizer state inside one jit whose outputs are sharded."""
    return jax.jit(lambda: fresh_state(model_config, vocab_size, seed, tx), out_shardings=shardings)()


def restore_target(model_config, vocab_size: int, seed: int, tx: optax.GradientTransformation,
                   shardings: TrainState) -> TrainState:
    """Shapes, dtypes and shardings of the train state, for restoring a checkpoint onto them."""
    shapes = jax.eval_shape(lambda: fresh_state(model_config, vocab_size, seed, tx))
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
