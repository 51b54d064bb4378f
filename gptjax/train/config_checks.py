"""Checks that turn bad input into one clear line before anything is compiled or written."""

from __future__ import annotations

import json
import os

from flax import nnx

from gptjax.data.augment import AUGMENTATIONS
from gptjax.data.prepare import Corpus
from gptjax.errors import UserError
from gptjax.model import KINDS
from gptjax.model import gpt
from gptjax.model.lora import LoRASettings, apply_lora
from gptjax.train.batch_ramp import BatchSchedule
from gptjax.train.model_steps import PAIRS, check_pairs
from gptjax.train.mesh import PRESETS
from gptjax.train.optimizer import OPTIMIZERS, SCHEDULES

# Every switch is checked here, once, when the config is resolved; the tables the code dispatches on
# are the lists of choices, so a new entry in one is a new valid value.
CHOICES = {
    "data.source": ("plays", "files", "tfds", "prepared", "conversations", "dialogues"),
    "data.loader": ("direct", "grain"),
    "data.augment": AUGMENTATIONS,
    "data.pairs": PAIRS,
    "data.split": ("tail", "documents"),
    "data.tokenizer": ("char", "bpe"),
    "data.unknown": ("replace", "error"),
    "model.kind": KINDS,
    "model.norm": gpt.NORMS,
    "model.activation": gpt.ACTIVATIONS,
    "model.init": gpt.INITS,
    "model.pos_encoding": gpt.POS_ENCODINGS,
    "model.dtype": ("float32", "bfloat16", "float16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "train.schedule": SCHEDULES,
    "train.optimizer": OPTIMIZERS,
    "mesh.preset": ("", *PRESETS),
}
POSITIVE = ("model.block_size", "model.n_layer", "model.n_head", "model.n_embd", "train.batch_size",
            "train.grad_accum", "train.steps_per_call", "train.learning_rate", "train.muon_ns_steps", "eval.batch_size",
            "train.keep_checkpoints", "train.max_nonfinite_steps")
NON_NEGATIVE = ("train.steps", "train.warmup_steps", "train.weight_decay", "train.grad_clip", "model.dropout",
                "train.l1", "train.l2", "train.eval_every", "train.log_every", "train.checkpoint_every",
                "train.progress_every_seconds", "data.train_chars", "data.augment_rate", "eval.score_from")
# What a resumed run must share with the run that wrote the workdir.
MUST_MATCH = ("seed", "data", "model")
MUST_MATCH_KEYS = {"train.lora_rank": 0, "train.lora_alpha": 16.0, "train.lora_targets": "attn,mlp"}  # and defaults


def get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def check_config(config) -> None:
    for key, allowed in CHOICES.items():
        if get(config, key) not in allowed:
            raise UserError(f"config {key}={get(config, key)!r} is not one of {', '.join(map(str, allowed))}")
    for key in POSITIVE:
        if not get(config, key) > 0:
            raise UserError(f"config {key}={get(config, key)} must be positive")
    for key in NON_NEGATIVE:
        if get(config, key) < 0:
            raise UserError(f"config {key}={get(config, key)} must not be negative")
    m = config.model
    if config.eval.score_from >= m.block_size:
        raise UserError(f"eval.score_from={config.eval.score_from} leaves no target of a {m.block_size}-token "
                        "window to score; use a value below model.block_size")
    if m.kind == "encdec":
        check_pairs(config)
    elif config.data.pairs:
        raise UserError(f"data.pairs={config.data.pairs!r} feeds model.kind=encdec only; set data.pairs='' "
                        f"for model.kind={m.kind}")
    if config.data.train_chars and config.data.source in ("prepared", "conversations"):
        raise UserError(f"data.train_chars={config.data.train_chars} cuts a text corpus; data.source="
                        f"{config.data.source} is already tokenized: set data.train_chars=0")
    if m.kind in ("gpt", "encdec") and m.n_embd % m.n_head:
        raise UserError(f"model.n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}")
    if m.kind in ("gpt", "encdec") and m.pos_encoding == "rope" and (m.n_embd // m.n_head) % 2:
        raise UserError(f"rope needs an even head size, but n_embd/n_head = {m.n_embd // m.n_head}")
    fractions = {f"model.{site}": m[site] for site in ("dropout", "embd_dropout", "attn_dropout", "resid_dropout")}
    fractions.update({f"train.{key}": config.train[key] for key in ("beta1", "beta2", "muon_beta")})
    for key, value in fractions.items():
        if value is not None and not 0 <= value < 1:
            raise UserError(f"config {key}={value} must be in [0, 1)")
    check_lora(config)


def check_lora(config) -> None:
    """train.lora_*: settings LoRASettings accepts, on layers this model has, under a plain adapter name."""
    settings = LoRASettings.from_config(config.train)
    if settings is None:
        return
    if config.model.kind != "gpt":
        raise UserError(f"train.lora_rank={settings.rank} adapts a GPT, not model.kind={config.model.kind!r}; "
                        "set train.lora_rank=0")
    # The layers asked for must exist (lm_head only untied, c_gate only with SwiGLU): apply_lora's own
    # check, on an abstract model of this shape (nothing is allocated).
    nnx.eval_shape(lambda: apply_lora(gpt.GPT(gpt.GPTConfig.from_config(config.model, 8), rngs=nnx.Rngs(0)),
                                      settings, nnx.Rngs(0)))
    name = config.train.get("lora_name", "")
    if name in (".", "..") or "/" in name or os.sep in name:
        raise UserError(f"train.lora_name={name!r} must be a plain folder name (the adapter goes to "
                        "workdir/adapters/<name>)")


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_workdir(config, workdir: str) -> None:
    """A workdir that already holds a run must have been made with the same data and model."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        record = json.load(f)
    saved = flatten({k: v for k, v in record.items() if k in MUST_MATCH})
    wanted = flatten({k: v for k, v in config.to_dict().items() if k in MUST_MATCH})
    for key, default in MUST_MATCH_KEYS.items():  # keys older runs may lack take their default
        section, name = key.split(".")
        saved[key], wanted[key] = record.get(section, {}).get(name, default), config[section].get(name, default)
    for key in sorted(set(saved) | set(wanted)):
        if key in ("data.cache_dir",):
            continue
        if saved.get(key) != wanted.get(key):
            raise UserError(f"{workdir} holds a run with {key}={saved.get(key)!r} but the config says "
                            f"{wanted.get(key)!r}; use a new --workdir or the workdir's own config")


def check_corpus(config, corpus: Corpus) -> None:
    if not isinstance(corpus, Corpus):  # conversations: packing checked the windows
        if config.model.kind != "gpt":
            raise UserError(f"training on conversations needs model.kind=gpt (packed rows mask attention "
                            f"per conversation), got {config.model.kind!r}")
        return
    need = config.model.block_size + 1
    for split in ("train", "val"):
        if corpus.tokens[split].size < need:
            raise UserError(f"model.block_size={config.model.block_size} is larger than the {split} split "
                            f"({corpus.tokens[split].size} tokens); lower model.block_size or add text")


def check_batch(config, mesh) -> None:
    replicas = mesh.shape["data"] * mesh.shape["fsdp"]
    accum = config.train.grad_accum
    for rows in BatchSchedule(config.train.batch_ramp, config.train.batch_size).rows:
        if rows % accum:
            raise UserError(f"a batch of {rows} rows (train.batch_size or train.batch_ramp) is not divisible by "
                            f"train.grad_accum={accum}")
        if (rows // accum) % replicas:
            raise UserError(f"micro-batch {rows // accum} (a batch of {rows} rows / train.grad_accum) is not "
                            f"divisible by the {replicas} data-parallel replicas (mesh data x fsdp)")
    if config.eval.batch_size % replicas:
        raise UserError(f"eval.batch_size={config.eval.batch_size} is not divisible by the {replicas} "
                        "data-parallel replicas (mesh data x fsdp)")
