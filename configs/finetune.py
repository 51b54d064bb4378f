"""Fine-tune a trained model on your own text: continue a base model on `data.source=files`.

    python -m gptjax.main --config configs/finetune.py --workdir runs/mine \
        --config.train.init_from=runs/default --config.data.path=my_text/

    python -m gptjax.main --config configs/finetune.py --workdir runs/mine_gpt2 \
        --config.train.init_from=hf:/models/gpt2 --config.data.path=my_text/

The base (a gptjax workdir, or `hf:` a Hugging Face GPT-2 directory) gives the architecture and
the tokenizer; `data.tokenizer` must name the base's kind (bpe for the main job and GPT-2, char
for a character-level base).
A fine-tuning run starts from weights that already know the language, so it takes a tenth of
the pretraining learning rate, a short warmup and few steps, with light dropout, and stops
early once the validation split of your text stops improving (its best weights are kept).
report.md puts the base model's validation bits per char on your text beside the fine-tuned
model's, with samples from both.
"""

from ml_collections import ConfigDict

from configs.base import finish, get_config as default_config


def get_config(arg: str = "") -> ConfigDict:
    c = default_config()
    c.data.source = "files"
    c.data.path = ""                  # your text: a file, a directory or a glob (required)
    c.data.tokenizer = "bpe"          # the base's tokenizer is reused: this names its kind
    c.train.init_from = "runs/default"  # the main job's model; hf:/path/to/gpt2 for GPT-2
    c.model.dropout = 0.1             # little data: regularise a little
    c.train.steps = 400
    c.train.batch_size = 16
    c.train.learning_rate = 2e-4      # the base's 2e-3 / 10: adjust, don't overwrite
    c.train.warmup_steps = 20
    c.train.min_lr_ratio = 0.1
    c.train.weight_decay = 0.05
    c.train.eval_every = 25
    c.train.eval_batches = 10
    c.train.checkpoint_every = 25     # keeps the best weights of every evaluation
    c.train.early_stop_patience = 4   # 100 steps without a better validation loss: stop
    c.eval.max_tokens = 200_000
    c.sample.prompts = ["\n"]
    return finish(c, arg)
