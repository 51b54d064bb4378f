import importlib
import json
import pathlib

import pytest

from experiments.speedrun.runlog import flatten, run_line
from gptjax.train import config_checks
from gptjax.train.job import run

ROOT = pathlib.Path(__file__).parent.parent
# configs/saved.py takes the path of a saved config.json: tested below on the frozen records.
CONFIGS = sorted(p.stem for p in ROOT.joinpath("configs").glob("*.py") if p.stem not in ("__init__", "saved"))
SPEEDRUN = ROOT / "experiments" / "speedrun"
RECORDS = sorted(SPEEDRUN.joinpath("records").glob("*.json"))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_is_valid(name):
    module = importlib.import_module(f"configs.{name}")
    for arg in ("", "smoke"):
        config_checks.check_config(module.get_config(arg))


@pytest.mark.parametrize("name", ["default", "speedrun"])
def test_main_job_and_speedrun_run_a_few_steps(name, tiny_config, tmp_path):
    c = importlib.import_module(f"configs.{name}").get_config("smoke")
    c.data = tiny_config.data
    c.data.tokenizer, c.data.vocab_size = "bpe", 300
    c.model.block_size = 16
    c.train.steps = 4
    c.train.steps_per_call = 2
    summary = run(c, str(tmp_path / name))
    assert summary["steps"] == 4 and summary["test_bpc"] > 0


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_every_frozen_record_loads_through_saved_and_is_valid(path):
    from configs import saved

    config = saved.get_config(str(path))
    config_checks.check_config(config)
    loaded, frozen = flatten(config.to_dict()), flatten(json.loads(path.read_text()))
    assert {key: loaded[key] for key in frozen} == frozen


def test_saved_config_keeps_defaults_for_keys_it_lacks(tmp_path):
    from configs import saved
    from configs.base import get_config as default_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"seed": 3, "train": {"steps": 7}}))
    config = saved.get_config(str(path))
    assert (config.seed, config.train.steps) == (3, 7)
    assert config.train.muon_beta == default_config().train.muon_beta
    with pytest.raises(ValueError, match="saved config.json"):
        saved.get_config(str(tmp_path / "missing.json"))


def test_runs_log_has_every_field_and_builds_on_a_frozen_record():
    lines = [json.loads(line) for line in SPEEDRUN.joinpath("runs.jsonl").read_text().splitlines()]
    records = {int(p.stem) for p in RECORDS}
    assert len(lines) >= len(records) and len({line["name"] for line in lines}) == len(lines)
    for line in lines:
        assert {"name", "entry", "seed", "base", "overrides", "summary", "curve"} <= set(line), line["name"]
        assert line["name"].startswith(f"{line['entry']:02d}-")
        assert line["base"] is None or line["base"] in records, line["name"]
        assert all(len(pair) == 2 and pair[0] > 0 for pair in line["curve"]), line["name"]
        assert "val_bpc" in line["summary"], line["name"]
    assert records <= {line["entry"] for line in lines}


def test_a_run_line_holds_its_overrides_against_the_record_and_its_curve(tmp_path):
    base = json.loads(RECORDS[-1].read_text())
    saved = json.loads(json.dumps(base))
    saved["seed"], saved["train"]["warmup_steps"] = 2, 10
    saved["data"]["cache_dir"] = "/tmp/some-cache"  # the machine's, not the experiment's
    (tmp_path / "config.json").write_text(json.dumps(saved))
    (tmp_path / "summary.json").write_text(json.dumps({"val_bpc": 1.97}))
    rows = [{"step": 50, "elapsed": 30.0, "train_loss": 5.6, "val_bpc": 2.43},
            {"step": 60, "elapsed": 35.0, "train_loss": 5.1},
            {"step": 100, "elapsed": 60.0, "val_bpc": 2.24, "val_full_bpc": 2.25}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = run_line(str(tmp_path), "67-warmup-10-seed2", 67, 65, base)
    assert line["overrides"] == {"seed": 2, "train.warmup_steps": 10}
    assert line["curve"] == [[50, 2.43], [100, 2.24]] and line["val_full"] == [[100, 2.25]]
    assert line["seed"] == 2 and line["summary"] == {"val_bpc": 1.97}
