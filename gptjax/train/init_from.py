"""Start a run from an existing model (`train.init_from`): a gptjax workdir or a Hugging Face
GPT-2 directory (`hf:/path/to/dir`).

The source decides the architecture (every `config.model` key but the compute settings below)
and the tokenizer; `model.block_size` may be lowered below the source's context, never raised.
A command-line override that contradicts the source is refused naming its key, because the
weights cannot take another shape. The optimizer starts fresh at step 0; where the weights came
from (path, checksum) goes into environment.json and report.md.

Training on conversations (data.source=conversations or dialogues) renders with the chat role
tokens. A source whose BPE tokenizer lacks them (GPT-2's has only <|endoftext|>) gets them
appended after its ids (data/role_tokens.py) and its token tables grown to match
(model/vocab_growth.py: each new row starts at the mean of the old rows; padding rows stay
zero), so the logits of every old id are unchanged at step 0. The grown tokenizer is the run's:
it is saved in the workdir (chat, serving and evaluation then render with the role-token
template) and the workdir's config records its size; environment.json and report.md record
the growth ({"vocab_grown": {"from": N, "to": M, ...}}). A resumed run grows the source again,
to the same tokenizer, which must equal the workdir's. A char tokenizer keeps the plain
template; text runs never grow anything.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gptjax.data.role_tokens import with_role_tokens
from gptjax.data.tokenizers import Tokenizer
from gptjax.errors import UserError
from gptjax.model import build_model
from gptjax.model.vocab_growth import grow_params
from gptjax.train import state as state_lib
from gptjax.train.step import TrainState
from gptjax.workdir import write_json

HF_PREFIX = "hf:"
# `config.model` keys that stay the config's: how the model computes, not what it is.
COMPUTE = ("dropout", "embd_dropout", "attn_dropout", "resid_dropout", "remat", "dtype", "param_dtype")
# Positions are the one parameter whose shape follows block_size: a lower block keeps the first rows.
POSITIONS = ("wpe", "embedding")
# The data sources rendered with the chat template (data/conversations.py, data/dialogues.py).
CHAT_SOURCES = ("conversations", "dialogues")


@dataclasses.dataclass
class Source:
    """A model to start from: its architecture, tokenizer, weights and where they came from."""

    record: dict                       # {"path", "format", "checksum", "weights"} for environment.json
    model: dict                        # config.model settings of its architecture
    tokenizer: Tokenizer
    params: nnx.State                  # the weights, at the source's shapes
    rest: nnx.State


def resolve(config, overrides: Iterable[str] = ()):
    """(config with the source's architecture and tokenizer settings, Source), or (config, None)
    when `train.init_from` is empty. `overrides` are the dotted keys set on the command line."""
    where = config.train.get("init_from", "")
    if not where:
        return config, None
    source = load_gptjax(where) if not where.startswith(HF_PREFIX) else load_hf(where[len(HF_PREFIX):])
    source = with_chat_vocabulary(source, config)
    return apply_source(config, source, set(overrides)), source


def with_chat_vocabulary(source: Source, config) -> Source:
    """The source with the chat role tokens its BPE tokenizer lacks, and its token tables grown to
    match, when the run trains on conversations; otherwise (text, a tokenizer that has them, a char
    tokenizer, a model that is not a GPT) the source as it is."""
    tokenizer = source.tokenizer
    if config.data.source not in CHAT_SOURCES or tokenizer.kind != "bpe" or source.model.get("kind") != "gpt":
        return source
    grown = with_role_tokens(tokenizer)
    if grown is tokenizer:
        return source
    old, new = tokenizer.vocab_size, grown.vocab_size
    where = config.train.init_from
    if config.train.get("lora_rank", 0):
        raise UserError(f"train.init_from={where} has no chat role tokens, and with train.lora_rank="
                        f"{config.train.lora_rank} its embedding stays frozen, so the tokens added for them could "
                        "not learn; fine-tune on the conversations without LoRA (train.lora_rank=0) first, then "
                        "adapt that model")
    added = [t for t in grown.special_ids if t not in tokenizer.special_ids]
    params = grow_params(source.params, old, new, source.model.get("vocab_pad", 1))
    record = source.record | {"vocab_grown": {"from": old, "to": new, "added": added,
                                              "new_rows": "mean of the existing rows"}}
    print(f"train.init_from={where}: its tokenizer lacks the chat role tokens; added {' '.join(added)} as ids "
          f"{old}..{new - 1}, vocabulary grown from {old} to {new} (new rows start at the mean row)")
    return dataclasses.replace(source, tokenizer=grown, params=params, record=record)


def apply_source(config, source: Source, overrides: set[str]):
    config = copy.deepcopy(config)
    init_from = config.train.init_from
    for key, value in source.model.items():
        dotted = f"model.{key}"
        if key == "block_size":
            if config.model.block_size > value and dotted in overrides:
                raise UserError(f"model.block_size={config.model.block_size} is more than the {value} positions of "
                                f"train.init_from={init_from}; lower it or leave it out")
            value = min(config.model.block_size, value)
        elif dotted in overrides and config.model.get(key) != value:
            raise UserError(f"{dotted}={config.model.get(key)!r} on the command line contradicts "
                            f"train.init_from={init_from}, whose architecture has {value!r}; drop the override "
                            "(the architecture comes from the source)")
        with config.unlocked():
            config.model[key] = value
    kind = source.tokenizer.kind
    if config.data.tokenizer != kind:
        raise UserError(f"data.tokenizer={config.data.tokenizer!r} contradicts train.init_from={init_from}, whose "
                        f"tokenizer is {kind!r}; set data.tokenizer={kind} (the source's tokenizer is reused)")
    if kind == "bpe":
        if "data.vocab_size" in overrides and config.data.vocab_size != source.tokenizer.vocab_size:
            raise UserError(f"data.vocab_size={config.data.vocab_size} contradicts train.init_from={init_from}, "
                            f"whose tokenizer has {source.tokenizer.vocab_size} ids; drop the override")
        config.data.vocab_size = source.tokenizer.vocab_size
    return config


def params_digest(params: nnx.State) -> str:
    """sha256 over parameter paths, shapes, dtypes and bytes: a gptjax checkpoint's fingerprint."""
    h = hashlib.sha256()
    for path, var in sorted(nnx.to_flat_state(params), key=lambda kv: str(kv[0])):
        a = np.ascontiguousarray(jax.device_get(var.get_value()))
        h.update(f"{path}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def load_gptjax(workdir: str) -> Source:
    from gptjax.train.checkpoints import Checkpoints
    from gptjax.workdir import load_config, load_model  # workdir reads through gptjax.train

    if not os.path.isdir(workdir):
        raise UserError(f"train.init_from={workdir!r} is not a directory; give a gptjax workdir or hf:/path/to/dir")
    saved = load_config(workdir)
    checkpoints = Checkpoints(workdir, saved.train.keep_checkpoints)
    which = "best" if checkpoints.has_best() else "last"
    checkpoints.close()
    model, tokenizer, saved = load_model(workdir, which)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    settings = {k: v for k, v in saved.model.to_dict().items() if k not in COMPUTE}
    record = {"path": os.path.abspath(workdir), "format": "gptjax", "weights": which,
              "checksum": params_digest(params)}
    return Source(record, settings, tokenizer, params, rest)


def load_hf(directory: str) -> Source:
    from gptjax.model import gpt2

    model, tokenizer = gpt2.load_gpt2(directory)
    if tokenizer.vocab_size != model.cfg.vocab_size:
        raise UserError(f"{directory}: config.json has vocab_size={model.cfg.vocab_size} but its tokenizer "
                        f"{tokenizer.vocab_size} ids; gptjax needs them equal to start from it")
    _, params, rest = nnx.split(model, nnx.Param, ...)
    record = {"path": os.path.abspath(directory), "format": "huggingface-gpt2", "weights": "model.safetensors",
              "checksum": "sha256:" + gpt2.weights_digest(directory)}
    return Source(record, gpt2.model_settings(model.cfg), tokenizer, params, rest)


def graft(target: nnx.State, source: nnx.State, where: str) -> nnx.State:
    """The source's arrays in the target's structure and dtypes; positions cut to the target's block."""
    values = dict(nnx.to_flat_state(source))
    leaves = []
    for path, var in nnx.to_flat_state(target):
        if path not in values:
            raise UserError(f"train.init_from={where} has no {'.'.join(map(str, path))}; it is another kind of model")
        value = values[path].get_value()
        if path[-2:] == POSITIONS:
            value = value[:var.shape[0]]
        if value.shape != var.shape:
            raise UserError(f"train.init_from={where}: {'.'.join(map(str, path))} is {value.shape}, this model "
                            f"needs {var.shape}")
        leaves.append((path, var.replace(jnp.asarray(value, var.dtype))))
    return nnx.from_flat_state(leaves)


def initial_state(source: Source, config, vocab_size: int, tx, shardings: TrainState) -> TrainState:
    """The train state at step 0 with the source's weights and a fresh optimizer, sharded."""
    _, abstract_params, abstract_rest = state_lib.abstract_model(config.model, vocab_size, config.seed)
    params = graft(abstract_params, source.params, config.train.init_from)
    rest = graft_matching(fresh_rest(config, vocab_size, shardings.rest), source.rest)

    def build(params, rest):
        return TrainState(jnp.zeros((), jnp.int32), params, rest, tx.init(params))

    return jax.jit(build, out_shardings=shardings)(params, rest)


def fresh_rest(config, vocab_size: int, sharding) -> nnx.State:
    """The non-parameter state of a freshly built model; XLA drops the unused parameter init."""
    def build():
        return nnx.split(build_model(config.model, vocab_size, state_lib.Keys(config.seed)), nnx.Param, ...)[2]

    return jax.jit(build, out_shardings=sharding)()


def graft_matching(target: nnx.State, source: nnx.State) -> nnx.State:
    """Non-parameter state (BatchNorm statistics) from the source where it has the same path and
    shape; the rest (random-number counters) as freshly initialised."""
    values = {p: v.get_value() for p, v in nnx.to_flat_state(source)}
    leaves = []
    for path, var in nnx.to_flat_state(target):
        value = values.get(path)
        same = value is not None and np.shape(value) == var.shape and jnp.asarray(value).dtype == var.dtype
        leaves.append((path, var.replace(jnp.asarray(value)) if same else var))
    return nnx.from_flat_state(leaves)


def provenance(source: Source | None) -> dict:
    """environment.json's record of where the weights came from (nothing for a run from scratch)."""
    return {} if source is None else {"init_from": source.record}


BASE_FILE = "base.json"


def write_base(workdir: str, scores: dict, samples: list[tuple[str, str]]) -> None:
    """The source model's validation figures and samples on this run's data, before training."""
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, BASE_FILE), {"val_bpc": scores["bits_per_char"], "val_loss": scores["loss"],
                                                      "samples": [list(s) for s in samples]})


def read_base(workdir: str) -> dict | None:
    path = os.path.join(workdir, BASE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
