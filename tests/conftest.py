"""Shared fixtures: tiny corpora and configs that run in seconds, with a private token cache."""

from __future__ import annotations

import pytest

from configs.base import get_config

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40


def write_corpus(d):
    """Three small text files in a new directory d."""
    d.mkdir()
    for i in range(3):
        (d / f"part{i}.txt").write_text(TEXT + f"Part {i} ends here.\n", encoding="utf-8")
    return d


def tiny(root, corpus):
    """The smoke config on the tiny corpus, with its cache under root."""
    c = get_config("smoke")
    c.data.source = "files"
    c.data.path = str(corpus)
    c.data.cache_dir = str(root / "cache")
    c.data.test_fraction = 0.1
    c.model.block_size = 16
    c.train.steps, c.train.steps_per_call = 10, 5
    c.train.eval_every = c.train.checkpoint_every = c.train.log_every = 5
    c.sample.prompts = ["First"]
    c.sample.max_new_tokens = 10
    return c


@pytest.fixture
def corpus_dir(tmp_path):
    """A directory of three small text files."""
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def tiny_config(tmp_path, corpus_dir):
    """The smoke config on the tiny corpus, with its cache inside the test's temp dir."""
    return tiny(tmp_path, corpus_dir)


@pytest.fixture(scope="session")
def chat_workdir(tmp_path_factory) -> str:
    """A workdir named "tiny" of the tiny config trained a few steps with a BPE vocabulary (so it
    has the chat role tokens) and a 64-token context; shared by the tests that serve a model."""
    from gptjax.train.job import run

    root = tmp_path_factory.mktemp("chat_model")
    c = tiny(root, write_corpus(root / "corpus"))
    c.data.tokenizer, c.data.vocab_size = "bpe", 300
    c.model.block_size = 64
    run(c, str(root / "tiny"))
    return str(root / "tiny")
