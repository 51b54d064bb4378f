"""The main job: `python -m gptjax.main --config configs/default.py --workdir runs/x`.

Flags only; everything else happens in `gptjax.train.run(config, workdir)` (or, for a sweep
config, `gptjax.experiments.run_sweep`). Override any config key with
`--config.train.steps=50`; shrink any config for a quick check with
`--config configs/default.py:smoke`.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from gptjax.cli import guarded, parse_config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (optionally :arg).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the report.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
    return parse_config_flags(argv, "check --config and its overrides")


def train(argv: list[str]) -> None:
    del argv
    if FLAGS.config.get("sweep", False):  # a sweep config: every (run, seed) it lists, then a table
        from gptjax.experiments import run_sweep

        guarded(lambda: run_sweep(FLAGS.config, FLAGS.workdir))
        return
    from gptjax.train import run

    overrides = config_flags.get_override_values(FLAGS["config"])  # what train.init_from must not contradict
    guarded(lambda: run(FLAGS.config, FLAGS.workdir, overrides))


def main(argv: list[str] | None = None) -> None:
    app.run(train, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
    main()
