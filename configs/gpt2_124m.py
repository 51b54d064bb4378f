"""GPT-2 small (124M parameters) on your own large corpus, for GPUs and TPUs.

12 layers, 12 heads, width 768, context 1024, byte-level BPE of 50,304 tokens (GPT-2's
50,257 rounded up to a multiple of 128, so that a tensor axis of up to 128 divides the
vocabulary and the embedding matmuls tile well), bfloat16 compute with float32 master
weights, 0.5M tokens per step (512 sequences of 1024). A 50k BPE needs a corpus of billions
of tokens: on the 5M-character plays it would mostly learn whole lines, so point
`data.source=files` (a directory, a glob, or .jsonl) or `data.source=tfds` at real data.
The tokenizer is trained and the corpus encoded once, in memory, by the first run
(a few GB of text is fine; larger corpora need a sharded pre-tokenised source).

One GPU (micro-batch 16 x 1024 fits in 80 GB; use grad_accum=64 on 40 GB):

    python -m gptjax.main --config configs/gpt2_124m.py --workdir runs/gpt2_124m \\
        --config.data.path='/data/fineweb10B/*.jsonl' --config.train.grad_accum=32

8 GPUs of one machine (one process drives all of them; micro-batch 64 = 8 per GPU):

    python -m gptjax.main --config configs/gpt2_124m.py --workdir runs/gpt2_124m \\
        --config.data.path='/data/fineweb10B/*.jsonl'

TPU v4-8 VM (one host, 4 chips; micro-batch 64 = 16 per chip):

    python -m gptjax.main --config configs/gpt2_124m.py --workdir runs/gpt2_124m \\
        --config.data.path='/data/fineweb10B/*.jsonl'

A multi-host pod slice runs the same command on every host with
`--config.distributed.initialize=True` and a workdir on a filesystem all hosts share
(docs/scaling_out.md).

Append `:smoke` to the config path for a two-minute check of the pipeline on your data.
MFU is logged against the chip's bf16 peak (train.peak_flops for other chips). It has not
been measured on a GPU or TPU by this project: no accelerator was available.
"""

from ml_collections import ConfigDict

from configs.base import finish, get_config as default_config


def get_config(arg: str = "") -> ConfigDict:
    return finish(gpt2(default_config(), n_layer=12, n_head=12, n_embd=768), arg)


def gpt2(c: ConfigDict, n_layer: int, n_head: int, n_embd: int) -> ConfigDict:
    """GPT-2's architecture and a nanoGPT-like recipe on top of the default config."""
    c.data.source = "files"
    c.data.path = ""                   # required: --config.data.path=...
    c.data.clean.dedup_documents = True
    c.data.tokenizer = "bpe"
    c.data.vocab_size = 50304
    c.data.val_fraction = 0.005
    c.data.test_fraction = 0.005
    c.data.split = "documents"

    c.model.update(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=1024, mlp_ratio=4,
                   norm="layernorm", activation="gelu", init="normal", pos_encoding="learned",
                   bias=True, tie_embeddings=True, dropout=0.0, dtype="bfloat16", param_dtype="float32")

    c.train.steps = 19073              # 10B tokens at 524,288 tokens a step
    c.train.batch_size = 512
    c.train.grad_accum = 8
    c.train.learning_rate = 6e-4
    c.train.schedule = "cosine"
    c.train.warmup_steps = 700
    c.train.min_lr_ratio = 0.1
    c.train.beta1, c.train.beta2 = 0.9, 0.95
    c.train.weight_decay = 0.1
    c.train.grad_clip = 1.0
    c.train.steps_per_call = 1         # a step is seconds long: nothing to gain from fusing
    c.train.log_every = 10
    c.train.eval_every = 500
    c.train.eval_batches = 20
    c.train.checkpoint_every = 1000
    c.train.keep_checkpoints = 2

    c.mesh.update(data=-1, fsdp=1, tensor=1, preset="")
    c.eval.batch_size = 64
    c.eval.max_tokens = 4_194_304      # final val/test passes: the first 4M tokens
    c.sample.prompts = ["The", "\n"]
    c.sample.max_new_tokens = 200
    return c
