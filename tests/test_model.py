import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs.base import get_config
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


def test_bfloat16_keeps_the_residual_stream_in_float32_and_matmuls_in_bfloat16(monkeypatch):
    from gptjax.model import gpt

    model = GPT(tiny(dtype=jnp.bfloat16, pos_encoding="learned"), rngs=nnx.Rngs(0))
    seen = []
    block_call = gpt.Block.__call__

    def spy(self, x, *args, **kwargs):
        out = block_call(self, x, *args, **kwargs)
        seen.append((x.dtype, out[0].dtype))
        return out

    monkeypatch.setattr(gpt.Block, "__call__", spy)
    idx = jnp.arange(12)[None] % 11
    assert model(idx).dtype == jnp.float32
    assert seen == [(jnp.float32, jnp.float32)] * 2
    dots = list(equations(jax.make_jaxpr(lambda i: model(i))(idx).jaxpr, "dot_general"))
    assert dots and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)


def equations(jaxpr, primitive: str):
    """Every equation of `primitive` in a jaxpr and the jaxprs nested in it (jit, remat...)."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            yield eqn
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                yield from equations(inner, primitive)


def test_float32_blocks_see_float32():
    model = GPT(tiny(), rngs=nnx.Rngs(0))
    x, _ = model.h[0](jnp.ones((1, 4, 16), jnp.float32))
    assert x.dtype == jnp.float32


@pytest.mark.parametrize("backend, dtype, head, dropout, expected", [
    ("cpu", jnp.bfloat16, 64, 0.0, "einsum"),
    ("gpu", jnp.bfloat16, 64, 0.0, "cudnn"),
    ("gpu", jnp.float16, 128, 0.0, "cudnn"),
    ("gpu", jnp.float32, 64, 0.0, "xla"),
    ("gpu", jnp.bfloat16, 64, 0.1, "einsum"),
    ("gpu", jnp.bfloat16, 12, 0.0, "xla"),
    ("gpu", jnp.bfloat16, 256, 0.0, "xla"),
    ("tpu", jnp.bfloat16, 64, 0.0, "xla"),
])
def test_cudnn_attention_is_chosen_only_where_it_applies(backend, dtype, head, dropout, expected):
    from gptjax.model.gpt import attention_implementation

    assert attention_implementation(backend, dtype, head, dropout) == expected


def test_padded_vocabulary_rows_are_never_scored_or_sampled():
    model = GPT(tiny(vocab_pad=8), rngs=nnx.Rngs(0))
    assert model.wte.embedding.shape == (16, 16)
    idx = jax.random.randint(jax.random.key(1), (2, 12), 0, 11)
    logits = model(idx)
    assert logits.shape == (2, 12, 11)
    model.wte.embedding[...] = model.wte.embedding[...].at[11:].set(100.0)
    np.testing.assert_array_equal(model(idx), logits)


def test_remat_gives_the_same_logits_and_gradients():
    idx = jax.random.randint(jax.random.key(1), (2, 12), 0, 11)

    def grads(remat):
        model = GPT(tiny(remat=remat), rngs=nnx.Rngs(0))
        loss = lambda m: jnp.mean(m(idx, train=True, rngs=nnx.Rngs(0)) ** 2)  # noqa: E731
        return jax.tree.leaves(nnx.grad(loss)(model))

    for a, b in zip(grads(False), grads(True)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("field, value", [("norm", "layer"), ("activation", "gelu2"), ("init", "zeros"),
                                          ("pos_encoding", "alibi")])
def test_an_unknown_switch_is_refused_when_the_config_is_built(field, value):
    with pytest.raises(ValueError, match=f"model.{field}={value!r}"):
        tiny(**{field: value})


@pytest.mark.parametrize("init", ["normal", "xavier", "he"])
def test_residual_scaling_shrinks_only_the_residual_projections(init):
    def kernels(scaled):
        cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=8, n_head=2, n_embd=32, init=init,
                        residual_scaling=scaled)
        block = GPT(cfg, rngs=nnx.Rngs(0)).h[0]
        return block.attn.c_proj.kernel[...], block.mlp.c_proj.kernel[...], block.mlp.c_fc.kernel[...]

    scaled, plain = kernels(True), kernels(False)
    for s, p in zip(scaled[:2], plain[:2]):
        np.testing.assert_allclose(s, p / 4.0, rtol=1e-5, atol=1e-7)  # 1/sqrt(2 * 8)
    np.testing.assert_array_equal(scaled[2], plain[2])


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_saturating_activations_build_and_run(activation):
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16, activation=activation)
    logits = GPT(cfg, rngs=nnx.Rngs(0))(jnp.zeros((1, 8), jnp.int32))
    assert logits.shape == (1, 8, 11) and np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize("kind, overrides, lora", [
    ("gpt", {}, None), ("gpt", {"activation": "swiglu", "tie_embeddings": False, "norm": "layernorm"}, None),
    ("gpt", {}, ("attn.c_attn",)), ("encdec", {}, None), ("lstm", {}, None), ("gru", {}, None)])
def test_keys_build_the_model_nnx_rngs_builds(kind, overrides, lora):
    """`state.Keys` must give the very graph, variables and initial values of `nnx.Rngs`:
    checkpoints are restored into its graph and a seed's run must not change."""
    from gptjax.model import build_model
    from gptjax.model.lora import LoRASettings

    c = get_config()
    c.model.kind, c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.block_size = kind, 2, 2, 32, 16
    for key, value in overrides.items():
        c.model[key] = value
    settings = LoRASettings.create(4, 8.0, lora) if lora else None
    leaves = lambda tree: jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    described = lambda tree: [(p, type(v), v.shape, v.dtype, v.get_metadata()) for p, v in leaves(tree)]
    fast = state_lib.abstract_model(c.model, 40, 3, settings)
    real = nnx.split(nnx.eval_shape(lambda: build_model(c.model, 40, nnx.Rngs(3), settings)), nnx.Param, ...)
    assert fast[0] == real[0]
    assert described(fast[1:]) == described(real[1:])
    ours = nnx.state(build_model(c.model, 40, state_lib.Keys(3), settings))
    theirs = nnx.state(build_model(c.model, 40, nnx.Rngs(3), settings))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), ours, theirs))
