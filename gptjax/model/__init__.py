"""Models: the GPT, the recurrent baselines and the encoder-decoder (`model.kind=encdec`, fed
(source, target) pairs by `gptjax.train.model_steps`)."""

from __future__ import annotations

from flax import nnx

from gptjax.errors import UserError
from gptjax.model.encdec import EncDecConfig, EncoderDecoder
from gptjax.model.gpt import GPT, GPTConfig
from gptjax.model.lora import LoRASettings, apply_lora, freeze_base
from gptjax.model.recurrent import CELLS, RecurrentConfig, RecurrentLM

KINDS = ("gpt", *CELLS, "encdec")  # what the training loop trains


def build_model(model_config, vocab_size: int, rngs: nnx.Rngs, lora: LoRASettings | None = None) -> nnx.Module:
    """The network `model.kind` names, for a vocabulary of `vocab_size` ids; with `lora`, a GPT
    carrying fresh adapters over a frozen base (the base drawn first, as without adapters)."""
    if lora is not None:
        if model_config.kind != "gpt":
            raise UserError(f"LoRA adapts a GPT, not model.kind={model_config.kind!r}; set train.lora_rank=0")
        return freeze_base(apply_lora(build_model(model_config, vocab_size, rngs), lora, rngs))
    if model_config.kind == "gpt":
        return GPT(GPTConfig.from_config(model_config, vocab_size), rngs=rngs)
    if model_config.kind in CELLS:
        return RecurrentLM(RecurrentConfig.from_config(model_config, vocab_size), rngs=rngs)
    if model_config.kind == "encdec":
        return EncoderDecoder(EncDecConfig.from_config(model_config, vocab_size), rngs=rngs)
    raise UserError(f"model.kind={model_config.kind!r} is unknown; use one of {KINDS}")
