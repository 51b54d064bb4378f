"""Personas from the plays: a base pretrained on the plays (the CPU speedrun recipe), then
fine-tuned on their dialogues, a speech as the user turn and the next speaker's reply as the
assistant's, the system text naming the replying character (gptjax/data/dialogues.py).

    python -m gptjax.main --config configs/persona.py:base --workdir runs/persona_base
    python -m gptjax.main --config configs/persona.py --workdir runs/persona \\
        --config.train.init_from=runs/persona_base
    python -m gptjax.chat --workdir runs/persona --persona HAMLET

Whole plays go to one split, the same for both stages: the base reads the training plays only
(data.split=documents), and the fine-tuned model is validated and tested on conversations of
plays neither stage saw. `--persona HAMLET` sets the system text exactly as in training. Without
train.init_from the second command trains the chat model from scratch. Measured against the base:
experiments/persona_eval.py. `:base,smoke` and `:smoke` shrink either stage for a quick check.
"""

from ml_collections import ConfigDict

from configs.speedrun import get_config as speedrun_config


def get_config(arg: str = "") -> ConfigDict:
    stage, _, rest = arg.partition(",")
    if stage == "smoke":
        stage, rest = "", "smoke"
    if stage not in ("", "base"):
        raise ValueError(f"unknown config argument {arg!r}; expected '', 'base', 'smoke' or 'base,smoke'")
    c = speedrun_config(rest)
    c.data.split = "documents"           # whole plays: the SFT stage holds out the same plays
    c.data.val_fraction, c.data.test_fraction = 0.1, 0.1
    c.train.max_minutes = 0.0
    if stage == "base":
        return c
    c.data.source = "dialogues"
    c.data.max_exchanges = 2             # speech/reply exchanges a conversation (longer runs are cut)
    c.train.init_from = ""               # runs/persona_base; "" trains from scratch
    c.train.steps = 600 if not rest else c.train.steps
    c.train.learning_rate = 5e-4
    c.train.muon_learning_rate = 0.005
    c.train.warmup_steps = 20 if not rest else c.train.warmup_steps
    c.train.weight_decay = 0.0
    c.sample.prompts = []
    return c
