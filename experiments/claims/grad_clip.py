"""Claim (guide 6.2, 9.2): gradient clipping prevents exploding gradients.

    python -m gptjax.main --config experiments/claims/grad_clip.py --workdir runs/claims/grad_clip

Arms: clipping off / global norm 1.0 / 0.5, 3 seeds each.

Regime: a learning rate far above the default (3e-2 peak, no warmup, 4 layers), where an
unclipped run meets large updates early; at the default rate clipping rarely triggers and could
not show anything.
Diagnostic: per-layer gradient-norm curves (train.log_layer_norms), loss spikes counted (a
logged train loss above 1.5x the running minimum after the first 10% of steps), final
validation bits per char.

Estimated time: 9 runs of 300 steps x 16 x 64 chars, about 80 s each: 12 minutes.
"""

from experiments.claims.regimes import small, sweep


def get_config():
    base = small(n_layer=4, steps=300, learning_rate=3e-2, warmup_steps=0)
    base.train.log_layer_norms = True
    base.train.log_every = 5
    return sweep(base, [dict(name=f"clip-{c}", overrides={"train.grad_clip": c}) for c in (0.0, 1.0, 0.5)])
