"""Shared fixtures: tiny corpora and configs that run in seconds, with a private token cache."""

from __future__ import annotations

import pytest

from configs.default import get_config

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40


@pytest.fixture
def corpus_dir(tmp_path):
    """A directory of three small text files."""
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(3):
        (d / f"part{i}.txt").write_text(TEXT + f"Part {i} ends here.\n", encoding="utf-8")
    return d


@pytest.fixture
def tiny_config(tmp_path, corpus_dir):
    """The smoke config on the tiny corpus, with its cache inside the test's temp dir."""
    c = get_config("smoke")
    c.data.source = "files"
    c.data.path = str(corpus_dir)
    c.data.cache_dir = str(tmp_path / "cache")
    c.data.test_fraction = 0.1
    c.model.block_size = 16
    c.train.steps, c.train.steps_per_call = 10, 5
    c.train.eval_every = c.train.checkpoint_every = c.train.log_every = 5
    c.sample.prompts = ["First"]
    c.sample.max_new_tokens = 10
    return c
