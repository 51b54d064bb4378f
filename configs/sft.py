"""Supervised fine-tuning: a base model -> a chat model, on conversations in the OpenAI
`messages` JSONL format (one conversation a line; see gptjax/data/conversations.py).

    python -m gptjax.main --config configs/sft.py --workdir runs/chat \\
        --config.data.path=chats.jsonl --config.train.init_from=runs/base
    python -m gptjax.chat --workdir runs/chat

`train.init_from` starts from a base workdir's weights and tokenizer (the model shape comes
from the base); without it the same run trains a chat model from scratch, with a BPE built
from the training conversations (which has the role tokens). Each conversation is rendered
with the role-token template, the loss is on the assistant's tokens only (with their end of
turn), conversations are packed into windows without attending across one another, and
validation is on assistant tokens of held-out conversations (data.val_fraction of the groups).
The workdir's chat.json records the template, so the chat renders exactly what training saw.

Settings follow common SFT practice (nanochat, litgpt): a tenth of a pretraining learning
rate, short warmup, no weight decay, a few epochs over the conversations.
"""

from ml_collections import ConfigDict

from configs.base import finish, get_config as default_config


def get_config(arg: str = "") -> ConfigDict:
    c = default_config()
    c.data.source = "conversations"
    c.data.path = "chats.jsonl"
    c.data.tokenizer = "bpe"            # from scratch: role tokens need a BPE
    c.data.vocab_size = 4096
    c.data.val_fraction, c.data.test_fraction = 0.05, 0.05
    c.train.init_from = ""              # a base workdir (weights + tokenizer); "" trains from scratch
    c.train.steps = 1000
    c.train.batch_size = 16
    c.train.learning_rate = 2e-4
    c.train.warmup_steps = 30
    c.train.schedule = "linear"
    c.train.min_lr_ratio = 0.0
    c.train.weight_decay = 0.0
    c.train.eval_every = 100
    c.train.eval_batches = 10
    c.train.log_every = 20
    c.train.checkpoint_every = 500
    c.sample.prompts = []               # plain-text samples say little of a chat model
    return finish(c, arg)
