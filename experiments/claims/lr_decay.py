"""Claim (guide 6.1): decaying the learning rate improves the final loss.

    python -m gptjax.main --config experiments/claims/lr_decay.py --workdir runs/claims/lr_decay

Arms: constant / cosine / warmup-stable-decay (last 20%) / linear, the same warmup and peak
rate, 3 seeds each.

Regime: the small GPT for 400 steps, long enough that a constant rate stalls at the noise
floor its step size allows, which is what decay lowers; the final 10% of steps is where the
arms part. Diagnostic: the validation curve (the WSD arm tracks constant until its decay,
then drops) and final validation bits per char.

Estimated time: 12 runs of 400 steps x 16 x 64 chars, about 30 s each (measured): 6 minutes.

Finding: supported in this regime. All three schedules end 0.11-0.13 bits/char below the
constant rate with non-overlapping seeds; the three decays are within 0.014 of each other, so
what matters is decaying at all, not the shape. The WSD arm tracks the constant one until its
last 20% and then drops (the curve plot).
"""

from experiments.claims.regimes import small, sweep


def get_config():
    return sweep(small(steps=400), [dict(name=s, overrides={"train.schedule": s})
                                    for s in ("constant", "cosine", "wsd", "linear")])
