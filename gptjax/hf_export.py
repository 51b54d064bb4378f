"""A gptjax workdir out as a Hugging Face GPT-2 directory (`python -m gptjax.export`).

The model's best (else last) weights, with a LoRA adapter merged in when one is named, are
written by `gptjax.model.gpt2.export_gpt2`, which refuses a model GPT-2 cannot express
before anything is written.
"""

from __future__ import annotations

from gptjax.model import gpt2
from gptjax.workdir import load_model


def export_workdir(workdir: str, out: str, which: str = "best", adapter: str = "") -> dict:
    """Write `workdir`'s model to `out`; returns what was written (for the command to print)."""
    model, tokenizer, config = load_model(workdir, which)
    refused = gpt2.incompatibilities(model, tokenizer)
    if not refused and adapter:
        from gptjax.model import lora

        model = lora.merge_adapters(lora.attach_adapter(model, lora.load_adapter(adapter)))
    gpt2.export_gpt2(model, tokenizer, out)
    return {"workdir": workdir, "out": out, "which": which, "adapter": adapter,
            "layers": model.cfg.n_layer, "width": model.cfg.n_embd, "vocab": model.cfg.vocab_size}
