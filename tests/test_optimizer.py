from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.base import get_config
from gptjax.train import mesh as mesh_lib, optimizer, state as state_lib, step as step_lib


def train_config(**overrides):
    c = get_config()
    c.model.update(n_layer=1, n_head=2, n_embd=16, block_size=8)
    c.train.update({**dict(steps=100, warmup_steps=10, learning_rate=1e-2, min_lr_ratio=0.1), **overrides})
    return c


def test_cosine_warms_up_to_the_peak_and_ends_at_the_floor():
    schedule = optimizer.learning_rate_schedule(train_config().train)
    assert float(schedule(0)) == pytest.approx(1e-2 / 11)  # the first step learns
    assert float(schedule(9)) == pytest.approx(1e-2 * 10 / 11)
    assert float(schedule(10)) == pytest.approx(1e-2)
    assert float(schedule(100)) == pytest.approx(1e-3)
    assert float(schedule(55)) == pytest.approx(5.5e-3, rel=1e-3)


def test_wsd_stays_flat_until_its_decay_fraction():
    schedule = optimizer.learning_rate_schedule(train_config(schedule="wsd", decay_fraction=0.2).train)
    assert float(schedule(79)) == pytest.approx(1e-2)
    assert float(schedule(90)) == pytest.approx(5.5e-3)
    assert float(schedule(100)) == pytest.approx(1e-3)


def test_a_peak_of_its_own_scales_the_whole_schedule():
    tc = train_config().train
    for step in (5, 10, 60, 100):
        assert float(optimizer.learning_rate_schedule(tc, 0.05)(step)) == pytest.approx(
            5 * float(optimizer.learning_rate_schedule(tc)(step)))


def flat(tree) -> dict:
    return {"/".join(str(getattr(k, "key", k)) for k in path).removesuffix("/.value"): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: x is None)}


def test_weight_decay_spares_norms_and_biases_and_embeddings_unless_asked():
    c = train_config()
    _, params, _ = state_lib.abstract_model(c.model, 10, 0)
    mask = flat(optimizer.decay_mask(params, decay_embeddings=False))
    assert mask["h/0/attn/c_attn/kernel"] and mask["h/0/mlp/c_fc/kernel"]
    assert not mask["wte/embedding"] and not mask["h/0/attn/c_attn/bias"] and not mask["ln_f/norm/scale"]
    assert flat(optimizer.decay_mask(params, decay_embeddings=True))["wte/embedding"]


def gaussian(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


def ill_conditioned(shape) -> np.ndarray:
    """A gradient whose singular values span two orders of magnitude (vectors: Gaussian)."""
    if len(shape) != 2:
        return gaussian(shape)
    rng, k = np.random.default_rng(0), min(shape)
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], k)))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], k)))
    return u @ np.diag(np.logspace(0, -2, k)) @ v.T


def last_update(c, *gradients) -> dict:
    """The optimizer's update after fixed random gradients, one a step, at fixed parameters."""
    _, params, _ = state_lib.abstract_model(c.model, 10, 0)
    params = jax.tree.map(lambda p: jnp.ones(p.shape, p.dtype), params)
    tx = optimizer.build_optimizer(c.train, params)
    state = tx.init(params)
    for gradient in gradients:
        grads = jax.tree.map(lambda p: jnp.asarray(gradient(p.shape), p.dtype), params)
        updates, state = tx.update(grads, state, params)
    return flat(updates)


MUON_FIRST_STEP = dict(optimizer="muon", warmup_steps=0, weight_decay=0.0, grad_clip=0.0)


def spread(update) -> float:
    """Largest over smallest singular value: 1 for an orthogonal update."""
    singular = np.linalg.svd(np.asarray(update), compute_uv=False)
    return singular.max() / singular.min()


def test_muon_moves_hidden_matrices_on_their_own_rate_and_the_rest_on_adamw():
    same = last_update(train_config(**MUON_FIRST_STEP), gaussian)
    faster = last_update(train_config(muon_learning_rate=3e-2, **MUON_FIRST_STEP), gaussian)
    hidden = ["h/0/attn/c_attn/kernel", "h/0/attn/c_proj/kernel", "h/0/mlp/c_fc/kernel", "h/0/mlp/c_proj/kernel"]
    for name in hidden:
        np.testing.assert_allclose(faster[name], 3 * same[name], rtol=1e-5)
        assert spread(same[name]) < 2, f"{name}: update not orthogonalised"
    for name in ("wte/embedding", "ln_f/norm/scale"):
        np.testing.assert_allclose(faster[name], same[name])
        assert 0.5e-2 < np.abs(same[name]).max() < 2e-2  # Adam's first step is about lr * sign(g)


def test_fewer_newton_schulz_iterations_leave_muon_updates_less_orthogonal():
    after = {steps: spread(last_update(train_config(muon_ns_steps=steps, **MUON_FIRST_STEP), ill_conditioned)
                           ["h/0/mlp/c_fc/kernel"]) for steps in (1, 5)}
    assert after[5] < 2 < 20 < after[1]


def test_muon_momentum_carries_the_first_gradient_into_the_second_update():
    def alignment(beta):
        """Cosine between the second update of c_fc and the first gradient (near 0 without momentum)."""
        update = last_update(train_config(muon_beta=beta, **MUON_FIRST_STEP), gaussian, partial(gaussian, seed=1))
        first = gaussian(update["h/0/mlp/c_fc/kernel"].shape)
        second = np.asarray(update["h/0/mlp/c_fc/kernel"])
        return float((second * first).sum() / np.linalg.norm(second) / np.linalg.norm(first))
    assert abs(alignment(0.0)) < 0.1
    assert alignment(0.95) < -0.3


def test_a_muon_train_state_is_built_sharded_and_trains():
    c = train_config(optimizer="muon", muon_learning_rate=2e-2, warmup_steps=0)
    graphdef, params, rest = state_lib.abstract_model(c.model, 10, 0)
    tx = optimizer.build_optimizer(c.train, params)
    mesh = mesh_lib.build_mesh(c.mesh)
    shardings = state_lib.state_shardings(graphdef, params, rest, tx, mesh)
    moments = flat(shardings.opt_state)
    assert any(name.endswith("h/0/mlp/c_fc/kernel") for name in moments)  # Muon's momentum
    state = state_lib.init_state(c.model, 10, 0, tx, shardings)
    train_step = jax.jit(step_lib.make_train_step(graphdef, tx, c.train, 0))
    rows = np.tile(np.arange(9, dtype=np.int32), (10, 1, 4, 1))  # 10 steps a call
    state, first = train_step(state, rows)
    for _ in range(5):
        state, metrics = train_step(state, rows)
    assert float(metrics["loss"][-1]) < float(first["loss"][0]) / 10


def test_muon_decays_what_the_mask_decays_in_both_of_its_parts():
    """With zero gradients an update is the decay alone: -rate * weight_decay * p where the mask says so."""
    c = train_config(optimizer="muon", learning_rate=1e-2, muon_learning_rate=2e-2, warmup_steps=0,
                     schedule="constant", weight_decay=0.5, decay_embeddings=True, grad_clip=0.0)
    c.model.tie_embeddings = False  # an lm_head of its own, handled by the Adam part
    _, abstract, _ = state_lib.abstract_model(c.model, 10, 0)
    params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), abstract)
    tx = optimizer.build_optimizer(c.train, params)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    mask = flat(optimizer.decay_mask(params, decay_embeddings=True))
    assert mask["lm_head/kernel"] and mask["wte/embedding"] and not mask["ln_f/norm/scale"]
    for name, update in flat(updates).items():
        rate = 2e-2 if name.startswith("h/") and name.endswith("kernel") else 1e-2  # Muon's matrices, then Adam's
        np.testing.assert_allclose(update, -rate * 0.5 if mask[name] else 0.0, rtol=1e-6, err_msg=name)
