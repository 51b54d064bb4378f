"""Scoring a model on tokens: the one token NLL, eval step and summary that training,
evaluation, sweeps and baselines all report.

Eval steps return sums rather than means, so that batches and processes add up to exact
totals; `summarize` turns those totals into loss, perplexity and bits per token / byte /
char. Bits per byte and per char use the UTF-8 size of each target token, so they compare
across tokenizers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def forward(graphdef, params, rest, idx, *, train: bool, rngs=None, segments=None):
    """Logits of the model rebuilt from its arrays, and the updated non-trainable state;
    `segments` (B, T) marks rows packed with several conversations (GPT only)."""
    if train:  # under jax.grad, batch-norm statistics are updated in place: give them this trace's copies,
        rest = jax.tree.map(jnp.copy, rest)  # or nnx refuses to mutate a value of the outer trace
    model = nnx.merge(graphdef, params, rest)
    packed = {} if segments is None else {"segments": segments}
    logits = model(idx, train=train, rngs=rngs, **packed)
    _, _, new_rest = nnx.split(model, nnx.Param, ...)
    return logits, new_rest


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Negative log-likelihood of each target, in nats (float32)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def make_eval_step(graphdef, token_bytes, token_chars):
    """A function (params, rest, batch, weights[, segments]) -> sums of (nll, tokens, bytes, chars);
    segments (B, T), the inputs' conversation ids, for packed conversation rows."""
    token_bytes = jnp.asarray(token_bytes, jnp.float32)
    token_chars = jnp.asarray(token_chars, jnp.float32)

    def eval_step(params, rest, batch, weights, segments=None):
        logits, _ = forward(graphdef, params, rest, batch[:, :-1], train=False, segments=segments)
        targets = batch[:, 1:]
        nll = token_nll(logits, targets) * weights
        return jnp.stack([nll.sum(), weights.sum(), (token_bytes[targets] * weights).sum(),
                          (token_chars[targets] * weights).sum()])

    return eval_step


def evaluate(eval_step, params, rest, batch_list) -> dict:
    """The summary of an eval step summed over (batch, weights[, segments]) tuples.

    Each batch's sums come to the host (and add there, in the same float32) before the next
    batch is dispatched. Dispatched all at once, the hundreds of batches of a full split (each a
    multi-device program ending in an all-reduce, then the add of its sums) deadlocked the CPU
    client's rendezvous on 8 virtual devices: one device's part never ran. One batch in flight
    costs little against the size of an eval batch.
    """
    sums = 0
    for arrays in batch_list:
        sums = sums + jax.device_get(eval_step(params, rest, *arrays))
    return summarize(sums)


def summarize(sums) -> dict:
    """Loss, perplexity and bits per token / byte / char from summed eval totals."""
    nll, tokens, n_bytes, chars = (float(x) for x in sums)
    loss = nll / max(tokens, 1.0)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
            "bits_per_token": loss / math.log(2),
            "bits_per_byte": nll / math.log(2) / max(n_bytes, 1.0),
            "bits_per_char": nll / math.log(2) / max(chars, 1.0), "tokens": int(tokens)}
