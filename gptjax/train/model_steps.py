"""Each model kind's compiled steps: its train step, its eval step, and how a batch
of windows becomes (inputs, targets).

The loop always draws the same arrays: windows of block_size + 1 tokens, a function of
(seed, step) (`gptjax.data.batches` or grain). A decoder-only model reads them as they are;
with `data.augment` the inputs are corrupted inside the step (`gptjax.data.augment`), targets
untouched. The encoder-decoder (`model.kind=encdec`, `data.pairs=lm_split`) splits each window
inside the compiled step into a source, the first `data.src_len` tokens, and a target, the
rest (`gptjax.data.pairs.lm_split`), so it trains on exactly the windows a GPT of the same
block_size would, and is scored on the target tokens only: its bits per char are
target-token bits per char. With `data.pairs=dialogues` the loop draws `PairBatch`es of the plays'
(speech, reply) pairs instead (`gptjax.train.batch_source.PairBatches`), which the steps read as
they are: bits per char over the reply tokens.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gptjax.data.augment import augment
from gptjax.data.pairs import PairBatch
from gptjax.errors import UserError
from gptjax.eval.scoring import make_eval_step
from gptjax.model.encdec import encdec_eval_sums, encdec_loss
from gptjax.train import optimizer as optim
from gptjax.train.step import make_train_step

# data.pairs: "" (the model reads plain windows), or how (source, target) pairs are made.
PAIRS = ("", "lm_split", "dialogues")


def input_split(config, vocab_size: int) -> Callable | None:
    """(windows (..., T + 1), step) -> (inputs, targets) under `data.augment`; None without one,
    so an unaugmented step is the plain one, unchanged."""
    kind = config.data.get("augment", "none")
    if kind == "none":
        return None
    rate, seed = config.data.augment_rate, config.seed
    return lambda batch, step: augment(batch, seed, step, kind, rate=rate, vocab_size=vocab_size)


def window_pairs(window: jax.Array, src_len: int) -> PairBatch:
    """`gptjax.data.pairs.lm_split` on device: windows (B, S + T) -> prefix source, continuation target."""
    src, tgt_out = window[:, :src_len], window[:, src_len:]
    return PairBatch(src, jnp.ones(src.shape, bool), window[:, src_len - 1:-1], tgt_out,
                     jnp.ones(tgt_out.shape, jnp.float32))


def as_pairs(batch, src_len: int) -> PairBatch:
    """A train batch as pairs: windows are cut at `src_len` (lm_split); pair rows (dialogues) are pairs already."""
    return batch if isinstance(batch, PairBatch) else window_pairs(batch, src_len)


def check_pairs(config) -> None:
    """The pair settings `model.kind=encdec` needs, refused in one line before anything compiles."""
    d = config.data
    if d.pairs not in ("lm_split", "dialogues"):
        raise UserError(f"model.kind=encdec trains on (source, target) pairs: set data.pairs=lm_split or "
                        f"dialogues (data.pairs={d.pairs!r})")
    source = ("a window's first data.src_len tokens" if d.pairs == "lm_split" else
              "a speech's last data.src_len tokens, the reply gets model.block_size - data.src_len")
    if not 0 < d.src_len < config.model.block_size:
        raise UserError(f"data.src_len={d.src_len} must be between 0 and model.block_size="
                        f"{config.model.block_size} (the source is {source})")
    if d.pairs == "dialogues" and d.source != "plays":
        raise UserError(f"data.pairs=dialogues pairs the plays' speeches with their replies; set data.source=plays "
                        f"(data.source={d.source!r})")
    if d.pairs == "dialogues" and d.get("loader", "direct") != "direct":
        raise UserError(f"data.loader={d.loader!r} reads text windows; data.pairs=dialogues needs data.loader=direct")
    if d.pairs == "dialogues" and d.train_chars:
        raise UserError(f"data.train_chars={d.train_chars} cuts the text stream, but data.pairs=dialogues trains "
                        "on every pair of the train plays; set data.train_chars=0")
    if config.data.augment != "none":
        raise UserError(f"data.augment={config.data.augment!r} corrupts a decoder-only model's inputs; "
                        "set data.augment=none for model.kind=encdec")
    if list(config.sample.prompts):
        raise UserError("model.kind=encdec has no prompt sampling in the main job; set sample.prompts=[]")


def make_encdec_train_step(graphdef, tx: optax.GradientTransformation, tc, seed: int, src_len: int):
    """The encoder-decoder's (state, windows (K, accum, B, T+1) or a PairBatch of (K, accum, B, L)
    arrays) -> (state, metrics): the GPT's step (`make_train_step`, K steps, accumulation, skipped
    non-finite updates) with the pair loss. Under accumulation a step's loss is the mean of its
    micro-batches' means over their real target tokens (exact when they hold as many, as windows do)."""

    def loss(params, rest, batch, key):
        model = nnx.merge(graphdef, params, jax.tree.map(jnp.copy, rest))  # see `gptjax.eval.scoring.forward`
        value, _ = encdec_loss(model, as_pairs(batch, src_len), train=True, rngs=nnx.Rngs(dropout=key))
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return value + optim.penalty(params, tc), (value, new_rest)

    return make_train_step(graphdef, tx, tc, seed, loss_fn=loss)


def make_encdec_eval_step(graphdef, token_bytes, token_chars, src_len: int):
    """(params, rest, windows (B, T+1) or a PairBatch, weights) -> sums of (nll, tokens, bytes, chars)
    over the target tokens; for windows `weights` (B, T) are the GPT's per-target weights, of which the
    target part counts, for pairs (B, L) the targets' own."""

    def eval_step(params, rest, batch, weights):
        model = nnx.merge(graphdef, params, rest)
        target_weights = weights if isinstance(batch, PairBatch) else weights[:, src_len - 1:]
        return encdec_eval_sums(model, as_pairs(batch, src_len)._replace(tgt_weights=target_weights), token_bytes,
                                token_chars)

    return eval_step


def train_step(config, graphdef, tx, vocab_size: int):
    """The train step of `model.kind` (and `data.augment`) before jit."""
    if config.model.kind == "encdec":
        return make_encdec_train_step(graphdef, tx, config.train, config.seed, config.data.src_len)
    return make_train_step(graphdef, tx, config.train, config.seed, split=input_split(config, vocab_size))


def eval_step(config, graphdef, token_bytes, token_chars):
    """The eval step of `model.kind` before jit."""
    if config.model.kind == "encdec":
        return make_encdec_eval_step(graphdef, token_bytes, token_chars, config.data.src_len)
    return make_eval_step(graphdef, token_bytes, token_chars)
