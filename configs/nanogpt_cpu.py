"""nanoGPT's shakespeare_char CPU recipe, on the plays: the side-by-side comparison.

    python -m gptjax.main --config configs/nanogpt_cpu.py --workdir runs/nanogpt_cpu

nanoGPT's README trains 4 layers, 4 heads, 128 wide, block 64, batch 12, for 2,000 steps
(lr 1e-3, warmup 100, cosine to 1e-4, AdamW beta2 0.99, no dropout) and validates on the last
10% of the text. The plays stay exactly as shipped (markdown and its line-break spaces kept),
the data on which nanoGPT itself reaches 1.79 nats/char and the 7-gram 1.98 bits/char.
Measured on a 2-core CPU: 1.673 nats/char with RoPE (this config), 1.773 with nanoGPT's
learned positions (`--config.model.pos_encoding=learned`), in about 3.5 minutes.
"""

from ml_collections import ConfigDict

from configs.base import finish, get_config as default_config, raw_plays


def get_config(arg: str = "") -> ConfigDict:
    c = default_config()
    raw_plays(c.data)
    c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.block_size = 4, 4, 128, 64
    c.model.dropout = 0.0
    c.train.steps, c.train.batch_size = 2000, 12
    c.train.learning_rate, c.train.warmup_steps, c.train.min_lr_ratio = 1e-3, 100, 0.1
    c.train.beta2 = 0.99
    c.train.eval_every, c.train.eval_batches, c.train.log_every = 250, 20, 50
    c.train.checkpoint_every = 1000
    return finish(c, arg)

