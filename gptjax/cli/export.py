"""Export a trained model in Hugging Face's GPT-2 format.

    python -m gptjax.export --workdir runs/x --out exported/x
    python -m gptjax.export --workdir runs/x --out exported/x --adapter runs/x/adapters/HAMLET

The directory (config.json, model.safetensors, tokenizer files) loads with
`transformers.GPT2LMHeadModel.from_pretrained`. A model GPT-2 cannot express (RoPE, RMSNorm,
no biases, an untied head, a char tokenizer, ...) is refused in one line, and nothing is written.
"""

from __future__ import annotations

import sys

from absl import app, flags

from gptjax.cli import guarded
from gptjax.hf_export import export_workdir

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined when the command runs, so that importing this module adds no flags to another program."""
    flags.DEFINE_string("workdir", None, "The trained run to export.")
    flags.DEFINE_string("out", None, "A new (or empty) directory to write the GPT-2 files into.")
    flags.DEFINE_enum("which", "best", ("best", "last"), "Checkpoint to export (best falls back to last).")
    flags.DEFINE_string("adapter", "", "A LoRA adapter directory to merge into the weights first.")
    flags.mark_flags_as_required(["workdir", "out"])


def export(argv: list[str]) -> None:
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}; every option is a --flag", file=sys.stderr)
        sys.exit(2)
    done = guarded(lambda: export_workdir(FLAGS.workdir, FLAGS.out, FLAGS.which, FLAGS.adapter))
    print(f"exported {done['workdir']} ({done['which']} weights, {done['layers']} layers x {done['width']}, "
          f"{done['vocab']} ids) to {done['out']}")


def main(argv: list[str] | None = None) -> None:
    define_flags()
    app.run(export, argv=argv)


if __name__ == "__main__":
    main()
