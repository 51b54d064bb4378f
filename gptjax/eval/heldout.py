"""Score a trained model, or an n-gram baseline, on a split of the data it was trained on.

The corpus is rebuilt from the workdir's own config.json, so a model is always scored on
the text its tokenizer was made for. Results are written to `<workdir>/eval_<split>.json`
(`eval_<split>_ngram<order>.json` for a baseline). Scoring the train split needs `force`:
it measures memorisation, not generalisation. `python -m gptjax.evaluate` is the command.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from ml_collections import ConfigDict

from gptjax.baselines.ngram import ngram_baseline
from gptjax.data import batches
from gptjax.data.prepare import Corpus, prepare
from gptjax.data.tokenizers import tokenizer_id
from gptjax.errors import UserError
from gptjax.eval.continuation import continuation_task
from gptjax.eval.scoring import evaluate, make_eval_step
from gptjax.train import batch_sharding, build_mesh
from gptjax.workdir import load_config, load_model_with_adapter, write_json

SPLITS = ("train", "val", "test")
# Per-token figures only compare between models that cut text into the same tokens.
PER_TOKEN = ("loss", "perplexity", "bits_per_token")


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
    sharding = batch_sharding(build_mesh(ConfigDict(dict(data=-1, fsdp=1, tensor=1))))
    step = jax.jit(make_eval_step(graphdef, corpus.token_bytes, corpus.token_chars))
    return evaluate(step, params, rest, batches.sequential_batches(corpus.tokens[split], block_size, batch_size,
                                                                  max_tokens, sharding))


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
                     strategies: tuple[str, ...] = ("greedy",), beams: int = 4, adapter: str = "",
                     quantize: str = "none") -> dict:
    """Score a trained run on a split (and the continuation task), with a LoRA `adapter` and
    `quantize` as `load_model_with_adapter` takes them; writes `<workdir>/eval_<split>.json`
    (`eval_<split>_<adapter>_<quantize>.json` with either)."""
    from gptjax.model.adapted import check_quantize

    check_split(split, force, max_tokens)
    check_quantize(quantize)
    config = load_config(workdir)
    corpus = workdir_corpus(config, workdir)
    check_not_empty(corpus, split)
    started = time.time()
    model, tokenizer, config = load_model_with_adapter(workdir, adapter, which, quantize=quantize)
    result = {"split": split, "workdir": workdir, "model": config.model.kind, "checkpoint": which,
              **({"adapter": adapter} if adapter else {}), **({"quantize": quantize} if quantize != "none" else {}),
              "tokenizer": tokenizer_id(os.path.join(workdir, "tokenizer")), "max_tokens": max_tokens,
              **score_model(model, corpus, split, config.model.block_size, config.eval.batch_size, max_tokens)}
    if continuations:
        text = tokenizer.decode(np.asarray(corpus.tokens[split]))
        result["continuation"] = continuation_task(
            model, tokenizer, text, count=continuations, prefix_chars=prefix_chars, continue_chars=continue_chars,
            block_size=config.model.block_size, strategies=tuple(strategies), beams=beams)
    result["seconds"] = round(time.time() - started, 1)
    write_json(os.path.join(workdir, result_name(split, adapter, quantize)), result)
    return result


def result_name(split: str, adapter: str = "", quantize: str = "none") -> str:
    """eval_<split>.json, with the adapter's name and the quantisation when used."""
    variant = "".join(f"_{os.path.basename(os.path.normpath(v))}" for v in (adapter, quantize) if v not in ("", "none"))
    return f"eval_{split}{variant}.json"


def evaluate_ngram(config, order: int, split: str, *, force: bool = False, max_tokens: int = 0,
                   workdir: str | None = None) -> dict:
    """Score an n-gram baseline on a config's data; written beside a workdir's results if one is given."""
    check_split(split, force, max_tokens)
    corpus = prepare(config.data, config.seed)
    check_not_empty(corpus, split)
    started = time.time()
    scores = ngram_baseline(corpus, order, split, max_tokens)
    result = {"split": split, "model": f"{order}-gram", "max_tokens": max_tokens,
              "tokenizer": tokenizer_id(os.path.join(corpus.cache_dir, "tokenizer")), **scores,
              "seconds": round(time.time() - started, 1)}
    if workdir:
        write_json(os.path.join(workdir, f"eval_{split}_ngram{order}.json"), result)
    return result
