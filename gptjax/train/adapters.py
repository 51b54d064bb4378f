"""LoRA in the training job: which settings a run trains with, and the adapter it leaves behind.

With `train.lora_rank` > 0 the job builds the model with adapters over a frozen base
(`build_model(..., lora=settings)`): the train state's `params` are the adapters alone, so the
optimizer holds moments for them only, and the base sits in `rest`, never updated. Resume
checkpoints stay whole (adapters, optimizer state and base) so that a run from a random base
resumes exactly like any other; the product of the run is the adapter alone, written when the
run ends from the step `load_model` would pick (best, else last) to
`workdir/adapters/<train.lora_name or the workdir's name>/` (`adapter.safetensors`, `adapter.json`).
"""

from __future__ import annotations

import os

import jax
from flax import nnx

from gptjax.model import lora as lora_lib
from gptjax.model.lora import LoRASettings

ADAPTERS_DIR = "adapters"


def settings(config) -> LoRASettings | None:
    """The run's LoRA settings, or None when it trains every parameter."""
    return LoRASettings.from_config(config.train)


def adapter_name(config, workdir: str) -> str:
    return config.train.get("lora_name", "") or os.path.basename(os.path.normpath(os.path.abspath(workdir)))


def describe(lora: LoRASettings | None, abstract_params, abstract_rest) -> str:
    """One line for the run's log: what trains and what is frozen ('' without LoRA)."""
    if lora is None:
        return ""
    trainable = sum(x.size for x in jax.tree.leaves(abstract_params))
    frozen = sum(x.size for x in jax.tree.leaves(nnx.state(abstract_rest, lora_lib.FrozenParam)))
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
