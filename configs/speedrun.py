"""CPU speedrun: beat the best n-gram (7-gram Kneser-Ney, 1.9837 bits/char on the validation
split) within 60 minutes of a 2-core CPU, from an empty workdir.

    python -m gptjax.main --config configs/speedrun.py --workdir runs/speedrun
    python -m gptjax.eval.curves --workdir runs/speedrun --orders 3,5,7,8

The plays as shipped, validation the last 10% (`raw_plays`). Expected (record 65, seed 0, on
a 2-core AMD EPYC at 114-135 GFLOP/s matmul peak): below the 7-gram at step 450 after 3.9
minutes (1.983 bits/char on the 8 evaluation batches, 1.978 on the whole split), 1.938 on the
whole split at the end of the 650 steps after 5.9 minutes; 1.18M parameters, about 8,000
tokens a second.
The clock counts tokenizer training and data preparation; `train.max_minutes` (58) stops a
slower machine within the hour. This file is `experiments/speedrun/records/65.json` without
its stop at the 7-gram; why each setting is what it is, and every earlier entry with its own
frozen config: experiments/speedrun/README.md.
"""

from ml_collections import ConfigDict

from configs.base import finish, get_config as default_config, raw_plays


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
