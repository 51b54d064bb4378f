"""Load a trained workdir (config, tokenizer, best or last checkpoint) as a ready model.

Generation, evaluation and serving start from here, never from the training code's internals.
"""

from __future__ import annotations

import json
import os

import ml_collections
from flax import nnx

from gptjax.data.tokenizers import Tokenizer, load_tokenizer
from gptjax.errors import UserError


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise UserError(f"{workdir} holds no trained model (no config.json); train one with python -m gptjax.main")
    from configs.default import get_config as default_config

    with open(path) as f:
        saved = json.load(f)
    config = default_config()  # keys added since the workdir was trained keep their defaults
    overlay(config, saved)
    return config


def overlay(config: ml_collections.ConfigDict, saved: dict) -> None:
    """Write a saved config over `config`, nested dicts into nested ConfigDicts."""
    with config.ignore_type():
        for key, value in saved.items():
            if isinstance(value, dict) and isinstance(config.get(key), ml_collections.ConfigDict):
                overlay(config[key], value)
            else:
                config[key] = value


def load_model(workdir: str, which: str = "best") -> tuple[nnx.Module, Tokenizer, ml_collections.ConfigDict]:
    """(model, tokenizer, config); `which` is best (falling back to last) or last."""
    from gptjax.train import mesh as mesh_lib, state as state_lib
    from gptjax.train.checkpoints import Checkpoints
    from gptjax.train.optimizer import build_optimizer

    config = load_config(workdir)
    tokenizer = load_tokenizer(os.path.join(workdir, "tokenizer"))
    checkpoints = Checkpoints(workdir, config.train.keep_checkpoints)
    if checkpoints.latest_step() is None:
        raise UserError(f"{workdir} has no checkpoint; train there first with python -m gptjax.main")
    if which == "best" and not checkpoints.has_best():
        which = "last"
    mesh = mesh_lib.build_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)))
    graphdef, params, rest = state_lib.abstract_model(config.model, tokenizer.vocab_size, config.seed)
    tx = build_optimizer(config.train, params)
    shardings = state_lib.state_shardings(graphdef, params, rest, tx, mesh)
    target = state_lib.restore_target(config.model, tokenizer.vocab_size, config.seed, tx, shardings)
    state, _ = checkpoints.restore(target, which=which)
    checkpoints.close()
    return nnx.merge(graphdef, state.params, state.rest), tokenizer, config
