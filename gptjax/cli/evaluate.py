"""Score a trained model, or an n-gram baseline, on any split of the data it was trained on.

    python -m gptjax.evaluate --workdir runs/x --split test
    python -m gptjax.evaluate --workdir runs/x --split test --continuations 50 --strategy greedy --strategy beam
    python -m gptjax.evaluate --ngram 5 --config configs/default.py --split test

Results are printed and written to `<workdir>/eval_<split>.json` (`eval_<split>_ngram<order>.json`
for a baseline); the scoring itself is `gptjax.eval.heldout`. Scoring the train split needs --force.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from gptjax.cli import absl_help, guarded, parse_config_flags
from gptjax.errors import UserError
from gptjax.eval.heldout import SPLITS, evaluate_ngram, evaluate_workdir, result_name
from gptjax.workdir import load_config

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined when the command runs, so that importing this module adds no flags to another program."""
    flags.DEFINE_string("workdir", None, "A trained run to score (or whose data an n-gram baseline uses).")
    config_flags.DEFINE_config_file("config", None, "Config whose data an n-gram baseline uses (instead of --workdir).")
    flags.DEFINE_enum("split", "val", SPLITS, "Split to score.")
    flags.DEFINE_bool("force", False, "Allow scoring the train split.")
    flags.DEFINE_integer("max_tokens", 0, "Score only the first N tokens of the split; 0 = all of it.")
    flags.DEFINE_enum("which", "best", ("best", "last"), "Checkpoint to score.")
    flags.DEFINE_integer("ngram", 0, "Score an interpolated Kneser-Ney n-gram model of this order instead.")
    flags.DEFINE_integer("continuations", 0, "Passages for the continuation task; 0 = skip it.")
    flags.DEFINE_integer("prefix_chars", 200, "Characters of each passage the model is given.")
    flags.DEFINE_integer("continue_chars", 100, "Characters it continues, compared with the real ones.")
    flags.DEFINE_multi_enum("strategy", ["greedy"], ("greedy", "beam"), "Decoding; repeat for both.")
    flags.DEFINE_integer("beams", 4, "Beam width of --strategy beam.")
    flags.DEFINE_string("adapter", "", "LoRA adapter: a name in WORKDIR/adapters/ or its directory.")
    flags.DEFINE_string("quantize", "none", "none or int8 (weight-only, per-channel scales).")


def describe(result: dict) -> str:
    lines = [f"{result['model']} on {result['split']} ({result['tokens']:,} tokens): loss {result['loss']:.4f}, "
             f"perplexity {result['perplexity']:.3f}, {result['bits_per_token']:.4f} bits/token, "
             f"{result['bits_per_char']:.4f} bits/char, {result['bits_per_byte']:.4f} bits/byte"]
    task = result.get("continuation")
    for strategy in ("greedy", "beam"):
        if task and strategy in task:
            s = task[strategy]
            lines.append(f"continuation, {strategy}: BLEU {s['bleu']:.2f}, chrF {s['chrf']:.2f}, "
                         f"distinct-1 {s['distinct_1']:.3f}, distinct-2 {s['distinct_2']:.3f}, "
                         f"repetition {s['repetition_rate']:.3f}")
    return "\n".join(lines)


def run() -> dict:
    if FLAGS.ngram:
        if FLAGS.config is None and not FLAGS.workdir:
            raise UserError("--ngram needs the data to use: give --config (a config file) or --workdir (a run)")
        config = FLAGS.config if FLAGS.config is not None else load_config(FLAGS.workdir)
        result = evaluate_ngram(config, FLAGS.ngram, FLAGS.split, force=FLAGS.force, max_tokens=FLAGS.max_tokens,
                                workdir=FLAGS.workdir)
    else:
        if not FLAGS.workdir:
            raise UserError("give --workdir (a trained run), or --ngram N with --config for a baseline")
        result = evaluate_workdir(FLAGS.workdir, FLAGS.split, force=FLAGS.force, max_tokens=FLAGS.max_tokens,
                                  which=FLAGS.which, continuations=FLAGS.continuations,
                                  prefix_chars=FLAGS.prefix_chars, continue_chars=FLAGS.continue_chars,
                                  strategies=tuple(dict.fromkeys(FLAGS.strategy)), beams=FLAGS.beams,
                                  adapter=FLAGS.adapter, quantize=FLAGS.quantize)
    print(describe(result))
    if FLAGS.workdir:
        name = (f"eval_{FLAGS.split}_ngram{FLAGS.ngram}.json" if FLAGS.ngram
                else result_name(FLAGS.split, FLAGS.adapter, FLAGS.quantize))
        print(f"written to {os.path.join(FLAGS.workdir, name)}")
    return result


def parse_flags(argv: list[str]) -> list[str]:
    rest = parse_config_flags(argv, "see --help")
    if len(rest) > 1:
        print(f"error: unexpected arguments {rest[1:]}; every option is a --flag", file=sys.stderr)
        sys.exit(2)
    return rest


def evaluate(argv: list[str]) -> None:
    del argv
    guarded(run)


def main(argv: list[str] | None = None) -> None:
    define_flags()
    absl_help(argv, __doc__, __name__)
    app.run(evaluate, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
    main()
