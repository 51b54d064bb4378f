"""Byte-level BPE (4,096 tokens) on the plays: more text per step than characters.

    python -m gptjax.main --config configs/plays_bpe.py --workdir runs/plays_bpe

Bits per char stay comparable with the char-level model and the n-gram baselines.
"""

from ml_collections import ConfigDict

from configs.base import finish, get_config as default_config


def get_config(arg: str = "") -> ConfigDict:
    c = default_config()
    c.data.tokenizer = "bpe"
    c.data.vocab_size = 4096
    c.model.block_size = 64        # ~3.5 chars per token: about 220 characters of context
    c.train.learning_rate = 1e-3
    c.model.dropout = 0.1           # 1.4M train tokens: a larger vocabulary overfits sooner
    c.sample.prompts = ["ROMEO:", "\n"]
    return finish(c, arg)
