"""Claim (guide 6.4, 9.1): dropout curbs overfitting.

    python -m gptjax.main --config experiments/claims/dropout.py --workdir runs/claims/dropout

Arms: model.dropout 0 / 0.1 / 0.2 / 0.3 (every site), 3 seeds each.

Regime: the overfitting regime (experiments/claims/regimes.py): 30k training characters seen
about 17 times without weight decay, so that without dropout validation loss turns up while
training loss keeps falling. A regime that does not overfit could only show dropout's cost.
Diagnostic: the train - validation gap against tokens seen (metrics.jsonl), the best
validation step (where each arm starts to overfit) and final validation bits per char.

Estimated time: 12 runs of 500 steps x 16 x 64 chars, about 75 s each: 15 minutes.

Finding: supported where the run overfits, and the dose matters. Without dropout this regime
overfits (validation best at 83% of training, then rising; an end gap of 0.69 nats per token);
every dropout rate keeps validation loss falling to the end and shrinks the gap (0.42 / 0.29 /
0.20 at 0.1 / 0.2 / 0.3). On final loss 0.1 is significantly better (-0.065 bits/char, p =
0.048), 0.2 better but within the seed noise, 0.3 level: the stronger the dropout, the more its
noise costs what it saves. In the milder regime first tried (100k characters, 5 passes)
validation loss was still falling for every arm and 0.2 and 0.3 ended significantly worse:
dropout pays only once a run has passed its validation minimum.
"""

from experiments.claims.regimes import overfitting, sweep


def get_config():
    return sweep(overfitting(), [dict(name=f"dropout-{p}", overrides={"model.dropout": p})
                                 for p in (0.0, 0.1, 0.2, 0.3)])
