"""CPU speedrun: beat the best n-gram (7-gram Kneser-Ney, 1.984 bits/char on the validation
split) within 60 minutes of a 2-core CPU, from an empty workdir.

    python -m gptjax.main --config configs/speedrun.py --workdir runs/speedrun
    python -m gptjax.eval.curves --workdir runs/speedrun --orders 3,5,7,8

The plays as shipped, validation the last 10% (`raw_plays`). Byte-level BPE packs about three
characters into a token, so each step sees three times the text of a char-level step at
nearly the same cost. One layer, 256 wide: at this budget (about 3M tokens) the curve per step
hardly depends on depth, and each layer removed makes the step cheaper (record log, entries
14-18). Muon on the hidden matrices keeps the one-layer curve falling where AdamW's flattens
out above the 7-gram (entries 18, 28, 30), and with QK-norm it falls faster still (34, 40).
An MLP 3 times the width rather than 4 costs a little per step and buys about 19% more
tokens a second (46); Muon's momentum at 0.8 rather than optax's 0.95 gains at every step
(50, 54, 57), and so does Muon's weight decay at 0.1, which lowers the train loss too (53, 56).
RoPE, RMSNorm, ReLU^2, no biases; 25 warmup steps and a cosine of 650 (63, 65), the
learning rate low by the time the curve reaches the 7-gram (step 450-550, 4-5 minutes);
`train.max_minutes` stops it if the machine is slower.
The clock starts with the job, so it counts tokenizer training and data preparation.
Record log, with the command line of every earlier entry: experiments/speedrun/.
"""

from ml_collections import ConfigDict

from configs.default import finish, get_config as default_config, raw_plays


def get_config(arg: str = "") -> ConfigDict:
    c = default_config()
    raw_plays(c.data)
    c.data.tokenizer = "bpe"
    c.data.vocab_size = 2048
    c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.block_size = 1, 4, 256, 128
    c.model.mlp_ratio = 3
    c.model.norm = "rmsnorm"
    c.model.activation = "relu2"
    c.model.bias = False
    c.model.qk_norm = True
    c.train.steps = 650
    c.train.batch_size = 32
    c.train.optimizer = "muon"
    c.train.muon_learning_rate = 0.02
    c.train.muon_beta = 0.8
    c.train.learning_rate = 2e-3
    c.train.warmup_steps = 25
    c.train.min_lr_ratio = 0.05
    c.train.weight_decay = 0.1
    c.train.eval_every = 50
    c.train.eval_batches = 8
    c.train.log_every = 50
    c.train.checkpoint_every = 400
    c.train.max_minutes = 58.0
    c.sample.prompts = ["ROMEO:", "**HAMLET**  \n"]
    return finish(c, arg)
