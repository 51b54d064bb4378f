"""GPT-2 medium (350M parameters) on your own large corpus, for GPUs and TPUs.

24 layers, 16 heads, width 1024, context 1024, otherwise as configs/gpt2_124m.py (read its
notes on the BPE vocabulary and the corpus). The parameters and Adam moments are split over
every device (`mesh.preset=fsdp`), and activations are recomputed in the backward pass
(`model.remat=True`), so a micro-batch of 8 x 1024 per device fits in 40 GB.

One GPU:

    python -m gptjax.main --config configs/gpt2_350m.py --workdir runs/gpt2_350m \\
        --config.data.path='/data/fineweb10B/*.jsonl' --config.train.grad_accum=64

8 GPUs of one machine (micro-batch 64 = 8 per GPU):

    python -m gptjax.main --config configs/gpt2_350m.py --workdir runs/gpt2_350m \\
        --config.data.path='/data/fineweb10B/*.jsonl'

TPU v4-8 VM (one host, 4 chips):

    python -m gptjax.main --config configs/gpt2_350m.py --workdir runs/gpt2_350m \\
        --config.data.path='/data/fineweb10B/*.jsonl'

On every host of a pod slice, add `--config.distributed.initialize=True` and use a shared
workdir (docs/scaling_out.md).

GPU / TPU MFU has not been measured by this project (no accelerator was available).
"""

from ml_collections import ConfigDict

from configs.base import finish, get_config as default_config
from configs.gpt2_124m import gpt2


def get_config(arg: str = "") -> ConfigDict:
    c = gpt2(default_config(), n_layer=24, n_head=16, n_embd=1024)
    c.model.remat = True
    c.train.learning_rate = 3e-4
    c.train.grad_accum = 8
    c.mesh.preset = "fsdp"
    return finish(c, arg)
