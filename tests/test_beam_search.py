"""Beam search: exhaustive agreement on a tiny model, width 1 is greedy, errors; on the KV cache
and on the recomputed window of the reference decoder."""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.base import get_config
from gptjax.errors import UserError
from gptjax.generate.generator import Generator
from gptjax.generate.reference import beam_decode, generate_uncached
from gptjax.generate.settings import GenerationSettings
from gptjax.model import build_model
from test_generate import SLIDING, LetterTokenizer, random_gpt

STOP = 0
PROMPTS = [np.array([1, 2]), np.array([3])]


def every_sequence(steps: int, vocab: int, stop_tokens: tuple[int, ...]) -> list[tuple[int, ...]]:
    """All outputs of up to `steps` tokens: ending in a stop token, or running the full length."""
    out = []
    for n in range(1, steps + 1):
        for seq in itertools.product(range(vocab), repeat=n):
            if any(t in stop_tokens for t in seq[:-1]):
                continue
            if n == steps or seq[-1] in stop_tokens:
                out.append(seq)
    return out


@functools.lru_cache(maxsize=None)
def prefix_log_probs(prompt: tuple[int, ...], steps: int = 3, vocab: int = 4) -> dict[tuple[int, ...], float]:
    """Log-probability of every continuation of up to `steps` tokens under MODEL, from one
    uncached forward pass over all full-length continuations."""
    full = list(itertools.product(range(vocab), repeat=steps))
    rows = jnp.asarray([[*prompt, *seq] for seq in full], jnp.int32)
    logp = np.asarray(jax.nn.log_softmax(model()(rows), axis=-1))[:, len(prompt) - 1:-1]
    table = {}
    for r, seq in enumerate(full):
        for n in range(1, steps + 1):
            table[seq[:n]] = float(sum(logp[r, i, t] for i, t in enumerate(seq[:n])))
    return table


@functools.lru_cache(maxsize=None)
def model():
    return random_gpt(vocab_size=4, seed=3)


@pytest.mark.parametrize("stop_tokens, length_penalty, early_stopping", [
    ((), 1.0, True),
    ((STOP,), 1.0, True),
    ((STOP,), 0.0, False),
    ((STOP,), 2.0, False),
    ((STOP,), -1.0, True),
])
def test_beam_search_finds_the_best_sequence_of_all(stop_tokens, length_penalty, early_stopping):
    """16 beams over a 4-token vocabulary keep every prefix of 3 steps, so the search is exhaustive
    and must return the sequence with the best length-penalised score."""
    gen = Generator(model(), LetterTokenizer(4))
    settings = GenerationSettings(strategy="beam", beams=16, max_new_tokens=3, overflow="error",
                                  stop_tokens=stop_tokens, length_penalty=length_penalty,
                                  early_stopping=early_stopping, num_samples=3)
    found = gen.generate(PROMPTS, settings)
    for prompt, completions in zip(PROMPTS, found):
        seqs = every_sequence(3, 4, stop_tokens)
        table = prefix_log_probs(tuple(prompt.tolist()))
        scores = np.array([table[s] / len(s) ** length_penalty for s in seqs])
        order = np.argsort(-scores)
        best = completions[0]
        ended = (STOP,) if best.finish_reason == "stop" else ()
        assert tuple(best.tokens.tolist()) + ended == seqs[order[0]]
        np.testing.assert_allclose([c.score for c in completions], scores[order[:3]], rtol=1e-4)


def test_the_search_beats_greedy_somewhere():
    gen = Generator(model(), LetterTokenizer(4))
    beam = GenerationSettings(strategy="beam", beams=16, max_new_tokens=3, overflow="error", length_penalty=0.0)
    greedy = GenerationSettings(strategy="greedy", max_new_tokens=3, overflow="error")
    found = [c[0].tokens.tolist() for c in gen.generate(PROMPTS, beam)]
    plain = [c[0].tokens.tolist() for c in gen.generate(PROMPTS, greedy)]
    assert found != plain


def test_one_beam_is_greedy_also_when_the_window_slides():
    gen = Generator(random_gpt(), LetterTokenizer(11))
    prompt = [np.array([1, 2, 3, 4, 5])]
    greedy = gen.generate(prompt, SLIDING)[0][0]
    beam = gen.generate(prompt, dataclasses.replace(SLIDING, strategy="beam", beams=1))[0][0]
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)
    stop = int(greedy.tokens[20])
    stopped = dataclasses.replace(SLIDING, stop_tokens=(stop,))
    greedy = gen.generate(prompt, stopped)[0][0]
    beam = gen.generate(prompt, dataclasses.replace(stopped, strategy="beam", beams=1))[0][0]
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)
    assert beam.finish_reason == greedy.finish_reason == "stop"


def test_beam_settings_are_checked():
    gen = Generator(random_gpt(vocab_size=4), LetterTokenizer(4))
    with pytest.raises(UserError, match="beams=0"):
        gen.generate(PROMPTS, GenerationSettings(strategy="beam", beams=0))
    with pytest.raises(UserError, match="num_samples=3 is more than beams=2"):
        gen.generate(PROMPTS, GenerationSettings(strategy="beam", beams=2, num_samples=3))
    with pytest.raises(UserError, match="streaming gives one"):
        next(gen.stream(PROMPTS[0], GenerationSettings(strategy="beam")))


def tiny_model(vocab: int):
    c = get_config("smoke")
    c.model.n_layer, c.model.n_embd, c.model.n_head, c.model.block_size = 1, 16, 2, 8
    return build_model(c.model, vocab, nnx.Rngs(3)), c.model.block_size


def test_one_beam_is_greedy_decoding():
    model, block = tiny_model(13)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    prompts = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    out = beam_decode(graphdef, params, rest, prompts, 12, block, beams=1)  # slides past the window
    for prompt, row in zip(prompts, out):
        np.testing.assert_array_equal(row, generate_uncached(graphdef, params, rest, prompt, 12, block, 0.0))


def test_wide_beam_finds_the_most_likely_continuation():
    vocab = 5
    model, block = tiny_model(vocab)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    prompt = np.array([[2, 4]], np.int32)
    pairs = np.array(list(itertools.product(range(vocab), repeat=2)), np.int32)
    seqs = np.concatenate([np.repeat(prompt, len(pairs), axis=0), pairs], axis=1)
    logp = jax.nn.log_softmax(model(jnp.asarray(seqs[:, :-1])), axis=-1)
    totals = logp[np.arange(len(pairs)), 1, pairs[:, 0]] + logp[np.arange(len(pairs)), 2, pairs[:, 1]]
    best = tuple(pairs[int(jnp.argmax(totals))])
    found = beam_decode(graphdef, params, rest, prompt, 2, block, beams=vocab)[0]
    assert tuple(found) == best
