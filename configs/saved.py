"""A saved config.json as a config file: rerun any earlier run from its own frozen config.

    python -m gptjax.main --config configs/saved.py:experiments/speedrun/records/65.json --workdir runs/65

The argument is the path of a config.json (a workdir's, or a frozen record's). It is written
over `configs/default.py`, the way a workdir's config is read back, so keys added after the
file was saved keep their defaults; overrides on the command line (`--config.seed=1`) apply
on top as for any config file.
"""

import json
import os

from ml_collections import ConfigDict

from configs.base import get_config as default_config
from gptjax.workdir import overlay


def get_config(arg: str = "") -> ConfigDict:
    if not arg or not os.path.isfile(arg):
        raise ValueError(f"configs/saved.py needs the path of a saved config.json after ':' (got {arg!r}); "
                        "e.g. --config configs/saved.py:experiments/speedrun/records/65.json")
    with open(arg) as f:
        saved = json.load(f)
    config = default_config()
    overlay(config, saved)
    return config
