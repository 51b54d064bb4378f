"""Every key a run reads, with its neutral default: the config the others start from.

A character-level GPT on the 38 plays (4 layers, 192 wide, 128 characters of context, RoPE,
AdamW). The main job is configs/default.py; a workdir's saved config is read back over this
file (gptjax/workdir.py), so keys added after a run was saved take these values. Append `:smoke`
to a config path for a one-minute check.
"""

from ml_collections import ConfigDict, config_dict

placeholder = config_dict.placeholder


def get_config(arg: str = "") -> ConfigDict:
    c = ConfigDict()
    c.seed = 0

    c.data = ConfigDict()
    c.data.source = "plays"            # plays | files | tfds | prepared | conversations (SFT, see data/conversations.py)
    c.data.plays_markdown = True       # keep speaker names / stage directions as markdown
    c.data.path = ""                   # files: a file, a directory or a glob; conversations: .jsonl of "messages"
    c.data.strict = False              # conversations: a malformed line is an error (True) or skipped and counted
    c.data.text_field = "text"         # files: the field of .jsonl records; tfds: the feature
    c.data.tfds_name = ""              # tfds: e.g. tiny_shakespeare
    c.data.tfds_split = "train"
    c.data.tfds_data_dir = ""
    c.data.clean = ConfigDict(dict(nfc=True, control_chars=True, whitespace=True,
                                   dedup_documents=True, dedup_lines=False, min_chars=1))
    c.data.split = "tail"              # tail | documents
    c.data.val_fraction = 0.1
    c.data.test_fraction = 0.05
    c.data.tokenizer = "char"          # char | bpe
    c.data.vocab_size = 4096           # bpe only
    c.data.unknown = "replace"         # char only: replace | error, for characters unseen in train
    c.data.cache_dir = "~/.cache/gptjax"
    c.data.train_chars = 0             # the first N characters of the train split only; 0 = all of it
    c.data.augment = "none"            # none | token_noise | span_mask | char_swap: train inputs corrupted
    c.data.augment_rate = 0.15         # share of input tokens an augmentation touches
    c.data.pairs = ""                  # model.kind=encdec: lm_split (a window's prefix -> continuation) | dialogues
    c.data.src_len = 64                # encdec: source tokens (lm_split: the prefix; the target is the rest)
    # Large corpora: `python -m gptjax.prepare --out DIR` writes token shards, then data.source=prepared
    # and data.path=DIR train from them (docs/scaling_out.md).
    c.data.tokenizer_sample_chars = 200_000_000  # prepare: BPE trains on a seeded sample of this many train chars
    c.data.max_buffer_chars = 4_000_000  # prepare: text per split encoded at once (bounds memory, ~50 B a char)
    c.data.shard_tokens = 1 << 26      # prepare: tokens per shard file (128 MiB of uint16)
    c.data.loader = "direct"           # direct | grain: how training reads windows (same batches)
    c.data.loader_threads = 4          # grain: reader threads
    c.data.loader_prefetch = 8         # grain: steps read ahead

    c.model = ConfigDict()
    c.model.kind = "gpt"               # gpt | lstm | gru | encdec
    c.model.n_encoder_layer = 2        # encdec: encoder depth (model.n_layer is the decoder's)
    c.model.block_size = 128
    c.model.n_layer = 4
    c.model.n_head = 4
    c.model.n_embd = 192
    c.model.mlp_ratio = 4
    c.model.norm = "layernorm"         # layernorm | rmsnorm | batchnorm | causal_batchnorm | none
    c.model.norm_eps = 1e-5
    c.model.activation = "gelu"        # gelu | relu | relu2 | leaky_relu | elu | swiglu | sigmoid | tanh
    c.model.init = "normal"            # normal | xavier | he
    c.model.residual_scaling = True    # residual projections initialised 1/sqrt(2 n_layer) smaller (any init)
    c.model.pos_encoding = "rope"      # learned | sinusoidal | rope | none
    c.model.rope_theta = 10000.0
    c.model.qk_norm = False
    c.model.bias = True
    c.model.tie_embeddings = True
    c.model.dropout = 0.0              # every site unless set below
    c.model.embd_dropout = placeholder(float)
    c.model.attn_dropout = placeholder(float)
    c.model.resid_dropout = placeholder(float)
    c.model.remat = False
    c.model.dtype = "float32"          # compute dtype (bfloat16 on accelerators)
    c.model.param_dtype = "float32"

    c.train = ConfigDict()
    c.train.steps = 600
    c.train.batch_size = 32
    c.train.grad_accum = 1
    c.train.batch_ramp = ""            # smaller batches first, rows:steps stages, e.g. "8:100,16:100"
    c.train.optimizer = "adamw"        # adamw | muon (hidden matrices; Nesterov AdamW for the rest)
    c.train.learning_rate = 2e-3
    c.train.muon_learning_rate = 0.0   # muon: peak rate of the hidden matrices; 0 = learning_rate
    c.train.muon_ns_steps = 5          # muon: Newton-Schulz iterations that orthogonalise each update
    c.train.muon_beta = 0.95           # muon: momentum of the hidden matrices (Nesterov)
    c.train.schedule = "cosine"        # cosine | linear | constant | wsd
    c.train.schedule_steps = 0         # length of the schedule; 0 = train.steps (set it to stop early)
    c.train.warmup_steps = 100
    c.train.min_lr_ratio = 0.1
    c.train.decay_fraction = 0.2       # wsd: share of steps spent decaying
    c.train.beta1 = 0.9
    c.train.beta2 = 0.99
    c.train.eps = 1e-8
    c.train.weight_decay = 0.1
    c.train.decay_embeddings = False
    c.train.grad_clip = 1.0            # 0 turns clipping off
    c.train.l1 = 0.0
    c.train.l2 = 0.0
    c.train.steps_per_call = 10        # train steps fused into one compiled call
    c.train.eval_every = 250
    c.train.eval_batches = 20
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 2       # at least 1
    c.train.early_stop_patience = 0    # evaluations without improvement; 0 = off
    c.train.max_minutes = 0.0          # wall-clock budget; 0 = off
    c.train.stop_below_bpc = 0.0       # stop once the whole validation split is below this many bits/char; 0 = off
    c.train.profile_steps = 0          # jax.profiler trace of this many steps into workdir/profile
    c.train.peak_flops = 0.0           # FLOP/s of one device for MFU; 0 = known chip or measured
    c.train.log_layer_norms = False    # per-layer gradient / activation / weight norms in metrics.jsonl
    c.train.max_nonfinite_steps = 10   # skipped updates (non-finite loss or gradient) in a row before the run stops
    c.train.progress_every_seconds = 30.0  # a progress line this often when the output is not a terminal; 0 = every call
    c.train.init_from = ""             # start from a model: a gptjax workdir, or hf:/path/to/gpt2-dir (train/init_from.py)
    # LoRA (gptjax/model/lora.py): train low-rank adapters on a frozen base; 0 = train every parameter.
    c.train.lora_rank = 0
    c.train.lora_alpha = 16.0          # adapters add (x A B) * alpha / rank
    c.train.lora_targets = "attn,mlp"  # groups attn, mlp, head or layers c_attn, c_fc, c_gate, c_proj, lm_head
    c.train.lora_name = ""             # the adapter's name: workdir/adapters/<name>; "" = the workdir's name

    c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1, preset=""))  # preset: dp | fsdp | fsdp+tp
    # Multi-process runs (docs/scaling_out.md); GPTJAX_* / JAX_COORDINATOR_ADDRESS also start one.
    c.distributed = ConfigDict(dict(initialize=False, coordinator_address="", num_processes=0, process_id=-1))

    c.eval = ConfigDict()
    c.eval.batch_size = 64
    c.eval.max_tokens = 0              # final val/test passes: 0 = the whole split
    c.eval.score_from = 0              # score only targets at window positions >= this (encdec comparisons: data.src_len - 1)

    c.sample = ConfigDict()
    c.sample.prompts = ["ROMEO:", "\n"]
    c.sample.max_new_tokens = 300
    c.sample.temperature = 0.8
    c.sample.top_k = 40

    return finish(c, arg)


def finish(c: ConfigDict, arg: str) -> ConfigDict:
    """Apply the config argument: '' keeps the config, 'smoke' shrinks it."""
    if arg == "smoke":
        return shrink(c)
    if arg:
        raise ValueError(f"unknown config argument {arg!r}; expected '' or 'smoke'")
    return c


def raw_plays(data: ConfigDict) -> None:
    """The plays exactly as shipped (markdown line-break spaces kept), validation the last 10% and
    no test split: nanoGPT's split, on which the reference figures of other projects are measured."""
    data.clean.whitespace = False
    data.val_fraction, data.test_fraction = 0.1, 0.0


def shrink(c: ConfigDict) -> ConfigDict:
    """A few steps of a tiny model: checks that a config runs end to end in about a minute."""
    c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.block_size = 2, 2, 32, 32
    c.train.steps, c.train.batch_size, c.train.warmup_steps = 20, 8, 5
    c.train.steps_per_call = 5
    c.train.eval_every, c.train.eval_batches, c.train.log_every = 10, 2, 5
    c.train.checkpoint_every = 10
    c.eval.max_tokens = 4096
    c.sample.max_new_tokens = 40
    return c
