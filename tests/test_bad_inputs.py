"""The bad-input matrix: every bad config value, corpus, prompt, checkpoint and workdir is one
`error:` line naming the problem, exit status 2, and leaves the workdir's files as they were.

Training runs in-process through the commands' `guarded` (the flag parser alone in a subprocess:
absl defines the config overrides once per process), generation through its `main`; each case works
on a copy of one trained workdir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from gptjax.cli import generate as generate_cli
from gptjax.cli import guarded
from gptjax.train.job import run
from tests.conftest import tiny, write_corpus
from tests.file_hashes import tree_hashes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def exit_code(fn) -> int:
    with pytest.raises(SystemExit) as e:
        fn()
    return e.value.code


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The root of a tiny trained run: root/run, its corpus root/corpus and token cache root/cache."""
    root = tmp_path_factory.mktemp("bad_inputs")
    run(tiny(root, write_corpus(root / "corpus")), str(root / "run"))
    return root


@pytest.fixture
def workdir(trained, tmp_path):
    """(workdir, corpus, config) of a copy of the trained run and its corpus (sharing its token cache)."""
    shutil.copytree(trained / "run", tmp_path / "run")
    shutil.copytree(trained / "corpus", tmp_path / "corpus")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    saved["data"]["path"] = str(tmp_path / "corpus")
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved, indent=2))
    return str(tmp_path / "run"), tmp_path / "corpus", tiny(trained, tmp_path / "corpus")


def damage_every_checkpoint(workdir: str, corpus) -> None:
    for parent, _, files in os.walk(os.path.join(workdir, "checkpoints")):
        for name in files:
            if name != "checksums.json" and os.path.getsize(os.path.join(parent, name)) > 1000:
                with open(os.path.join(parent, name), "r+b") as f:
                    f.seek(500)
                    f.write(b"\xff" * 16)


def empty_corpus(workdir: str, corpus) -> None:
    for p in corpus.iterdir():
        p.write_text("")


def remove_corpus(workdir: str, corpus) -> None:
    shutil.rmtree(corpus)


def edit_corpus(workdir: str, corpus) -> None:
    """New characters: a different tokenizer from the workdir's."""
    (corpus / "part0.txt").write_text("Zebra quixotic jukebox! " * 200, encoding="utf-8")


def lose_config(workdir: str, corpus) -> None:
    os.remove(os.path.join(workdir, "config.json"))


def setting(key: str, value):
    def change(config) -> None:
        section, name = key.split(".")
        config[section][name] = value
    return change


TRAIN_CASES = {  # name: (config change, file change, what the message names)
    "learning rate zero": (setting("train.learning_rate", 0.0), None, "train.learning_rate"),
    "keep no checkpoints": (setting("train.keep_checkpoints", 0), None, "train.keep_checkpoints"),
    "heads do not divide width": (setting("model.n_head", 3), None, "model.n_head"),
    "unknown norm": (setting("model.norm", "banana"), None, "model.norm"),
    "beta2 of one": (setting("train.beta2", 1.0), None, "train.beta2"),
    "negative steps": (setting("train.steps", -5), None, "train.steps"),
    "batch not divisible by accumulation": (setting("train.grad_accum", 3), None, "train.grad_accum"),
    "another model in the workdir": (setting("model.n_layer", 3), None, "model.n_layer"),
    "another corpus for the workdir": (setting("data.path", "/elsewhere"), None, "data.path"),
    "all checkpoints damaged": (None, damage_every_checkpoint, "no intact checkpoint"),
    "corpus emptied": (None, empty_corpus, "corpus is empty"),
    "corpus removed": (None, remove_corpus, "corpus"),
    "corpus changed under the workdir": (None, edit_corpus, "tokenizer"),
}


def one_error_line(err: str, message: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err[-2000:]
    assert "Traceback" not in err


@pytest.mark.parametrize("name", list(TRAIN_CASES))
def test_training_refuses_bad_input_in_one_line(workdir, name, capsys):
    path, corpus, config = workdir
    change_config, change_files, message = TRAIN_CASES[name]
    if change_config:
        change_config(config)
    if change_files:
        change_files(path, corpus)
    os.remove(os.path.join(path, "summary.json"))  # as if killed before the end: the run would resume
    before = tree_hashes(path)
    assert exit_code(lambda: guarded(lambda: run(config, path))) == 2
    one_error_line(capsys.readouterr().err, message)
    assert tree_hashes(path) == before


@pytest.mark.parametrize("flag, message", [("--config.train.stepz=5", "stepz"),
                                           ("--config=configs/nonexistent.py", "nonexistent")])
def test_bad_command_lines_are_one_line(workdir, flag, message):
    path = workdir[0]
    before = tree_hashes(path)
    proc = subprocess.run([sys.executable, "-m", "gptjax.main", "--config=configs/base.py:smoke", flag,
                           "--workdir", path], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    one_error_line(proc.stderr, message)
    assert tree_hashes(path) == before


def write_prompts(name: str, text: str):
    def change(workdir: str, corpus) -> str:
        path = os.path.join(os.path.dirname(workdir), name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path
    return change


GENERATE_CASES = {  # name: (flags, change returning a prompts file or None, what the message names)
    "no prompt": ([], None, "no prompt"),
    "prompts file missing": (["--prompts_file", "/nonexistent/prompts.txt"], None, "/nonexistent/prompts.txt"),
    "prompts jsonl without a prompt field": (["--prompts_file"], write_prompts("p.jsonl", '{"text": "x"}\n'),
                                             "line 1 is not a JSON object with a 'prompt'"),
    "prompts jsonl not json": (["--prompts_file"], write_prompts("q.jsonl", "First\n"), "line 1"),
    "negative temperature": (["--prompt", "First", "--temperature", "-1"], None, "temperature"),
    "workdir without a model": (["--prompt", "First"], lose_config, "no trained model"),
    "every checkpoint damaged": (["--prompt", "First"], damage_every_checkpoint, "no intact checkpoint"),
}


@pytest.mark.parametrize("name", list(GENERATE_CASES))
def test_generation_refuses_bad_input_in_one_line(workdir, name, capsys):
    path, corpus, _ = workdir
    flags, change, message = GENERATE_CASES[name]
    flags = list(flags)
    if change:
        made = change(path, corpus)
        if made:
            flags.append(made)
    before = tree_hashes(path)
    assert exit_code(lambda: generate_cli.main(["--workdir", path, *flags])) == 2
    one_error_line(capsys.readouterr().err, message)
    assert tree_hashes(path) == before


def test_a_workdir_that_is_a_file_is_left_alone(tmp_path, workdir, capsys):
    config = workdir[2]
    path = tmp_path / "not-a-dir"
    path.write_text("notes")
    assert exit_code(lambda: guarded(lambda: run(config, str(path)))) == 2
    assert path.read_text() == "notes"
    one_error_line(capsys.readouterr().err, "not-a-dir")
