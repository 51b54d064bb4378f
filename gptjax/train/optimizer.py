"""The optax chain: clip by global norm -> AdamW (or Muon + NAdamW) with a weight-decay mask, on a schedule."""

from __future__ import annotations

import jax
import optax


def cosine(tc, peak: float, floor: float, steps: int, after_warmup: int) -> optax.Schedule:
    return optax.cosine_decay_schedule(peak, after_warmup, alpha=tc.min_lr_ratio)


def linear(tc, peak: float, floor: float, steps: int, after_warmup: int) -> optax.Schedule:
    return optax.linear_schedule(peak, floor, after_warmup)


def constant(tc, peak: float, floor: float, steps: int, after_warmup: int) -> optax.Schedule:
    return optax.constant_schedule(peak)


def wsd(tc, peak: float, floor: float, steps: int, after_warmup: int) -> optax.Schedule:
    """Warmup-stable-decay: flat, then a linear decay over the last train.decay_fraction of the steps."""
    decay = max(int(steps * tc.decay_fraction), 1)
    return optax.join_schedules([optax.constant_schedule(peak), optax.linear_schedule(peak, floor, decay)],
                                [max(after_warmup - decay, 0)])


# train.schedule -> (train config, peak, floor, schedule steps, steps after warmup) -> what follows the
# warmup. The config check takes its choices from this table (and OPTIMIZERS below).
SCHEDULES = {"cosine": cosine, "linear": linear, "constant": constant, "wsd": wsd}


def learning_rate_schedule(tc, peak: float = 0.0) -> optax.Schedule:
    """Linear warmup (its first step above 0), then train.schedule from SCHEDULES, decaying to min_lr_ratio * peak.
    peak defaults to train.learning_rate."""
    peak = peak or tc.learning_rate
    steps = tc.schedule_steps or tc.steps
    warmup = min(tc.warmup_steps, steps)
    after = SCHEDULES[tc.schedule](tc, peak, peak * tc.min_lr_ratio, steps, max(steps - warmup, 1))
    # Step s < warmup trains at peak * (s + 1) / (warmup + 1): the first step already learns.
    ramp = optax.linear_schedule(0.0, peak, warmup + 1)
    return optax.join_schedules([lambda count: ramp(count + 1), after], [warmup])


def decayed(path) -> str:
    """'kernel', 'embedding' or '' for a parameter's path: what weight decay may apply to."""
    names = [str(getattr(k, "key", k)) for k in path]
    if "kernel" in names:
        return "kernel"
    if "embedding" in names:
        return "embedding"
    return ""


def decay_mask(params, decay_embeddings: bool):
    """True where weight decay applies: matrices, and embeddings only if asked (never norms or biases)."""
    kinds = ("kernel", "embedding") if decay_embeddings else ("kernel",)
    return jax.tree_util.tree_map_with_path(lambda path, _: decayed(path) in kinds, params)


def adamw(tc, params, mask) -> optax.GradientTransformation:
    return optax.adamw(learning_rate_schedule(tc), b1=tc.beta1, b2=tc.beta2, eps=tc.eps,
                       weight_decay=tc.weight_decay, mask=mask)


def muon(tc, params, mask) -> optax.GradientTransformation:
    """Muon orthogonalises the updates of hidden matrices (`muon_dimensions`), on a peak rate of their
    own (an orthogonalised update's entries are about 1/sqrt(width) of Adam's); the other parameters
    get the Adam part of optax's Muon, which is Nesterov AdamW (NAdamW), on train.learning_rate.

    Weight decay follows the mask in both parts. optax's Muon decays its matrices by a mask but its
    Adam part by one unmasked `adam_weight_decay`, so the mask splits the parameters between two
    Muons: one that decays all it holds and one that decays none.
    """
    def part(weight_decay: float) -> optax.GradientTransformation:
        return optax.contrib.muon(learning_rate_schedule(tc, tc.muon_learning_rate),
                                  adam_learning_rate=learning_rate_schedule(tc), ns_steps=tc.muon_ns_steps,
                                  beta=tc.muon_beta, adam_b1=tc.beta1, adam_b2=tc.beta2, eps=tc.eps,
                                  weight_decay=weight_decay, adam_weight_decay=weight_decay,
                                  muon_weight_dimension_numbers=muon_dimensions)

    labels = jax.tree.map(lambda decayed: "decayed" if decayed else "not_decayed", mask)
    return optax.partition({"decayed": part(tc.weight_decay), "not_decayed": part(0.0)}, labels)


# train.optimizer -> (train config, params, decay mask) -> the update rule before clipping.
OPTIMIZERS = {"adamw": adamw, "muon": muon}


def build_optimizer(tc, params) -> optax.GradientTransformation:
    core = OPTIMIZERS[tc.optimizer](tc, params, decay_mask(params, tc.decay_embeddings))
    if tc.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(tc.grad_clip), core)
    return core


def muon_dimensions(params):
    """Muon for 2-D kernels of hidden layers; None (AdamW) for embeddings, head, norms and biases."""
    def one(path, p):
        names = [str(getattr(k, "key", k)) for k in path]
        hidden = p.ndim == 2 and "kernel" in names and "lm_head" not in names
        return optax.contrib.MuonDimensionNumbers(reduction_axis=0, output_axis=1) if hidden else None
    return jax.tree_util.tree_map_with_path(one, params)


def penalty(params, tc):
    """L1 / L2 penalties on the decayed parameters, added to the loss when switched on."""
    if not (tc.l1 or tc.l2):
        return 0.0
    leaves = [p for m, p in zip(jax.tree.leaves(decay_mask(params, tc.decay_embeddings)), jax.tree.leaves(params)) if m]
    l1 = sum(abs(p).sum() for p in leaves)
    l2 = sum((p * p).sum() for p in leaves)
    return tc.l1 * l1 + tc.l2 * l2
