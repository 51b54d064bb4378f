"""Claim (guide 9.2): the choice of activation guards against vanishing gradients.

    python -m gptjax.main --config experiments/claims/activations.py --workdir runs/claims/activations

Arms: ReLU / Leaky ReLU / ELU / GELU / SwiGLU, and sigmoid as the saturating case the
claim says vanishes (its slope is at most 1/4), 3 seeds each.

Regime: the deep model (12 layers, 64 wide) without normalisation layers: norms rescale every
layer's input and hide how an activation shrinks or grows the signal, and depth compounds it.
The residual stream still carries gradients around each MLP, so what can vanish is the
gradient reaching the MLP weights of early layers; that is what the diagnostic reads. Trained
200 steps at a 3e-3 peak: at 1e-3 for 100 steps every arm stayed at the unigram's 4.77 bits per
char (measured: 4.66-4.78), which could show no difference.
Diagnostic: per-layer gradient norms of the MLP weights at initialisation and through
training (train.log_layer_norms), ratio first layer / last layer; final validation bits per char.

Estimated time: 18 runs of 200 steps x 8 x 64 chars, about 55 s each (20 s of it compiling 12
layers): 17 minutes.
"""

from experiments.claims.regimes import deep, sweep


def get_config():
    base = deep(steps=200)
    base.model.norm = "none"
    base.train.learning_rate = 3e-3
    names = ("relu", "leaky_relu", "elu", "gelu", "swiglu", "sigmoid")
    return sweep(base, [dict(name=n.replace("_", "-"), overrides={"model.activation": n}) for n in names])
