"""A run's validation curve beside char-level n-gram lines (`gptjax.eval.learning_curves`).

    python -m gptjax.eval.curves --workdir runs/speedrun --orders 3,5,7

Writes `vs_ngram.png` and `vs_ngram.json` into the workdir and prints when the run crossed
each n-gram.
"""

from __future__ import annotations

from absl import app, flags

from gptjax.cli import absl_help, guarded
from gptjax.eval.learning_curves import compare_with_ngrams

FLAGS = flags.FLAGS


def curves(argv: list[str]) -> None:
    del argv
    result = guarded(lambda: compare_with_ngrams(FLAGS.workdir, [int(o) for o in FLAGS.orders]))
    for order, line in result["ngram_val_bpc"].items():
        t = result["crossing_seconds"][order]
        print(f"{order}-gram {line:.3f} bits/char: " + (f"crossed after {t:.0f} s" if t is not None else "not crossed"))


def main(argv: list[str] | None = None) -> None:
    flags.DEFINE_string("workdir", None, "A trained run's directory.")
    flags.DEFINE_list("orders", ["3", "5", "7"], "n-gram orders to draw.")
    flags.mark_flag_as_required("workdir")
    absl_help(argv, __doc__, __name__)
    app.run(curves, argv=argv)


if __name__ == "__main__":
    main()
