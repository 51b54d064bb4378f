import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gptjax.model.causal_batchnorm import CausalBatchNorm
from gptjax.model.gpt import GPT, GPTConfig, Norm


def later_changed(x, t):
    return x.at[:, t:].set(x[:, t:] * 3.0 + 1.0)


def test_train_mode_statistics_are_per_position():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 6)), jnp.float32)
    norm = CausalBatchNorm(6, rngs=nnx.Rngs(0))
    y = norm(x, use_running_average=False)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)  # each position normalised over the batch
    np.testing.assert_allclose(y.var(axis=0), 1.0, atol=1e-3)
    y2 = norm(later_changed(x, 5), use_running_average=False)
    np.testing.assert_allclose(y2[:, :5], y[:, :5], atol=1e-6)
    # flax's BatchNorm pools over time, so the same change leaks backwards: what this layer fixes.
    flax_norm = nnx.BatchNorm(6, rngs=nnx.Rngs(0))
    leaky = flax_norm(x, use_running_average=False)
    assert not np.allclose(flax_norm(later_changed(x, 5), use_running_average=False)[:, :5], leaky[:, :5])


def test_running_averages_update_in_training_and_serve_evaluation():
    x = jnp.asarray(np.random.default_rng(1).normal(2.0, 3.0, size=(8, 5, 4)), jnp.float32)
    norm = CausalBatchNorm(4, momentum=0.5, rngs=nnx.Rngs(0))
    norm(x, use_running_average=False)
    want_mean = 0.5 * x.mean(axis=0).mean(axis=0)
    want_var = 0.5 + 0.5 * x.var(axis=0).mean(axis=0)
    np.testing.assert_allclose(norm.mean[...], want_mean, rtol=1e-5)
    np.testing.assert_allclose(norm.var[...], want_var, rtol=1e-5)
    y = norm(x[:, :1], use_running_average=True)  # one position, as in cached decoding
    np.testing.assert_allclose(y, (x[:, :1] - want_mean) / np.sqrt(want_var + 1e-5), rtol=1e-4, atol=1e-5)


def gpt_with_batchnorm(causal: bool) -> GPT:
    norm = "causal_batchnorm" if causal else "batchnorm"
    cfg = GPTConfig(vocab_size=17, block_size=12, n_layer=2, n_head=2, n_embd=16, norm=norm)
    return GPT(cfg, rngs=nnx.Rngs(0))


def test_config_string_builds_the_causal_norm():
    norms = [node.norm for _, node in nnx.iter_graph(gpt_with_batchnorm(True)) if isinstance(node, Norm)]
    assert len(norms) == 5 and all(isinstance(n, CausalBatchNorm) for n in norms)


@pytest.mark.parametrize("causal", [True, False])
def test_gpt_in_train_mode_is_causal_only_with_causal_batchnorm(causal):
    idx = jnp.asarray(np.random.default_rng(2).integers(0, 17, size=(4, 12)), jnp.int32)
    changed = idx.at[:, 8:].set((idx[:, 8:] + 5) % 17)
    before = gpt_with_batchnorm(causal)(idx, train=True)
    after = gpt_with_batchnorm(causal)(changed, train=True)
    assert np.allclose(after[:, :8], before[:, :8], atol=1e-5) == causal


@pytest.mark.parametrize("norm", ["batchnorm", "causal_batchnorm"])
def test_train_step_updates_batch_statistics(norm):
    """Under jax.grad the statistics are written from inside the traced loss: the step must allow it."""
    from configs.base import get_config
    from gptjax.train import state as state_lib
    from gptjax.train.optimizer import build_optimizer
    from gptjax.train.step import make_train_step

    c = get_config("smoke")
    c.model.norm, c.model.block_size = norm, 8
    graphdef, params, _ = state_lib.abstract_model(c.model, 17, 0)
    tx = build_optimizer(c.train, params)
    state = state_lib.fresh_state(c.model, 17, 0, tx)
    batch = jnp.asarray(np.random.default_rng(3).integers(0, 17, size=(1, 1, 4, 9)), jnp.int32)
    new, metrics = make_train_step(graphdef, tx, c.train, 0)(state, batch)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.rest), jax.tree.leaves(new.rest))
             if np.ndim(a) == 1]
    assert moved and any(moved)
