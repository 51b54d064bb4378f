import importlib
import pathlib

import pytest

from gptjax.train import config_checks
from gptjax.train.job import run

CONFIGS = sorted(p.stem for p in pathlib.Path(__file__).parent.parent.joinpath("configs").glob("*.py")
                 if p.stem != "__init__")


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_is_valid(name):
    module = importlib.import_module(f"configs.{name}")
    for arg in ("", "smoke"):
        config_checks.check_config(module.get_config(arg))


def test_speedrun_config_runs_a_few_steps(tiny_config, tmp_path):
    from configs.speedrun import get_config

    c = get_config("smoke")
    c.data = tiny_config.data
    c.data.tokenizer, c.data.vocab_size = "bpe", 300
    c.model.block_size = 16
    c.train.steps = 4
    c.train.steps_per_call = 2
    summary = run(c, str(tmp_path / "speedrun"))
    assert summary["steps"] == 4 and summary["test_bpc"] > 0
