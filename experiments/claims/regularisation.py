"""Claim (guide 9.1): L1 and L2 regularisation curb overfitting.

    python -m gptjax.main --config experiments/claims/regularisation.py --workdir runs/claims/regularisation

Arms: none / L2 as decoupled weight decay (AdamW, train.weight_decay=0.1) / L2 as a loss
penalty (train.l2) / L1 as a loss penalty (train.l1), 3 seeds each. With Adam the two L2
forms differ (the penalty's gradient is rescaled by Adam, weight decay is not), so both are arms.

Regime: the overfitting regime (30k characters, about 17 passes, no other regulariser).
Diagnostic: train - validation gap curves and the weight norms per layer through training
(train.log_layer_norms): a regulariser that works shrinks the weights and the gap together.

Estimated time: 12 runs of 500 steps x 16 x 64 chars, about 75 s each: 15 minutes.

Finding: depends, on the strength, and at the strengths swept it does not curb overfitting. All
three regularisers shrink the weights (norm 47.8 without; 45.2 with weight decay 0.1; 38.5 and
38.3 with the L2 and L1 penalties) and the last block's activations, but the overfitting is
untouched: the end gap stays at 0.68-0.72 nats per token, validation is best at 83-87% of
training in every arm, and no final difference is significant (the L2 penalty's -0.046 bits/char
is within the seed noise). Dropout in the same regime did close the gap (the dropout claim); a
norm penalty strong enough to do so was not part of this sweep.
"""

from experiments.claims.regimes import overfitting, sweep


def get_config():
    base = overfitting()
    base.train.log_layer_norms = True
    return sweep(base, [dict(name="none", overrides={}),
                        dict(name="weight-decay-0.1", overrides={"train.weight_decay": 0.1}),
                        dict(name="l2-1e-4", overrides={"train.l2": 1e-4}),
                        dict(name="l1-1e-5", overrides={"train.l1": 1e-5})])
