"""Per-layer gradient, activation and weight norms (`train.log_layer_norms`): how a person sees
vanishing and exploding gradients, and what a norm or an initialisation keeps in range.

At every metrics record (and once before the first step) one fixed batch, the first validation
batch, is scored in evaluation mode and differentiated: the figures are of the same inputs at
every step, so a curve moves only because the model did. Per layer (a block of `h`, `encoder`
or `decoder`; the embeddings, final norm and head as their own groups):

- `layer_grad_norm/<layer>`: the L2 norm of the gradient of the batch's mean loss;
- `layer_weight_norm/<layer>`: the L2 norm of its parameters;
- `layer_activation_rms/<layer>`: the root mean square of the residual stream after the block
  (the GPT only; a recurrent or encoder-decoder model logs gradients and weights).

`plot(workdir)` draws the three against the step into `layer_norms.png`.
"""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from flax import nnx  # noqa: E402

from gptjax.model.gpt import GPT, POS_ENCODINGS  # noqa: E402

KINDS = {"layer_grad_norm": "gradient L2 norm", "layer_activation_rms": "activation RMS",
         "layer_weight_norm": "weight L2 norm"}


def layer_of(path) -> str:
    """'h.3' for a parameter of block 3, else the top-level name ('wte', 'ln_f', ...)."""
    names = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
    return f"{names[0]}.{names[1]}" if len(names) > 1 and names[1].isdigit() else names[0]


def grouped_norms(tree) -> dict[str, jax.Array]:
    """L2 norm of the leaves of each layer, in the order the layers first appear."""
    squares: dict[str, jax.Array] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        name = layer_of(path)
        squares[name] = squares.get(name, 0.0) + jnp.sum(jnp.square(leaf.astype(jnp.float32)))
    return {name: jnp.sqrt(s) for name, s in squares.items()}


def block_activations(model: GPT, idx: jax.Array) -> dict[str, jax.Array]:
    """RMS of the GPT's residual stream after each block, in evaluation mode."""
    B, T = idx.shape
    x = jnp.take(model.wte.embedding[...], idx, axis=0).astype(jnp.float32)
    x, rotary = POS_ENCODINGS[model.cfg.pos_encoding](model, x, jnp.broadcast_to(jnp.arange(T), (B, T)))
    out = {}
    for i, block in enumerate(model.h):
        x, _ = block(x, rotary)
        out[f"h.{i}"] = jnp.sqrt(jnp.mean(jnp.square(x)))
    return out


def make_layer_norms(graphdef, eval_step):
    """(params, rest, batch, weights) -> {metric key: value}; `eval_step` is the run's (sums of nll, tokens, ...)."""

    def mean_loss(params, rest, batch, weights):
        sums = eval_step(params, rest, batch, weights)
        return sums[0] / jnp.maximum(sums[1], 1.0)

    def norms(params, rest, batch, weights):
        grads = jax.grad(mean_loss)(params, rest, batch, weights)
        out = {f"layer_grad_norm/{k}": v for k, v in grouped_norms(grads).items()}
        out.update({f"layer_weight_norm/{k}": v for k, v in grouped_norms(params).items()})
        model = nnx.merge(graphdef, params, rest)
        if isinstance(model, GPT):
            out.update({f"layer_activation_rms/{k}": v for k, v in block_activations(model, batch[:, :-1]).items()})
        return out

    return norms


def figures(norms_fn, params, rest, batch, weights) -> dict[str, float]:
    """The metrics-record fields of one evaluation of `norms_fn`, as Python floats."""
    return {k: float(v) for k, v in jax.device_get(norms_fn(params, rest, batch, weights)).items()}


def depth(layer: str) -> int:
    match = re.search(r"\.(\d+)$", layer)
    return int(match.group(1)) if match else -1


def plot(records: list[dict], path: str) -> None:
    """One panel per quantity, one line per block (coloured by depth, a log scale), against the step."""
    fig, axes = plt.subplots(1, len(KINDS), figsize=(5 * len(KINDS), 4))
    for ax, (kind, label) in zip(axes, KINDS.items()):
        layers = sorted({k.split("/", 1)[1] for r in records for k in r if k.startswith(kind + "/")},
                        key=lambda name: (depth(name) < 0, name.rsplit(".", 1)[0], depth(name)))
        blocks = [name for name in layers if depth(name) >= 0]
        colours = plt.cm.viridis([i / max(len(blocks) - 1, 1) for i in range(len(blocks))])
        for name in layers:
            points = [(r["step"], r[f"{kind}/{name}"]) for r in records if f"{kind}/{name}" in r]
            style = dict(color=colours[blocks.index(name)]) if name in blocks else dict(linestyle="--")
            ax.plot(*zip(*points), label=name, **style)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if layers:
            ax.legend(fontsize=6, ncol=2)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_plot(workdir: str, records: list[dict]) -> str:
    path = os.path.join(workdir, "layer_norms.png")
    plot(records, path)
    return path
