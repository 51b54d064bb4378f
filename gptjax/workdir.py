"""A run's directory, read and written in one place: JSON files, the metrics log, the saved
config, and the trained model (config, tokenizer, best or last checkpoint) ready to use.

Generation, evaluation and serving start from here, never from the training code's internals.
"""

from __future__ import annotations

import json
import os

import ml_collections
from flax import nnx

from gptjax.data.tokenizers import Tokenizer, load_tokenizer
from gptjax.errors import UserError


def write_json(path: str, obj) -> None:
    """Write through a temporary file so that an interrupted write never leaves half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
    os.replace(tmp, path)


def read_metrics(workdir: str) -> list[dict]:
    """The records of `<workdir>/metrics.jsonl`, oldest first (none before the first log)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise UserError(f"{workdir} holds no trained model (no config.json); train one with python -m gptjax.main")
    from configs.base import get_config as default_config

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


def check_workdir(workdir: str) -> None:
    """Refuse a workdir that is a file or cannot be written, before a run starts working there."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir {workdir} is a file, not a directory; give a new or existing run directory")
    existing = workdir
    while not os.path.exists(existing):  # a new workdir is created in its nearest existing parent
        parent = os.path.dirname(os.path.abspath(existing))
        if parent == os.path.abspath(existing):
            break
        existing = parent
    if not os.path.isdir(existing):
        raise UserError(f"--workdir {workdir}: {existing} is a file, not a directory; give another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--workdir {workdir}: {existing} is not writable; fix its permissions or choose "
                        "another directory")


CHECKPOINT_NAMES = ("best", "last")


def check_checkpoint_name(which: str) -> None:
    if which not in CHECKPOINT_NAMES:
        raise UserError(f"--checkpoint {which!r} is unknown; use best (falls back to last) or last")


def load_model(workdir: str, which: str = "best") -> tuple[nnx.Module, Tokenizer, ml_collections.ConfigDict]:
    """(model, tokenizer, config); `which` is best (falling back to last) or last.

    Only the model's arrays are read from the checkpoint: no optimizer is built and its
    state stays on disk.
    """
    from gptjax.model import lora
    from gptjax.train import Checkpoints, abstract_model, build_mesh, replicated

    check_checkpoint_name(which)
    config = load_config(workdir)
    tokenizer = load_tokenizer(os.path.join(workdir, "tokenizer"))
    checkpoints = Checkpoints(workdir, config.train.keep_checkpoints)
    if checkpoints.latest_step() is None:
        raise UserError(f"{workdir} has no checkpoint; train there first with python -m gptjax.main")
    if which == "best" and not checkpoints.has_best():
        which = "last"
    mesh = build_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)))
    settings = lora.LoRASettings.from_config(config.train)  # a LoRA run: its adapters over its base
    graphdef, params, rest = abstract_model(config.model, tokenizer.vocab_size, config.seed, settings)
    try:
        params, rest = checkpoints.restore_params(params, rest, replicated(mesh), which=which)
    except UserError:
        raise
    except Exception as e:  # orbax and tensorstore raise many types for unreadable bytes
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(" See full")[0][:160]
        raise UserError(f"the {which} checkpoint in {workdir}/checkpoints cannot be read ({first}); it is "
                        "damaged: try --checkpoint " + ("best" if which == "last" else "last") +
                        ", or train again") from None
    finally:
        checkpoints.close()
    model = nnx.merge(graphdef, params, rest)
    return (lora.thaw_base(model) if settings else model), tokenizer, config


def adapters_dir(workdir: str) -> str:
    """Where a workdir's adapters are: one folder each, named after the adapter."""
    return os.path.join(workdir, "adapters")


def load_model_with_adapter(workdir: str, adapter: str = "", which: str = "best", merge: bool = False,
                            quantize: str = "none") -> tuple[nnx.Module, Tokenizer, ml_collections.ConfigDict]:
    """(model, tokenizer, config) as `load_model`, with `adapter` (a name in workdir/adapters/ or an
    adapter's directory) attached, merged into the base weights with `merge` (a plain GPT, e.g. for
    export), and quantised as `quantize` asks ('none' or 'int8', which merges first)."""
    from gptjax.model.adapted import AdapterSet, check_quantize, servable

    check_quantize(quantize)
    model, tokenizer, config = load_model(workdir, which)
    if adapter:
        model = AdapterSet(model, adapters_dir(workdir)).switch(adapter)
    if merge:
        from gptjax.model.lora import merge_adapters

        model = merge_adapters(model)
    return servable(model, quantize), tokenizer, config
