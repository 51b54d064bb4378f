"""Claim (guide 6.5): fine-tuning a pretrained model beats training from scratch on a small task.

    python -m gptjax.main --config experiments/claims/fine_tuning.py --workdir runs/claims/fine_tuning

Arms: from scratch / from the parameters of a model pretrained on the plays (runs/default, the
main job), the same architecture (configs/default.py), steps and data, 3 seeds each. This is
the fine-tuning study of the chat-tuning issue: the task data are its speech -> reply dialogues
from the plays.

Regime: a small task (the dialogue records, 250 steps), where a model from scratch has too few
tokens to learn the language and the pretrained one only has to learn the format.
Diagnostic: held-out bits per char at equal steps, the validation curves of both arms (the
pretrained arm starts low), and the step at which the scratch arm reaches the pretrained
arm's first evaluation, if it does.

Estimated time: 6 runs of 250 steps x 16 x 128 chars on the default model, about 140 s each:
14 minutes (plus the main job once, if runs/default does not exist).
"""

from configs.base import get_config as default_config
from experiments.claims.regimes import sweep


def get_config():
    base = default_config()
    base.data.source = "dialogues"
    base.train.init_from = ""
    base.train.steps, base.train.batch_size, base.train.warmup_steps = 250, 16, 25
    base.train.eval_every, base.train.eval_batches, base.train.checkpoint_every = 25, 4, 250
    base.eval.max_tokens = 50_000
    base.sample.prompts = []
    return sweep(base, [dict(name="scratch", overrides={}),
                        dict(name="fine-tuned", overrides={"train.init_from": "runs/default"})])
