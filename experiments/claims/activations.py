"""Claim (guide 9.2): the choice of activation guards against vanishing gradients.

    python -m gptjax.main --config experiments/claims/activations.py --workdir runs/claims/activations

Arms: ReLU / Leaky ReLU / ELU / GELU / SwiGLU, and sigmoid as the saturating case the claim says
vanishes (its slope is at most 1/4), 3 seeds each.

Regime: the deep model (12 layers, 64 wide) without normalisation layers: norms rescale every
layer's input and hide how an activation shrinks or grows the signal, and depth compounds it.
The residual stream still carries gradients around each MLP, so what can vanish is the
gradient reaching the MLP weights of early layers; that is what the diagnostic reads. Trained
200 steps at a 2e-3 peak: at 3e-3 SwiGLU diverged (seed 0: the loss was not finite from step
82 on), and at 1e-3 for 100 steps every arm stayed at the unigram's 4.77 bits per char
(measured: 4.66-4.78), which could show no difference.
Diagnostic: per-layer gradient norms of the MLP weights at initialisation and through
training (train.log_layer_norms): their mean over blocks, and the first block's over the
last's; final validation bits per char.

Estimated time: 18 runs of 200 steps x 8 x 64 chars, about 43 s each (20 s of it compiling 12
layers): 13 minutes.

Finding: supported for the saturating case. The rectifiers (ReLU, Leaky ReLU, ELU, GELU) end
within seed noise of each other (3.90-3.97 bits/char); sigmoid is 0.61 bits/char behind ReLU
(p = 0.022), and its gradients show why: they start 6x larger than the rectifiers' (its units
are not centred on zero; each adds about 0.5) and shrink 11x during training, to a mean block
gradient norm of 0.028 at the end, the smallest of all arms (rectifiers 0.09-0.19) while its
loss is the highest (3.14 nats of training loss against 2.71-2.76): saturated units pass little
gradient. They shrink in every block alike rather than on the way down (first/last block 2.8 at
the end, ReLU 2.9): the residual stream carries gradient past every MLP. Unnormalised SwiGLU is
the unstable arm rather than the vanishing one: 4.13 ± 0.17 bits/char (+0.19, p = 0.18), one
seed's gradient norm burst to 7e17 at step 100 before the run recovered, and at 3e-3 it
diverged: its product of two projections grows with the square of its input. (The per-arm
verdicts ask whether an arm beats ReLU; the claim is that the choice matters, which the sigmoid
arm shows.)
"""

from experiments.claims.regimes import deep, sweep


def get_config():
    base = deep(steps=200)
    base.model.norm = "none"
    base.train.learning_rate = 2e-3
    names = ("relu", "leaky_relu", "elu", "gelu", "swiglu", "sigmoid")
    return sweep(base, [dict(name=n.replace("_", "-"), overrides={"model.activation": n}) for n in names])
