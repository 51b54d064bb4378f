"""Claim (guide 9.1): L1 and L2 regularisation curb overfitting.

    python -m gptjax.main --config experiments/claims/regularisation.py --workdir runs/claims/regularisation

Arms: none / L2 as decoupled weight decay (AdamW, train.weight_decay=0.1) / L2 as a loss
penalty (train.l2) / L1 as a loss penalty (train.l1), 3 seeds each. With Adam the two L2
forms differ (the penalty's gradient is rescaled by Adam, weight decay is not), so both are arms.

Regime: the overfitting regime (30k characters, about 17 passes, no other regulariser).
Diagnostic: train - validation gap curves and the weight norms per layer through training
(train.log_layer_norms): a regulariser that works shrinks the weights and the gap together.

Estimated time: 12 runs of 500 steps x 16 x 64 chars, about 75 s each: 15 minutes.
"""

from experiments.claims.regimes import overfitting, sweep


def get_config():
    base = overfitting()
    base.train.log_layer_norms = True
    return sweep(base, [dict(name="none", overrides={}),
                        dict(name="weight-decay-0.1", overrides={"train.weight_decay": 0.1}),
                        dict(name="l2-1e-4", overrides={"train.l2": 1e-4}),
                        dict(name="l1-1e-5", overrides={"train.l1": 1e-5})])
