import json
import os
import subprocess
import sys

import pytest

from gptjax.errors import UserError
from gptjax.train.job import run
from gptjax.train.loop import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def losses(workdir) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: r["train_loss"] for r in map(json.loads, f) if "train_loss" in r}


def snapshot(directory) -> dict:
    """Every file under a directory with its size and modification time."""
    out = {}
    for d, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(d, f)
            out[p] = (os.path.getsize(p), os.path.getmtime(p))
    return out


def test_main_job_leaves_model_numbers_and_samples(tiny_config, tmp_path):
    workdir = str(tmp_path / "run")
    summary = run(tiny_config, workdir)
    for name in ("config.json", "environment.json", "metrics.jsonl", "summary.json", "report.md", "samples.txt",
                 "loss.png", "tokenizer", "checkpoints"):
        assert os.path.exists(os.path.join(workdir, name)), name
    with open(os.path.join(workdir, "summary.json")) as f:
        saved = json.load(f)
    for key in ("params", "tokens_seen", "wall_seconds", "best_val_loss", "test_loss", "test_bpc"):
        assert key in saved
    assert saved == json.loads(json.dumps(summary))
    assert summary["tokens_seen"] == 10 * tiny_config.train.batch_size * tiny_config.model.block_size
    with open(os.path.join(workdir, "environment.json")) as f:
        env = json.load(f)
    assert env["seed"] == 0 and env["packages"]["jax"] and env["git_commit"]
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in records] == [5, 10] and all("val_bpc" in r and "train_loss" in r for r in records)
    assert "Samples" in open(os.path.join(workdir, "report.md")).read()


def test_resumed_run_follows_the_uninterrupted_trajectory(tiny_config, tmp_path):
    tiny_config.train.steps = 20
    whole = str(tmp_path / "whole")
    run(tiny_config, whole)

    parts = str(tmp_path / "parts")
    tiny_config.train.schedule_steps = 20
    tiny_config.train.steps = 10  # "interrupted" after step 10, with the same schedule
    run(tiny_config, parts)
    tiny_config.train.steps = 20
    run(tiny_config, parts)

    a, b = losses(whole), losses(parts)
    assert sorted(a) == sorted(b) == [5, 10, 15, 20]
    for s in a:
        assert b[s] == pytest.approx(a[s], abs=1e-6)


def test_run_stops_once_validation_is_below_the_target(tiny_config, tmp_path):
    tiny_config.train.stop_below_bpc = 100.0  # any model beats 100 bits per char
    summary = run(tiny_config, str(tmp_path / "run"))
    assert summary["steps"] == 5 and summary["stop_reason"].startswith("validation reached")
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert records[-1]["val_full_bpc"] == pytest.approx(summary["val_bpc"])


def test_the_sampled_batches_alone_do_not_stop_a_run(tiny_config, tmp_path, monkeypatch):
    whole_split = Trainer.full_split
    monkeypatch.setattr(Trainer, "full_split", lambda self, params, rest, split: {
        **whole_split(self, params, rest, split), "bits_per_char": 1e9})
    tiny_config.train.stop_below_bpc = 100.0  # the batches pass; the (patched) whole split does not
    summary = run(tiny_config, str(tmp_path / "run"))
    assert summary["steps"] == tiny_config.train.steps and summary["stop_reason"] == "completed"


def test_a_workdir_saved_before_a_key_existed_loads_with_its_default(tmp_path):
    from configs.base import get_config
    from gptjax.workdir import load_config

    saved = get_config().to_dict()
    saved["model"]["n_layer"] = 7
    del saved["train"]["stop_below_bpc"]
    with open(tmp_path / "config.json", "w") as f:
        json.dump(saved, f)
    config = load_config(str(tmp_path))
    assert config.model.n_layer == 7 and config.train.stop_below_bpc == 0.0


def test_same_config_and_seed_give_the_same_numbers(tiny_config, tmp_path):
    first = run(tiny_config, str(tmp_path / "a"))
    second = run(tiny_config, str(tmp_path / "b"))
    for key in ("best_val_loss", "val_loss", "test_loss", "test_bpc"):
        assert first[key] == second[key]


def test_a_workdir_of_another_model_is_refused_and_kept(tiny_config, tmp_path):
    workdir = str(tmp_path / "run")
    run(tiny_config, workdir)
    before = snapshot(workdir)
    tiny_config.model.n_layer = 3
    with pytest.raises(UserError, match="model.n_layer=2 but the config says 3"):
        run(tiny_config, workdir)
    assert snapshot(workdir) == before


def test_block_size_larger_than_the_data_is_refused(tiny_config, tmp_path):
    tiny_config.model.block_size = 100_000
    tiny_config.model.pos_encoding = "rope"
    with pytest.raises(UserError, match="block_size=100000 is larger than the train split"):
        run(tiny_config, str(tmp_path / "run"))


@pytest.mark.parametrize("key, value, message", [
    ("model.norm", "groupnorm", "model.norm='groupnorm' is not one of"),
    ("train.batch_size", 0, "train.batch_size=0 must be positive"),
    ("model.n_head", 3, "not divisible by model.n_head=3"),
    ("train.muon_beta", 1.0, r"train.muon_beta=1.0 must be in \[0, 1\)"),
    ("train.keep_checkpoints", 0, "train.keep_checkpoints=0 must be positive"),
    ("train.schedule", "step", "train.schedule='step' is not one of cosine, linear, constant, wsd"),
    ("train.optimizer", "sgd", "train.optimizer='sgd' is not one of adamw, muon"),
])
def test_bad_config_values_are_one_clear_error(tiny_config, tmp_path, key, value, message):
    section, name = key.split(".")
    tiny_config[section][name] = value
    with pytest.raises(UserError, match=message):
        run(tiny_config, str(tmp_path / "run"))


def main_job(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "gptjax.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_command_line_overrides_reach_the_run(corpus_dir, tmp_path):
    workdir = tmp_path / "run"
    out = main_job("--config", "configs/base.py:smoke", "--workdir", str(workdir),
                   "--config.data.source=files", f"--config.data.path={corpus_dir}",
                   f"--config.data.cache_dir={tmp_path / 'cache'}", "--config.model.n_layer=1",
                   "--config.model.block_size=16", "--config.train.steps=5", "--config.train.batch_size=4",
                   "--config.train.learning_rate=0.01", "--config.train.warmup_steps=1", "--config.train.eval_every=5",
                   "--config.seed=3", "--config.model.dropout=0.1")
    assert out.returncode == 0, out.stderr
    saved = json.load(open(workdir / "config.json"))
    assert (saved["model"]["n_layer"], saved["train"]["steps"], saved["train"]["batch_size"], saved["seed"]) == (1, 5, 4, 3)
    assert saved["train"]["learning_rate"] == 0.01 and saved["model"]["dropout"] == 0.1
    assert json.load(open(workdir / "summary.json"))["steps"] == 5


@pytest.mark.parametrize("args, message", [
    (["--config.model.no_such_key=1"], "no_such_key"),
    (["--config.data.source=files", "--config.data.path=/no/such/dir"], "matches no .txt/.md/.jsonl file"),
    (["--config.model.n_layer=many"], "n_layer"),
])
def test_command_line_errors_are_one_line_and_exit_2(tmp_path, args, message):
    workdir = tmp_path / "run"
    out = main_job("--config", "configs/base.py:smoke", "--workdir", str(workdir), *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], out.stderr


def test_non_utf8_corpus_file_is_named(tmp_path):
    (tmp_path / "good.txt").write_text("fine text\n" * 50)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    out = main_job("--config", "configs/base.py:smoke", "--workdir", str(tmp_path / "run"),
                   "--config.data.source=files", f"--config.data.path={tmp_path}")
    assert out.returncode == 2 and "latin1.txt is not UTF-8" in out.stderr
