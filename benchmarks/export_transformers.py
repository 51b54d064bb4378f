"""An exported model in Hugging Face transformers: loads, tokenizes alike, and gives gptjax's logits.

    pip install torch transformers        # not in requirements.txt: this check alone needs them
    python -m benchmarks.export_transformers [--workdir runs/x] [--steps 30]

Without --workdir it first trains a small GPT-2-shaped model on the plays (2 layers, 128 wide,
learned positions, LayerNorm, GELU, biases, tied head, BPE of 512) for --steps steps. It exports
the workdir with `gptjax.hf_export.export_workdir`, loads the directory with
`transformers.GPT2LMHeadModel.from_pretrained` and `AutoTokenizer.from_pretrained`, and prints
the largest logit difference on a passage of the plays beside a limit of float32 rounding
(1e-4 of the logits' range), and whether both tokenizers give the same ids.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from configs.base import get_config
from gptjax.cli import quiet_logs
from gptjax.hf_export import export_workdir
from gptjax.workdir import load_model

TEXT = ("ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is "
        "the sun.\n\nJULIET:\nO Romeo, Romeo! wherefore art thou Romeo?")


def train_small(workdir: str, steps: int) -> None:
    from gptjax.train import run

    c = get_config()
    c.data.tokenizer, c.data.vocab_size = "bpe", 512
    c.model.update(n_layer=2, n_head=4, n_embd=128, block_size=128, norm="layernorm", activation="gelu",
                   pos_encoding="learned", bias=True, tie_embeddings=True)
    c.train.steps, c.train.batch_size, c.train.warmup_steps = steps, 16, 5
    c.train.eval_every = c.train.checkpoint_every = steps
    c.eval.max_tokens, c.sample.prompts = 20_000, []
    run(c, workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="", help="a trained GPT-2-shaped run (default: train a small one)")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    try:
        import torch
        import transformers
    except ImportError as e:
        raise SystemExit(f"error: this check needs torch and transformers ({e}); pip install torch transformers")
    quiet_logs()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or os.path.join(tmp, "run")
        if not args.workdir:
            train_small(workdir, args.steps)
        out = os.path.join(tmp, "exported")
        export_workdir(workdir, out)
        model, tokenizer, _ = load_model(workdir)
        ours = np.asarray(tokenizer.encode(TEXT), np.int64)
        hf_tok = transformers.AutoTokenizer.from_pretrained(out)
        theirs = np.asarray(hf_tok(TEXT)["input_ids"], np.int64)
        hf_model = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
        with torch.no_grad():
            hf_logits = hf_model(torch.from_numpy(ours)[None]).logits[0].numpy()
        logits = np.asarray(model(ours[None].astype(np.int32)))[0, :, :hf_logits.shape[-1]]
    diff = float(np.abs(logits - hf_logits).max())
    limit = 1e-4 * float(logits.max() - logits.min())
    print(f"transformers {transformers.__version__}, torch {torch.__version__}: loaded {out!r} "
          f"({hf_model.num_parameters():,} parameters)")
    print(f"tokenizer: {len(ours)} ids, transformers' {'the same' if np.array_equal(ours, theirs) else 'DIFFERENT'}")
    print(f"largest logit difference {diff:.2e} (limit {limit:.2e}): {'ok' if diff <= limit else 'FAILED'}")


if __name__ == "__main__":
    main()
