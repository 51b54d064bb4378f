"""Baselines on the plays, char level: n-grams (orders 3, 5, 7) against an LSTM, a GRU and the GPT.

    python -m gptjax.main --config experiments/baselines.py --workdir runs/baselines

The three networks see the same training tokens (500 steps x 16 windows x 128 chars,
about 1M characters) under the same optimizer and schedule, 3 seeds each; the n-grams count
all 4.3M training characters. Validation and test scores are over the first 100k characters
of each split, the same characters for every model. An interrupted study resumes where it
stopped. Results: runs/baselines/results.md and val_curves.png.

Sized to finish in under 30 minutes on a 2-core CPU: measured 20 minutes on a 2-core AMD
EPYC shared with other jobs (load 5-9); network runs 1.5-3 minutes each, n-grams seconds.
Measured (bits per char, mean ± std over 3 seeds, val / test):

    3-gram 2.944 / 2.794    5-gram 2.250 / 2.039    7-gram 2.163 / 1.940
    lstm   2.456 ± 0.003 / 2.354 ± 0.004   (569k parameters)
    gru    2.418 ± 0.012 / 2.309 ± 0.007   (438k parameters)
    gpt    2.842 ± 0.015 / 2.796 ± 0.016   (424k parameters)

At 1M training characters the recurrent networks learn fastest and the GPT is still early in
its descent; the 5- and 7-gram models, which count all 4.3M training characters, beat all three.
"""

from ml_collections import ConfigDict

from configs.base import get_config as default_config


def get_config() -> ConfigDict:
    base = default_config()
    base.model.block_size = 128
    base.model.n_layer, base.model.n_head, base.model.n_embd = 2, 4, 128
    base.train.steps, base.train.batch_size = 500, 16
    base.train.learning_rate, base.train.warmup_steps = 6e-3, 50
    base.train.eval_every, base.train.eval_batches, base.train.log_every = 100, 4, 50
    base.train.checkpoint_every = 500
    base.eval.max_tokens = 100_000
    base.sample.max_new_tokens = 200

    recurrent = {"model.n_layer": 1, "model.n_embd": 256, "model.tie_embeddings": False}
    runs = [dict(name=f"{n}-gram", kind="ngram", order=n) for n in (3, 5, 7)]
    runs += [dict(name="lstm", overrides={"model.kind": "lstm", **recurrent}),
             dict(name="gru", overrides={"model.kind": "gru", **recurrent}),
             dict(name="gpt", overrides={})]
    return ConfigDict(dict(sweep=True, base=base, seeds=[0, 1, 2], runs=runs))
