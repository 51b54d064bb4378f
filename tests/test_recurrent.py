import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.base import get_config
from gptjax.model import KINDS, build_model
from gptjax.train import state as state_lib
from gptjax.train.optimizer import build_optimizer
from gptjax.train.step import make_train_step

VOCAB = 11


def tiny_config(kind: str, **train):
    c = get_config("smoke")
    c.model.kind, c.model.n_layer, c.model.n_embd, c.model.block_size = kind, 2, 32, 16
    c.train.steps, c.train.warmup_steps, c.train.learning_rate = 40, 0, 1e-2
    c.train.update(train)
    return c


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_registered_and_shaped_like_the_gpt(kind):
    assert kind in KINDS
    model = build_model(tiny_config(kind).model, VOCAB, nnx.Rngs(0))
    logits = model(jnp.zeros((3, 7), jnp.int32))
    assert logits.shape == (3, 7, VOCAB) and logits.dtype == jnp.float32


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_every_parameter_names_its_axes(kind):
    model = build_model(tiny_config(kind).model, VOCAB, nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    for var in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        assert len(var.get_metadata()["logical_axes"]) == var[...].ndim


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_causal(kind):
    model = build_model(tiny_config(kind).model, VOCAB, nnx.Rngs(1))
    idx = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (2, 12)), jnp.int32)
    changed = idx.at[:, 6].set((idx[:, 6] + 1) % VOCAB)
    a, b = model(idx), model(changed)
    np.testing.assert_array_equal(a[:, :6], b[:, :6])
    assert not np.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_dropout_only_when_training(kind):
    c = tiny_config(kind)
    c.model.dropout = 0.5
    model = build_model(c.model, VOCAB, nnx.Rngs(0))
    idx = jnp.arange(8, dtype=jnp.int32)[None] % VOCAB
    np.testing.assert_array_equal(model(idx), model(idx))
    trained = model(idx, train=True, rngs=nnx.Rngs(dropout=0))
    assert not np.allclose(trained, model(idx))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_trains_with_the_train_step(kind):
    """A repeating pattern is learnable only by remembering the last tokens: loss must fall well."""
    c = tiny_config(kind, steps_per_call=20)
    c.model.dropout = 0.1
    pattern = np.tile(np.array([1, 2, 3, 1, 4, 5, 6, 4, 7], np.int32), 8)
    batch = np.stack([pattern[o:o + c.model.block_size + 1] for o in range(8)])
    batches = jnp.asarray(np.broadcast_to(batch, (20, 1, *batch.shape)))
    graphdef, params, _ = state_lib.abstract_model(c.model, VOCAB, c.seed)
    tx = build_optimizer(c.train, params)
    state = state_lib.fresh_state(c.model, VOCAB, c.seed, tx)
    step = jax.jit(make_train_step(graphdef, tx, c.train, c.seed))
    losses = []
    for _ in range(2):
        state, metrics = step(state, batches)
        losses.extend(np.asarray(metrics["loss"]).tolist())
    assert losses[0] > 2.0 and losses[-1] < 0.3
