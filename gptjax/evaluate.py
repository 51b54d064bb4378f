"""Score a trained model, or an n-gram baseline, on any split of the data it was trained on.

    python -m gptjax.evaluate --workdir runs/x --split test
    python -m gptjax.evaluate --workdir runs/x --split test --continuations 50 --strategy greedy --strategy beam
    python -m gptjax.evaluate --ngram 5 --config configs/default.py --split test

The corpus is rebuilt from the workdir's own config.json, so a model is always scored on
the text its tokenizer was made for. Results are printed and written to
`<workdir>/eval_<split>.json` (`eval_<split>_ngram<order>.json` for a baseline). Scoring
the train split needs --force: it measures memorisation, not generalisation.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Sequence

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import ConfigDict, config_flags

from gptjax.baselines.ngram import NGramLM
from gptjax.cli import guarded
from gptjax.data import batches
from gptjax.data.prepare import Corpus, prepare
from gptjax.errors import UserError
from gptjax.eval.continuation import continuation_task
from gptjax.train import mesh as mesh_lib
from gptjax.train.environment import write_json
from gptjax.train.loop import evaluate
from gptjax.train.step import make_eval_step, summarize
from gptjax.workdir import load_config, load_model

SPLITS = ("train", "val", "test")
# Per-token figures only compare between models that cut text into the same tokens.
PER_TOKEN = ("loss", "perplexity", "bits_per_token")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined on demand, so that importing the scoring functions adds no flags to another program."""
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


def check_split(split: str, force: bool, max_tokens: int) -> None:
    if max_tokens < 0:
        raise UserError(f"max_tokens={max_tokens} is negative; give a token count, or 0 for the whole split")
    if split not in SPLITS:
        raise UserError(f"split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    if split == "train" and not force:
        raise UserError("refusing to score the train split: it measures memorisation; use --split val or test, "
                        "or --force")


def check_not_empty(corpus: Corpus, split: str) -> None:
    if corpus.tokens[split].size < 2:
        raise UserError(f"the {split} split holds {corpus.tokens[split].size} tokens; nothing to score "
                        "(is data.test_fraction 0?)")


def tokenizer_id(directory: str) -> str:
    """A fingerprint of a saved tokenizer: equal fingerprints cut text into the same tokens."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        h.update(name.encode())
        with open(os.path.join(directory, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def compare(results: Sequence[dict], metric: str) -> list[float]:
    """`metric` of each result, refusing per-token figures (e.g. test_loss) of results from different tokenizers.

    Bits per char and per byte count the same text whatever the tokenizer, so they always compare.
    """
    if any(metric == m or metric.endswith("_" + m) for m in PER_TOKEN):
        ids = sorted({r.get("tokenizer") for r in results}, key=str)
        if len(ids) > 1:
            raise UserError(f"{metric} is per token, and these results come from {len(ids)} different tokenizers "
                            f"({', '.join(map(str, ids))}); compare bits_per_char or bits_per_byte instead")
    return [r[metric] for r in results]


def score_model(model: nnx.Module, corpus: Corpus, split: str, block_size: int, batch_size: int,
                max_tokens: int = 0) -> dict:
    """Loss, perplexity and bits per token / byte / char of every target of the split, each scored once."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    mesh = mesh_lib.build_mesh(ConfigDict(dict(data=-1, fsdp=1, tensor=1)))
    sharding = mesh_lib.batch_sharding(mesh)
    step = jax.jit(make_eval_step(graphdef, corpus.token_bytes, corpus.token_chars))
    return evaluate(step, params, rest, batches.sequential_batches(corpus.tokens[split], block_size, batch_size,
                                                                  max_tokens, sharding))


def score_ngram(corpus: Corpus, order: int, split: str, max_tokens: int = 0) -> dict:
    """An n-gram model trained on the train split, scored on the targets a neural model scores:
    every token of the (first max_tokens of the) split but the first."""
    lm = NGramLM.train(np.asarray(corpus.tokens["train"]), order, corpus.tokenizer.vocab_size)
    tokens = np.asarray(corpus.tokens[split][:max_tokens or None], np.int64)
    targets = tokens[1:]
    nll = -float(lm.log_probs(tokens)[1:].sum())
    return summarize((nll, len(targets), corpus.token_bytes[targets].sum(), corpus.token_chars[targets].sum()))


def workdir_corpus(config, workdir: str) -> Corpus:
    """The corpus rebuilt from a run's config, refused if it no longer gives the run's tokenizer."""
    corpus = prepare(config.data, config.seed)
    saved = os.path.join(workdir, "tokenizer")
    if os.path.isdir(saved) and tokenizer_id(saved) != tokenizer_id(os.path.join(corpus.cache_dir, "tokenizer")):
        raise UserError(f"the data of {workdir}/config.json now gives a different tokenizer than the run's "
                        f"{saved} (has the text changed?); score it on the data it was trained on")
    return corpus


def evaluate_workdir(workdir: str, split: str, *, force: bool = False, max_tokens: int = 0, which: str = "best",
                     continuations: int = 0, prefix_chars: int = 200, continue_chars: int = 100,
                     strategies: tuple[str, ...] = ("greedy",), beams: int = 4) -> dict:
    """Score a trained run on a split (and the continuation task); writes `<workdir>/eval_<split>.json`."""
    check_split(split, force, max_tokens)
    config = load_config(workdir)
    corpus = workdir_corpus(config, workdir)
    check_not_empty(corpus, split)
    started = time.time()
    model, tokenizer, config = load_model(workdir, which)
    result = {"split": split, "workdir": workdir, "model": config.model.kind, "checkpoint": which,
              "tokenizer": tokenizer_id(os.path.join(workdir, "tokenizer")), "max_tokens": max_tokens,
              **score_model(model, corpus, split, config.model.block_size, config.eval.batch_size, max_tokens)}
    if continuations:
        text = tokenizer.decode(np.asarray(corpus.tokens[split]))
        result["continuation"] = continuation_task(
            model, tokenizer, text, count=continuations, prefix_chars=prefix_chars, continue_chars=continue_chars,
            block_size=config.model.block_size, strategies=tuple(strategies), beams=beams)
    result["seconds"] = round(time.time() - started, 1)
    write_json(os.path.join(workdir, f"eval_{split}.json"), result)
    return result


def evaluate_ngram(config, order: int, split: str, *, force: bool = False, max_tokens: int = 0,
                   workdir: str | None = None) -> dict:
    """Score an n-gram baseline on a config's data; written beside a workdir's results if one is given."""
    check_split(split, force, max_tokens)
    corpus = prepare(config.data, config.seed)
    check_not_empty(corpus, split)
    started = time.time()
    scores = score_ngram(corpus, order, split, max_tokens)
    result = {"split": split, "model": f"{order}-gram", "max_tokens": max_tokens,
              "tokenizer": tokenizer_id(os.path.join(corpus.cache_dir, "tokenizer")), **scores,
              "seconds": round(time.time() - started, 1)}
    if workdir:
        write_json(os.path.join(workdir, f"eval_{split}_ngram{order}.json"), result)
    return result


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


def run_cli() -> dict:
    if FLAGS.ngram:
        if FLAGS.config is None and not FLAGS.workdir:
            raise UserError("--ngram needs the data to use: give --config (a config file) or --workdir (a run)")
        if FLAGS.config is not None:
            config = FLAGS.config
        else:
            config = load_config(FLAGS.workdir)
        result = evaluate_ngram(config, FLAGS.ngram, FLAGS.split, force=FLAGS.force, max_tokens=FLAGS.max_tokens,
                                workdir=FLAGS.workdir)
    else:
        if not FLAGS.workdir:
            raise UserError("give --workdir (a trained run), or --ngram N with --config for a baseline")
        result = evaluate_workdir(FLAGS.workdir, FLAGS.split, force=FLAGS.force, max_tokens=FLAGS.max_tokens,
                                  which=FLAGS.which, continuations=FLAGS.continuations,
                                  prefix_chars=FLAGS.prefix_chars, continue_chars=FLAGS.continue_chars,
                                  strategies=tuple(dict.fromkeys(FLAGS.strategy)), beams=FLAGS.beams)
    print(describe(result))
    if FLAGS.workdir:
        name = f"eval_{FLAGS.split}_ngram{FLAGS.ngram}.json" if FLAGS.ngram else f"eval_{FLAGS.split}.json"
        print(f"written to {os.path.join(FLAGS.workdir, name)}")
    return result


def parse_flags(argv: list[str]) -> list[str]:
    """Parse flags; a bad flag or config file is one line and exit 2, not a traceback."""
    try:
        rest = FLAGS(argv)
        if FLAGS.config is not None:
            FLAGS.config.get("seed")  # a config file that failed to load raises here, not later
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as e:
        message = str(e).strip().strip('"').splitlines()[-1] if str(e).strip() else type(e).__name__
        print(f"error: bad command line ({type(e).__name__}: {message}); see --help", file=sys.stderr)
        sys.exit(2)
    if len(rest) > 1:
        print(f"error: unexpected arguments {rest[1:]}; every option is a --flag", file=sys.stderr)
        sys.exit(2)
    return rest


def main(argv: list[str]) -> None:
    del argv
    guarded(run_cli)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
