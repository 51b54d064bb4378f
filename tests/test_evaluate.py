import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs.base import get_config
from gptjax.baselines.ngram import ngram_baseline
from gptjax.data.prepare import prepare
from gptjax.data.tokenizers import CharTokenizer
from gptjax.errors import UserError
from gptjax.eval import continuation
from gptjax.eval.heldout import compare, evaluate_ngram, evaluate_workdir
from gptjax.train.job import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
        "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n") * 60


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny GPT trained for a few steps on a small text; (workdir, config, summary)."""
    root = tmp_path_factory.mktemp("evaluate")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    c = get_config("smoke")
    c.data.source, c.data.path, c.data.cache_dir = "files", str(root / "text.txt"), str(root / "cache")
    c.data.test_fraction = 0.1
    c.model.block_size = 16
    c.train.steps, c.train.steps_per_call = 10, 5
    c.train.eval_every = c.train.checkpoint_every = c.train.log_every = 5
    c.eval.max_tokens = 300
    c.sample.prompts, c.sample.max_new_tokens = ["ROMEO"], 4
    workdir = str(root / "run")
    return workdir, c, run(c, workdir)


def test_scores_a_split_as_the_training_job_did(trained):
    workdir, c, summary = trained
    result = evaluate_workdir(workdir, "test", max_tokens=c.eval.max_tokens)
    assert result["bits_per_char"] == pytest.approx(summary["test_bpc"], rel=1e-6)
    assert result["loss"] == pytest.approx(summary["test_loss"], rel=1e-6)
    assert result["tokens"] == c.eval.max_tokens - 1
    with open(os.path.join(workdir, "eval_test.json")) as f:
        assert json.load(f)["bits_per_char"] == result["bits_per_char"]


def test_train_split_needs_force(trained):
    workdir, _, _ = trained
    with pytest.raises(UserError, match="--force"):
        evaluate_workdir(workdir, "train")
    with pytest.raises(UserError, match="negative"):
        evaluate_workdir(workdir, "val", max_tokens=-1)
    assert evaluate_workdir(workdir, "train", force=True, max_tokens=100)["tokens"] == 99


def test_continuation_task_reports_both_strategies(trained):
    workdir, _, _ = trained
    result = evaluate_workdir(workdir, "val", max_tokens=100, continuations=3, prefix_chars=20, continue_chars=12,
                              strategies=("greedy", "beam"), beams=3)
    task = result["continuation"]
    for strategy in ("greedy", "beam"):
        for key in ("bleu", "chrf", "distinct_1", "distinct_2", "repetition_rate"):
            assert np.isfinite(task[strategy][key])
    example = task["examples"][0]
    assert len(example["prefix"]) == 20 and len(example["reference"]) == 12 and len(example["greedy"]) == 12


def test_passages_are_evenly_spaced_prefix_and_true_continuation():
    text = "".join(chr(ord("a") + i % 26) for i in range(300))
    task = continuation.passages(text, CharTokenizer(text), 3, prefix_chars=10, continue_chars=5)
    assert task.prefixes == [text[0:10], text[142:152], text[285:295]]
    assert task.references == [text[10:15], text[152:157], text[295:300]]
    with pytest.raises(UserError, match="too few"):
        continuation.passages(text[:20], CharTokenizer(text), 3, prefix_chars=10, continue_chars=5)


def test_compare_refuses_per_token_figures_across_tokenizers():
    char = {"tokenizer": "aaa", "bits_per_token": 2.0, "bits_per_char": 2.0}
    bpe = {"tokenizer": "bbb", "bits_per_token": 6.0, "bits_per_char": 1.9}
    assert compare([char, bpe], "bits_per_char") == [2.0, 1.9]
    assert compare([char, dict(char, bits_per_token=2.5)], "bits_per_token") == [2.0, 2.5]
    with pytest.raises(UserError, match="different tokenizers"):
        compare([char, bpe], "bits_per_token")


def test_ngram_scores_the_targets_a_model_scores(trained):
    _, c, _ = trained
    corpus = prepare(c.data, c.seed)
    result = evaluate_ngram(c, 3, "test", max_tokens=c.eval.max_tokens)
    assert result["tokens"] == c.eval.max_tokens - 1 and result["model"] == "3-gram"
    whole = ngram_baseline(corpus, 3, "test")
    assert whole["tokens"] == corpus.tokens["test"].size - 1
    assert 0 < whole["bits_per_char"] < np.log2(corpus.tokenizer.vocab_size)
    with pytest.raises(UserError, match="--force"):
        evaluate_ngram(c, 3, "train")


def test_cli_writes_results_and_refuses_bad_input(trained):
    workdir, _, _ = trained
    cmd = [sys.executable, "-m", "gptjax.evaluate", "--workdir", workdir]
    ok = subprocess.run(cmd + ["--split", "val", "--max_tokens", "50"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "bits/char" in ok.stdout and os.path.exists(os.path.join(workdir, "eval_val.json"))
    bad = subprocess.run(cmd + ["--split", "train"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr

