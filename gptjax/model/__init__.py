"""Models: the GPT, the recurrent baselines and the encoder-decoder (`model.kind=encdec`, fed
(source, target) pairs by `gptjax.train.batch_source`)."""

from __future__ import annotations

from flax import nnx

from gptjax.errors import UserError
from gptjax.model.encdec import EncDecConfig, EncoderDecoder
from gptjax.model.gpt import GPT, GPTConfig
from gptjax.model.recurrent import CELLS, RecurrentConfig, RecurrentLM

KINDS = ("gpt", *CELLS, "encdec")  # what the training loop trains


def build_model(model_config, vocab_size: int, rngs: nnx.Rngs) -> nnx.Module:
    """The network `model.kind` names, for a vocabulary of `vocab_size` ids."""
    if model_config.kind == "gpt":
        return GPT(GPTConfig.from_config(model_config, vocab_size), rngs=rngs)
    if model_config.kind in CELLS:
        return RecurrentLM(RecurrentConfig.from_config(model_config, vocab_size), rngs=rngs)
    if model_config.kind == "encdec":
        return EncoderDecoder(EncDecConfig.from_config(model_config, vocab_size), rngs=rngs)
    raise UserError(f"model.kind={model_config.kind!r} is unknown; use one of {KINDS}")
