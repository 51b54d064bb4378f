"""LoRA in the training job: which settings a run trains with, and the adapter it leaves behind.

With `train.lora_rank` > 0 the job builds the model with adapters over a frozen base
(`build_model(..., lora=settings)`): the train state's `params` are the adapters alone, so the
optimizer holds moments for them only, and the base sits in `rest`, never updated. Resume
checkpoints stay whole (adapters, optimizer state and base) so that a run from a random base
resumes exactly like any other; the product of the run is the adapter alone, written when the
run ends from the step `load_model` would pick (best, else last) to
`workdir/adapters/<train.lora_name or the workdir's name>/` (`adapter.safetensors`, `adapter.json`).
A run that starts from a trained base puts it in the fresh state with `place_base`.
"""

from __future__ import annotations

import os

import jax
from flax import nnx

from gptjax.errors import UserError
from gptjax.model import lora as lora_lib
from gptjax.model.lora import LoRASettings
from gptjax.train.step import TrainState

ADAPTERS_DIR = "adapters"


def settings(config) -> LoRASettings | None:
    """The run's LoRA settings, or None when it trains every parameter."""
    return LoRASettings.from_config(config.train)


def adapter_name(config, workdir: str) -> str:
    return config.train.get("lora_name", "") or os.path.basename(os.path.normpath(os.path.abspath(workdir)))


def describe(lora: LoRASettings, abstract_params, abstract_rest) -> str:
    """One line for the run's log: what trains and what is frozen."""
    trainable = sum(x.size for x in jax.tree.leaves(abstract_params))
    frozen = sum(v.get_value().size for _, v in nnx.to_flat_state(abstract_rest) if isinstance(v, lora_lib.FrozenParam))
    return (f"LoRA rank {lora.rank}, alpha {lora.alpha} on {', '.join(lora.targets)}: {trainable:,} trainable "
            f"parameters over a frozen base of {frozen:,}")


def save_product(config, workdir: str, graphdef, params, rest) -> dict:
    """Write the adapter of (params, rest) under workdir/adapters/ (process 0 only); the summary's
    fields for it ({} without LoRA)."""
    if settings(config) is None:
        return {}
    model = nnx.merge(graphdef, params, rest)
    directory = os.path.join(workdir, ADAPTERS_DIR, adapter_name(config, workdir))
    if jax.process_index() == 0:
        info = lora_lib.save_adapter(model, directory)
        size = info.bytes
    else:
        size = 0
    n, _ = lora_lib.adapter_size(model)
    return {"adapter": directory, "adapter_params": n, "adapter_bytes": size}


def place_base(state: TrainState, base_params) -> TrainState:
    """A LoRA run's train state with its base replaced by `base_params` (the `nnx.Param` state of a
    trained model of the same shape, e.g. the one train.init_from names), matched by path and put
    where the state's arrays are; the adapters and their optimizer state are left as they are."""
    base = dict(jax.tree_util.tree_flatten_with_path(base_params)[0])
    placed = []

    def one(path, leaf):
        if path not in base:
            return leaf
        value = base[path]
        if value.shape != leaf.shape:
            raise UserError(f"the base's {jax.tree_util.keystr(path)} is {value.shape}, the LoRA model needs "
                            f"{leaf.shape}; start from a base of this model's shape")
        placed.append(path)
        return jax.device_put(jax.numpy.asarray(value, leaf.dtype), leaf.sharding)

    rest = jax.tree_util.tree_map_with_path(one, state.rest)
    frozen = sum(isinstance(v, lora_lib.FrozenParam) for _, v in nnx.to_flat_state(state.rest))
    if len(placed) != frozen or len(base) != frozen:
        raise UserError(f"the base has {len(base)} parameter arrays and the LoRA model's frozen base {frozen} "
                        f"({len(placed)} matched by path); start from a base of this model's shape")
    return state._replace(rest=rest)
