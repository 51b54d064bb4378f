"""train.init_from: a run that starts from a gptjax workdir or a Hugging Face GPT-2 directory."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from gptjax.errors import UserError
from gptjax.train.job import run
from tests.test_gpt2 import POSITIONS, gpt2_dir  # noqa: F401  (the tiny GPT-2 directory fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree_digest(root) -> str:
    """Every path and byte under root: equal digests mean nothing was written."""
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(d, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny char-level run trained 10 steps: (its workdir, its config)."""
    from tests.conftest import tiny, write_corpus

    root = tmp_path_factory.mktemp("base")
    config = tiny(root, write_corpus(root / "corpus"))
    run(config, str(root / "base"))
    return str(root / "base"), config


def finetune_config(base):
    workdir, config = base
    c = config.copy_and_resolve_references()
    c.train.init_from = workdir
    c.train.steps = 5
    return c


def test_a_run_from_a_gptjax_workdir_continues_from_its_weights(base, tmp_path):
    c = finetune_config(base)
    c.model.n_layer, c.model.n_embd = 3, 48  # the config file's architecture gives way to the source's
    summary = run(c, str(tmp_path / "ft"))
    with open(os.path.join(base[0], "summary.json")) as f:
        base_summary = json.load(f)
    with open(tmp_path / "ft" / "base.json") as f:
        before = json.load(f)
    # The fine-tuning run's first state scores the validation text as the base's best weights did.
    assert before["val_loss"] == pytest.approx(base_summary["val_loss"], rel=1e-6)
    assert summary["steps"] == 5  # step counter from 0, fresh optimizer
    with open(tmp_path / "ft" / "environment.json") as f:
        record = json.load(f)["init_from"]
    assert record["path"] == os.path.abspath(base[0]) and record["checksum"].startswith("sha256:")
    with open(tmp_path / "ft" / "config.json") as f:
        model = json.load(f)["model"]
    assert (model["n_layer"], model["n_embd"]) == (2, 32)
    report = (tmp_path / "ft" / "report.md").read_text()
    assert "base model (train.init_from)" in report and "7-gram" in report and record["checksum"] in report
    assert "Samples of the base model" in report
    assert os.listdir(tmp_path / "ft" / "tokenizer") == os.listdir(os.path.join(base[0], "tokenizer"))


def test_every_report_shows_the_ngrams_beside_the_model(base):
    report = open(os.path.join(base[0], "report.md")).read()
    for order in (3, 5, 7):
        assert f"| {order}-gram |" in report
    assert os.path.exists(os.path.join(base[0], "ngram.json"))


def test_a_run_from_a_hugging_face_gpt2_directory_trains(gpt2_dir, tiny_config, tmp_path):  # noqa: F811
    c = tiny_config
    c.train.init_from = f"hf:{gpt2_dir}"
    c.data.tokenizer = "bpe"
    c.train.steps = 5
    summary = run(c, str(tmp_path / "ft"))
    with open(tmp_path / "ft" / "config.json") as f:
        model = json.load(f)["model"]
    assert model["block_size"] == POSITIONS and model["pos_encoding"] == "learned" and model["vocab_pad"] == 64
    assert summary["steps"] == 5 and summary["val_bpc"] > 0


def test_an_architecture_override_is_refused_naming_the_key(base, tmp_path):
    c = finetune_config(base)
    c.model.n_head = 4
    with pytest.raises(UserError, match=r"model\.n_head=4 on the command line contradicts"):
        run(c, str(tmp_path / "ft"), overrides=["model.n_head", "train.steps"])
    assert not (tmp_path / "ft").exists()


def test_block_size_may_be_lowered_but_not_raised(base, tmp_path):
    c = finetune_config(base)
    c.model.block_size = 64
    with pytest.raises(UserError, match="model.block_size=64 is more than the 16 positions"):
        run(c, str(tmp_path / "ft"), overrides=["model.block_size"])


def cli(args):
    return subprocess.run([sys.executable, "-m", "gptjax.main", *args], cwd=ROOT, capture_output=True, text=True)


def test_bad_sources_are_one_clear_line_and_exit_2_with_nothing_written(base, gpt2_dir, tmp_path):  # noqa: F811
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((gpt2_dir / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not unpickled")
    unweighted = tmp_path / "unweighted"
    unweighted.mkdir()
    for name in ("config.json", "vocab.json", "merges.txt"):
        (unweighted / name).write_bytes((gpt2_dir / name).read_bytes())
    cases = [
        (f"--config.train.init_from={base[0]}", "--config.data.tokenizer=bpe", "contradicts"),
        (f"--config.train.init_from=hf:{tmp_path / 'nowhere'}", "", "config.json is missing"),
        (f"--config.train.init_from=hf:{unweighted}", "", "has no model.safetensors"),
        (f"--config.train.init_from=hf:{pickled}", "", "never unpickles"),
        (f"--config.train.init_from={base[0]}", "--config.model.n_layer=5", "model.n_layer=5 on the command line"),
    ]
    before = tree_digest(tmp_path), tree_digest(base[0])
    for init, extra, expected in cases:
        args = ["--config", "configs/base.py:smoke", "--workdir", str(tmp_path / "ft"), init,
                f"--config.data.cache_dir={tmp_path / 'cache'}"] + ([extra] if extra else [])
        done = cli(args)
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert (tree_digest(tmp_path), tree_digest(base[0])) == before


def test_a_sweep_run_starts_from_an_earlier_run_of_the_same_seed():
    from gptjax.experiments import Run, sibling_init

    runs = [Run("pretrain", 0, {}), Run("fine-tuned", 0, {"train.init_from": "run:pretrain", "train.steps": 3}),
            Run("orphan", 0, {"train.init_from": "run:later"}), Run("later", 0, {})]
    assert sibling_init(runs[1], runs, 2, "runs/demo") == {"train.init_from": os.path.join("runs/demo", "pretrain-s2"),
                                                           "train.steps": 3}
    assert sibling_init(runs[0], runs, 2, "runs/demo") == {}
    with pytest.raises(UserError, match="'run:later', which is not a model run listed before it"):
        sibling_init(runs[2], runs, 0, "runs/demo")
