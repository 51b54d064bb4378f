"""The continuation task: give a model the start of a held-out passage, compare what it writes
with what the passage really says next.

Passages are evenly spaced over a split's text, so the task is fixed by (split, count,
lengths) alone. Decoding is greedy or beam search over a fixed number of new tokens with
the reference decoder (`gptjax.generate.reference.beam_decode`), which recomputes the last
block_size tokens at every step, so it works for any model with the `model(idx) -> logits`
interface (GPT, LSTM, GRU). Greedy is beam search with one beam.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from flax import nnx

from gptjax.data.tokenizers import Tokenizer
from gptjax.errors import UserError
from gptjax.eval import text_metrics
from gptjax.generate.reference import beam_decode

STRATEGIES = ("greedy", "beam")


class Passages(NamedTuple):
    prompts: np.ndarray        # (P, L) token ids of each prefix, all of one length
    prefixes: list[str]        # the prompt text the model is given
    references: list[str]      # what the passage really says next


def passages(text: str, tokenizer: Tokenizer, count: int, prefix_chars: int, continue_chars: int) -> Passages:
    """`count` non-overlapping passages evenly spaced over `text`.

    A subword tokenizer gives prefixes of different token lengths; every prompt keeps the
    last tokens of its prefix, as many as the shortest prefix has, so that all decode as one batch.
    """
    if count < 1 or prefix_chars < 1 or continue_chars < 1:
        raise UserError(f"continuations={count}, prefix_chars={prefix_chars}, continue_chars={continue_chars}: "
                        "all must be at least 1")
    span = prefix_chars + continue_chars
    if len(text) < span * count:
        raise UserError(f"the split holds {len(text)} characters, too few for {count} separate passages of "
                        f"{span} characters; lower --continuations, --prefix_chars or --continue_chars")
    starts = np.linspace(0, len(text) - span, count).astype(int)
    encoded = [tokenizer.encode(text[s:s + prefix_chars]) for s in starts]
    width = min(len(e) for e in encoded)
    if width == 0:
        raise UserError("a passage prefix encodes to no tokens; raise --prefix_chars")
    prompts = np.stack([e[len(e) - width:] for e in encoded]).astype(np.int32)
    return Passages(prompts, [tokenizer.decode(p) for p in prompts],
                    [text[s + prefix_chars:s + span] for s in starts])


def continuations(model: nnx.Module, tokenizer: Tokenizer, task: Passages, continue_chars: int, block_size: int,
                  beams: int) -> list[str]:
    """The model's continuation of every prompt, cut to continue_chars characters.

    Every token but a partial UTF-8 character holds at least one character, so
    continue_chars new tokens are enough.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ids = beam_decode(graphdef, params, rest, task.prompts, continue_chars, block_size, beams)
    return [tokenizer.decode(row)[:continue_chars] for row in ids]


def diversity(texts: list[str]) -> dict:
    return {"distinct_1": text_metrics.distinct_n(texts, 1), "distinct_2": text_metrics.distinct_n(texts, 2),
            "repetition_rate": text_metrics.repetition_rate(texts)}


def score(hypotheses: list[str], references: list[str]) -> dict:
    """Overlap with the real continuations (BLEU, chrF) and the diversity of what was written."""
    return {"bleu": text_metrics.bleu(hypotheses, references), "chrf": text_metrics.chrf(hypotheses, references),
            **diversity(hypotheses)}


def continuation_task(model: nnx.Module, tokenizer: Tokenizer, text: str, *, count: int, prefix_chars: int,
                      continue_chars: int, block_size: int, strategies: tuple[str, ...] = STRATEGIES,
                      beams: int = 4, examples: int = 3) -> dict:
    """Scores of each strategy on `count` passages of `text`, the references' own diversity, and examples."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise UserError(f"strategy {unknown or strategies} is unknown; use {' and/or '.join(STRATEGIES)}")
    task = passages(text, tokenizer, count, prefix_chars, continue_chars)
    out: dict = {"passages": count, "prefix_chars": prefix_chars, "continue_chars": continue_chars,
                 "prompt_tokens": int(task.prompts.shape[1]), "beams": beams,
                 "reference": diversity(task.references)}
    written = {}
    for strategy in strategies:
        written[strategy] = continuations(model, tokenizer, task, continue_chars, block_size,
                                          1 if strategy == "greedy" else beams)
        out[strategy] = score(written[strategy], task.references)
    out["examples"] = [{"prefix": task.prefixes[i], "reference": task.references[i],
                        **{s: written[s][i] for s in strategies}} for i in range(min(examples, count))]
    return out
