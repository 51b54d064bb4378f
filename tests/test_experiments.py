import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
from ml_collections import ConfigDict

from configs.base import get_config
from gptjax.errors import UserError
from gptjax.experiments import parse_runs, results_table, run_config, run_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = ("HAMLET:\nTo be, or not to be, that is the question.\n\n"
        "OPHELIA:\nGood my lord, how does your honour for this many a day?\n\n") * 50

SWEEP = '''
from ml_collections import ConfigDict
from configs.base import get_config as default_config


def get_config():
    base = default_config("smoke")
    base.data.source, base.data.path, base.data.cache_dir = "files", {text!r}, {cache!r}
    base.data.test_fraction = 0.1
    base.model.n_embd, base.model.block_size = 16, 16
    base.train.steps = base.train.steps_per_call = base.train.eval_every = base.train.log_every = 5
    base.train.checkpoint_every = 5
    base.eval.max_tokens = 200
    base.sample.prompts, base.sample.max_new_tokens = ["HAMLET"], 2
    return ConfigDict(dict(sweep=True, base=base, seeds=[0, 1], runs=[
        dict(name="gpt", overrides={{"model.n_layer": 1}}),
        dict(name="lstm", overrides={{"model.kind": "lstm", "model.n_layer": 1}}),
        dict(name="3-gram", kind="ngram", order=3),
    ]))
'''


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    path = root / "micro.py"
    path.write_text(SWEEP.format(text=str(root / "text.txt"), cache=str(root / "cache")), encoding="utf-8")
    return root, str(path)


def load(path: str) -> ConfigDict:
    spec = importlib.util.spec_from_file_location("micro_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def numbers(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "results.json")) as f:
        records = json.load(f)["records"]
    return [{k: v for k, v in r.items() if k not in ("seconds", "workdir")} for r in records]


def test_micro_sweep_reproduces_resumes_and_reports(sweep_file):
    root, path = sweep_file
    workdir = str(root / "sweep")
    run_sweep(load(path), workdir)
    assert sorted(os.listdir(workdir)) == sorted(
        ["3-gram-s0", "3-gram-s1", "gpt-s0", "gpt-s1", "lstm-s0", "lstm-s1", "results.json", "results.md",
         "sweep.json", "val_curves.png"])
    before = numbers(workdir)

    # Resume through the main command with two runs lost: only they are redone, to the same numbers.
    kept = {name: os.path.getmtime(os.path.join(workdir, name, "summary.json")) for name in ("gpt-s0", "lstm-s0")}
    for name in ("lstm-s1", "3-gram-s0"):
        shutil.rmtree(os.path.join(workdir, name))
    cli = subprocess.run([sys.executable, "-m", "gptjax.main", "--config", path, "--workdir", workdir],
                         cwd=ROOT, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "lstm-s0 is finished; skipping it" in cli.stdout
    assert {name: os.path.getmtime(os.path.join(workdir, name, "summary.json")) for name in kept} == kept
    assert numbers(workdir) == before

    assert [r["run"] for r in before] == ["3-gram", "3-gram", "gpt", "gpt", "lstm", "lstm"]
    assert [r["kind"] for r in before[::2]] == ["3-gram", "gpt", "lstm"]
    assert before[0]["tokenizer"] == before[2]["tokenizer"]
    assert before[2]["val_bpc"] != before[3]["val_bpc"]  # the seeds differ
    table = open(os.path.join(workdir, "results.md")).read()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| 3-gram", "| gpt", "| lstm"]
    assert "±" in rows[1] and "test bits/token" in table


def test_sweep_configs_are_checked():
    base = get_config("smoke")
    sweep = ConfigDict(dict(sweep=True, base=base, seeds=[0], runs=[dict(name="a", overrides={"model.n_embd": 8})]))
    assert parse_runs(sweep)[0].overrides == {"model.n_embd": 8}
    assert run_config(base, 3, {"model.kind": "gru", "train.learning_rate": 1}).model.kind == "gru"
    with pytest.raises(UserError, match="not a config key"):
        run_config(base, 0, {"model.hidden": 8})
    with pytest.raises(UserError, match="wrong type"):
        run_config(base, 0, {"train.steps": "many"})
    for runs, message in (([dict(name="a b")], "name"), ([dict(name="n", kind="ngram")], "order"),
                          ([dict(name="x", kind="rnn")], "kind"), ([dict(name="a"), dict(name="a")], "unique")):
        with pytest.raises(UserError, match=message):
            parse_runs(ConfigDict(dict(sweep=True, base=base, seeds=[0], runs=runs)))
    with pytest.raises(UserError, match="seeds"):
        parse_runs(ConfigDict(dict(sweep=True, base=base, seeds=[], runs=[dict(name="a")])))


def test_table_leaves_out_bits_per_token_across_tokenizers():
    common = dict(seed=0, params=10, tokens=100, seconds=1.0, val_bpc=2.0, test_bpc=2.0)
    records = [dict(common, run="char", kind="gpt", tokenizer="a", test_bits_per_token=2.0),
               dict(common, run="bpe", kind="gpt", tokenizer="b", test_bits_per_token=7.0)]
    table = results_table(records)
    assert "bits/token" not in table.splitlines()[0] and "different tokenizers" in table
    assert "test bits/token" in results_table(records[:1])
