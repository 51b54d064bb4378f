"""Claim (guide 9.2): initialisation decides whether a deep network trains.

    python -m gptjax.main --config experiments/claims/initialisation.py --workdir runs/claims/initialisation

Arms: GPT-2's normal(0.02) / Xavier (Glorot uniform) / He (normal), each with and without
residual scaling (residual projections scaled by 1/sqrt(2 n_layer)), 3 seeds each.

Regime: the deep model (12 layers, 64 wide): with 24 residual branches adding into one stream,
unscaled branches grow the stream's variance with depth, and the init's scale shows in the
activations of late layers. A shallow model would forgive any of them.
Diagnostic: activation and gradient norms per layer at initialisation and through training
(train.log_layer_norms); loss at 10% of training (early trainability) and at the end.

Estimated time: 18 runs of 100 steps x 8 x 64 chars, about 60 s each (35 s of it compiling): 18 minutes.
"""

from experiments.claims.regimes import deep, sweep


def get_config():
    runs = [dict(name=f"{init}-{'scaled' if scaled else 'unscaled'}",
                 overrides={"model.init": init, "model.residual_scaling": scaled})
            for init in ("normal", "xavier", "he") for scaled in (True, False)]
    base = deep()
    base.model.residual_scaling = True
    return sweep(base, runs)
