"""The compiled train step: K optimizer steps in one call (the eval step is in `gptjax.eval.scoring`).

The model is split once into a static graph and two states: `params` (what the optimizer
updates) and `rest` (BatchNorm statistics and other non-trainable variables). The steps are
pure functions of those arrays, jitted with explicit shardings and the train state donated.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gptjax.eval.scoring import forward, token_nll
from gptjax.train import optimizer as optim


class PackedBatch(NamedTuple):
    """Conversation rows for fine-tuning: tokens (..., T+1), and for the T targets their loss
    weights (..., T) and the inputs' conversation ids (..., T). A text batch is a tokens array."""

    tokens: jax.Array
    weights: jax.Array
    segments: jax.Array


def batch_loss(logits, batch, denominator) -> jax.Array:
    """A text batch's mean token NLL; a packed batch's weighted NLL sum over `denominator`."""
    if not isinstance(batch, PackedBatch):
        return token_nll(logits, batch[:, 1:]).mean()
    return (token_nll(logits, batch.tokens[:, 1:]) * batch.weights).sum() / denominator


class TrainState(NamedTuple):
    step: jax.Array
    params: Any
    rest: Any
    opt_state: Any


def make_train_step(graphdef, tx: optax.GradientTransformation, tc, seed: int, *, split=None, loss_fn=None):
    """A function (state, batches (K, accum, B, T+1)) -> (state, metrics) doing K steps; metrics
    holds (K,) arrays: `loss`, `grad_norm` (before clipping) and `finite` (False: update skipped).

    Batches may be a `PackedBatch` of such arrays: the loss of a step is then the NLL summed over
    its weighted targets divided by their total weight over all micro-batches, which is exact
    under accumulation (each micro-batch's share is scaled by accum, as the mean divides by it).
    `split(batch, index)` makes (inputs, targets) of a text micro-batch (data.augment), `loss_fn(params,
    rest, batch, key)` replaces the token loss (model.kind=encdec); see `gptjax.train.model_steps`."""

    def token_loss(params, rest, batch, key, index, denominator):
        rngs = nnx.Rngs(dropout=key)
        if isinstance(batch, PackedBatch):
            logits, new_rest = forward(graphdef, params, rest, batch.tokens[:, :-1], train=True, rngs=rngs,
                                       segments=batch.segments)
            loss = batch_loss(logits, batch, denominator)
        else:
            inputs, targets = (batch[:, :-1], batch[:, 1:]) if split is None else split(batch, index)
            logits, new_rest = forward(graphdef, params, rest, inputs, train=True, rngs=rngs)
            loss = token_nll(logits, targets).mean()
        return loss + optim.penalty(params, tc), (loss, new_rest)

    def given_loss(params, rest, batch, key, index, denominator):
        return loss_fn(params, rest, batch, key)

    grad_fn = jax.value_and_grad(token_loss if loss_fn is None else given_loss, has_aux=True)

    def one_step(state: TrainState, micro_batches):
        key = jax.random.fold_in(jax.random.key(seed), state.step)

        n = jax.tree.leaves(micro_batches)[0].shape[0]
        denominator = None
        if isinstance(micro_batches, PackedBatch):
            denominator = jnp.maximum(micro_batches.weights.sum(), 1.0) / n

        def accumulate(carry, xs):
            grads, loss, rest = carry
            batch, i = xs
            (_, (l, rest)), g = grad_fn(state.params, rest, batch, jax.random.fold_in(key, i), state.step * n + i,
                                        denominator)
            return (jax.tree.map(jnp.add, grads, g), loss + l, rest), None

        if n == 1:
            first = jax.tree.map(lambda x: x[0], micro_batches)
            (_, (loss, rest)), grads = grad_fn(state.params, state.rest, first, key, state.step, denominator)
        else:
            zeros = jax.tree.map(jnp.zeros_like, state.params)
            (grads, loss, rest), _ = jax.lax.scan(accumulate, (zeros, 0.0, state.rest),
                                                  (micro_batches, jnp.arange(n)))
            grads, loss = jax.tree.map(lambda g: g / n, grads), loss / n
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A non-finite loss, gradient or result skips the update (the step still moves on to the
        # next batch), so a checkpoint never holds a non-finite state; the loop counts the skips.
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(params))
        params, rest, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), (params, rest, opt_state),
                                               (state.params, state.rest, state.opt_state))
        return TrainState(state.step + 1, params, rest, opt_state), {"loss": loss, "grad_norm": grad_norm,
                                                                     "finite": finite}

    def train_step(state: TrainState, batches):
        return jax.lax.scan(one_step, state, batches)

    return train_step
