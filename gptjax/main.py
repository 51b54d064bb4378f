"""The main job: `python -m gptjax.main --config configs/default.py --workdir runs/x`.

Flags only; everything else happens in `gptjax.train.job.run(config, workdir)`.
Override any config key with `--config.train.steps=50`; shrink any config for a quick
check with `--config configs/default.py:smoke`.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from gptjax.cli import guarded

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (optionally :arg).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the report.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
    """Parse flags; an unknown config key or a bad value is one line and exit 2, not a traceback."""
    try:
        rest = FLAGS(argv)
        FLAGS.config.get("seed")  # a config file that failed to load raises here, not later
        return rest
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as e:
        message = str(e).strip().strip('"').splitlines()[-1] if str(e).strip() else type(e).__name__
        print(f"error: bad command line ({type(e).__name__}: {message}); check --config and its overrides",
              file=sys.stderr)
        sys.exit(2)


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.config.get("sweep", False):  # a sweep config: every (run, seed) it lists, then a table
        from gptjax.experiments import run_sweep

        guarded(lambda: run_sweep(FLAGS.config, FLAGS.workdir))
        return
    from gptjax.train.job import run

    guarded(lambda: run(FLAGS.config, FLAGS.workdir))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
