"""Character-level GRU on the plays: a recurrent baseline.

    python -m gptjax.main --config configs/gru.py --workdir runs/gru

One GRU layer of 256 units (model.n_embd is the hidden size), untied head, trained on the
2500 x 32 x 128 characters (10.2M), as configs/lstm.py.

Expected (2-core AMD EPYC CPU shared with other jobs, load 6-7): 20 minutes; validation
1.50 nats/char (2.16 bits/char), test 2.08 bits/char. Append `:smoke` to the config path
for a one-minute check.
"""

from ml_collections import ConfigDict

from configs import lstm


def get_config(arg: str = "") -> ConfigDict:
    c = lstm.get_config(arg)
    c.model.kind = "gru"
    return c
