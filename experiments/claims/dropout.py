"""Claim (guide 6.4, 9.1): dropout curbs overfitting.

    python -m gptjax.main --config experiments/claims/dropout.py --workdir runs/claims/dropout

Arms: model.dropout 0 / 0.1 / 0.2 / 0.3 (every site), 3 seeds each.

Regime: the overfitting regime (experiments/claims/regimes.py): 30k training characters seen
about 17 times without weight decay, so that without dropout validation loss turns up while
training loss keeps falling. A regime that does not overfit could only show dropout's cost.
Diagnostic: the train - validation gap against tokens seen (metrics.jsonl), the best
validation step (where each arm starts to overfit) and final validation bits per char.

Estimated time: 12 runs of 500 steps x 16 x 64 chars, about 75 s each: 15 minutes.
"""

from experiments.claims.regimes import overfitting, sweep


def get_config():
    return sweep(overfitting(), [dict(name=f"dropout-{p}", overrides={"model.dropout": p})
                                 for p in (0.0, 0.1, 0.2, 0.3)])
