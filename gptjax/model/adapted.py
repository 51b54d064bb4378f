"""A base model and the LoRA adapters saved for it, in the form generation and serving use.

The base is loaded once. `AdapterSet.switch` puts another adapter on it in place (the chat's
`/persona NAME`); `AdapterSet.copy_with` gives a clone sharing the base's arrays with one
adapter attached (the server's `<workdir>:<adapter>` models). The base's checksum, which every
attach compares with the adapter's, is computed once. `servable` is the last step before a
Generator: int8 quantisation needs plain layers, so adapters are merged into a copy first.
"""

from __future__ import annotations

import os
from pathlib import Path

from flax import nnx

from gptjax.errors import UserError
from gptjax.model import lora
from gptjax.model.gpt import GPT
from gptjax.model.quantize import MODES, quantize as quantize_model


def check_quantize(mode: str) -> str:
    """`--quantize MODE` refused before anything is loaded when it is unknown."""
    if mode not in MODES:
        raise UserError(f"--quantize {mode!r} is unknown; use one of {', '.join(MODES)}")
    return mode


def servable(model: GPT, quantize: str = "none") -> GPT:
    """`model` to decode with: unchanged for 'none'; for 'int8', a quantised copy of it with any
    adapters merged first (the model itself keeps its adapters, ready to switch)."""
    if quantize != "none" and lora.adapted_layers(model):
        model = lora.merge_adapters(model)
    return quantize_model(model, quantize)


def find(root: str | os.PathLike, adapter: str, known: dict[str, Path]) -> Path:
    """The directory of `adapter`: a name among `known` (the adapters saved in root), or a path."""
    if adapter in known:
        return known[adapter]
    if (Path(adapter) / lora.INFO_FILE).is_file():
        return Path(adapter)
    names = ", ".join(known) or "none"
    raise UserError(f"adapter {adapter!r} is neither a name in {root} (it has: {names}) nor a directory "
                    f"holding {lora.INFO_FILE}; train one with train.lora_rank > 0 or give its directory")


class AdapterSet:
    """One base model and the adapters found under `root` (a workdir's adapters/ folder)."""

    def __init__(self, model: GPT, root: str | os.PathLike):
        self.model, self.root = model, Path(root)
        self.known = lora.find_adapters(self.root)
        self.checksum = ""
        self.current = ""  # the adapter `switch` last attached

    def base_checksum(self) -> str:
        if not self.checksum:
            self.checksum = lora.base_checksum(self.model)
        return self.checksum

    def load(self, adapter: str) -> lora.Adapter:
        directory = find(self.root, adapter, self.known)
        return lora.load_adapter(directory, adapter if adapter in self.known else directory.name)

    def switch(self, adapter: str) -> GPT:
        """Put `adapter` (a name or directory) on the base in place, replacing the one it carries."""
        loaded = self.load(adapter)
        lora.attach_adapter(self.model, loaded, self.base_checksum())
        self.current = loaded.name
        return self.model

    def copy_with(self, adapter: str) -> GPT:
        """A clone of the model that shares the base's arrays and carries `adapter`."""
        return lora.attach_adapter(nnx.clone(self.model), self.load(adapter), self.base_checksum())
