"""Character-level LSTM on the plays: a recurrent baseline.

    python -m gptjax.main --config configs/lstm.py --workdir runs/lstm

One LSTM layer of 256 units (model.n_embd is the hidden size), untied head, trained on the
2500 x 32 x 128 characters (10.2M).

Expected (2-core AMD EPYC CPU shared with other jobs, load about 7): 26 minutes; validation
1.51 nats/char (2.19 bits/char), test 2.11 bits/char. Append `:smoke` to the config path
for a one-minute check.
"""

from ml_collections import ConfigDict

from configs.base import finish, get_config as default_config


def get_config(arg: str = "") -> ConfigDict:
    c = default_config()
    c.model.kind = "lstm"
    c.train.steps = 2500
    c.model.n_layer, c.model.n_embd = 1, 256
    c.model.tie_embeddings = False
    c.train.learning_rate = 3e-3
    return finish(c, arg)
