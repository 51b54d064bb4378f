import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs.default import get_config
from gptjax.model.gpt import GPT, GPTConfig
from gptjax.train import optimizer, state as state_lib, step as step_lib


def tiny(**overrides) -> GPTConfig:
    base = dict(vocab_size=11, block_size=12, n_layer=2, n_head=2, n_embd=16)
    return GPTConfig(**{**base, **overrides})


SWITCHES = [dict(pos_encoding=p) for p in ("learned", "sinusoidal", "rope", "none")] + [
    dict(norm="rmsnorm", activation="swiglu", init="xavier", bias=False, tie_embeddings=False),
    dict(norm="none", activation="relu2", init="he", qk_norm=True),
    dict(activation="leaky_relu"), dict(activation="elu"), dict(activation="relu", norm="batchnorm"),
]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(map(str, s.values())))
def test_changing_a_token_never_changes_earlier_logits(switches):
    model = GPT(tiny(**switches), rngs=nnx.Rngs(0))
    idx = jax.random.randint(jax.random.key(1), (2, 12), 0, 11)
    t = 7
    changed = idx.at[:, t].set((idx[:, t] + 1) % 11)
    a, b = model(idx), model(changed)
    assert a.shape == (2, 12, 11) and a.dtype == jnp.float32
    np.testing.assert_allclose(a[:, :t], b[:, :t], atol=1e-6)
    assert not np.allclose(a[:, t:], b[:, t:])


def test_dropout_is_active_only_in_training_and_keyed():
    model = GPT(tiny(embd_dropout=0.2, attn_dropout=0.2, resid_dropout=0.2), rngs=nnx.Rngs(0))
    idx = jnp.arange(12)[None] % 11
    eval_a, eval_b = model(idx), model(idx)
    train_a = model(idx, train=True, rngs=nnx.Rngs(dropout=jax.random.key(3)))
    train_b = model(idx, train=True, rngs=nnx.Rngs(dropout=jax.random.key(3)))
    train_c = model(idx, train=True, rngs=nnx.Rngs(dropout=jax.random.key(4)))
    np.testing.assert_array_equal(eval_a, eval_b)
    np.testing.assert_array_equal(train_a, train_b)
    assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_c)


def test_parameters_carry_logical_axes():
    _, params, _ = nnx.split(GPT(tiny(), rngs=nnx.Rngs(0)), nnx.Param, ...)
    found = {}
    for path, var in jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]:
        found["/".join(str(getattr(k, "key", k)) for k in path)] = var.get_metadata().get("logical_axes")
    assert found["wte/embedding"] == ("vocab", "embed")
    assert found["h/0/attn/c_attn/kernel"] == ("embed", "heads")
    assert found["h/0/mlp/c_proj/kernel"] == ("mlp", "embed")
    assert all(v is not None for v in found.values())


def test_a_tiny_model_overfits_a_tiny_corpus():
    c = get_config()
    c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.block_size = 2, 2, 32, 16
    c.train.learning_rate, c.train.warmup_steps, c.train.steps, c.train.weight_decay = 1e-2, 5, 150, 0.0
    text = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 3, 5, 7, 9, 2, 4, 6, 8] * 4, np.int32)
    graphdef, params, rest = state_lib.abstract_model(c.model, 10, 0)
    tx = optimizer.build_optimizer(c.train, params)
    state = jax.jit(lambda: state_lib.fresh_state(c.model, 10, 0, tx))()
    train_step = jax.jit(step_lib.make_train_step(graphdef, tx, c.train, 0))
    rows = np.stack([text[i:i + 17] for i in range(8)])[None, None]
    for _ in range(15):
        state, metrics = train_step(state, np.repeat(rows, 10, axis=0))
    losses = metrics["loss"]
    assert float(losses[-1]) < 0.05
    assert float(losses[-1]) < float(optax.softmax_cross_entropy_with_integer_labels(
        jnp.zeros((1, 10)), jnp.array([0]))[0]) / 20
