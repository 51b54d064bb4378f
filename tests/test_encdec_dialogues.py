"""The encoder-decoder on the plays' (speech, reply) pairs (data.pairs=dialogues), on eight tiny plays."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from configs.base import get_config
from gptjax.data import dialogues, sources, splits
from gptjax.data.cleaning import clean
from gptjax.data.prepare import prepare
from gptjax.data.sources import Document
from gptjax.errors import UserError
from gptjax.eval.scoring import evaluate
from gptjax.model import build_model
from gptjax.train import config_checks, model_steps
from gptjax.train import mesh as mesh_lib
from gptjax.train.batch_source import PairBatches, batch_source

WORDS = "good my lord what news of the king none at all speak again I pray thee sir come hither".split()
SRC_LEN, BLOCK = 16, 32  # targets: BLOCK - SRC_LEN tokens


def tiny_play(i: int) -> str:
    """Scenes of two speakers alternating; speeches of one or two lines, some longer than a row holds."""
    rng = np.random.default_rng(i)
    scenes = []
    for s in range(2 + i % 3):
        speeches = []
        for k in range(4 + s):
            lines = [" ".join(rng.choice(WORDS, int(rng.integers(5, 12)))).capitalize() + "."
                     for _ in range(int(rng.integers(1, 3)))]
            speeches.append(f"**{('KING', 'LORD')[k % 2]}**\n" + "\n".join(lines) + "\n")
        scenes.append(f"### SCENE {s + 1}.\n\n" + "\n".join(speeches))
    return f"# Play {i}\n\n## ACT I\n\n" + "\n".join(scenes)


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    """A tiny encoder-decoder on data.pairs=dialogues, the plays replaced by eight tiny ones."""
    docs = [Document(f"tiny/p{i}.md", tiny_play(i)) for i in range(8)]
    monkeypatch.setattr(sources, "plays", lambda markdown=True: iter(docs))
    monkeypatch.setattr(dialogues, "plays", lambda markdown=True: iter(docs))
    c = get_config("smoke")
    c.data.cache_dir = str(tmp_path / "cache")
    c.data.split, c.data.val_fraction, c.data.test_fraction = "documents", 0.2, 0.2
    c.data.pairs, c.data.src_len = "dialogues", SRC_LEN
    c.model.kind, c.model.n_encoder_layer, c.model.n_layer, c.model.block_size = "encdec", 1, 1, BLOCK
    c.train.steps, c.train.steps_per_call, c.train.eval_every, c.train.log_every = 4, 2, 2, 2
    c.train.checkpoint_every, c.train.warmup_steps = 4, 1
    c.eval.batch_size = 7  # divides no split's pair count here: the last batch is padded with rows of weight 0
    c.sample.prompts = []
    return c


def source_of(c) -> tuple:
    corpus = prepare(c.data, c.seed, c.model.block_size)
    mesh = mesh_lib.build_mesh(c.mesh)
    return corpus, batch_source(c, corpus, mesh_lib.batch_sharding(mesh, leading=2), mesh_lib.batch_sharding(mesh))


def test_a_few_steps_train_and_evaluate_on_the_replies(cfg, tmp_path):
    from gptjax.train.job import run

    workdir = str(tmp_path / "run")
    summary = run(cfg, workdir)
    assert summary["steps"] == cfg.train.steps and summary["stop_reason"] == "completed"
    assert np.isfinite(summary["val_bpc"]) and np.isfinite(summary["test_bpc"])
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    assert [r["step"] for r in logged if "val_loss" in r] == [2, 4]
    with open(os.path.join(workdir, "report.md")) as f:
        report = f.read()
    assert "| val_bpc |" in report and "-gram" not in report  # n-grams count text, not replies


def test_train_batches_are_a_function_of_seed_and_step(cfg):
    corpus, source = source_of(cfg)
    assert isinstance(source, PairBatches)
    calls = jax.device_get(source.train(3, 2, 8))
    assert calls.src.shape == (2, 1, 8, SRC_LEN) and calls.tgt_out.shape == (2, 1, 8, BLOCK - SRC_LEN)
    later = jax.device_get(source_of(cfg)[1].train(4, 1, 8))  # a fresh source, as a resumed run has
    for a, b in zip(calls, later):
        np.testing.assert_array_equal(a[1], b[0])
    assert not np.array_equal(calls.src[0], calls.src[1])
    cfg.train.grad_accum = 2  # the same rows, as two micro-batches
    halves = jax.device_get(source_of(cfg)[1].train(3, 1, 8))
    assert halves.src.shape == (1, 2, 4, SRC_LEN)
    for a, b in zip(calls, halves):
        np.testing.assert_array_equal(a[0].reshape(8, -1), b[0].reshape(8, -1))
    # Every row is a train pair: its weighted targets start a train reply, read after the start token.
    targets = {tuple(t[:BLOCK - SRC_LEN]) for _, t in source.pairs["train"]}
    start = corpus.tokenizer.encode("\n")[0]
    for tgt_in, tgt_out, w in zip(calls.tgt_in[0, 0], calls.tgt_out[0, 0], calls.tgt_weights[0, 0]):
        real = tgt_out[w > 0]
        assert tuple(real) in targets
        np.testing.assert_array_equal(tgt_in[:len(real)], np.concatenate([[start], real[:-1]]))


def test_pairs_split_as_the_text_does_under_documents(cfg):
    corpus, source = source_of(cfg)
    exchanges = dialogues.split_exchanges(cfg.data, cfg.seed)
    cleaned, _ = clean(list(sources.plays()), cfg.data.clean)
    text = splits.split_text(cleaned, "documents", cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    for split in ("val", "test"):
        assert exchanges[split] and len(source.pairs[split]) == len(exchanges[split])
        assert all(e.reply in text[split] and e.reply not in text["train"] for e in exchanges[split])


def test_evaluation_scores_every_held_out_reply_once(cfg):
    corpus, source = source_of(cfg)
    exchanges = dialogues.split_exchanges(cfg.data, cfg.seed)
    tgt_len = BLOCK - SRC_LEN
    expected = {split: sum(min(len(corpus.tokenizer.encode(e.reply + "\n\n")), tgt_len) for e in exchanges[split])
                for split in ("val", "test")}
    assert any(len(corpus.tokenizer.encode(e.reply)) > tgt_len for e in exchanges["val"])  # some replies are cut
    for split, want in expected.items():
        assert len(exchanges[split]) % cfg.eval.batch_size
        scored = jax.device_get(list(source.whole_split(split)))
        assert sum(float(w.sum()) for _, w in scored) == want
        rows = sorted(tuple(b.tgt_out[r][b.tgt_weights[r] > 0]) for b, _ in scored for r in range(len(b.src))
                      if b.tgt_weights[r].any())
        assert rows == sorted(tuple(t[:tgt_len]) for _, t in source.pairs[split])
    graphdef, params, rest = nnx.split(build_model(cfg.model, corpus.tokenizer.vocab_size, nnx.Rngs(0)), nnx.Param,
                                       ...)
    step = model_steps.eval_step(cfg, graphdef, corpus.token_bytes, corpus.token_chars)
    scores = evaluate(step, params, rest, source.whole_split("val"))
    assert scores["tokens"] == expected["val"] and np.isfinite(scores["bits_per_char"])
    assert len(source.validation()) == cfg.train.eval_batches  # the first batches of the whole split


@pytest.mark.parametrize("key, value, message", [
    ("model.kind", "gpt", "data.pairs='dialogues' feeds model.kind=encdec only"),
    ("data.src_len", 0, "data.src_len=0 must be between 0 and model.block_size=32"),
    ("data.src_len", BLOCK, f"data.src_len={BLOCK} must be between"),
    ("data.source", "files", "set data.source=plays"),
    ("data.loader", "grain", "needs data.loader=direct"),
    ("data.train_chars", 1000, "set data.train_chars=0"),
])
def test_bad_combinations_are_refused_in_one_line(cfg, key, value, message):
    config_checks.check_config(cfg)  # the fixture's own config is fine
    section, name = key.split(".")
    cfg[section][name] = value
    with pytest.raises(UserError, match=message) as caught:
        config_checks.check_config(cfg)
    assert "\n" not in str(caught.value)
