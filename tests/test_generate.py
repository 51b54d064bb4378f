"""Cached decoding against full recomputation, batching, sampling knobs, overflow, stops, streaming."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gptjax.data.tokenizers import BPETokenizer
from gptjax.errors import UserError
from gptjax.generate import generator as generator_lib
from gptjax.generate import logits as logits_lib
from gptjax.generate.generator import Generator
from gptjax.generate.incremental_text import IncrementalText
from gptjax.generate.reference import generate_uncached
from gptjax.generate.settings import GenerationSettings
from gptjax.model.gpt import GPT, GPTConfig


class LetterTokenizer:
    """Id i is the i-th byte string given (default: letters a, b, c, ...)."""

    kind = "bpe"

    def __init__(self, vocab_size: int, pieces: list[bytes] | None = None, special_ids: dict | None = None):
        self.vocab_size = vocab_size
        self.pieces = pieces or [bytes([97 + i]) for i in range(vocab_size)]
        self.special_ids = special_ids or {}

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.pieces.index(c.encode()) for c in text], np.int32)

    def decode(self, ids) -> str:
        return b"".join(self.pieces[int(i)] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self.pieces[token_id]


def abstract_gpt(**config) -> GPT:
    """The GPT's structure without its initialisers (they would compile once per shape)."""
    return nnx.eval_shape(lambda: GPT(GPTConfig(**config), rngs=nnx.Rngs(0)))


def with_params(model: GPT, make) -> GPT:
    """The model with each parameter replaced by make(path, shape)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map_with_path(lambda path, x: jnp.asarray(make(jax.tree_util.keystr(path), x.shape),
                                                                 jnp.float32), params)
    return nnx.merge(graphdef, params, rest)


def random_gpt(vocab_size: int = 11, block_size: int = 16, pos_encoding: str = "learned", seed: int = 2) -> GPT:
    """A tiny GPT with weights large enough that its greedy output depends on the context."""
    rng = np.random.default_rng(seed)
    model = abstract_gpt(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16,
                         pos_encoding=pos_encoding)

    def make(path: str, shape) -> np.ndarray:
        if "norm" in path:
            return np.ones(shape) if "scale" in path else np.zeros(shape)
        return rng.standard_normal(shape)

    return with_params(model, make)


def bigram_gpt(successor: list[int], block_size: int = 64) -> GPT:
    """A GPT that continues token t with successor[t], almost surely (its blocks add nothing)."""
    v = len(successor)
    model = abstract_gpt(vocab_size=v, block_size=block_size, n_layer=1, n_head=1, n_embd=v, norm="none",
                         pos_encoding="none", tie_embeddings=False, bias=False)

    def make(path: str, shape) -> np.ndarray:
        if "wte" in path:
            return np.eye(v)
        if "lm_head" in path:
            return 30.0 * np.eye(v)[successor]
        return np.zeros(shape) if "c_proj" in path else np.ones(shape)

    return with_params(model, make)


def uncached(model: GPT, prompts, new: int) -> np.ndarray:
    """The project's reference decoder: greedy, recomputing the last window for every token."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return generate_uncached(graphdef, params, rest, np.asarray(prompts, np.int32), new, model.cfg.block_size,
                             temperature=0.0)


def full_recomputation(model: GPT, prompts, new: int) -> np.ndarray:
    """Greedy tokens, each from an uncompiled forward pass over the last window of every row
    (fixed-shape windows, so the eager ops compile once for all tests)."""
    width = model.cfg.block_size
    seqs = [list(p) for p in prompts]
    for _ in range(new):
        windows = np.zeros((len(seqs), width), np.int32)
        for row, seq in enumerate(seqs):
            windows[row, :min(len(seq), width)] = seq[-width:]
        logits = np.asarray(model(jnp.asarray(windows)))
        for row, seq in enumerate(seqs):
            seq.append(int(np.argmax(logits[row, min(len(seq), width) - 1])))
    return np.array([seq[len(p):] for seq, p in zip(seqs, prompts)])


# Tests share these shapes (batch bucket, prompt bucket 8, 16 new-token slots), so they share compiles.
WITHIN = GenerationSettings(strategy="greedy", max_new_tokens=11, overflow="error")
SLIDING = GenerationSettings(strategy="greedy", max_new_tokens=30, sliding_keep=16)


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "rope", "none"])
def test_cached_greedy_matches_full_recomputation(pos_encoding):
    model = random_gpt(pos_encoding=pos_encoding)
    prompts = [np.array([1, 2, 3, 4, 5]), np.array([7, 3])]
    cached = Generator(model, LetterTokenizer(11)).generate(prompts, WITHIN)
    reference = full_recomputation(model, prompts, 11)
    for row, completions in enumerate(cached):
        np.testing.assert_array_equal(completions[0].tokens, reference[row])
    assert len(set(reference[0].tolist())) > 1  # the check is not trivially met


def test_sliding_the_whole_window_matches_the_reference_decoder_past_the_context():
    """Keeping the whole window re-prefills it every token once the context is full, which is
    exactly what full recomputation computes; the first 11 tokens still come from the cache."""
    model = random_gpt()
    prompts = np.array([[1, 2, 3, 4, 5], [7, 3, 9, 9, 0]])
    cached = Generator(model, LetterTokenizer(11)).generate(list(prompts), SLIDING)
    reference = uncached(model, prompts, 30)
    for row, completions in enumerate(cached):
        np.testing.assert_array_equal(completions[0].tokens, reference[row])


def test_batched_left_padded_prompts_match_each_prompt_alone():
    """Within the context, and sliding: prompts of 1 and 5 tokens decoding 30 tokens in a 16-token
    context slide at different steps, keeping different numbers of tokens."""
    gen = Generator(random_gpt(), LetterTokenizer(11))
    prompts = [np.array([3]), np.array([1, 2, 3, 4, 5])]
    for settings in (WITHIN, SLIDING):
        together = gen.generate(prompts, settings)
        for prompt, batched in zip(prompts, together):
            alone = gen.generate([prompt], settings)[0][0]
            np.testing.assert_array_equal(batched[0].tokens, alone.tokens)
            assert batched[0].finish_reason == "length"
            assert len(alone.tokens) == settings.max_new_tokens


def test_prefill_marks_prompt_tokens_seen_but_not_padding():
    gen = Generator(random_gpt(), LetterTokenizer(11))
    _, st = gen.begin([np.array([4, 6, 4])], WITHIN.checked(11, 16))
    assert np.flatnonzero(np.asarray(st.seen[0])).tolist() == [4, 6]


def test_top_k_one_equals_greedy_and_frequency_penalty_stops_repeats():
    gen = Generator(random_gpt(seed=4), LetterTokenizer(11))
    prompt = [np.array([2])]
    plain = gen.generate(prompt, WITHIN)[0][0].tokens
    penalised = dataclasses.replace(WITHIN, frequency_penalty=1e3)
    greedy = gen.generate(prompt, penalised)[0][0].tokens
    sampled = gen.generate(prompt, dataclasses.replace(penalised, strategy="sample", top_k=1, seed=3))[0][0]
    np.testing.assert_array_equal(sampled.tokens, greedy)
    assert len(set(plain.tolist())) < 11
    assert sorted(greedy.tolist()) == list(range(11))


def test_sampling_depends_on_seed_only():
    gen = Generator(random_gpt(), LetterTokenizer(11))
    settings = dataclasses.replace(WITHIN, strategy="sample", num_samples=2, temperature=2.0)
    first = gen.generate([np.array([1, 2])], settings)[0]
    again = gen.generate([np.array([1, 2])], settings)[0]
    other = gen.generate([np.array([1, 2])], dataclasses.replace(settings, seed=1))[0]
    assert [c.tokens.tolist() for c in first] == [c.tokens.tolist() for c in again]
    assert first[0].tokens.tolist() != first[1].tokens.tolist()
    assert [c.tokens.tolist() for c in first] != [c.tokens.tolist() for c in other]


def test_the_compiled_loops_do_not_hash_the_whole_model_on_every_call(monkeypatch):
    """jax hashes a static argument on every call; the model's GraphDef is hashed once, when the
    Generator is made, and generation gives the same tokens as with the GraphDef itself."""
    model, tokenizer = random_gpt(), LetterTokenizer(11)
    gen = Generator(model, tokenizer)
    assert hash(gen.graphdef) == hash(nnx.split(model)[0])
    hashed = []
    monkeypatch.setattr(nnx.GraphDef, "__hash__", lambda self: hashed.append(self) or 0)
    settings = dataclasses.replace(WITHIN, strategy="sample", num_samples=2)
    first = gen.generate([np.array([1, 2])], settings)[0]
    again = gen.generate([np.array([1, 2])], settings)[0]
    assert hashed == []
    monkeypatch.undo()
    plain = Generator(model, tokenizer)
    plain.graphdef = nnx.split(model)[0]
    assert [c.tokens.tolist() for c in first] == [c.tokens.tolist() for c in again] == \
        [c.tokens.tolist() for c in plain.generate([np.array([1, 2])], settings)[0]]


def test_penalties_and_truncation_on_logits():
    logits = jnp.array([[2.0, -1.0, 0.5]])
    seen = jnp.array([[True, True, False]])
    counts = jnp.array([[0, 3, 1]])
    plan, knobs = logits_lib.plan_and_knobs(GenerationSettings(repetition_penalty=2.0, frequency_penalty=0.5), 3)
    np.testing.assert_allclose(logits_lib.penalize(logits, seen, counts, plan, knobs), [[1.0, -3.5, 0.0]])
    probs = jnp.array([[0.5, 0.25, 0.15, 0.1]])
    for top_p, kept in ((0.5, 1), (0.6, 2), (0.75, 2), (0.76, 3), (1.0, 4)):
        plan, knobs = logits_lib.plan_and_knobs(GenerationSettings(top_p=top_p), 4)
        out = logits_lib.truncate(jnp.log(probs), plan, knobs)
        assert int(jnp.isfinite(out).sum()) == kept, top_p
    plan, knobs = logits_lib.plan_and_knobs(GenerationSettings(min_p=0.35), 4)
    assert jnp.isfinite(logits_lib.truncate(jnp.log(probs), plan, knobs)).tolist() == [[True, True, False, False]]
    plan, knobs = logits_lib.plan_and_knobs(GenerationSettings(top_k=2, temperature=0.5), 4)
    np.testing.assert_allclose(logits_lib.truncate(jnp.log(probs), plan, knobs)[0, :2], 2 * jnp.log(probs[0, :2]))


# Every bigram test decodes 20 tokens with a 64-token context: one layout, no sliding.
CYCLE = [1, 2, 3, 4, 5, 0]  # a b c d e f a b ...
BIGRAM = GenerationSettings(strategy="greedy", max_new_tokens=20)


def test_draw_samples_the_softmax_and_never_a_masked_id():
    from scipy import stats

    logits = jnp.log(jnp.array([0.0, 0.5, 0.3, 0.0, 0.2, 0.0]))  # ids 0, 3 and 5 masked (-inf)
    n = 20000
    ids = np.asarray(jax.vmap(lambda k: logits_lib.draw(k, logits))(jax.random.split(jax.random.key(0), n)))
    counts = np.bincount(ids, minlength=6)
    assert counts[[0, 3, 5]].sum() == 0
    assert stats.chisquare(counts[[1, 2, 4]], n * np.array([0.5, 0.3, 0.2])).pvalue > 1e-3
    batch = jnp.stack([logits, jnp.log(jnp.array([1.0, 0, 0, 0, 0, 0]))])  # rows draw independently
    assert np.asarray(logits_lib.draw(jax.random.key(1), batch))[1] == 0


def test_draw_finds_ids_in_every_block():
    from scipy import stats

    probs = np.zeros(200)  # four blocks of ids, the last one partly padding
    probs[[3, 63, 64, 130, 199]] = [0.1, 0.2, 0.3, 0.15, 0.25]
    n = 20000
    ids = np.asarray(jax.vmap(lambda k: logits_lib.draw(k, jnp.log(jnp.asarray(probs))))(
        jax.random.split(jax.random.key(2), n)))
    counts = np.bincount(ids, minlength=200)
    assert counts.sum() == counts[[3, 63, 64, 130, 199]].sum()
    assert stats.chisquare(counts[[3, 63, 64, 130, 199]], n * probs[[3, 63, 64, 130, 199]]).pvalue > 1e-3


def test_first_max_and_cumulative_sum_equal_the_numpy_reductions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2, 200)).astype(np.float32)  # 200 ids: not a whole number of blocks
    x[0, 0, [7, 150]] = 9.0  # a tie: the first index wins, as with argmax
    x[1, 1] = -np.inf        # a fully masked row
    x[2, 0, :50] = -np.inf
    np.testing.assert_array_equal(np.asarray(logits_lib.first_max(jnp.asarray(x))), np.argmax(x, axis=-1))
    probs = rng.random((3, 2, 200)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(logits_lib.cumulative_sum(jnp.asarray(probs))), np.cumsum(probs, -1),
                               rtol=1e-5)
    one = np.ones((1, logits_lib.BLOCK), np.float32)  # exactly one block
    np.testing.assert_array_equal(np.asarray(logits_lib.cumulative_sum(jnp.asarray(one)))[0],
                                  np.arange(1, logits_lib.BLOCK + 1))


def test_stop_tokens_and_stop_strings_end_the_completion():
    gen = Generator(bigram_gpt(CYCLE), LetterTokenizer(6))
    by_token = gen.generate([np.array([0])], dataclasses.replace(BIGRAM, stop_tokens=(4,)))[0][0]
    assert (by_token.text, by_token.finish_reason, by_token.tokens.tolist()) == ("bcd", "stop", [1, 2, 3])
    by_string = gen.generate([np.array([0]), np.array([2])], dataclasses.replace(BIGRAM, stop_strings=("fa",)))
    assert [(c[0].text, c[0].finish_reason) for c in by_string] == [("bcde", "stop"), ("de", "stop")]
    unstopped = gen.generate([np.array([0])], BIGRAM)[0][0]
    assert (unstopped.text, unstopped.finish_reason) == ("bcdefa" * 3 + "bc", "length")


def test_prompt_longer_than_context_is_refused_or_slid():
    gen = Generator(random_gpt(block_size=16), LetterTokenizer(11))
    long = np.arange(20) % 11
    with pytest.raises(UserError, match="context of 16 tokens"):
        gen.generate([long], dataclasses.replace(SLIDING, overflow="error"))
    with pytest.raises(UserError, match="overflow=sliding"):
        gen.generate([long[:6]], WITHIN)
    slid = gen.generate([long], SLIDING)[0][0]
    np.testing.assert_array_equal(slid.tokens, gen.generate([long[-16:]], SLIDING)[0][0].tokens)
    assert len(slid.tokens) == 30


@pytest.mark.parametrize("changes, message", [
    (dict(strategy="nucleus"), "strategy 'nucleus' is unknown"),
    (dict(temperature=-0.5), "temperature=-0.5 is negative"),
    (dict(top_p=0.0), r"top_p=0.0 is outside \(0, 1\]"),
    (dict(top_p=1.5), r"top_p=1.5 is outside \(0, 1\]"),
    (dict(strategy="beam", beams=0), "at least 1 beam"),
    (dict(overflow="wrap"), "overflow 'wrap' is unknown"),
    (dict(max_new_tokens=0), "at least 1 new token"),
    (dict(stop_tokens=(99,)), "stop token 99"),
    (dict(strategy="greedy", num_samples=2), "same text each time"),
    (dict(sliding_keep=17), r"sliding_keep=17 is outside \[1, 16\]"),
])
def test_bad_settings_are_refused(changes, message):
    gen = Generator(random_gpt(), LetterTokenizer(11))
    with pytest.raises(UserError, match=message):
        gen.generate([np.array([1])], GenerationSettings(**changes))


def test_char_prompts_with_unknown_characters_are_refused_by_name():
    from gptjax.data.tokenizers import CharTokenizer

    gen = Generator(random_gpt(vocab_size=4), CharTokenizer("abc", unknown="replace"))
    np.testing.assert_array_equal(gen.encode("cab"), [3, 1, 2])
    with pytest.raises(UserError, match=r"'é' \(U\+00E9\)"):
        gen.encode("abé")
    with pytest.raises(UserError, match="prompt is empty"):
        gen.generate([gen.encode("")], WITHIN)


# A stream over tokens that each hold part of a character: 中 = E4 B8 AD, 😀 = F0 9F 98 80.
SPLIT_PIECES = [b"\xe4\xb8", b"\xad", b"\xf0", b"\x9f\x98", b"\x80", b"!"]


def test_stream_never_yields_part_of_a_character(monkeypatch):
    monkeypatch.setattr(generator_lib, "STREAM_CHUNK", 1)
    gen = Generator(bigram_gpt(CYCLE), LetterTokenizer(6, SPLIT_PIECES))
    pieces = list(gen.stream(np.array([5]), BIGRAM))
    assert "".join(pieces) == "中😀!" * 3 + "中"
    assert all(p in ("中", "😀", "!") for p in pieces)
    assert gen.generate([np.array([5])], BIGRAM)[0][0].text == "".join(pieces)


def test_stream_holds_back_a_possible_stop_string(monkeypatch):
    monkeypatch.setattr(generator_lib, "STREAM_CHUNK", 1)
    gen = Generator(bigram_gpt(CYCLE), LetterTokenizer(6, SPLIT_PIECES))
    pieces = list(gen.stream(np.array([5]), dataclasses.replace(BIGRAM, stop_strings=("!中😀!",))))
    assert "".join(pieces) == "中😀"


def test_bpe_pieces_of_chinese_and_emoji_decode_whole_characters():
    tok = BPETokenizer.train(["hello world, plain ascii text"] * 3, vocab_size=270)
    text = "中文 ok 😀!"
    ids = tok.encode(text)
    assert len(ids) > len(text)  # characters really are split over tokens
    stream = IncrementalText(tok)
    pieces = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)
    assert all(p == "" or p.encode().decode() == p for p in pieces)
    assert len([p for p in pieces if p]) < len(ids)  # some tokens had to wait for the rest of a character


# ----------------------------------------------------------------------------- the command line


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> str:
    """A workdir whose model loads as a tiny char GPT (loading checkpoints is tested with training)."""
    from gptjax.data.tokenizers import CharTokenizer

    model = random_gpt(vocab_size=4, seed=3)
    monkeypatch.setattr("gptjax.workdir.load_model",
                        lambda path, which="best": (model, CharTokenizer("abc", unknown="replace"), None))
    return str(tmp_path)


def generate_cli(capsys, *args: str) -> tuple[int, str, str]:
    from gptjax.cli.generate import main

    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("flags, message", [
    (["--strategy", "nucleus"], "strategy 'nucleus' is unknown"),
    (["--temperature", "-1"], "temperature=-1.0 is negative"),
    (["--top_p", "0"], r"top_p=0.0 is outside (0, 1]"),
    (["--top_p", "1.5"], r"top_p=1.5 is outside (0, 1]"),
    (["--strategy", "beam", "--beams", "0"], "beams=0"),
])
def test_cli_refuses_bad_settings_before_loading(capsys, tmp_path, flags, message):
    code, _, err = generate_cli(capsys, "--workdir", str(tmp_path), "--prompt", "x", *flags)
    assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err


def test_cli_refuses_a_workdir_without_a_model(capsys, tmp_path):
    code, _, err = generate_cli(capsys, "--workdir", str(tmp_path), "--prompt", "x")
    assert code == 2 and "holds no trained model" in err


def test_cli_streams_one_completion_and_writes_jsonl(capsys, tmp_path, workdir):
    code, out, _ = generate_cli(capsys, "--workdir", workdir, "--prompt", "abc", "--strategy", "greedy",
                                "--max_new_tokens", "5", "--overflow", "error")
    assert code == 0 and out.startswith("abc") and out.endswith("\n") and len(out) > len("abc\n")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ab\nc\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    code, _, _ = generate_cli(capsys, "--workdir", workdir, "--prompts_file", str(prompts), "--strategy", "beam",
                              "--beams", "16", "--num_samples", "2", "--max_new_tokens", "3", "--overflow", "error",
                              "--output", str(output))
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert code == 0 and [(r["prompt"], r["sample"]) for r in records] == [("ab", 0), ("ab", 1), ("c", 0), ("c", 1)]
    assert records[0]["score"] >= records[1]["score"] and all(r["tokens"] == 3 for r in records)


def test_cli_names_a_prompt_character_outside_the_vocabulary(capsys, workdir):
    code, _, err = generate_cli(capsys, "--workdir", workdir, "--prompt", "ab中")
    assert code == 2 and "'中' (U+4E2D)" in err
